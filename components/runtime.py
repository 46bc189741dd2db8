"""What a KFP component body calls inside the image: artifact paths and plain values in, a dict back.

Each KFP component (:mod:`autophagy.components.ops`) is a one-line call into this module, which
only adapts KFP's artifact paths to :mod:`autophagy.stages` and to the run layout
(:mod:`autophagy.layout`). It decides nothing: which steps run, from which inputs and with how
many samples is :mod:`autophagy.plan`'s, applied where the runs are planned
(``autophagy.pipelines``); the numbers arrive here as parameters.

Config: a task receives only the options its step reads, as one JSON parameter (its cache key;
:mod:`autophagy.step_config`), plus where to log through the pod's environment
(``AUTOPHAGY_BOOKKEEPING``), outside the cache key.

Run-layout fragments: every ``evaluate`` writes its ``metrics.json`` (and sample grid) at its
place in a :class:`~autophagy.layout.RunLayout` rooted at its ``history`` output, on a copy of the
previous generation's fragment, so the last fragment of a chain holds the whole chain (and the
shared generation 0); ``report`` merges them into the tree :func:`autophagy.report.write_report`
reads.

``loop.stop_on_collapse``: a window's graph is fixed when compiled, so a stopped chain's later
tasks do nothing: each task of a stoppable generation also receives the chain's ``history`` and,
once a generation there is collapsed, writes only :data:`STOPPED_FILE` to its output;
``evaluate`` passes the fragment on unchanged. (The submitter starts no further window.)

This module imports neither kfp nor anything heavy at import time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from autophagy import atomic
from autophagy.config import NO_LAMBDA, ExperimentConfig, chain_lambda, from_dict, parse_lambda, to_dict
from autophagy.metric_keys import headline_keys
from autophagy.step_config import BOOKKEEPING_ENV, config_for_step

#: The tag every MLflow run of a KFP run carries (value: the KFP run id).
KFP_RUN_TAG = "kfp.run_id"
#: What a task of a chain stopped by ``loop.stop_on_collapse`` writes instead of its output.
STOPPED_FILE = "stopped.json"
#: A pool's sample sets are its subdirectories ``gen-<g>`` (generation g's samples), oldest first.
POOL_ENTRY = re.compile(r"gen-\d{3}")
#: The file that marks a directory as a :func:`pool`.
POOL_MARKER = "pool.json"


def step_config(step: str, options_json: str) -> ExperimentConfig:
    """The config of a ``step`` task: its options (a JSON parameter) and the bookkeeping of its pod's env."""
    books = json.loads(os.environ.get(BOOKKEEPING_ENV) or "{}")
    return config_for_step(step, json.loads(options_json), books)


def full_config(config_json: str) -> ExperimentConfig:
    """A whole experiment config received as JSON (``to_dict`` -> ``json.dumps``)."""
    return from_dict(json.loads(config_json))


def lam_value(text: str) -> float | None:
    """``""`` or ``"shared"`` (generation 0, shared by every lambda of a seed) -> None; else the lambda."""
    return chain_lambda(text, option="lam")


def finite_numbers(values: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, float]:
    """The finite numeric entries of a result dict (what KFP ``Metrics`` can show)."""
    import math

    return {
        key: float(value)
        for key, value in values.items()
        if key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


@contextlib.contextmanager
def _scratch_beside(path: str | Path) -> Iterator[Path]:
    """A scratch directory next to an output artifact (same filesystem, so moves are renames)."""
    scratch = Path(path).parent / f".scratch-{uuid.uuid4().hex[:12]}"
    scratch.mkdir(parents=True)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _move_into(src: Path, dst: str | Path) -> None:
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))


def collapsed_generation(history: str | Path | None) -> int | None:
    """The first generation marked collapsed in a chain's run-layout fragment, or None."""
    if not history:
        return None
    from autophagy.plan import is_collapsed

    collapsed = [
        int(path.parent.name.split("-")[1])
        for path in Path(history).rglob("gen-*/metrics.json")
        if is_collapsed(json.loads(path.read_text()))
    ]
    return min(collapsed) if collapsed else None


