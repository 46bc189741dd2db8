"""Loop strategies: which rows train generation t (``loop.strategy``), and the mixing rule they share.

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

Bertrand et al. (2024), Alg. 1 (``replace``, :func:`mix`): lambda is a ratio, not a fraction:
lambda = 1 means as many synthetic as real items, lambda = 0 is the clean baseline. lambda = inf
means no real data under every strategy: ``replace`` and ``fully-synthetic`` train on n samples of
generation t-1, ``accumulate`` on the n samples of every generation 0..t-1 (t n rows),
``accumulate-subsample`` on n rows drawn uniformly from that synthetic pool (the size its replace
counterpart trains on) -- the fully synthetic variants of the accumulate strategies.

Each strategy is one :class:`Strategy` in :data:`STRATEGIES`, registered with
:func:`strategy` on its compose function; the config, the plan (which sample sets a mix reads,
whether it draws fresh real items) and the Kubeflow pipeline ask the registry, never the name.
A compose function builds its training set from :func:`real_shards`, :func:`first_rows` and
:func:`combine` and writes it with :func:`~autophagy.data.dataset.write_dataset`.

The real shards are reused byte-for-byte wherever the whole shard is kept; sampled rows are
sliced or gathered from the memory-mapped shards, never re-encoded. Text sets (token rows) carry
their tokenizer into the mix (:func:`carried_tokenizer`); a sample set whose tokenizer differs from
the real set's is refused (:func:`check_like`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autophagy.config import check_lambda, format_lambda
from autophagy.config.registry import Registry
from autophagy.data.dataset import Dataset, DatasetError, NewShard, write_dataset

if TYPE_CHECKING:
    from autophagy.data.text import TextTokenizer

#: compose(lam, real, synthetic, out_dir, seed, info) -> the training set written to out_dir
Compose = Callable[[float, Dataset, Sequence[Dataset], Path, int, dict[str, Any]], Dataset]


@dataclass(frozen=True)
class Strategy:
    """One loop strategy. ``compose`` writes generation t's training set from the real set and
    the sample sets :mod:`autophagy.plan` hands it (oldest first). ``pooled``: it reads the sample
    sets of *every* earlier generation (Kubeflow gathers them into a pool task first), else only
    generation t-1's. ``fresh_real``: each generation trains on ``data.n_train`` new real items
    drawn from a larger pool (:func:`fresh_real_draw`), generation 0 included."""

    name: str
    compose: Compose
    pooled: bool = False
    fresh_real: bool = False


#: Every loop strategy, by name.
STRATEGIES: Registry[Strategy] = Registry("loop.strategy")


def strategy(name: str, *, pooled: bool = False, fresh_real: bool = False) -> Callable[[Compose], Compose]:
    """Register the decorated compose function as the strategy ``name`` (see docs/extending.md)."""

    def register(compose: Compose) -> Compose:
        STRATEGIES.register(Strategy(name, compose, pooled=pooled, fresh_real=fresh_real))
        return compose

    return register


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
    chosen = STRATEGIES[strategy]
    check_lambda(lam)
    if not synthetic and lam > 0:
        raise DatasetError(
            f"strategy {strategy} with lambda = {format_lambda(lam)} needs synthetic data; none was given"
        )
    return chosen.compose(lam, real, synthetic, Path(out_dir), seed, {"strategy": strategy, **(provenance or {})})


# ------------------------------------------------------------------------------ the strategies


@strategy("replace")
def _replace(lam, real, synthetic, out_dir, seed, info) -> Dataset:
    return mix(real, synthetic[-1] if synthetic else None, lam, out_dir, info)


@strategy("fully-synthetic")
def _fully_synthetic(lam, real, synthetic, out_dir, seed, info) -> Dataset:
    k = synthetic_count(lam, real.rows)
    if k == 0:
        raise DatasetError("strategy fully-synthetic with lambda = 0 would train on nothing; use lambda > 0")
    check_like(synthetic[-1], real, k)
    return write_dataset(
        out_dir,
        first_rows(synthetic[-1], k),
        {"n_real": 0, "n_synthetic": k, **info},
        tokenizer=carried_tokenizer(real),
    )


@strategy("accumulate", pooled=True)
def _accumulate(lam, real, synthetic, out_dir, seed, info) -> Dataset:
    return _accumulated(lam, real, synthetic, out_dir, seed, info, subsample=False)


@strategy("accumulate-subsample", pooled=True)
def _accumulate_subsample(lam, real, synthetic, out_dir, seed, info) -> Dataset:
    return _accumulated(lam, real, synthetic, out_dir, seed, info, subsample=True)


@strategy("fresh-real", fresh_real=True)
def _fresh_real(lam, real, synthetic, out_dir, seed, info) -> Dataset:
    return mix(real, synthetic[-1] if synthetic else None, lam, out_dir, info)  # real: this generation's draw


def _accumulated(lam, real, synthetic, out_dir, seed, info, *, subsample: bool) -> Dataset:
    """D_real (none for lambda = inf) + the first k rows of every sample set; subsampled to n + k rows."""
    k = synthetic_count(lam, real.rows)
    n_real = 0 if math.isinf(lam) else real.rows  # lambda = inf: the synthetic pool alone
    for dataset in synthetic if k > 0 else ():
        check_like(dataset, real, k)
    shards = combine(real_shards(real) if n_real else [], *(first_rows(d, k) for d in (synthetic if k > 0 else ())))
    if subsample:
        shards = _subsample(shards, n_real + k, seed)
    rows = sum(_shard_rows(s) for s in shards)
    return write_dataset(
        out_dir,
        shards,
        {"lambda": format_lambda(lam), "n_real": n_real, "n_rows": rows, **info},
        tokenizer=carried_tokenizer(real),
    )


# ------------------------------------------------------------------------------ the mixing rule


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
    """Write the training set for ``lam`` (Bertrand et al. 2024, Alg. 1): all real rows (unless
    lambda = inf) + the first ``synthetic_count(lam, n)`` rows of ``synthetic``.

    The real shards are reused byte-for-byte; the synthetic rows are sliced, not re-encoded.
    ``real``: [n, *item_shape]; ``synthetic``: [m, *item_shape] with m >= the count needed.
    """
    check_lambda(lam)
    n = real.rows
    k = synthetic_count(lam, n) if lam > 0 else 0
    shards = [] if math.isinf(lam) else real_shards(real)
    if k > 0:
        if synthetic is None:
            raise DatasetError(
                f"lambda = {format_lambda(lam)} needs {k} synthetic samples but no synthetic data set was given"
            )
        if synthetic.kind != real.kind or synthetic.item_shape != real.item_shape:
            raise DatasetError(
                f"synthetic data {synthetic.path} holds {synthetic.kind} {list(synthetic.item_shape)}, "
                f"real data {real.path} holds {real.kind} {list(real.item_shape)}"
            )
        check_same_tokenizer(synthetic, real)
        if synthetic.rows < k:
            raise DatasetError(
                f"lambda = {format_lambda(lam)} with n = {n} real items needs {k} synthetic samples, "
                f"but {synthetic.path} has only {synthetic.rows}"
            )
        shards = combine(shards, first_rows(synthetic, k))
    info = {"lambda": format_lambda(lam), "n_real": n, "n_synthetic": k, **(provenance or {})}
    return write_dataset(out_dir, shards, info, tokenizer=carried_tokenizer(real))


def fresh_real_draw(pool: Dataset, n: int, out_dir: str | Path, seed: int, generation: int) -> Dataset:
    """n real items drawn without replacement from ``pool`` for one generation (fresh-real loop)."""
    if n > pool.rows:
        raise DatasetError(
            f"fresh-real needs data.n_train = {n} new items per generation but the pool {pool.path} has {pool.rows}"
        )
    rng = np.random.default_rng([seed, generation, 0xF8E5])
    index = np.sort(rng.choice(pool.rows, size=n, replace=False))
    rows = pool.load()[index]
    origin = {**pool.shards[0].origin, "type": "real", "fresh_draw": generation}
    return write_dataset(
        out_dir,
        [NewShard(origin=origin, array=rows, name=f"real-gen-{generation:03d}.npy")],
        {"pool": str(pool.path), "generation": generation},
        tokenizer=carried_tokenizer(pool),
    )


# ------------------------------------------------------------------------------ shards


def check_like(dataset: Dataset, real: Dataset, k: int) -> None:
    """Refuse a sample set of another kind or shape than the real data, or with fewer than ``k`` rows."""
    if dataset.kind != real.kind or dataset.item_shape != real.item_shape:
        raise DatasetError(
            f"synthetic data {dataset.path} ({dataset.kind} {list(dataset.item_shape)}) does not match "
            f"the real data ({real.kind} {list(real.item_shape)})"
        )
    check_same_tokenizer(dataset, real)
    if dataset.rows < k:
        raise DatasetError(f"{dataset.path} has {dataset.rows} samples, {k} are needed")


def check_same_tokenizer(dataset: Dataset, real: Dataset) -> None:
    """Refuse token rows of another tokenizer than the real data's (their ids would mean other words)."""
    if dataset.tokenizer is None or real.tokenizer is None:
        return
    if dataset.tokenizer["sha256"] != real.tokenizer["sha256"]:
        raise DatasetError(
            f"synthetic data {dataset.path} was tokenized by {dataset.tokenizer['name']} "
            f"(sha256 {dataset.tokenizer['sha256'][:12]}...), the real data {real.path} by "
            f"{real.tokenizer['name']} (sha256 {real.tokenizer['sha256'][:12]}...)"
        )


