"""How long OT-CFM's minibatch OT pairing holds up a training step, and what solving it one step
ahead gains (issue 15, item 5).

    nice .venv/bin/python benchmarks/bench_otcfm_pairing.py [--preset digits|cifar-shaped|paper]
                                                            [--kimg 5] [--repeat 3] [--device cpu] [--json out.json]

Each step of OT-CFM (Tong et al. 2023, Alg. 2) pairs its noise with its data batch by the exact
assignment of their float64 squared-distance matrix, solved on the host by scipy. Solved when the
loss needs it, the host waits for the device to drain, copies the matrix and solves while the
device idles. Three trainers of the same network and batches, one warm-up fit each, then
interleaved (A, B, C, A, B, C, ...):

* **overlapped** (the project): the next step's pairing solved in a worker thread while this
  step's backward runs (:class:`autophagy.models.otcfm.PendingPairing`);
* **synchronous**: the same pairing solved when the loss needs it (the trainer before);
* **independent**: no pairing (``coupling=independent``, I-CFM): the floor.

Beside them, the pairing alone (cost matrix on the device, copy, scipy) and its host part alone
(scipy) over ``--pair-calls`` batches. Reported: ms per step (medians), the paired speedups over
the synchronous trainer, and the pairing's share of a synchronous step, measured two ways
(pairing ms / step ms; 1 - the independent/synchronous time ratio).

Presets: ``digits`` the tiny CPU preset (8x8x1, batch 256, residual MLP); ``cifar-shaped`` the
same network on random 32x32x3 uint8 images at the paper's batch of 128 (the pairing's cost
matrix is that of CIFAR-10); ``paper`` ``configs/cifar10-otcfm.yaml`` (torchcfm's 35.7M UNet,
bf16, channels-last, xflip on CUDA) on random stand-in images, for a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from paired import interleaved, load_average, median, paired_speedup  # benchmarks/ is on sys.path

from autophagy.config import OTCFMModelConfig, TrainConfig, load_config
from autophagy.data.sources import digits_images_and_labels
from autophagy.models import build_model
from autophagy.models.otcfm import assignment_order, ot_cost, ot_pair

ROOT = Path(__file__).parents[1]
PRESETS = ("digits", "cifar-shaped", "paper")


def preset(name: str, device: str) -> tuple[OTCFMModelConfig, TrainConfig, np.ndarray]:
    """``(model config, train config, uint8 rows [N, H, W, C])`` of a preset."""
    rng = np.random.default_rng(0)
    if name == "digits":
        rows = digits_images_and_labels("train")[0]
        return OTCFMModelConfig(), TrainConfig(batch_size=256, lr=1e-3, device=device), rows
    if name == "cifar-shaped":
        rows = rng.integers(0, 256, (2048, 32, 32, 3), dtype=np.uint8)
        return OTCFMModelConfig(), TrainConfig(batch_size=128, lr=2e-4, device=device), rows
    cfg = load_config(ROOT / "configs" / "cifar10-otcfm.yaml", [f"train.device={device}"])
    count = 50_000 if device.startswith("cuda") else 2_048
    return cfg.model, cfg.train, rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit_run(model_cfg, train: TrainConfig, rows: np.ndarray, kimg: float, coupling: str, overlap: bool):
    """A run: build the model (untimed), then the seconds of one ``fit`` of ``kimg`` thousand images."""
    cfg = dataclasses.replace(model_cfg, coupling=coupling)
    device = torch.device(train.device)

    def run() -> float:
        torch.manual_seed(0)
        model = build_model(cfg, rows.shape[1:])
        model.overlap_pairing = overlap
        synchronize(device)
        started = time.perf_counter()
        model.fit(rows, kimg, train, seed=0)
        synchronize(device)
        return time.perf_counter() - started

    return run


def pairing_ms(model_cfg, train: TrainConfig, rows: np.ndarray, calls: int) -> dict[str, float]:
    """Median ms of one synchronous pairing (:func:`ot_pair`) of a training batch and its noise, and
    of its host part alone (scipy's assignment of the float64 cost matrix: what stays on the host,
    and what the overlap hides, when the device computes the matrix)."""
    device = torch.device(train.device)
    model = build_model(model_cfg, rows.shape[1:])
    x1 = model.encode_batch(model.stage_rows(rows[: train.batch_size], device))
    pairing, assignment = [], []
    for _ in range(calls + 1):  # the first call warms up
        x0 = torch.randn(x1.shape, device=device)
        synchronize(device)
        started = time.perf_counter()
        ot_pair(x0, x1)
        synchronize(device)
        pairing.append(time.perf_counter() - started)
        cost = ot_cost(x0, x1).cpu().numpy()
        started = time.perf_counter()
        assignment_order(cost)
        assignment.append(time.perf_counter() - started)
    return {
        "pairing_ms": statistics.median(pairing[1:]) * 1000,
        "assignment_ms": statistics.median(assignment[1:]) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="digits")
    parser.add_argument("--kimg", type=float, default=5.0, help="training images per fit, in thousands")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pair-calls", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    model_cfg, train, rows = preset(args.preset, args.device)
    steps = math.ceil(args.kimg * 1000 / min(train.batch_size, len(rows)))
    runs = {
        "overlapped": fit_run(model_cfg, train, rows, args.kimg, "ot", overlap=True),
        "synchronous": fit_run(model_cfg, train, rows, args.kimg, "ot", overlap=False),
        "independent": fit_run(model_cfg, train, rows, args.kimg, "independent", overlap=False),
    }
    load_before = load_average()
    seconds = interleaved(runs, args.repeat)
    pairing = pairing_ms(model_cfg, train, rows, args.pair_calls)
    step_ms = {name: median(values) / steps * 1000 for name, values in seconds.items()}
    results = {
        "preset": args.preset,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "batch_size": train.batch_size,
        "item_shape": list(rows.shape[1:]),
        "steps_per_fit": steps,
        "repeat": args.repeat,
        "load_average_1min": [load_before, load_average()],
        "seconds": seconds,
        "step_ms": step_ms,
        **pairing,
        "overlapped_over_synchronous_speedup": paired_speedup(seconds, "overlapped", "synchronous"),
        "independent_over_synchronous_speedup": paired_speedup(seconds, "independent", "synchronous"),
        "pairing_share_of_synchronous_step": pairing["pairing_ms"] / step_ms["synchronous"],
        "assignment_share_of_synchronous_step": pairing["assignment_ms"] / step_ms["synchronous"],
        "stall_share_from_independent": 1 - 1 / paired_speedup(seconds, "independent", "synchronous"),
    }
    for key, value in results.items():
        if key != "seconds":
            print(f"{key:<40} {json.dumps(value) if not isinstance(value, float) else f'{value:.4f}'}")
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
