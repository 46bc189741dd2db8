"""Every loop strategy through the pipeline's component runtime gives exactly the local loop's
run: the same training set (rows and origins) and the same metrics at every generation; and a
chain stopped by ``loop.stop_on_collapse`` ends where the local loop's ends.

The chain is driven the way the compiled runs wire it: each generation's steps and inputs from
:func:`autophagy.plan.generation_plan`, each task given only its step's options
(:mod:`autophagy.step_config`) and the bookkeeping through the environment, the sample counts
from :func:`autophagy.plan.samples_to_draw`. Any option a step reads but is not given would
raise; any decision the runtime took differently from the local loop would change a training set
or a metric.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from autophagy.components import runtime

from autophagy import loop, plan
from autophagy.config import STRATEGIES, ConfigError, format_lambda
from autophagy.data.dataset import open_dataset
from autophagy.layout import RunLayout
from autophagy.step_config import BOOKKEEPING_ENV, STEP_OPTIONS, bookkeeping, config_for_step, step_options, to_json

GENERATIONS = 2
SEED = 1


def run_like_the_pipeline(cfg, root: Path, monkeypatch) -> dict:
    """The runs' tasks for one seed, in order; returns each generation's training set and each chain's history."""
    monkeypatch.setenv(BOOKKEEPING_ENV, to_json(bookkeeping(cfg)))
    options = {step: to_json(step_options(cfg, step)) for step in STEP_OPTIONS if step != "handoff"}
    real_train, real_test = str(root / "prepare" / "train"), str(root / "prepare" / "test")
    runtime.prepare(options["prepare"], real_train, real_test)
    runtime.features(options["features"], str(root / "features"))
    n_real = plan.real_items(cfg, open_dataset(real_train).rows)
    train_sets = {}
    g0 = root / "g0"
    train_set = real_train
    if "mix" in plan.generation_plan(cfg, None, SEED, 0).steps:
        runtime.mix(options["mix"], real_train, None, str(g0 / "train_set"), 0, "", SEED, fresh_real=True)
        train_set = str(g0 / "train_set")
    train_sets[(None, 0)] = Path(train_set)
    runtime.train(options["train"], train_set, str(g0 / "model"), 0, SEED)
    runtime.sample(
        options["sample"],
        str(g0 / "model"),
        real_train,
        str(g0 / "samples"),
        0,
        SEED,
        plan.samples_to_draw(cfg, n_real, None),
    )
    runtime.evaluate(
        options["evaluate"],
        str(g0 / "samples"),
        real_train,
        real_test,
        str(root / "features"),
        0,
        SEED,
        "",
        str(g0 / "history"),
    )
    for lam in cfg.loop.lambdas:
        text = format_lambda(lam)
        model, samples, history, pooled = g0 / "model", g0 / "samples", g0 / "history", None
        for step in plan.chain(cfg, lam, SEED):
            g, out = step.generation, root / f"lam-{text}" / f"gen-{step.generation}"
            stop = {"history": str(history)} if step.stoppable else {}
            synthetic = samples
            if step.pooled:
                runtime.pool(str(pooled) if pooled else None, str(samples), g, str(out / "pool"), SEED, text, **stop)
                synthetic = pooled = out / "pool"
            runtime.mix(
                options["mix"],
                real_train,
                str(synthetic),
                str(out / "train_set"),
                g,
                text,
                SEED,
                step.fresh_real,
                **stop,
            )
            train_sets[(lam, g)] = out / "train_set"
            init = str(model) if step.init_from is not None else None
            runtime.train(
                options["train"], str(out / "train_set"), str(out / "model"), g, SEED, text, init=init, **stop
            )
            runtime.sample(
                options["sample"],
                str(out / "model"),
                real_train,
                str(out / "samples"),
                g,
                SEED,
                plan.samples_to_draw(cfg, n_real, lam),
                text,
                **stop,
            )
            runtime.evaluate(
                options["evaluate"],
                str(out / "samples"),
                real_train,
                real_test,
                str(root / "features"),
                g,
                SEED,
                text,
                str(out / "history"),
                history_in=str(history),
                stoppable=step.stoppable,
            )
            model, samples, history = out / "model", out / "samples", out / "history"
        train_sets[("history", lam)] = history
    return train_sets


def untimed(metrics_json: Path) -> dict:
    """A generation's metrics without its wall-clock timings."""
    return {k: v for k, v in json.loads(metrics_json.read_text()).items() if not k.endswith("_seconds")}


def _same_runs(cfg, local, pipeline) -> int:
    checked = 0
    for lam in cfg.loop.lambdas:
        kfp_layout = RunLayout(pipeline[("history", lam)])
        for g in range(cfg.loop.generations + 1):
            here = local.generation(None if g == 0 else lam, SEED, g)
            ours = open_dataset(
                here / ("train_set" if g > 0 else "real_set")
                if (g > 0 or (here / "real_set").is_dir())
                else local.real_train
            )
            theirs = open_dataset(pipeline[(None if g == 0 else lam, g)])
            assert ours.counts_by_origin() == theirs.counts_by_origin(), (lam, g)
            np.testing.assert_array_equal(ours.load(), theirs.load())
            metrics = untimed(here / "metrics.json")
            assert untimed(kfp_layout.generation(None if g == 0 else lam, SEED, g) / "metrics.json") == metrics
            checked += 1
    return checked


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pipeline_runtime_equals_the_local_loop(tmp_path, tiny_cfg, strategy, monkeypatch):
    lams = "[1]" if strategy == "fully-synthetic" else "[0.5, inf]"
    cfg = tiny_cfg(
        "gaussian",
        f"loop.strategy={strategy}",
        f"loop.lambdas={lams}",
        f"loop.generations={GENERATIONS}",
        f"loop.seeds=[{SEED}]",
        "loop.collapse_ratio=1.5",
    )
    local = loop.run_experiment(cfg, tmp_path / "local" / cfg.name, log=lambda _: None)
    pipeline = run_like_the_pipeline(cfg, tmp_path / "pipeline", monkeypatch)
    assert _same_runs(cfg, local, pipeline) == len(cfg.loop.lambdas) * (GENERATIONS + 1)


