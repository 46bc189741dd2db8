"""Where a run's outputs live: ``runs/<experiment>/...`` (DESIGN.md, "Run layout").

``data/{train,test}``                      real data sets (prepared once)
``features/``                              the feature extractor (e.g. digits-net weights)
``seed-<s>/gen-000/``                      generation 0, shared by every lambda of a seed
``lam-<lambda>/seed-<s>/gen-<g>/``         generation g >= 1: ``train_set/ model/ samples/ metrics.json``
``report/``                                figures and tables
``config.json``                            the resolved config of the latest run

Each generation directory holds ``generation.json`` and the run directory ``prepared.json``
(the data and the feature extractor): the options that made them and the steps done
(:mod:`autophagy.resume`), written last. ``.lock`` (the run directory's shared part) and
``seed-<s>/.lock`` (one seed's generations) are the locks of :mod:`autophagy.run_lock`.

A train stage keeps its resumable state beside its output, or under ``$AUTOPHAGY_SCRATCH_DIR``
when that is set (durable storage shared by a cluster's pods): :func:`train_scratch_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autophagy.config import ConfigError, format_lambda

#: A generation directory's record of its options and steps done (:mod:`autophagy.resume`).
GENERATION_RECORD = "generation.json"
#: The run directory's record of its real data and feature extractor.
PREPARED_RECORD = "prepared.json"
LOCK = ".lock"
#: What each step of a generation writes in its directory (published atomically, removed when
#: redone): :mod:`autophagy.loop` makes them, ``dvc.yaml`` declares them (:mod:`autophagy.dvc_params`).
GENERATION_OUTPUTS = {
    "mix": ("real_set", "train_set"),
    "train": ("model",),
    "sample": ("samples",),
    "evaluate": ("samples.png", "metrics.json"),
}
#: What the text branch of the evaluate step also writes beside ``metrics.json``: per-text perplexities,
#: float64 ``[N]`` ``.npy`` files, which the report's perplexity-tail figure reads. The samples' under
#: the generation-0 model (Shumailov et al. 2024, Fig. 1), and each reference set's (``{}``: its name,
#: ``train``/``test``) under the current model (at generation 0: the real data's under that model).
PERPLEXITY_SAMPLES_FILE = "perplexity_samples_gen0.npy"
PERPLEXITY_REFERENCE_FILE = "perplexity_{}.npy"


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

    @property
    def lock(self) -> Path:
        """The lock on the shared part: real data, feature extractor, ``config.json``."""
        return self.root / LOCK

    def seed_lock(self, seed: int) -> Path:
        """The lock on the generations of one seed (every lambda)."""
        return self.root / f"seed-{seed}" / LOCK

    def seed_lock_files(self) -> list[Path]:
        """The seed locks that exist, of any seed."""
        return sorted(self.root.glob(f"seed-*/{LOCK}"))

    def seed_dirs(self, seed: int) -> list[Path]:
        """The directories holding the generations of one seed: ``seed-<s>`` and each ``lam-*/seed-<s>``."""
        return [self.root / f"seed-{seed}", *sorted(self.root.glob(f"lam-*/seed-{seed}"))]

    def generation(self, lam: float | None, seed: int, generation: int) -> Path:
        """Directory of one generation; generation 0 does not depend on lambda."""
        return generation_dir(self.root, None if generation == 0 else format_lambda(lam), seed, generation)


def generation_dir(root: Path, lam_text: str | None, seed: int | str, generation: int) -> Path:
    """``root/seed-<s>/gen-000`` or ``root/lam-<lambda>/seed-<s>/gen-<g>``, from lambda's text as
    :func:`format_lambda` writes it, or from placeholders (``dvc.yaml``'s ``${item.lam}``)."""
    if generation == 0:
        return root / f"seed-{seed}" / generation_name(0)
    return root / f"lam-{lam_text}" / f"seed-{seed}" / generation_name(generation)


def new_root(parent: Path, name: str) -> Path:
    """A run directory no run has used: ``parent/name`` if it does not exist, else the first free
    ``parent/name-2``, ``name-3``, ... (created here, so that two runs never pick the same one)."""
    parent.mkdir(parents=True, exist_ok=True)
    for suffix in ["", *(f"-{n}" for n in range(2, 10_000))]:
        candidate = parent / f"{name}{suffix}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise ConfigError(f"no free run directory {parent / name}-N (N up to 9999)")


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
