"""The DVC pipeline for real: `dvc repro` of a tiny experiment in a temporary git repository.

Checks that every generation's training set, model, samples and metrics are stage outputs
recorded in dvc.lock, that `dvc repro` resumes where it stopped, that `dvc metrics show` and
`dvc plots show --json` give the per-generation curves, and that `dvc exp run -S` changes an
option. Also that the committed params.yaml is exactly what `autophagy dvc-params` derives from
configs/digits-edm.yaml, so the two cannot drift.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autophagy.config import load_config
from autophagy.dvc_params import params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = [
    "train.gen0_budget_kimg=2", "train.budget_kimg=1", "train.batch_size=64", "sample.n_eval=150",
    "loop.generations=2", "loop.lambdas=[0,inf]", "tracking.enabled=false", "evaluate.max_reference=300",
]


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_committed_params_match_the_default_config():
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert committed == params(load_config(REPO / "configs" / "digits-edm.yaml"))


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvc")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "AUTOPHAGY_CACHE_DIR": str(root / ".cache"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copy(REPO / ".gitignore", root)
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    run(["git", "init", "-q"], root, env)
    run([str(BIN / "autophagy"), "dvc-params", "--config", str(REPO / "configs" / "digits-edm.yaml"),
         *sum((["-S", s] for s in TINY), []), "--out", "params.yaml"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "tiny experiment"], root, env)
    return root, env


@pytest.mark.slow
def test_dvc_repro_versions_every_generation_and_resumes(dvc_repo):
    root, env = dvc_repo
    dvc = str(BIN / "dvc")
    # Stop part-way: only the chain of lambda = 0 up to generation 1.
    run([dvc, "repro", "gen1@0-0"], root, env)
    assert (root / "runs/digits-edm/lam-0/seed-0/gen-001/metrics.json").is_file()
    assert not (root / "runs/digits-edm/lam-inf").exists()

    full = run([dvc, "repro"], root, env).stdout
    # Resumed: what was done is not run again.
    for done in ("prepare", "features", "gen0@0", "gen1@0-0"):
        assert f"Stage '{done}' didn't change, skipping" in full, full
    assert "Running stage 'gen@inf-0-step0'" in full

    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for lam in ("0", "inf"):
        stage = lock[f"gen@{lam}-0-step0"]
        outs = {o["path"] for o in stage["outs"]}
        base = f"runs/digits-edm/lam-{lam}/seed-0/gen-002"
        assert {f"{base}/train_set", f"{base}/model", f"{base}/samples", f"{base}/metrics.json"} <= outs
        assert all("md5" in o for o in stage["outs"])
        deps = {d["path"] for d in stage["deps"]}
        assert f"runs/digits-edm/lam-{lam}/seed-0/gen-001/model" in deps

    metrics = json.loads(run([dvc, "metrics", "show", "--json"], root, env).stdout)
    files = next(iter(metrics.values()))["data"]
    shown = {path: entry["data"] for path, entry in files.items()}
    assert len(shown) == 5  # generation 0 + 2 lambdas x 2 generations
    assert all(d["fd_train"] >= 0 and 0 <= d["recall_train"] <= 1 for d in shown.values())
    assert shown["runs/digits-edm/lam-inf/seed-0/gen-002/metrics.json"]["generation"] == 2
    manifest = json.loads((root / "runs/digits-edm/lam-inf/seed-0/gen-002/train_set/dataset.json").read_text())
    assert {s["origin"]["type"] for s in manifest["shards"]} == {"synthetic"}

    plots = json.loads(run([dvc, "plots", "show", "--json"], root, env).stdout)["data"]
    assert "fd_train" in plots
    points = plots["fd_train"][0]["content"]["data"]["values"]
    assert {p["lambda"] for p in points} == {"0", "inf"}
    assert sorted({int(p["generation"]) for p in points}) == [0, 1, 2]
    bars = plots["fd_train_last_generation"][0]["content"]["data"]["values"]
    assert sorted((b["lambda"], int(b["generation"])) for b in bars) == [("0", 2), ("inf", 2)]
    for figure in ("fd_train_vs_lambda.png", "samples_across_generations.png"):
        assert plots[f"runs/digits-edm-report/{figure}"][0]["type"] == "image"

    again = run([dvc, "repro"], root, env).stdout
    assert "Running stage" not in again


@pytest.mark.slow
def test_dvc_exp_run_changes_an_option(dvc_repo):
    root, env = dvc_repo
    dvc = str(BIN / "dvc")
    run([dvc, "repro"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "results"], root, env)
    run([dvc, "exp", "run", "-S", "loop.lambdas=['0']", "-S", "train.budget_kimg=0.5"], root, env)
    shown = json.loads(run([dvc, "exp", "show", "--json"], root, env).stdout)
    text = json.dumps(shown)
    assert '"budget_kimg": 0.5' in text
    config = json.loads((root / "runs/digits-edm/lam-0/seed-0/gen-002/model/config.json").read_text())
    assert config["budget_kimg"] == 0.5
