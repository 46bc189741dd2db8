"""Evaluation throughput: autophagy's evaluator beside clean-fid's own ``compute_fid`` on the same
images and the same network (issue 4, items 6 and 7).

    nice .venv/bin/python benchmarks/bench_eval.py [--n 256] [--resolution 32] [--weights inception-2015-12-05.pt]
                                                   [--device cpu|cuda] [--json out.json]

Both sides embed two sets of ``n`` uint8 RGB images with one network and compare them:

* **autophagy**: :class:`~autophagy.metrics.features.InceptionExtractor` (the "clean" resize as
  two batched matrix products on the device) and :func:`~autophagy.metrics.compute_metrics`
  (Frechet distance from eigenvalues, plus chunked precision/recall with k = 3);
* **clean-fid**: ``cleanfid.fid.compute_fid(dir_a, dir_b, mode="clean", custom_feat_extractor=net)``
  on the same images written as PNG folders (PIL resize per image in its data loader, then
  ``scipy.linalg.sqrtm``); it computes the Frechet distance only, so the ratio favours clean-fid.

The network is clean-fid's Inception-v3 when ``--weights`` names ``inception-2015-12-05.pt``;
offline (here) it is a stand-in: torchvision's Inception-v3 architecture (2048-d pool features,
the same convolutions and FLOPs) with seeded random weights. Throughputs are real either way;
the Frechet distances of the stand-in mean nothing except that both sides agree. With fewer
than 2049 images per set the stand-in projects its features to 64-d (``--stand-in-dim``), the
projection costing nothing beside the network.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from paired import interleaved, load_average, median, paired_speedup, timed  # benchmarks/ is on sys.path
from PIL import Image

from autophagy.data.sources import digits_images_and_labels
from autophagy.metrics import compute_metrics
from autophagy.metrics.features import InceptionExtractor
from autophagy.metrics.frechet import frechet_distance, gaussian_statistics


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class StandInInception(torch.nn.Module):
    """torchvision's Inception-v3 (random weights) behind clean-fid's convention:
    float ``[B, 3, 299, 299]`` in 0..255 -> features ``[B, dim]``: the 2048-d pool features, or
    with ``dim < 2048`` a fixed random projection of them (a Frechet distance needs more images
    than dimensions, or both covariances are singular and clean-fid's ``sqrtm`` fails)."""

    def __init__(self, dim: int = 2048, seed: int = 0):
        super().__init__()
        from torchvision.models import inception_v3

        torch.manual_seed(seed)
        self.net = inception_v3(weights=None, aux_logits=False, init_weights=True)
        self.net.fc = torch.nn.Identity() if dim == 2048 else torch.nn.Linear(2048, dim, bias=False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Random weights with identity batch-norm statistics blow activations up by many orders of
        # magnitude; unit-length features keep the distances printable (the cost is nil).
        return torch.nn.functional.normalize(self.net((x - self.mean) / self.std), dim=1)


def test_images(n: int, resolution: int, offset: int) -> np.ndarray:
    """``n`` uint8 RGB images ``[n, resolution, resolution, 3]``: sklearn digits, upscaled and tinted."""
    digits = digits_images_and_labels("train")[0]  # [N, 8, 8, 1]
    index = (np.arange(n) + offset) % len(digits)
    scale = max(1, resolution // 8)
    big = np.kron(digits[index, :, :, 0], np.ones((scale, scale), dtype=np.uint8))[:, :resolution, :resolution]
    tint = np.array([1.0, 0.8, 0.6])[None, None, None, :]
    return (big[..., None] * tint).astype(np.uint8)


def write_folder(images: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:06d}.png")


def inception_network(
    weights: str | None, n: int, device: torch.device, batch: int, stand_in_dim: int | None = None
) -> tuple[torch.nn.Module, InceptionExtractor, str]:
    """(network in clean-fid's convention, autophagy's extractor around it, its name): clean-fid's
    Inception-v3 from ``weights``, else the stand-in, with 2048-d features when ``n`` images per
    set allow a Frechet distance there, else ``stand_in_dim`` (default 64, at most n // 2)."""
    if weights:
        extractor = InceptionExtractor.from_weights(Path(weights), device=device, batch_size=batch)
        return extractor.model, extractor, "clean-fid Inception-v3"
    dim = stand_in_dim or (2048 if n > 2048 else min(64, max(2, n // 2)))
    network = StandInInception(dim).to(device).eval()
    extractor = InceptionExtractor(network, "inception:stand-in", device=device, batch_size=batch)
    return network, extractor, f"stand-in Inception-v3 (random weights, {dim}-d features)"


def side_by_side(
    a: np.ndarray,
    b: np.ndarray,
    network: torch.nn.Module,
    extractor: InceptionExtractor,
    device: torch.device,
    batch: int,
    workers: int,
    repeat: int = 1,
) -> dict:
    """Two image sets ``a``, ``b`` (uint8 ``[n, H, W, 3]``, or ``[n, H, W, 1]``, repeated to RGB)
    evaluated by autophagy (FD + precision/recall, k = 3) and by clean-fid's ``compute_fid`` (FD)
    with one network, each warmed up once, then alternated ``repeat`` times (:mod:`paired`): median
    seconds, images/s, the median of the per-pair ratios and how closely the Frechet distances agree."""
    from cleanfid import fid as cleanfid

    a, b = (np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x for x in (a, b))

    def autophagy_eval() -> dict:
        return compute_metrics(extractor(a), {"ref": extractor(b)}, k=3, device=device)

    def cleanfid_eval(dir_a: Path, dir_b: Path) -> float:
        with torch.inference_mode():
            return cleanfid.compute_fid(
                str(dir_a),
                str(dir_b),
                mode="clean",
                custom_feat_extractor=network,
                device=device,
                num_workers=workers,
                batch_size=batch,
                verbose=False,
            )

    with tempfile.TemporaryDirectory() as scratch:
        dir_a, dir_b = Path(scratch) / "a", Path(scratch) / "b"
        write_folder(a, dir_a)
        write_folder(b, dir_b)
        ours_metrics, theirs_fd = autophagy_eval(), cleanfid_eval(dir_a, dir_b)  # the warm-ups, and the values
        seconds = interleaved(
            {"autophagy": timed(autophagy_eval), "clean-fid": timed(lambda: cleanfid_eval(dir_a, dir_b))},
            repeat,
            warmup=0,
        )
    ours_peak = None
    if device.type == "cuda":  # alone: clean-fid's own allocations are not autophagy's peak
        torch.cuda.reset_peak_memory_stats(device)
        autophagy_eval()
        ours_peak = torch.cuda.max_memory_allocated(device) / 2**20
    ours_seconds, theirs_seconds = median(seconds["autophagy"]), median(seconds["clean-fid"])
    images = len(a) + len(b)
    return {
        "autophagy_seconds": ours_seconds,
        "autophagy_images_per_s": images / ours_seconds,
        "cleanfid_seconds": theirs_seconds,
        "cleanfid_images_per_s": images / theirs_seconds,
        "speedup": paired_speedup(seconds, "autophagy", "clean-fid"),  # median of the per-pair ratios
        "load_average": load_average(),
        "fd_autophagy": ours_metrics["fd_ref"],
        "fd_cleanfid": float(theirs_fd),
        "fd_relative_difference": abs(ours_metrics["fd_ref"] - theirs_fd) / max(abs(theirs_fd), 1e-12),
        "precision": ours_metrics["precision_ref"],
        "recall": ours_metrics["recall_ref"],
        "peak_cuda_mib": ours_peak,
    }


def frechet_timings(dim: int, device: torch.device) -> dict:
    """Seconds of the Frechet distance alone at ``dim`` features (Inception's 2048): autophagy's
    eigenvalue form against clean-fid's ``frechet_distance`` (``scipy.linalg.sqrtm``), on the
    statistics of two random feature sets of 2 * dim rows."""
    from cleanfid import fid as cleanfid

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2 * dim, dim)), rng.standard_normal((2 * dim, dim)) * 1.1 + 0.1
    (mu1, s1), (mu2, s2) = gaussian_statistics(a), gaussian_statistics(b)
    started = time.perf_counter()
    ours = frechet_distance(mu1, s1, mu2, s2, device=device)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    theirs = cleanfid.frechet_distance(mu1, s1, mu2, s2)
    theirs_seconds = time.perf_counter() - started
    return {
        "fd_dim": dim,
        "fd_only_autophagy_seconds": ours_seconds,
        "fd_only_cleanfid_seconds": theirs_seconds,
        "fd_only_speedup": theirs_seconds / ours_seconds,
        "fd_only_relative_difference": abs(ours - theirs) / abs(theirs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images per set (the paper: 50,000)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--weights", help="clean-fid's inception-2015-12-05.pt (default: the random stand-in)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on cuda, 64 on cpu")
    parser.add_argument(
        "--workers", type=int, default=None, help="clean-fid data-loader workers (default: 8 cuda, 0 cpu)"
    )
    parser.add_argument(
        "--stand-in-dim",
        type=int,
        default=None,
        help="feature dimension of the stand-in (default: 2048, or min(64, n / 2) when --n <= 2048)",
    )
    parser.add_argument(
        "--fd-dim", type=int, default=2048, help="feature dimension of the Frechet-only timing (0: skip)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch_size or (256 if device.type == "cuda" else 64)
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)
    network, extractor, network_name = inception_network(args.weights, args.n, device, batch, args.stand_in_dim)
    a, b = test_images(args.n, args.resolution, 0), test_images(args.n, args.resolution, 7)
    result = {
        "network": network_name,
        "device": str(device),
        "images_per_set": args.n,
        "resolution": args.resolution,
        "batch_size": batch,
        "threads": torch.get_num_threads(),
        "cleanfid_workers": workers,
        **side_by_side(a, b, network, extractor, device, batch, workers, args.repeat),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"{network_name} on {device}, 2 x {args.n} images of {args.resolution}x{args.resolution}")
    print(f"{'':28} {'seconds':>8} {'images/s':>9}")
    print(f"{'autophagy (FD + P/R)':28} {result['autophagy_seconds']:8.2f} {result['autophagy_images_per_s']:9.1f}")
    print(f"{'clean-fid compute_fid (FD)':28} {result['cleanfid_seconds']:8.2f} {result['cleanfid_images_per_s']:9.1f}")
    print(
        f"speedup {result['speedup']:.2f}x; FD {result['fd_autophagy']:.6g} vs {result['fd_cleanfid']:.6g} "
        f"(relative difference {result['fd_relative_difference']:.1e})"
    )
    if args.fd_dim:
        result.update(frechet_timings(args.fd_dim, device))
        print(
            f"Frechet distance alone at {args.fd_dim} features: {result['fd_only_autophagy_seconds']:.2f} s against "
            f"clean-fid's {result['fd_only_cleanfid_seconds']:.2f} s ({result['fd_only_speedup']:.1f}x; relative "
            f"difference {result['fd_only_relative_difference']:.1e})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
