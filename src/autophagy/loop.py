"""The whole self-consuming recursion in one process (Bertrand et al. 2024, Alg. 1).

For each seed: generation 0 is trained on D_real, sampled and evaluated once, and shared by every
lambda; then each (lambda, seed) chain runs generations 1..G. What a generation does is decided by
:func:`autophagy.plan.generation_plan`; this module only carries it out on the run layout.

:func:`run_generation` is one generation; :func:`run_experiment` is the grid, and
:func:`run_stage_generation` one generation as a DVC stage. Every generation directory (and the
run directory's shared part) records the options that made it and the steps done
(:mod:`autophagy.resume`); the record's last write, after the evaluation's metrics, grid and
tracking, completes it. A resumed run skips what is complete, redoes the steps after the last one
recorded, and refuses to reuse outputs made with other options unless told to redo them.

Two processes never work on the same seed of a run directory (:mod:`autophagy.run_lock`); at start
each clears what killed processes left of their atomic writes in the parts it holds.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autophagy import atomic, plan, resume, run_lock, tracking
from autophagy.config import ExperimentConfig, to_dict
from autophagy.data.dataset import DatasetError, open_dataset
from autophagy.data.strategies import fresh_real_draw
from autophagy.layout import GENERATION_OUTPUTS, GENERATION_RECORD, PREPARED_RECORD, RunLayout
from autophagy.metric_keys import headline_keys
from autophagy.stages import evaluate, features, mix, prepare, sample, train

Log = Callable[[str], None]

#: The run directory's shared steps, and what each writes there.
SHARED_STEPS = ("prepare", "features")
SHARED_OUTPUTS = {"prepare": ("data",), "features": ("features",)}


@dataclass(frozen=True)
class Unit:
    """A directory whose outputs ``steps`` make in order, with its record (:mod:`autophagy.resume`)."""

    directory: Path
    record: Path
    label: str
    steps: tuple[str, ...]
    options: dict[str, Any]
    outputs: Mapping[str, tuple[str, ...]]
    present: Callable[[str], bool]
    reads: Mapping[str, tuple[str, ...]]
    inherited: tuple[str, ...] = ()

    def resume_point(self) -> resume.Resume:
        return resume.resume_point(
            resume.read(self.record), self.options, self.steps, self.present, self.reads, self.inherited
        )


def shared_unit(cfg: ExperimentConfig, layout: RunLayout) -> Unit:
    """The run directory's real data and feature extractor."""

    def present(step: str) -> bool:
        if step == "features":
            return (layout.features / "extractor.json").is_file()
        try:
            open_dataset(layout.real_train)
            open_dataset(layout.real_test)
        except DatasetError:
            return False
        return True

    return Unit(
        layout.root,
        layout.root / PREPARED_RECORD,
        f"{layout.root} (data, features)",
        SHARED_STEPS,
        resume.options(cfg, SHARED_STEPS),
        SHARED_OUTPUTS,
        present,
        reads={},
    )


def generation_unit(cfg: ExperimentConfig, layout: RunLayout, lam: float | None, seed: int, generation: int) -> Unit:
    """One generation's directory; its outputs depend on the real data (``prepare``), on the
    extractor where it scores them (``features``), and from generation 1 on, on the previous
    generation's samples and model, which the same ``mix``/``train``/``sample`` options made."""
    step = plan.generation_plan(cfg, lam, seed, generation)
    out = layout.generation(lam, seed, generation)
    steps = tuple(s for s in step.steps if s != "pool")  # the pool is the mix's list of sample sets
    curated = ("features",) if cfg.sample.curation_k > 1 else ()
    written = {
        "mix": [out / "real_set"] * step.fresh_real + [out / "train_set"] * (generation > 0),
        "train": [out / "model" / "config.json"],
        "sample": [out / "samples"],
        "evaluate": [out / "metrics.json"],
    }
    inherited = ("prepare",) + (("mix", "train", "sample", *curated) if generation > 0 else ())
    return Unit(
        out,
        out / GENERATION_RECORD,
        step.label,
        steps,
        resume.options(cfg, ("prepare", "features", *steps)),
        GENERATION_OUTPUTS,
        lambda s: all(p.exists() for p in written[s]),
        reads={"sample": curated, "evaluate": ("features",)},
        inherited=inherited,
    )


