"""``features``: build the feature extractor the metrics use and record its identity.

For ``digits-net`` this trains the classifier once (deterministically) into ``out_dir``; for
``inception`` it checks that the weights load; for ``minilm`` (text) that the packaged
all-MiniLM-L6-v2 sentence embedder loads (:mod:`autophagy.metrics.text`); ``raw`` needs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autophagy import atomic
from autophagy.config import ExperimentConfig
from autophagy.metrics import build_extractor


def run(cfg: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.evaluate.features == "minilm":
        from autophagy.metrics.text import sentence_embedder

        extractor = sentence_embedder("cpu")
    else:
        extractor = build_extractor(
            cfg.evaluate.features,
            weights_path=cfg.evaluate.inception_weights,
            cache_dir=out_dir,
            device=cfg.train.device,
        )
    info = {"name": cfg.evaluate.features, "id": extractor.id, "dim": extractor.dim}  # dim: None for raw
    atomic.write_json(out_dir / "extractor.json", info)
    return info
