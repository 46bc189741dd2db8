"""Real-data sources: each returns the rows of one split as uint8 images or float32 vectors.

=============  ==========================  =========================================
source         rows                         splits
=============  ==========================  =========================================
digits         uint8 [N, 8, 8, 1]           sklearn's 1797 digits: 1497 train / 300 test
toy2d          float32 [N, 2]               drawn with the seed (train and test streams)
gaussian       float32 [N, d]               N(mean, std^2 I) drawn with the seed
cifar10        uint8 [N, 32, 32, 3]         torchvision: 50000 train / 10000 test
image-folder   uint8 [N, R, R, 3]           a folder or .zip of PNG/JPEG, held-out share
=============  ==========================  =========================================
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np

from autophagy.cache import cache_dir
from autophagy.config import DataConfig
from autophagy.data.dataset import DatasetError

SPLITS = ("train", "test")
DIGITS_TEST_SIZE = 300
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Offsets that separate the random streams of the train and test draws of synthetic sources.
_SPLIT_STREAM = {"train": 0, "test": 1}


class DataSourceError(DatasetError):
    """A real-data source cannot be read (missing files, offline download, bad folder)."""


def load_split(cfg: DataConfig, split: str) -> np.ndarray:
    """Rows of ``split`` for ``cfg``, subsampled to ``n_train`` / ``n_test`` with ``cfg.seed``."""
    if split not in SPLITS:
        raise DataSourceError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    limit = cfg.n_train if split == "train" else cfg.n_test
    rng = np.random.default_rng([cfg.seed, _SPLIT_STREAM[split]])
    if cfg.source == "toy2d":
        return toy2d(cfg.name, limit, rng)
    if cfg.source == "gaussian":
        return (cfg.mean + cfg.std * rng.standard_normal((limit, cfg.dim))).astype(np.float32)
    loaders = {"digits": digits, "cifar10": cifar10, "image-folder": image_folder}
    rows = loaders[cfg.source](cfg, split)
    if limit is not None:
        if limit > len(rows):
            raise DataSourceError(
                f"data.n_{split}={limit} but the {cfg.source} {split} split has only {len(rows)} items"
            )
        rows = rows[np.sort(rng.choice(len(rows), size=limit, replace=False))]
    return np.ascontiguousarray(rows)


# ---------------------------------------------------------------------------- digits


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The fixed, stratified train/test split of sklearn's 1797 digits (1497 / 300)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, test = train_test_split(np.arange(len(target)), test_size=DIGITS_TEST_SIZE, random_state=0, stratify=target)
    return np.sort(train), np.sort(test)


def digits_images_and_labels(split: str) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as uint8 [N, 8, 8, 1] (17 gray levels 0..16 mapped to 0..255) and labels [N]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    train, test = digits_split_indices()
    index = train if split == "train" else test
    return images[index], bunch.target[index]


def digits(cfg: DataConfig, split: str) -> np.ndarray:
    return digits_images_and_labels(split)[0]


# ---------------------------------------------------------------------------- toy 2-D


def toy2d(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """2-D toy distributions of the normalizing-flow literature (FFJORD, torchcfm): float32 [n, 2]."""
    if name == "8gaussians":
        angles = 2 * np.pi * rng.integers(0, 8, size=n) / 8
        centers = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        points = centers + 0.5 * rng.standard_normal((n, 2))
        return (points / math.sqrt(2)).astype(np.float32)
    if name == "moons":
        upper = rng.random(n) < 0.5
        t = np.pi * rng.random(n)
        x = np.where(upper, np.cos(t), 1 - np.cos(t))
        y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
        points = np.stack([x, y], axis=1) + 0.05 * rng.standard_normal((n, 2))
        return ((points - [0.5, 0.25]) * 2.0).astype(np.float32)
    if name == "spiral":
        t = np.sqrt(rng.random(n)) * 3 * np.pi
        points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 3.0
        return (points + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    raise DataSourceError(f"unknown toy2d distribution {name!r}")


# ---------------------------------------------------------------------------- CIFAR-10


def cifar10(cfg: DataConfig, split: str) -> np.ndarray:
    """CIFAR-10 through torchvision: uint8 [50000 | 10000, 32, 32, 3]; downloads when online."""
    from torchvision.datasets import CIFAR10

    root = Path(cfg.path) if cfg.path else cache_dir("cifar10")
    try:
        dataset = CIFAR10(str(root), train=split == "train", download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise DataSourceError(
            f"CIFAR-10 is not under {root} and could not be downloaded ({err}). Offline? Place "
            f"cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/) in {root}, or set data.path."
        ) from None
    return np.asarray(dataset.data, dtype=np.uint8)


# ---------------------------------------------------------------------------- image folder


def image_folder(cfg: DataConfig, split: str) -> np.ndarray:
    """PNG/JPEG files from a folder or .zip (e.g. FFHQ-64): uint8 [N, R, R, 3], sorted by name.

    The test split is a fixed share (``test_fraction``) of the files chosen with seed 0, so it
    does not move when ``data.seed`` changes.
    """
    from PIL import Image

    path = Path(cfg.path)
    if not path.exists():
        raise DataSourceError(f"data.path {path} does not exist (expected a folder or .zip of PNG/JPEG files)")
    files = list(_image_files(path))
    if not files:
        raise DataSourceError(f"no PNG/JPEG files in {path}")
    test_count = max(1, int(round(len(files) * cfg.test_fraction)))
    order = np.random.default_rng(0).permutation(len(files))
    chosen = np.sort(order[:test_count] if split == "test" else order[test_count:])
    images = []
    for index in chosen:
        name, read = files[index]
        try:
            image = Image.open(io.BytesIO(read())).convert("RGB")
        except OSError as err:
            raise DataSourceError(f"cannot decode image {name} in {path}: {err}") from None
        if cfg.resolution is not None and image.size != (cfg.resolution, cfg.resolution):
            image = image.resize((cfg.resolution, cfg.resolution), Image.Resampling.LANCZOS)
        images.append(np.asarray(image, dtype=np.uint8))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataSourceError(f"images in {path} have different sizes {sorted(shapes)[:3]}...; set data.resolution")
    return np.stack(images)


def _image_files(path: Path):
    """Yield ``(name, read)`` for each image file, sorted by name."""
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DataSourceError(f"data.path {path} is a file but not a .zip archive")
        archive = zipfile.ZipFile(path)
        names = sorted(n for n in archive.namelist() if n.lower().endswith(IMAGE_SUFFIXES))
        for name in names:
            yield name, (lambda name=name: archive.read(name))
        return
    for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        yield str(file), file.read_bytes
