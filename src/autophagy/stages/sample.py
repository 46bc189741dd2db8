"""``sample``: draw a synthetic data set from a checkpoint.

Row ``i`` depends only on ``(seed, generation, i)``, so a large sample set can be drawn in
pieces (``run(..., n=count, start=first row)`` on several GPUs or pods) and joined with
:func:`merge` into the data set one worker would have drawn (``autophagy sample --start``,
``autophagy merge-samples``). It is drawn batch by batch (the batches ``model.sample`` would
draw), with progress and ETA on stderr (:mod:`autophagy.progress`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from autophagy import curation
from autophagy.config import ConfigError, ExperimentConfig
from autophagy.data.dataset import NewShard, open_dataset, write_dataset
from autophagy.models.checkpoint import load_checkpoint, read_checkpoint_config
from autophagy.progress import batches
from autophagy.seeding import derive_seed


def run(
    cfg: ExperimentConfig,
    model_dir: str | Path,
    out_dir: str | Path,
    n: int,
    seed: int,
    generation: int,
    features_dir: str | Path | None = None,
    real_dir: str | Path | None = None,
    start: int = 0,
) -> dict[str, Any]:
    """Write samples ``start .. start + n - 1`` of the model in ``model_dir`` to the dataset directory ``out_dir``.

    With ``sample.curation_k = K > 1`` it draws K n candidates and keeps n of them
    (:mod:`autophagy.curation`); the reward may need ``features_dir`` (digits-net) or
    ``real_dir`` (the real training set).
    """
    if n < 1:
        raise ConfigError(f"sample: the number of samples must be >= 1, got {n}")
    if start < 0:
        raise ConfigError(f"sample: the first sample index must be >= 0, got {start}")
    model = load_checkpoint(model_dir, family=cfg.model.family, with_train_state=False)
    meta = read_checkpoint_config(model_dir)
    started = time.perf_counter()
    k = cfg.sample.curation_k
    size, draw_seed = cfg.sample.batch_size, derive_seed(seed, "sample", generation)
    rows = np.concatenate(
        [
            model.sample(
                min(size, n * k - first),
                draw_seed,
                batch_size=size,
                device=cfg.train.device,
                temperature=cfg.sample.temperature,
                start=start * k + first,
                precision=cfg.sample.precision,
                compile=cfg.sample.compile,
            )
            for first in batches(f"sample gen {generation} (seed {seed})", n * k, size, "sample")
        ]
    )
    curated = {}
    if k > 1:
        real = open_dataset(real_dir).load() if real_dir is not None else None
        reward = curation.build_reward(cfg.sample.curation_reward, Path(features_dir) if features_dir else None, real)
        rewards = reward(rows)
        keep = curation.select(
            rewards, k, cfg.sample.curation_beta, derive_seed(seed, "curate", generation) % 2**63, first_group=start
        )
        rows = rows[keep]
        curated = {
            "curation_reward_mean": float(rewards.mean()),
            "curation_kept_reward_mean": float(rewards[keep].mean()),
        }
    seconds = time.perf_counter() - started
    origin = {
        "type": "synthetic",
        "generation": generation,
        "seed": seed,
        "lambda": meta.get("lambda"),
        "temperature": cfg.sample.temperature,
        "curation_k": k,
        "model_data_hash": meta.get("data_hash"),
        "first_index": start,
    }
    name = f"synthetic-gen-{generation:03d}" + (f"-from-{start:09d}" if start else "") + ".npy"
    text = {"tokenizer": model.tokenizer} if model.kind == "text" else {}  # the tokenizer the rows are ids of
    write_dataset(
        out_dir,
        [NewShard(origin=origin, array=rows, name=name)],
        {"model": str(model_dir), "family": cfg.model.family},
        **text,
    )
    return {
        "sample_count": n,
        "sample_seconds": seconds,
        "sample_images_per_second": n * k / seconds if seconds else float("nan"),
        **curated,
    }


def merge(parts: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Join sample sets drawn in pieces (:func:`run` with ``start``) into one data set at ``out_dir``.

    The pieces must come from one draw (the same generation, seed, model, temperature and
    curation) and cover rows 0 .. N - 1 exactly, in any order; their shards are hard-linked (or
    copied) byte for byte, so the result holds the rows one worker would have drawn.
    """
    if not parts:
        raise ConfigError("merge-samples: no sample sets given")
    pieces = []
    for path in parts:
        dataset = open_dataset(path)
        for shard in dataset.shards:
            if shard.origin.get("type") != "synthetic" or "first_index" not in shard.origin:
                raise ConfigError(f"merge-samples: {path} is not a sample set drawn by `autophagy sample`")
            pieces.append((shard.origin["first_index"], dataset, shard))
    pieces.sort(key=lambda piece: piece[0])
    draw = {key: value for key, value in pieces[0][2].origin.items() if key != "first_index"}
    expected = 0
    for first, dataset, shard in pieces:
        if {key: value for key, value in shard.origin.items() if key != "first_index"} != draw:
            raise ConfigError(f"merge-samples: {dataset.path} comes from another draw than {pieces[0][1].path}")
        if first != expected:
            what = "overlaps the previous piece" if first < expected else f"leaves rows {expected}..{first - 1} missing"
            raise ConfigError(f"merge-samples: {dataset.path} starts at row {first}, which {what}")
        expected += shard.rows
    write_dataset(
        out_dir,
        [NewShard(origin=shard.origin, source=(dataset, shard)) for _, dataset, shard in pieces],
        {"merged_from": [str(dataset.path) for _, dataset, _ in pieces]},
    )
    return {"sample_count": expected, "pieces": len(pieces)}
