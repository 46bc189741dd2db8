"""What the metrics need of one feature set, computed once: mean, covariance and k-NN radii.

The Frechet distance needs a set's Gaussian statistics (:func:`.frechet.gaussian_statistics`),
improved precision/recall its squared k-NN radii (:func:`.precision_recall.knn_radii`), computed
in a frame: the set moved by a centre, its own mean or, for every reference set after the first,
the first one's (:func:`.precision_recall.precision_recall_against`). They depend on the set and
that centre alone, so a generation's samples need them once for all reference sets, and a
reference set once for all generations: :func:`cached_statistics` keeps a reference set's
statistics in a ``.npz`` file beside its cached features.

A cache file is valid for the features it was computed from, not for a path: it records the
sha256 of the features (:func:`features_digest`: dtype, shape and bytes), ``k``, the centre and
the precision of the covariance's products (:func:`.frechet.covariance_products`), and is
recomputed, then atomically rewritten, when any differs or the file is unreadable.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autophagy import atomic
from autophagy.metrics.frechet import covariance_products, gaussian_statistics
from autophagy.metrics.precision_recall import knn_radii


@dataclass(frozen=True)
class FeatureStatistics:
    """A feature set ``[N, F]`` summarised for the metrics.

    Attributes:
        mu: float64 ``[F]``, the mean.
        sigma: float64 ``[F, F]``, the unbiased covariance (``np.cov``).
        radii2: float32 ``[N]``, the squared distance of each row to its k-th nearest other row,
            computed with the rows moved by ``centre``.
        k: the k of ``radii2`` (Kynkaanniemi et al. 2019 use k = 3).
        centre: float64 ``[F]``, the frame of ``radii2`` (by default the set's own mean).
    """

    mu: np.ndarray
    sigma: np.ndarray
    radii2: np.ndarray
    k: int
    centre: np.ndarray


def feature_statistics(
    features: np.ndarray,
    *,
    k: int,
    device: str | torch.device = "cpu",
    name: str = "features",
    centre: np.ndarray | None = None,
) -> FeatureStatistics:
    """Mean, covariance and squared k-NN radii of ``features`` ``[N, F]`` (N > k), computed on
    ``device``, the radii in the frame of ``centre`` (float ``[F]``; by default the set's own mean);
    ``name`` names the set in error messages."""
    mu, sigma = gaussian_statistics(features, device=device, name=name)
    centre = frame_centre(features, centre)
    radii2 = knn_radii(features, k, device=device, name=name, centre=centre)
    return FeatureStatistics(mu, sigma, radii2, k, centre)


def frame_centre(features: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """``centre`` as float64 ``[F]``, or, when None, the mean of ``features`` ``[N, F]`` as
    :func:`.precision_recall.knn_radii` computes it."""
    if centre is None:
        return np.asarray(features).mean(axis=0, dtype=np.float64)
    return np.asarray(centre, dtype=np.float64)


def features_digest(features: np.ndarray) -> str:
    """sha256 of a feature array's dtype, shape and bytes (C order): equal digests, equal features."""
    features = np.ascontiguousarray(features)
    digest = hashlib.sha256(f"{features.dtype.str}{list(features.shape)}".encode())
    digest.update(memoryview(features).cast("B"))
    return digest.hexdigest()


def cached_statistics(
    path: str | Path,
    features: np.ndarray,
    *,
    k: int,
    device: str | torch.device = "cpu",
    name: str = "features",
    centre: np.ndarray | None = None,
) -> FeatureStatistics:
    """The statistics of ``features`` (:func:`feature_statistics`) from the cache file ``path``
    when it holds those of these very features, this ``k`` and this ``centre``, their covariance
    multiplied in the precision it would be here; else computed and written to ``path`` atomically."""
    path = Path(path)
    digest = features_digest(features)
    centre = frame_centre(features, centre)
    products = covariance_products(np.asarray(features).dtype, device, *np.shape(features)).name
    cached = load_statistics(path, digest, k, rows=len(features), centre=centre, products=products)
    if cached is not None:
        return cached
    statistics = feature_statistics(features, k=k, device=device, name=name, centre=centre)
    save_statistics(path, statistics, digest, products=products)
    return statistics


def save_statistics(path: str | Path, statistics: FeatureStatistics, digest: str, *, products: str) -> None:
    """Write ``statistics`` of the features with sha256 ``digest``, their covariance's products
    computed in ``products`` (``"float32"`` or ``"float64"``), to ``path`` (a ``.npz``), atomically."""
    with atomic.temp_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            mu=statistics.mu,
            sigma=statistics.sigma,
            radii2=statistics.radii2,
            k=np.int64(statistics.k),
            centre=statistics.centre,
            features_sha256=np.str_(digest),
            sigma_products=np.str_(products),
        )


def load_statistics(
    path: str | Path, digest: str, k: int, *, rows: int, centre: np.ndarray, products: str
) -> FeatureStatistics | None:
    """The statistics in ``path`` if they are those of the features with sha256 ``digest`` (``rows``
    rows) for this ``k``, their radii in the frame of ``centre`` and their covariance's products in
    ``products``; None when the file is missing, unreadable, malformed or stale."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["features_sha256"]) != digest or int(saved["k"]) != k:
                return None
            if not np.array_equal(saved["centre"], centre) or str(saved["sigma_products"]) != products:
                return None
            statistics = FeatureStatistics(saved["mu"], saved["sigma"], saved["radii2"], k, saved["centre"])
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # missing or damaged: recomputed
    f = statistics.mu.shape[0] if statistics.mu.ndim == 1 else -1
    if statistics.sigma.shape != (f, f) or statistics.radii2.shape != (rows,):
        return None
    return statistics
