"""One generation of an image preset at reduced counts, timed step by step, with the model FLOP
utilisation (issue 4, item 8; ``benchmarks/gpu_check.sh`` runs it on ``cifar10-edm``).

    .venv/bin/python benchmarks/gpu_check.py --config configs/cifar10-edm.yaml [--train-kimg 20]
        [--plain-kimg 5] [--samples 5000] [--cifar10 DIR] [--inception FILE] [--json out.json] [-S key=value ...]

Steps, each after a warm-up, each with its peak CUDA memory:

1. **train**: ``model.fit`` (the trainer the train stage runs: bf16 autocast, channels-last, fused
   Adam, data on the device once as uint8, flips on the device; per the config) for
   ``--train-kimg``, beside a plain fp32 PyTorch loop of the same network and loss for
   ``--plain-kimg`` (Adam, zero_grad, backward, step; float data indexed on the device);
2. **sample**: ``model.sample`` of ``--samples`` images (per-index Philox noise, inference mode);
3. **evaluate**: Inception features of the samples and of as many real images, then Frechet
   distance and precision/recall (k = 3), as the evaluate stage computes them.

FLOPs per image are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one real training
step (forward + backward) and one real sampling batch (every network evaluation of the
sampler); MFU = FLOPs per image x images/s / the device's peak dense bf16 FLOP/s
(``--peak-tflops``; H100/H200 SXM: 989).

Data: CIFAR-10 from ``--cifar10`` (torchvision's folder) when given, else a stand-in of uniform
random uint8 images of the preset's shape (throughput does not depend on pixel values; the
metrics then mean nothing). Features: the config's ``evaluate.features``; for
``inception``, clean-fid's weights from ``--inception`` or ``$AUTOPHAGY_INCEPTION_WEIGHTS``, else
the random-weight stand-in of ``bench_eval.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from bench_eval import inception_network  # noqa: E402
from bench_families import load_rows, plain_run  # noqa: E402

from autophagy.config import load_config  # noqa: E402
from autophagy.metrics import compute_metrics  # noqa: E402
from autophagy.metrics.features import build_extractor  # noqa: E402
from autophagy.models import build_model  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, float | None]:
    """(seconds, peak CUDA MiB) of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return seconds, peak


def train_flops_per_image(model, rows: np.ndarray, batch: int, device: torch.device) -> float:
    """FLOPs of one fp32 training step (forward + backward of the loss) per image."""
    net = model.net.to(device).train()
    x = model.encode(rows[:batch]).to(device)
    generator = torch.Generator(device).manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        model.loss(net, x, generator).backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def sample_flops_per_image(model, batch: int, device: torch.device) -> float:
    with FlopCounterMode(display=False) as counter:
        model.sample(batch, seed=0, batch_size=batch, device=str(device))
    return counter.get_total_flops() / batch


