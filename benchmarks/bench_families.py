"""Training and sampling throughput of each image family's tiny CPU preset (edm, ddpm, otcfm),
each beside a plain PyTorch loop of the same network and loss (no EMA, no NaN checks, no
resumable state), with the ratio. Issue 4, item 7 (CPU part).

The trainer runs in each speed variant of ``train.precision`` / ``train.channels_last``: fp32
(the CPU default), bf16 autocast, and bf16 + channels-last (the CUDA default). On CPU bf16 is
usually *slower* (no bf16 matrix units on most CPUs, plus casts); the columns say what this
machine does, not what a GPU does (``--device cuda`` there). The plain loop is fp32.

    nice .venv/bin/python benchmarks/bench_families.py [--kimg 2] [--samples 512] [--repeat 3] [--device cpu]
                                                       [--json out.json]

Peak memory is the process's peak resident set size after each family (``ru_maxrss``; on CPU
torch has no per-phase allocator statistics), so it is cumulative and only an upper bound.
"""

from __future__ import annotations

import argparse
import dataclasses
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


#: Trainer variants: train.precision / train.channels_last overrides.
VARIANTS = {"fp32": {"precision": "fp32", "channels_last": False},
            "bf16": {"precision": "bf16", "channels_last": False},
            "bf16+cl": {"precision": "bf16", "channels_last": True}}


def trainer_rate(cfg, rows: np.ndarray, kimg: float, train: TrainConfig, repeat: int) -> float:
    """Images/s through autophagy's trainer (EMA, warmup, NaN checks, data on the device): the
    ``fit`` call only, after an untimed warm-up fit (imports, first kernels, lazy initialisation)."""
    build_model(cfg, rows.shape[1:]).fit(rows, min(kimg, 0.512), train, seed=0)
    seconds = []
    for _ in range(repeat):
        torch.manual_seed(0)
        model = build_model(cfg, rows.shape[1:])
        started = time.perf_counter()
        model.fit(rows, kimg, train, seed=0)
        seconds.append(time.perf_counter() - started)
    return kimg * 1000 / statistics.median(seconds)


def plain_loop_seconds(cfg, rows: np.ndarray, steps: int, batch_size: int, lr: float, device: torch.device) -> float:
    """Seconds of ``steps`` steps of the plainest loop of ``cfg``'s network and loss: fp32 Adam,
    zero_grad, backward, step, on float data already on ``device`` (model building not timed)."""
    torch.manual_seed(0)
    model = build_model(cfg, rows.shape[1:])
    net, data = model.net.to(device).train(), model.encode(rows).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator(device).manual_seed(0)
    started = time.perf_counter()
    for _ in range(steps):
        batch = data[torch.randint(0, len(data), (batch_size,), generator=generator, device=device)]
        loss = model.loss(net, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    float(loss.detach())  # wait for the device
    return time.perf_counter() - started


def plain_rate(cfg, rows: np.ndarray, kimg: float, train: TrainConfig, repeat: int) -> float:
    """Images/s of the same network and loss in :func:`plain_loop_seconds` (after an untimed warm-up)."""
    device = torch.device(train.device)

    def loop(steps: int) -> float:
        return plain_loop_seconds(cfg, rows, steps, train.batch_size, train.lr, device)

    steps = int(kimg * 1000) // train.batch_size
    loop(min(steps, 2))
    return steps * train.batch_size / statistics.median(loop(steps) for _ in range(repeat))


def sample_rate(cfg, rows: np.ndarray, n: int, repeat: int, device: str = "cpu") -> float:
    model = build_model(cfg, rows.shape[1:])
    return n / median_seconds(lambda: model.sample(n, seed=0, batch_size=n, device=device), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kimg", type=float, default=2.0, help="training images per measurement, in thousands")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rows = digits_images_and_labels("train")[0]
    train = TrainConfig(batch_size=256, lr=1e-3, device=args.device)
    results = {"threads": torch.get_num_threads(), "device": args.device}
    trainer_columns = " ".join(f"{'trainer ' + name:>15}" for name in VARIANTS)
    print(f"{'family':8} {trainer_columns} {'plain img/s':>12} {'fp32/plain':>10} {'sample img/s':>13} "
          f"{'peak RSS MiB':>13}")
    for family, cfg in PRESETS.items():
        rates = {name: trainer_rate(cfg, rows, args.kimg, dataclasses.replace(train, **options), args.repeat)
                 for name, options in VARIANTS.items()}
        ours = rates["fp32"]
        plain = plain_rate(cfg, rows, args.kimg, train, args.repeat)
        sampling = sample_rate(cfg, rows, args.samples, args.repeat, args.device)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results[family] = {"sampler": getattr(cfg, "sampler", "heun"), "num_steps": cfg.num_steps,
                           "train_images_per_s": ours, "plain_train_images_per_s": plain, "trainer_over_plain": ours / plain,
                           "trainer_images_per_s_by_variant": rates,
                           "sample_images_per_s": sampling, "peak_rss_mib": peak}
        columns = " ".join(f"{rates[name]:15.0f}" for name in VARIANTS)
        print(f"{family:8} {columns} {plain:12.0f} {ours / plain:10.2f} {sampling:13.0f} {peak:13.0f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
