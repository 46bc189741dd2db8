"""Curation (Ferbach et al. 2024) and self-correction (Gillman et al. 2024) of synthetic samples."""

from __future__ import annotations

import numpy as np
import pytest

from autophagy import curation, loop
from autophagy.config import ConfigError, load_config
from autophagy.data.dataset import open_dataset


def test_selection_follows_the_softmax_of_rewards():
    rewards = np.tile(np.array([0.0, 1.0, 2.0]), 20000)
    keep = curation.select(rewards, k=3, beta=1.0, seed=0)
    chosen = keep % 3
    frequencies = np.bincount(chosen, minlength=3) / len(chosen)
    expected = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    assert np.allclose(frequencies, expected, atol=4 * np.sqrt(expected * (1 - expected) / len(chosen)).max())
    assert np.array_equal(keep // 3, np.arange(20000))  # one per group, from its own group


def test_low_temperature_selection_is_the_argmax():
    rewards = np.random.default_rng(1).normal(size=400)
    keep = curation.select(rewards, k=4, beta=1e-6, seed=2)
    assert np.array_equal(keep, np.arange(100) * 4 + rewards.reshape(100, 4).argmax(axis=1))


def test_selection_rejects_ragged_groups():
    with pytest.raises(ValueError, match="m \\* k"):
        curation.select(np.zeros(7), k=3, beta=1.0, seed=0)


def test_nearest_real_correction():
    real = np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    rows = np.array([[1.0, 1.0], [8.0, 2.0]], dtype=np.float32)
    assert np.allclose(curation.correct_nearest_real(rows, real, 0.5), [[0.5, 0.5], [9.0, 1.0]])
    assert np.allclose(curation.correct_nearest_real(rows, real, 0.0), rows)
    assert np.allclose(curation.correct_nearest_real(rows, real, 1.0), real)


BASE = [
    "name=c",
    "data.source=toy2d",
    "data.name=8gaussians",
    "data.n_train=200",
    "data.n_test=200",
    "model.family=gaussian",
    "evaluate.features=raw",
    "sample.n_eval=100",
    "loop.lambdas=[1]",
    "loop.seeds=[0]",
    "loop.generations=1",
    "tracking.enabled=false",
]


def test_curated_samples_have_higher_reward(tmp_path):
    plain = loop.run_experiment(load_config(None, BASE), tmp_path / "plain", log=lambda _: None)
    cfg = load_config(
        None, [*BASE, "sample.curation_k=8", "sample.curation_beta=0.05", "sample.curation_reward=toy-nearest-real"]
    )
    curated = loop.run_experiment(cfg, tmp_path / "curated", log=lambda _: None)
    real = open_dataset(plain.real_train).load()
    reward = curation.nearest_real(real)
    plain_rows = open_dataset(plain.generation(None, 0, 0) / "samples").load()
    curated_set = open_dataset(curated.generation(None, 0, 0) / "samples")
    assert curated_set.rows == plain_rows.shape[0]
    assert curated_set.shards[0].origin["curation_k"] == 8
    assert reward(curated_set.load()).mean() > reward(plain_rows).mean() + 0.1


def test_self_correction_moves_synthetic_rows_towards_the_data(tmp_path):
    cfg = load_config(None, [*BASE, "loop.correction=nearest-real", "loop.correction_strength=0.5"])
    layout = loop.run_experiment(cfg, tmp_path / "corr", log=lambda _: None)
    real = open_dataset(layout.real_train).load()
    samples = open_dataset(layout.generation(None, 0, 0) / "samples").load()
    train_set = open_dataset(layout.generation(1.0, 0, 1) / "train_set")
    synthetic_shards = [s for s in train_set.shards if s.origin["type"] == "synthetic"]
    assert synthetic_shards and all(s.origin["corrected"] == "nearest-real" for s in synthetic_shards)
    corrected = np.concatenate([train_set.shard_array(s) for s in synthetic_shards])
    assert np.allclose(corrected, curation.correct_nearest_real(samples[: len(corrected)], real, 0.5), atol=1e-6)


def test_correction_and_curation_options_are_checked():
    with pytest.raises(ConfigError, match="loop.correction"):
        load_config(None, ["loop.correction=nearest-real"])  # the default experiment is images
    with pytest.raises(ConfigError, match="curation_reward"):
        load_config(None, ["sample.curation_k=4", "sample.curation_reward=toy-nearest-real"])