def extractor_for(cfg, inception: str | None, n: int, device: torch.device, cache_dir: Path):
    """The config's feature extractor; for ``inception`` without weights, the random stand-in."""
    if cfg.evaluate.features != "inception":
        return build_extractor(cfg.evaluate.features, cache_dir=cache_dir, device=device), cfg.evaluate.features
    path = inception or os.environ.get("AUTOPHAGY_INCEPTION_WEIGHTS")
    weights = path if path and Path(path).is_file() else None
    _, extractor, name = inception_network(weights, n, device, 256 if device.type == "cuda" else 32)
    return extractor, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cifar10-edm.yaml")
    parser.add_argument("-S", "--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train-kimg", type=float, default=20.0)
    parser.add_argument("--plain-kimg", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--cifar10", help="torchvision CIFAR-10 root (default: random stand-in images)")
    parser.add_argument("--inception", help="clean-fid's inception-2015-12-05.pt")
    parser.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s (default: from the GPU's name)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = load_config(args.config, [*args.set, f"train.device={device}"])
    rows, data_name = load_rows(cfg, args.cifar10, 50_000 if device.type == "cuda" else 2_000)
    train_cfg, batch = cfg.train, min(cfg.train.batch_size, len(rows))
    torch.manual_seed(0)
    model = build_model(cfg.model, rows.shape[1:])
    peak = peak_tflops(device, args.peak_tflops)
    results: dict = {
        "config": cfg.name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "data": data_name,
        "parameters": model.parameter_count(),
        "batch_size": batch,
        "precision": train_cfg.precision,
        "compile": train_cfg.compile,
        "peak_tflops": peak,
    }
    print(f"{cfg.name}: {results['parameters']:,} parameters on {results['device']}, data: {data_name}")

    flops_train = train_flops_per_image(model, rows, min(batch, 64), device)
    model.fit(rows, batch / 1000, train_cfg, seed=0)  # warm-up: CUDA context, cuDNN autotuning, compilation
    seconds, memory = timed(lambda: model.fit(rows, args.train_kimg, train_cfg, seed=1), device)
    train_rate = args.train_kimg * 1000 / seconds
    plain_steps = max(1, int(args.plain_kimg * 1000) // batch)
    plain_run(cfg.model, rows, 1, batch, train_cfg.lr, device)()  # warm-up
    loop_seconds: list[float] = []  # the loop alone, without building the model
    _, plain_memory = timed(
        lambda: loop_seconds.append(plain_run(cfg.model, rows, plain_steps, batch, train_cfg.lr, device)()),
        device,
    )
    plain_rate = plain_steps * batch / loop_seconds[0]
    results["train"] = {
        "images_per_s": train_rate,
        "seconds": seconds,
        "kimg": args.train_kimg,
        "peak_cuda_mib": memory,
        "flops_per_image": flops_train,
        "plain_images_per_s": plain_rate,
        "plain_peak_cuda_mib": plain_memory,
        "speedup_over_plain": train_rate / plain_rate,
    }

    sample_batch = min(cfg.sample.batch_size, args.samples)
    flops_sample = sample_flops_per_image(model, min(sample_batch, 16), device)
    model.sample(sample_batch, seed=0, batch_size=sample_batch, device=str(device))  # warm-up
    samples: list[np.ndarray] = []
    seconds, memory = timed(
        lambda: samples.append(model.sample(args.samples, seed=1, batch_size=sample_batch, device=str(device))), device
    )
    results["sample"] = {
        "images_per_s": args.samples / seconds,
        "seconds": seconds,
        "images": args.samples,
        "batch_size": sample_batch,
        "peak_cuda_mib": memory,
        "flops_per_image": flops_sample,
    }

    scratch = tempfile.TemporaryDirectory(prefix="gpu-check-")
    extractor, network = extractor_for(cfg, args.inception, args.samples, device, Path(scratch.name))
    reference = rows[: args.samples]
    extractor(reference[:32])  # warm-up
    metrics: dict = {}
    seconds, memory = timed(
        lambda: metrics.update(
            compute_metrics(extractor(samples[0]), {"train": extractor(reference)}, k=cfg.evaluate.k, device=device)
        ),
        device,
    )
    results["evaluate"] = {
        "images_per_s": 2 * args.samples / seconds,
        "seconds": seconds,
        "network": network,
        "peak_cuda_mib": memory,
        **metrics,
    }

    print(f"{'step':10} {'images/s':>10} {'seconds':>8} {'GFLOP/img':>10} {'MFU':>6} {'peak MiB':>9}")
    for step, flops in (("train", flops_train), ("sample", flops_sample), ("evaluate", None)):
        r = results[step]
        mfu = flops * r["images_per_s"] / (peak * 1e12) if flops and peak else None
        r["mfu"] = mfu
        mfu_text = "" if mfu is None else f"{mfu:.1%}"
        memory_text = "" if r["peak_cuda_mib"] is None else f"{r['peak_cuda_mib']:.0f}"
        print(
            f"{step:10} {r['images_per_s']:10.1f} {r['seconds']:8.1f} {(flops or 0) / 1e9:10.2f} {mfu_text:>6} "
            f"{memory_text:>9}"
        )
    print(
        f"trainer / plain fp32 loop: {results['train']['speedup_over_plain']:.2f}x "
        f"({train_rate:.0f} vs {plain_rate:.0f} images/s); metrics ({network}): "
        + ", ".join(f"{k} = {v:.4g}" for k, v in metrics.items())
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