def carry_out(
    unit: Unit, run_step: Callable[[str], dict[str, Any]], redo_changed: bool, new_root: str, log: Log
) -> dict[str, Any] | None:
    """Run the steps of ``unit`` that are not done, recording each once it is; None if all were done.

    Outputs made with other options are redone only with ``redo_changed`` (else
    :class:`autophagy.resume.OptionsChanged`, suggesting ``new_root``)."""
    where = unit.resume_point()
    if where.refused and not redo_changed:
        raise resume.refusal(unit.directory, {unit.directory: where}, new_root)
    if where.start == len(unit.steps):
        return None
    for step in unit.steps[where.start :]:
        for name in unit.outputs[step]:
            atomic.remove(unit.directory / name)
    done = unit.steps[: where.start]
    resume.write(unit.record, resume.Record(unit.options, done))
    atomic.kill_point(unit.directory, "start")
    results: dict[str, Any] = {}
    for step in unit.steps[where.start :]:
        results.update(run_step(step))
        atomic.kill_point(unit.directory, f"{step}:returned")
        done += (step,)
        resume.write(unit.record, resume.Record(unit.options, done))
        atomic.kill_point(unit.directory, f"{step}:recorded")
    return results


def ensure_prepared(cfg: ExperimentConfig, layout: RunLayout, log: Log = print, redo_changed: bool = False) -> None:
    """Real data and the feature extractor, made once per run directory (again where their options changed)."""

    def run_step(step: str) -> dict[str, Any]:
        if step == "prepare":
            log(f"prepare: {cfg.data.source} -> {layout.root / 'data'}")
            return prepare.run(cfg, layout.root / "data")
        log(f"features: {cfg.evaluate.features} -> {layout.features}")
        return features.run(cfg, layout.features)

    carry_out(shared_unit(cfg, layout), run_step, redo_changed, _new_root_hint(layout), log)


def run_generation(
    cfg: ExperimentConfig,
    layout: RunLayout,
    lam: float | None,
    seed: int,
    generation: int,
    log: Log = print,
    redo_changed: bool = False,
) -> dict[str, Any]:
    """Run one generation as :func:`autophagy.plan.generation_plan` decides; ``lam`` is None for generation 0.

    Steps done before (by a run with the same options) are skipped; ``redo_changed``: redo those
    made with other options instead of refusing."""
    step = plan.generation_plan(cfg, lam, seed, generation)
    out = layout.generation(lam, seed, generation)
    started = time.perf_counter()
    n_real = plan.real_items(cfg, open_dataset(layout.real_train, verify_hash=False).rows)
    real = out / "real_set" if step.fresh_real else layout.real_train
    train_set = out / "train_set" if "mix" in step.steps and generation > 0 else real

    def run_step(name: str) -> dict[str, Any]:
        if name == "mix":
            if step.fresh_real:
                fresh_real_draw(open_dataset(layout.real_train), cfg.data.n_train, real, seed, generation)
            if generation == 0:
                return {}
            synthetic = [layout.generation(lam, seed, g) / "samples" for g in step.synthetic_from]
            return mix.run(cfg, real, synthetic, lam, train_set, generation, seed)
        if name == "train":
            init = None if step.init_from is None else layout.generation(lam, seed, step.init_from) / "model"
            return train.run(cfg, train_set, out / "model", generation, seed, lam=lam, init=init)
        if name == "sample":
            return sample.run(
                cfg,
                out / "model",
                out / "samples",
                plan.samples_to_draw(cfg, n_real, lam),
                seed,
                generation,
                features_dir=layout.features,
                real_dir=layout.real_train,
            )
        against = {g: read_metrics(layout.generation(None if g == 0 else lam, seed, g)) for g in step.collapse_against}
        return evaluate.run(
            cfg,
            out / "samples",
            {"train": layout.real_train, "test": layout.real_test},
            out / "metrics.json",
            layout.features,
            generation,
            seed,
            lam=lam,
            grid_path=out / "samples.png",
            baseline=against.get(0),
            previous=against.get(generation - 1) if generation > 1 else None,
            models={
                role: layout.generation(None if g == 0 else lam, seed, g) / "model"
                for role, g in plan.evaluation_models(cfg, generation).items()
            },
        )

    results = carry_out(
        generation_unit(cfg, layout, lam, seed, generation), run_step, redo_changed, _new_root_hint(layout), log
    )
    if results is None:
        log(f"{step.label}: complete, skipped")
        return {}
    log(f"{step.label}: " + _summary(results) + f" ({time.perf_counter() - started:.1f} s)")
    return results


def read_metrics(directory: Path) -> dict[str, Any]:
    """The ``metrics.json`` of the generation in ``directory``."""
    return json.loads((directory / "metrics.json").read_text())


