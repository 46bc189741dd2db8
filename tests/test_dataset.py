"""Dataset directories: manifest + memory-mapped ``.npy`` shards, verification, atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from autophagy import atomic
from autophagy.data.dataset import MANIFEST, DatasetError, NewShard, open_dataset, write_dataset


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)


REAL = {"type": "real", "source": "test"}


def write_two_shards(path, a: np.ndarray, b: np.ndarray):
    return write_dataset(
        path,
        [NewShard(origin=REAL, array=a), NewShard(origin={"type": "synthetic", "generation": 2, "seed": 7}, array=b)],
        {"note": "unit test"},
    )


@pytest.mark.parametrize(
    "make, kind, item_shape, dtype", [(images, "image", (8, 8, 1), np.uint8), (vectors, "vector", (2,), np.float32)]
)
def test_write_open_round_trip(tmp_path, make, kind, item_shape, dtype):
    a, b = make(10, 1), make(5, 2)
    written = write_two_shards(tmp_path / "ds", a, b)
    ds = open_dataset(tmp_path / "ds")
    assert ds == written
    assert (ds.kind, ds.item_shape, ds.dtype, ds.rows) == (kind, item_shape, np.dtype(dtype), 15)
    loaded = ds.load()
    assert loaded.dtype == dtype and loaded.shape == (15, *item_shape)
    np.testing.assert_array_equal(loaded, np.concatenate([a, b]))
    assert ds.counts_by_origin() == {"real": 10, "synthetic": 5}
    assert ds.shards[1].origin == {"type": "synthetic", "generation": 2, "seed": 7}
    assert ds.provenance == {"note": "unit test"}
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    assert manifest["kind"] == kind and manifest["item_shape"] == list(item_shape) and manifest["rows"] == 15
    for entry in manifest["shards"]:  # the manifest's sha256 is the file's
        assert entry["sha256"] == atomic.sha256_file(tmp_path / "ds" / entry["file"])
        assert np.load(tmp_path / "ds" / entry["file"], allow_pickle=False).shape[0] == entry["rows"]
    # content_hash identifies the rows: same rows elsewhere, same hash; other rows, another hash.
    assert write_two_shards(tmp_path / "copy", a, b).content_hash == ds.content_hash
    assert write_two_shards(tmp_path / "other", a, make(5, 3)).content_hash != ds.content_hash


def test_reads_are_memory_mapped_and_read_only(tmp_path):
    ds = write_dataset(tmp_path / "ds", [NewShard(origin=REAL, array=images(20))])
    array = ds.shard_array(ds.shards[0])
    assert isinstance(array, np.memmap)
    assert not array.flags.writeable
    with pytest.raises(ValueError):
        array[0, 0, 0, 0] = 1


def test_kind_checks_on_open_and_write(tmp_path):
    write_dataset(tmp_path / "ds", [NewShard(origin=REAL, array=vectors(4))])
    with pytest.raises(DatasetError, match="holds vector data, expected image"):
        open_dataset(tmp_path / "ds", kind="image")
    for bad in (np.zeros((4, 8, 8, 1), np.float32), np.zeros((4, 2), np.float16), np.zeros((4, 8, 8), np.uint8)):
        with pytest.raises(DatasetError, match=r"uint8 \[N, H, W, C\] images or float32/float64 \[N, D\] vectors"):
            write_dataset(tmp_path / "bad", [NewShard(origin=REAL, array=bad)])
    with pytest.raises(DatasetError, match="disagree"):
        write_dataset(
            tmp_path / "bad",
            [NewShard(origin=REAL, array=vectors(3)), NewShard(origin=REAL, array=np.zeros((3, 3), np.float32))],
        )
    with pytest.raises(DatasetError, match="at least one shard"):
        write_dataset(tmp_path / "bad", [])
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------ damaged directories


@pytest.fixture
def dataset_dir(tmp_path):
    write_two_shards(tmp_path / "ds", images(10, 1), images(6, 2))
    return tmp_path / "ds"


def shard_file(path, index=0):
    return path / json.loads((path / MANIFEST).read_text())["shards"][index]["file"]


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match="dataset directory not found") as info:
        open_dataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_missing_manifest(dataset_dir):
    (dataset_dir / MANIFEST).unlink()
    with pytest.raises(DatasetError, match=f"{MANIFEST} is missing"):
        open_dataset(dataset_dir)


def test_corrupted_json_manifest(dataset_dir):
    text = (dataset_dir / MANIFEST).read_text()
    (dataset_dir / MANIFEST).write_text(text[: len(text) // 2])
    with pytest.raises(DatasetError, match="corrupted"):
        open_dataset(dataset_dir)


@pytest.mark.parametrize(
    "edit", ["drop-shards", "drop-item-shape", "not-a-mapping", "bad-format", "bad-kind", "no-shards", "bad-rows"]
)
def test_malformed_manifest_is_a_dataset_error(dataset_dir, edit):
    """Valid JSON that is not a manifest must give a DatasetError naming the file, not a KeyError."""
    manifest = json.loads((dataset_dir / MANIFEST).read_text())
    if edit == "drop-shards":
        del manifest["shards"]
    elif edit == "drop-item-shape":
        del manifest["item_shape"]
    elif edit == "not-a-mapping":
        manifest = [manifest]
    elif edit == "bad-format":
        manifest["format"] = "something-else/v9"
    elif edit == "bad-kind":
        manifest["kind"] = "audio"
    elif edit == "no-shards":
        manifest["shards"] = []
    elif edit == "bad-rows":
        manifest["shards"][0]["rows"] = "ten"
    (dataset_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError) as info:
        open_dataset(dataset_dir)
    assert MANIFEST in str(info.value)


def test_missing_shard(dataset_dir):
    missing = shard_file(dataset_dir, 1)
    missing.unlink()
    with pytest.raises(DatasetError, match=f"shard {missing.name} .* is missing"):
        open_dataset(dataset_dir)


@pytest.mark.parametrize("cut", [1, 64, 500])
def test_truncated_shard(dataset_dir, cut):
    file = shard_file(dataset_dir)
    data = file.read_bytes()
    file.write_bytes(data[:-cut])
    with pytest.raises(DatasetError, match="truncated") as info:
        open_dataset(dataset_dir)
    assert file.name in str(info.value)
    with pytest.raises(DatasetError, match="truncated"):  # also without the hash check
        open_dataset(dataset_dir, verify_hash=False)


def test_truncated_header(dataset_dir):
    file = shard_file(dataset_dir)
    file.write_bytes(file.read_bytes()[:20])
    with pytest.raises(DatasetError, match="corrupted or truncated"):
        open_dataset(dataset_dir)


def test_sha_mismatch_after_a_flipped_byte(dataset_dir):
    file = shard_file(dataset_dir)
    data = bytearray(file.read_bytes())
    data[-3] ^= 0xFF  # a pixel, not the header: the file still parses
    file.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="sha256") as info:
        open_dataset(dataset_dir)
    assert file.name in str(info.value)
    assert open_dataset(dataset_dir, verify_hash=False).rows == 16  # the fast path only checks headers


@pytest.mark.parametrize(
    "replacement",
    [
        np.zeros((10, 8, 8, 1), np.float32),  # dtype
        np.zeros((10, 4, 4, 1), np.uint8),  # item shape
        np.zeros((11, 8, 8, 1), np.uint8),  # row count
    ],
)
def test_shape_and_dtype_mismatch(dataset_dir, replacement):
    np.save(shard_file(dataset_dir), replacement, allow_pickle=False)
    with pytest.raises(DatasetError, match="the manifest says"):
        open_dataset(dataset_dir, verify_hash=False)


def test_manifest_item_shape_mismatch(dataset_dir):
    manifest = json.loads((dataset_dir / MANIFEST).read_text())
    manifest["item_shape"] = [8, 8, 3]
    (dataset_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"the manifest says uint8\[10, 8, 8, 3\]"):
        open_dataset(dataset_dir)


def test_pickled_object_arrays_are_refused(dataset_dir):
    """A shard must never be unpickled: an object array is a corrupted shard, not code to run."""
    file = shard_file(dataset_dir)
    np.save(file, np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError):
        open_dataset(dataset_dir, verify_hash=False)


# ------------------------------------------------------------------ atomicity


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def failing_save_after(monkeypatch, n_ok: int):
    real_save = np.save
    calls = []

    def save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) > n_ok:
            raise OSError("disk full (simulated)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    return calls


def test_failed_write_leaves_no_directory(tmp_path, monkeypatch):
    calls = failing_save_after(monkeypatch, 1)
    with pytest.raises(OSError, match="simulated"):
        write_two_shards(tmp_path / "ds", images(5), images(5, 1))
    assert len(calls) == 2  # the first shard was written before the failure
    assert not (tmp_path / "ds").exists()
    assert leftovers(tmp_path) == []  # no staging directory is left behind


def test_failed_write_keeps_the_previous_directory(tmp_path, monkeypatch):
    old_a, old_b = images(4, 10), images(3, 11)
    write_two_shards(tmp_path / "ds", old_a, old_b)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()}
    failing_save_after(monkeypatch, 1)
    with pytest.raises(OSError, match="simulated"):
        write_two_shards(tmp_path / "ds", images(5), images(5, 1))
    assert {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()} == before
    np.testing.assert_array_equal(open_dataset(tmp_path / "ds").load(), np.concatenate([old_a, old_b]))
    assert leftovers(tmp_path) == []


def test_rewrite_replaces_the_whole_directory(tmp_path):
    write_dataset(tmp_path / "ds", [NewShard(origin=REAL, array=images(4), name="old.npy")])
    write_dataset(tmp_path / "ds", [NewShard(origin=REAL, array=images(2), name="new.npy")])
    assert sorted(os.listdir(tmp_path / "ds")) == [MANIFEST, "new.npy"]  # no stale shard survives
    assert open_dataset(tmp_path / "ds").rows == 2
    assert leftovers(tmp_path) == []


def test_atomic_write_bytes_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "file.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        atomic.write_json(target, {"a": float("nan")})  # strict JSON refuses NaN before writing
    assert json.loads(target.read_text()) == {"a": 1}

    def broken_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic.write_bytes(target, b"new")
    assert json.loads(target.read_text()) == {"a": 1}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["../outside.npy", "sub/shard.npy", "/etc/passwd"])
def test_shard_names_cannot_escape_the_directory(dataset_dir, name):
    manifest = json.loads((dataset_dir / MANIFEST).read_text())
    manifest["shards"][0]["file"] = name
    (dataset_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="plain file name"):
        open_dataset(dataset_dir)


def test_float64_vectors_round_trip_and_widen_float32_shards(tmp_path):
    """Vectors may be float64 (the Gaussian family's samples); written beside float32 shards, the
    set is float64 and the float32 rows are widened exactly (re-encoded, not linked)."""
    exact = np.random.default_rng(5).standard_normal((6, 2)) * 1e-9 + 0.3  # float32 would round these
    wide = write_dataset(tmp_path / "wide", [NewShard(origin=REAL, array=exact)])
    assert open_dataset(wide.path).dtype == np.float64
    np.testing.assert_array_equal(wide.load(), exact)
    narrow = write_dataset(tmp_path / "narrow", [NewShard(origin=REAL, array=vectors(4))])
    both = write_dataset(
        tmp_path / "both",
        [
            NewShard(origin=REAL, source=(narrow, narrow.shards[0])),
            NewShard(origin=REAL, source=(wide, wide.shards[0]), name="s.npy"),
        ],
    )
    assert both.dtype == np.float64 and json.loads((both.path / "dataset.json").read_text())["dtype"] == "float64"
    np.testing.assert_array_equal(both.load(), np.concatenate([narrow.load().astype(np.float64), exact]))
    bad = np.array(exact)
    bad[2, 1] = np.nan
    with pytest.raises(DatasetError, match="NaN or infinite values in 1 of 6 rows"):
        write_dataset(tmp_path / "nan", [NewShard(origin=REAL, array=bad)])
    # opening checks float64 shards for NaN as float64 (not as pairs of float32 halves)
    bad[2, 1] = 0.5
    bad[4, 0] = np.inf
    np.save(wide.path / wide.shards[0].file, bad, allow_pickle=False)
    manifest = json.loads((wide.path / MANIFEST).read_text())
    manifest["shards"][0]["sha256"] = atomic.sha256_file(wide.path / wide.shards[0].file)
    (wide.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"holds NaN or infinite values \(first at row 4\)"):
        open_dataset(wide.path)


# ---------------------------------------------------------------------------- hashing once per process


@pytest.fixture
def hash_calls(monkeypatch):
    """Count the sha256 passes over shard files, starting from an empty per-process cache."""
    from autophagy.data import dataset

    calls = []
    hash_file = dataset._hash_and_find_non_finite
    monkeypatch.setattr(dataset, "_VERIFIED", {})
    monkeypatch.setattr(
        dataset, "_hash_and_find_non_finite", lambda file, *a: calls.append(file) or hash_file(file, *a)
    )
    return calls


def _settle(path, seconds: float = 10.0) -> None:
    """Backdate every file under ``path`` (as a shard written by an earlier stage is)."""
    for file in path.rglob("*"):
        stamp = os.stat(file).st_mtime - seconds
        os.utime(file, (stamp, stamp))


def _flip_last_byte(file) -> None:
    with open(file, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))


def test_a_settled_shard_is_hashed_once_per_process_even_through_a_hard_link(tmp_path, hash_calls):
    real = write_dataset(tmp_path / "real", [NewShard({"type": "real"}, images(40))])
    _settle(tmp_path / "real")
    real = open_dataset(tmp_path / "real")
    mixed = write_dataset(
        tmp_path / "mix",
        [NewShard({"type": "real"}, source=(real, real.shards[0])), NewShard({"type": "synthetic"}, images(8, 1))],
    )
    open_dataset(tmp_path / "real")
    assert [f.parent.name for f in hash_calls] == ["real"]  # the mix's link is the same file: not hashed again
    open_dataset(mixed.path)
    open_dataset(mixed.path)
    # the fresh synthetic shard is hashed on every open (its mtime is too recent to vouch for its bytes)
    assert [f.name for f in hash_calls] == ["shard-000.npy", "shard-001.npy", "shard-001.npy"]


def test_a_shard_changed_after_it_was_verified_is_caught_in_the_same_process(tmp_path, hash_calls):
    write_dataset(tmp_path / "d", [NewShard({"type": "real"}, images(40))])
    _settle(tmp_path / "d", seconds=100)
    data = open_dataset(tmp_path / "d")
    shard = tmp_path / "d" / data.shards[0].file
    _flip_last_byte(shard)  # the same size, new bytes, written now
    with pytest.raises(DatasetError, match="corrupted: sha256"):
        open_dataset(tmp_path / "d")
    assert len(hash_calls) == 2


def test_a_new_process_hashes_again_whatever_the_file_times_say(tmp_path, monkeypatch):
    from autophagy.data import dataset

    write_dataset(tmp_path / "d", [NewShard({"type": "real"}, images(40))])
    _settle(tmp_path / "d")
    data = open_dataset(tmp_path / "d")
    shard = tmp_path / "d" / data.shards[0].file
    before = os.stat(shard)
    _flip_last_byte(shard)
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))  # the time forged back: this process trusts it
    open_dataset(tmp_path / "d")
    monkeypatch.setattr(dataset, "_VERIFIED", {})  # what a new process starts from
    with pytest.raises(DatasetError, match="corrupted: sha256"):
        open_dataset(tmp_path / "d")
