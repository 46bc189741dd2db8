"""Which KFP runs an experiment is made of, and what each one is given (pure: no kfp, no network).

An experiment runs as (:mod:`autophagy.pipelines.pipeline`):

* one ``data`` run (real data, feature extractor);
* one ``generation-0`` run per seed, once the data exist;
* per (lambda, seed) chain, ``chain`` runs of at most ``window`` generations each, one after the
  other, once the seed's generation 0 exists (chains run in parallel);
* once every chain has finished, ``collect`` runs that merge the chains' run-layout fragments
  :data:`FAN_IN` at a time (as many levels as it takes: one run imports at most :data:`FAN_IN`
  artifacts), then one ``report`` run over what is left.

Each run ends with a ``handoff`` task that records on the MLflow parent run, under the run's key
(:func:`data_key`, :func:`seed_key`, :func:`chain_key`, ``report``), the URIs of its outputs; the
next run is given them as parameters and imports them. :func:`next_runs` reads those records and
says what can start now, so a half-done experiment resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autophagy import plan
from autophagy.config import ExperimentConfig, format_lambda, to_dict
from autophagy.step_config import step_options, to_json

Handoffs = Mapping[str, Mapping[str, Any]]

DATA_KEY = "data"
REPORT_KEY = "report"
#: The most run-layout fragments one collect or report run imports (tests/test_pipeline_backend.py
#: checks that such a run fits the backend).
FAN_IN = 32
#: The longest KFP run name made here (the API server stores any length; the UI's run list shows ~100).
MAX_RUN_NAME = 128


def seed_key(seed: int) -> str:
    return f"seed-{seed}"


def chain_key(lam: float, seed: int) -> str:
    return f"lam-{format_lambda(lam)}-seed-{seed}"


@dataclass(frozen=True)
class KfpRun:
    """One KFP run of an experiment. ``first``/``last``: the generations of a ``chain`` run."""

    kind: str  # data | generation-0 | chain | collect | report
    key: str  # the hand-off key it records
    lam: float | None = None
    seed: int | None = None
    first: int = 0
    last: int = 0

    def run_name(self, experiment: str) -> str:
        """The run's name in the KFP UI: the experiment, then what the run is, its chain's lambda and
        seed included (``cifar10-edm · λ=0.5 · seed 0 · gen 1-5``; at most :data:`MAX_RUN_NAME` characters)."""
        if self.kind == "chain":
            what = f"{self.label()} · gen {self.first}-{self.last}"
        elif self.kind == "generation-0":
            what = f"{self.label()} · gen 0"
        else:
            what = self.key
        return f"{experiment[: MAX_RUN_NAME - len(what) - 3]} · {what}"

    def label(self) -> str:
        """``λ=0.5 · seed 0`` (``seed 0`` for generation 0, shared by every lambda; ``""`` for none)."""
        parts = ([f"λ={format_lambda(self.lam)}"] if self.lam is not None else []) + (
            [f"seed {self.seed}"] if self.seed is not None else []
        )
        return " · ".join(parts)


def chain_last_generation(cfg: ExperimentConfig, handoffs: Handoffs, lam: float, seed: int) -> int | None:
    """The last generation of the chain that a run has handed off (0: only its seed's generation 0;
    None: not even that)."""
    record = handoffs.get(chain_key(lam, seed))
    if record is not None:
        return int(record["generation"])
    return 0 if seed_key(seed) in handoffs else None


def chain_finished(cfg: ExperimentConfig, handoffs: Handoffs, lam: float, seed: int) -> bool:
    """Whether the chain has run its last generation, or stopped collapsed (``loop.stop_on_collapse``)."""
    last = chain_last_generation(cfg, handoffs, lam, seed)
    if last is None:
        return False
    record = handoffs.get(chain_key(lam, seed)) or {}
    stopped = cfg.loop.stop_on_collapse and record.get("collapsed_at") is not None
    return last >= cfg.loop.generations or stopped


def fragment_keys(cfg: ExperimentConfig) -> list[str]:
    """The hand-offs whose ``history`` the report merges: every chain's (or, with no generation after
    generation 0, every seed's), in the order of :func:`autophagy.plan.chains`."""
    if cfg.loop.generations == 0:
        return [seed_key(seed) for seed in cfg.loop.seeds]
    return [chain_key(lam, seed) for lam, seed in plan.chains(cfg)]


def merge_tree(cfg: ExperimentConfig) -> list[tuple[str, list[str]]]:
    """The collect runs and the report run, each as (its key, the keys of the fragments it merges),
    in the order they can run: level 1 merges :data:`FAN_IN` chains at a time, level 2 merges the
    level-1 results, and so on, until the report merges at most :data:`FAN_IN`."""
    tree, inputs, level = [], fragment_keys(cfg), 1
    while len(inputs) > FAN_IN:
        groups = [inputs[i : i + FAN_IN] for i in range(0, len(inputs), FAN_IN)]
        keys = [f"collect-{level}-{i}" for i in range(len(groups))]
        tree += list(zip(keys, groups))
        inputs, level = keys, level + 1
    return tree + [(REPORT_KEY, inputs)]


