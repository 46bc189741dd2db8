"""``evaluate``: metrics of one generation's samples against the real train (and test) sets.

Images: Fréchet distance and precision/recall (Kynkäänniemi et al. 2019, k = 3) on the
features of ``evaluate.features``; the paper compares against the *training* set, and autophagy
also reports the held-out test set. Vectors: the same on raw coordinates plus sliced Wasserstein
distance and mean/covariance errors. The reference sets' features are computed once and cached
by content hash and extractor id; beside them, their mean, covariance and k-NN radii, valid for
the very features they were computed from (:mod:`autophagy.metrics.feature_stats`). Writes a
sample grid, logs to MLflow, and then, last, ``metrics.json`` (atomically), with the collapse
verdict of :mod:`autophagy.collapse` for generations >= 1.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autophagy import atomic, collapse
from autophagy.cache import cache_dir
from autophagy.config import ExperimentConfig, format_lambda
from autophagy.data.dataset import Dataset, DatasetError, open_dataset
from autophagy.metrics import (
    build_extractor,
    cached_statistics,
    compute_metrics,
    compute_toy_metrics,
    save_image_grid,
    save_scatter,
)
from autophagy.models.torch_model import resolve_device
from autophagy.seeding import derive_seed
from autophagy.tracking import open_tracker


def run(
    cfg: ExperimentConfig,
    samples_dir: str | Path,
    references: Mapping[str, str | Path],
    out_path: str | Path,
    features_dir: str | Path | None,
    generation: int,
    seed: int,
    lam: float | None = None,
    grid_path: str | Path | None = None,
    baseline: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the first ``sample.n_eval`` rows of ``samples_dir``; write ``out_path`` (metrics.json).

    ``references``: ``{"train": dir, "test": dir}``. ``lam`` is None for generation 0 (shared).
    ``baseline``/``previous``: the metrics of generation 0 and of generation - 1 of the chain
    (:attr:`autophagy.plan.GenerationPlan.collapse_against`); with ``baseline`` the collapse
    verdict (``collapse_factor``, ``collapsed``) is part of the metrics written.
    """
    started = time.perf_counter()
    samples_set = open_dataset(samples_dir)
    refs = {name: open_dataset(path) for name, path in references.items()}
    for name, ref in refs.items():
        if ref.kind != samples_set.kind or ref.item_shape != samples_set.item_shape:
            raise DatasetError(
                f"samples {samples_dir} ({samples_set.kind} {list(samples_set.item_shape)}) and reference "
                f"{name} ({ref.kind} {list(ref.item_shape)}) do not match"
            )
    if samples_set.rows < cfg.sample.n_eval:
        raise DatasetError(
            f"evaluate needs sample.n_eval={cfg.sample.n_eval} samples, {samples_dir} has {samples_set.rows}"
        )
    samples = samples_set.load()[: cfg.sample.n_eval]
    extractor = build_extractor(
        cfg.evaluate.features,
        weights_path=cfg.evaluate.inception_weights,
        cache_dir=Path(features_dir) if features_dir else None,
        device=cfg.train.device,
    )
    sample_features = extractor(samples, label=f"evaluate gen {generation} (seed {seed}): samples")
    ref_features = {name: _reference_features(ref, extractor, cfg, seed, name) for name, ref in refs.items()}
    device, k = resolve_device(cfg.train.device), cfg.evaluate.k
    ref_statistics = {
        name: cached_statistics(
            _features_cache_path(ref, extractor, cfg, seed).with_suffix(f".stats-k{k}.npz"),
            ref_features[name],
            k=k,
            device=device,
            name=f"reference {name!r}",
        )
        for name, ref in refs.items()
    }
    metrics: dict[str, Any] = compute_metrics(
        sample_features, ref_features, k=k, device=device, reference_statistics=ref_statistics
    )
    if samples_set.kind == "vector":
        metrics.update(
            compute_toy_metrics(samples, {name: _subsample(ref.load(), cfg, seed) for name, ref in refs.items()})
        )
    metrics.update(
        {
            "generation": generation,
            "lambda": None if lam is None else format_lambda(lam),
            "seed": seed,
            "features": extractor.id,
            "n_samples": int(len(samples)),
            **{f"n_reference_{name}": int(len(f)) for name, f in ref_features.items()},
            "evaluate_seconds": time.perf_counter() - started,
        }
    )
    if baseline is not None:
        metrics.update(collapse.assess(cfg.loop, metrics, baseline, previous))
    # metrics.json is written last: once it exists, the grid and the tracking records exist too
    if grid_path is not None:
        _save_grid(cfg, samples, refs.get("train"), Path(grid_path))
    atomic.kill_point(Path(out_path).parent, "evaluate:grid")
    _track(
        cfg,
        lam,
        seed,
        generation,
        metrics,
        grid_path,
        newly_collapsed=bool(metrics.get("collapsed") and not (previous or {}).get("collapsed")),
    )
    atomic.kill_point(Path(out_path).parent, "evaluate:tracked")
    atomic.write_json(out_path, metrics)
    return metrics


def _subsample(rows: np.ndarray, cfg: ExperimentConfig, seed: int) -> np.ndarray:
    cap = cfg.evaluate.max_reference
    if cap is None or len(rows) <= cap:
        return rows
    index = np.random.default_rng(derive_seed("reference", seed) % (2**63)).choice(len(rows), cap, replace=False)
    return rows[np.sort(index)]


def _reference_features(
    ref: Dataset, extractor, cfg: ExperimentConfig, seed: int, name: str = "reference"
) -> np.ndarray:
    """Features of (a capped subsample of) a reference set, cached by content hash + extractor id."""
    path = _features_cache_path(ref, extractor, cfg, seed)
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError):
            pass  # a damaged cache entry is recomputed
    features = extractor(_subsample(ref.load(), cfg, seed), label=f"evaluate: {name} reference").astype(np.float32)
    with atomic.temp_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, features, allow_pickle=False)
    return features


def _features_cache_path(ref: Dataset, extractor, cfg: ExperimentConfig, seed: int) -> Path:
    """Where a reference set's features are cached: keyed by its content hash, the extractor's id and
    the subsample (cap and seed)."""
    cap = cfg.evaluate.max_reference
    key = f"{ref.content_hash[:24]}-{extractor.id.replace(':', '-')}-{cap}-{derive_seed('reference', seed) % 10**8}.npy"
    return cache_dir("features", key)


def _save_grid(cfg: ExperimentConfig, samples: np.ndarray, train: Dataset | None, path: Path) -> None:
    if samples.ndim == 4:
        if cfg.evaluate.grid_size > 0:
            save_image_grid(samples[: cfg.evaluate.grid_size], path)
    elif samples.shape[1] == 2 and train is not None:
        save_scatter(samples, train.load(), path)


def _track(cfg, lam, seed, generation, metrics, grid_path, newly_collapsed: bool) -> None:
    tracker = open_tracker(cfg)
    if tracker is None:
        return
    for chain_lam in cfg.loop.lambdas if lam is None else (lam,):
        run_id = tracker.child_run(chain_lam, seed)
        tracker.log_generation(run_id, generation, metrics, tag=f"gen-{generation}-evaluate")
        if cfg.tracking.log_samples and grid_path is not None and Path(grid_path).is_file():
            tracker.log_image(run_id, Path(grid_path), "samples", step=generation)
        if newly_collapsed:
            tracker.set_tags(
                run_id, {"autophagy.collapsed": "true", "autophagy.collapsed_at_generation": str(generation)}
            )
