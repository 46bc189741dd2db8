"""Mixing rules: which rows make up the training set of generation t.

Bertrand et al. (2024), Alg. 1: at generation t >= 1 the model is trained on
D_real ∪ D_synth with |D_synth| = floor(lambda * n) *fresh* samples of generation t-1, where
n = |D_real|. lambda is a ratio, not a fraction: lambda = 1 means as many synthetic as real
items, lambda = 0 is the clean baseline and lambda = inf trains on n synthetic items only.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from autophagy.config import check_lambda, format_lambda
from autophagy.data.dataset import Dataset, DatasetError, NewShard, write_dataset


def synthetic_count(lam: float, n_real: int) -> int:
    """floor(lambda * n); n for lambda = inf.

    lambda is taken at its shortest decimal form (0.29 * 100 = 29, not 28 as in binary floating
    point).
    """
    check_lambda(lam, n_real=n_real)
    if n_real < 1:
        raise DatasetError(f"the real data set is empty (n = {n_real})")
    if math.isinf(lam):
        return n_real
    return math.floor(Fraction(repr(lam)) * n_real)


def mix(
    real: Dataset,
    synthetic: Dataset | None,
    lam: float,
    out_dir: str | Path,
    provenance: Mapping[str, Any] | None = None,
) -> Dataset:
    """Write the training set for ``lam``: all real rows (unless lambda = inf) + the first
    ``synthetic_count(lam, n)`` rows of ``synthetic``.

    The real shards are reused byte-for-byte; the synthetic rows are sliced, not re-encoded.
    ``real``: [n, *item_shape]; ``synthetic``: [m, *item_shape] with m >= the count needed.
    """
    check_lambda(lam)
    n = real.rows
    k = synthetic_count(lam, n) if lam > 0 else 0
    shards: list[NewShard] = []
    if not math.isinf(lam):
        shards += [NewShard(origin=s.origin, source=(real, s)) for s in real.shards]
    if k > 0:
        if synthetic is None:
            raise DatasetError(f"lambda = {format_lambda(lam)} needs {k} synthetic samples but no synthetic data set was given")
        if synthetic.kind != real.kind or synthetic.item_shape != real.item_shape:
            raise DatasetError(
                f"synthetic data {synthetic.path} holds {synthetic.kind} {list(synthetic.item_shape)}, "
                f"real data {real.path} holds {real.kind} {list(real.item_shape)}"
            )
        if synthetic.rows < k:
            raise DatasetError(
                f"lambda = {format_lambda(lam)} with n = {n} real items needs {k} synthetic samples, "
                f"but {synthetic.path} has only {synthetic.rows}"
            )
        shards += _unique_names(_first_rows(synthetic, k), {_name(s) for s in shards})
    return write_dataset(out_dir, shards, {"lambda": format_lambda(lam), "n_real": n, "n_synthetic": k, **(provenance or {})})


def _first_rows(dataset: Dataset, k: int) -> list[NewShard]:
    """The first ``k`` rows of ``dataset`` as shards; whole shards are reused byte-for-byte."""
    out: list[NewShard] = []
    for shard in dataset.shards:
        if k <= 0:
            break
        if shard.rows <= k:
            out.append(NewShard(origin=shard.origin, source=(dataset, shard)))
        else:
            out.append(NewShard(origin=shard.origin, array=dataset.shard_array(shard)[:k], name=shard.file))
        k -= shard.rows
    return out


def _name(shard: NewShard) -> str:
    return shard.name or shard.source[1].file


def _unique_names(shards: list[NewShard], taken: set[str]) -> list[NewShard]:
    """Rename synthetic shards whose file name a real shard already uses (both may be ``shard-000.npy``)."""
    out = []
    for shard in shards:
        name, index = _name(shard), 0
        while name in taken:
            name, index = f"synthetic-{index}-{_name(shard)}", index + 1
        taken.add(name)
        out.append(shard if name == _name(shard) else dataclasses.replace(shard, name=name))
    return out
