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
    f"name={EXPERIMENT}",
    "data.source=gaussian",
    "data.dim=2",
    "data.n_train=20",
    "data.n_test=200",
    "model.family=gaussian",
    "evaluate.features=raw",
    "sample.n_eval=20",
    "loop.lambdas=[inf]",
    "loop.seeds=[0]",
    "loop.generations=3",
    "loop.collapse_metric=swd_train",
    "loop.collapse_ratio=1.0001",
    "loop.stop_on_collapse=true",
    "tracking.enabled=false",
]
GEN1 = f"*/{EXPERIMENT}/lam-inf/seed-0/gen-001"
#: Every boundary between the writes of generation 1: after its record is opened, on either side
#: of each step's record update, and inside evaluate after the grid and after the tracking.
GEN1_POINTS = [
    "start",
    "mix:returned",
    "mix:recorded",
    "train:returned",
    "train:recorded",
    "sample:returned",
    "sample:recorded",
    "evaluate:grid",
    "evaluate:tracked",
    "evaluate:returned",
    "evaluate:recorded",
]
POINTS = [f"{GEN1}/{point}" for point in GEN1_POINTS] + [
    f"{GEN1}/publish:samples",  # inside atomic.staging_dir, before the rename: leaves a staging directory
    f"*/{EXPERIMENT}/prepare:returned",
    f"*/{EXPERIMENT}/features:recorded",
    f"*/{EXPERIMENT}/seed-0/gen-000/train:returned",
    f"*/{EXPERIMENT}/seed-0/gen-000/evaluate:tracked",
]
# Values that differ between two runs by design: timings, and the id each run directory draws for
# its MLflow runs (mlflow_execution.json: a new directory gets new runs, a resumed one keeps its own).
PER_RUN = ("evaluate_seconds", "execution")


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
            files[str(path.relative_to(root))] = {k: v for k, v in json.loads(text).items() if k not in PER_RUN}
        elif path.suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(text.decode())))
            files[str(path.relative_to(root))] = [{k: v for k, v in r.items() if k not in PER_RUN} for r in rows]
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
    [chain] = [
        r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("autophagy.role") == "chain"
    ]
    assert chain.data.tags["autophagy.collapsed"] == "true"
    assert chain.data.tags["autophagy.collapsed_at_generation"] == "1"
    steps = {m.step for m in client.get_metric_history(chain.info.run_id, "swd_train")}
    assert steps == {0, 1}


@pytest.mark.slow
def test_a_redo_killed_while_it_removes_old_outputs_resumes_to_a_fresh_run(tmp_path, tmp_path_factory):
    """--redo-changed takes the outputs made with the old options away (rename, then delete): killed
    between the two, the rerun clears the renamed copy and ends as a run made with the new options."""
    assert autophagy_run(tmp_path).returncode == 0
    changed = ("-S", "model.estimator=unbiased", "--redo-changed")
    killed = autophagy_run(tmp_path, *changed, kill_at=f"{GEN1}/remove:model")
    assert killed.returncode == -signal.SIGKILL
    gen1 = tmp_path / EXPERIMENT / "lam-inf" / "seed-0" / "gen-001"
    left = [p.name for p in gen1.iterdir() if LEFTOVER.fullmatch(p.name)]
    assert len(left) == 1 and left[0].startswith(".model.old-") and not (gen1 / "model").exists()
    resumed = autophagy_run(tmp_path, *changed)
    assert resumed.returncode == 0, resumed.stderr
    assert "removed 1 leftover(s) of killed runs" in resumed.stdout
    fresh = tmp_path_factory.mktemp("fresh")
    assert autophagy_run(fresh, "-S", "model.estimator=unbiased").returncode == 0
    assert outcome(tmp_path) == outcome(fresh)


@pytest.mark.slow
def test_a_dvc_stage_killed_mid_generation_is_not_recorded_and_reruns_to_the_same_outputs(tmp_path_factory):
    """`dvc repro` with a generation stage SIGKILLed after its metrics and grid (before its record):
    DVC records none of the stage's outputs, the next `dvc repro` runs it again, and the outputs
    and metrics end as in an uninterrupted `dvc repro`."""
    repo = Path(__file__).resolve().parents[1]
    options = [s for s in OPTIONS if not s.startswith(("loop.stop_on_collapse", "loop.generations"))]
    options.append("loop.generations=2")

    def project(name: str) -> tuple[Path, dict[str, str]]:
        root = tmp_path_factory.mktemp(name)
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "AUTOPHAGY_CACHE_DIR": str(root / ".cache"),
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }
        env.pop("AUTOPHAGY_KILL_AT", None)
        for name_ in ("dvc.yaml", ".gitignore"):
            (root / name_).write_bytes((repo / name_).read_bytes())
        subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
        subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True, env=env)
        subprocess.run(
            [str(BIN / "autophagy"), "dvc-params", *sum((["-S", s] for s in options), []), "--out", "params.yaml"],
            cwd=root,
            check=True,
            env=env,
            capture_output=True,
        )
        return root, env

    def repro(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900
        )

    reference, env = project("reference")
    assert repro(reference, env).returncode == 0
    killed_root, env = project("killed")
    stage = "gen-001@inf-0"
    done = repro(killed_root, {**env, "AUTOPHAGY_KILL_AT": f"{GEN1}/evaluate:tracked"})
    assert done.returncode != 0 and f"failed to reproduce '{stage}'" in done.stderr.lower() + done.stdout.lower()
    lock = (killed_root / "dvc.lock").read_text() if (killed_root / "dvc.lock").is_file() else ""
    assert stage not in lock  # none of the killed stage's outputs is recorded as complete
    again = repro(killed_root, env)
    assert again.returncode == 0, again.stderr
    assert f"Running stage '{stage}'" in again.stdout
    assert (
        "up to date"
        in subprocess.run([str(BIN / "dvc"), "status"], cwd=killed_root, env=env, capture_output=True, text=True).stdout
    )
    for relative in ("seed-0/gen-000", "lam-inf/seed-0/gen-001", "lam-inf/seed-0/gen-002"):
        for name in ("metrics.json", "generation.json"):
            ran = json.loads((killed_root / "runs" / EXPERIMENT / relative / name).read_text())
            ref = json.loads((reference / "runs" / EXPERIMENT / relative / name).read_text())
            assert {k: v for k, v in ran.items() if k not in PER_RUN} == {
                k: v for k, v in ref.items() if k not in PER_RUN
            }
