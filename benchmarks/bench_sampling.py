"""Sampling images/s: the project's samplers (``model.sample``) against a plain float32 loop of the
same network and steps (issue 15, items 3, 4, 6).

    nice .venv/bin/python benchmarks/bench_sampling.py [--repeat 3] [--device cpu|cuda] [--n 1024]
        [--families edm ddpm ddpm-ancestral otcfm] [--config configs/digits-edm.yaml] [-S key=value ...]
        [--compile] [--json out.json]

Per family, after one warm-up round, rounds of (project default, project options..., plain loop)
are timed in turn (``paired.py``), the order rotated every round (:func:`rotated`); the figures are
medians and the geometric mean of the per-round ratios ``project images/s / plain images/s``
(:func:`paired_ratio`; above 1: the project is faster). Runs:

* ``project``: ``model.sample`` with ``sample.precision=auto`` (each family's reference state,
  EDM's float64 Heun iterate), per-sample-index noise, uint8 rows on the host;
* ``project fp32``: the same with ``precision=fp32`` (float32 state; the CPU fast path);
* on CUDA also ``project bf16`` and ``project bf16+compile`` (autocast; opt-in); on CPU with
  ``--compile``, ``project fp32+compile`` (the warm-up round absorbs the compilation);
* ``plain``: the reference, the simplest float32 PyTorch loop of the same network and update rule
  (``plain_sampling.py``; for DDPM's ancestral sampler :func:`ancestral`), noise from
  ``torch.randn``, rounded to uint8 rows on the host the same way.

``--weight-casts`` instead times the DDPM++ UNet's forward with and without its per-layer
``weight.to(x.dtype)`` (item 6; needs an EDM ``unet`` config, e.g. ``configs/digits-edm-unet.yaml``).

Families: ``edm`` (the config's Heun sampler), ``ddpm`` (its default sampler: DDIM, 50 steps,
no per-step noise), ``ddpm-ancestral`` (Ho et al. Alg. 2 at
``--ancestral-steps`` steps: per-step noise, the item-4 workload), ``otcfm`` (Euler). The network is
the config's (default: the default experiment's MLP on 8x8 digits) with random weights: speed does
not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from paired import interleaved, load_average, median, timed  # benchmarks/ is on sys.path
from plain_sampling import Loop, ddim, edm_heun, flow_euler, plain_sample
from torch import nn

from autophagy.config import load_config
from autophagy.models import build_model
from autophagy.models.ddpm import make_scheduler

FAMILIES = ("edm", "ddpm", "ddpm-ancestral", "otcfm")
IMAGE_SHAPES = {"digits": (8, 8, 1), "cifar10": (32, 32, 3)}  # [H, W, C] of a data source's images


def ancestral(cfg) -> Loop:
    """Ho et al. (2020) Alg. 2 (``fixed_large`` variance, clipped x_0) as a plain float32 loop."""
    scheduler = make_scheduler(cfg, "ancestral")
    abar = scheduler.alphas_cumprod.float()
    timesteps = [int(t) for t in scheduler.timesteps]
    stride = cfg.num_train_timesteps // cfg.num_steps

    def loop(net: nn.Module, noise: torch.Tensor) -> torch.Tensor:
        x = noise
        for t in timesteps:
            a, a_prev = abar[t], abar[t - stride] if t >= stride else torch.tensor(1.0)
            beta = 1 - a / a_prev
            eps = net(x, torch.full((x.shape[0],), t, device=x.device))
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            x = (a_prev.sqrt() * beta / (1 - a)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a)) * x
            if t > 0:
                x = x + beta.sqrt() * torch.randn_like(x)
        return x

    return loop


def rotated(runs: dict, repeat: int) -> dict[str, list[float]]:
    """``paired.interleaved`` with the order of the runs rotated every round: on the shared 2-core
    machine the first run of a round was ~25 % slower whatever it was (measured with
    ``--weight-casts``, whose two runs are within 1 % of each other when swapped), so a fixed order
    favours the last run. With ``repeat`` a multiple of the number of runs each takes every place."""
    names = list(runs)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name, times in interleaved({name: runs[name] for name in order}, 1, warmup=int(round_ == 0)).items():
            seconds[name] += times
    return seconds


def paired_ratio(seconds: dict[str, list[float]], project: str, reference: str) -> float:
    """The geometric mean over the rounds of ``reference seconds / project seconds`` (above 1: the
    project is faster). Under :func:`rotated` a run is first in some rounds and last in others: the
    geometric mean cancels that multiplicative place effect, where a median of the ratios picks a side."""
    logs = [math.log(b / a) for a, b in zip(seconds[project], seconds[reference], strict=True)]
    return math.exp(sum(logs) / len(logs))


def family_config(base: list[str], family: str, ancestral_steps: int) -> list[str]:
    if family == "ddpm-ancestral":
        return [*base, "model.family=ddpm", "model.sampler=ancestral", f"model.num_steps={ancestral_steps}"]
    return [*base, f"model.family={family}"]


def plain_loop_of(family: str, model_cfg) -> Loop:
    return {"edm": edm_heun, "ddpm": ddim, "ddpm-ancestral": ancestral, "otcfm": flow_euler}[family](model_cfg)


def measure(family: str, args: argparse.Namespace, device: torch.device) -> dict:
    """One family's interleaved runs: images/s of each, and each project run's paired ratio to the plain loop."""
    cfg = load_config(args.config, family_config(args.set, family, args.ancestral_steps))
    batch = min(args.batch_size or cfg.sample.batch_size, args.n)
    torch.manual_seed(0)
    model = build_model(cfg.model, args.shape or IMAGE_SHAPES[cfg.data.source])
    loop = plain_loop_of(family, cfg.model)
    options = {"project": {}, "project fp32": {"precision": "fp32"}}
    if device.type == "cuda":
        options |= {
            "project bf16": {"precision": "bf16"},
            "project bf16+compile": {"precision": "bf16", "compile": True},
        }
    elif args.compile:
        options["project fp32+compile"] = {"precision": "fp32", "compile": True}

    def synced(fn):
        def run():
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        return timed(run)

    runs = {
        name: synced(lambda kwargs=kwargs: model.sample(args.n, 0, batch, str(device), **kwargs))
        for name, kwargs in options.items()
    }
    runs["plain"] = synced(lambda: plain_sample(loop, model.ema, args.n, batch, model.noise_shape, device))
    load_before = load_average()
    seconds = rotated(runs, args.repeat)
    return {
        "family": family,
        "device": device.type,
        "n": args.n,
        "batch_size": batch,
        "load_average": [load_before, load_average()],
        **{f"{name} images/s": args.n / median(times) for name, times in seconds.items()},
        **{f"{name} / plain": paired_ratio(seconds, name, "plain") for name in options},
    }


def weight_casts(args: argparse.Namespace) -> dict:
    """Item 6: the DDPM++ UNet's forward (``--config``'s, float32, inference) as written (each
    ``Linear``/``Conv2d`` calls ``weight.to(x.dtype)``, a no-op for float32 inputs) against the same
    layers without the casts, interleaved; the ratio above 1 means the casts cost time."""
    from autophagy.models import unet

    cfg = load_config(args.config, args.set)
    model = build_model(cfg.model, args.shape or IMAGE_SHAPES[cfg.data.source])
    net = model.ema.model.eval()
    x = torch.randn(args.n, *model.noise_shape)
    labels = torch.zeros(args.n)
    with_casts = {cls: cls.forward for cls in (unet.Linear, unet.Conv2d)}

    def linear(self, x):
        return torch.nn.functional.linear(x, self.weight, self.bias)

    def conv(self, x):
        if self.up:
            x = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            x = torch.nn.functional.avg_pool2d(x, 2)
        if self.weight is not None:
            x = torch.nn.functional.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2)
        return x

    def forward(patched: dict):
        def run():
            for cls, method in patched.items():
                cls.forward = method
            with torch.inference_mode():
                return timed(lambda: net(x, labels))()

        return run

    runs = {"casts": forward(with_casts), "no casts": forward({unet.Linear: linear, unet.Conv2d: conv})}
    load_before = load_average()
    seconds = rotated(runs, args.repeat)
    forward(with_casts)()  # leave the classes as they were
    return {
        "config": cfg.name,
        "batch": args.n,
        "load_average": [load_before, load_average()],
        **{f"{name} ms": 1000 * median(times) for name, times in seconds.items()},
        "no casts / casts (speed)": paired_ratio(seconds, "no casts", "casts"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/digits-edm.yaml")
    parser.add_argument("-S", "--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=1024, help="images per timed run")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's sample.batch_size")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="H W C (default: the data source's)")
    parser.add_argument("--ancestral-steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="on CPU also time fp32 + sample.compile")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--weight-casts", action="store_true", help="time the UNet forward with/without weight casts")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weight_casts:
        print(json.dumps(weight_casts(args)))
        return
    results = []
    for family in args.families:
        results.append(measure(family, args, torch.device(args.device)))
        print(json.dumps(results[-1]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, median of {args.repeat}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
