"""The whole self-consuming recursion in one process (Bertrand et al. 2024, Alg. 1).

For each seed: generation 0 is trained on D_real, sampled and evaluated once, and shared by every
lambda; then each (lambda, seed) chain runs generations 1..G. What a generation does is decided by
:func:`autophagy.plan.generation_plan`; this module only carries it out on the run layout.

:func:`run_generation` is one generation (the DVC stage calls it); :func:`run_experiment` is
the grid. A generation whose ``metrics.json`` exists is complete and skipped, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from autophagy import atomic, plan
from autophagy.config import ExperimentConfig, to_dict
from autophagy.data.dataset import DatasetError, open_dataset
from autophagy.data.strategies import fresh_real_draw
from autophagy.layout import RunLayout
from autophagy.stages import evaluate, features, mix, prepare, sample, train

Log = Callable[[str], None]


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
    """Run one generation as :func:`autophagy.plan.generation_plan` decides; ``lam`` is None for generation 0."""
    step = plan.generation_plan(cfg, lam, seed, generation)
    out = layout.generation(lam, seed, generation)
    if is_complete(out):
        log(f"{step.label}: complete, skipped")
        return {}
    started = time.perf_counter()
    n_real = plan.real_items(cfg, open_dataset(layout.real_train, verify_hash=False).rows)
    results: dict[str, Any] = {}
    real = layout.real_train
    if step.fresh_real:
        real = fresh_real_draw(open_dataset(layout.real_train), cfg.data.n_train, out / "real_set", seed, generation).path
    train_set = real
    if "mix" in step.steps and generation > 0:
        train_set = out / "train_set"
        synthetic = [layout.generation(lam, seed, g) / "samples" for g in step.synthetic_from]
        results.update(mix.run(cfg, real, synthetic, lam, train_set, generation, seed))
    init = None if step.init_from is None else layout.generation(lam, seed, step.init_from) / "model"
    results.update(train.run(cfg, train_set, out / "model", generation, seed, lam=lam, init=init))
    results.update(sample.run(cfg, out / "model", out / "samples", plan.samples_to_draw(cfg, n_real, lam), seed,
                              generation, features_dir=layout.features, real_dir=layout.real_train))
    against = {g: read_metrics(layout.generation(None if g == 0 else lam, seed, g)) for g in step.collapse_against}
    results.update(evaluate.run(cfg, out / "samples", {"train": layout.real_train, "test": layout.real_test},
                                out / "metrics.json", layout.features, generation, seed, lam=lam,
                                grid_path=out / "samples.png", baseline=against.get(0),
                                previous=against.get(generation - 1) if generation > 1 else None))
    log(f"{step.label}: " + _summary(results) + f" ({time.perf_counter() - started:.1f} s)")
    return results


def read_metrics(directory: Path) -> dict[str, Any]:
    """The ``metrics.json`` of the generation in ``directory``."""
    return json.loads((directory / "metrics.json").read_text())


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
                if plan.stops_after(cfg, read_metrics(layout.generation(lam, seed, generation))):
                    log(f"{plan.generation_plan(cfg, lam, seed, generation).label}: collapsed, stopping this chain "
                        "(loop.stop_on_collapse)")
                    break
    return layout


def _summary(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("fd_train", "precision_train", "recall_train", "swd_train") if k in metrics]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys) + (" COLLAPSED" if metrics.get("collapsed") else "")
