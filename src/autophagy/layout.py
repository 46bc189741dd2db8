"""Where a run's outputs live: ``runs/<experiment>/...`` (DESIGN.md, "Run layout").

``data/{train,test}``                      real data sets (prepared once)
``features/``                              the feature extractor (e.g. digits-net weights)
``seed-<s>/gen-000/``                      generation 0, shared by every lambda of a seed
``lam-<lambda>/seed-<s>/gen-<g>/``         generation g >= 1: ``train_set/ model/ samples/ metrics.json``
``report/``                                figures and tables
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
