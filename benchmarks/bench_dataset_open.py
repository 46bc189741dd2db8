"""The dataset reads of one generation at CIFAR-10 size, with and without the per-process hash cache.

One generation g >= 1 of a DVC stage opens, in this order (``stages/mix.py``, ``train.py``,
``evaluate.py``): the real training set and the previous generation's samples (mix), the mix it
just wrote (train: the real shard is a hard link), the samples it just wrote and the real training
and test sets (evaluate). Every open verifies each shard's sha256. This script times that sequence
with :data:`autophagy.data.dataset._VERIFIED` kept for the process (autophagy) and emptied before
every open (the reference: what every open did before the cache), alternating the two, after a
warm-up, and reports medians, the paired ratio and the bytes hashed.

    .venv/bin/python benchmarks/bench_dataset_open.py [--repeat 3] [--scale 1.0] [--json out.json]

``--scale`` shrinks every set (0.1: 5,000 training images). The files live in a temporary folder
on the same disk as ``--dir`` (default: the system's temporary folder); they are in the page cache
after the warm-up, as they are in a stage that has just written them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from autophagy.data import dataset
from autophagy.data.dataset import NewShard, open_dataset, write_dataset

CIFAR_TRAIN, CIFAR_TEST, SHAPE = 50_000, 10_000, (32, 32, 3)


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *SHAPE), dtype=np.uint8)


def _backdate(path: Path) -> None:
    """Files written by an earlier stage: their mtimes are seconds to hours old."""
    for file in path.rglob("*"):
        stamp = file.stat().st_mtime - 60
        os.utime(file, (stamp, stamp))


def prepare(root: Path, scale: float) -> dict[str, Path]:
    n_train, n_test = int(CIFAR_TRAIN * scale), int(CIFAR_TEST * scale)
    paths = {"train": root / "real-train", "test": root / "real-test", "previous": root / "samples-prev"}
    write_dataset(paths["train"], [NewShard({"type": "real"}, _images(n_train, 0))])
    write_dataset(paths["test"], [NewShard({"type": "real"}, _images(n_test, 1))])
    write_dataset(paths["previous"], [NewShard({"type": "synthetic"}, _images(n_train, 2))])
    for path in paths.values():
        _backdate(path)
    return paths


def one_generation(paths: dict[str, Path], work: Path, cached: bool) -> tuple[float, int]:
    """Seconds and bytes hashed for one generation's opens (lambda = 0.5: half the rows synthetic)."""
    hashed = []
    hash_file = dataset._hash_and_find_non_finite

    def counting(file, *args):
        hashed.append(file.stat().st_size)
        return hash_file(file, *args)

    def opened(path: Path) -> dataset.Dataset:
        if not cached:
            dataset._VERIFIED.clear()
        return open_dataset(path)

    dataset._VERIFIED.clear()
    dataset._hash_and_find_non_finite = counting
    try:
        started = time.perf_counter()
        real, previous = opened(paths["train"]), opened(paths["previous"])
        half = previous.shard_array(previous.shards[0])[: real.rows // 2]
        mix = write_dataset(
            work / "mix",
            [NewShard({"type": "real"}, source=(real, real.shards[0])), NewShard({"type": "synthetic"}, half)],
        )
        opened(mix.path)  # train
        samples = write_dataset(work / "samples", [NewShard({"type": "synthetic"}, np.ascontiguousarray(half))])
        for path in (samples.path, paths["train"], paths["test"]):  # evaluate
            opened(path)
        return time.perf_counter() - started, sum(hashed)
    finally:
        dataset._hash_and_find_non_finite = hash_file
        for name in ("mix", "samples"):
            for file in (work / name).glob("*"):
                file.unlink()
            (work / name).rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--dir", default=None, help="where the temporary data sets go")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-dataset-open-") as tmp:
        root = Path(tmp)
        paths = prepare(root, args.scale)
        one_generation(paths, root, cached=True)  # warm-up: the page cache
        one_generation(paths, root, cached=False)
        runs = {True: [], False: []}
        for _ in range(args.repeat):
            for cached in (False, True):
                runs[cached].append(one_generation(paths, root, cached))
    seconds = {cached: [s for s, _ in rows] for cached, rows in runs.items()}
    result = {
        "scale": args.scale,
        "repeat": args.repeat,
        "reference_seconds": statistics.median(seconds[False]),
        "cached_seconds": statistics.median(seconds[True]),
        "paired_speedup": statistics.median(r / c for r, c in zip(seconds[False], seconds[True])),
        "reference_mb_hashed": runs[False][0][1] / 1e6,
        "cached_mb_hashed": runs[True][0][1] / 1e6,
        "load": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
