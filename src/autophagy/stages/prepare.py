"""``prepare``: write the real train and test sets as dataset directories.

Text sources build one tokenizer (a BPE trained on the train split, or a pretrained one) and write
both splits with it: each directory carries the same ``tokenizer.json``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from autophagy.config import DataConfig, ExperimentConfig, to_dict
from autophagy.data.dataset import NewShard, write_dataset
from autophagy.data.sources import load_split, text_corpus, text_rows, text_tokenizer
from autophagy.data.strategies import STRATEGIES


def pool_config(cfg: ExperimentConfig) -> DataConfig:
    """The data config of the training split: for ``fresh-real`` the pool the draws come from."""
    if not STRATEGIES[cfg.loop.strategy].fresh_real:
        return cfg.data
    synthetic_source = cfg.data.source in ("toy2d", "gaussian")
    pool = cfg.data.n_pool or (10 * cfg.data.n_train if synthetic_source else None)
    return dataclasses.replace(cfg.data, n_train=pool)


def run(cfg: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write ``out_dir/train`` and ``out_dir/test``; returns their row counts."""
    out_dir = Path(out_dir)
    if cfg.data.is_text:
        return _run_text(cfg, out_dir)
    result: dict[str, Any] = {}
    for split in ("train", "test"):
        rows = load_split(pool_config(cfg) if split == "train" else cfg.data, split)
        origin = {"type": "real", "source": cfg.data.source, "split": split}
        dataset = write_dataset(
            out_dir / split,
            [NewShard(origin=origin, array=rows, name=f"real-{split}.npy")],
            {"data": to_dict(cfg.data)},
        )
        result[f"n_{split}"] = dataset.rows
        result["item_shape"] = list(dataset.item_shape)
        result["kind"] = dataset.kind
    return result


def _run_text(cfg: ExperimentConfig, out_dir: Path) -> dict[str, Any]:
    """The token rows of both splits, written with one tokenizer."""
    corpus = text_corpus(cfg.data)
    tokenizer = text_tokenizer(cfg.data, corpus)
    result: dict[str, Any] = {}
    for split in ("train", "test"):
        rows = text_rows(pool_config(cfg) if split == "train" else cfg.data, corpus, split, tokenizer)
        origin = {"type": "real", "source": cfg.data.source, "split": split}
        provenance = {"data": to_dict(cfg.data), "corpus": dict(corpus.provenance), "tokenizer": tokenizer.name}
        dataset = write_dataset(
            out_dir / split,
            [NewShard(origin=origin, array=rows, name=f"real-{split}.npy")],
            provenance,
            tokenizer=tokenizer,
        )
        result[f"n_{split}"] = dataset.rows
        result["item_shape"] = list(dataset.item_shape)
        result["kind"] = dataset.kind
    result["tokenizer"] = {"name": tokenizer.name, "sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size}
    return result