def next_runs(
    cfg: ExperimentConfig,
    handoffs: Handoffs,
    window: int,
    active: set[str],
    merged: set[str] = frozenset(),
    stale: bool = False,
) -> list[KfpRun]:
    """The runs that can start now, given the hand-offs recorded so far and the keys of the runs in flight.

    ``window``: generations per chain run. ``merged``: the collect/report keys that finished in
    this submission. ``stale``: whether a chain or seed finished in this submission, which makes the
    collect and report hand-offs of an earlier submission out of date.
    """
    if DATA_KEY not in handoffs:
        return [] if DATA_KEY in active else [KfpRun("data", DATA_KEY)]
    runs = [
        KfpRun("generation-0", seed_key(seed), seed=seed)
        for seed in cfg.loop.seeds
        if seed_key(seed) not in handoffs and seed_key(seed) not in active
    ]
    for lam, seed in plan.chains(cfg):
        key = chain_key(lam, seed)
        last = chain_last_generation(cfg, handoffs, lam, seed)
        if last is None or key in active or chain_finished(cfg, handoffs, lam, seed):
            continue
        first = last + 1
        runs.append(
            KfpRun("chain", key, lam=lam, seed=seed, first=first, last=min(first + window - 1, cfg.loop.generations))
        )
    everything_done = all(seed_key(s) in handoffs for s in cfg.loop.seeds) and all(
        chain_finished(cfg, handoffs, lam, seed) for lam, seed in plan.chains(cfg)
    )
    if not everything_done or runs or any(not k.startswith(("collect-", REPORT_KEY)) for k in active):
        return runs

    def current(key: str) -> bool:
        if key.startswith(("collect-", REPORT_KEY)):
            return key in merged or (not stale and key in handoffs)
        return key in handoffs

    for key, inputs in merge_tree(cfg):
        if key not in active and not current(key) and all(current(k) for k in inputs):
            runs.append(KfpRun(REPORT_KEY if key == REPORT_KEY else "collect", key))
    return runs


def arguments(cfg: ExperimentConfig, run: KfpRun, handoffs: Handoffs) -> dict[str, Any]:
    """The pipeline parameters of ``run`` (:mod:`autophagy.pipelines.pipeline`), from the hand-offs it needs."""
    if run.kind == "data":
        return {
            "handoff_key": run.key,
            "options_prepare": to_json(step_options(cfg, "prepare")),
            "options_features": to_json(step_options(cfg, "features")),
        }
    if run.kind in ("collect", "report"):
        inputs = dict(merge_tree(cfg))[run.key]
        fragments = [handoffs[key]["uris"]["history"] for key in inputs]
        if run.kind == "collect":
            return {"handoff_key": run.key, "fragment_uris": fragments}
        return {
            "handoff_key": run.key,
            "config": json.dumps(to_dict(cfg), sort_keys=True),
            "fragment_uris": fragments,
            "data_dvc": json.dumps(handoffs[DATA_KEY].get("dvc", {}), sort_keys=True),
        }
    data = handoffs[DATA_KEY]
    n_real = plan.real_items(cfg, int(data["real_rows"]))
    common = {
        "handoff_key": run.key,
        "seed": run.seed,
        "n_samples": plan.samples_to_draw(cfg, n_real, run.lam),
        **{f"options_{step}": to_json(step_options(cfg, step)) for step in ("mix", "train", "sample", "evaluate")},
        "real_train_uri": data["uris"]["real_train"],
        "real_test_uri": data["uris"]["real_test"],
        "extractor_uri": data["uris"]["extractor"],
    }
    if run.kind == "generation-0":
        return common
    previous = handoffs[chain_key(run.lam, run.seed) if run.first > 1 else seed_key(run.seed)]["uris"]
    chain = {
        "lam": format_lambda(run.lam),
        "model_uri": previous["model"],
        "samples_uri": previous["samples"],
        "history_uri": previous["history"],
        "pooled_uri": previous.get("pooled", ""),
        "gen0_model_uri": handoffs[seed_key(run.seed)]["uris"]["model"],
    }
    return {**common, **chain}


def count_runs(cfg: ExperimentConfig, window: int) -> int:
    """How many KFP runs the whole experiment takes when no chain stops early."""
    windows = -(-cfg.loop.generations // window) if cfg.loop.generations else 0
    return 1 + len(cfg.loop.seeds) + len(plan.chains(cfg)) * windows + len(merge_tree(cfg))
