"""``sample``: draw a synthetic data set from a checkpoint.

Row ``i`` depends only on ``(seed, generation, i)``, so a large sample set can be drawn in
pieces (``start``/``count``) on several workers and merged into one data set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from autophagy.config import ConfigError, ExperimentConfig
from autophagy.data.dataset import NewShard, write_dataset
from autophagy.models.checkpoint import load_checkpoint, read_checkpoint_config
from autophagy.seeding import derive_seed


def run(cfg: ExperimentConfig, model_dir: str | Path, out_dir: str | Path, n: int, seed: int, generation: int) -> dict[str, Any]:
    """Write ``n`` samples of the model in ``model_dir`` to the dataset directory ``out_dir``."""
    if n < 1:
        raise ConfigError(f"sample: the number of samples must be >= 1, got {n}")
    model = load_checkpoint(model_dir, family=cfg.model.family, with_train_state=False)
    meta = read_checkpoint_config(model_dir)
    started = time.perf_counter()
    rows = model.sample(n, derive_seed(seed, "sample", generation), batch_size=cfg.sample.batch_size, device=cfg.train.device,
                        temperature=cfg.sample.temperature)
    seconds = time.perf_counter() - started
    origin = {"type": "synthetic", "generation": generation, "seed": seed, "lambda": meta.get("lambda"),
              "temperature": cfg.sample.temperature,
              "model_data_hash": meta.get("data_hash")}
    write_dataset(out_dir, [NewShard(origin=origin, array=rows, name=f"synthetic-gen-{generation:03d}.npy")],
                  {"model": str(model_dir), "family": cfg.model.family})
    return {"sample_count": n, "sample_seconds": seconds, "sample_images_per_second": n / seconds if seconds else float("nan")}
