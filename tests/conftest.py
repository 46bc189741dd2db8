"""Shared fixtures: tiny, fast experiment configs and an isolated environment for every test.

Every test runs with

* ``AUTOPHAGY_CACHE_DIR`` in a temporary folder (reference-feature caches never touch ``~/.cache``);
* ``MLFLOW_TRACKING_URI`` pointing at a temporary SQLite file, so nothing ever writes ``./mlflow.db``
  or reaches a server (tests about tracking read the same URI back from ``tracking_uri``);
* ``MLFLOW_DISABLE_TELEMETRY=true`` and ``DVC_NO_ANALYTICS=1``.

``tiny_cfg(preset, *overrides)`` builds a validated :class:`ExperimentConfig` for fast runs on CPU:
budgets of a few thousand images, 200 evaluation samples, small networks, ``raw`` features
(the digits-net extractor takes ~20 s to train, and has its own tests) and tracking off unless a
test turns it on with ``"tracking.enabled=true"``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from autophagy.config import ExperimentConfig, load_config

#: ``-S``-style overrides of each preset. Keep them small: the whole suite shares two CPU cores.
PRESETS: dict[str, tuple[str, ...]] = {
    # sklearn digits (uint8 [N, 8, 8, 1]) + EDM with the residual-MLP denoiser.
    "digits": (
        "name=tiny-digits",
        "data.source=digits",
        "data.n_train=64",
        "data.n_test=32",
        "model.family=edm",
        "model.network=mlp",
        "model.model_channels=32",
        "model.num_blocks=1",
        "model.num_steps=4",
        "train.gen0_budget_kimg=2",
        "train.budget_kimg=1",
        "train.batch_size=32",
        "train.ema_halflife_kimg=0.5",
        "train.device=cpu",
        "sample.n_eval=200",
        "sample.batch_size=256",
        "evaluate.features=raw",
        "evaluate.grid_size=16",
        "loop.lambdas=[0, 1, inf]",
        "loop.generations=1",
        "tracking.enabled=false",
    ),
    # two moons (float32 [N, 2]) + a one-transform neural spline flow.
    "toy": (
        "name=tiny-toy",
        "data.source=toy2d",
        "data.name=moons",
        "data.n_train=128",
        "data.n_test=64",
        "model.family=flow",
        "model.transforms=1",
        "model.hidden_features=[16]",
        "model.bins=4",
        "train.gen0_budget_kimg=2",
        "train.budget_kimg=1",
        "train.batch_size=64",
        "train.ema_halflife_kimg=0.25",
        "train.device=cpu",
        "sample.n_eval=200",
        "evaluate.features=raw",
        "loop.lambdas=[0, 1, inf]",
        "loop.generations=1",
        "tracking.enabled=false",
    ),
    # d-dimensional Gaussian data + the closed-form Gaussian family.
    "gaussian": (
        "name=tiny-gaussian",
        "data.source=gaussian",
        "data.dim=2",
        "data.n_train=100",
        "data.n_test=50",
        "model.family=gaussian",
        "train.budget_kimg=1",
        "train.device=cpu",
        "sample.n_eval=200",
        "evaluate.features=raw",
        "loop.lambdas=[0, 1, inf]",
        "loop.generations=1",
        "tracking.enabled=false",
    ),
}


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    """No test writes outside its temporary folders or phones home."""
    root = tmp_path_factory.mktemp("env")
    monkeypatch.setenv("AUTOPHAGY_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.delenv("AUTOPHAGY_PARENT_RUN_ID", raising=False)
    monkeypatch.delenv("AUTOPHAGY_RUN_TAGS", raising=False)
    yield


@pytest.fixture
def tracking_uri() -> str:
    """The temporary MLflow tracking URI of this test (a SQLite file)."""
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture(scope="session")
def tiny_cfg():
    """Factory: ``tiny_cfg("digits" | "toy" | "gaussian", *overrides) -> ExperimentConfig``."""

    def make(preset: str = "digits", *overrides: str) -> ExperimentConfig:
        return load_config(None, [*PRESETS[preset], *overrides])

    return make


@pytest.fixture(scope="session")
def autophagy_exe() -> str:
    """The ``autophagy`` console script of the interpreter running the tests (the venv's)."""
    exe = Path(sys.executable).with_name("autophagy")
    assert exe.is_file(), f"the autophagy console script is not installed beside {sys.executable}"
    return str(exe)


@pytest.fixture(scope="module")
def one_thread():
    """One BLAS/OpenMP/torch thread for a module: two threads per library thrash on a shared 2-core machine."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's bundled MKL is invisible to threadpoolctl
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
