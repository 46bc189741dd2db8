"""The experiment's KFP runs, run for real: the component runtime in process, and the whole
experiment under ``kfp.local`` through ``autophagy pipeline submit --local``.

``kfp.local`` (SubprocessRunner, ``use_venv=False``) runs every task of the very packages that go
to a cluster as a subprocess of this interpreter, two at a time, with the KFP executor the
cluster uses (importers, artifact passing, ``ParallelFor``, ``dsl.Collected``). It drops every
kfp-kubernetes setting (the ConfigMap/Secret env, node selectors, tolerations, pod labels, the
scratch PVC) and ignores resource requests, so the tasks take MLflow's URI from *this* process's
environment: the autouse fixture of conftest.py sets ``MLFLOW_TRACKING_URI`` to a temporary
SQLite file, which the submitter, the tasks and the hand-offs between runs all share.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytest
from autophagy.components import runtime

from autophagy import loop
from autophagy.config import format_lambda
from autophagy.layout import RunLayout

log = logging.getLogger(__name__)
IMAGE = "registry.example.com/autophagy:test"


def _finite(metrics: dict, keys=("fd_train", "precision_train", "recall_train", "fd_test")) -> None:
    for key in keys:
        assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), (key, metrics[key])


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.endswith("_seconds")}


def _same_metrics(ours: dict, theirs: dict) -> None:
    """Equal but for timings (both sides train and evaluate on one thread: the same summation order)."""
    assert _untimed(ours) == _untimed(theirs)


def _overrides(cfg) -> list[str]:
    """``-S`` overrides that rebuild ``cfg`` from the embedded default (what a user would type)."""
    from autophagy.config import flatten

    return [f"{key}={json.dumps(value)}" for key, value in flatten(cfg).items()]


def _report_dir(tracking_uri: str, cfg) -> Path:
    """The run directory the report run left: its hand-off names it."""
    from autophagy.tracking import Tracker

    record = Tracker(cfg, tracking_uri).handoffs()["report"]
    return Path(record["uris"]["run_dir"]) / cfg.name


@pytest.mark.slow
def test_whole_experiment_under_kfp_local(tmp_path, tiny_cfg, tracking_uri, monkeypatch, one_thread):
    """The default experiment at reduced size: its runs (data, generation 0, two windows per chain,
    report) give every generation's metrics exactly as the local loop does, and MLflow holds one
    parent run with a child per chain and its metrics at steps 0..G."""
    from autophagy.pipelines import cli_submit
    from mlflow import MlflowClient

    cfg = tiny_cfg("digits", "loop.lambdas=[0, inf]", "loop.seeds=[0]", "loop.generations=3", "tracking.enabled=true")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # kfp.local runs two tasks at once; the machine has two shared cores
    monkeypatch.chdir(tmp_path)  # the tasks' working directory too: MLflow's default artifact root is ./mlruns
    lines: list[str] = []
    started = time.perf_counter()
    summary = cli_submit(
        None, None, [*_overrides(cfg), "cluster.window=2"], image=IMAGE, local_root=tmp_path / "kfp", log=lines.append
    )
    wall = time.perf_counter() - started
    message = f"kfp.local: {len(lines)} log lines, {summary} in {wall:.0f} s"
    log.info(message)
    print(message)
    # data, seed-0, and per chain the windows 1-2 and 3-3, then the report: 7 runs.
    # Run names as the KFP UI lists them: each chain's lambda and seed.
    started_runs = [line[len("started ") : line.rindex(" (")] for line in lines if line.startswith("started ")]
    assert sorted(started_runs) == sorted(
        [f"{cfg.name} · data", f"{cfg.name} · seed 0 · gen 0", f"{cfg.name} · report"]
        + [f"{cfg.name} · λ={lam} · seed 0 · gen {window}" for lam in ("0", "inf") for window in ("1-2", "3-3")]
    )
    assert summary.startswith(f"{cfg.name}: 7 KFP runs finished (7 started)")

    # The pipeline's product: the run directory of the report run, equal to the local loop's.
    run_dir = _report_dir(tracking_uri, cfg)
    layout = RunLayout(run_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'local-mlflow.db'}")
    expected = loop.run_experiment(cfg, tmp_path / "local" / cfg.name, log=lambda _: None)
    for lam, generation in [(None, 0)] + [(lam, g) for lam in cfg.loop.lambdas for g in (1, 2, 3)]:
        metrics = json.loads((layout.generation(lam, 0, generation) / "metrics.json").read_text())
        assert metrics["generation"] == generation and metrics["n_samples"] == 200
        assert metrics["lambda"] == (None if lam is None else format_lambda(lam))
        _finite(metrics)
        local = json.loads((expected.generation(lam, 0, generation) / "metrics.json").read_text())
        _same_metrics(metrics, local)
    report = (run_dir / "report" / "report.md").read_text()
    assert "| 0 | 3 |" in report and "| inf | 3 |" in report  # last generation of each lambda
    assert (run_dir / "report" / "fd_train.png").is_file()

    # What the KFP UI shows: a Metrics artifact per evaluate task, the sample grids, the report page.
    kfp_metrics = []
    for path in (tmp_path / "kfp").rglob("executor_output.json"):
        for name, artifacts in json.loads(path.read_text()).get("artifacts", {}).items():
            if name == "metrics":
                kfp_metrics += [a["metadata"] for a in artifacts["artifacts"]]
    assert len(kfp_metrics) == 1 + 2 * 3
    for metadata in kfp_metrics:
        _finite(metadata)
    assert len(list((tmp_path / "kfp").rglob("grid"))) == 7
    [page] = (tmp_path / "kfp").rglob("page")
    assert "data:image/png;base64," in page.read_text()

    # MLflow: one parent, one child per lambda; every generation's metrics at steps 0..3.
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("autophagy.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert {r.info.status for r in runs} == {"FINISHED"} and all(
        r.info.end_time for r in runs
    )  # ended with the submission
    assert {c.data.tags["autophagy.lambda"] for c in children} == {"0", "inf"}
    assert parent.data.tags["kfp.run_id"]
    for child in children:
        history = client.get_metric_history(child.info.run_id, "fd_train")
        assert sorted(m.step for m in history) == [0, 1, 2, 3], child.data.tags["autophagy.lambda"]
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    # Submitted again: every hand-off is there, so only the report runs again (nothing new to do).
    lines.clear()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    again = cli_submit(
        None, None, [*_overrides(cfg), "cluster.window=2"], image=IMAGE, local_root=tmp_path / "kfp2", log=lines.append
    )
    assert again.startswith(f"{cfg.name}: 0 KFP runs finished (0 started)"), again


@pytest.mark.slow
def test_stop_on_collapse_under_kfp_local(tmp_path, tiny_cfg, monkeypatch, one_thread):
    """A chain that collapses at generation 1 (fully synthetic, a threshold just above 1): the rest
    of its first window only marks its outputs, no later window starts, and the run directory
    equals the local loop's."""
    from autophagy.pipelines import cli_submit

    cfg = tiny_cfg(
        "gaussian",
        "loop.lambdas=[inf]",
        "loop.seeds=[0]",
        "loop.generations=5",
        "loop.collapse_metric=swd_train",
        "loop.collapse_ratio=1.0001",
        "loop.stop_on_collapse=true",
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    cli_submit(
        None, None, [*_overrides(cfg), "cluster.window=3"], image=IMAGE, local_root=tmp_path / "kfp", log=lines.append
    )
    assert not any("gen-004-005" in line for line in lines)  # the chain stopped: no second window
    layout = RunLayout(_report_dir(__import__("os").environ["MLFLOW_TRACKING_URI"], cfg))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'local.db'}")
    expected = loop.run_experiment(cfg, tmp_path / "local" / cfg.name, log=lambda _: None)
    chain = expected.generation(math.inf, 0, 1).parent
    assert sorted(p.name for p in chain.iterdir()) == ["gen-001"]  # the local loop stopped after generation 1
    ours = layout.generation(math.inf, 0, 1).parent
    assert sorted(p.name for p in ours.iterdir()) == ["gen-001"]
    for generation_dir in (expected.generation(None, 0, 0), expected.generation(math.inf, 0, 1)):
        relative = generation_dir.relative_to(expected.root)
        theirs = json.loads((layout.root / relative / "metrics.json").read_text())
        _same_metrics(theirs, json.loads((generation_dir / "metrics.json").read_text()))
    assert "collapsed in" in (layout.root / "report" / "report.md").read_text()
    # Generations 2 and 3 (the rest of the first window) ran as tasks that only wrote the marker.
    markers = sorted(p.parent.parent.name for p in (tmp_path / "kfp").rglob(runtime.STOPPED_FILE))
    assert len(markers) == 2 * 3, markers  # mix, train, sample of generations 2 and 3
