"""Per-sample-index noise, images/s: the former one-CPU-generator-per-row method, the Philox noise
of ``autophagy.models.noise`` in torch ops and in one fused kernel, and ``torch.randn`` (what a plain
loop draws, with no per-index guarantee) on the CPU (and on CUDA when present). Issue 4, item 5;
issue 15, item 4.

    nice .venv/bin/python benchmarks/bench_noise.py [--repeat 5] [--threads N] [--json out.json]

The workloads are one ancestral step's noise for a batch: ``rows`` samples of ``shape`` (the
default experiment's 1,024 8x8 digits among them). The reference draws each row with
``torch.randn`` from a CPU ``torch.Generator`` seeded by ``SeedSequence([seed, index, stream])``
(what diffusers' ``DDPMScheduler.step`` did with a list of generators) and, for a CUDA target,
copies the batch to the GPU. ``philox fused`` is ``index_noise(fused=True)``: on a CPU Inductor's
compiled loop (compiled in the warm-up run, outside the timing), on CUDA the Triton kernel. Each
figure is the median of ``--repeat`` timed runs after one warm-up run; CUDA timings synchronise
the device.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from bench_eval import median_seconds  # benchmarks/ is on sys.path when run as a script

from autophagy.models.noise import index_noise

WORKLOADS = {
    "cifar 3x32x32": (1024, (3, 32, 32)),
    "digits 3x8x8": (256, (3, 8, 8)),
    "digits 1x8x8": (1024, (1, 8, 8)),
}
SEED, STREAM = 0, 1


def per_row_generator_noise(
    seed: int, start: int, count: int, shape: tuple[int, ...], stream: int, device: torch.device
) -> torch.Tensor:
    """The reference: one seeded CPU generator per row, then a host-to-device copy. ``[count, *shape]``."""
    out = torch.empty((count, *shape))
    for j in range(count):
        state = np.random.SeedSequence([seed, start + j, stream]).generate_state(1, np.uint64)[0]
        out[j] = torch.randn(shape, generator=torch.Generator().manual_seed(int(state)))
    return out.to(device)


def rate(method, rows: int, shape: tuple[int, ...], device: torch.device, repeat: int) -> float:
    """Images/s of ``method(seed, start, count, shape, stream, device)``."""

    def once():
        method(SEED, 0, rows, shape, STREAM, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    once()
    return rows / median_seconds(once, repeat)


def philox_noise(seed, start, count, shape, stream, device) -> torch.Tensor:
    return index_noise(seed, start, count, shape, stream=stream, device=device, fused=False)


def philox_fused_noise(seed, start, count, shape, stream, device) -> torch.Tensor:
    return index_noise(seed, start, count, shape, stream=stream, device=device, fused=True)


def randn_noise(seed, start, count, shape, stream, device) -> torch.Tensor:
    return torch.randn((count, *shape), device=device)


METHODS = {
    "per-row generators": per_row_generator_noise,
    "philox": philox_noise,
    "philox fused": philox_fused_noise,
    "torch.randn": randn_noise,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = []
    for name in args.workloads:
        rows, shape = WORKLOADS[name]
        for device in devices:
            rates = {method: rate(fn, rows, shape, device, args.repeat) for method, fn in METHODS.items()}
            results.append(
                {"workload": name, "rows": rows, "device": device.type}
                | {f"{method} images_per_s": value for method, value in rates.items()}
                | {"philox_over_per_row": rates["philox"] / rates["per-row generators"]}
                | {"fused_over_philox": rates["philox fused"] / rates["philox"]}
                | {"fused_over_randn": rates["philox fused"] / rates["torch.randn"]}
            )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, median of {args.repeat}; images/s")
    print(f"{'workload':<14} {'rows':>5} {'device':<6} " + " ".join(f"{m:>18}" for m in METHODS))
    for r in results:
        figures = " ".join(f"{r[f'{m} images_per_s']:>18,.0f}" for m in METHODS)
        print(f"{r['workload']:<14} {r['rows']:>5} {r['device']:<6} {figures}")
    if args.json:
        payload = {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "repeat": args.repeat,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
