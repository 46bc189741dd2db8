"""``mix``: the training set of the next generation (Bertrand et al. 2024, Alg. 1, and the
strategies of later work, :mod:`autophagy.data.strategies`)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autophagy.config import ExperimentConfig, check_lambda
from autophagy.curation import correct_nearest_real
from autophagy.data.dataset import Dataset, NewShard, open_dataset, write_dataset
from autophagy.data.strategies import compose
from autophagy.seeding import derive_seed


def run(
    cfg: ExperimentConfig,
    real_dir: str | Path,
    synthetic_dirs: str | Path | Sequence[str | Path] | None,
    lam: float,
    out_dir: str | Path,
    generation: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Compose generation ``generation``'s training set with ``loop.strategy``.

    ``synthetic_dirs``: the latest sample set, or for the accumulate strategies the sample sets of
    generations 0..t-1, oldest first.
    """
    check_lambda(lam)
    if synthetic_dirs is None:
        synthetic_dirs = []
    elif isinstance(synthetic_dirs, (str, Path)):
        synthetic_dirs = [synthetic_dirs]
    real = open_dataset(real_dir)
    synthetic = [open_dataset(path) for path in synthetic_dirs] if lam > 0 else []
    with tempfile.TemporaryDirectory(prefix="autophagy-correct-") as scratch:
        if cfg.loop.correction is not None:
            synthetic = [_corrected(cfg, d, real, Path(scratch) / str(i)) for i, d in enumerate(synthetic)]
        dataset = compose(
            cfg.loop.strategy,
            lam,
            real,
            synthetic,
            out_dir,
            derive_seed(seed, "mix", generation) % 2**63,
            provenance={"generation": generation, "correction": cfg.loop.correction},
        )
    counts = dataset.counts_by_origin()
    return {"train_set_real": counts.get("real", 0), "train_set_synthetic": counts.get("synthetic", 0)}


def _corrected(cfg: ExperimentConfig, dataset: Dataset, real: Dataset, out_dir: Path) -> Dataset:
    """A copy of ``dataset`` with every row self-corrected (Gillman et al. 2024); origins kept."""
    reference = real.load()
    shards = [
        NewShard(
            origin={**s.origin, "corrected": cfg.loop.correction},
            array=correct_nearest_real(dataset.shard_array(s), reference, cfg.loop.correction_strength),
            name=s.file,
        )
        for s in dataset.shards
    ]
    return write_dataset(out_dir, shards, {"corrected_from": str(dataset.path)})
