"""What a KFP component body calls inside the image: paths and plain values in, a dict back.

Each KFP component (:mod:`autophagy.components.ops`) is a one-line call into this module, which
adapts KFP's artifact paths to the stage functions of :mod:`autophagy.stages` and to the run
layout of :mod:`autophagy.layout`. There is no stage logic here: every function parses the
experiment config and makes one stage call (or, for ``collect``/``report``, copies directories
into the run layout the library reads). MLflow logging happens inside the stages, into the runs
``open_tracking`` made for the experiment before any other task.

This module imports neither kfp nor anything heavy at import time, so it can be unit-tested
without KFP and imported cheaply by every component.

Run-layout fragments: every ``evaluate`` task writes its ``metrics.json`` (and sample grid) at
its place in a :class:`~autophagy.layout.RunLayout` rooted at its ``history`` output, on top of
a copy of the previous generation's fragment. The last fragment of each (lambda, seed) chain
therefore holds the whole chain; ``collect`` merges the chains of a seed and ``report`` merges
the seeds, which gives exactly the directory tree :func:`autophagy.report.write_report` reads.
(KFP 2.17 can fan in one ``ParallelFor`` level at a time with ``dsl.Collected``; nested
collections fail locally, so the fan-in goes chain -> seed -> experiment.)

``loop.stop_on_collapse``: the graph is fixed when compiled, so a chain stops by its tasks
doing nothing. From generation 2 on, each task of a chain also receives the chain's ``history``
(the fragment of generation - 1); once a generation there is marked collapsed, the task writes
only :data:`STOPPED_FILE` to its output and returns, and ``evaluate`` passes the fragment on
unchanged. The final fragment then ends at the collapsed generation, as the local loop's chain
does (:func:`autophagy.loop.run_experiment`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from autophagy.config import ExperimentConfig, format_lambda, from_dict, parse_lambda, to_dict

#: The tag every MLflow run of a KFP run carries (value: the KFP run id).
KFP_RUN_TAG = "kfp.run_id"
#: What a task of a chain stopped by ``loop.stop_on_collapse`` writes instead of its output.
STOPPED_FILE = "stopped.json"


def load_config(config_json: str) -> ExperimentConfig:
    """The experiment config a component received as JSON (``to_dict`` -> ``json.dumps``)."""
    return from_dict(json.loads(config_json))


def config_to_json(cfg: ExperimentConfig) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))


def lam_value(text: str) -> float | None:
    """``""`` (generation 0, shared by every lambda of a seed) -> None; else the lambda."""
    return None if text in ("", None) else parse_lambda(text, option="lam")


@contextlib.contextmanager
def run_tags_env(tags: Mapping[str, str]) -> Iterator[None]:
    """``AUTOPHAGY_RUN_TAGS`` = ``tags`` (added to every MLflow run created) for the duration of a call.

    The previous environment is restored afterwards, so in-process calls (tests) leak nothing.
    """
    from autophagy.tracking import EXTRA_TAGS_ENV

    updates = {EXTRA_TAGS_ENV: json.dumps(dict(tags))} if tags else {}
    saved = {key: os.environ.get(key) for key in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def finite_numbers(values: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, float]:
    """The finite numeric entries of a result dict (what KFP ``Metrics`` can show)."""
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


def _merge_tree(src: str | Path, dst: str | Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)


def collapsed_generation(history: str | Path | None) -> int | None:
    """The first generation marked collapsed in a chain's run-layout fragment, or None."""
    if not history:
        return None
    from autophagy.loop import is_collapsed

    collapsed = [int(path.parent.name.split("-")[1]) for path in Path(history).rglob("gen-*/metrics.json")
                 if is_collapsed(path.parent)]
    return min(collapsed) if collapsed else None


def _stopped(history: str | None, out_dir: str, generation: int, seed: int, lam: str) -> dict[str, Any] | None:
    """With a collapsed ``history`` (see the module's notes on ``loop.stop_on_collapse``): write
    :data:`STOPPED_FILE` as the task's output and return the task's result; else None."""
    at = collapsed_generation(history)
    if at is None:
        return None
    from autophagy import atomic

    result = {"generation": generation, "seed": seed, "lambda": lam, "stopped": 1, "collapsed_at_generation": at}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic.write_json(Path(out_dir) / STOPPED_FILE, result)
    print(f"gen-{generation} seed {seed} lambda {lam}: the chain collapsed at generation {at}; "
          "stopped (loop.stop_on_collapse)", flush=True)
    return result


# ---------------------------------------------------------------------------------- tasks