def _stopped(history: str | None, out_dir: str, generation: int, seed: int, lam: str) -> dict[str, Any] | None:
    """With a collapsed ``history``: write :data:`STOPPED_FILE` as the task's output and return its result."""
    at = collapsed_generation(history)
    if at is None:
        return None
    result = {"generation": generation, "seed": seed, "lambda": lam, "stopped": 1, "collapsed_at_generation": at}
    atomic.write_json(Path(out_dir) / STOPPED_FILE, result)
    print(
        f"gen-{generation} seed {seed} lambda {lam}: the chain collapsed at generation {at}; "
        "stopped (loop.stop_on_collapse)",
        flush=True,
    )
    return result


def versioned(out_dir: str | Path, name: str) -> dict[str, Any]:
    """Push ``out_dir`` to the experiment's DVC remote (:mod:`autophagy.components.dvc_remote`) when it
    has one; the pointer entry (``md5``, ``size``, ``nfiles``), else ``{}``."""
    from autophagy.components import dvc_remote

    return dvc_remote.push(out_dir, name) if dvc_remote.configured() else {}


def _with_pointer(result: dict[str, Any], out_dir: str | Path, name: str) -> dict[str, Any]:
    """``result`` with the DVC pointer of ``out_dir`` under ``dvc`` when the experiment has a remote."""
    pointer = versioned(out_dir, name)
    return {**result, "dvc": pointer} if pointer else result


# ---------------------------------------------------------------------------------- tasks


def prepare(options_json: str, train_dir: str, test_dir: str) -> dict[str, Any]:
    """``prepare.run`` writes ``<out>/train`` and ``<out>/test``; each becomes its own artifact."""
    from autophagy.stages import prepare as stage

    with _scratch_beside(train_dir) as scratch:
        result = stage.run(step_config("prepare", options_json), scratch)
        _move_into(scratch / "train", train_dir)
        _move_into(scratch / "test", test_dir)
    dvc = {
        name: pointer for name, path in (("train", train_dir), ("test", test_dir)) if (pointer := versioned(path, name))
    }
    return {**result, **({"dvc": dvc} if dvc else {})}


def features(options_json: str, out_dir: str) -> dict[str, Any]:
    from autophagy.stages import features as stage

    return stage.run(step_config("features", options_json), out_dir)


def mix(
    options_json: str,
    real: str,
    synthetic: str | None,
    out_dir: str,
    generation: int,
    lam: str,
    seed: int,
    fresh_real: bool,
    history: str | None = None,
) -> dict[str, Any]:
    """Generation ``generation``'s training set (:attr:`GenerationPlan.steps <autophagy.plan.GenerationPlan>`).

    ``real``: the prepared real training set, or with ``fresh_real`` the pool that generation's
    ``data.n_train`` real items are drawn from. ``synthetic``: the samples of generation - 1, or
    a :func:`pool` of the sample sets of generations 0 .. generation - 1. Generation 0 (``lam``
    ``""``) has a mix only with ``fresh_real``: the draw itself.
    """
    if (stopped := _stopped(history, out_dir, generation, seed, lam)) is not None:
        return stopped
    from autophagy.data.dataset import open_dataset
    from autophagy.data.strategies import fresh_real_draw
    from autophagy.stages import mix as stage

    cfg = step_config("mix", options_json)
    with _scratch_beside(out_dir) as scratch:
        if fresh_real:
            drawn = fresh_real_draw(open_dataset(real), cfg.data.n_train, scratch / "draw", seed, generation)
            if generation == 0:
                _move_into(drawn.path, out_dir)
                return _with_pointer(
                    {"generation": 0, "lambda": NO_LAMBDA, "train_set_real": drawn.rows, "train_set_synthetic": 0},
                    out_dir,
                    "train_set",
                )
            real = str(drawn.path)
        synthetic_sets = pooled_sets(synthetic) if synthetic and Path(synthetic, POOL_MARKER).is_file() else [synthetic]
        result = stage.run(
            cfg, real, [s for s in synthetic_sets if s], parse_lambda(lam, option="lam"), out_dir, generation, seed
        )
    return _with_pointer({"generation": generation, "lambda": lam, **result}, out_dir, "train_set")