def run_experiment(cfg: ExperimentConfig, root: str | Path, log: Log = print, redo_changed: bool = False) -> RunLayout:
    """Every seed, lambda and generation of ``cfg`` under ``root`` (``runs/<experiment>``).

    Holds the locks of its seeds for the whole run and the run directory's lock while it checks
    and prepares the shared part. Before any work it checks that every output it would reuse was
    made with the options of ``cfg`` (else :class:`autophagy.resume.OptionsChanged` naming the
    differing keys, unless ``redo_changed``)."""
    tracking.check_tracking(cfg)  # a tracking store that cannot answer fails now, before any work
    layout = RunLayout(Path(root))
    layout.root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        held.enter_context(tracking.execution(cfg, layout.root))  # new MLflow runs per run directory, ended on exit
        for seed in cfg.loop.seeds:
            held.enter_context(run_lock.hold(layout.seed_lock(seed), f"{layout.root} (seed {seed})"))
        with run_lock.hold(layout.lock, f"{layout.root} (its data and features)", wait=True, log=log):
            clear_leftovers(layout, cfg.loop.seeds, shared=True, log=log)
            check_resumable(cfg, layout, redo_changed)
            ensure_prepared(cfg, layout, log, redo_changed)
            atomic.write_json(layout.root / "config.json", to_dict(cfg))
        for seed in cfg.loop.seeds:
            run_generation(cfg, layout, None, seed, 0, log, redo_changed)
            for lam in cfg.loop.lambdas:
                for generation in range(1, cfg.loop.generations + 1):
                    run_generation(cfg, layout, lam, seed, generation, log, redo_changed)
                    if plan.stops_after(cfg, read_metrics(layout.generation(lam, seed, generation))):
                        log(
                            f"{plan.generation_plan(cfg, lam, seed, generation).label}: collapsed, stopping this "
                            "chain (loop.stop_on_collapse)"
                        )
                        break
    return layout


def run_stage_generation(
    cfg: ExperimentConfig, layout: RunLayout, lam: float | None, seed: int, generation: int, log: Log = print
) -> dict[str, Any]:
    """One generation as a DVC stage (``autophagy generation``): under its seed's lock, after
    clearing what killed processes left in that seed's directories. DVC decides when a stage runs
    (its parameters or inputs changed) and deletes the stage's outputs first, so what changed is
    redone rather than refused."""
    with (
        run_lock.hold(layout.seed_lock(seed), f"{layout.root} (seed {seed})"),
        tracking.execution(cfg, layout.root, [seed]),
    ):
        clear_leftovers(layout, [seed], shared=False, log=log)
        return run_generation(cfg, layout, lam, seed, generation, log, redo_changed=True)


def check_resumable(cfg: ExperimentConfig, layout: RunLayout, redo_changed: bool) -> None:
    """Refuse, before any work, to resume on outputs made with other options (one error naming
    every differing option) unless ``redo_changed``; and never replace the shared data while a
    process running another seed uses it."""
    units = [shared_unit(cfg, layout)]
    for seed in cfg.loop.seeds:
        units.append(generation_unit(cfg, layout, None, seed, 0))
        units += [
            generation_unit(cfg, layout, lam, seed, g)
            for lam in cfg.loop.lambdas
            for g in range(1, cfg.loop.generations + 1)
        ]
    where = {unit.directory: unit.resume_point() for unit in units if unit.directory.is_dir()}
    refused = {directory: point for directory, point in where.items() if point.refused}
    if refused and not redo_changed:
        raise resume.refusal(layout.root, refused, _new_root_hint(layout))
    shared = units[0]
    if any(shared.present(step) for step in shared.steps[where[layout.root].start :]):
        own = {layout.seed_lock(seed) for seed in cfg.loop.seeds}
        for lock in layout.seed_lock_files():
            if lock not in own and run_lock.in_use(lock):
                raise run_lock.RunRootBusy(
                    f"{layout.root}: its data or feature extractor must be made again, but "
                    f"{run_lock.holder(lock)} is using them ({lock.parent.name})"
                )


def clear_leftovers(layout: RunLayout, seeds: Sequence[int], shared: bool, log: Log) -> None:
    """Remove the temporary files and directories of atomic writes that killed processes left in
    the parts of ``layout`` this process holds: its seeds' directories, and with ``shared`` the
    run directory itself, its data, features and report."""
    tops: list[tuple[Path, bool]] = []
    if shared:
        tops += [(layout.root, False), (layout.root / "data", True), (layout.features, True), (layout.report, True)]
    tops += [(directory, True) for seed in seeds for directory in layout.seed_dirs(seed)]
    removed = [path for top, recursive in tops for path in atomic.clear_leftovers(top, recursive)]
    if removed:
        log(f"removed {len(removed)} leftover(s) of killed runs, e.g. {removed[0]}")


def _new_root_hint(layout: RunLayout) -> str:
    return f"{layout.root.parent / layout.root.name}-2 (or the next free name)"


def _summary(metrics: dict[str, Any]) -> str:
    keys = [k for k in headline_keys() if k in metrics]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys) + (" COLLAPSED" if metrics.get("collapsed") else "")
