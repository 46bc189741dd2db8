"""``mix``: the training set of the next generation (Bertrand et al. 2024, Alg. 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autophagy.config import ExperimentConfig, check_lambda
from autophagy.data.dataset import open_dataset
from autophagy.data.mixing import mix


def run(cfg: ExperimentConfig, real_dir: str | Path, synthetic_dir: str | Path | None, lam: float, out_dir: str | Path,
        generation: int) -> dict[str, Any]:
    """All real rows + floor(lambda n) rows of ``synthetic_dir`` (n synthetic rows only for lambda = inf)."""
    check_lambda(lam)
    real = open_dataset(real_dir)
    synthetic = open_dataset(synthetic_dir) if synthetic_dir is not None and lam > 0 else None
    dataset = mix(real, synthetic, lam, out_dir, provenance={"generation": generation, "strategy": cfg.loop.strategy})
    counts = dataset.counts_by_origin()
    return {"train_set_real": counts.get("real", 0), "train_set_synthetic": counts.get("synthetic", 0)}
