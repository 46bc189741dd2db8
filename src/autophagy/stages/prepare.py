"""``prepare``: write the real train and test sets as dataset directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autophagy.config import ExperimentConfig, to_dict
from autophagy.data.dataset import NewShard, write_dataset
from autophagy.data.sources import load_split


def run(cfg: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write ``out_dir/train`` and ``out_dir/test``; returns their row counts."""
    out_dir = Path(out_dir)
    result: dict[str, Any] = {}
    for split in ("train", "test"):
        rows = load_split(cfg.data, split)
        origin = {"type": "real", "source": cfg.data.source, "split": split}
        dataset = write_dataset(out_dir / split, [NewShard(origin=origin, array=rows, name=f"real-{split}.npy")],
                                {"data": to_dict(cfg.data)})
        result[f"n_{split}"] = dataset.rows
        result["item_shape"] = list(dataset.item_shape)
        result["kind"] = dataset.kind
    return result
