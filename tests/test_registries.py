"""The registries of model families, loop strategies and metrics, and the config split (issue 13,
items 1-2).

A toy family, a toy strategy and a toy metric are each registered in this file, and nowhere
else, then run through the real code paths that use the registries: ``autophagy run``'s loop
(config validation, model building, checkpoints, the plan, the mix, evaluation, collapse
detection, the console line, the report) and the Kubeflow runtime and compiler. That each needs
no other file is the measure of "a family / strategy / metric is one registration".

The config split is checked against ``tests/data/config_dicts_before_registries.json``, generated
by the code before the split (commit 5545a7e): every configs/*.yaml and a set of overrides load to
the same ``to_dict``, and bad configs fail with the same messages.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml

import autophagy.config
from autophagy import loop, plan, report
from autophagy.config import FAMILIES, ConfigError, Family, ModelConfig, load_config, register_family, to_dict
from autophagy.config.checks import positive
from autophagy.data.dataset import open_dataset, write_dataset
from autophagy.data.strategies import (
    STRATEGIES,
    check_like,
    combine,
    first_rows,
    real_shards,
    strategy,
    synthetic_count,
)
from autophagy.metric_keys import METRICS, Metric, headline_keys, register_metric
from autophagy.models import build_model
from autophagy.models.base import GenerativeModel, ModelError, TrainReport
from autophagy.models.checkpoint import load_checkpoint
from autophagy.models.noise import index_noise

FIXTURE = json.loads((Path(__file__).parent / "data" / "config_dicts_before_registries.json").read_text())
ROOT = Path(__file__).parents[1]


# ------------------------------------------------------------------------------ the config split


@pytest.mark.parametrize("label", sorted(FIXTURE["configs"]))
def test_every_config_loads_as_before_the_split(label):
    case = FIXTURE["configs"][label]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert to_dict(load_config(case["path"], case["overrides"])) == case["dict"]


def test_every_config_in_configs_is_in_the_fixture():
    assert {str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.yaml")} <= set(FIXTURE["configs"])


def test_bad_configs_fail_with_the_messages_of_before_the_split():
    for case in FIXTURE["errors"]:
        with warnings.catch_warnings(), pytest.raises(ConfigError) as caught:
            warnings.simplefilter("ignore")
            load_config(case["path"], case["overrides"])
        assert str(caught.value) == case["error"], case["overrides"]


def test_cluster_label_values_read_unquoted_yaml_booleans_as_text():
    from autophagy.pipelines.cluster import cluster_from_dict

    now, before = to_dict(cluster_from_dict(FIXTURE["cluster"]["raw"])), FIXTURE["cluster"]["dict"]
    for key in ("pod_labels", "node_selector"):  # the fields the old coercer special-cased, by type
        assert now[key] == before[key]
    assert now["dvc_remote"]["credentials_keys"] == before["dvc_remote"]["credentials_keys"] == {"K": "true"}


def test_every_name_the_config_module_exported_still_imports():
    names = [*FIXTURE["public_names"], "ModelConfig"]
    missing = [name for name in names if not hasattr(autophagy.config, name)]
    assert not missing
    assert autophagy.config.STRATEGIES == (
        "replace",
        "fully-synthetic",
        "accumulate",
        "accumulate-subsample",
        "fresh-real",
    )
    assert autophagy.config.IMAGE_FAMILIES == ("edm", "ddpm", "otcfm")
    assert list(autophagy.config.MODEL_CONFIGS) == ["gaussian", "flow", "edm", "ddpm", "otcfm", "causal-lm"]


def test_a_model_section_that_is_not_a_mapping_is_one_config_error():
    """Before the split, ``model: 3`` was a TypeError traceback from ``dict(3)``."""
    with pytest.raises(ConfigError, match=r"^model must be a mapping, got 3$"):
        load_config(None, ["model=3"])


def test_the_image_families_share_one_network_base():
    from autophagy.config import DDPMModelConfig, EDMModelConfig, ImageNetworkConfig, OTCFMModelConfig

    shared = {"network", "model_channels", "channel_mult", "num_blocks", "attn_resolutions", "dropout"}
    assert shared <= set(vars(ImageNetworkConfig)["__annotations__"])
    for cls in (EDMModelConfig, DDPMModelConfig, OTCFMModelConfig):
        assert issubclass(cls, ImageNetworkConfig)
        assert not shared & set(vars(cls)["__annotations__"])  # declared once, in the base
        with pytest.raises(ConfigError, match="model.network must be one of unet, mlp"):
            cls(network="cnn").validate()


def test_registries_refuse_a_name_twice_and_name_the_registered_ones():
    with pytest.raises(ConfigError, match="'gaussian'.*registered already"):
        register_family(Family("gaussian", autophagy.config.GaussianModelConfig, "x:y", "vector"))
    with pytest.raises(ConfigError, match=r"loop.strategy must be one of replace, .*fresh-real, got 'nope'"):
        STRATEGIES["nope"]
    with pytest.raises(
        ConfigError, match=r"model.family must be one of gaussian, flow, edm, ddpm, otcfm, causal-lm, got \[1\]"
    ):
        FAMILIES[[1]]  # a YAML list where a name belongs
    assert "nope" not in STRATEGIES and [1] not in FAMILIES


# ------------------------------------------------------------------------------ a toy of each


@dataclass(frozen=True)
class DriftConfig(ModelConfig):
    """A Gaussian fit whose samples drift by ``shift`` in every coordinate: a model that collapses."""

    family: Literal["toy-drift"] = "toy-drift"
    shift: float = 0.5

    def validate(self) -> None:
        positive("model.shift", self.shift)


class DriftModel(GenerativeModel):
    family = "toy-drift"
    kind = "vector"

    def __init__(self, cfg: DriftConfig, item_shape: tuple[int, ...]):
        super().__init__(cfg, item_shape)
        self.mean = torch.zeros(self.item_shape, dtype=torch.float64)
        self.std = torch.ones(self.item_shape, dtype=torch.float64)

    def fit(self, rows, budget_kimg, train, seed, scratch_dir=None, log=None) -> TrainReport:
        x = torch.from_numpy(np.asarray(rows, dtype=np.float64))
        self.mean, self.std = x.mean(dim=0), x.std(dim=0)
        return TrainReport(steps=1, images_seen=len(x), loss=float("nan"), seconds=0.0)

    def sample(self, n, seed, batch_size=1024, device="auto", temperature=1.0, start=0, **options: Any) -> np.ndarray:
        z = index_noise(seed, start, n, self.item_shape, dtype=torch.float64) * temperature
        return (self.mean + self.cfg.shift + self.std * z).numpy()

    def tensors(self):
        return {"model": {"mean": self.mean, "std": self.std}}

    def load_tensors(self, tensors):
        model = tensors["model"]
        if set(model) != {"mean", "std"}:
            raise ModelError("not a toy-drift checkpoint")
        self.mean, self.std = model["mean"], model["std"]


def last_two(lam, real, synthetic, out_dir, seed, info):
    """D_real + the first k rows of the sample sets of generations t-2 and t-1 only."""
    k = synthetic_count(lam, real.rows)
    kept = synthetic[-2:] if k else []
    for dataset in kept:
        check_like(dataset, real, k)
    return write_dataset(out_dir, combine(real_shards(real), *(first_rows(d, k) for d in kept)), info)


def mean_gap(samples: np.ndarray, reference: np.ndarray) -> float:
    """The largest coordinate of |mean(samples) - mean(reference)|."""
    return float(np.abs(samples.mean(axis=0) - reference.mean(axis=0)).max())


@pytest.fixture
def toys():
    """The toy family, strategy and metric, registered for one test."""
    register_family(Family("toy-drift", DriftConfig, DriftModel, "vector", ema=False))
    strategy("last-two", pooled=True)(last_two)
    register_metric(
        Metric(
            "mean_gap", "largest coordinate gap of the means", lower_is_better=True, space="vectors", compute=mean_gap
        )
    )
    try:
        yield
    finally:
        FAMILIES.unregister("toy-drift")
        STRATEGIES.unregister("last-two")
        METRICS.unregister("mean_gap")


def _toy_config(tiny_cfg, *overrides):
    return tiny_cfg(
        "gaussian",
        "model={family: toy-drift, shift: 0.5}",
        "loop.strategy=last-two",
        "loop.lambdas=[1]",
        "loop.generations=3",
        "loop.seeds=[1]",
        "loop.collapse_metric=mean_gap_train",
        "loop.collapse_ratio=1.5",
        *overrides,
    )


def test_without_their_registrations_the_toys_are_refused(tiny_cfg):
    with pytest.raises(ConfigError, match="model.family must be one of gaussian, .*otcfm, causal-lm, got 'toy-drift'"):
        tiny_cfg("gaussian", "model={family: toy-drift}")
    with pytest.raises(ConfigError, match="loop.strategy must be one of .*, got 'last-two'"):
        tiny_cfg("gaussian", "loop.strategy=last-two")
    with pytest.raises(ConfigError, match="loop.collapse_metric must start with one of fd_, .*, got 'mean_gap_train'"):
        tiny_cfg("gaussian", "loop.collapse_metric=mean_gap_train")


def test_a_toy_family_strategy_and_metric_run_through_the_loop_and_the_report(tmp_path, tiny_cfg, toys):
    cfg = _toy_config(tiny_cfg)
    with pytest.raises(ConfigError, match="model.shift must be a finite number > 0, got -1.0"):
        _toy_config(tiny_cfg, "model.shift=-1")  # the family's own validation
    with pytest.raises(ConfigError, match=r"model.family=toy-drift needs vector data"):
        _toy_config(tiny_cfg, "data.source=digits", "data.n_train=null", "data.n_test=null")  # its kind
    lines: list[str] = []
    layout = loop.run_experiment(cfg, tmp_path / cfg.name, log=lines.append)

    # the family: built, trained, checkpointed and reloaded through the registry
    model = load_checkpoint(layout.generation(1.0, 1, 3) / "model", family="toy-drift")
    assert isinstance(model, DriftModel) and model.cfg == DriftConfig(shift=0.5)
    assert isinstance(build_model(cfg.model, (2,)), DriftModel)

    # the strategy: generation 3 trains on D_real + k rows of generations 1 and 2 (not 0), as the plan says
    real = open_dataset(layout.real_train).load()
    k = synthetic_count(1.0, len(real))
    assert plan.generation_plan(cfg, 1.0, 1, 3).synthetic_from == (0, 1, 2)  # pooled: every earlier set handed in
    train_set = open_dataset(layout.generation(1.0, 1, 3) / "train_set")
    expected = [real] + [open_dataset(layout.generation(1.0, 1, g) / "samples").load()[:k] for g in (1, 2)]
    np.testing.assert_array_equal(train_set.load(), np.concatenate(expected))

    # the metric: computed for every reference, its direction used by collapse detection, shown everywhere
    metrics = [
        json.loads((layout.generation(None if g == 0 else 1.0, 1, g) / "metrics.json").read_text()) for g in range(4)
    ]
    for g, values in enumerate(metrics):
        samples = open_dataset(layout.generation(None if g == 0 else 1.0, 1, g) / "samples").load()[: cfg.sample.n_eval]
        assert values["mean_gap_train"] == pytest.approx(mean_gap(samples, real), rel=1e-12)
        assert "mean_gap_test" in values
    for values in metrics[1:]:  # lower is better: worse by value / baseline
        assert values["collapse_factor"] == pytest.approx(values["mean_gap_train"] / metrics[0]["mean_gap_train"])
    assert metrics[-1]["mean_gap_train"] > 1.5 * metrics[0]["mean_gap_train"] and metrics[-1]["collapsed"]
    assert "mean_gap_train" in headline_keys()
    assert any("mean_gap_train=" in line for line in lines)  # the console line of each generation
    written = report.write_report(layout.root)
    header = next(line for line in Path(written["markdown"]).read_text().splitlines() if line.startswith("| λ |"))
    assert "| mean_gap_train |" in header
    assert (layout.root / "report" / "mean_gap_train.png").is_file()


def test_the_toys_run_the_same_through_the_kubeflow_runtime_and_compile(tmp_path, tiny_cfg, toys, monkeypatch):
    """The pipeline's tasks (step-sliced configs, pool, mix, train, sample, evaluate) give the local
    loop's training sets and metrics; the compiled chain pools the sample sets for the toy strategy."""
    from autophagy.pipelines import ClusterConfig, compile_experiment
    from test_pipeline_strategies import SEED, _same_runs, run_like_the_pipeline

    cfg = _toy_config(tiny_cfg, "loop.generations=2", f"loop.seeds=[{SEED}]")
    local = loop.run_experiment(cfg, tmp_path / "local" / cfg.name, log=lambda _: None)
    pipeline = run_like_the_pipeline(cfg, tmp_path / "pipeline", monkeypatch)
    assert _same_runs(cfg, local, pipeline) == 3

    info = compile_experiment(cfg, ClusterConfig().validate(), "registry.example.com/autophagy:1", tmp_path / "kfp")
    chain = next(p for p in info["packages"] if p["kind"] == "chain")
    spec = next(yaml.safe_load_all(Path(chain["path"]).read_text()))
    names = {
        task["taskInfo"]["name"].split(" · ")[0]
        for component in [spec["root"], *spec["components"].values()]
        for task in component.get("dag", {}).get("tasks", {}).values()
    }
    assert {"gen-1-pool", "gen-2-pool", "gen-2-mix"} <= names


