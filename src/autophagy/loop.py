"""The whole self-consuming recursion in one process (Bertrand et al. 2024, Alg. 1).

For each seed: generation 0 is trained on D_real, sampled and evaluated once, and shared by every
lambda. Then for each lambda and generation t = 1..G:

    mix:      D_t per loop.strategy; replace (the paper): D_real ∪ {floor(lambda n) fresh samples of t-1}
    train:    theta_t = fine-tune theta_{t-1} on D_t (or retrain from scratch)
    sample:   max(n_eval, floor(lambda n)) samples of theta_t (evaluation and generation t+1)
    evaluate: metrics of theta_t's samples against the real train/test sets

:func:`run_generation` is one generation (the DVC stage calls it); :func:`run_experiment` is
the grid. A generation whose ``metrics.json`` exists is complete and skipped, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from autophagy import atomic, collapse
from autophagy.config import ExperimentConfig, format_lambda, to_dict
from autophagy.data.dataset import DatasetError, open_dataset
from autophagy.data.mixing import synthetic_count
from autophagy.data.strategies import fresh_real_draw
from autophagy.layout import RunLayout
from autophagy.stages import evaluate, features, mix, prepare, sample, train
from autophagy.tracking import open_tracker

Log = Callable[[str], None]


def samples_per_generation(cfg: ExperimentConfig, n_real: int, lam: float | None) -> int:
    """Rows to sample from a generation: enough to evaluate it and to feed the next one.

    ``lam`` None (generation 0, shared) takes the largest need over ``loop.lambdas``.
    """
    lams = cfg.loop.lambdas if lam is None else (lam,)
    return max([cfg.sample.n_eval] + [synthetic_count(x, n_real) for x in lams])


def is_complete(directory: Path) -> bool:
    return (directory / "metrics.json").is_file() and (directory / "model" / "config.json").is_file()


def ensure_prepared(cfg: ExperimentConfig, layout: RunLayout, log: Log = print) -> None:
    """Real data and the feature extractor, made once per experiment directory."""
    try:
        open_dataset(layout.real_train)
        open_dataset(layout.real_test)
    except DatasetError:
        log(f"prepare: {cfg.data.source} -> {layout.root / 'data'}")
        prepare.run(cfg, layout.root / "data")
    if not (layout.features / "extractor.json").is_file():
        log(f"features: {cfg.evaluate.features} -> {layout.features}")
        features.run(cfg, layout.features)


def run_generation(cfg: ExperimentConfig, layout: RunLayout, lam: float | None, seed: int, generation: int,
                   log: Log = print) -> dict[str, Any]:
    """Run one generation (mix, train, sample, evaluate); ``lam`` is None for generation 0."""
    out = layout.generation(lam, seed, generation)
    if is_complete(out):
        log(f"{_label(lam, seed, generation)}: complete, skipped")
        return {}
    started = time.perf_counter()
    n_real = real_size(cfg, layout.real_train)
    results: dict[str, Any] = {}
    real = real_for_generation(cfg, layout, out, seed, generation)
    if generation == 0:
        train_set, init = real, None
    else:
        previous = layout.generation(lam, seed, generation - 1)
        train_set = out / "train_set"
        results.update(mix.run(cfg, real, synthetic_history(cfg, layout, lam, seed, generation), lam, train_set,
                               generation, seed))
        init = previous / "model"
    results.update(train.run(cfg, train_set, out / "model", generation, seed, lam=lam, init=init))
    results.update(sample.run(cfg, out / "model", out / "samples", samples_per_generation(cfg, n_real, lam), seed, generation,
                              features_dir=layout.features, real_dir=layout.real_train))
    metrics = evaluate.run(cfg, out / "samples", {"train": layout.real_train, "test": layout.real_test},
                           out / "metrics.json", layout.features, generation, seed, lam=lam,
                           grid_path=out / "samples.png")
    results.update(metrics)
    if generation > 0:
        results.update(mark_collapse(cfg, layout, lam, seed, generation, metrics))
    log(f"{_label(lam, seed, generation)}: " + _summary(results) + f" ({time.perf_counter() - started:.1f} s)")
    return results


def mark_collapse(cfg: ExperimentConfig, layout: RunLayout, lam: float, seed: int, generation: int,
                   metrics: dict[str, Any]) -> dict[str, Any]:
    """Add the collapse verdict to ``metrics.json`` and tag the MLflow run of a collapsed chain."""
    baseline = json.loads((layout.generation(None, seed, 0) / "metrics.json").read_text())
    previous = json.loads((layout.generation(lam, seed, generation - 1) / "metrics.json").read_text())
    verdict = collapse.assess(cfg.loop, metrics, baseline, previous if generation > 1 else None)
    if not verdict:
        return {}
    path = layout.generation(lam, seed, generation) / "metrics.json"
    atomic.write_json(path, {**metrics, **verdict})
    tracker = open_tracker(cfg)
    if tracker is not None:
        run_id = tracker.child_run(lam, seed)
        tracker.log_generation(run_id, generation, {"collapse_factor": verdict["collapse_factor"]})
        if verdict["collapsed"] and not previous.get("collapsed"):
            tracker.set_tags(run_id, {"autophagy.collapsed": "true", "autophagy.collapsed_at_generation": str(generation)})
    return verdict


def real_size(cfg: ExperimentConfig, real_train: str | Path) -> int:
    """n, the real items a generation trains on: the real training set's rows, or for
    ``fresh-real`` the ``data.n_train`` drawn from the (larger) pool each generation."""
    return cfg.data.n_train if cfg.loop.strategy == "fresh-real" else open_dataset(real_train, verify_hash=False).rows


def real_for_generation(cfg: ExperimentConfig, layout: RunLayout, out: Path, seed: int, generation: int) -> Path:
    """The real data of a generation: the fixed D_real, or for ``fresh-real`` a new draw from the pool."""
    if cfg.loop.strategy != "fresh-real":
        return layout.real_train
    pool = open_dataset(layout.real_train)
    return fresh_real_draw(pool, cfg.data.n_train, out / "real_set", seed, generation).path


def synthetic_history(cfg: ExperimentConfig, layout: RunLayout, lam: float, seed: int, generation: int) -> list[Path]:
    """Sample sets that feed generation ``generation``: the last one, or all of them (accumulate strategies)."""
    if cfg.loop.strategy.startswith("accumulate"):
        return [layout.generation(lam, seed, g) / "samples" for g in range(generation)]
    return [layout.generation(lam, seed, generation - 1) / "samples"]


def run_experiment(cfg: ExperimentConfig, root: str | Path, log: Log = print) -> RunLayout:
    """Every seed, lambda and generation of ``cfg`` under ``root`` (``runs/<experiment>``)."""
    layout = RunLayout(Path(root))
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic.write_json(layout.root / "config.json", to_dict(cfg))
    ensure_prepared(cfg, layout, log)
    for seed in cfg.loop.seeds:
        run_generation(cfg, layout, None, seed, 0, log)
        for lam in cfg.loop.lambdas:
            for generation in range(1, cfg.loop.generations + 1):
                run_generation(cfg, layout, lam, seed, generation, log)
                if cfg.loop.stop_on_collapse and is_collapsed(layout.generation(lam, seed, generation)):
                    log(f"{_label(lam, seed, generation)}: collapsed, stopping this chain (loop.stop_on_collapse)")
                    break
    return layout


def is_collapsed(directory: Path) -> bool:
    """Whether the generation in ``directory`` (its ``metrics.json``) is marked collapsed."""
    return bool(json.loads((directory / "metrics.json").read_text()).get("collapsed"))


def _label(lam: float | None, seed: int, generation: int) -> str:
    lam_text = "shared" if lam is None else f"lambda={format_lambda(lam)}"
    return f"gen-{generation:03d} seed={seed} {lam_text}"


def _summary(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("fd_train", "precision_train", "recall_train", "swd_train") if k in metrics]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys) + (" COLLAPSED" if metrics.get("collapsed") else "")
