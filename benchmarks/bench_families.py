"""Training and sampling throughput of each image family's tiny CPU preset (edm, ddpm, otcfm),
each beside a plain PyTorch loop of the same network and loss (no EMA, no NaN checks, no
resumable state), with the ratio. Issue 4, item 7 (CPU part).

    nice .venv/bin/python benchmarks/bench_families.py [--kimg 2] [--samples 512] [--repeat 3] [--json out.json]

Peak memory is the process's peak resident set size after each family (``ru_maxrss``; on CPU
torch has no per-phase allocator statistics), so it is cumulative and only an upper bound.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch

from autophagy.config import DDPMModelConfig, EDMModelConfig, OTCFMModelConfig, TrainConfig
from autophagy.data.sources import digits_images_and_labels
from autophagy.models import build_model

PRESETS = {"edm": EDMModelConfig(), "ddpm": DDPMModelConfig(), "otcfm": OTCFMModelConfig()}


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def trainer_rate(cfg, rows: np.ndarray, kimg: float, train: TrainConfig, repeat: int) -> float:
    """Images/s through autophagy's trainer (EMA, warmup, NaN checks)."""
    def once():
        torch.manual_seed(0)
        build_model(cfg, rows.shape[1:]).fit(rows, kimg, train, seed=0)
    return kimg * 1000 / median_seconds(once, repeat)


def plain_rate(cfg, rows: np.ndarray, kimg: float, train: TrainConfig, repeat: int) -> float:
    """Images/s of the same network and loss in the plainest loop: Adam, zero_grad, backward, step."""
    def once():
        torch.manual_seed(0)
        model = build_model(cfg, rows.shape[1:])
        net, data = model.net.train(), model.encode(rows)
        optimizer = torch.optim.Adam(net.parameters(), lr=train.lr)
        generator = torch.Generator().manual_seed(0)
        for _ in range(int(kimg * 1000) // train.batch_size):
            batch = data[torch.randint(0, len(data), (train.batch_size,), generator=generator)]
            loss = model.loss(net, batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return kimg * 1000 / median_seconds(once, repeat)


def sample_rate(cfg, rows: np.ndarray, n: int, repeat: int) -> float:
    model = build_model(cfg, rows.shape[1:])
    return n / median_seconds(lambda: model.sample(n, seed=0, batch_size=n, device="cpu"), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kimg", type=float, default=2.0, help="training images per measurement, in thousands")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rows = digits_images_and_labels("train")[0]
    train = TrainConfig(batch_size=256, lr=1e-3, device="cpu")
    results = {"threads": torch.get_num_threads()}
    print(f"{'family':8} {'trainer img/s':>14} {'plain img/s':>12} {'ratio':>6} {'sample img/s':>13} {'peak RSS MiB':>13}")
    for family, cfg in PRESETS.items():
        ours = trainer_rate(cfg, rows, args.kimg, train, args.repeat)
        plain = plain_rate(cfg, rows, args.kimg, train, args.repeat)
        sampling = sample_rate(cfg, rows, args.samples, args.repeat)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results[family] = {"sampler": getattr(cfg, "sampler", "heun"), "num_steps": cfg.num_steps,
                           "train_images_per_s": ours, "plain_train_images_per_s": plain, "trainer_over_plain": ours / plain,
                           "sample_images_per_s": sampling, "peak_rss_mib": peak}
        print(f"{family:8} {ours:14.0f} {plain:12.0f} {ours / plain:6.2f} {sampling:13.0f} {peak:13.0f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
