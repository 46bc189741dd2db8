"""Dataset directories: a ``dataset.json`` manifest plus memory-mappable ``.npy`` shards.

Every data set autophagy reads or writes (real, synthetic, mixed) is such a directory; it is a
DVC output and a KFP ``Dataset`` artifact. A shard is uint8 ``[N, H, W, C]`` for images,
float32 or float64 ``[N, D]`` for vectors (float64 holds the Gaussian family's samples, whose
sigma shrinks below float32's resolution) or int32 ``[N, L]`` token ids for text; the manifest's
``dtype`` says which, one per dataset (written from float32 and float64 rows, a dataset is
float64). The manifest lists each shard with its sha256, row count and origin (``{"type":
"real", ...}`` or ``{"type": "synthetic", "generation": g, "seed": s}``).
Readers verify the manifest and fail with a :class:`DatasetError` that names the problem. A
dataset holds at least one row, every shard at least one, each listed once; vectors are finite
(no NaN or infinity: a model fitted on them, or one that sampled them, would carry them on).

A text dataset (kind ``"text"``, :mod:`autophagy.data.text`) also carries its tokenizer: the
file ``tokenizer.json`` (a Hugging Face ``tokenizers`` JSON) beside the shards and the manifest
entry ``"tokenizer": {"file", "sha256", "name", "vocab_size", "bos_id", "eos_id"}``. Readers
check the file's sha256 and that every token id is in ``[0, vocab_size)``. Writing text rows
needs the tokenizer (``write_dataset(..., tokenizer=...)``) or takes it, byte for byte, from the
datasets whose shards are reused; every source must have the same tokenizer (sha256).

A shard's sha256 is read once per process: a file this process has hashed and found to match is
not hashed again while its device, inode, size and modification time are the ones it had then
(:data:`_VERIFIED`). Only files last modified more than :data:`_SETTLED_NS` before the hash are
remembered: the kernel stamps mtimes with a coarse clock (a few ms), so a rewrite just after a
fresh file was hashed could keep its mtime, while one after a settled file's hash cannot. One
generation opens the real training shard in the mix, in training (a hard link in the mix
directory: same inode) and in evaluation; an ``autophagy run`` opens it in every generation. A new
process (each DVC stage, each Kubeflow pod) verifies again, and every other check (manifest,
header, shape, row count) runs on every open.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autophagy import atomic

if TYPE_CHECKING:
    from autophagy.data.text import TextTokenizer

MANIFEST = "dataset.json"
FORMAT = "autophagy.dataset/v1"
KINDS = {"image": ("uint8",), "vector": ("float32", "float64"), "text": ("int32",)}  # the dtypes each kind may hold
TOKENIZER_FILE = "tokenizer.json"  # a text dataset's tokenizer, beside its shards
_TOKENIZER_KEYS = ("file", "sha256", "name", "vocab_size", "bos_id", "eos_id")
_READ_CHUNK = 1 << 22  # bytes per read of the hash pass (a multiple of every item size)
_CHECK_CHUNK = 1 << 20  # values per finiteness check of rows in memory
#: Shard files this process found matching their manifest: (device, inode, size, mtime_ns) -> sha256.
_VERIFIED: dict[tuple[int, int, int, int], str] = {}
_SETTLED_NS = 2_000_000_000  # a file's mtime this far in the past: any later rewrite gets a new one


class DatasetError(ValueError):
    """A dataset directory is missing, corrupted, truncated or does not match what was asked."""


@dataclass(frozen=True)
class Shard:
    """One ``.npy`` file of a dataset directory, as listed in the manifest."""

    file: str
    rows: int
    sha256: str
    origin: Mapping[str, Any]


@dataclass(frozen=True)
class NewShard:
    """A shard to write: fresh rows (``array``) or an existing verified file to reuse byte-for-byte."""

    origin: Mapping[str, Any]
    array: np.ndarray | None = None
    source: tuple[Dataset, Shard] | None = None
    name: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A verified dataset directory. ``item_shape`` is ``(H, W, C)`` for images, ``(D,)`` for vectors,
    ``(L,)`` for text; ``tokenizer`` is a text dataset's manifest entry (None for other kinds)."""

    path: Path
    kind: str
    item_shape: tuple[int, ...]
    shards: tuple[Shard, ...]
    provenance: Mapping[str, Any]
    dtype: np.dtype
    tokenizer: Mapping[str, Any] | None = None

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def content_hash(self) -> str:
        """sha256 over the shard hashes in order: identifies the rows, not the directory."""
        digest = hashlib.sha256()
        for shard in self.shards:
            digest.update(shard.sha256.encode())
        return digest.hexdigest()

    def shard_array(self, shard: Shard) -> np.ndarray:
        """The shard's rows, memory-mapped read-only: ``[rows, *item_shape]``."""
        return np.load(self.path / shard.file, mmap_mode="r", allow_pickle=False)

    def load(self) -> np.ndarray:
        """All rows in manifest order, in memory: ``[rows, *item_shape]``."""
        arrays = [self.shard_array(s) for s in self.shards]
        if len(arrays) == 1:
            return np.array(arrays[0])
        return np.concatenate(arrays, axis=0)

    def counts_by_origin(self) -> dict[str, int]:
        """``{"real": n, "synthetic": m}``: rows per origin type."""
        counts: dict[str, int] = {}
        for shard in self.shards:
            key = shard.origin.get("type", "unknown")
            counts[key] = counts.get(key, 0) + shard.rows
        return counts


