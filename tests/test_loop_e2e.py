"""End to end: a tiny `autophagy run` of the digits experiment, its files, report and MLflow runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TINY = [
    "train.gen0_budget_kimg=3",
    "train.budget_kimg=1",
    "train.batch_size=64",
    "sample.n_eval=200",
    "loop.generations=2",
    "loop.lambdas=[0,0.5,inf]",
    "loop.seeds=[0,1]",
    "evaluate.max_reference=300",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    env = {
        "PATH": str(BIN) + ":/usr/bin:/bin",
        "HOME": str(root),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "AUTOPHAGY_CACHE_DIR": str(root / "cache"),
    }
    args = [str(BIN / "autophagy"), "run", "--root", str(root / "runs"), *sum((["-S", s] for s in TINY), [])]
    first = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    return root, first.stdout, again.stdout


@pytest.mark.slow
def test_layout_metrics_and_dataset_composition(finished_run):
    root, log, _ = finished_run
    exp = root / "runs" / "digits-edm"
    for seed in (0, 1):
        assert (exp / f"seed-{seed}/gen-000/metrics.json").is_file()
        for lam in ("0", "0.5", "inf"):
            for g in (1, 2):
                gen = exp / f"lam-{lam}/seed-{seed}/gen-{g:03d}"
                metrics = json.loads((gen / "metrics.json").read_text())
                assert metrics["generation"] == g and metrics["lambda"] == lam and metrics["seed"] == seed
                assert metrics["fd_train"] >= 0 and 0 <= metrics["precision_train"] <= 1
                train_set = json.loads((gen / "train_set/dataset.json").read_text())
                origins = {}
                for shard in train_set["shards"]:
                    origins[shard["origin"]["type"]] = origins.get(shard["origin"]["type"], 0) + shard["rows"]
                expected = {"0": {"real": 1497}, "0.5": {"real": 1497, "synthetic": 748}, "inf": {"synthetic": 1497}}[
                    lam
                ]
                assert origins == expected
                assert (gen / "samples.png").is_file()
    assert (exp / "config.json").is_file()
    assert "gen-002 seed=1 lambda=inf" in log


@pytest.mark.slow
def test_a_second_run_resumes_and_skips_everything(finished_run):
    _, _, again = finished_run
    assert again.count("complete, skipped") == 2 * (1 + 3 * 2)
    assert "prepare:" not in again


@pytest.mark.slow
def test_report_has_table_and_figures(finished_run):
    root, _, _ = finished_run
    report = root / "runs" / "digits-edm" / "report"
    text = (report / "report.md").read_text()
    assert "| inf | 2 | 2 |" in text and "| 0.5 | 2 | 2 |" in text
    for name in ("fd_train.png", "precision_train.png", "recall_train.png", "summary.csv", "curves.csv"):
        assert (report / name).stat().st_size > 0
    rows = (report / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 3  # header + (3 lambdas x generations 0..2)


@pytest.mark.slow
def test_mlflow_parent_and_child_runs(finished_run):
    root, _, _ = finished_run
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("digits-edm")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("autophagy.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("autophagy.role") == "chain"]
    assert len(parents) == 1 and len(children) == 6
    parent_id = parents[0].info.run_id
    assert all(c.data.tags["mlflow.parentRunId"] == parent_id for c in children)
    assert {(c.data.tags["autophagy.lambda"], c.data.tags["autophagy.seed"]) for c in children} == {
        (lam, seed) for lam in ("0", "0.5", "inf") for seed in ("0", "1")
    }
    child = next(
        c for c in children if c.data.tags["autophagy.lambda"] == "inf" and c.data.tags["autophagy.seed"] == "1"
    )
    assert child.data.params["lambda"] == "inf" and child.data.params["train.budget_kimg"] == "1.0"
    history = client.get_metric_history(child.info.run_id, "fd_train")
    assert sorted({m.step for m in history}) == [0, 1, 2]
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert "images" in artifacts and "checkpoints" not in artifacts
    # kept checkpoints are the chain's Logged Models: the last generation here (generation 0 went to lambda 0's chain)
    models = client.search_logged_models(
        [experiment.experiment_id], filter_string=f"source_run_id = '{child.info.run_id}'"
    )
    assert [m.tags["autophagy.generation"] for m in models] == ["2"]
    grids = [a.path for a in client.list_artifacts(child.info.run_id, "images") if a.path.endswith(".png")]
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in grids if "/samples+" in p) == [0, 1, 2]
    assert "report" in {a.path for a in client.list_artifacts(parent_id)}
