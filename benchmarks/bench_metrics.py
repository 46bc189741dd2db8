"""Evaluation metrics without repeated work (issue 15, items 1 and 2): autophagy's
``compute_metrics`` beside the plain, unfused computation it replaces, and its Frechet distance
beside clean-fid's.

    nice .venv/bin/python benchmarks/bench_metrics.py [--samples 6000 --train 6000 --test 1200]
        [--dim 2048] [--paper] [--repeat 3] [--device cpu|cuda] [--skip-fd | --fd-only] [--json out.json]

``--paper`` is the paper's scale: 50k samples against 50k train + 10k test features, 2048-d.
The features are synthetic float32 (a 32-d Gaussian mapped linearly to ``--dim``, plus noise; the
samples slightly shifted and widened), so that precision and recall are neither 0 nor 1.

**Evaluation** (k = 3), interleaved (reference, cold, warm, reference, ...) after a warm-up at a
tenth of the size, medians of ``--repeat`` and the median of the paired ratios:

* *reference*: :func:`reference_compute_metrics`, the computation as it stood before issue 15,
  written out plainly here: for every reference set, the samples' and the reference's mean and
  covariance (float64 copy, separate finiteness pass, ``np.cov``), both sets' k-NN radii, then
  the distance tiles once for precision and again, transposed, for recall (``torch.cat`` of each
  tile onto the running top-k, three tile-sized temporaries per tile);
* *cold*: ``compute_metrics`` with nothing cached (the first generation of an experiment);
* *warm*: ``compute_metrics`` with the reference sets' statistics and radii read from
  :func:`~autophagy.metrics.cached_statistics` files (every later generation; the time includes
  reading the files and hashing the features to check they are those of the cache).

All three must give the same precision/recall (reported: the largest difference) and the same
Frechet distances (reported: the largest relative difference).

**Frechet distance** of the samples against the train set, statistics included: clean-fid's own
``cleanfid.fid.frechet_distance`` (``scipy.linalg.sqrtm``) on ``np.mean`` / ``np.cov`` as clean-fid
computes them, against :func:`~autophagy.metrics.gaussian_statistics` (one chunked pass on
``--device``: float32 products summed in float64 on the CPU, the default, and float64 products)
and :func:`~autophagy.metrics.frechet_distance` (eigenvalues on ``--device``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import autophagy.config  # noqa: F401  (first: importing autophagy.metrics first is a circular import, metric_keys -> config -> metric_keys)
from autophagy.metrics import cached_statistics, compute_metrics, frechet_distance, gaussian_statistics

# ------------------------------------------------------------------ the reference: before issue 15


def reference_compute_metrics(
    samples: np.ndarray, references: dict[str, np.ndarray], k: int, device: str
) -> dict[str, float]:
    """FD and precision/recall of ``samples`` against each reference, as computed before issue 15."""
    mu, sigma = reference_gaussian_statistics(samples)
    out = {}
    for name, reference in references.items():
        mu_ref, sigma_ref = reference_gaussian_statistics(reference)
        precision, recall = reference_precision_recall(reference, samples, k, device)
        out[f"fd_{name}"] = frechet_distance(mu, sigma, mu_ref, sigma_ref, device=device)
        out[f"precision_{name}"], out[f"recall_{name}"] = precision, recall
    return out


def reference_gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A float64 copy, a finiteness pass, then ``np.cov`` (which copies again)."""
    features = features.astype(np.float64)
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def reference_precision_recall(
    real: np.ndarray, generated: np.ndarray, k: int, device: str, row_chunk: int = 2048, col_chunk: int = 8192
) -> tuple[float, float]:
    """Both sets moved by the real mean; both sets' radii; precision tiles, then recall tiles."""
    centre = real.mean(axis=0, dtype=np.float64)
    r = torch.from_numpy((real - centre).astype(np.float32)).to(device)
    g = torch.from_numpy((generated - centre).astype(np.float32)).to(device)
    r_radii2 = reference_knn_radii_squared(r, k, row_chunk, col_chunk)
    g_radii2 = reference_knn_radii_squared(g, k, row_chunk, col_chunk)
    precision = reference_coverage(g, r, r_radii2, row_chunk, col_chunk)
    recall = reference_coverage(r, g, g_radii2, row_chunk, col_chunk)
    return precision, recall


