"""What one generation of one chain does: the loop's decisions, written once.

Every way of running the loop follows this module and re-decides nothing: the local loop
(:mod:`autophagy.loop`, which the DVC stage ``autophagy generation`` calls), and the Kubeflow
runs (``autophagy.pipelines`` wires tasks from :func:`generation_plan`, the submitter computes the
sample counts with :func:`samples_to_draw`, the component runtime only moves paths).

A *chain* is one (lambda, seed) recursion (Bertrand et al. 2024, Alg. 1). Generation 0 is shared
by every lambda of a seed (``lam`` None); generation t >= 1 of a chain:

    pool      (accumulate strategies) the sample sets of generations 0 .. t-1
    mix       D_t per ``loop.strategy`` (:mod:`autophagy.data.strategies`)
    train     fine-tune theta_{t-1} on D_t (``train.init``)
    sample    max(n_eval, floor(lambda n)) samples: enough to evaluate and to feed t+1
    evaluate  metrics against the real train/test sets, with the collapse verdict against
              generation 0 (:mod:`autophagy.collapse`)

With ``loop.stop_on_collapse`` a chain ends after its first collapsed generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autophagy.config import FAMILIES, NO_LAMBDA, ExperimentConfig, format_lambda
from autophagy.data.strategies import STRATEGIES, synthetic_count

#: Every step a generation can take, in the order they run.
GENERATION_STEPS = ("pool", "mix", "train", "sample", "evaluate")


@dataclass(frozen=True)
class GenerationPlan:
    """The decisions of generation ``generation`` of the chain (``lam``, ``seed``).

    ``steps``: the steps it runs, in order (a subset of :data:`GENERATION_STEPS`).
    ``fresh_real``: its real data is a new draw of ``data.n_train`` items from the prepared pool
    (``fresh-real``, Alemohammad et al. 2024), seeded by (seed, generation); else D_real itself.
    ``synthetic_from``: the generations whose samples feed its mix, oldest first (``()`` at 0).
    ``pooled``: those sample sets are gathered into one pool first (the accumulate strategies).
    ``init_from``: the generation whose model it starts from (None: from scratch or
    ``train.init_checkpoint``).
    ``collapse_against``: the generations whose metrics its collapse verdict reads (generation 0,
    and t-1 because a collapsed chain stays collapsed); ``()`` at generation 0.
    ``stoppable``: under ``loop.stop_on_collapse``, whether an earlier generation of the chain
    can already have stopped it (t >= 2; generation 0 is never collapsed).
    """

    lam: float | None
    seed: int
    generation: int
    steps: tuple[str, ...]
    fresh_real: bool
    synthetic_from: tuple[int, ...]
    pooled: bool
    init_from: int | None
    collapse_against: tuple[int, ...]
    stoppable: bool

    @property
    def label(self) -> str:
        """``gen-003 seed=0 lambda=0.5`` (``shared`` for generation 0)."""
        lam = NO_LAMBDA if self.lam is None else f"lambda={format_lambda(self.lam)}"
        return f"gen-{self.generation:03d} seed={self.seed} {lam}"


def generation_plan(cfg: ExperimentConfig, lam: float | None, seed: int, generation: int) -> GenerationPlan:
    """The plan of one generation; ``lam`` is None for generation 0 (shared by every lambda)."""
    if generation < 0 or generation > cfg.loop.generations:
        raise ValueError(f"generation {generation} is outside 0..loop.generations={cfg.loop.generations}")
    if (generation == 0) != (lam is None):
        raise ValueError("generation 0 is shared by every lambda (lam=None); generations >= 1 belong to one lambda")
    strategy = STRATEGIES[cfg.loop.strategy]
    fresh, pooled = strategy.fresh_real, strategy.pooled
    if generation == 0:
        return GenerationPlan(
            lam=None,
            seed=seed,
            generation=0,
            steps=(("mix",) if fresh else ()) + ("train", "sample", "evaluate"),
            fresh_real=fresh,
            synthetic_from=(),
            pooled=False,
            init_from=None,
            collapse_against=(),
            stoppable=False,
        )
    synthetic_from = tuple(range(generation)) if pooled else (generation - 1,)
    return GenerationPlan(
        lam=lam,
        seed=seed,
        generation=generation,
        steps=(("pool",) if pooled else ()) + ("mix", "train", "sample", "evaluate"),
        fresh_real=fresh,
        synthetic_from=synthetic_from,
        pooled=pooled,
        init_from=generation - 1 if cfg.train.init == "previous" else None,
        collapse_against=(0,) if generation == 1 else (0, generation - 1),
        stoppable=cfg.loop.stop_on_collapse and generation >= 2,
    )


def chain(cfg: ExperimentConfig, lam: float, seed: int) -> list[GenerationPlan]:
    """Generations 1 .. ``loop.generations`` of the chain (lam, seed)."""
    return [generation_plan(cfg, lam, seed, g) for g in range(1, cfg.loop.generations + 1)]


def real_items(cfg: ExperimentConfig, real_rows: int) -> int:
    """n, the real items a generation trains on: the prepared training set's rows, or for
    ``fresh-real`` the ``data.n_train`` drawn from the (larger) pool each generation."""
    return cfg.data.n_train if STRATEGIES[cfg.loop.strategy].fresh_real else real_rows


def samples_to_draw(cfg: ExperimentConfig, n_real: int, lam: float | None) -> int:
    """Rows to sample from a generation: ``sample.n_eval`` to evaluate it, and floor(lambda n)
    (n for lambda = inf) to feed the next one. Generation 0 (``lam`` None) feeds every lambda:
    the largest need over ``loop.lambdas``."""
    lams = cfg.loop.lambdas if lam is None else (lam,)
    return max([cfg.sample.n_eval] + [synthetic_count(x, n_real) for x in lams])


def evaluation_models(cfg: ExperimentConfig, generation: int) -> dict[str, int]:
    """The checkpoints ``evaluate`` reads, by role, as the generations that trained them.

    Text families (``causal-lm``) score text with models: ``current`` (this generation's, the
    perplexity of the real test set) and ``generation0`` (the model trained on real data, under
    which the generated texts' perplexities are measured: Shumailov et al. 2024, Fig. 1). Image and
    vector families are evaluated from their samples alone (``{}``)."""
    if FAMILIES[cfg.model.family].kind != "text":
        return {}
    return {"current": generation, "generation0": 0}


def is_collapsed(metrics: Mapping[str, Any]) -> bool:
    """Whether a generation's metrics carry a positive collapse verdict."""
    return bool(metrics.get("collapsed"))


def stops_after(cfg: ExperimentConfig, metrics: Mapping[str, Any]) -> bool:
    """Whether a chain ends after the generation with these metrics (``loop.stop_on_collapse``)."""
    return cfg.loop.stop_on_collapse and is_collapsed(metrics)


def chains(cfg: ExperimentConfig) -> list[tuple[float, int]]:
    """Every (lambda, seed) chain of the experiment, seed-major (the order the local loop runs them)."""
    return [(lam, seed) for seed in cfg.loop.seeds for lam in cfg.loop.lambdas]
