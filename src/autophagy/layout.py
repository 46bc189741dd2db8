"""Where a run's outputs live: ``runs/<experiment>/...`` (DESIGN.md, "Run layout").

``data/{train,test}``                      real data sets (prepared once)
``features/``                              the feature extractor (e.g. digits-net weights)
``seed-<s>/gen-000/``                      generation 0, shared by every lambda of a seed
``lam-<lambda>/seed-<s>/gen-<g>/``         generation g >= 1: ``train_set/ model/ samples/ metrics.json``
``report/``                                figures and tables

A train stage keeps its resumable state beside its output, or under ``$AUTOPHAGY_SCRATCH_DIR``
when that is set (durable storage shared by a cluster's pods): :func:`train_scratch_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from autophagy.config import format_lambda


def generation_name(generation: int) -> str:
    return f"gen-{generation:03d}"


@dataclass(frozen=True)
class RunLayout:
    root: Path  # runs/<experiment>

    @property
    def real_train(self) -> Path:
        return self.root / "data" / "train"

    @property
    def real_test(self) -> Path:
        return self.root / "data" / "test"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def generation(self, lam: float | None, seed: int, generation: int) -> Path:
        """Directory of one generation; generation 0 does not depend on lambda."""
        if generation == 0:
            return self.root / f"seed-{seed}" / generation_name(0)
        return self.root / f"lam-{format_lambda(lam)}" / f"seed-{seed}" / generation_name(generation)


#: Durable storage for resumable training state, shared by the pods of a cluster.
SCRATCH_ENV = "AUTOPHAGY_SCRATCH_DIR"


def train_scratch_dir(out_dir: Path, fingerprint: Mapping[str, Any]) -> Path:
    """Where a train stage writing ``out_dir`` from these inputs (``fingerprint``) keeps its resumable
    state: ``.<name>.partial`` beside ``out_dir``, or ``$AUTOPHAGY_SCRATCH_DIR/train/<hash of the
    inputs>``, which a retried pod finds although its output goes to a new path."""
    durable = os.environ.get(SCRATCH_ENV)
    if not durable:
        return out_dir.parent / f".{out_dir.name}.partial"
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:32]
    return Path(durable) / "train" / digest