def reference_squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a_sq, b_sq = (a * a).sum(dim=1), (b * b).sum(dim=1)
    return (a_sq[:, None] - 2.0 * (a @ b.T) + b_sq[None, :]).clamp_(min=0)


def reference_knn_radii_squared(x: torch.Tensor, k: int, row_chunk: int, col_chunk: int) -> torch.Tensor:
    radii = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], row_chunk):
        best = None
        for j in range(0, x.shape[0], col_chunk):
            d2 = reference_squared_distances(x[i : i + row_chunk], x[j : j + col_chunk])
            if best is not None:
                d2 = torch.cat([best, d2], dim=1)
            best = torch.topk(d2, min(k + 1, d2.shape[1]), dim=1, largest=False).values
        radii[i : i + row_chunk] = best[:, k]
    return radii


def reference_coverage(
    queries: torch.Tensor, centres: torch.Tensor, radii2: torch.Tensor, row_chunk: int, col_chunk: int
) -> float:
    covered = 0
    for i in range(0, queries.shape[0], row_chunk):
        inside = torch.zeros(min(row_chunk, queries.shape[0] - i), dtype=torch.bool, device=queries.device)
        for j in range(0, centres.shape[0], col_chunk):
            d2 = reference_squared_distances(queries[i : i + row_chunk], centres[j : j + col_chunk])
            inside |= (d2 <= radii2[j : j + col_chunk]).any(dim=1)
        covered += int(inside.sum())
    return covered / queries.shape[0]