def open_tracking(config_json: str, kfp_run_id: str = "") -> str:
    """Get or create the MLflow parent run and every (lambda, seed) child run; return the parent id.

    The pipeline runs this task before any task that logs, so the pods of a sweep never race to
    create runs: each later task finds the same parent by the configuration's tags
    (:meth:`autophagy.tracking.Tracker.parent_run`) and its child by (parent, lambda, seed), as
    the local loop does. ``AUTOPHAGY_PARENT_RUN_ID`` in the pods' env, if set, still wins
    everywhere. Every run is tagged ``kfp.run_id`` with this KFP run's id (re-tagged when it
    already existed: the tag names the latest KFP run that used it). ``""`` when tracking is off.
    """
    cfg = load_config(config_json)
    if not cfg.tracking.enabled:
        return ""
    from autophagy.tracking import Tracker

    tags = {KFP_RUN_TAG: kfp_run_id} if kfp_run_id else {}
    with run_tags_env(tags):
        tracker = Tracker(cfg)
        parent = tracker.parent_run()
        runs = [parent] + [tracker.child_run(lam, seed) for seed in cfg.loop.seeds for lam in cfg.loop.lambdas]
        if tags:
            for run_id in runs:
                tracker.set_tags(run_id, tags)
    return parent


def prepare(config_json: str, train_dir: str, test_dir: str) -> dict[str, Any]:
    """``prepare.run`` writes ``<out>/train`` and ``<out>/test``; each becomes its own artifact."""
    from autophagy.stages import prepare as stage

    cfg = load_config(config_json)
    with _scratch_beside(train_dir) as scratch:
        result = stage.run(cfg, scratch)
        _move_into(scratch / "train", train_dir)
        _move_into(scratch / "test", test_dir)
    return result


def features(config_json: str, out_dir: str) -> dict[str, Any]:
    from autophagy.stages import features as stage

    return stage.run(load_config(config_json), out_dir)


def train(config_json: str, train_set: str, out_dir: str, generation: int, seed: int, lam: str = "",
          init: str | None = None, gpus: int = 1, history: str | None = None) -> dict[str, Any]:
    """``train.run`` in this process, or with ``gpus > 1`` (``cluster.gpus_per_train``) data-parallel
    over that many processes of this pod: ``torchrun --standalone --nproc_per_node=<gpus> -m
    autophagy.cli train ...`` (:func:`torchrun_train_command`), whose rank 0 writes the result.
    ``history``: see ``loop.stop_on_collapse`` in the module's notes."""
    if (stopped := _stopped(history, out_dir, generation, seed, lam)) is not None:
        return stopped
    if int(gpus) > 1:
        result = _train_under_torchrun(config_json, train_set, out_dir, generation, seed, lam, init, int(gpus))
    else:
        from autophagy.stages import train as stage

        result = stage.run(load_config(config_json), train_set, out_dir, generation, seed, lam=lam_value(lam), init=init)
    return {"generation": generation, "seed": seed, "lambda": lam or "shared", **finite_numbers(result)}


def torchrun_train_command(config_path: str | Path, train_set: str, out_dir: str, generation: int, seed: int, lam: str,
                           init: str | None, nproc: int, result_path: str | Path) -> list[str]:
    """The command line of a data-parallel train stage in one pod (``python -m torch.distributed.run``
    is ``torchrun``; ``--standalone``: a rendezvous on localhost, one node)."""
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "autophagy.cli", "train", "--config", str(config_path), "--train-set", str(train_set),
               "--out", str(out_dir), "--generation", str(generation), "--seed", str(seed),
               "--result", str(result_path)]
    if lam:
        command += ["--lam", lam]
    if init:
        command += ["--init", str(init)]
    return command


def _train_under_torchrun(config_json: str, train_set: str, out_dir: str, generation: int, seed: int, lam: str,
                          init: str | None, nproc: int) -> dict[str, Any]:
    import subprocess

    import yaml

    cfg = load_config(config_json)  # fail here, plainly, on a bad config
    with _scratch_beside(out_dir) as scratch:
        config_path, result_path = scratch / "config.yaml", scratch / "result.json"
        config_path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        command = torchrun_train_command(config_path, train_set, out_dir, generation, seed, lam, init, nproc, result_path)
        print("+ " + " ".join(command), flush=True)
        returncode = subprocess.run(command, check=False).returncode
        if returncode != 0:
            raise RuntimeError(f"data-parallel training over {nproc} processes failed (torchrun exit code {returncode}); "
                               "the ranks' errors are in the log above")
        return json.loads(result_path.read_text())


