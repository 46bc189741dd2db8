"""The metric registry: each metric's key prefix, label, direction and headline reference sets.

A generation's ``metrics.json`` holds ``<metric>_<reference>`` keys (``fd_train``, ``swd_test``).
:data:`METRICS` says, once, what each prefix means: which direction is better (collapse
detection, :mod:`autophagy.collapse`), which keys are the headline ones (the report's table and
figures, the console line of ``autophagy run``, the Kubeflow run summary) and which keys may be
``loop.collapse_metric``. A metric with a ``compute`` function is computed for every reference set
by :func:`autophagy.metrics.compute_metrics` (``space="features"``) or
:func:`~autophagy.metrics.compute_toy_metrics` (``space="vectors"``); the built-in ones
without it are computed there together (they share work across metrics). Text samples
(``space="text"``, the text branch of :mod:`autophagy.stages.evaluate`) also get the ``features``
metrics, on sentence embeddings. A metric's key suffix is a reference set unless its
``suffix_label`` says otherwise (``distinct_2``: n = 2; ``gen0_ppl_q99``: the 0.99 quantile).

This module imports no numerical library (unlike :mod:`autophagy.metrics`): the config validates
``loop.collapse_metric`` with it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from autophagy.config.checks import ConfigError
from autophagy.config.registry import Registry

SPACES = ("features", "vectors", "text")
#: The reference sets of the headline keys, in display order.
REFERENCE_ORDER = ("train", "test")


@dataclass(frozen=True)
class Metric:
    """One metric. ``name``: the key prefix (``fd`` gives ``fd_train``, ``fd_test``). ``label``: what
    it is, for figures. ``lower_is_better``: its direction; None for a descriptive statistic that has
    none (it cannot be ``loop.collapse_metric``). ``headline``: the key suffixes (reference sets)
    whose keys are shown everywhere. ``space``: ``features`` (images' features, or raw vectors),
    ``vectors`` (raw vector samples only) or ``text`` (text samples only). ``compute``:
    ``f(samples [N, F], reference [M, F]) -> float`` or ``"module:function"`` (imported on first
    use); None for the built-ins computed together. ``suffix_label``: the words for a key's suffix
    in figures, ``{}`` standing for it."""

    name: str
    label: str
    lower_is_better: bool | None
    space: Literal["features", "vectors", "text"]
    headline: tuple[str, ...] = ("train",)
    compute: Callable | str | None = None
    suffix_label: str = "{} set"

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"metric {self.name}: space must be one of {', '.join(SPACES)}, got {self.space!r}")

    def function(self) -> Callable:
        """The compute function (imported now if it was given as ``"module:function"``)."""
        if isinstance(self.compute, str):
            module, _, attribute = self.compute.partition(":")
            return getattr(importlib.import_module(module), attribute)
        if self.compute is None:
            raise ConfigError(f"metric {self.name} has no compute function: autophagy.metrics computes it itself")
        return self.compute


#: Every metric, by key prefix.
METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric) -> Metric:
    """Register a metric (see docs/extending.md)."""
    return METRICS.register(metric)


register_metric(Metric("fd", "Frechet distance", lower_is_better=True, space="features", headline=("train", "test")))
register_metric(Metric("precision", "precision (Kynkaanniemi et al. 2019)", lower_is_better=False, space="features"))
register_metric(Metric("recall", "recall (Kynkaanniemi et al. 2019)", lower_is_better=False, space="features"))
register_metric(Metric("swd", "sliced Wasserstein-1 distance", lower_is_better=True, space="vectors"))
register_metric(
    Metric(
        "mean_err",
        "mean error |mu_s - mu_r|",
        lower_is_better=True,
        space="vectors",
        compute="autophagy.metrics.toy:mean_error",
    )
)
register_metric(
    Metric(
        "cov_err",
        "covariance error |Sigma_s - Sigma_r|_F",
        lower_is_better=True,
        space="vectors",
        compute="autophagy.metrics.toy:covariance_error",
    )
)


# Text (space "text": the text branch of autophagy.stages.evaluate; fd_/precision_/recall_ are on
# all-MiniLM-L6-v2 sentence embeddings there). Shumailov et al. (Nature 2024): the current model's
# perplexity on the real sets, and the generated texts' perplexities under the generation-0 model.
register_metric(
    Metric("perplexity", "perplexity of the current model", lower_is_better=True, space="text", headline=("test",))
)
register_metric(
    Metric(
        "gen0_ppl",
        "perplexity of the samples under the generation-0 model",
        lower_is_better=None,  # a distribution summary: its tails shrink under collapse (Shumailov et al. 2024)
        space="text",
        headline=("q50", "q99"),
        suffix_label="{}",
    )
)
register_metric(
    Metric("mauve", "MAUVE (Pillutla et al. 2021)", lower_is_better=False, space="text", headline=("train", "test"))
)
register_metric(
    Metric(
        "distinct",
        "distinct n-grams (Li et al. 2016)",
        lower_is_better=False,
        space="text",
        headline=("2",),
        suffix_label="n = {}",
    )
)
register_metric(
    Metric(
        "rare_coverage",
        "share of the rare words in the samples",
        lower_is_better=False,
        space="text",
        headline=("test",),
    )
)


def metric_of(key: str) -> Metric | None:
    """The registered metric of ``key`` (``mean_err_train`` -> ``mean_err``), or None."""
    matches = [m for m in METRICS.values() if key.startswith(m.name + "_") and len(key) > len(m.name) + 1]
    return max(matches, key=lambda m: len(m.name), default=None)


def collapse_metric(key: str, option: str = "loop.collapse_metric") -> Metric:
    """The metric of ``key`` as a collapse metric; refused, naming ``option``, if no metric is registered
    for it or the metric has no direction."""
    metric = metric_of(key)
    if metric is None:
        prefixes = ", ".join(f"{name}_" for name in METRICS)
        raise ConfigError(f"{option} must start with one of {prefixes}, got {key!r}")
    if metric.lower_is_better is None:
        raise ConfigError(f"{option}: {key!r} ({metric.label}) has no better direction; choose a distance or a score")
    return metric


def headline_keys() -> tuple[str, ...]:
    """The headline keys, train-set keys first: ``fd_train, precision_train, ..., fd_test``."""
    keys = [f"{m.name}_{ref}" for ref in REFERENCE_ORDER for m in METRICS.values() if ref in m.headline]
    keys += [f"{m.name}_{ref}" for m in METRICS.values() for ref in m.headline if ref not in REFERENCE_ORDER]
    return tuple(keys)


def computed(space: str) -> list[Metric]:
    """The registered metrics of ``space`` that carry their own compute function."""
    return [m for m in METRICS.values() if m.space == space and m.compute is not None]
