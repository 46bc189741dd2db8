"""The paper's mixing rule (Bertrand et al. 2024, Alg. 1): all n real rows + floor(lambda n) fresh samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autophagy import atomic
from autophagy.config import ConfigError
from autophagy.data.dataset import DatasetError, NewShard, open_dataset, write_dataset
from autophagy.data.strategies import mix, synthetic_count

REAL = {"type": "real", "source": "test", "split": "train"}


def synth_origin(generation=0):
    return {"type": "synthetic", "generation": generation, "seed": 0}


@pytest.mark.parametrize(
    "lam, n, expected",
    [
        (0.29, 100, 29),  # binary 0.29 * 100 = 28.999999999999996: floor must not give 28
        (0.57, 100, 57),  # 56.99999999999999 in binary floating point
        (0.1, 30, 3),
        (0.7, 10, 7),
        (0.0, 100, 0),
        (0.5, 100, 50),
        (0.5, 101, 50),  # floor, not round
        (0.5, 1, 0),
        (1.0, 37, 37),
        (2.0, 37, 74),  # lambda > 1 is legal: more synthetic than real rows
        (1.5, 3, 4),
        (0.001, 100, 0),
        (math.inf, 37, 37),  # fully synthetic: n rows of the previous model
    ],
)
def test_synthetic_count(lam, n, expected):
    assert synthetic_count(lam, n) == expected


@pytest.mark.parametrize("lam", [-0.5, -1e-12, float("nan"), -math.inf])
def test_synthetic_count_rejects_bad_lambda(lam):
    with pytest.raises(ConfigError, match="lambda"):
        synthetic_count(lam, 10)


def test_synthetic_count_rejects_empty_real_set():
    with pytest.raises(DatasetError, match="empty"):
        synthetic_count(1.0, 0)


# ------------------------------------------------------------------ mix


@pytest.fixture
def real(tmp_path):
    rows = np.arange(40 * 64, dtype=np.int64).reshape(40, 8, 8, 1) % 251
    return write_dataset(tmp_path / "real", [NewShard(origin=REAL, array=rows.astype(np.uint8), name="real-train.npy")])


@pytest.fixture
def synthetic(tmp_path):
    rows = np.random.default_rng(1).integers(0, 256, size=(100, 8, 8, 1), dtype=np.uint8)
    return write_dataset(
        tmp_path / "synth", [NewShard(origin=synth_origin(), array=rows, name="synthetic-gen-000.npy")]
    )


@pytest.mark.parametrize(
    "lam, n_real, n_synth",
    [(0.0, 40, 0), (0.5, 40, 20), (1.0, 40, 40), (2.0, 40, 80), (0.29, 40, 11), (math.inf, 0, 40)],
)
def test_mix_composition(tmp_path, real, synthetic, lam, n_real, n_synth):
    mixed = mix(real, synthetic, lam, tmp_path / "mixed")
    assert mixed.counts_by_origin() == {k: v for k, v in {"real": n_real, "synthetic": n_synth}.items() if v}
    assert mixed.rows == n_real + n_synth
    # real rows first, then the FIRST n_synth rows of the synthetic set, in order
    expected = np.concatenate([real.load()[:n_real], synthetic.load()[:n_synth]])
    np.testing.assert_array_equal(mixed.load(), expected)
    assert [s.origin["type"] for s in mixed.shards] == ["real"] * bool(n_real) + ["synthetic"] * bool(n_synth)
    assert mixed.provenance["n_real"] == 40 and mixed.provenance["n_synthetic"] == n_synth
    assert open_dataset(tmp_path / "mixed") == mixed  # the written directory verifies


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_real_shard_is_reused_byte_for_byte(tmp_path, real, synthetic, lam):
    mixed = mix(real, synthetic, lam, tmp_path / "mixed")
    source = real.path / real.shards[0].file
    copy = mixed.path / mixed.shards[0].file
    assert mixed.shards[0].file == real.shards[0].file
    assert atomic.sha256_file(copy) == atomic.sha256_file(source) == mixed.shards[0].sha256
    assert copy.read_bytes() == source.read_bytes()


def test_whole_synthetic_shards_are_reused_and_partial_ones_sliced(tmp_path, real):
    parts = [np.full((15, 8, 8, 1), i, np.uint8) for i in (1, 2, 3)]
    synthetic = write_dataset(
        tmp_path / "synth",
        [NewShard(origin=synth_origin(), array=p, name=f"part-{i}.npy") for i, p in enumerate(parts)],
    )
    mixed = mix(real, synthetic, 1.0, tmp_path / "mixed")  # needs 40 = 15 + 15 + 10
    assert [s.rows for s in mixed.shards] == [40, 15, 15, 10]
    assert mixed.shards[1].sha256 == synthetic.shards[0].sha256  # whole shards: unchanged files
    assert mixed.shards[2].sha256 == synthetic.shards[1].sha256
    np.testing.assert_array_equal(mixed.load()[40:], np.concatenate(parts)[:40])


def test_fully_synthetic_reuses_an_exact_size_sample_set(tmp_path, real):
    rows = np.random.default_rng(2).integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    synthetic = write_dataset(tmp_path / "synth", [NewShard(origin=synth_origin(), array=rows)])
    mixed = mix(real, synthetic, math.inf, tmp_path / "mixed")
    assert mixed.counts_by_origin() == {"synthetic": 40}
    assert mixed.shards[0].sha256 == synthetic.shards[0].sha256
    assert mixed.provenance["lambda"] == "inf"


def test_default_shard_names_do_not_collide(tmp_path):
    """Real and synthetic sets written with default names both hold ``shard-000.npy``."""
    real = write_dataset(tmp_path / "real", [NewShard(origin=REAL, array=np.zeros((10, 2), np.float32))])
    synthetic = write_dataset(tmp_path / "synth", [NewShard(origin=synth_origin(), array=np.ones((20, 2), np.float32))])
    assert real.shards[0].file == synthetic.shards[0].file
    for lam, k in ((0.5, 5), (2.0, 20)):  # a sliced and a whole synthetic shard
        mixed = mix(real, synthetic, lam, tmp_path / f"mixed-{lam}")
        assert mixed.counts_by_origin() == {"real": 10, "synthetic": k}
        np.testing.assert_array_equal(mixed.load(), np.concatenate([np.zeros((10, 2)), np.ones((k, 2))]))
        assert mixed.shards[0].sha256 == real.shards[0].sha256


def test_lambda_zero_needs_no_synthetic_data(tmp_path, real):
    mixed = mix(real, None, 0.0, tmp_path / "mixed")
    assert mixed.counts_by_origin() == {"real": 40}
    assert mix(real, None, 0.01, tmp_path / "tiny").rows == 40  # floor(0.01 * 40) = 0


@pytest.mark.parametrize("lam", [-1.0, float("nan")])
def test_mix_rejects_bad_lambda(tmp_path, real, synthetic, lam):
    with pytest.raises(ConfigError, match="lambda"):
        mix(real, synthetic, lam, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()


def test_mix_needs_enough_synthetic_rows(tmp_path, real, synthetic):
    with pytest.raises(DatasetError, match=r"needs 120 synthetic samples.*only 100") as info:
        mix(real, synthetic, 3.0, tmp_path / "mixed")
    assert "lambda = 3" in str(info.value)
    with pytest.raises(DatasetError, match="no synthetic data set"):
        mix(real, None, 0.5, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()


def test_mix_rejects_kind_and_shape_mismatch(tmp_path, real):
    vectors = write_dataset(tmp_path / "vec", [NewShard(origin=synth_origin(), array=np.zeros((50, 64), np.float32))])
    with pytest.raises(DatasetError, match=r"holds vector \[64\].*holds image \[8, 8, 1\]"):
        mix(real, vectors, 1.0, tmp_path / "mixed")
    big = write_dataset(tmp_path / "big", [NewShard(origin=synth_origin(), array=np.zeros((50, 16, 16, 1), np.uint8))])
    with pytest.raises(DatasetError, match=r"\[16, 16, 1\]"):
        mix(real, big, 1.0, tmp_path / "mixed")
    rgb = write_dataset(tmp_path / "rgb", [NewShard(origin=synth_origin(), array=np.zeros((50, 8, 8, 3), np.uint8))])
    with pytest.raises(DatasetError, match=r"\[8, 8, 3\]"):
        mix(real, rgb, math.inf, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