def sample(config_json: str, model_dir: str, real_train: str, out_dir: str, generation: int, seed: int,
           lam: str = "", features_dir: str | None = None, history: str | None = None) -> dict[str, Any]:
    """As many samples as the loop draws (enough to evaluate and to feed generation + 1), as
    :func:`autophagy.loop.run_generation` calls the stage (the extractor and the real set serve
    ``sample.curation_k > 1``). ``history``: see ``loop.stop_on_collapse`` in the module's notes."""
    if (stopped := _stopped(history, out_dir, generation, seed, lam)) is not None:
        return stopped
    from autophagy.loop import real_size, samples_per_generation
    from autophagy.stages import sample as stage

    cfg = load_config(config_json)
    n = samples_per_generation(cfg, real_size(cfg, real_train), lam_value(lam))
    result = stage.run(cfg, model_dir, out_dir, n, seed, generation, features_dir=features_dir, real_dir=real_train)
    return {"generation": generation, "seed": seed, "lambda": lam or "shared", **finite_numbers(result)}


def mix(config_json: str, real: str, synthetic: str | None, out_dir: str, generation: int, lam: str,
        seed: int = 0, history: str | None = None) -> dict[str, Any]:
    """Generation ``generation``'s training set, as :func:`autophagy.loop.run_generation` makes it.

    ``real``: the prepared real training set (for ``fresh-real``, the pool that generation's n
    real items are drawn from, with the same seed as the local loop). ``synthetic``: the samples
    of generation - 1, or for the ``accumulate`` strategies a :func:`pool` of the samples of
    generations 0 .. generation - 1. Generation 0 (``lam`` ``""``) only has a mix with
    ``fresh-real``: its training set is the generation-0 draw. ``history``: see
    ``loop.stop_on_collapse`` in the module's notes.
    """
    if (stopped := _stopped(history, out_dir, generation, seed, lam)) is not None:
        return stopped
    from autophagy.data.dataset import open_dataset
    from autophagy.data.strategies import fresh_real_draw
    from autophagy.stages import mix as stage

    cfg = load_config(config_json)
    fresh = cfg.loop.strategy == "fresh-real"
    if generation == 0:
        if not fresh:
            raise ValueError("generation 0 has a mix only with loop.strategy=fresh-real (it trains on D_real itself)")
        with _scratch_beside(out_dir) as scratch:
            drawn = fresh_real_draw(open_dataset(real), cfg.data.n_train, scratch / "draw", seed, 0)
            _move_into(drawn.path, out_dir)
        return {"generation": 0, "lambda": "shared", "train_set_real": cfg.data.n_train, "train_set_synthetic": 0}
    with _scratch_beside(out_dir) as scratch:
        if fresh:
            real = str(fresh_real_draw(open_dataset(real), cfg.data.n_train, scratch / "draw", seed, generation).path)
        history = pooled_sets(synthetic) if cfg.loop.strategy.startswith("accumulate") else [synthetic]
        result = stage.run(cfg, real, history, parse_lambda(lam, option="lam"), out_dir, generation, seed)
    return {"generation": generation, "lambda": lam, **result}


#: A pool's sample sets are its subdirectories ``gen-<g>`` (generation g's samples), oldest first.
POOL_ENTRY = re.compile(r"gen-\d{3}")


def pool(previous: str | None, samples: str, generation: int, out_dir: str, seed: int = 0, lam: str = "",
         history: str | None = None) -> dict[str, Any]:
    """The sample sets of generations 0 .. generation - 1 of one chain, for the accumulate strategies.

    ``previous`` is the pool of generation - 1 (``None`` at generation 1) and ``samples`` the
    samples of generation - 1; files are hard-linked where the filesystem allows, else copied.
    KFP artifacts are immutable, so each generation's pool is a new artifact (O(generation)
    sample sets: the price of accumulating in a pipeline). ``history``, ``seed``, ``lam``: see
    ``loop.stop_on_collapse`` in the module's notes.
    """
    if (stopped := _stopped(history, out_dir, generation, seed, lam)) is not None:
        return stopped
    from autophagy.data.dataset import open_dataset

    entries = pooled_sets(previous) if previous else []
    if len(entries) != generation - 1:
        raise ValueError(f"the pool of generation {generation - 1} holds {len(entries)} sample sets, expected {generation - 1}")
    open_dataset(samples)  # verified before it joins the pool
    with _scratch_beside(out_dir) as scratch:
        staged = scratch / "pool"
        for entry in entries:
            shutil.copytree(entry, staged / Path(entry).name, copy_function=_link_or_copy)
        shutil.copytree(samples, staged / f"gen-{generation - 1:03d}", copy_function=_link_or_copy)
        _move_into(staged, out_dir)
    return {"generation": generation, "sample_sets": generation}