def test_a_registered_family_lists_its_pretrained_formats(toys, tmp_path):
    """The format check of train.init_checkpoint reads the family's registration."""
    from autophagy.models.pretrained import resolve_init

    pickle = tmp_path / "edm-snapshot.pkl"
    pickle.write_bytes(b"\x80\x04\x95\x00")  # content sniffed as a pickle: the edm-pickle format
    with pytest.raises(ModelError, match="model.family=toy-drift can start from an autophagy checkpoint or: none"):
        resolve_init(pickle, DriftConfig(), (2,))
    with pytest.raises(
        ModelError, match="model.family=otcfm can start from an autophagy checkpoint or: torchcfm, diffusers"
    ):
        resolve_init(pickle, autophagy.config.OTCFMModelConfig(), (8, 8, 1))


def test_a_family_whose_class_disagrees_with_its_registration_is_refused():
    with pytest.raises(ConfigError, match="DriftConfig.family defaults to 'toy-drift', not 'toy-other'"):
        Family("toy-other", DriftConfig, DriftModel, "vector")
    with pytest.raises(ConfigError, match="kind must be one of image, vector"):
        Family("toy-drift", DriftConfig, DriftModel, "audio")
    with pytest.raises(
        ConfigError,
        match="DriftModel declares family='toy-drift', kind='vector'; its registration says 'toy-drift', 'image'",
    ):
        Family("toy-drift", DriftConfig, DriftModel, "image").model_class()
