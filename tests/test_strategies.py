"""Every loop strategy's training-set composition, generation by generation, exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from autophagy import loop
from autophagy.config import ConfigError, load_config
from autophagy.data.dataset import open_dataset

N = 40
BASE = [
    "name=s",
    "data.source=gaussian",
    "data.dim=2",
    f"data.n_train={N}",
    "data.n_test=100",
    "model.family=gaussian",
    "evaluate.features=raw",
    "sample.n_eval=20",
    "loop.seeds=[0]",
    "loop.generations=3",
    "tracking.enabled=false",
]


def run(tmp_path, *overrides):
    cfg = load_config(None, [*BASE, *overrides])
    return loop.run_experiment(cfg, tmp_path / "s", log=lambda _: None)


def composition(layout, lam, generation):
    dataset = open_dataset(layout.generation(lam, 0, generation) / "train_set")
    by_origin: dict[tuple, int] = {}
    for shard in dataset.shards:
        key = (shard.origin["type"], shard.origin.get("generation"))
        by_origin[key] = by_origin.get(key, 0) + shard.rows
    return by_origin


def test_replace_is_the_papers_rule(tmp_path):
    layout = run(tmp_path, "loop.strategy=replace", "loop.lambdas=[0.5,2]")
    for g in (1, 2, 3):
        assert composition(layout, 0.5, g) == {("real", None): N, ("synthetic", g - 1): 20}
        assert composition(layout, 2.0, g) == {("real", None): N, ("synthetic", g - 1): 80}


def test_fully_synthetic_has_no_real_data(tmp_path):
    layout = run(tmp_path, "loop.strategy=fully-synthetic", "loop.lambdas=[0.5,inf]")
    for g in (1, 2, 3):
        assert composition(layout, 0.5, g) == {("synthetic", g - 1): 20}
        assert composition(layout, float("inf"), g) == {("synthetic", g - 1): N}


def test_accumulate_keeps_every_generation(tmp_path):
    layout = run(tmp_path, "loop.strategy=accumulate", "loop.lambdas=[0.5]")
    for g in (1, 2, 3):
        expected = {("real", None): N, **{("synthetic", s): 20 for s in range(g)}}
        assert composition(layout, 0.5, g) == expected
    # the synthetic rows of generation 1 in the generation-3 set are those generation 1 trained on
    gen3 = open_dataset(layout.generation(0.5, 0, 3) / "train_set")
    gen1 = open_dataset(layout.generation(0.5, 0, 1) / "train_set")
    pick = lambda d, gen: np.concatenate([d.shard_array(s) for s in d.shards if s.origin.get("generation") == gen])  # noqa: E731
    assert np.array_equal(pick(gen3, 0), pick(gen1, 0))


def test_accumulate_subsample_keeps_a_fixed_size(tmp_path):
    layout = run(tmp_path, "loop.strategy=accumulate-subsample", "loop.lambdas=[1]")
    sizes = []
    for g in (1, 2, 3):
        counts = composition(layout, 1.0, g)
        sizes.append(sum(counts.values()))
        assert set(counts) <= {("real", None)} | {("synthetic", s) for s in range(g)}
    assert sizes == [2 * N] * 3
    assert len(composition(layout, 1.0, 3)) > 2  # rows from several generations survive the subsampling


def test_fresh_real_draws_new_real_items_each_generation(tmp_path):
    layout = run(tmp_path, "loop.strategy=fresh-real", "loop.lambdas=[1]", "data.n_pool=400")
    assert open_dataset(layout.real_train).rows == 400
    draws = []
    for g in (0, 1, 2, 3):
        real_set = open_dataset(layout.generation(1.0 if g else None, 0, g) / "real_set")
        assert real_set.rows == N
        draws.append(real_set.load())
        if g:
            assert composition(layout, 1.0, g) == {("real", None): N, ("synthetic", g - 1): N}
    pool = open_dataset(layout.real_train).load()
    for a, b in zip(draws, draws[1:]):
        assert not np.array_equal(a, b)
    for draw in draws:  # every drawn row comes from the pool
        assert all((pool == row).all(axis=1).any() for row in draw)


def test_fresh_real_needs_a_draw_size():
    with pytest.raises(ConfigError, match="fresh-real"):
        load_config(None, ["loop.strategy=fresh-real"])


def test_temperature_scales_the_spread(tmp_path):
    cold = run(tmp_path / "cold", "loop.lambdas=[inf]", "sample.temperature=0.5", "loop.generations=1")
    samples = open_dataset(cold.generation(None, 0, 0) / "samples").load()
    model = json.loads((cold.generation(None, 0, 0) / "model" / "config.json").read_text())
    assert model["family"] == "gaussian"
    real_std = open_dataset(cold.real_train).load().std(axis=0)
    assert np.all(samples.std(axis=0) < 0.75 * real_std)
    origin = open_dataset(cold.generation(None, 0, 0) / "samples").shards[0].origin
    assert origin["temperature"] == 0.5


@pytest.mark.parametrize("strategy", ["accumulate", "accumulate-subsample"])
def test_accumulate_at_lambda_inf_trains_on_the_synthetic_pool_alone(tmp_path, strategy):
    """lambda = inf under the accumulate strategies is their fully synthetic variant: the samples of
    every earlier generation (accumulate: all n of each; accumulate-subsample: n rows drawn from
    them) and no real row. It was silently lambda = 1: the same training sets and metrics."""
    layout = run(tmp_path, f"loop.strategy={strategy}", "loop.lambdas=[1,inf]")
    real = open_dataset(layout.real_train).load()
    for g in (1, 2, 3):
        counts = composition(layout, float("inf"), g)
        if strategy == "accumulate":
            assert counts == {("synthetic", s): N for s in range(g)}
        else:
            assert set(counts) <= {("synthetic", s) for s in range(g)} and sum(counts.values()) == N
        rows = open_dataset(layout.generation(float("inf"), 0, g) / "train_set").load()
        assert not (rows[:, None, :] == real[None, :, :]).all(axis=2).any()  # no real row, by value either
        assert composition(layout, 1.0, g)[("real", None)] > 0  # lambda = 1 keeps real rows
        fd = [
            json.loads((layout.generation(lam, 0, g) / "metrics.json").read_text())["fd_train"]
            for lam in (1.0, math.inf)
        ]
        assert fd[0] != fd[1]
    if strategy == "accumulate-subsample":
        assert len(composition(layout, float("inf"), 3)) > 1  # rows from several generations survive
