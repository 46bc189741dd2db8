"""The compiled pipeline's tasks, run for real: in-process through the component runtime, and
the whole pipeline under ``kfp.local``.

``kfp.local`` (SubprocessRunner, ``use_venv=False``) runs every task as a subprocess of this
interpreter, two at a time, with the KFP executor the cluster uses (artifact passing,
``ParallelFor``, ``dsl.Collected``). It silently drops every kfp-kubernetes setting (the
ConfigMap/Secret env, node selectors, tolerations, pod labels) and ignores resource requests,
so here the tasks take MLflow's settings from *this* process's environment instead: the
autouse fixture of conftest.py sets ``MLFLOW_TRACKING_URI`` to a temporary SQLite file,
``AUTOPHAGY_CACHE_DIR`` and ``MLFLOW_DISABLE_TELEMETRY``, and the subprocesses inherit them
(and the working directory, where MLflow's SQLite store puts artifacts: ``./mlruns``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytest

from autophagy.components import runtime
from autophagy.config import format_lambda
from autophagy.layout import RunLayout

log = logging.getLogger(__name__)


def _finite(metrics: dict, keys=("fd_train", "precision_train", "recall_train", "fd_test")) -> None:
    for key in keys:
        assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), (key, metrics[key])


def test_component_runtime_chains_the_stages_in_process(tmp_path, tiny_cfg):
    """The adapter every component body calls: artifact paths in, the run layout out (no KFP)."""
    cfg = tiny_cfg("gaussian", "loop.lambdas=[0, inf]", "loop.generations=1", "loop.collapse_ratio=2")
    config = runtime.config_to_json(cfg)
    assert runtime.load_config(config) == cfg
    a = tmp_path / "artifacts"
    prepared = runtime.prepare(config, str(a / "prepare" / "train"), str(a / "prepare" / "test"))
    assert prepared["n_train"] == 100 and not list((a / "prepare").glob(".scratch-*"))
    runtime.features(config, str(a / "features"))
    assert runtime.open_tracking(config, "kfp-run-1") == ""  # tracking.enabled=false in the tiny presets
    real_train, real_test = str(a / "prepare" / "train"), str(a / "prepare" / "test")
    runtime.train(config, real_train, str(a / "g0" / "model"), 0, 0)
    sampled = runtime.sample(config, str(a / "g0" / "model"), real_train, str(a / "g0" / "samples"), 0, 0)
    assert sampled["sample_count"] == 200  # max(n_eval, floor(lambda n)) over the lambdas, as loop.py
    metrics0 = runtime.evaluate(config, str(a / "g0" / "samples"), real_train, real_test, str(a / "features"), 0, 0, "",
                                str(a / "g0" / "history"), grid_html=str(a / "g0" / "grid.html"))
    assert "generation" not in metrics0 and all(math.isfinite(v) for v in metrics0.values())
    assert (a / "g0" / "grid.html").read_text().count("data:image/png;base64,") == 1
    chains = []
    for lam in cfg.loop.lambdas:
        text, g = format_lambda(lam), a / f"lam-{format_lambda(lam)}"
        mixed = runtime.mix(config, real_train, str(a / "g0" / "samples"), str(g / "train_set"), 1, text)
        assert mixed["train_set_synthetic"] == (100 if text == "inf" else 0)
        runtime.train(config, str(g / "train_set"), str(g / "model"), 1, 0, text, init=str(a / "g0" / "model"))
        runtime.sample(config, str(g / "model"), real_train, str(g / "samples"), 1, 0, text)
        metrics1 = runtime.evaluate(config, str(g / "samples"), real_train, real_test, str(a / "features"), 1, 0, text,
                                    str(g / "history"), history_in=str(a / "g0" / "history"))
        assert "collapse_factor" in metrics1  # the verdict of autophagy.collapse, as the local loop adds it
        stored = json.loads((RunLayout(g / "history").generation(lam, 0, 1) / "metrics.json").read_text())
        assert stored["collapse_factor"] == metrics1["collapse_factor"] and "collapsed" in stored
        chains.append(str(g / "history"))
    assert runtime.collect(chains, str(a / "seed-0")) == 2
    summary = runtime.report(config, [str(a / "seed-0")], str(a / "run"), str(a / "page.md"))
    layout = RunLayout(a / "run" / cfg.name)
    for lam in (None, *cfg.loop.lambdas):
        assert (layout.generation(lam, 0, 0 if lam is None else 1) / "metrics.json").is_file()
    assert summary["metrics_files"] == 3 and (layout.report / "summary.csv").is_file()
    assert json.loads((layout.root / "config.json").read_text())["name"] == cfg.name
    assert "| inf |" in (a / "page.md").read_text()


@pytest.mark.slow
def test_whole_pipeline_under_kfp_local(tmp_path, tiny_cfg, tracking_uri, monkeypatch):
    from kfp import local
    from mlflow import MlflowClient

    from autophagy.pipelines import ClusterConfig, build_pipeline, expected_tasks

    cfg = tiny_cfg("digits", "loop.lambdas=[0, inf]", "loop.seeds=[0]", "loop.generations=2", "tracking.enabled=true")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # kfp.local runs two tasks at once; the machine has two shared cores
    monkeypatch.chdir(tmp_path)  # the tasks' working directory too: MLflow's default artifact root is ./mlruns
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    pipeline = build_pipeline(cfg, ClusterConfig(), image="registry.example.com/autophagy:test")
    started = time.perf_counter()
    result = pipeline()
    wall = time.perf_counter() - started
    message = f"kfp.local: {sum(expected_tasks(cfg).values())} tasks of the tiny default in {wall:.0f} s"
    log.info(message)
    print(message)

    # The pipeline's output: the run directory the report task materialised (runs/<experiment>).
    run_dir = Path(result.output.path) / cfg.name
    layout = RunLayout(run_dir)
    for lam, generation in [(None, 0)] + [(lam, g) for lam in cfg.loop.lambdas for g in (1, 2)]:
        metrics = json.loads((layout.generation(lam, 0, generation) / "metrics.json").read_text())
        assert metrics["generation"] == generation and metrics["n_samples"] == 200
        assert metrics["lambda"] == (None if lam is None else format_lambda(lam))
        _finite(metrics)
    report = (run_dir / "report" / "report.md").read_text()
    assert "| 0 | 2 |" in report and "| inf | 2 |" in report  # last generation of each lambda
    assert (run_dir / "report" / "fd_train.png").is_file()

    # What the KFP UI shows: a Metrics artifact per evaluate task, the sample grids, the report page.
    outputs = {}
    for path in (tmp_path / "kfp").rglob("executor_output.json"):
        for name, artifacts in json.loads(path.read_text()).get("artifacts", {}).items():
            outputs.setdefault((path.parent.name, name), []).extend(artifacts["artifacts"])
    kfp_metrics = [a["metadata"] for (task, name), arts in outputs.items() if name == "metrics" for a in arts]
    assert len(kfp_metrics) == 1 + 2 * 2
    for metadata in kfp_metrics:
        _finite(metadata)
    grids = list((tmp_path / "kfp").rglob("grid"))
    assert len(grids) == 5 and all("data:image/png;base64," in g.read_text() for g in grids)
    [page] = (tmp_path / "kfp").rglob("page")
    assert "data:image/png;base64," in page.read_text()

    # MLflow: one parent, one child per lambda, tagged with the KFP run id; metrics at steps 0..2.
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("autophagy.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert {c.data.tags["autophagy.lambda"] for c in children} == {"0", "inf"}
    kfp_run_id = parent.data.tags["kfp.run_id"]
    assert kfp_run_id and all(c.data.tags["kfp.run_id"] == kfp_run_id for c in children)
    for child in children:
        history = client.get_metric_history(child.info.run_id, "fd_train")
        assert sorted(m.step for m in history) == [0, 1, 2], child.data.tags["autophagy.lambda"]
        assert all(math.isfinite(m.value) for m in history)
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.slow
def test_stop_on_collapse_under_kfp_local(tmp_path, tiny_cfg, monkeypatch):
    """A chain that collapses at generation 1 (fully synthetic, a threshold just above 1): its later
    tasks run but only mark their outputs, and the run directory equals the local loop's."""
    from kfp import local

    from autophagy import loop
    from autophagy.pipelines import ClusterConfig, build_pipeline

    cfg = tiny_cfg("gaussian", "loop.lambdas=[inf]", "loop.seeds=[0]", "loop.generations=3",
                   "loop.collapse_metric=swd_train", "loop.collapse_ratio=1.0001", "loop.stop_on_collapse=true",
                   "tracking.enabled=false")
    expected = loop.run_experiment(cfg, tmp_path / "local" / cfg.name, log=lambda _: None)
    chain = expected.generation(math.inf, 0, 1).parent
    assert sorted(p.name for p in chain.iterdir()) == ["gen-001"]  # the local loop stopped after generation 1

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    result = build_pipeline(cfg, ClusterConfig(), image="registry.example.com/autophagy:test")()
    layout = RunLayout(Path(result.output.path) / cfg.name)
    ours = layout.generation(math.inf, 0, 1).parent
    assert sorted(p.name for p in ours.iterdir()) == ["gen-001"]
    for generation_dir in (expected.generation(None, 0, 0), expected.generation(math.inf, 0, 1)):
        relative = generation_dir.relative_to(expected.root)
        theirs = json.loads((layout.root / relative / "metrics.json").read_text())
        mine = json.loads((generation_dir / "metrics.json").read_text())
        assert {k: v for k, v in theirs.items() if not k.endswith("_seconds")} == \
            {k: v for k, v in mine.items() if not k.endswith("_seconds")}
    assert "collapsed in" in (layout.root / "report" / "report.md").read_text()

    # Generations 2 and 3 ran as tasks that only wrote the marker, and said so in their KFP metrics.
    markers = sorted(p.parent.parent.name for p in (tmp_path / "kfp").rglob(runtime.STOPPED_FILE))
    assert len(markers) == 2 * 3, markers  # mix, train, sample of generations 2 and 3
    stopped_metrics = [json.loads(p.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
                       for p in (tmp_path / "kfp").rglob("executor_output.json")
                       if "metrics" in json.loads(p.read_text()).get("artifacts", {})]
    assert sum(1 for m in stopped_metrics if m.get("stopped") == 1.0 and m.get("collapsed_at_generation") == 1.0) == 2
