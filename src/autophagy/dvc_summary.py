"""``summary.json``: one small metrics file per experiment, the one ``dvc exp show`` compares.

It holds the last generation's headline metrics (:func:`autophagy.metric_keys.headline_keys`)
per lambda, the mean over seeds as the report computes it, metric by metric::

    {"generation": 5, "fd_train": {"lam-0": 1.2, "lam-inf": 9.8}, "recall_train": {...}}

so that ``dvc exp show`` has one column per (metric, lambda), ``fd_train.lam-inf``, instead of one
per key of every generation's ``metrics.json``. The report stage writes it outside ``runs/`` (not
cached by DVC, committed with git), so that a clone's ``dvc exp show`` and ``dvc metrics show`` have it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autophagy import atomic
from autophagy.metric_keys import headline_keys
from autophagy.report import collect, last_generation, numeric_metrics, summarise


def summary(root: Path) -> dict[str, Any]:
    """The summary of the run directory ``root`` (every ``metrics.json`` under it)."""
    records = collect(Path(root))
    if not records:
        raise FileNotFoundError(f"no metrics.json under {root}: run the experiment first")
    present = set(numeric_metrics(records))
    keys = [key for key in headline_keys() if key in present]
    last = last_generation(summarise(records, keys))
    out: dict[str, Any] = {"generation": max(int(row["generation"]) for row in last)}
    for key in keys:
        out[key] = {f"lam-{row['lambda']}": row[key] for row in last if key in row}
    return out


def write(root: Path, path: Path) -> dict[str, Any]:
    """Write the summary of ``root`` to ``path`` (atomically); returns it."""
    data = summary(root)
    atomic.write_json(path, data)
    return data
