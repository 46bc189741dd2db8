"""Metrics of a generation: feature extractors, Frechet distance, precision/recall, toy metrics, pictures.

Flat result keys are ``<metric>_<reference name>``, e.g. ``fd_train``, ``precision_test``,
``swd_train``, so that several reference sets (the paper measures against the training set) sit
side by side in one ``metrics.json`` and one MLflow step. What each metric means (direction,
headline keys, collapse metrics) is registered in :mod:`autophagy.metric_keys`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from autophagy.metric_keys import computed
from autophagy.metrics.digits_net import load_digits_net, train_digits_net
from autophagy.metrics.feature_stats import FeatureStatistics, cached_statistics, feature_statistics
from autophagy.metrics.features import (
    EXTRACTORS,
    FeatureExtractor,
    FeatureExtractorUnavailable,
    build_extractor,
    inception_weights,
)
from autophagy.metrics.frechet import frechet_distance, gaussian_statistics
from autophagy.metrics.grid import save_image_grid, save_scatter
from autophagy.metrics.precision_recall import precision_recall
from autophagy.metrics.toy import covariance_error, gaussian_summary, mean_error, sliced_wasserstein

__all__ = [
    "EXTRACTORS",
    "FeatureExtractor",
    "FeatureExtractorUnavailable",
    "FeatureStatistics",
    "build_extractor",
    "cached_statistics",
    "compute_metrics",
    "compute_toy_metrics",
    "covariance_error",
    "feature_statistics",
    "frechet_distance",
    "gaussian_statistics",
    "gaussian_summary",
    "inception_weights",
    "load_digits_net",
    "mean_error",
    "precision_recall",
    "save_image_grid",
    "save_scatter",
    "sliced_wasserstein",
    "train_digits_net",
]


def compute_metrics(
    samples_features: np.ndarray,
    reference_features: Mapping[str, np.ndarray],
    *,
    k: int = 3,
    device: str | torch.device = "cpu",
    reference_statistics: Mapping[str, FeatureStatistics] | None = None,
) -> dict[str, float]:
    """Frechet distance and improved precision/recall of the samples against each reference set.

    Every set's mean and covariance are computed once, in one chunked pass (:mod:`.frechet`); a
    reference set's statistics and k-NN radii (:mod:`.feature_stats`) may come from a cache. Each
    samples-reference distance is computed once for precision and recall. The samples' k-NN radii
    are computed in each reference set's frame (:mod:`.precision_recall`).

    Args:
        samples_features: float ``[N, F]``, features of the generation's samples.
        reference_features: name -> float ``[M, F]`` (e.g. ``{"train": ..., "test": ...}``).
        k: the k of the k-NN balls for precision/recall (Kynkaanniemi et al. 2019).
        device: torch device for the statistics and the distance computations.
        reference_statistics: name -> the statistics of that reference set for this ``k``
            (e.g. from :func:`.feature_stats.cached_statistics`); computed here for the others.

    Returns:
        ``{"fd_<name>": ..., "precision_<name>": ..., "recall_<name>": ...}`` for every reference,
        then ``<metric>_<name>`` of every registered ``features`` metric with a compute function.
    """
    # NaN/inf are found by the statistics' chunked passes, which name the set.
    _check_sets(
        samples_features, reference_features, min_rows=max(2, k + 1), why=f"k-NN radii with k={k}", check_finite=False
    )
    given = dict(reference_statistics or {})
    for name, statistics in given.items():
        if name not in reference_features:
            raise ValueError(f"statistics of reference {name!r}, which is not among the reference sets")
        if statistics.k != k:
            raise ValueError(f"the statistics of reference {name!r} have k-NN radii for k={statistics.k}, not k={k}")
    mu, sigma = gaussian_statistics(samples_features, device=device, name="samples")
    metrics: dict[str, float] = {}
    for name, reference in reference_features.items():
        ref = given.get(name) or feature_statistics(reference, k=k, device=device, name=f"reference {name!r}")
        precision, recall = precision_recall(reference, samples_features, k=k, device=device, real_radii2=ref.radii2)
        metrics[f"fd_{name}"] = frechet_distance(mu, sigma, ref.mu, ref.sigma, device=device)
        metrics[f"precision_{name}"] = precision
        metrics[f"recall_{name}"] = recall
        for metric in computed("features"):
            metrics[f"{metric.name}_{name}"] = float(metric.function()(samples_features, reference))
    return metrics


def compute_toy_metrics(
    samples: np.ndarray,
    references: Mapping[str, np.ndarray],
    *,
    n_projections: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """Metrics of vector samples ``[N, D]`` against each reference ``[M, D]`` (:mod:`.toy`).

    Returns:
        the samples' ``mean_norm`` and ``std_mean`` (the Gaussian warm-up's collapse statistics), then
        for every reference ``swd_<name>`` and ``<metric>_<name>`` of every registered ``vectors``
        metric with a compute function (``mean_err``, ``cov_err``: :mod:`autophagy.metric_keys`).
    """
    _check_sets(samples, references, min_rows=2, why="a covariance")
    metrics = dict(gaussian_summary(samples))
    for name, reference in references.items():
        metrics[f"swd_{name}"] = sliced_wasserstein(samples, reference, n_projections=n_projections, seed=seed)
        for metric in computed("vectors"):
            metrics[f"{metric.name}_{name}"] = float(metric.function()(samples, reference))
    return metrics


def _check_sets(
    samples: np.ndarray, references: Mapping[str, np.ndarray], *, min_rows: int, why: str, check_finite: bool = True
) -> None:
    """Samples and references: 2-D, the same width, at least ``min_rows`` rows, finite unless
    ``check_finite`` is False; errors name the set."""
    if not references:
        raise ValueError("at least one reference set is needed")
    for name in references:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"reference names must be short identifiers (letters, digits, - or _), got {name!r}")
    width = np.shape(samples)[1] if np.ndim(samples) == 2 else None
    for label, x in [("samples", samples), *((f"reference {name!r}", ref) for name, ref in references.items())]:
        if np.ndim(x) != 2 or np.shape(x)[1] != width:
            raise ValueError(
                f"{label}: shape {list(np.shape(x))}, samples: shape {list(np.shape(samples))}; "
                "all sets must be [N, F] with the same F"
            )
        if len(x) < min_rows:
            raise ValueError(f"{label}: {why} needs at least {min_rows} rows, got {len(x)}")
        if check_finite and not np.isfinite(x).all():
            raise ValueError(f"{label}: contains NaN or infinite values")
