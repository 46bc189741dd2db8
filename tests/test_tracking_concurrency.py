"""Several processes opening the same local MLflow store at once (one ``autophagy run`` per seed,
as the README suggests) create its tables, the experiment and the parent run exactly once."""

from __future__ import annotations

import multiprocessing

import pytest

from autophagy.config import load_config

PROCESSES = 3


def open_runs(uri: str, seed: int) -> tuple[str, str]:
    from autophagy.tracking import Tracker

    tracker = Tracker(load_config(None, ["loop.lambdas=[0, inf]", f"loop.seeds=[{seed}]"]), uri)
    return tracker.parent_run(), tracker.child_run(0.0, 0)  # every process asks for the same chain too


@pytest.mark.slow
def test_parallel_processes_share_one_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        opened = pool.starmap(open_runs, [(uri, 0)] * PROCESSES)
    parents, children = {p for p, _ in opened}, {c for _, c in opened}
    assert len(parents) == 1 and len(children) == 1, opened

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "digits-edm"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["autophagy.role"] for r in runs) == ["chain", "parent"]
