"""Every loop strategy through the pipeline's component runtime gives exactly the local loop's
run: the same training set (rows and origins) and the same metrics at every generation; and a
chain stopped by ``loop.stop_on_collapse`` ends where the local loop's ends.

The chain is driven the way the compiled pipeline wires it (:func:`generation_steps`: a
``pool`` task before each mix of the accumulate strategies, a generation-0 ``mix`` for
fresh-real), in process, on the Gaussian family (closed-form fits, so the runs are exact).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autophagy import loop
from autophagy.components import runtime
from autophagy.config import STRATEGIES, format_lambda
from autophagy.data.dataset import open_dataset
from autophagy.layout import RunLayout
from autophagy.pipelines.pipeline import generation_steps, takes_history

GENERATIONS = 2
SEED = 1


def run_like_the_pipeline(cfg, root: Path) -> dict[tuple[float | None, int], Path]:
    """The pipeline's tasks for one seed, in order; returns each generation's training set."""
    config = runtime.config_to_json(cfg)
    real_train, real_test = str(root / "prepare" / "train"), str(root / "prepare" / "test")
    runtime.prepare(config, real_train, real_test)
    runtime.features(config, str(root / "features"))
    train_sets = {}
    g0 = root / "g0"
    train_set = real_train
    if "mix" in generation_steps(cfg, 0):
        runtime.mix(config, real_train, None, str(g0 / "train_set"), 0, "", SEED)
        train_set = str(g0 / "train_set")
    train_sets[(None, 0)] = Path(train_set)
    runtime.train(config, train_set, str(g0 / "model"), 0, SEED)
    runtime.sample(config, str(g0 / "model"), real_train, str(g0 / "samples"), 0, SEED)
    runtime.evaluate(config, str(g0 / "samples"), real_train, real_test, str(root / "features"), 0, SEED, "",
                     str(g0 / "history"))
    for lam in cfg.loop.lambdas:
        text = format_lambda(lam)
        model, samples, history, pooled = g0 / "model", g0 / "samples", g0 / "history", None
        for g in range(1, cfg.loop.generations + 1):
            out = root / f"lam-{text}" / f"gen-{g}"
            stop = {"history": str(history)} if takes_history(cfg, g) else {}
            synthetic = samples
            if "pool" in generation_steps(cfg, g):
                runtime.pool(str(pooled) if pooled else None, str(samples), g, str(out / "pool"), SEED, text, **stop)
                synthetic = pooled = out / "pool"
            runtime.mix(config, real_train, str(synthetic), str(out / "train_set"), g, text, SEED, **stop)
            train_sets[(lam, g)] = out / "train_set"
            runtime.train(config, str(out / "train_set"), str(out / "model"), g, SEED, text, init=str(model), **stop)
            runtime.sample(config, str(out / "model"), real_train, str(out / "samples"), g, SEED, text, **stop)
            runtime.evaluate(config, str(out / "samples"), real_train, real_test, str(root / "features"), g, SEED, text,
                             str(out / "history"), history_in=str(history))
            model, samples, history = out / "model", out / "samples", out / "history"
        train_sets[("history", lam)] = history
    return train_sets


def untimed(metrics_json: Path) -> dict:
    """A generation's metrics without its wall-clock timings."""
    return {k: v for k, v in json.loads(metrics_json.read_text()).items() if not k.endswith("_seconds")}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pipeline_runtime_equals_the_local_loop(tmp_path, tiny_cfg, strategy):
    lams = "[1]" if strategy == "fully-synthetic" else "[0.5, inf]"
    cfg = tiny_cfg("gaussian", f"loop.strategy={strategy}", f"loop.lambdas={lams}", f"loop.generations={GENERATIONS}",
                   f"loop.seeds=[{SEED}]")
    local = loop.run_experiment(cfg, tmp_path / "local" / cfg.name, log=lambda _: None)
    pipeline = run_like_the_pipeline(cfg, tmp_path / "pipeline")
    checked = 0
    for lam in cfg.loop.lambdas:
        kfp_layout = RunLayout(pipeline[("history", lam)])
        for g in range(GENERATIONS + 1):
            here = local.generation(None if g == 0 else lam, SEED, g)
            ours = open_dataset(here / "train_set" if g > 0 else loop.real_for_generation(cfg, local, here, SEED, 0))
            theirs = open_dataset(pipeline[(None if g == 0 else lam, g)])
            assert ours.counts_by_origin() == theirs.counts_by_origin(), (strategy, lam, g)
            np.testing.assert_array_equal(ours.load(), theirs.load())
            metrics = untimed(here / "metrics.json")
            assert untimed(kfp_layout.generation(None if g == 0 else lam, SEED, g) / "metrics.json") == metrics
            checked += 1
    assert checked == len(cfg.loop.lambdas) * (GENERATIONS + 1)


@pytest.mark.parametrize("strategy", ["replace", "accumulate"])
def test_a_collapsed_chain_stops_where_the_local_loop_stops(tmp_path, tiny_cfg, strategy):
    generations = 6
    cfg = tiny_cfg("gaussian", f"loop.strategy={strategy}", "loop.lambdas=[0.5, inf]", f"loop.generations={generations}",
                   f"loop.seeds=[{SEED}]", "loop.collapse_metric=swd_train", "loop.collapse_ratio=1.0001",
                   "loop.stop_on_collapse=true")
    local = loop.run_experiment(cfg, tmp_path / "local" / cfg.name, log=lambda _: None)
    pipeline = run_like_the_pipeline(cfg, tmp_path / "pipeline")
    stopped_chains = 0
    for lam in cfg.loop.lambdas:
        chain = sorted(p.parent.name for p in local.generation(lam, SEED, 1).parent.glob("gen-*/metrics.json"))
        fragment = RunLayout(pipeline[("history", lam)])
        assert sorted(p.parent.name for p in fragment.generation(lam, SEED, 1).parent.glob("gen-*/metrics.json")) == chain
        for name in chain:
            g = int(name.split("-")[1])
            assert untimed(fragment.generation(lam, SEED, g) / "metrics.json") == untimed(local.generation(lam, SEED, g) / "metrics.json")
        last = len(chain)
        collapsed_at = runtime.collapsed_generation(pipeline[("history", lam)])
        assert collapsed_at == last if last < generations else collapsed_at in (None, generations)
        for g in range(last + 1, generations + 1):  # the stopped generations: a marker, no data
            out = pipeline[(lam, g)].parent
            for artifact in ("train_set", "model", "samples"):
                assert [p.name for p in (out / artifact).iterdir()] == [runtime.STOPPED_FILE], (lam, g, artifact)
                assert json.loads((out / artifact / runtime.STOPPED_FILE).read_text())["collapsed_at_generation"] == last
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
    with pytest.raises(ValueError, match="only with loop.strategy=fresh-real"):
        runtime.mix(runtime.config_to_json(cfg), str(local.real_train), None, str(tmp_path / "g0"), 0, "")
