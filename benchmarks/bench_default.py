"""What one generation of the embedded default (digits + EDM) costs, step by step, on this machine.

    .venv/bin/python benchmarks/bench_default.py [--repeat 3] [--images 20000] [--samples 2000] [--json out.json]

Each project figure is paired with a reference run: one untimed warm-up of each, then ``--repeat``
rounds that alternate them (A, B, A, B, ...); reported are the medians and the median of the
per-round ratios (``*_speedup``: reference time / project time for the same work, above 1 the
project is faster), which a busy machine moves much less than the medians (``paired.py``):

* training throughput (images/s) of the default MLP denoiser through autophagy's trainer, beside
  the same network and loss in a plain PyTorch loop (no EMA, no NaN checks, no resumable state);
* the tiny DDPM++ UNet preset through the trainer, paired with the MLP — the reason the default
  uses the MLP (``--unet-repeat`` rounds, default 1: a round takes ~20 s);
* sampling throughput (images/s, 18 Heun steps = 35 network evaluations) of the project's sampler
  (per-sample-index noise, float64 Heun state), beside a plain float32 Heun loop of the same
  network (``plain_sampling.py``);
* evaluation: digits-net features + Fréchet distance + precision/recall of 1500 samples;
* the fixed cost of one process per DVC stage: importing autophagy's stage modules.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from paired import interleaved, load_average, median, paired_speedup, timed  # benchmarks/ is on sys.path
from plain_sampling import edm_heun, plain_sample

from autophagy.config import EDMModelConfig, load_config
from autophagy.data.sources import digits_images_and_labels
from autophagy.models import build_model

BATCH = 256


def trainer_run(model_cfg: EDMModelConfig, rows: np.ndarray, images: int):
    """A run: build the model (untimed), then the seconds of ``fit`` on ``images`` images."""
    cfg = load_config(None, [f"train.batch_size={BATCH}", "train.lr=0.001"])

    def run() -> float:
        model = build_model(model_cfg, rows.shape[1:])
        started = time.perf_counter()
        model.fit(rows, images / 1000, cfg.train, seed=0)
        return time.perf_counter() - started

    return run


def plain_run(model_cfg: EDMModelConfig, rows: np.ndarray, images: int):
    """A run: the same network and loss in the plainest PyTorch loop, as many steps as ``fit`` takes."""

    def run() -> float:
        model = build_model(model_cfg, rows.shape[1:])
        data = model.encode(rows)
        optimizer = torch.optim.Adam(model.net.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        started = time.perf_counter()
        for _start in range(0, images, BATCH):
            index = torch.randint(0, len(data), (BATCH,), generator=generator)
            loss = model.loss(model.net, data[index], generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - started

    return run


def training(rows: np.ndarray, images: int, repeat: int, unet_repeat: int) -> dict:
    mlp = EDMModelConfig()
    unet = EDMModelConfig(network="unet", model_channels=16, channel_mult=(1, 2), num_blocks=1)
    work = -(-images // BATCH) * BATCH  # fit and the plain loop both take whole batches
    seconds = interleaved({"trainer": trainer_run(mlp, rows, images), "plain": plain_run(mlp, rows, images)}, repeat)
    trainer_run(unet, rows, 2 * BATCH)()  # warm-up (its first kernels), not timed
    versus_unet = interleaved(
        {"mlp": trainer_run(mlp, rows, images), "unet": trainer_run(unet, rows, images)}, unet_repeat, warmup=0
    )
    return {
        "train_mlp_trainer_images_per_s": work / median(seconds["trainer"]),
        "train_mlp_plain_loop_images_per_s": work / median(seconds["plain"]),
        "trainer_over_plain_speedup": paired_speedup(seconds, "trainer", "plain"),
        "train_unet_tiny_trainer_images_per_s": work / median(versus_unet["unet"]),
        "mlp_over_unet_speedup": paired_speedup(versus_unet, "mlp", "unet"),
        "train_seconds": {**seconds, **{f"versus_unet_{name}": times for name, times in versus_unet.items()}},
    }


def sampling(rows: np.ndarray, n: int, repeat: int) -> dict:
    cfg = EDMModelConfig()
    model = build_model(cfg, rows.shape[1:])
    batch = min(n, 1024)
    runs = {
        "project": timed(lambda: model.sample(n, seed=0, batch_size=batch, device="cpu")),
        "plain": timed(lambda: plain_sample(edm_heun(cfg), model.ema, n, batch, model.noise_shape, "cpu")),
    }
    seconds = interleaved(runs, repeat)
    return {
        "sample_mlp_images_per_s": n / median(seconds["project"]),
        "sample_mlp_plain_loop_images_per_s": n / median(seconds["plain"]),
        "sampler_over_plain_speedup": paired_speedup(seconds, "project", "plain"),
        "sample_seconds": seconds,
    }


def evaluate_seconds(rows: np.ndarray, repeat: int) -> float:
    from autophagy.metrics import build_extractor, compute_metrics

    with tempfile.TemporaryDirectory() as cache:
        extractor = build_extractor("digits-net", cache_dir=Path(cache))
        reference = extractor(rows)
        samples = rows[:1500]
        run = timed(lambda: compute_metrics(extractor(samples), {"train": reference}, k=3))
        return median(interleaved({"evaluate": run}, repeat)["evaluate"])


def import_seconds(repeat: int) -> float:
    code = "import autophagy.loop, autophagy.cli"
    run = timed(lambda: subprocess.run([sys.executable, "-c", code], check=True))
    return median(interleaved({"import": run}, repeat)["import"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--unet-repeat", type=int, default=1)
    parser.add_argument("--images", type=int, default=20_000, help="training images per run")
    parser.add_argument("--samples", type=int, default=2_000, help="samples per sampling run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows, _ = digits_images_and_labels("train")
    results: dict = {"torch_threads": torch.get_num_threads(), "repeat": args.repeat, "load_average_1min": []}
    results["load_average_1min"].append(load_average())
    results.update(training(rows, args.images, args.repeat, args.unet_repeat))
    results.update(sampling(rows, args.samples, args.repeat))
    results["evaluate_1500_samples_s"] = evaluate_seconds(rows, args.repeat)
    results["stage_process_import_s"] = import_seconds(args.repeat)
    results["load_average_1min"].append(load_average())
    width = max(len(k) for k in results)
    for key, value in results.items():
        if key.endswith("_seconds"):
            continue  # every round's seconds: in the JSON only
        print(f"{key:<{width}}  {value:,.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
