"""The training-cost estimate printed before `autophagy run` (issue 14 item 3)."""

from __future__ import annotations

import pytest

from autophagy import cost
from autophagy.config import ConfigError, load_config

TINY = ["model.model_channels=32", "model.num_blocks=1", "loop.lambdas=[0,1]", "loop.seeds=[0]"]


def test_images_count_generation_zero_once_per_seed():
    cfg = load_config(
        None, [*TINY, "train.gen0_budget_kimg=10", "train.budget_kimg=2", "loop.generations=3", "loop.seeds=[0,1]"]
    )
    assert cost.training_images(cfg) == 2 * (10 + 2 * 3 * 2) * 1000


def test_estimate_scales_with_budget_and_generations():
    base = cost.estimate(
        load_config(None, [*TINY, "train.gen0_budget_kimg=1", "train.budget_kimg=1", "loop.generations=2"])
    )
    budget = cost.estimate(
        load_config(None, [*TINY, "train.gen0_budget_kimg=2", "train.budget_kimg=2", "loop.generations=2"])
    )
    generations = cost.estimate(
        load_config(None, [*TINY, "train.gen0_budget_kimg=1", "train.budget_kimg=1", "loop.generations=5"])
    )
    assert base.flops_per_image > 0 and budget.flops_per_image == base.flops_per_image
    assert budget.gpu_hours == pytest.approx(2 * base.gpu_hours)
    assert generations.gpu_hours == pytest.approx(base.gpu_hours * (1 + 2 * 5) / (1 + 2 * 2))
    half = cost.estimate(
        load_config(None, [*TINY, "train.gen0_budget_kimg=1", "train.budget_kimg=1", "loop.generations=2"]),
        utilisation=0.175,
    )
    assert half.gpu_hours == pytest.approx(2 * base.gpu_hours)


def test_flops_grow_with_the_network():
    small = cost.flops_per_image(load_config(None, ["model.model_channels=32"]).model, (8, 8, 1))
    wide = cost.flops_per_image(load_config(None, ["model.model_channels=64"]).model, (8, 8, 1))
    assert wide > 2 * small  # the hidden products grow with the square of the width


def test_bad_throughput_is_a_config_error():
    with pytest.raises(ConfigError, match="gpu-utilisation"):
        cost.estimate(load_config(None, TINY), utilisation=0)


def test_run_prints_the_line_before_work(capsys, tmp_path, monkeypatch):
    from autophagy.cli import main

    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the run directory cannot be made: the run fails at its first write
    code = main(["run", *sum((["-S", o] for o in TINY), []), "-S", "tracking.enabled=false", "--root", str(blocker)])
    out, _ = capsys.readouterr()
    assert code == 2 and out.startswith("estimated training cost: ") and "GPU-hours" in out.splitlines()[0]


def test_pipeline_compile_and_submit_print_the_line_first(capsys, tmp_path, monkeypatch):
    """Compiling or submitting a GPU preset states its cost before anything is compiled or sent."""
    from autophagy.cli import main

    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    config = ["--config", "configs/cifar10-edm.yaml", "--image", "registry.example/autophagy:0123abc"]
    assert main(["pipeline", "compile", *config, "-o", str(tmp_path / "packages")]) == 0
    compile_out = capsys.readouterr().out.splitlines()
    assert compile_out[0].startswith("estimated training cost: ") and "GPU-hours" in compile_out[0]
    assert compile_out[1].startswith("compiled ")
    assert main(["pipeline", "submit", *config]) == 2  # no host: refused after the cost line
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == compile_out[0] and "no Kubeflow Pipelines host" in err