def test_an_image_family_with_every_section_off_its_defaults(tmp_path, tiny_cfg, monkeypatch):
    """EDM on digits, with options of every section away from the defaults: the sliced tasks run
    exactly the local loop (an option missing from a step's slice would be read and raise)."""
    cfg = tiny_cfg(
        "digits",
        "loop.lambdas=[0.5]",
        "loop.generations=1",
        f"loop.seeds=[{SEED}]",
        "train.lr=0.002",
        "train.init=scratch",
        "sample.temperature=0.9",
        "evaluate.k=2",
        "evaluate.max_reference=50",
        "data.seed=3",
        "model.sigma_data=0.6",
        "loop.collapse_ratio=3",
    )
    local = loop.run_experiment(cfg, tmp_path / "local" / cfg.name, log=lambda _: None)
    pipeline = run_like_the_pipeline(cfg, tmp_path / "pipeline", monkeypatch)
    assert _same_runs(cfg, local, pipeline) == 2


def test_a_step_reading_an_option_it_was_not_given_fails_and_names_it(tiny_cfg):
    cfg = tiny_cfg("gaussian")
    train = config_for_step("train", step_options(cfg, "train"), bookkeeping(cfg))
    assert train.train == cfg.train and train.model == cfg.model and train.name == cfg.name
    assert train.loop.lambdas == cfg.loop.lambdas  # bookkeeping: generation 0 logs into every chain
    with pytest.raises(ConfigError, match=r"step train read evaluate.k, which is not among the options"):
        train.evaluate.k
    with pytest.raises(ConfigError, match=r"step train read loop.strategy"):
        train.loop.strategy
    sample = config_for_step("sample", step_options(cfg, "sample"), bookkeeping(cfg))
    assert sample.model.family == "gaussian" and sample.sample == cfg.sample
    with pytest.raises(ConfigError, match=r"step sample read model.estimator"):
        sample.model.estimator
    assert step_options(cfg, "evaluate")["sample"] == {"n_eval": cfg.sample.n_eval}


@pytest.mark.parametrize("strategy", ["replace", "accumulate"])
def test_a_collapsed_chain_stops_where_the_local_loop_stops(tmp_path, tiny_cfg, strategy, monkeypatch):
    generations = 6
    cfg = tiny_cfg(
        "gaussian",
        f"loop.strategy={strategy}",
        "loop.lambdas=[0.5, inf]",
        f"loop.generations={generations}",
        f"loop.seeds=[{SEED}]",
        "loop.collapse_metric=swd_train",
        "loop.collapse_ratio=1.0001",
        "loop.stop_on_collapse=true",
    )
    local = loop.run_experiment(cfg, tmp_path / "local" / cfg.name, log=lambda _: None)
    pipeline = run_like_the_pipeline(cfg, tmp_path / "pipeline", monkeypatch)
    stopped_chains = 0
    for lam in cfg.loop.lambdas:
        chain = sorted(p.parent.name for p in local.generation(lam, SEED, 1).parent.glob("gen-*/metrics.json"))
        fragment = RunLayout(pipeline[("history", lam)])
        assert (
            sorted(p.parent.name for p in fragment.generation(lam, SEED, 1).parent.glob("gen-*/metrics.json")) == chain
        )
        for name in chain:
            g = int(name.split("-")[1])
            assert untimed(fragment.generation(lam, SEED, g) / "metrics.json") == untimed(
                local.generation(lam, SEED, g) / "metrics.json"
            )
        last = len(chain)
        collapsed_at = runtime.collapsed_generation(pipeline[("history", lam)])
        assert collapsed_at == last if last < generations else collapsed_at in (None, generations)
        for g in range(last + 1, generations + 1):  # the stopped generations: a marker, no data
            out = pipeline[(lam, g)].parent
            for artifact in ("train_set", "model", "samples"):
                assert [p.name for p in (out / artifact).iterdir()] == [runtime.STOPPED_FILE], (lam, g, artifact)
                assert (
                    json.loads((out / artifact / runtime.STOPPED_FILE).read_text())["collapsed_at_generation"] == last
                )
        stopped_chains += last < generations
    assert stopped_chains > 0  # this threshold makes at least one chain collapse early


def test_pool_holds_every_earlier_sample_set_and_refuses_a_short_one(tmp_path, tiny_cfg):
    cfg = tiny_cfg("gaussian", "loop.strategy=accumulate", "loop.lambdas=[1]", "loop.generations=3")
    local = loop.run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    samples = [local.generation(None if g == 0 else 1.0, 0, g) / "samples" for g in range(3)]
    pools = []
    for g in (1, 2, 3):
        pools.append(tmp_path / f"pool-{g}")
        runtime.pool(str(pools[-2]) if g > 1 else None, str(samples[g - 1]), g, str(pools[-1]))
    entries = runtime.pooled_sets(str(pools[-1]))
    assert [Path(e).name for e in entries] == ["gen-000", "gen-001", "gen-002"]
    for entry, original in zip(entries, samples):
        np.testing.assert_array_equal(open_dataset(entry).load(), open_dataset(original).load())
    with pytest.raises(ValueError, match="holds 1 sample sets, expected 2"):
        runtime.pool(str(pools[0]), str(samples[2]), 3, str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="not a sample pool"):
        runtime.pooled_sets(str(samples[0]))
