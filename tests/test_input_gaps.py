"""Input gaps of issue 12, item 7: non-finite vectors, empty shards, a shard listed twice, huge lambdas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from autophagy import atomic
from autophagy.cli import main
from autophagy.config import FIXED_TRAIN_SPLIT_ROWS, MAX_SYNTHETIC_SAMPLES, ConfigError, DataConfig, load_config
from autophagy.data.dataset import MANIFEST, DatasetError, NewShard, open_dataset, write_dataset
from autophagy.data.sources import load_split
from autophagy.data.strategies import synthetic_count
from autophagy.stages import sample, train

REAL = {"type": "real", "source": "test"}


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)


def rewrite_shard(directory, array: np.ndarray) -> None:
    """Replace the first shard's file with ``array`` and fix its manifest entry (rows, sha256), as
    a hand-made or foreign data set would be: consistent, so only the content checks can catch it."""
    manifest = json.loads((directory / MANIFEST).read_text())
    entry = manifest["shards"][0]
    np.save(directory / entry["file"], array, allow_pickle=False)
    entry.update(rows=len(array), sha256=atomic.sha256_file(directory / entry["file"]))
    manifest["rows"] = sum(e["rows"] for e in manifest["shards"])
    (directory / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def poisoned(tmp_path):
    """A vector data set whose shard holds NaN and -inf (the audit's shard): [nan, -inf] at row 3."""
    directory = tmp_path / "poisoned"
    write_dataset(directory, [NewShard(origin=REAL, array=vectors(8))])
    rows = vectors(8)
    rows[3] = [np.nan, -np.inf]
    rewrite_shard(directory, rows)
    return directory


# ------------------------------------------------------------------ non-finite vectors


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_open_refuses_non_finite_vectors(tmp_path, value):
    directory = tmp_path / "ds"
    write_dataset(directory, [NewShard(origin=REAL, array=vectors(20))])
    rows = vectors(20)
    rows[13, 1] = value
    rewrite_shard(directory, rows)
    with pytest.raises(DatasetError, match=r"shard .*shard-000\.npy holds NaN or infinite values \(first at row 13\)"):
        open_dataset(directory)
    assert open_dataset(directory, verify_hash=False).rows == 20  # the cheap open reads headers only


def test_non_finite_values_are_found_past_the_first_read_chunk(tmp_path):
    directory = tmp_path / "ds"
    write_dataset(directory, [NewShard(origin=REAL, array=vectors(10))])
    rows = np.zeros((600_000, 2), dtype=np.float32)  # 4.8 MB: two reads of the hash pass
    rows[-1, 0] = np.nan
    rewrite_shard(directory, rows)
    with pytest.raises(DatasetError, match=r"first at row 599999\)"):
        open_dataset(directory)


def test_a_gaussian_is_never_fitted_on_non_finite_vectors(tmp_path, tiny_cfg, poisoned):
    """Before: the fit saved mean = [nan, -inf] and the next step sampled an all-NaN data set."""
    with pytest.raises(DatasetError, match="holds NaN or infinite values"):
        train.run(tiny_cfg("gaussian"), poisoned, tmp_path / "model", 0, 0)
    assert not (tmp_path / "model").exists()


def test_write_refuses_non_finite_rows(tmp_path):
    rows = vectors(10)
    rows[[2, 7]] = np.nan
    with pytest.raises(
        DatasetError,
        match=r"cannot write .*: shard shard-000\.npy .* holds NaN or infinite values "
        r"in 2 of 10 rows \(first at row 2\)",
    ):
        write_dataset(tmp_path / "ds", [NewShard(origin=REAL, array=rows)])
    assert not (tmp_path / "ds").exists()


def test_a_model_that_samples_infinity_fails_its_sample_step(tmp_path, tiny_cfg):
    """Finite data near float64's limit (the Gaussian family samples float64): the Gaussian's samples
    overflow to +-inf. Before: a verified sample set full of inf; now the sample step fails and
    publishes nothing."""
    cfg = tiny_cfg("gaussian")
    rows = np.tile(np.array([[1e308, 1.0], [-1e308, -1.0]], dtype=np.float64), (50, 1))
    write_dataset(tmp_path / "real", [NewShard(origin=REAL, array=rows)])
    train.run(cfg, tmp_path / "real", tmp_path / "model", 0, 0)
    with pytest.raises(
        DatasetError,
        match=r"cannot write .*samples: shard synthetic-gen-000\.npy .*'type': 'synthetic'.* "
        r"holds NaN or infinite values in \d+ of 200 rows",
    ):
        sample.run(cfg, tmp_path / "model", tmp_path / "samples", 200, 0, 0)
    assert not (tmp_path / "samples").exists()


# ------------------------------------------------------------------ empty shards, a shard listed twice


def test_open_refuses_a_dataset_of_zero_rows(tmp_path):
    """Before: it opened (rows = 0) and EDM reported a diverged loss."""
    directory = tmp_path / "ds"
    write_dataset(directory, [NewShard(origin=REAL, array=vectors(4))])
    rewrite_shard(directory, np.zeros((0, 2), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"shard shard-000\.npy has 0 rows; every shard needs at least one"):
        open_dataset(directory)


def test_write_refuses_an_empty_shard(tmp_path):
    with pytest.raises(DatasetError, match=r"shard real\.npy .* has no rows"):
        write_dataset(
            tmp_path / "ds",
            [
                NewShard(origin=REAL, array=vectors(5), name="a.npy"),
                NewShard(origin=REAL, array=vectors(0), name="real.npy"),
            ],
        )
    assert not (tmp_path / "ds").exists()


def test_open_refuses_a_shard_listed_twice(tmp_path):
    """Before: the rows counted twice, silently (rows = 20 for 10 rows on disk)."""
    directory = tmp_path / "ds"
    write_dataset(directory, [NewShard(origin=REAL, array=vectors(10))])
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["shards"] *= 2
    manifest["rows"] = 20
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"lists shard shard-000\.npy twice"):
        open_dataset(directory)
    with pytest.raises(DatasetError, match="twice"):
        open_dataset(directory, verify_hash=False)


# ------------------------------------------------------------------ lambda


@pytest.mark.parametrize("lam, shown", [("1e308", r"1e\+308"), ("1e7", r"1e\+07")])
def test_lambdas_beyond_the_sample_bound_are_refused_by_validation(lam, shown):
    """Before: both passed validation and failed later (index_noise past 2^63, an 8 GB allocation)."""
    with pytest.raises(
        ConfigError,
        match=rf"loop.lambdas: lambda = {shown} asks for .* synthetic "
        r"samples per generation with n = 1497 real items \(the digits training "
        r"split\); at most 100,000,000 are allowed, so lambda <= 66800.3 here",
    ):
        load_config(None, [f"loop.lambdas=[0, 1, {lam}]"])


def test_the_bound_uses_data_n_train_and_keeps_every_lambda_up_to_it():
    ok = load_config(None, ["data.n_train=100", "loop.lambdas=[0, 1, 1000000, inf]"])
    assert math.floor(ok.loop.lambdas[2] * 100) == MAX_SYNTHETIC_SAMPLES
    with pytest.raises(ConfigError, match=r"n = 100 real items \(data.n_train\).*lambda <= 1e\+06 here"):
        load_config(None, ["data.n_train=100", "loop.lambdas=[1000001]"])


def test_the_bound_is_checked_again_once_n_is_known():
    """A folder of images has no size before it is prepared: validation bounds lambda with n >= 1,
    and the sample count itself is checked where n is known."""
    cfg = load_config(
        None,
        [
            "data.source=image-folder",
            "data.path=/nowhere",
            "model.family=edm",
            "evaluate.features=raw",
            "loop.lambdas=[0, 100000]",
        ],
    )
    assert synthetic_count(cfg.loop.lambdas[1], 1000) == MAX_SYNTHETIC_SAMPLES
    with pytest.raises(ConfigError, match=r"n = 1001 real items; at most 100,000,000"):
        synthetic_count(cfg.loop.lambdas[1], 1001)


def test_the_cli_reports_a_huge_lambda_in_one_line(capsys):
    assert main(["config", "-S", "loop.lambdas=[0, 1e7]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "autophagy: error: loop.lambdas: lambda = 1e+07 asks for floor(lambda n) = 14,970,000,000 synthetic samples"
    )


def test_the_fixed_digits_split_size_is_the_real_one():
    assert len(load_split(DataConfig(source="digits"), "train")) == FIXED_TRAIN_SPLIT_ROWS["digits"]