def pool(
    previous: str | None,
    samples: str,
    generation: int,
    out_dir: str,
    seed: int = 0,
    lam: str = "",
    history: str | None = None,
) -> dict[str, Any]:
    """The sample sets of generations 0 .. generation - 1 of one chain, for the accumulate strategies.

    ``previous`` is the pool of generation - 1 (None at generation 1) and ``samples`` the samples
    of generation - 1; files are hard-linked where the filesystem allows, else copied. KFP
    artifacts are immutable, so each generation's pool is a new artifact.
    """
    if (stopped := _stopped(history, out_dir, generation, seed, lam)) is not None:
        return stopped
    earlier = pooled_sets(previous) if previous else []
    if len(earlier) != generation - 1:
        raise ValueError(
            f"the pool of generation {generation - 1} holds {len(earlier)} sample sets, expected {generation - 1}"
        )
    with _scratch_beside(out_dir) as scratch:
        staged = scratch / "pool"
        staged.mkdir()
        for g, source in enumerate([*earlier, samples]):
            shutil.copytree(source, staged / f"gen-{g:03d}", copy_function=atomic.link_or_copy)
        atomic.write_json(staged / POOL_MARKER, {"sample_sets": generation})
        _move_into(staged, out_dir)
    return {"generation": generation, "sample_sets": generation}


def pooled_sets(pool_dir: str) -> list[str]:
    """The sample-set directories of a :func:`pool`, oldest first."""
    entries = sorted(p for p in Path(pool_dir).iterdir() if p.is_dir() and POOL_ENTRY.fullmatch(p.name))
    if not entries:
        raise ValueError(f"{pool_dir} is not a sample pool: it has no gen-NNN sample sets")
    return [str(p) for p in entries]


def train(
    options_json: str,
    train_set: str,
    out_dir: str,
    generation: int,
    seed: int,
    lam: str = "",
    init: str | None = None,
    gpus: int = 1,
    history: str | None = None,
) -> dict[str, Any]:
    """``train.run`` in this process, or with ``gpus > 1`` data-parallel over that many processes of
    this pod under torchrun (:func:`autophagy.distributed.run_train_under_torchrun`)."""
    if (stopped := _stopped(history, out_dir, generation, seed, lam)) is not None:
        return stopped
    if int(gpus) > 1:
        from autophagy.distributed import run_train_under_torchrun

        result = run_train_under_torchrun(options_json, train_set, out_dir, generation, seed, lam, init, int(gpus))
    else:
        from autophagy.stages import train as stage

        result = stage.run(
            step_config("train", options_json), train_set, out_dir, generation, seed, lam=lam_value(lam), init=init
        )
    return _with_pointer(
        {"generation": generation, "seed": seed, "lambda": lam or NO_LAMBDA, **finite_numbers(result)}, out_dir, "model"
    )


def sample(
    options_json: str,
    model_dir: str,
    real_train: str,
    out_dir: str,
    generation: int,
    seed: int,
    n: int,
    lam: str = "",
    features_dir: str | None = None,
    history: str | None = None,
) -> dict[str, Any]:
    """``n`` samples (:func:`autophagy.plan.samples_to_draw`); the extractor and the real set serve
    ``sample.curation_k > 1``."""
    if (stopped := _stopped(history, out_dir, generation, seed, lam)) is not None:
        return stopped
    from autophagy.stages import sample as stage

    result = stage.run(
        step_config("sample", options_json),
        model_dir,
        out_dir,
        int(n),
        seed,
        generation,
        features_dir=features_dir,
        real_dir=real_train,
    )
    return _with_pointer(
        {"generation": generation, "seed": seed, "lambda": lam or NO_LAMBDA, **finite_numbers(result)},
        out_dir,
        "samples",
    )


