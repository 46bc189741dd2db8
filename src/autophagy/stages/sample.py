"""``sample``: draw a synthetic data set from a checkpoint.

Row ``i`` depends only on ``(seed, generation, i)``, so a large sample set can be drawn in
pieces (``start``/``count``) on several workers and merged into one data set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from autophagy import curation
from autophagy.config import ConfigError, ExperimentConfig
from autophagy.data.dataset import open_dataset
from autophagy.data.dataset import NewShard, write_dataset
from autophagy.models.checkpoint import load_checkpoint, read_checkpoint_config
from autophagy.seeding import derive_seed


def run(cfg: ExperimentConfig, model_dir: str | Path, out_dir: str | Path, n: int, seed: int, generation: int,
        features_dir: str | Path | None = None, real_dir: str | Path | None = None) -> dict[str, Any]:
    """Write ``n`` samples of the model in ``model_dir`` to the dataset directory ``out_dir``.

    With ``sample.curation_k = K > 1`` it draws K n candidates and keeps n of them
    (:mod:`autophagy.curation`); the reward may need ``features_dir`` (digits-net) or
    ``real_dir`` (the real training set).
    """
    if n < 1:
        raise ConfigError(f"sample: the number of samples must be >= 1, got {n}")
    model = load_checkpoint(model_dir, family=cfg.model.family, with_train_state=False)
    meta = read_checkpoint_config(model_dir)
    started = time.perf_counter()
    k = cfg.sample.curation_k
    rows = model.sample(n * k, derive_seed(seed, "sample", generation), batch_size=cfg.sample.batch_size,
                        device=cfg.train.device, temperature=cfg.sample.temperature)
    curated = {}
    if k > 1:
        real = open_dataset(real_dir).load() if real_dir is not None else None
        reward = curation.build_reward(cfg.sample.curation_reward, Path(features_dir) if features_dir else None, real)
        rewards = reward(rows)
        keep = curation.select(rewards, k, cfg.sample.curation_beta, derive_seed(seed, "curate", generation) % 2**63)
        rows = rows[keep]
        curated = {"curation_reward_mean": float(rewards.mean()), "curation_kept_reward_mean": float(rewards[keep].mean())}
    seconds = time.perf_counter() - started
    origin = {"type": "synthetic", "generation": generation, "seed": seed, "lambda": meta.get("lambda"),
              "temperature": cfg.sample.temperature, "curation_k": k,
              "model_data_hash": meta.get("data_hash")}
    write_dataset(out_dir, [NewShard(origin=origin, array=rows, name=f"synthetic-gen-{generation:03d}.npy")],
                  {"model": str(model_dir), "family": cfg.model.family})
    return {"sample_count": n, "sample_seconds": seconds,
            "sample_images_per_second": n * k / seconds if seconds else float("nan"), **curated}
