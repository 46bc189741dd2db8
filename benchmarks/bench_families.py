"""Training, sampling and evaluation throughput and peak memory of each registered image family
(edm, ddpm, otcfm, and any other with ``kind="image"`` in ``autophagy.config.FAMILIES``), each
beside its reference, with the ratio. Issue 4, item 7.

    nice .venv/bin/python benchmarks/bench_families.py [--kimg 10] [--samples 512] [--eval-n 128] [--repeat 3]
                                                       [--device cpu] [--json out.json]
    .venv/bin/python benchmarks/bench_families.py --paper --device cuda [--cifar10 DIR] [--weights FILE] ...

Presets: the families' tiny CPU presets on 8x8 digits (their config classes' defaults; default),
or with ``--paper`` the paper networks of their registrations' ``paper_config``
(``configs/cifar10-{edm,ddpm,otcfm}.yaml``) on CIFAR-10 (``--cifar10``; else random uint8 images
of its shape, which cost the same), for a GPU. ``-S key=value`` overrides every
paper config (e.g. ``-S model.model_channels=32`` for a quick run).

References, in the same run, each paired with the project's run: one untimed warm-up, then
``--repeat`` rounds alternating project and reference (A, B, A, B, ...); the ratios are the
medians of the per-round ratios, which a machine shared with other work moves much less than the
medians of the rates do (``paired.py``):

* **training**: autophagy's trainer (EMA, warmup, NaN checks, data on the device) in each speed
  variant of ``train.precision`` / ``train.channels_last`` (fp32; bf16 autocast; bf16 +
  channels-last, the CUDA default) beside a plain fp32 PyTorch loop of the same network and loss
  (Adam, zero_grad, backward, step), all four in each round. On a CPU bf16 is usually *slower*
  (no bf16 matrix units); the columns say what this machine does;
* **sampling**: the family's sampler (images/s) beside a plain float32 loop of the same network,
  steps and update rule (``plain_sampling.py``; none for adaptive or stochastic samplers), whose
  samples from the same noise agree with the sampler's (the largest difference is reported);
* **evaluation**: the family's ``--eval-n`` samples against as many real images, embedded by one
  Inception-v3 network (clean-fid's weights from ``--weights``, else ``bench_eval.py``'s
  random-weight stand-in), by autophagy's evaluator (FD + precision/recall) beside clean-fid's
  own ``compute_fid`` (FD) on the same images (see ``bench_eval.py``).

Peak memory: on CUDA the allocator's peak over each family's training and sampling; on CPU the
process's peak resident set size after each family (``ru_maxrss``, cumulative: an upper bound).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch
from bench_eval import inception_network, side_by_side
from paired import interleaved, load_average, median, paired_speedup, timed
from plain_sampling import largest_difference, plain_loop, plain_sample

from autophagy.config import FAMILIES, TrainConfig, load_config
from autophagy.data.sources import digits_images_and_labels
from autophagy.models import build_model

ROOT = Path(__file__).parents[1]
#: The image families and their tiny CPU presets (each config class's defaults).
TINY_PRESETS = {name: family.config() for name, family in FAMILIES.items() if family.kind == "image"}

#: Trainer variants: train.precision / train.channels_last overrides.
VARIANTS = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "bf16": {"precision": "bf16", "channels_last": False},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
}


def load_rows(cfg, cifar10: str | None, count: int) -> tuple[np.ndarray, str]:
    """The preset's training images: CIFAR-10 from ``cifar10``, data that ships (digits), or for
    data that cannot be fetched here a random uint8 stand-in of the preset's shape."""
    from autophagy.data.sources import load_split

    if cfg.data.source == "cifar10" and cifar10:
        return load_split(dataclasses.replace(cfg.data, path=cifar10), "train"), "CIFAR-10"
    if cfg.data.source not in ("cifar10", "image-folder"):
        return load_split(cfg.data, "train"), cfg.data.source
    resolution = cfg.data.resolution or (64 if cfg.name.startswith("ffhq64") else 32)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, resolution, resolution, 3), dtype=np.uint8), "random uint8 stand-in"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_run(cfg, rows: np.ndarray, kimg: float, train: TrainConfig):
    """A run: build the model (untimed), then the seconds of one ``fit`` of ``kimg`` thousand images."""
    device = torch.device(train.device)

    def run() -> float:
        torch.manual_seed(0)
        model = build_model(cfg, rows.shape[1:])
        synchronize(device)
        started = time.perf_counter()
        model.fit(rows, kimg, train, seed=0)
        synchronize(device)
        return time.perf_counter() - started

    return run


