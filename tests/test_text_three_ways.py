"""A reduced ``tinytext-lm`` run three ways (issue 16, item 4): ``autophagy run``, ``dvc repro`` and
Kubeflow's ``kfp.local`` (``autophagy pipeline submit --local``) give every generation's
``metrics.json`` exactly alike, but for the ``*_seconds`` timings.

Exactly, MAUVE included: each way computes every metric from the same bytes (the corpus, the
tokenizer, the seeded training and per-row sampling), and MAUVE's PCA and k-means (faiss) take a
seed derived from the run's options, recorded in ``mauve_settings``. All three run on one thread
(``OMP_NUM_THREADS=1``: torch, faiss and BLAS sum in the same order; ``kfp.local`` runs two tasks
at once on a shared two-core machine anyway).

The ``autophagy run`` result is computed once per module and compared with ``dvc repro`` in a
fresh git + DVC project (``autophagy dvc-params`` writes its ``params.yaml`` and ``dvc.yaml``) and
with the runs of ``kfp.local`` (the report run's hand-off names the run directory).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from small_configs import SMALL_TEXT

from autophagy.config import format_lambda, load_config
from autophagy.layout import PERPLEXITY_SAMPLES_FILE, RunLayout

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tinytext-lm.yaml"
BIN = Path(sys.executable).parent
IMAGE = "registry.example.com/autophagy:test"
NAME = "tinytext-lm"
#: The small causal LM of tests/test_every_config.py, two lambdas, one seed, two generations after generation 0.
REDUCED = [
    *SMALL_TEXT,
    "train.device=cpu",
    "loop.lambdas=[0, inf]",
    "loop.seeds=[0]",
    "loop.generations=2",
]
LAMBDAS = (0.0, math.inf)
GENERATIONS = [(None, 0)] + [(lam, g) for lam in LAMBDAS for g in (1, 2)]
#: the text metrics every generation must have, finite
KEY_METRICS = ("perplexity_test", "gen0_ppl_q50", "mauve_test", "fd_test", "distinct_2", "rare_coverage_test")
#: kfp.local runs every task as a fresh interpreter (torch, transformers, MLflow imported each time): one
#: generation after generation 0 keeps it near two minutes; its generations 0 and 1 are compared with those of
#: ``autophagy run`` (every seed of a generation comes from the chain's seed, not from loop.generations).
KFP = ["loop.generations=1", "tracking.enabled=true", "cluster.window=1"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _sets(overrides: list[str]) -> list[str]:
    return [arg for s in overrides for arg in ("-S", s)]


def _env(root: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **ONE_THREAD,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "AUTOPHAGY_CACHE_DIR": str(root / ".cache"),
        "AUTOPHAGY_PROGRESS": "0",
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        **extra,
    }


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    return done


def _metrics(layout: RunLayout, lam, generation: int) -> dict:
    return json.loads((layout.generation(lam, 0, generation) / "metrics.json").read_text())


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.endswith("_seconds")}


def _check_text_outputs(layout: RunLayout, report_dir: Path, generations=GENERATIONS) -> None:
    """The text-specific outputs exist and the key metrics are finite, at every generation."""
    for lam, generation in generations:
        directory = layout.generation(lam, 0, generation)
        assert (directory / PERPLEXITY_SAMPLES_FILE).is_file(), directory
        metrics = _metrics(layout, lam, generation)
        assert metrics["generation"] == generation and metrics["n_samples"] == 32
        assert metrics["lambda"] == (None if lam is None else format_lambda(lam))
        for key in KEY_METRICS:
            value = metrics[key]
            assert isinstance(value, (int, float)) and math.isfinite(value), (lam, generation, key, value)
        assert 1 < metrics["perplexity_test"] and 0 < metrics["mauve_test"] <= 1
        assert 0 <= metrics["rare_coverage_test"] <= 1 and 0 <= metrics["distinct_2"] <= 1
    assert PERPLEXITY_SAMPLES_FILE == "perplexity_samples_gen0.npy"
    assert (report_dir / "perplexity_tails.png").is_file(), sorted(p.name for p in report_dir.iterdir())


def _same_as_run(reference: RunLayout, ours: RunLayout, way: str, generations=GENERATIONS) -> None:
    for lam, generation in generations:
        theirs, mine = _metrics(reference, lam, generation), _metrics(ours, lam, generation)
        differ = sorted(k for k in set(_untimed(theirs)) | set(_untimed(mine)) if theirs.get(k) != mine.get(k))
        assert not differ, (way, lam, generation, {k: (theirs.get(k), mine.get(k)) for k in differ})


@pytest.fixture(scope="module")
def autophagy_run(tmp_path_factory) -> RunLayout:
    """``autophagy run`` of the reduced config on one thread: its run directory."""
    root = tmp_path_factory.mktemp("run")
    started = time.perf_counter()
    _run(
        [
            str(BIN / "autophagy"),
            "run",
            "--config",
            str(CONFIG),
            "--root",
            str(root / "runs"),
            *_sets([*REDUCED, "tracking.enabled=false"]),
        ],
        root,
        _env(root),
    )
    print(f"autophagy run: {time.perf_counter() - started:.0f} s")
    layout = RunLayout(root / "runs" / NAME)
    _check_text_outputs(layout, layout.root / "report")
    return layout


@pytest.mark.slow
def test_autophagy_run_and_dvc_repro_agree(autophagy_run, tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    env = _env(root)
    _run(["git", "init", "-q"], root, env)
    _run([str(BIN / "dvc"), "init", "-q"], root, env)
    _run(
        [
            str(BIN / "autophagy"),
            "dvc-params",
            "--config",
            str(CONFIG),
            *_sets([*REDUCED, "tracking.enabled=false"]),
            "--out",
            "params.yaml",
        ],
        root,
        env,
    )
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "reduced tinytext-lm"], root, env)
    started = time.perf_counter()
    done = _run([str(BIN / "dvc"), "repro"], root, env)
    print(f"dvc repro: {time.perf_counter() - started:.0f} s")
    stages = [line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage")]
    assert stages[:2] == ["prepare", "features"] and stages[-1] == "report", stages
    assert {"gen-000@0", "gen-001@0-0", "gen-002@0-0", "gen-001@inf-0", "gen-002@inf-0"} <= set(stages), stages

    layout = RunLayout(root / "runs" / NAME)
    _check_text_outputs(layout, root / "runs" / f"{NAME}-report")
    _same_as_run(autophagy_run, layout, "dvc repro")
    assert "up to date" in _run([str(BIN / "dvc"), "status"], root, env).stdout


@pytest.mark.slow
def test_autophagy_run_and_kfp_local_agree(autophagy_run, tmp_path, tracking_uri, monkeypatch):
    from autophagy.pipelines import cli_submit

    from autophagy.tracking import Tracker

    for key, value in ONE_THREAD.items():
        monkeypatch.setenv(key, value)  # the tasks are subprocesses of this interpreter, with its environment
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # the tasks' working directory too: MLflow's default artifact root is ./mlruns
    lines: list[str] = []
    started = time.perf_counter()

    def log(line: str) -> None:
        lines.append(line)
        print(f"{time.perf_counter() - started:5.0f} s {line}")

    summary = cli_submit(
        None,
        str(CONFIG),
        [*REDUCED, *KFP],
        image=IMAGE,
        local_root=tmp_path / "kfp",
        log=log,
    )
    print(f"kfp.local: {summary} in {time.perf_counter() - started:.0f} s")
    # data, generation 0, generation 1 of each lambda, the report
    assert summary.startswith(f"{NAME}: 5 KFP runs finished (5 started)"), (summary, lines[-20:])

    cfg = load_config(CONFIG, [*REDUCED, *KFP])
    run_dir = Path(Tracker(cfg, tracking_uri).handoffs()["report"]["uris"]["run_dir"]) / NAME
    layout = RunLayout(run_dir)
    first = [(lam, g) for lam, g in GENERATIONS if g <= 1]
    _check_text_outputs(layout, run_dir / "report", first)
    assert not layout.generation(math.inf, 0, 2).exists()
    _same_as_run(autophagy_run, layout, "kfp.local", first)
