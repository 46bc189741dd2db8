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
from autophagy.metrics.precision_recall import knn_radii, precision_recall, precision_recall_against
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
    "precision_recall_against",
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

    Every set's mean and covariance are computed once, in one chunked pass (:mod:`.frechet`), and
    every set's k-NN radii once, all in one frame: the sets moved by the first reference set's
    centre (:func:`.precision_recall.precision_recall_against`). A reference set's statistics
    (:mod:`.feature_stats`) may come from a cache; given radii computed in another frame than the
    first reference's are recomputed in it. Each samples-reference distance is computed once for
    precision and recall.

    Args:
        samples_features: float ``[N, F]``, features of the generation's samples.
        reference_features: name -> float ``[M, F]`` (e.g. ``{"train": ..., "test": ...}``).
        k: the k of the k-NN balls for precision/recall (Kynkaanniemi et al. 2019).
        device: torch device for the statistics and the distance computations.
        reference_statistics: name -> the statistics of that reference set for this ``k``
            (e.g. from :func:`.feature_stats.cached_statistics`, with ``centre`` the first
            reference's for the others); computed here for the rest.

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
    refs = _reference_statistics(reference_features, given, k=k, device=device)
    centre = next(iter(refs.values())).centre
    covered = precision_recall_against(
        samples_features,
        reference_features,
        k=k,
        device=device,
        real_radii2={name: ref.radii2 for name, ref in refs.items()},
        centre=centre,
    )
    metrics: dict[str, float] = {}
    for name, reference in reference_features.items():
        metrics[f"fd_{name}"] = frechet_distance(mu, sigma, refs[name].mu, refs[name].sigma, device=device)
        metrics[f"precision_{name}"], metrics[f"recall_{name}"] = covered[name]
        for metric in computed("features"):
            metrics[f"{metric.name}_{name}"] = float(metric.function()(samples_features, reference))
    return metrics


def _reference_statistics(
    reference_features: Mapping[str, np.ndarray],
    given: Mapping[str, FeatureStatistics],
    *,
    k: int,
    device: str | torch.device,
) -> dict[str, FeatureStatistics]:
    """Every reference set's statistics, its radii in the frame of the first set's: ``given`` where
    it is in that frame, else computed (a given mean and covariance are kept)."""
    statistics: dict[str, FeatureStatistics] = {}
    centre = None
    for name, features in reference_features.items():
        label = f"reference {name!r}"
        ref = given.get(name)
        if ref is None:
            ref = feature_statistics(features, k=k, device=device, name=label, centre=centre)
        elif centre is not None and not np.array_equal(ref.centre, centre):
            radii2 = knn_radii(features, k, device=device, name=label, centre=centre)
            ref = FeatureStatistics(ref.mu, ref.sigma, radii2, k, np.asarray(centre, dtype=np.float64))
        centre = ref.centre if centre is None else centre
        statistics[name] = ref
    return statistics


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