def evaluate(
    options_json: str,
    samples: str,
    real_train: str,
    real_test: str,
    features_dir: str,
    generation: int,
    seed: int,
    lam: str,
    history_out: str,
    history_in: str | None = None,
    grid_html: str | None = None,
    stoppable: bool = False,
    pointers: Mapping[str, str | Mapping[str, Any]] | None = None,
    models: Mapping[str, str | None] | None = None,
) -> dict[str, float]:
    """``evaluate.run`` into the run layout under ``history_out`` (on a copy of ``history_in``, whose
    generation 0 and generation - 1 give the collapse verdict). ``stoppable``
    (:attr:`autophagy.plan.GenerationPlan.stoppable`): a chain collapsed in ``history_in`` has
    stopped, and its fragment passes on unchanged. Returns the finite numeric metrics (for KFP
    ``Metrics``); writes an HTML page with the sample grid to ``grid_html`` when given. ``pointers``:
    the DVC pointers of this generation's outputs (``train_set``, ``model``, ``samples``; as JSON text
    or parsed), written beside its metrics as ``<name>.dvc`` and recorded on the chain's MLflow runs.
    ``models``: the checkpoints text evaluation reads, by role (:func:`autophagy.plan.evaluation_models`;
    None: not wired)."""
    from autophagy.layout import RunLayout
    from autophagy.loop import read_metrics
    from autophagy.report import write_html
    from autophagy.stages import evaluate as stage

    cfg = step_config("evaluate", options_json)
    root = Path(history_out)
    if history_in:
        shutil.copytree(history_in, root, dirs_exist_ok=True)
    at = collapsed_generation(history_in) if stoppable else None
    if at is not None:  # the chain stopped: its fragment stays as it was at the collapse
        if grid_html:
            write_html(
                grid_html,
                f"gen-{generation} seed {seed} λ = {lam}: stopped",
                [],
                f"the chain collapsed at generation {at} (loop.stop_on_collapse)",
            )
        return {"stopped": 1.0, "collapsed_at_generation": float(at)}
    layout, lam_float = RunLayout(root), lam_value(lam)
    out = layout.generation(lam_float, seed, generation)
    baseline = read_metrics(layout.generation(None, seed, 0)) if generation > 0 else None
    previous = read_metrics(layout.generation(lam_float, seed, generation - 1)) if generation > 1 else None
    grid = out / "samples.png"
    metrics = stage.run(
        cfg,
        samples,
        {"train": real_train, "test": real_test},
        out / "metrics.json",
        features_dir,
        generation,
        seed,
        lam=lam_float,
        grid_path=grid,
        baseline=baseline,
        previous=previous,
        models={role: Path(path) for role, path in (models or {}).items() if path},
    )
    parsed = {name: json.loads(p) if isinstance(p, str) else p for name, p in (pointers or {}).items()}
    record_pointers(
        cfg, out, {name: pointer for name, pointer in parsed.items() if pointer}, lam_float, seed, generation
    )
    if grid_html:
        title = f"gen-{generation} seed {seed} " + (f"λ = {lam}" if lam else "(shared by every λ)")
        write_html(grid_html, title, [grid] if grid.is_file() else [], _summary_line(metrics))
    return finite_numbers(metrics, skip=("generation", "seed"))


def record_pointers(
    cfg: ExperimentConfig,
    directory: Path,
    pointers: Mapping[str, Mapping[str, Any]],
    lam: float | None,
    seed: int,
    generation: int,
) -> None:
    """Write ``<name>.dvc`` pointer files into a generation's directory of the run layout and tag the
    chain runs in MLflow with the hashes (``autophagy.dvc.gen-003.train_set``: md5), so a
    dataset can be followed from MLflow to DVC and back."""
    if not pointers:
        return
    from autophagy.components.dvc_remote import pointer_text

    for name, pointer in pointers.items():
        atomic.write_text(directory / f"{name}.dvc", pointer_text(dict(pointer)))
    if cfg.tracking.enabled:
        from autophagy.tracking import open_tracker

        tracker = open_tracker(cfg)
        tags = {f"autophagy.dvc.gen-{generation:03d}.{name}": p["md5"] for name, p in pointers.items()}
        for chain_lam in cfg.loop.lambdas if lam is None else (lam,):
            tracker.set_tags(tracker.child_run(chain_lam, seed), tags)