def pooled_sets(pool_dir: str) -> list[str]:
    """The sample-set directories of a :func:`pool`, oldest first."""
    entries = sorted(p for p in Path(pool_dir).iterdir() if p.is_dir() and POOL_ENTRY.fullmatch(p.name))
    if not entries:
        raise ValueError(f"{pool_dir} is not a sample pool: it has no gen-NNN sample sets")
    return [str(p) for p in entries]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def evaluate(config_json: str, samples: str, real_train: str, real_test: str, features_dir: str, generation: int,
             seed: int, lam: str, history_out: str, history_in: str | None = None,
             grid_html: str | None = None) -> dict[str, float]:
    """``evaluate.run`` into the run layout under ``history_out`` (on a copy of ``history_in``).

    Returns the finite numeric metrics (for KFP ``Metrics``); writes an HTML page with the
    sample grid to ``grid_html`` when given.
    """
    from autophagy.layout import RunLayout
    from autophagy.loop import mark_collapse
    from autophagy.stages import evaluate as stage

    cfg = load_config(config_json)
    root = Path(history_out)
    if history_in:
        _merge_tree(history_in, root)
    at = collapsed_generation(history_in) if cfg.loop.stop_on_collapse else None
    if at is not None:  # the chain stopped: its fragment stays as it was at the collapse
        if grid_html:
            write_html(grid_html, f"gen-{generation} seed {seed} λ = {lam}: stopped",
                       [], f"the chain collapsed at generation {at} (loop.stop_on_collapse)")
        return {"stopped": 1.0, "collapsed_at_generation": float(at)}
    out = RunLayout(root).generation(lam_value(lam), seed, generation)
    grid = out / "samples.png"
    metrics = stage.run(cfg, samples, {"train": real_train, "test": real_test}, out / "metrics.json", features_dir,
                        generation, seed, lam=lam_value(lam), grid_path=grid)
    if generation > 0:  # the collapse verdict against generation 0, as the local loop adds it
        metrics = {**metrics, **mark_collapse(cfg, RunLayout(root), lam_value(lam), seed, generation, metrics)}
    if grid_html:
        title = f"gen-{generation} seed {seed} " + (f"λ = {lam}" if lam else "(shared by every λ)")
        write_html(grid_html, title, [grid] if grid.is_file() else [], _summary_line(metrics))
    return finite_numbers(metrics, skip=("generation", "seed"))


def collect(fragments: Sequence[str], out_dir: str) -> int:
    """Merge run-layout fragments (the chains of one seed) into one tree; returns how many."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for fragment in fragments:
        _merge_tree(fragment, out_dir)
    return len(fragments)


def report(config_json: str, fragments: Sequence[str], out_dir: str, markdown_path: str | None = None) -> dict[str, Any]:
    """Materialise ``<out_dir>/<experiment>`` (the ``runs/<experiment>`` layout of the local loop)
    from the fragments and write its report there.

    ``autophagy.report.write_report`` also logs the report to the MLflow parent run. The
    Markdown page (figures inlined as data URIs, for the KFP UI) goes to ``markdown_path``.
    Returns what the run directory holds (for the artifact's metadata).
    """
    from autophagy import atomic
    from autophagy.report import write_report

    cfg = load_config(config_json)
    root = Path(out_dir) / cfg.name
    collect(fragments, str(root))
    atomic.write_json(root / "config.json", to_dict(cfg))
    written = write_report(root, cfg)
    if markdown_path:
        Path(markdown_path).write_text(inline_images(Path(written["markdown"])))
    return {"experiment": cfg.name, "experiment_dir": cfg.name, "metrics_files": len(list(root.rglob("metrics.json"))),
            "figures": [Path(f).name for f in written["figures"]]}


# ------------------------------------------------------------------------------ rendering


def _summary_line(metrics: Mapping[str, Any]) -> str:
    keys = [k for k in ("fd_train", "precision_train", "recall_train", "fd_test", "swd_train") if k in metrics]
    return ", ".join(f"{k} = {metrics[k]:.4g}" for k in keys if isinstance(metrics[k], (int, float)))


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def write_html(path: str | Path, title: str, images: Sequence[Path], text: str = "") -> None:
    """A self-contained HTML page (images embedded), which the KFP UI shows for HTML artifacts."""
    import html

    body = "".join(f'<p><img src="{_data_uri(p)}" alt="{html.escape(p.name)}" style="image-rendering: pixelated; '
                   f'width: 512px"></p>' for p in images)
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
            f"<body><h3>{html.escape(title)}</h3><p>{html.escape(text)}</p>{body}</body></html>")
    Path(path).write_text(page)


def inline_images(markdown: Path) -> str:
    """``report.md`` with its ``![alt](file.png)`` figures embedded, so the page stands alone."""

    def embed(match: re.Match) -> str:
        image = markdown.parent / match.group(2)
        return f"![{match.group(1)}]({_data_uri(image)})" if image.is_file() else match.group(0)

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", embed, markdown.read_text())


__all__ = [
    "KFP_RUN_TAG", "STOPPED_FILE", "collapsed_generation", "load_config", "config_to_json", "lam_value", "run_tags_env",
    "finite_numbers", "open_tracking", "prepare", "features", "train", "sample", "mix", "pool", "pooled_sets", "evaluate", "collect", "report", "write_html",
    "inline_images", "format_lambda",
]