def plain_run(cfg, rows: np.ndarray, steps: int, batch_size: int, lr: float, device: torch.device):
    """A run: ``steps`` steps of the plainest loop of ``cfg``'s network and loss: fp32 Adam,
    zero_grad, backward, step, on float data already on ``device`` (model building not timed)."""

    def run() -> float:
        torch.manual_seed(0)
        model = build_model(cfg, rows.shape[1:])
        net, data = model.net.to(device).train(), model.encode(rows).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        generator = torch.Generator(device).manual_seed(0)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            batch = data[torch.randint(0, len(data), (batch_size,), generator=generator, device=device)]
            loss = model.loss(net, batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        float(loss.detach())  # wait for the device
        return time.perf_counter() - started

    return run


def training(cfg, rows: np.ndarray, kimg: float, train: TrainConfig, repeat: int) -> dict:
    """Images/s of each trainer variant and of the plain loop, interleaved, and the paired ratios."""
    batch = min(train.batch_size, len(rows))
    steps = math.ceil(kimg * 1000 / batch)  # fit takes whole batches until the budget is reached
    runs = {
        name: trainer_run(cfg, rows, kimg, dataclasses.replace(train, **options)) for name, options in VARIANTS.items()
    }
    runs["plain"] = plain_run(cfg, rows, steps, batch, train.lr, torch.device(train.device))
    short = min(kimg, 2 * batch / 1000)  # warm-ups: imports, first kernels, lazy initialisation
    warmups = {name: trainer_run(cfg, rows, short, dataclasses.replace(train, **o)) for name, o in VARIANTS.items()}
    warmups["plain"] = plain_run(cfg, rows, 2, batch, train.lr, torch.device(train.device))
    seconds = interleaved(runs, repeat, warmups=warmups)
    images = steps * batch
    return {
        "train_images_per_s": images / median(seconds["fp32"]),
        "plain_train_images_per_s": images / median(seconds["plain"]),
        "trainer_over_plain": paired_speedup(seconds, "fp32", "plain"),
        "trainer_images_per_s_by_variant": {name: images / median(seconds[name]) for name in VARIANTS},
        "trainer_over_plain_by_variant": {name: paired_speedup(seconds, name, "plain") for name in VARIANTS},
        "train_seconds": seconds,
    }


def sampling(model, n: int, repeat: int, batch_size: int, device: str) -> dict:
    """Images/s of the family's sampler and of its plain loop (where it has one), interleaved."""
    runs = {"project": timed(lambda: model.sample(n, seed=0, batch_size=batch_size, device=device))}
    warmups = {"project": lambda: model.sample(min(n, batch_size), seed=0, batch_size=batch_size, device=device)}
    loop = plain_loop(model.cfg)
    out: dict = {}
    if loop is not None:
        shape = model.noise_shape
        runs["plain"] = timed(lambda: plain_sample(loop, model.ema, n, batch_size, shape, device))
        warmups["plain"] = lambda: plain_sample(loop, model.ema, min(n, batch_size), batch_size, shape, device)
        out["plain_reference_largest_difference"] = largest_difference(model, loop, min(n, 16), device)
    seconds = interleaved(runs, repeat, warmups=warmups)
    out["sample_images_per_s"] = n / median(seconds["project"])
    if loop is not None:
        out["plain_sample_images_per_s"] = n / median(seconds["plain"])
        out["sampler_over_plain"] = paired_speedup(seconds, "project", "plain")
    return out


def presets(args) -> dict[str, tuple]:
    """``{family: (model config, train config, rows, data name)}`` of the tiny or the paper presets."""
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(TINY_PRESETS))
    if unknown or not families:
        raise SystemExit(f"--families: unknown {unknown or 'none given'}; the families are {', '.join(TINY_PRESETS)}")
    if not args.paper:
        rows = digits_images_and_labels("train")[0]
        train = TrainConfig(batch_size=256, lr=1e-3, device=args.device)
        return {family: (TINY_PRESETS[family], train, rows, "digits 8x8") for family in families}
    no_paper = [family for family in families if FAMILIES[family].paper_config is None]
    if no_paper:
        raise SystemExit(f"--paper: no paper_config is registered for {', '.join(no_paper)}")
    out = {}
    for family in families:
        cfg = load_config(ROOT / FAMILIES[family].paper_config, [*args.set, f"train.device={args.device}"])
        rows, data = load_rows(cfg, args.cifar10, 50_000 if args.device == "cuda" else 2_048)
        out[family] = (cfg.model, cfg.train, rows, data)
    return out


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="the paper networks of configs/cifar10-*.yaml (a GPU)")
    parser.add_argument("--families", default=",".join(TINY_PRESETS), help="comma-separated (default: all)")
    parser.add_argument("-S", "--set", action="append", default=[], help="--paper: config override key=value")
    parser.add_argument("--cifar10", help="--paper: torchvision CIFAR-10 root (default: random stand-in images)")
    parser.add_argument(
        "--kimg",
        type=float,
        default=10.0,
        help="training images per measurement, in thousands (fewer: under a second, noisy)",
    )
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--eval-n", type=int, default=128, help="samples (and real images) per evaluation; 0: skip")
    parser.add_argument("--weights", help="clean-fid's inception-2015-12-05.pt (default: the random stand-in)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    eval_batch, workers = (256, 8) if device.type == "cuda" else (64, 0)
    results: dict = {
        "threads": torch.get_num_threads(),
        "device": args.device,
        "presets": "paper" if args.paper else "tiny",
    }
    trainer_columns = " ".join(f"{'trainer ' + name:>15}" for name in VARIANTS)
    print(
        f"{'family':8} {trainer_columns} {'plain img/s':>12} {'fp32/plain':>10} {'sample img/s':>13} "
        f"{'plain img/s':>12} {'samp/plain':>10} {'eval img/s':>11} {'clean-fid':>10} {'eval ratio':>10} "
        f"{'peak MiB':>9}"
    )
    results["load_average_1min"] = [load_average()]
    if args.eval_n:
        network, extractor, results["evaluation_network"] = inception_network(
            args.weights, args.eval_n, device, eval_batch
        )
    for family, (cfg, train, rows, data) in presets(args).items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trained = training(cfg, rows, args.kimg, train, args.repeat)
        model = build_model(cfg, rows.shape[1:])
        sample_batch = min(args.samples, 1024)
        sampled = sampling(model, args.samples, args.repeat, sample_batch, args.device)
        peak = peak_memory_mib(device)
        results[family] = {
            "data": data,
            "parameters": model.parameter_count(),
            "sampler": getattr(cfg, "sampler", "heun"),
            "num_steps": cfg.num_steps,
            **trained,
            **sampled,
            "peak_memory_mib": peak,
            "peak_memory_kind": "cuda allocator" if device.type == "cuda" else "rss",
        }
        evaluation = ""
        if args.eval_n:
            samples = model.sample(args.eval_n, seed=1, batch_size=sample_batch, device=args.device)
            compared = side_by_side(samples, rows[: args.eval_n], network, extractor, device, eval_batch, workers)
            results[family]["evaluation"] = compared
            evaluation = (
                f"{compared['autophagy_images_per_s']:11.1f} {compared['cleanfid_images_per_s']:10.1f} "
                f"{compared['speedup']:10.2f}"
            )
        rates = trained["trainer_images_per_s_by_variant"]
        columns = " ".join(f"{rates[name]:15.0f}" for name in VARIANTS)
        plain_sampling_columns = (
            f"{sampled['plain_sample_images_per_s']:12.0f} {sampled['sampler_over_plain']:10.2f}"
            if "sampler_over_plain" in sampled
            else f"{'-':>12} {'-':>10}"
        )
        print(
            f"{family:8} {columns} {trained['plain_train_images_per_s']:12.0f} {trained['trainer_over_plain']:10.2f} "
            f"{sampled['sample_images_per_s']:13.0f} {plain_sampling_columns} {evaluation:>32} {peak:9.0f}"
        )
    results["load_average_1min"].append(load_average())
    if args.eval_n:
        print(
            f"evaluation: {args.eval_n} samples + {args.eval_n} real images per family, {results['evaluation_network']}"
        )
    if args.json:
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
