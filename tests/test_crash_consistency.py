"""Crash consistency: `autophagy run` SIGKILLed at every step boundary, then run again, ends exactly
where an uninterrupted run ends (metrics, collapse verdicts, which generations exist, report).

The kills are injected, not timed: ``$AUTOPHAGY_KILL_AT`` names a point (:func:`autophagy.atomic.kill_point`)
at which the process sends itself SIGKILL. The experiment is the issue's: the closed-form Gaussian
family with ``loop.stop_on_collapse``, whose fully synthetic chain collapses at generation 1, so a
lost verdict would show as a generation 2 the uninterrupted run never makes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from autophagy.atomic import LEFTOVER

BIN = Path(sys.executable).parent
EXPERIMENT = "crash"
OPTIONS = [
    f"name={EXPERIMENT}", "data.source=gaussian", "data.dim=2", "data.n_train=20", "data.n_test=200",
    "model.family=gaussian", "evaluate.features=raw", "sample.n_eval=20", "loop.lambdas=[inf]", "loop.seeds=[0]",
    "loop.generations=3", "loop.collapse_metric=swd_train", "loop.collapse_ratio=1.0001",
    "loop.stop_on_collapse=true", "tracking.enabled=false",
]
GEN1 = f"*/{EXPERIMENT}/lam-inf/seed-0/gen-001"
#: Every boundary between the writes of generation 1: after its record is opened, on either side
#: of each step's record update, and inside evaluate after the grid and after the tracking.
GEN1_POINTS = ["start", "mix:returned", "mix:recorded", "train:returned", "train:recorded", "sample:returned",
               "sample:recorded", "evaluate:grid", "evaluate:tracked", "evaluate:returned", "evaluate:recorded"]
POINTS = [f"{GEN1}/{point}" for point in GEN1_POINTS] + [
    f"{GEN1}/publish:samples",  # inside atomic.staging_dir, before the rename: leaves a staging directory
    f"*/{EXPERIMENT}/prepare:returned", f"*/{EXPERIMENT}/features:recorded",
    f"*/{EXPERIMENT}/seed-0/gen-000/train:returned", f"*/{EXPERIMENT}/seed-0/gen-000/evaluate:tracked",
]
TIMING = ("evaluate_seconds",)


def autophagy_run(parent: Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "AUTOPHAGY_CACHE_DIR": str(parent / "cache")}
    env.pop("AUTOPHAGY_KILL_AT", None)
    if kill_at is not None:
        env["AUTOPHAGY_KILL_AT"] = kill_at
    args = [str(BIN / "autophagy"), "run", "--root", str(parent), *sum((["-S", s] for s in OPTIONS), []), *extra]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def outcome(parent: Path) -> dict[str, object]:
    """Every file of the run directory (locks aside) by content: JSON without timings, CSV without
    timing columns, anything else by sha256; the run directory's own path is taken out."""
    root = parent / EXPERIMENT
    files: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name == ".lock":
            continue
        text = path.read_bytes().replace(str(parent).encode(), b"PARENT")
        if path.suffix == ".json":
            files[str(path.relative_to(root))] = {k: v for k, v in json.loads(text).items() if k not in TIMING}
        elif path.suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(text.decode())))
            files[str(path.relative_to(root))] = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
        else:
            files[str(path.relative_to(root))] = hashlib.sha256(text).hexdigest()
    return files


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    parent = tmp_path_factory.mktemp("uninterrupted")
    done = autophagy_run(parent)
    assert done.returncode == 0, done.stderr
    result = outcome(parent)
    assert result["lam-inf/seed-0/gen-001/metrics.json"]["collapsed"] is True  # the chain stops at generation 1 ...
    assert not any(name.startswith("lam-inf/seed-0/gen-002") for name in result)  # ... and makes no generation 2
    return result


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_at_a_step_boundary_resumes_to_the_uninterrupted_result(point, uninterrupted, tmp_path):
    killed = autophagy_run(tmp_path, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, f"the run was not killed at {point}:\n{killed.stdout}\n{killed.stderr}"
    resumed = autophagy_run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert outcome(tmp_path) == uninterrupted
    assert not [p for p in tmp_path.rglob("*") if LEFTOVER.fullmatch(p.name)]  # what the kill left is cleared


def test_the_kill_lands_in_the_window_the_issue_describes(uninterrupted, tmp_path):
    """Killed after generation 1's metrics.json is written: the generation is not complete yet (its
    record says evaluate is not done), so the rerun evaluates it again instead of skipping it, stops
    the chain there and ends as the uninterrupted run."""
    killed = autophagy_run(tmp_path, kill_at=f"{GEN1}/evaluate:returned")
    assert killed.returncode == -signal.SIGKILL
    gen1 = tmp_path / EXPERIMENT / "lam-inf" / "seed-0" / "gen-001"
    assert (gen1 / "metrics.json").is_file()
    assert json.loads((gen1 / "generation.json").read_text())["done"] == ["mix", "train", "sample"]
    resumed = autophagy_run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "gen-001 seed=0 lambda=inf: complete, skipped" not in resumed.stdout
    assert "COLLAPSED" in resumed.stdout and "gen-002" not in resumed.stdout
    assert json.loads((gen1 / "generation.json").read_text())["done"] == ["mix", "train", "sample", "evaluate"]
    assert outcome(tmp_path) == uninterrupted


@pytest.mark.slow
def test_tracking_is_not_lost_by_a_kill_between_the_grid_and_mlflow(tmp_path, tracking_uri):
    """With MLflow on, a kill after the grid and before the tracking calls: the rerun logs generation 1
    and tags the chain collapsed, as the uninterrupted run does."""
    from mlflow import MlflowClient

    killed = autophagy_run(tmp_path, "-S", "tracking.enabled=true", kill_at=f"{GEN1}/evaluate:grid")
    assert killed.returncode == -signal.SIGKILL
    resumed = autophagy_run(tmp_path, "-S", "tracking.enabled=true", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    client = MlflowClient(tracking_uri=tracking_uri)
    [experiment] = [e for e in client.search_experiments() if e.name == EXPERIMENT]
    [chain] = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("autophagy.role") == "chain"]
    assert chain.data.tags["autophagy.collapsed"] == "true"
    assert chain.data.tags["autophagy.collapsed_at_generation"] == "1"
    steps = {m.step for m in client.get_metric_history(chain.info.run_id, "swd_train")}
    assert steps == {0, 1}
