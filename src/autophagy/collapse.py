"""Collapse detection: is a generation worse than generation 0 by more than a set factor?

``loop.collapse_metric`` (e.g. ``fd_train``) and ``loop.collapse_ratio`` (e.g. 2.0): a chain is
collapsed from the first generation where the metric is ``collapse_ratio`` times worse than at
generation 0 — larger for distances (``fd_*``, ``swd_*``), smaller for ``precision_*`` and
``recall_*``: each metric's direction is its registration in :mod:`autophagy.metric_keys`. Once
collapsed, a chain stays collapsed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from autophagy.config import LoopConfig
from autophagy.metric_keys import collapse_metric


def worsening(metric: str, value: float, baseline: float) -> float:
    """How many times worse ``value`` is than ``baseline`` (1 = equal, > 1 = worse)."""
    if collapse_metric(metric, option="collapse metric").lower_is_better:
        return value / baseline if baseline > 0 else (math.inf if value > 0 else 1.0)
    return baseline / value if value > 0 else (math.inf if baseline > 0 else 1.0)


def assess(
    loop: LoopConfig, metrics: Mapping[str, Any], baseline: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``{"collapse_factor": f, "collapsed": bool}`` for a generation, or ``{}`` when detection is off."""
    if loop.collapse_ratio is None or loop.collapse_metric not in metrics or loop.collapse_metric not in baseline:
        return {}
    factor = worsening(
        loop.collapse_metric, float(metrics[loop.collapse_metric]), float(baseline[loop.collapse_metric])
    )
    already = bool(previous and previous.get("collapsed"))
    return {"collapse_factor": factor, "collapsed": already or factor >= loop.collapse_ratio}