def carried_tokenizer(dataset: Dataset) -> TextTokenizer | None:
    """The tokenizer a set written from ``dataset``'s rows carries (text sets; None for the others)."""
    if dataset.kind != "text":
        return None
    from autophagy.data.text import dataset_tokenizer  # tokenizers: imported for text data only

    return dataset_tokenizer(dataset)


def real_shards(real: Dataset) -> list[NewShard]:
    """Every shard of ``real``, reused byte-for-byte."""
    return [NewShard(origin=s.origin, source=(real, s)) for s in real.shards]


def first_rows(dataset: Dataset, k: int) -> list[NewShard]:
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


def _shard_name(shard: NewShard) -> str:
    return shard.name or shard.source[1].file


def _shard_rows(shard: NewShard) -> int:
    return len(shard.array) if shard.array is not None else shard.source[1].rows


def _shard_array(shard: NewShard) -> np.ndarray:
    return shard.array if shard.array is not None else shard.source[0].shard_array(shard.source[1])


def combine(*groups: Sequence[NewShard]) -> list[NewShard]:
    """The shards of every group, in order; a shard whose file name an earlier one uses is renamed
    ``synthetic-<i>-<name>`` (a sample set and the real set may both hold ``shard-000.npy``)."""
    out: list[NewShard] = []
    taken: set[str] = set()
    for shard in (shard for group in groups for shard in group):
        name, index = _shard_name(shard), 0
        while name in taken:
            name, index = f"synthetic-{index}-{_shard_name(shard)}", index + 1
        taken.add(name)
        out.append(shard if name == _shard_name(shard) else dataclasses.replace(shard, name=name))
    return out


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
            rows = np.asarray(_shard_array(shard)[local])
            out.append(NewShard(origin=shard.origin, array=rows, name=_shard_name(shard)))
    return out
