"""What one generation of the embedded default (digits + EDM) costs, step by step, on this machine.

    .venv/bin/python benchmarks/bench_default.py [--repeat 3] [--json out.json]

Measures, each as the median of ``--repeat`` runs:

* training throughput (images/s) of the default MLP denoiser through autophagy's trainer, of the
  same network in a plain PyTorch loop (no EMA, no NaN checks, no resumable state), and of the
  tiny DDPM++ UNet preset through the trainer — the reason the default uses the MLP;
* sampling throughput (images/s, 18 Heun steps = 35 network evaluations);
* evaluation: digits-net features + Fréchet distance + precision/recall of 1500 samples;
* the fixed cost of one process per DVC stage: importing autophagy's stage modules.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_eval import median_seconds  # benchmarks/ is on sys.path when run as a script

from autophagy.config import EDMModelConfig, load_config
from autophagy.data.sources import digits_images_and_labels
from autophagy.models import build_model

IMAGES = 20_000  # images seen per training measurement


def trainer_rate(model_cfg: EDMModelConfig, rows: np.ndarray, repeat: int) -> float:
    cfg = load_config(None, ["train.batch_size=256", "train.lr=0.001"])

    def once():
        model = build_model(model_cfg, rows.shape[1:])
        model.fit(rows, IMAGES / 1000, cfg.train, seed=0)

    return IMAGES / median_seconds(once, repeat)


def plain_rate(model_cfg: EDMModelConfig, rows: np.ndarray, repeat: int) -> float:
    """The same network and loss in the plainest PyTorch loop."""

    def once():
        model = build_model(model_cfg, rows.shape[1:])
        data = model.encode(rows)
        optimizer = torch.optim.Adam(model.net.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        for _start in range(0, IMAGES, 256):
            index = torch.randint(0, len(data), (256,), generator=generator)
            loss = model.loss(model.net, data[index], generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return IMAGES / median_seconds(once, repeat)


def sample_rate(rows: np.ndarray, repeat: int) -> float:
    model = build_model(EDMModelConfig(), rows.shape[1:])
    return 2000 / median_seconds(lambda: model.sample(2000, seed=0, batch_size=1024, device="cpu"), repeat)


def evaluate_seconds(rows: np.ndarray, repeat: int) -> float:
    from autophagy.metrics import build_extractor, compute_metrics

    with tempfile.TemporaryDirectory() as cache:
        extractor = build_extractor("digits-net", cache_dir=Path(cache))
        reference = extractor(rows)
        samples = rows[:1500]
        return median_seconds(lambda: compute_metrics(extractor(samples), {"train": reference}, k=3), repeat)


def import_seconds(repeat: int) -> float:
    code = "import autophagy.loop, autophagy.cli"
    return median_seconds(lambda: subprocess.run([sys.executable, "-c", code], check=True), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows, _ = digits_images_and_labels("train")
    mlp = EDMModelConfig()
    unet = EDMModelConfig(network="unet", model_channels=16, channel_mult=(1, 2), num_blocks=1)
    results = {
        "torch_threads": torch.get_num_threads(),
        "train_mlp_trainer_images_per_s": trainer_rate(mlp, rows, args.repeat),
        "train_mlp_plain_loop_images_per_s": plain_rate(mlp, rows, args.repeat),
        "train_unet_tiny_trainer_images_per_s": trainer_rate(unet, rows, 1),
        "sample_mlp_images_per_s": sample_rate(rows, args.repeat),
        "evaluate_1500_samples_s": evaluate_seconds(rows, args.repeat),
        "stage_process_import_s": import_seconds(args.repeat),
    }
    results["trainer_over_plain_ratio"] = (
        results["train_mlp_trainer_images_per_s"] / results["train_mlp_plain_loop_images_per_s"]
    )
    results["mlp_over_unet_ratio"] = (
        results["train_mlp_trainer_images_per_s"] / results["train_unet_tiny_trainer_images_per_s"]
    )
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
