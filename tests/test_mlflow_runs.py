"""MLflow runs as MLflow users read them (issue 14, item 2; retention of item 3): runs end with a
status and an end time, one execution (run directory) has its own runs, provenance tags, only
curves as metrics, sample grids as images with steps, summary metrics on the parent, the
experiment's kind tag, and ``tracking.keep_checkpoints``.

Everything is read back through MLflow's own client from a real SQLite store, as the UI reads it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from autophagy import loop, report, tracking
from autophagy.config import ConfigError
from autophagy.models.checkpoint import load_checkpoint
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

    # checkpoints: generation 0 (in the first chain), every 2nd and the last, as Logged Models of the
    # chain's run, linked to it at step = generation; none as plain run artifacts
    models = client.search_logged_models([experiment.experiment_id])
    kept = {(m.tags["autophagy.lambda"], int(m.tags["autophagy.generation"])) for m in models}
    assert kept == {("0.5", 0), ("0.5", 2), ("0.5", 3), ("inf", 2), ("inf", 3)}
    assert {(str(m.status), m.model_type) for m in models} == {("READY", "autophagy-checkpoint")}
    for lam, run in chains.items():
        linked = {(o.model_id, o.step) for o in client.get_run(run.info.run_id).outputs.model_outputs}
        own = {(m.model_id, int(m.tags["autophagy.generation"])) for m in models if m.source_run_id == run.info.run_id}
        assert linked == own and {g for _, g in own} == {g for chain, g in kept if chain == lam}
        assert not client.list_artifacts(run.info.run_id, "checkpoints")
    # a model loads as a pyfunc and draws the rows the checkpoint in the run directory draws
    [last_inf] = [m for m in models if m.tags["autophagy.lambda"] == "inf" and m.tags["autophagy.generation"] == "3"]
    sampler = mlflow.pyfunc.load_model(f"models:/{last_inf.model_id}")
    drawn = sampler.predict({"n": 5, "start": 2}, params={"seed": 7})
    direct = load_checkpoint(first.generation(float("inf"), 0, 3) / "model", with_train_state=False)
    np.testing.assert_array_equal(drawn, direct.sample(5, 7, start=2))
    assert sampler.predict(5, params={"seed": 7}).shape == (5, *direct.item_shape)
    with pytest.raises(ValueError, match="row count"):
        sampler.predict({"rows": 5})
    # the checkpoint directory comes back whole (resume or fine-tune from it)
    fetched = Path(
        mlflow.artifacts.download_artifacts(f"{last_inf.artifact_location}/checkpoint", dst_path=str(tmp_path / "dl"))
    )
    source = first.generation(float("inf"), 0, 3) / "model"
    assert sorted(p.name for p in fetched.iterdir()) == sorted(p.name for p in source.iterdir())
    assert all((fetched / p.name).read_bytes() == p.read_bytes() for p in source.iterdir())

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


@pytest.mark.parametrize("no_checkout", ["no git on PATH", "not a git checkout"])
def test_inside_the_image_runs_carry_the_commit_it_was_built_from(monkeypatch, tmp_path, no_checkout):
    """The image has neither git nor a checkout; its Dockerfile sets AUTOPHAGY_GIT_COMMIT."""
    if no_checkout == "no git on PATH":
        monkeypatch.setenv("PATH", str(tmp_path))
    else:
        monkeypatch.setenv("GIT_DIR", str(tmp_path / "no-repository"))
    monkeypatch.delenv(tracking.IMAGE_COMMIT_ENV, raising=False)
    assert "mlflow.source.git.commit" not in tracking.provenance()
    monkeypatch.setenv(tracking.IMAGE_COMMIT_ENV, "unknown")  # the Dockerfile's default: no commit given
    assert "mlflow.source.git.commit" not in tracking.provenance()
    monkeypatch.setenv(tracking.IMAGE_COMMIT_ENV, "0123abc")
    assert tracking.provenance()["mlflow.source.git.commit"] == "0123abc"


def test_a_checkout_names_its_own_commit_over_the_image_variable(monkeypatch):
    monkeypatch.setenv(tracking.IMAGE_COMMIT_ENV, "0123abc")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(tracking.__file__).parent, capture_output=True, text=True
    ).stdout.strip()
    assert len(head) == 40 and tracking.provenance()["mlflow.source.git.commit"] == head


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