def collect(fragments: Sequence[str], out_dir: str) -> int:
    """Merge run-layout fragments (disjoint chains of one experiment) into one tree; returns how many."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for fragment in fragments:
        shutil.copytree(fragment, out_dir, dirs_exist_ok=True)
    return len(fragments)


#: Where the report run logs the run-layout tree (pointers, metrics, grids) on the MLflow parent run.
LAYOUT_ARTIFACT = "run_layout"


def report(
    config_json: str,
    fragments: Sequence[str],
    out_dir: str,
    markdown_path: str | None = None,
    data_pointers: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Materialise ``<out_dir>/<experiment>`` (the ``runs/<experiment>`` layout of the local loop)
    from the chains' fragments and write its report there (also logged to the MLflow parent run).
    The Markdown page (figures inlined, for the KFP UI) goes to ``markdown_path``.

    With a DVC remote the tree also holds ``data/{train,test}.dvc`` (``data_pointers``) beside each
    generation's pointers, and a ``dvc.yaml`` that declares every ``metrics.json``, so that in a
    user's checkout ``dvc pull``, ``dvc status`` and ``dvc metrics show`` work on it; the whole
    tree (no data in it: pointers, metrics, grids, report) is logged to the parent run as
    :data:`LAYOUT_ARTIFACT` for ``autophagy pull`` (whether or not ``tracking.enabled``: the
    hand-offs need the MLflow server anyway).
    """
    from autophagy.report import inline_images, write_report

    cfg = full_config(config_json)
    root = Path(out_dir) / cfg.name
    collect(fragments, str(root))
    atomic.write_json(root / "config.json", to_dict(cfg))
    written = write_report(root, cfg)
    if markdown_path:
        Path(markdown_path).write_text(inline_images(Path(written["markdown"])))
    if data_pointers:
        from autophagy.components.dvc_remote import pointer_text

        from autophagy.tracking import Tracker

        for name, pointer in data_pointers.items():
            atomic.write_text(root / "data" / f"{name}.dvc", pointer_text(dict(pointer)))
        write_dvc_metrics(root)
        tracker = Tracker(cfg)
        tracker.log_artifact(tracker.parent_run(), root, LAYOUT_ARTIFACT)
    return {
        "experiment": cfg.name,
        "experiment_dir": cfg.name,
        "metrics_files": len(list(root.rglob("metrics.json"))),
        "figures": [Path(f).name for f in written["figures"]],
    }


def write_dvc_metrics(root: Path) -> None:
    """``root/dvc.yaml`` declaring every ``metrics.json`` below it (DVC's top-level ``metrics``)."""
    import yaml

    metrics = sorted(str(p.relative_to(root)) for p in root.rglob("metrics.json"))
    atomic.write_text(root / "dvc.yaml", yaml.safe_dump({"metrics": metrics}, sort_keys=False))


def handoff(
    key: str,
    kfp_run_id: str,
    artifacts: Mapping[str, tuple[str, str] | None],
    pointers: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Record where a KFP run left what the next run needs, on the experiment's MLflow parent run
    (``autophagy pipeline submit`` reads it back to submit the next run).

    ``artifacts`` maps names to (remote URI, local path) or None. The record holds the URIs, the
    KFP run id, for a chain's ``history`` its last generation and the generation it collapsed at,
    and for ``real_train`` its rows (n, which sets the sample counts of the next runs); ``pointers``:
    the DVC pointers of the real data sets (``train``, ``test``), which the report writes.
    """
    from autophagy.data.dataset import open_dataset
    from autophagy.tracking import Tracker

    record: dict[str, Any] = {
        "kfp_run_id": kfp_run_id,
        "uris": {name: pair[0] for name, pair in artifacts.items() if pair is not None},
    }
    if (history := artifacts.get("history")) is not None:
        record["generation"] = max(
            int(p.parent.name.split("-")[1]) for p in Path(history[1]).rglob("gen-*/metrics.json")
        )
        record["collapsed_at"] = collapsed_generation(history[1])
    if (real_train := artifacts.get("real_train")) is not None:
        record["real_rows"] = open_dataset(real_train[1], verify_hash=False).rows
    if pointers:
        record["dvc"] = dict(pointers)
    tracker = Tracker(step_config("handoff", "{}"))
    tracker.record_handoff(key, record)
    if kfp_run_id:
        tracker.set_tags(tracker.parent_run(), {KFP_RUN_TAG: kfp_run_id})
    return record


def _summary_line(metrics: Mapping[str, Any]) -> str:
    keys = [k for k in headline_keys() if k in metrics]
    return ", ".join(f"{k} = {metrics[k]:.4g}" for k in keys if isinstance(metrics[k], (int, float)))
