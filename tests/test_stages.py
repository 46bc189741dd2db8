"""The stage functions (prepare, features, train, sample, mix, evaluate) on tiny data: their
documented result keys, their outputs on disk, and MLflow logging at step = generation."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from autophagy import atomic
from autophagy.data.dataset import DatasetError, NewShard, open_dataset, write_dataset
from autophagy.models import ModelError
from autophagy.stages import evaluate, features, mix, prepare, sample, train

TRAIN_KEYS = {
    "train_steps",
    "train_kimg",
    "train_loss",
    "train_seconds",
    "train_images_per_second",
    "resumed_from_kimg",
    "parameters",
    "train_world_size",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, tiny_cfg):
    """prepare -> train gen 0 -> sample, once for the module (the stages are pure: later tests only read)."""
    cfg = tiny_cfg("digits")
    root = tmp_path_factory.mktemp("stages")
    results = {
        "prepare": prepare.run(cfg, root / "data"),
        "train": train.run(cfg, root / "data" / "train", root / "gen-000" / "model", generation=0, seed=0),
        "sample": sample.run(
            cfg, root / "gen-000" / "model", root / "gen-000" / "samples", n=200, seed=0, generation=0
        ),
    }
    return cfg, root, results


def test_prepare(digits_run):
    cfg, root, results = digits_run
    assert results["prepare"] == {"n_train": 64, "n_test": 32, "item_shape": [8, 8, 1], "kind": "image"}
    for split, rows in (("train", 64), ("test", 32)):
        ds = open_dataset(root / "data" / split)
        assert ds.rows == rows and ds.kind == "image"
        assert ds.counts_by_origin() == {"real": rows}
        assert ds.shards[0].origin["split"] == split
        assert ds.provenance["data"]["source"] == "digits"


def test_train_result_and_checkpoint(digits_run):
    cfg, root, results = digits_run
    result = results["train"]
    assert set(result) == TRAIN_KEYS
    assert result["train_kimg"] == pytest.approx(2.016)  # gen0_budget_kimg=2 in whole batches of 32
    assert result["train_steps"] == 63 and result["resumed_from_kimg"] == 0
    assert math.isfinite(result["train_loss"]) and result["parameters"] > 0
    model = root / "gen-000" / "model"
    config = json.loads((model / "config.json").read_text())
    assert config["family"] == "edm" and config["generation"] == 0 and config["lambda"] is None
    assert config["data_hash"] == open_dataset(root / "data" / "train").content_hash
    assert config["train_set_counts"] == {"real": 64}
    assert {"model.safetensors", "ema.safetensors", "config.json"} <= {p.name for p in model.iterdir()}
    assert not any(p.name.startswith(".") for p in (root / "gen-000").iterdir())  # no scratch or staging left


def test_train_is_reproducible_byte_for_byte(digits_run, tmp_path):
    """Same inputs, same checkpoint files: DVC and KFP caches see an unchanged output."""
    cfg, root, _ = digits_run
    train.run(cfg, root / "data" / "train", tmp_path / "model", generation=0, seed=0)
    first = root / "gen-000" / "model"
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in (tmp_path / "model").iterdir())
    for file in first.iterdir():
        assert file.read_bytes() == (tmp_path / "model" / file.name).read_bytes(), file.name


def test_sample_result_and_dataset(digits_run, tmp_path):
    cfg, root, results = digits_run
    assert set(results["sample"]) == {"sample_count", "sample_seconds", "sample_images_per_second"}
    assert results["sample"]["sample_count"] == 200
    ds = open_dataset(root / "gen-000" / "samples")
    assert ds.rows == 200 and ds.kind == "image" and ds.item_shape == (8, 8, 1)
    origin = ds.shards[0].origin
    assert origin["type"] == "synthetic" and origin["generation"] == 0 and origin["seed"] == 0
    # the same (seed, generation) gives the same rows; another generation other rows
    sample.run(cfg, root / "gen-000" / "model", tmp_path / "again", n=50, seed=0, generation=0)
    np.testing.assert_array_equal(open_dataset(tmp_path / "again").load(), ds.load()[:50])
    sample.run(cfg, root / "gen-000" / "model", tmp_path / "other", n=50, seed=0, generation=1)
    assert not np.array_equal(open_dataset(tmp_path / "other").load(), ds.load()[:50])


@pytest.mark.parametrize("lam, real, synthetic", [(0.0, 64, 0), (0.5, 64, 32), (2.0, 64, 128), (math.inf, 0, 64)])
def test_mix(digits_run, tmp_path, lam, real, synthetic):
    cfg, root, _ = digits_run
    result = mix.run(
        cfg, root / "data" / "train", root / "gen-000" / "samples", lam, tmp_path / "train_set", generation=1
    )
    assert result == {"train_set_real": real, "train_set_synthetic": synthetic}
    ds = open_dataset(tmp_path / "train_set")
    assert ds.rows == real + synthetic and ds.provenance["generation"] == 1
    if real:
        assert ds.shards[0].sha256 == open_dataset(root / "data" / "train").shards[0].sha256


def test_train_generation_one_fine_tunes_the_previous_model(digits_run, tmp_path, tiny_cfg):
    cfg, root, _ = digits_run
    mix.run(cfg, root / "data" / "train", root / "gen-000" / "samples", 1.0, tmp_path / "train_set", generation=1)
    previous = root / "gen-000" / "model"
    result = train.run(cfg, tmp_path / "train_set", tmp_path / "model", generation=1, seed=0, lam=1.0, init=previous)
    assert result["train_kimg"] == pytest.approx(1.024)  # budget_kimg=1 for generations >= 1
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["init"] == atomic.sha256_file(previous / "model.safetensors")
    assert config["lambda"] == "1" and config["train_set_counts"] == {"real": 64, "synthetic": 64}
    scratch_cfg = tiny_cfg("digits", "train.init=scratch")
    train.run(scratch_cfg, tmp_path / "train_set", tmp_path / "scratch", generation=1, seed=0, lam=1.0, init=previous)
    assert json.loads((tmp_path / "scratch" / "config.json").read_text())["init"] is None


def test_train_input_errors(digits_run, tmp_path, tiny_cfg):
    cfg, root, _ = digits_run
    vectors = prepare.run(tiny_cfg("gaussian"), tmp_path / "vectors")
    assert vectors["kind"] == "vector"
    with pytest.raises(DatasetError, match="model.family=edm trains on image data"):
        train.run(cfg, tmp_path / "vectors" / "train", tmp_path / "model", generation=0, seed=0)
    write_dataset(tmp_path / "big", [NewShard(origin={"type": "real"}, array=np.zeros((40, 16, 16, 1), np.uint8))])
    with pytest.raises(ModelError, match="shape"):
        train.run(
            cfg, tmp_path / "big", tmp_path / "model", generation=1, seed=0, lam=1.0, init=root / "gen-000" / "model"
        )
    assert not (tmp_path / "model").exists()


METRIC_KEYS = {
    "fd_train",
    "precision_train",
    "recall_train",
    "fd_test",
    "precision_test",
    "recall_test",
    "generation",
    "lambda",
    "seed",
    "features",
    "n_samples",
    "n_reference_train",
    "n_reference_test",
}


def test_evaluate_writes_metrics_json(digits_run, tmp_path):
    cfg, root, _ = digits_run
    out = tmp_path / "gen-001" / "metrics.json"
    metrics = evaluate.run(
        cfg,
        root / "gen-000" / "samples",
        {"train": root / "data" / "train", "test": root / "data" / "test"},
        out,
        None,
        generation=1,
        seed=0,
        lam=0.5,
        grid_path=tmp_path / "gen-001" / "samples.png",
    )
    assert METRIC_KEYS <= set(metrics)
    assert json.loads(out.read_text()) == metrics
    assert metrics["features"] == "raw" and metrics["n_samples"] == 200 and metrics["lambda"] == "0.5"
    assert metrics["n_reference_train"] == 64 and metrics["n_reference_test"] == 32
    assert metrics["fd_train"] > 0 and 0 <= metrics["precision_train"] <= 1 and 0 <= metrics["recall_train"] <= 1
    assert (tmp_path / "gen-001" / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cached = list((Path(os.environ["AUTOPHAGY_CACHE_DIR"]) / "features").glob("*raw*.npy"))
    assert len(cached) == 2  # the two reference sets' features, cached by content hash and extractor


def test_evaluate_known_answer(digits_run, tmp_path, tiny_cfg):
    """The training set measured against itself: Frechet distance 0, precision = recall = 1."""
    _, root, _ = digits_run
    cfg = tiny_cfg("digits", "sample.n_eval=64")
    metrics = evaluate.run(
        cfg,
        root / "data" / "train",
        {"train": root / "data" / "train"},
        tmp_path / "m.json",
        None,
        generation=0,
        seed=0,
    )
    assert metrics["fd_train"] == pytest.approx(0, abs=1e-6)
    assert metrics["precision_train"] == 1 and metrics["recall_train"] == 1
    assert metrics["lambda"] is None
    with pytest.raises(DatasetError, match="n_eval=1000"):
        evaluate.run(
            tiny_cfg("digits", "sample.n_eval=1000"),
            root / "gen-000" / "samples",
            {"train": root / "data" / "train"},
            tmp_path / "m2.json",
            None,
            generation=0,
            seed=0,
        )
    assert not (tmp_path / "m2.json").exists()


def test_features_stage(tmp_path, tiny_cfg):
    info = features.run(tiny_cfg("digits"), tmp_path / "features")
    assert info["name"] == "raw" and info["id"] == "raw"
    assert json.loads((tmp_path / "features" / "extractor.json").read_text()) == info


def test_vector_family_end_to_end(tmp_path, tiny_cfg):
    """Gaussian family on vectors: every stage, with the toy metrics in metrics.json."""
    cfg = tiny_cfg("gaussian")
    prepare.run(cfg, tmp_path / "data")
    result = train.run(cfg, tmp_path / "data" / "train", tmp_path / "model", generation=0, seed=0)
    assert set(result) >= TRAIN_KEYS and result["train_steps"] == 1
    sample.run(cfg, tmp_path / "model", tmp_path / "samples", n=200, seed=0, generation=0)
    metrics = evaluate.run(
        cfg,
        tmp_path / "samples",
        {"train": tmp_path / "data" / "train", "test": tmp_path / "data" / "test"},
        tmp_path / "metrics.json",
        None,
        generation=0,
        seed=0,
        grid_path=tmp_path / "scatter.png",
    )
    assert {"swd_train", "mean_err_train", "cov_err_train", "swd_test", "fd_train"} <= set(metrics)
    assert metrics["mean_err_train"] < 0.5  # a Gaussian fitted to N(0, I) samples N(0, I)-ish
    assert (tmp_path / "scatter.png").is_file()


def test_train_logs_to_mlflow_child_runs(tmp_path, tiny_cfg, tracking_uri, monkeypatch):
    """Generation 0 belongs to every (lambda, seed) chain; generation g >= 1 to its own. Metrics sit at
    step = generation in child runs whose mlflow.parentRunId tag is the experiment's parent run."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    cfg = tiny_cfg("gaussian", "tracking.enabled=true", "loop.lambdas=[0, 1]", "name=tracked")
    prepare.run(cfg, tmp_path / "data")
    train.run(cfg, tmp_path / "data" / "train", tmp_path / "gen-000", generation=0, seed=0)
    sample.run(cfg, tmp_path / "gen-000", tmp_path / "samples-000", n=200, seed=0, generation=0)
    mix.run(cfg, tmp_path / "data" / "train", tmp_path / "samples-000", 1.0, tmp_path / "train_set", generation=1)
    train.run(
        cfg, tmp_path / "train_set", tmp_path / "gen-001", generation=1, seed=0, lam=1.0, init=tmp_path / "gen-000"
    )
    evaluate.run(
        cfg,
        tmp_path / "samples-000",
        {"train": tmp_path / "data" / "train"},
        tmp_path / "m.json",
        None,
        generation=0,
        seed=0,
    )

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("autophagy.role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.params["model.family"] == "gaussian"
    children = {r.data.tags["autophagy.lambda"]: r for r in runs if r.data.tags.get("autophagy.role") == "chain"}
    assert set(children) == {"0", "1"} and len(runs) == 3
    for lam, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["lambda"] == lam and child.data.params["seed"] == "0"
        # a Gaussian's training numbers are bookkeeping (tags, not charts), and its loss is NaN, never logged
        assert int(child.data.tags["parameters"]) == 2 * cfg.data.dim
        assert client.get_metric_history(child.info.run_id, "train_loss") == []
        fd = client.get_metric_history(child.info.run_id, "fd_train")
        assert [m.step for m in fd] == [0]  # generation 0's evaluation, shared by both chains
        assert fd[0].value == pytest.approx(json.loads((tmp_path / "m.json").read_text())["fd_train"])
    # checkpoints as Logged Models of their chain's run: generation 0 in the first chain, 1 in lambda 1's
    models = client.search_logged_models([experiment.experiment_id])
    assert {(m.source_run_id, m.tags["autophagy.generation"]) for m in models} == {
        (children["0"].info.run_id, "0"),
        (children["1"].info.run_id, "1"),
    }
    # a second process (a DVC stage, a pod) finds the same runs instead of creating new ones
    train.run(
        cfg, tmp_path / "train_set", tmp_path / "gen-001b", generation=1, seed=0, lam=1.0, init=tmp_path / "gen-000"
    )
    assert len(client.search_runs([experiment.experiment_id])) == 3


def test_generation_zero_can_start_from_a_checkpoint(digits_run, tiny_cfg, tmp_path):
    """train.init_checkpoint: generation 0 fine-tunes a given checkpoint instead of starting from scratch."""
    from safetensors.torch import load_file

    cfg, root, _ = digits_run
    start = root / "gen-000" / "model"
    tuned = tiny_cfg("digits", f"train.init_checkpoint={start}", "train.gen0_budget_kimg=0.032", "train.lr=1e-6")
    result = train.run(tuned, root / "data" / "train", tmp_path / "from-checkpoint", generation=0, seed=3)
    config = json.loads((tmp_path / "from-checkpoint" / "config.json").read_text())
    assert config["init"] == atomic.sha256_file(start / "model.safetensors")
    assert result["train_steps"] == 1
    before, after = (
        load_file(start / "model.safetensors"),
        load_file(tmp_path / "from-checkpoint" / "model.safetensors"),
    )
    assert max(float((before[k] - after[k]).abs().max()) for k in before) < 1e-4  # one tiny step from the start
    scratch = train.run(
        tiny_cfg("digits", "train.gen0_budget_kimg=0.032", "train.lr=1e-6"),
        root / "data" / "train",
        tmp_path / "from-scratch",
        generation=0,
        seed=3,
    )
    assert scratch["train_steps"] == 1
    fresh = load_file(tmp_path / "from-scratch" / "model.safetensors")
    assert max(float((before[k] - fresh[k]).abs().max()) for k in before) > 1e-2


def test_init_checkpoint_of_another_family_is_refused(digits_run, tiny_cfg, tmp_path):
    cfg, root, _ = digits_run
    other = tiny_cfg("digits", "model.family=ddpm", f"train.init_checkpoint={root / 'gen-000' / 'model'}")
    with pytest.raises(ModelError, match="holds a 'edm' model, the config asks for 'ddpm'"):
        train.run(other, root / "data" / "train", tmp_path / "x", generation=0, seed=0)