def cleanfid_fd(a: np.ndarray, b: np.ndarray) -> float:
    """clean-fid's Frechet distance on the statistics as clean-fid computes them."""
    from cleanfid.fid import frechet_distance as cleanfid_frechet_distance

    (mu1, s1), (mu2, s2) = ((np.mean(x, axis=0), np.cov(x, rowvar=False)) for x in (a, b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sqrtm's deprecated disp argument
        return float(cleanfid_frechet_distance(mu1, s1, mu2, s2))


# ------------------------------------------------------------------ measurement


def synthetic_features(rows: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """float32 ``[rows, dim]``: a 32-d standard Gaussian mapped by a fixed matrix, plus noise."""
    mixing = torch.randn(32, dim, generator=torch.Generator().manual_seed(0)) / 32**0.5
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(rows, 32, generator=generator) * scale + shift
    return (latent @ mixing + 0.05 * torch.randn(rows, dim, generator=generator)).numpy()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed(fn):
    started = time.perf_counter()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, value


def compare_values(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """The largest |difference| of the precision/recall values and relative difference of the FDs."""
    pr = max(abs(a[key] - b[key]) for key in a if not key.startswith("fd_"))
    fd = max(abs(a[key] - b[key]) / abs(a[key]) for key in a if key.startswith("fd_"))
    return {"precision_recall_max_abs_diff": pr, "fd_max_rel_diff": fd}


def bench_evaluation(samples, references, k, device, repeat, cache_dir: Path) -> dict:
    def cold():
        return compute_metrics(samples, references, k=k, device=device)

    def warm():
        cached = {
            name: cached_statistics(cache_dir / f"{name}.stats-k{k}.npz", x, k=k, device=device)
            for name, x in references.items()
        }
        return compute_metrics(samples, references, k=k, device=device, reference_statistics=cached)

    def reference():
        return reference_compute_metrics(samples, references, k, device)

    # warm-up at a tenth of the size (kernels, allocator), then fill the cache for "warm"
    small = {name: x[: len(x) // 10] for name, x in references.items()}
    reference_compute_metrics(samples[: len(samples) // 10], small, k, device)
    compute_metrics(samples[: len(samples) // 10], small, k=k, device=device)
    for name, x in references.items():
        cached_statistics(cache_dir / f"{name}.stats-k{k}.npz", x, k=k, device=device)
    times = {"reference": [], "cold": [], "warm": []}
    values = {}
    for _ in range(repeat):
        for label, fn in (("reference", reference), ("cold", cold), ("warm", warm)):
            seconds, values[label] = timed(fn)
            times[label].append(seconds)
            print(f"  {label:9s} {seconds:8.2f} s", flush=True)
    return {
        "seconds_median": {label: statistics.median(t) for label, t in times.items()},
        "seconds": times,
        "speedup_cold": statistics.median(r / c for r, c in zip(times["reference"], times["cold"], strict=True)),
        "speedup_warm": statistics.median(r / w for r, w in zip(times["reference"], times["warm"], strict=True)),
        "values": values,
        "cold_vs_reference": compare_values(values["reference"], values["cold"]),
        "warm_vs_reference": compare_values(values["reference"], values["warm"]),
    }


def bench_frechet(a, b, device, repeat) -> dict:
    def ours(float64_products: bool = False):
        exact = {"device": device, "float64_products": float64_products}
        return frechet_distance(*gaussian_statistics(a, **exact), *gaussian_statistics(b, **exact), device=device)

    contenders = {
        "clean-fid": lambda: cleanfid_fd(a, b),
        "autophagy": ours,
        "autophagy float64 products": lambda: ours(float64_products=True),
    }
    ours()  # warm-up
    cleanfid_fd(a[:3000], b[:3000])
    times = {label: [] for label in contenders}
    values = {}
    for _ in range(repeat):
        for label, fn in contenders.items():
            seconds, values[label] = timed(fn)
            times[label].append(seconds)
            print(f"  FD {label:26s} {seconds:8.2f} s", flush=True)
    return {
        "seconds_median": {label: statistics.median(t) for label, t in times.items()},
        "seconds": times,
        "speedup": {
            label: statistics.median(c / o for c, o in zip(times["clean-fid"], times[label], strict=True))
            for label in contenders
            if label != "clean-fid"
        },
        "values": values,
        "rel_diff_vs_cleanfid": {
            label: abs(value - values["clean-fid"]) / abs(values["clean-fid"]) for label, value in values.items()
        },
        "rel_diff_float32_vs_float64_products": abs(values["autophagy"] - values["autophagy float64 products"])
        / abs(values["autophagy float64 products"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1200)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--paper", action="store_true", help="50k samples vs 50k train + 10k test (2048-d)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-fd", action="store_true", help="the evaluation only")
    parser.add_argument("--fd-only", action="store_true", help="the Frechet distance only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.paper:
        args.samples, args.train, args.test, args.dim = 50_000, 50_000, 10_000, 2048
    result = {
        "scale": {"samples": args.samples, "train": args.train, "test": args.test, "dim": args.dim, "k": args.k},
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),
        "uptime_before": uptime(),
    }
    print(json.dumps(result), flush=True)
    samples = synthetic_features(args.samples, args.dim, seed=1, shift=0.1, scale=1.1)
    references = {
        "train": synthetic_features(args.train, args.dim, seed=2),
        "test": synthetic_features(args.test, args.dim, seed=3),
    }
    if not args.fd_only:
        with tempfile.TemporaryDirectory(prefix="bench-metrics-") as cache:
            result["evaluation"] = bench_evaluation(samples, references, args.k, args.device, args.repeat, Path(cache))
    if not args.skip_fd:
        result["frechet"] = bench_frechet(samples, references["train"], args.device, args.repeat)
    result["uptime_after"] = uptime()
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