def open_dataset(path: str | Path, verify_hash: bool = True, kind: str | None = None) -> Dataset:
    """Read and verify a dataset directory.

    Checks that the manifest parses and lists each shard once with at least one row, that each
    shard exists, its ``.npy`` header agrees with the manifest (dtype, item shape, row count — this
    catches truncation) and, with ``verify_hash``, that its sha256 matches and, for vectors, that
    every value is finite, for text, that every token id is in ``[0, vocab_size)`` (checked in the
    same read as the hash). A text dataset's ``tokenizer.json`` must match its manifest entry.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise DatasetError(f"dataset directory not found: {path}")
    if not manifest_path.is_file():
        raise DatasetError(f"{path} is not a dataset directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{manifest_path} is corrupted (not valid JSON: {err})") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{manifest_path} is corrupted: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{manifest_path}: unknown format {manifest.get('format')!r}, expected {FORMAT!r}")
    dataset_kind = manifest.get("kind")
    if dataset_kind not in KINDS:
        raise DatasetError(f"{manifest_path}: kind must be one of {', '.join(KINDS)}, got {dataset_kind!r}")
    if kind is not None and dataset_kind != kind:
        raise DatasetError(f"{path} holds {dataset_kind} data, expected {kind}")
    try:
        item_shape = tuple(int(x) for x in manifest["item_shape"])
        dtype = manifest.get("dtype", KINDS[dataset_kind][0])
        shards = tuple(
            Shard(file=s["file"], rows=int(s["rows"]), sha256=s["sha256"], origin=s.get("origin", {}))
            for s in manifest["shards"]
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DatasetError(f"{manifest_path} is corrupted: malformed manifest ({type(err).__name__}: {err})") from None
    seen: set[str] = set()
    for shard in shards:
        if not isinstance(shard.file, str) or Path(shard.file).name != shard.file:
            raise DatasetError(f"{manifest_path} is corrupted: shard file {shard.file!r} is not a plain file name")
        if shard.file in seen:
            raise DatasetError(f"{manifest_path} lists shard {shard.file} twice (its rows would count twice)")
        seen.add(shard.file)
        if shard.rows < 1:
            raise DatasetError(
                f"{manifest_path}: shard {shard.file} has {shard.rows} rows; every shard needs at least one"
            )
    if not shards:
        raise DatasetError(f"{manifest_path} lists no shards")
    if dtype not in KINDS[dataset_kind]:
        raise DatasetError(
            f"{manifest_path}: {dataset_kind} data must be {' or '.join(KINDS[dataset_kind])}, got dtype {dtype!r}"
        )
    tokenizer = _check_tokenizer(path, manifest, item_shape, verify_hash) if dataset_kind == "text" else None
    dataset = Dataset(
        path, dataset_kind, item_shape, shards, manifest.get("provenance", {}), np.dtype(dtype), tokenizer
    )
    for shard in shards:
        _verify_shard(dataset, shard, verify_hash)
    return dataset


def _verify_shard(dataset: Dataset, shard: Shard, verify_hash: bool) -> None:
    file = dataset.path / shard.file
    if not file.is_file():
        raise DatasetError(f"shard {shard.file} listed in {dataset.path / MANIFEST} is missing")
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DatasetError(f"shard {file} is corrupted or truncated: {err}") from None
    expected = (shard.rows, *dataset.item_shape)
    if array.shape != expected or array.dtype != dataset.dtype:
        raise DatasetError(
            f"shard {file} holds {array.dtype}{list(array.shape)}, the manifest says {dataset.dtype}{list(expected)}"
        )
    identity = _file_identity(file)
    vocab_size = dataset.tokenizer["vocab_size"] if dataset.tokenizer is not None else None
    # what a cached verification vouches for: the bytes, and for text the vocabulary they were checked against
    verified = shard.sha256 if vocab_size is None else f"{shard.sha256}/vocab_size={vocab_size}"
    if verify_hash and _VERIFIED.get(identity) != verified:
        floats = dataset.dtype if dataset.kind == "vector" else None
        if vocab_size is None:
            actual, bad = _hash_and_find_non_finite(file, array.offset, floats)
        else:
            actual, bad = _hash_and_find_non_finite(file, array.offset, floats, vocab_size)
        if actual != shard.sha256:
            raise DatasetError(f"shard {file} is corrupted: sha256 {actual[:12]}... != manifest {shard.sha256[:12]}...")
        if bad is not None and vocab_size is not None:
            row, column = divmod(bad, math.prod(dataset.item_shape))
            raise DatasetError(
                f"shard {file} holds token id {int(array[row, column])} at row {row}, outside the tokenizer's "
                f"vocabulary [0, {vocab_size}) ({dataset.tokenizer['name']})"
            )
        if bad is not None:
            raise DatasetError(
                f"shard {file} holds NaN or infinite values (first at row {bad // math.prod(dataset.item_shape)}); "
                "vectors must be finite"
            )
        if time.time_ns() - identity[3] > _SETTLED_NS and _file_identity(file) == identity:
            _VERIFIED[identity] = verified


def _check_tokenizer(path: Path, manifest: Mapping[str, Any], item_shape: tuple[int, ...], verify_hash: bool) -> dict:
    """A text dataset's manifest ``"tokenizer"`` entry, checked (and its file's sha256, with ``verify_hash``)."""
    manifest_path = path / MANIFEST
    if len(item_shape) != 1 or item_shape[0] < 1:
        raise DatasetError(f"{manifest_path}: text rows are [N, L] token ids, got item_shape {list(item_shape)}")
    entry = manifest.get("tokenizer")
    if not isinstance(entry, dict):
        raise DatasetError(f'{manifest_path}: a text dataset needs a "tokenizer" entry, got {entry!r}')
    missing = [key for key in _TOKENIZER_KEYS if key not in entry]
    if missing:
        raise DatasetError(f"{manifest_path}: the tokenizer entry lacks {', '.join(missing)}")
    name = entry["file"]
    if not isinstance(name, str) or Path(name).name != name or name == MANIFEST:
        raise DatasetError(f"{manifest_path} is corrupted: tokenizer file {name!r} is not a plain file name")
    ints = {key: entry[key] for key in ("vocab_size", "bos_id", "eos_id")}
    if any(isinstance(v, bool) or not isinstance(v, int) for v in ints.values()) or ints["vocab_size"] < 1:
        raise DatasetError(f"{manifest_path}: tokenizer vocab_size, bos_id and eos_id must be integers, got {ints}")
    for key in ("bos_id", "eos_id"):
        if not 0 <= ints[key] < ints["vocab_size"]:
            raise DatasetError(
                f"{manifest_path}: tokenizer {key} {ints[key]} is outside its vocabulary [0, {ints['vocab_size']})"
            )
    file = path / name
    if not file.is_file():
        raise DatasetError(f"tokenizer file {name} listed in {manifest_path} is missing")
    identity = _file_identity(file)
    if verify_hash and _VERIFIED.get(identity) != entry["sha256"]:
        actual = atomic.sha256_file(file)
        if actual != entry["sha256"]:
            raise DatasetError(
                f"tokenizer file {file} is corrupted: sha256 {actual[:12]}... "
                f"!= manifest {str(entry['sha256'])[:12]}..."
            )
        if time.time_ns() - identity[3] > _SETTLED_NS and _file_identity(file) == identity:
            _VERIFIED[identity] = actual
    return dict(entry)


def _file_identity(file: Path) -> tuple[int, int, int, int]:
    """What ties a hash to a file's bytes within one process: device, inode, size, mtime (ns)."""
    stat = file.stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _hash_and_find_non_finite(
    file: Path, data_offset: int, floats: np.dtype | None, vocab_size: int | None = None
) -> tuple[str, int | None]:
    """The file's sha256 and, for float data of dtype ``floats`` (after the ``.npy`` header of
    ``data_offset`` bytes), the index of its first NaN/inf value (None: all finite), or for int32
    token ids with ``vocab_size``, the index of the first id outside ``[0, vocab_size)``: in one read."""
    digest, position, bad = hashlib.sha256(), 0, None
    dtype = floats if floats is not None else (np.dtype(np.int32) if vocab_size is not None else None)
    with open(file, "rb") as handle:
        digest.update(handle.read(data_offset))
        while block := handle.read(_READ_CHUNK):
            digest.update(block)
            if dtype is not None and bad is None:
                values = np.frombuffer(block, dtype=dtype, count=len(block) // dtype.itemsize)
                found = _first_non_finite(values) if floats is not None else _first_out_of_range(values, vocab_size)
                bad = None if found is None else position + found
                position += len(values)
    return digest.hexdigest(), bad


def _first_out_of_range(ids: np.ndarray, vocab_size: int) -> int | None:
    """The flat index of the first token id outside ``[0, vocab_size)`` (None: all in range)."""
    flat = ids.reshape(-1)
    for start in range(0, len(flat), _CHECK_CHUNK):
        chunk = flat[start : start + _CHECK_CHUNK]
        outside = (chunk < 0) | (chunk >= vocab_size)
        if outside.any():
            return start + int(np.argmax(outside))
    return None


def _first_non_finite(values: np.ndarray) -> int | None:
    """The flat index of the first NaN/inf in ``values`` (None: all finite), checked in chunks."""
    flat = values.reshape(-1)
    for start in range(0, len(flat), _CHECK_CHUNK):
        finite = np.isfinite(flat[start : start + _CHECK_CHUNK])
        if not finite.all():
            return start + int(np.argmin(finite))
    return None


def kind_of(array: np.ndarray) -> str:
    """``image`` for uint8 ``[N, H, W, C]``, ``vector`` for float32 or float64 ``[N, D]``, ``text``
    for int32 ``[N, L]`` token ids."""
    if array.dtype == np.uint8 and array.ndim == 4:
        return "image"
    if array.dtype.name in KINDS["vector"] and array.ndim == 2:
        return "vector"
    if array.dtype == np.int32 and array.ndim == 2:
        return "text"
    raise DatasetError(
        f"rows must be uint8 [N, H, W, C] images or float32/float64 [N, D] vectors (text: int32 [N, L] "
        f"token ids), got {array.dtype}{list(array.shape)}"
    )


def write_dataset(
    out_dir: str | Path,
    shards: Sequence[NewShard],
    provenance: Mapping[str, Any] | None = None,
    tokenizer: TextTokenizer | None = None,
) -> Dataset:
    """Write a dataset directory atomically and return it (verified).

    New rows are saved as ``.npy``; reused shards are hard-linked or copied byte-for-byte, so
    DVC stores a real shard once however many mixed sets contain it. Vectors of float32 and
    float64 shards make a float64 dataset: the float32 rows are widened (exactly) and re-encoded.

    Text rows (int32 ``[N, L]``) need a tokenizer: ``tokenizer`` (a
    :class:`~autophagy.data.text.TextTokenizer`, written as ``tokenizer.json``) or, without it,
    the tokenizer of the datasets whose shards are reused (its file linked byte for byte). The
    given tokenizer and every reused shard's must be the same (sha256); every id must be in
    ``[0, vocab_size)``.
    """
    if not shards:
        raise DatasetError("a dataset needs at least one shard")
    kinds, shapes, dtypes = set(), set(), set()
    for index, shard in enumerate(shards):
        if shard.array is not None:
            kinds.add(kind_of(shard.array))
            shapes.add(tuple(shard.array.shape[1:]))
            dtypes.add(shard.array.dtype)
            _check_new_rows(
                f"cannot write {out_dir}: shard {shard.name or _default_name(index)} ({dict(shard.origin)})",
                shard.array,
            )
        elif shard.source is not None:
            kinds.add(shard.source[0].kind)
            shapes.add(shard.source[0].item_shape)
            dtypes.add(shard.source[0].dtype)
        else:
            raise DatasetError("a new shard needs rows or a source shard")
    if len(kinds) > 1 or len(shapes) > 1:
        raise DatasetError(f"shards disagree: kinds {sorted(kinds)}, item shapes {sorted(shapes)}")
    kind, item_shape, dtype = kinds.pop(), shapes.pop(), np.result_type(*dtypes)
    token_source = _tokenizer_source(out_dir, kind, shards, tokenizer)
    if token_source is not None:
        vocab_size, token_name = token_source[0]["vocab_size"], token_source[0]["name"]
        for index, shard in enumerate(shards):
            if shard.array is not None:
                bad = _first_out_of_range(np.asarray(shard.array), vocab_size)
                if bad is not None:
                    row, column = divmod(bad, shard.array.shape[1])
                    raise DatasetError(
                        f"cannot write {out_dir}: shard {shard.name or _default_name(index)} holds token id "
                        f"{int(shard.array[row, column])} at row {row}, outside the vocabulary [0, {vocab_size}) "
                        f"of tokenizer {token_name}"
                    )
    listed = []
    with atomic.staging_dir(out_dir) as stage:
        for index, shard in enumerate(shards):
            if shard.source is not None and shard.source[0].dtype != dtype:  # float32 rows in a float64 set
                shard = NewShard(
                    origin=shard.origin,
                    array=shard.source[0].shard_array(shard.source[1]),
                    name=shard.name or shard.source[1].file,
                )
            if shard.source is not None:
                source_dataset, source_shard = shard.source
                name = shard.name or source_shard.file
                atomic.link_or_copy(source_dataset.path / source_shard.file, stage / name)
                rows, digest = source_shard.rows, source_shard.sha256
            else:
                name = shard.name or _default_name(index)
                array = np.ascontiguousarray(shard.array, dtype=dtype)
                np.save(stage / name, array, allow_pickle=False)
                rows, digest = len(array), atomic.sha256_file(stage / name)
            if any(entry["file"] == name for entry in listed):
                raise DatasetError(f"two shards would both be named {name}")
            if token_source is not None and name == TOKENIZER_FILE:
                raise DatasetError(f"a shard of the text dataset {out_dir} cannot be named {TOKENIZER_FILE}")
            listed.append({"file": name, "rows": rows, "sha256": digest, "origin": dict(shard.origin)})
        manifest = {
            "format": FORMAT,
            "kind": kind,
            "item_shape": list(item_shape),
            "dtype": dtype.name,
            "rows": sum(e["rows"] for e in listed),
            "shards": listed,
            "provenance": dict(provenance or {}),
        }
        if token_source is not None:
            entry, tokenizer_file = token_source
            if isinstance(tokenizer_file, Path):
                atomic.link_or_copy(tokenizer_file, stage / TOKENIZER_FILE)
            else:
                atomic.write_bytes(stage / TOKENIZER_FILE, tokenizer_file)
            manifest["tokenizer"] = {**entry, "file": TOKENIZER_FILE}
        atomic.write_json(stage / MANIFEST, manifest)
    return open_dataset(out_dir, verify_hash=False)


def _tokenizer_source(
    out_dir: str | Path, kind: str, shards: Sequence[NewShard], tokenizer: TextTokenizer | None
) -> tuple[dict[str, Any], Path | bytes] | None:
    """The tokenizer of a text dataset to write: its manifest entry and its file (a reused
    dataset's ``tokenizer.json``) or bytes (the given tokenizer's JSON); None for other kinds."""
    if kind != "text":
        if tokenizer is not None:
            raise DatasetError(f"cannot write {out_dir}: a tokenizer was given for {kind} data (text only)")
        return None
    found: dict[str, tuple[str, dict[str, Any], Path | bytes]] = {}  # sha256 -> (who, entry, file or bytes)
    if tokenizer is not None:
        found[tokenizer.sha256] = (
            f"the given tokenizer {tokenizer.name}",
            tokenizer.entry(TOKENIZER_FILE),
            tokenizer.to_json().encode(),
        )
    for shard in shards:
        if shard.source is None:
            continue
        source = shard.source[0]
        if source.tokenizer is None:
            raise DatasetError(f"cannot write {out_dir}: the text dataset {source.path} has no tokenizer")
        entry = dict(source.tokenizer)
        if entry["sha256"] not in found:
            found[entry["sha256"]] = (f"tokenizer {entry['name']} of {source.path}", entry, source.path / entry["file"])
    if len(found) > 1:
        named = "; ".join(f"{who} (sha256 {sha[:12]}...)" for sha, (who, _, _) in found.items())
        raise DatasetError(f"cannot write {out_dir}: its text rows come from different tokenizers: {named}")
    if not found:
        raise DatasetError(
            f"cannot write {out_dir}: text rows need their tokenizer (write_dataset(..., tokenizer=...)) "
            "and no reused shard carries one"
        )
    _, entry, file = next(iter(found.values()))
    return entry, file


def _default_name(index: int) -> str:
    return f"shard-{index:03d}.npy"


def _check_new_rows(what: str, array: np.ndarray) -> None:
    """Refuse to write an empty shard or vectors with NaN/inf (a diverged model's samples, say)."""
    if len(array) == 0:
        raise DatasetError(f"{what} has no rows")
    if array.dtype.kind == "f":
        bad = _first_non_finite(array)
        if bad is not None:
            count = int(np.count_nonzero(~np.isfinite(array).all(axis=1)))
            raise DatasetError(
                f"{what} holds NaN or infinite values in {count} of {len(array)} rows (first at row "
                f"{bad // array[0].size}); vectors must be finite"
            )


def origins_summary(shards: Iterable[Shard]) -> list[dict[str, Any]]:
    """The origins and row counts of shards, for logs and metrics files."""
    return [{"file": s.file, "rows": s.rows, **s.origin} for s in shards]
