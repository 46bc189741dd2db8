"""Experiment configuration: defaults, YAML + ``-S`` overrides, validation messages, round trips, params.yaml."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml

from autophagy import dvc_params
from autophagy.config import (
    ConfigError,
    EDMModelConfig,
    ExperimentConfig,
    FlowModelConfig,
    GaussianModelConfig,
    format_lambda,
    from_dict,
    load_config,
    parse_lambda,
    to_dict,
    to_json,
)


def test_defaults_validate_and_match_the_paper_protocol():
    cfg = ExperimentConfig().validate()
    assert load_config() == cfg
    assert cfg.data.source == "digits" and isinstance(cfg.model, EDMModelConfig)
    assert cfg.loop.lambdas == (0.0, 0.5, 1.0, math.inf)
    assert cfg.train.init == "previous"  # fine-tune generation t-1, as in the paper
    assert cfg.evaluate.k == 3  # Kynkaanniemi et al. (2019)


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "toy-flow",
                "data": {"source": "toy2d", "name": "moons", "n_train": 500, "n_test": 100},
                "model": {"family": "flow", "transforms": 2, "hidden_features": [32, 32]},
                "evaluate": {"features": "raw"},
                "loop": {"lambdas": [0, 0.5], "generations": 3},
            }
        )
    )
    cfg = load_config(path)
    assert cfg.name == "toy-flow" and cfg.data.name == "moons"
    assert cfg.model == FlowModelConfig(transforms=2, hidden_features=(32, 32))
    assert cfg.loop.lambdas == (0.0, 0.5) and cfg.loop.generations == 3

    cfg = load_config(
        path,
        [
            "loop.lambdas=[0, 2, inf]",  # a list, with inf; lambda > 1 is legal
            "model.hidden_features=[8]",  # a nested tuple
            "train.lr=1e-4",  # YAML reads 1e-4 as a string; it must still become a float
            "train.grad_clip=1",  # an int for a float | None option
            "data.n_train=null",  # back to None... which toy2d refuses, so set it again below
            "data.n_train=64",
            "loop.seeds=[3, 4]",
        ],
    )
    assert cfg.loop.lambdas == (0.0, 2.0, math.inf)
    assert cfg.model.hidden_features == (8,) and cfg.model.transforms == 2  # the file's value survives
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.grad_clip == 1.0 and isinstance(cfg.train.grad_clip, float)
    assert cfg.data.n_train == 64 and cfg.loop.seeds == (3, 4)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[0, inf]", (0.0, math.inf)),
        ("[.inf]", (math.inf,)),
        ("[Infinity, 0.5]", (math.inf, 0.5)),
        ("1", (1.0,)),
        ("['inf', '0.25']", (math.inf, 0.25)),
    ],
)
def test_lambda_spellings(text, expected):
    assert load_config(None, [f"loop.lambdas={text}"]).loop.lambdas == expected


def test_family_switch_takes_the_families_defaults():
    cfg = load_config(
        None,
        [
            "model.family=gaussian",
            "model.estimator=unbiased",
            "data.source=gaussian",
            "data.n_train=10",
            "data.n_test=10",
            "evaluate.features=raw",
        ],
    )
    assert cfg.model == GaussianModelConfig(estimator="unbiased")


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["train.bogus=1"], ["train.bogus"]),  # unknown key: named, with what is allowed
        (["bogus=1"], ["bogus", "allowed"]),
        (["model.estimator=mle"], ["model.estimator"]),  # an option of another family
        (["train.batch_size=abc"], ["train.batch_size", "integer"]),  # wrong types
        (["data.n_train=1.5"], ["data.n_train", "integer"]),
        (["train.lr=fast"], ["train.lr", "number"]),
        (["tracking.enabled=maybe"], ["tracking.enabled", "true or false"]),
        (["loop.seeds=[a]"], ["loop.seeds"]),
        (["train=5"], ["train", "mapping"]),
        (["loop.lambdas=[0, -1]"], ["loop.lambdas", "-1"]),  # lambda < 0
        (["loop.lambdas=[0, nan]"], ["loop.lambdas", "nan"]),  # lambda NaN (string and YAML float)
        (["loop.lambdas=[.nan]"], ["loop.lambdas", "nan"]),
        (["loop.lambdas=[0, many]"], ["loop.lambdas", "many"]),
        (["loop.lambdas=[]"], ["loop.lambdas"]),
        (["loop.lambdas=[1, 1.0]"], ["loop.lambdas", "duplicates"]),
        (["loop.seeds=[1, 1]"], ["loop.seeds"]),
        (["loop.generations=-1"], ["loop.generations"]),
        (["data.source=mnist"], ["data.source", "digits", "toy2d", "image-folder"]),  # bad choices
        (["model.family=gan"], ["model.family", "edm", "flow", "gaussian"]),
        (
            ["model.family=otcfm", "model.network=unet", "model.model_channels=16", "model.head_channels=64"],
            ["model.head_channels=64", "[16, 32]", "attention heads"],
        ),  # would be 0 heads, a ZeroDivisionError in diffusers
        (["model.network=resnet"], ["model.network", "unet", "mlp"]),
        (["evaluate.features=clip"], ["evaluate.features", "inception"]),
        (["train.init=random"], ["train.init", "previous", "scratch"]),
        (["train.device=tpu"], ["train.device"]),
        (
            [
                "data.source=toy2d",
                "data.n_train=5",
                "data.n_test=5",
                "evaluate.features=raw",
                "model.family=flow",
                "data.name=circles",
            ],
            ["data.name", "moons"],
        ),
        (["data.source=image-folder"], ["data.path"]),
        (["train.lr=0"], ["train.lr"]),  # ranges
        (["train.lr=nan"], ["train.lr"]),
        (["train.budget_kimg=-5"], ["train.budget_kimg"]),
        (["train.budget_kimg=inf"], ["train.budget_kimg"]),  # an endless budget is never what was meant
        (["sample.n_eval=0"], ["sample.n_eval"]),
        (["model.sigma_min=100"], ["model.sigma_min", "model.sigma_max"]),
        (["model.sigma_max=inf"], ["model.sigma_max"]),
        (["model.dropout=1"], ["model.dropout"]),
        (["data.n_train=0"], ["data.n_train"]),
        (["data.test_fraction=1"], ["data.test_fraction"]),
        (["name=a b"], ["name"]),
        # incompatible combinations
        (
            ["data.source=toy2d", "data.name=moons", "data.n_train=5", "data.n_test=5", "evaluate.features=raw"],
            ["model.family=edm", "data.source=toy2d"],
        ),  # edm on vector data
        (["model.family=flow"], ["model.family=flow", "data.source=digits"]),  # flow on images
        (["model.family=gaussian"], ["model.family=gaussian", "data.source=digits"]),
        (["data.source=gaussian", "data.n_train=5", "data.n_test=5", "model.family=gaussian"], ["evaluate.features"]),
        (["data.source=toy2d", "data.name=moons", "model.family=flow", "evaluate.features=raw"], ["data.n_train"]),
        (["data.source=cifar10", "evaluate.features=digits-net"], ["evaluate.features=digits-net", "data.source"]),
    ],
)
def test_every_validation_error_names_the_option(overrides, names):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="section.option=value"):
        load_config(None, ["train.lr"])


def test_parse_lambda():
    assert parse_lambda("0") == 0.0 and parse_lambda("0.5") == 0.5 and parse_lambda(2) == 2.0
    assert (
        parse_lambda("inf") == math.inf and parse_lambda("Infinity") == math.inf and parse_lambda(math.inf) == math.inf
    )
    for bad in ("-1", "nan", -0.5, float("nan"), "abc", True, None, "-inf"):
        with pytest.raises(ConfigError, match="lambda"):
            parse_lambda(bad)
    with pytest.raises(ConfigError, match="--lam"):
        parse_lambda("-1", option="--lam")


def test_format_lambda_is_canonical_and_lossless():
    assert [format_lambda(x) for x in (0.0, 0.5, 1.0, 2.0, math.inf, 0.25, 1e-5)] == [
        "0",
        "0.5",
        "1",
        "2",
        "inf",
        "0.25",
        "1e-05",
    ]
    # Two different lambdas must never share a run directory name.
    for lam in (0.1234567, 0.1234568, 1 / 3, 123456789.0, 1e-7 + 1e-15):
        assert parse_lambda(format_lambda(lam)) == lam
    assert format_lambda(0.1234567) != format_lambda(0.1234568)


def test_round_trip_through_dict_and_json_keeps_inf():
    cfg = load_config(
        None,
        [
            "loop.lambdas=[0, 0.5, 2, inf]",
            "model.channel_mult=[1, 2, 2]",
            "train.gen0_budget_kimg=7",
            "train.grad_clip=1.5",
            "name=round-trip",
        ],
    )
    data = to_dict(cfg)
    assert data["loop"]["lambdas"] == [0.0, 0.5, 2.0, "inf"]
    assert data["model"]["family"] == "edm" and data["model"]["channel_mult"] == [1, 2, 2]
    assert from_dict(data) == cfg
    text = to_json(cfg)
    assert "Infinity" not in text and "NaN" not in text  # strict JSON
    assert from_dict(json.loads(text)) == cfg
    assert load_config(None, []) == from_dict(to_dict(load_config(None, [])))
    for preset in (
        [
            "model.family=flow",
            "data.source=toy2d",
            "data.name=spiral",
            "data.n_train=9",
            "data.n_test=9",
            "evaluate.features=raw",
        ],
        [
            "model.family=gaussian",
            "data.source=gaussian",
            "data.n_train=9",
            "data.n_test=9",
            "evaluate.features=raw",
            "data.dim=3",
        ],
    ):
        cfg = load_config(None, preset)
        assert from_dict(json.loads(to_json(cfg))) == cfg


def test_configs_are_frozen():
    cfg = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_dvc_params_have_canonical_lambdas_and_load_back(tmp_path):
    cfg = load_config(None, ["loop.lambdas=[0, 0.5, 1, inf]", "loop.generations=4"])
    params = dvc_params.params(cfg)
    assert params["loop"]["lambdas"] == ["0", "0.5", "1", "inf"]
    # params.yaml is itself a config: it loads back to the same experiment.
    path = tmp_path / "params.yaml"
    dvc_params.write(cfg, path)
    assert load_config(path) == cfg
    assert load_config(path, ["loop.lambdas=[0, 2]"]).loop.lambdas == (0.0, 2.0)
    with pytest.raises(ConfigError, match="generations"):
        dvc_params.write(load_config(None, ["loop.generations=0"]), tmp_path / "zero" / "params.yaml")
    assert not (tmp_path / "zero").exists()  # nothing written for a config DVC cannot run


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_config_loads_and_is_named_after_its_file(path, tmp_path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    # ... and runs under DVC: its params.yaml (autophagy dvc-params) loads back to the same config.
    dvc_params.write(cfg, tmp_path / "params.yaml")
    assert load_config(tmp_path / "params.yaml") == cfg
