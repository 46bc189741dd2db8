"""Loop strategies: which rows train generation t (``loop.strategy``).

With n real items and k = floor(lambda n) (k = n for lambda = inf) synthetic items per generation:

=======================  ==================================================================  ===========================
strategy                 training set of generation t >= 1                                   reference
=======================  ==================================================================  ===========================
``replace``              D_real + k fresh samples of generation t-1                          Bertrand et al. 2024
``fully-synthetic``      k fresh samples of generation t-1, no real data                     Shumailov et al. 2024
``accumulate``           D_real + the k samples of *every* generation 0..t-1 (grows)        Gerstgrasser et al. 2024
``accumulate-subsample`` that accumulated pool subsampled uniformly to n + k rows           Kazdan et al. 2024
``fresh-real``           n *new* real items from a larger pool + k samples of t-1           Alemohammad et al. 2024
=======================  ==================================================================  ===========================

lambda = inf means no real data under every strategy: ``replace`` and ``fully-synthetic`` train on
n samples of generation t-1, ``accumulate`` on the n samples of every generation 0..t-1 (t n rows),
``accumulate-subsample`` on n rows drawn uniformly from that synthetic pool (the size its replace
counterpart trains on) -- the fully synthetic variants of the accumulate strategies.

The real shards are reused byte-for-byte wherever the whole shard is kept; sampled rows are
sliced or gathered from the memory-mapped shards, never re-encoded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from autophagy.config import check_lambda, format_lambda
from autophagy.data.dataset import Dataset, DatasetError, NewShard, write_dataset
from autophagy.data.mixing import _first_rows, _unique_names, mix, synthetic_count


def compose(
    strategy: str,
    lam: float,
    real: Dataset,
    synthetic: Sequence[Dataset],
    out_dir: str | Path,
    seed: int,
    provenance: Mapping[str, Any] | None = None,
) -> Dataset:
    """Write generation t's training set. ``synthetic``: the sample sets of generations 0..t-1, oldest first."""
    check_lambda(lam)
    if not synthetic and lam > 0:
        raise DatasetError(f"strategy {strategy} with lambda = {format_lambda(lam)} needs synthetic data; none was given")
    info = {"strategy": strategy, **(provenance or {})}
    if strategy in ("replace", "fresh-real"):
        return mix(real, synthetic[-1] if synthetic else None, lam, out_dir, info)
    k = synthetic_count(lam, real.rows)
    if strategy == "fully-synthetic":
        if k == 0:
            raise DatasetError("strategy fully-synthetic with lambda = 0 would train on nothing; use lambda > 0")
        return _only_synthetic(synthetic[-1], k, real, out_dir, info)
    if strategy in ("accumulate", "accumulate-subsample"):
        n_real = 0 if math.isinf(lam) else real.rows  # lambda = inf: the synthetic pool alone
        shards = [NewShard(origin=s.origin, source=(real, s)) for s in real.shards] if n_real else []
        for dataset in synthetic if k > 0 else ():
            _check_like(dataset, real, k)
            shards += _unique_names(_first_rows(dataset, k), {_shard_name(s) for s in shards})
        if strategy == "accumulate-subsample":
            shards = _subsample(shards, n_real + k, seed)
        rows = sum(_shard_rows(s) for s in shards)
        return write_dataset(out_dir, shards, {"lambda": format_lambda(lam), "n_real": n_real, "n_rows": rows, **info})
    raise DatasetError(f"unknown strategy {strategy!r}")


def fresh_real_draw(pool: Dataset, n: int, out_dir: str | Path, seed: int, generation: int) -> Dataset:
    """n real items drawn without replacement from ``pool`` for one generation (fresh-real loop)."""
    if n > pool.rows:
        raise DatasetError(f"fresh-real needs data.n_train = {n} new items per generation but the pool {pool.path} has {pool.rows}")
    rng = np.random.default_rng([seed, generation, 0xF8E5])
    index = np.sort(rng.choice(pool.rows, size=n, replace=False))
    rows = pool.load()[index]
    origin = {**pool.shards[0].origin, "type": "real", "fresh_draw": generation}
    return write_dataset(out_dir, [NewShard(origin=origin, array=rows, name=f"real-gen-{generation:03d}.npy")],
                         {"pool": str(pool.path), "generation": generation})


def _only_synthetic(dataset: Dataset, k: int, real: Dataset, out_dir, info) -> Dataset:
    _check_like(dataset, real, k)
    return write_dataset(out_dir, _first_rows(dataset, k), {"n_real": 0, "n_synthetic": k, **info})


def _check_like(dataset: Dataset, real: Dataset, k: int) -> None:
    if dataset.kind != real.kind or dataset.item_shape != real.item_shape:
        raise DatasetError(f"synthetic data {dataset.path} ({dataset.kind} {list(dataset.item_shape)}) does not match "
                           f"the real data ({real.kind} {list(real.item_shape)})")
    if dataset.rows < k:
        raise DatasetError(f"{dataset.path} has {dataset.rows} samples, {k} are needed")


def _shard_name(shard: NewShard) -> str:
    return shard.name or shard.source[1].file


def _shard_rows(shard: NewShard) -> int:
    return len(shard.array) if shard.array is not None else shard.source[1].rows


def _shard_array(shard: NewShard) -> np.ndarray:
    return shard.array if shard.array is not None else shard.source[0].shard_array(shard.source[1])


def _subsample(shards: list[NewShard], size: int, seed: int) -> list[NewShard]:
    """Keep ``size`` rows drawn uniformly without replacement from all shards; each shard keeps its origin."""
    counts = [_shard_rows(s) for s in shards]
    total = sum(counts)
    if size >= total:
        return shards
    chosen = np.sort(np.random.default_rng([seed, 0x5AB5]).choice(total, size=size, replace=False))
    out, start = [], 0
    for shard, count in zip(shards, counts):
        local = chosen[(chosen >= start) & (chosen < start + count)] - start
        start += count
        if len(local) == count:
            out.append(shard)
        elif len(local):
            out.append(NewShard(origin=shard.origin, array=np.asarray(_shard_array(shard)[local]), name=_shard_name(shard)))
    return out
