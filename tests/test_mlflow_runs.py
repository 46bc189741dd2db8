"""MLflow runs as MLflow users read them (issue 14, item 2; retention of item 3): runs end with a
status and an end time, one execution (run directory) has its own runs, provenance tags, only
curves as metrics, sample grids as images with steps, summary metrics on the parent, the
experiment's kind tag, and ``tracking.keep_checkpoints``.

Everything is read back through MLflow's own client from a real SQLite store, as the UI reads it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from autophagy import loop, report, tracking
from autophagy.config import ConfigError
from autophagy.tracking import NOT_METRICS, Tracker


@pytest.fixture
def gaussian(tiny_cfg):
    return tiny_cfg(
        "gaussian",
        "name=runs-table",
        "tracking.enabled=true",
        "loop.lambdas=[0.5, inf]",
        "loop.generations=3",
        "tracking.keep_checkpoints=2",
    )


def _runs(uri: str, name: str):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    return client, experiment, client.search_runs([experiment.experiment_id])


def test_an_execution_ends_its_runs_and_a_second_run_directory_gets_new_runs(gaussian, tmp_path, tracking_uri):
    first = loop.run_experiment(gaussian, tmp_path / "a", log=lambda line: None)
    report.write_report(first.root, gaussian)
    client, experiment, runs = _runs(tracking_uri, gaussian.name)
    assert len(runs) == 3  # a parent and one chain per lambda
    assert {r.info.status for r in runs} == {"FINISHED"} and all(r.info.end_time for r in runs)
    # the experiment opens on the runs view in MLflow 3's UI
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    # provenance: git commit, source, user, run directory
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(tracking.__file__).parent, capture_output=True, text=True
    ).stdout.strip()
    for run in runs:
        tags = run.data.tags
        assert tags["mlflow.source.git.commit"] == commit
        assert tags["autophagy.run_dir"] == str((tmp_path / "a").resolve())
        assert tags["mlflow.user"] and tags["mlflow.source.name"]

    # only curves are metrics; bookkeeping keys are tags
    chains = {r.data.tags["autophagy.lambda"]: r for r in runs if r.data.tags.get("autophagy.role") == "chain"}
    for run in chains.values():
        assert "fd_train" in run.data.metrics
        assert not set(run.data.metrics) & NOT_METRICS
        assert not any(key.startswith("n_reference_") for key in run.data.metrics)
        assert run.data.tags["n_reference_train"] == "100" and "parameters" in run.data.tags
        # one value per generation: steps 0..3, each once
        assert [m.step for m in client.get_metric_history(run.info.run_id, "fd_train")] == [0, 1, 2, 3]

    # checkpoints: generation 0, every 2nd and the last
    logged = {a.path for run in chains.values() for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert logged == {f"checkpoints/gen-00{g}" for g in (0, 2, 3)}

    # sample figures as images with step = generation (the UI's step slider)
    images = [a.path for a in client.list_artifacts(chains["0.5"].info.run_id, "images")]
    steps = sorted({int(p.split("+step+")[1].split("+")[0]) for p in images if p.endswith(".png")})
    assert steps == [0, 1, 2, 3] and all(p.startswith("images/samples+step+") for p in images)

    # the parent holds the last generation's headline metrics per lambda (the runs table compares configs)
    parent = next(r for r in runs if r.data.tags["autophagy.role"] == "parent")
    last = {
        row["lambda"]: row for row in report.last_generation(report.summarise(report.collect(first.root), ["fd_train"]))
    }
    assert parent.data.metrics["fd_train/lam_0.5"] == pytest.approx(last["0.5"]["fd_train"])
    assert parent.data.metrics["fd_train/lam_inf"] == pytest.approx(last["inf"]["fd_train"])

    # a second execution of the same config (another run directory) gets its own runs ...
    loop.run_experiment(gaussian, tmp_path / "b", log=lambda line: None)
    _, _, runs = _runs(tracking_uri, gaussian.name)
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    parents = [r for r in runs if r.data.tags["autophagy.role"] == "parent"]
    assert len({p.data.tags["autophagy.execution"] for p in parents}) == 2
    for run in runs:
        if run.data.tags["autophagy.role"] == "chain":
            assert [m.step for m in client.get_metric_history(run.info.run_id, "fd_train")] == [0, 1, 2, 3]


def test_a_resume_in_the_same_run_directory_continues_its_runs(gaussian, tmp_path, tracking_uri):
    """A killed execution (SIGKILL: its runs stay RUNNING) resumed in its run directory logs into the
    same runs, one value per step, and ends them FINISHED."""
    import os
    import sys

    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from conftest import PRESETS; "
        "from autophagy.config import load_config; from autophagy import loop; "
        "loop.run_experiment(load_config(None, [*PRESETS['gaussian'], *sys.argv[3:]]), sys.argv[2], log=print)"
    )
    overrides = [
        "name=runs-table",
        "tracking.enabled=true",
        "loop.lambdas=[0.5, inf]",
        "loop.generations=3",
        "tracking.keep_checkpoints=2",
    ]
    env = {**os.environ, "AUTOPHAGY_KILL_AT": "*/lam-inf/seed-0/gen-002/evaluate:tracked"}
    killed = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path / "a"), *overrides],
        env=env,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    _, _, runs = _runs(tracking_uri, gaussian.name)
    assert "RUNNING" in {r.info.status for r in runs}

    loop.run_experiment(gaussian, tmp_path / "a", log=lambda line: None)
    client, _, runs = _runs(tracking_uri, gaussian.name)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        if run.data.tags["autophagy.role"] == "chain":
            assert [m.step for m in client.get_metric_history(run.info.run_id, "fd_train")] == [0, 1, 2, 3]


@pytest.mark.parametrize("error, status", [(ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_an_execution_that_raises_ends_its_runs_failed_or_killed(gaussian, tmp_path, tracking_uri, error, status):
    with pytest.raises(type(error)):
        with tracking.execution(gaussian, tmp_path / "a"):
            tracker = Tracker(gaussian)
            tracker.log_generation(tracker.child_run(0.5, 0), 0, {"fd_train": 1.0})
            raise error
    _, _, runs = _runs(tracking_uri, gaussian.name)
    assert len(runs) == 2 and {r.info.status for r in runs} == {status} and all(r.info.end_time for r in runs)


def test_keep_checkpoints_logs_generation_zero_the_last_and_every_kth(gaussian, tiny_cfg):
    kept = [g for g in range(4) if tracking.keeps_checkpoint(gaussian, g)]
    assert kept == [0, 2, 3]
    every = tiny_cfg("gaussian", "loop.generations=5", "tracking.keep_checkpoints=1")
    assert [g for g in range(6) if tracking.keeps_checkpoint(every, g)] == [0, 1, 2, 3, 4, 5]
    ends = tiny_cfg("gaussian", "loop.generations=5", "tracking.keep_checkpoints=0")
    assert [g for g in range(6) if tracking.keeps_checkpoint(ends, g)] == [0, 5]
    off = tiny_cfg("gaussian", "loop.generations=5", "tracking.log_checkpoints=false")
    assert not any(tracking.keeps_checkpoint(off, g) for g in range(6))
    with pytest.raises(ConfigError, match="tracking.keep_checkpoints must be a whole number >= 0"):
        tiny_cfg("gaussian", "tracking.keep_checkpoints=-1")
