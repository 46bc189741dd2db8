"""The fine-tuning protocol and the fast trainer (issue 4, items 3 and 4).

* the learning-rate schedule against its formula; the lr the trainer logs;
* each GPU preset's train settings, scaled to a tiny CPU network, move the EMA within one
  fine-tuning generation (and EDM's from-scratch half-life would not);
* the generation boundary: ``carry_ema``, ``carry_optimizer`` and ``finetune_from`` do exactly what
  they say (equality of tensors), through the train stage's own initialisation;
* the device-side data path (uint8 rows, ``encode_batch``, ``xflip``), channels-last, bf16 autocast
  and ``torch.compile`` (its error path; a real compile is slow on CPU and marked so);
* every new option validated, and recorded as an MLflow param;
* data-parallel training under ``torchrun`` on CPU (gloo), marked slow: a deterministic loss gives
  the single-process weights; a noisy one trains, agrees across ranks and loads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from autophagy.config import (
    ConfigError,
    ConfigWarning,
    EDMModelConfig,
    TrainConfig,
    ema_start_weight,
    flatten,
    load_config,
)
from autophagy.models import ModelError, build_model
from autophagy.models.checkpoint import load_checkpoint, save_checkpoint
from autophagy.models.training import learning_rate

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
GPU_PRESETS = ("cifar10-edm", "cifar10-ddpm", "cifar10-otcfm", "ffhq64-edm")
TINY_NET = {"network": "mlp", "model_channels": 32, "num_blocks": 1, "dropout": 0.0}
TINY_UNET = {"network": "unet", "model_channels": 8, "channel_mult": (1,), "num_blocks": 1, "attn_resolutions": ()}
IMAGE = (8, 8, 3)

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n=64, seed=0, shape=IMAGE):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def flat(weights):
    return torch.cat([v.flatten().double() for v in weights.values()])


def assert_equal_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------ learning-rate schedule


def test_constant_schedule_with_warmup():
    train = TrainConfig(lr=1e-3, lr_warmup_kimg=1.0)
    assert learning_rate(0, 100, 10_000, train) == pytest.approx(1e-4)  # images seen after the step: 100 of 1000
    assert learning_rate(400, 100, 10_000, train) == pytest.approx(5e-4)
    assert learning_rate(900, 100, 10_000, train) == 1e-3
    assert learning_rate(9_900, 100, 10_000, train) == 1e-3
    assert learning_rate(0, 100, 10_000, TrainConfig(lr=1e-3)) == 1e-3  # no warmup: lr from the first step


@pytest.mark.parametrize("low", [0.0, 0.1])
def test_cosine_schedule_is_the_formula(low):
    train = TrainConfig(lr=2e-4, lr_warmup_kimg=1.0, lr_schedule="cosine", lr_min_ratio=low)
    budget = 11_000  # 1000 images of warmup, then 10_000 of decay
    assert learning_rate(500, 100, budget, train) == pytest.approx(2e-4 * 0.6)  # warming up: no decay yet
    assert learning_rate(1_000, 100, budget, train) == pytest.approx(2e-4)  # the peak when the warmup ends
    for seen in (1_000, 3_500, 6_000, 8_500, 10_900):
        progress = (seen - 1_000) / 10_000
        expected = 2e-4 * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress)))
        assert learning_rate(seen, 100, budget, train) == pytest.approx(expected, rel=1e-12)
    assert learning_rate(6_000, 100, budget, train) == pytest.approx(2e-4 * (low + (1 - low) / 2))  # halfway
    assert learning_rate(budget, 100, budget, train) == pytest.approx(2e-4 * low)  # the floor at the end
    lrs = [learning_rate(s, 100, budget, train) for s in range(1_000, budget, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay


def test_logged_lr_follows_the_schedule_and_restarts_every_generation():
    """The trainer's ``lr`` log entries are learning_rate() of their step; a new generation warms up again."""
    cfg = EDMModelConfig(**TINY_NET, num_steps=2)
    train = TrainConfig(
        batch_size=16,
        lr=1e-3,
        lr_warmup_kimg=0.16,
        lr_schedule="cosine",
        lr_min_ratio=0.1,
        ema_halflife_kimg=0.05,
        device="cpu",
    )
    torch.manual_seed(0)
    model = build_model(cfg, IMAGE)
    budget = 0.8  # 50 steps of 16: logs at steps 25 and 50
    for generation in range(2):
        logs = []
        model.fit(images(), budget, train, seed=generation, log=logs.append)
        assert [round(e["kimg"] * 1000) for e in logs] == [400, 800]
        for entry in logs:
            seen_before = round(entry["kimg"] * 1000) - 16
            assert entry["lr"] == pytest.approx(learning_rate(seen_before, 16, 800, train), rel=1e-12)
        assert logs[-1]["lr"] < 0.11e-3  # close to lr_min_ratio * lr at the end of the budget
        model.start_generation(carry_optimizer=True)


# ------------------------------------------------------------------ the presets move the EMA within a generation


def _scaled_preset(name: str, halflife_kimg: float | None = None):
    """The preset's model (its family and loss, a tiny MLP network) and its train settings with every
    image count scaled so that one 50 kimg generation becomes 20 steps of 32 images."""
    cfg = load_config(CONFIGS / f"{name}.yaml")
    scale = 0.64 / cfg.train.budget_kimg
    train = dataclasses.replace(
        cfg.train,
        batch_size=32,
        device="cpu",
        budget_kimg=0.64,
        gen0_budget_kimg=None,
        lr_warmup_kimg=cfg.train.lr_warmup_kimg * scale,
        ema_halflife_kimg=(halflife_kimg or cfg.train.ema_halflife_kimg) * scale,
    )
    model_cfg = dataclasses.replace(cfg.model, **TINY_NET)
    return model_cfg, train


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_preset_protocol_moves_the_ema_within_one_generation(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)  # the presets' EMA moves: no warning
        model_cfg, train = _scaled_preset(name)
    assert train.xflip and train.carry_ema and train.carry_optimizer and train.finetune_from == "net"
    assert ema_start_weight(train.budget_kimg, train.ema_halflife_kimg) < 1e-5
    rows = images(128)
    torch.manual_seed(0)
    parent = build_model(model_cfg, IMAGE)
    parent.fit(rows, 0.32, dataclasses.replace(train, budget_kimg=0.32), seed=0)  # "generation t-1"
    moved = {}
    for label, halflife in (("preset", None), ("edm-from-scratch", 500.0)):
        _, scaled = _scaled_preset(name, halflife)
        child = build_model(model_cfg, IMAGE)
        child.load_tensors(parent.tensors())
        child.load_train_state(parent.train_state())
        child.start_generation(scaled.carry_optimizer, scaled.carry_ema, scaled.finetune_from)
        net0, ema0 = flat(state(child.net)), flat(state(child.ema))
        child.fit(rows, scaled.budget_kimg, scaled, seed=1)
        net_step = (flat(state(child.net)) - net0).norm()
        ema_step = (flat(state(child.ema)) - ema0).norm()
        moved[label] = (float(ema_step / ema0.norm()), float(ema_step / net_step))
    relative, followed = moved["preset"]
    assert relative > 5e-3, moved  # the sampled model measurably changes within the generation ...
    assert followed > 0.5, moved  # ... and follows the trained network
    slow_relative, slow_followed = moved["edm-from-scratch"]
    assert slow_relative < 5e-3 and slow_followed < 0.2, moved  # a 500 kimg half-life would barely move in 50 kimg


def test_slow_ema_is_warned_about():
    with pytest.warns(ConfigWarning, match=r"train.ema_halflife_kimg=500 .*train.budget_kimg=50.*0.93"):
        load_config(CONFIGS / "cifar10-edm.yaml", ["train.ema_halflife_kimg=500"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        for name in GPU_PRESETS + ("digits-edm", "toy2d-flow"):
            load_config(CONFIGS / f"{name}.yaml")
        load_config(CONFIGS / "cifar10-edm.yaml", ["train.ema_halflife_kimg=0"])  # no EMA at all: nothing to warn
        load_config(CONFIGS / "gaussian-theory.yaml", ["train.ema_halflife_kimg=500"])  # closed form: no EMA


# ------------------------------------------------------------------ the generation boundary


@pytest.fixture(scope="module")
def parent_checkpoint(tmp_path_factory):
    """A trained edm checkpoint whose net, EMA and Adam moments all differ (generation t-1)."""
    cfg = EDMModelConfig(**TINY_NET, num_steps=2)
    torch.manual_seed(0)
    model = build_model(cfg, IMAGE)
    model.fit(images(), 0.32, TrainConfig(batch_size=32, lr=1e-3, ema_halflife_kimg=0.1, device="cpu"), seed=0)
    path = tmp_path_factory.mktemp("parent") / "model"
    save_checkpoint(model, path, {"generation": 0})
    return path


def _started(tiny_cfg, path, *overrides):
    """The model generation 1 starts from, built by the train stage's own initialisation."""
    from autophagy.stages.train import _initial_model

    cfg = tiny_cfg("digits", *overrides)
    return cfg, _initial_model(cfg, IMAGE, path, seed=0)


@pytest.mark.parametrize("carry_ema", [True, False])
@pytest.mark.parametrize("finetune_from", ["net", "ema"])
def test_start_generation_weights(parent_checkpoint, tiny_cfg, carry_ema, finetune_from):
    saved = {name: load_file(str(parent_checkpoint / f"{name}.safetensors")) for name in ("model", "ema")}
    assert not torch.equal(flat(saved["model"]), flat(saved["ema"]))
    _, model = _started(
        tiny_cfg, parent_checkpoint, f"train.carry_ema={str(carry_ema).lower()}", f"train.finetune_from={finetune_from}"
    )
    start = saved["model"] if finetune_from == "net" else saved["ema"]
    assert_equal_state(state(model.net), start)
    assert_equal_state(state(model.ema), saved["ema"] if carry_ema else start)
    assert model.progress == {}  # counters, data order and random streams restart


@pytest.mark.parametrize("carry_ema", [True, False])
def test_ema_update_after_the_boundary(parent_checkpoint, tiny_cfg, carry_ema):
    """One step after the boundary: ema = beta * ema_start + (1 - beta) * net_1, where ema_start is
    t-1's EMA (carry_ema) or the starting weights."""
    cfg, model = _started(tiny_cfg, parent_checkpoint, f"train.carry_ema={str(carry_ema).lower()}")
    net0, ema0 = state(model.net), state(model.ema)
    train = dataclasses.replace(cfg.train, batch_size=32, ema_halflife_kimg=0.1)
    model.fit(images(), 0.032, train, seed=0)
    beta = 0.5 ** (32 / 100)
    start = ema0 if carry_ema else net0
    net1, ema1 = state(model.net), state(model.ema)
    for key in ema1:
        torch.testing.assert_close(ema1[key], beta * start[key] + (1 - beta) * net1[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("carry_optimizer", [True, False])
def test_carry_optimizer(parent_checkpoint, tiny_cfg, carry_optimizer):
    parent = load_checkpoint(parent_checkpoint)
    saved = parent.optimizer_state
    assert saved is not None and saved["state"]
    cfg, model = _started(tiny_cfg, parent_checkpoint, f"train.carry_optimizer={str(carry_optimizer).lower()}")
    if not carry_optimizer:
        assert model.optimizer_state is None
    else:
        for index, entry in saved["state"].items():
            for key, value in entry.items():
                assert torch.equal(model.optimizer_state["state"][index][key], value), (index, key)
    model.fit(images(), 0.064, dataclasses.replace(cfg.train, batch_size=32), seed=0)  # two more steps
    steps = {float(entry["step"]) for entry in model.optimizer_state["state"].values()}
    previous = {float(entry["step"]) for entry in saved["state"].values()}
    assert steps == ({p + 2 for p in previous} if carry_optimizer else {2.0})


# ------------------------------------------------------------------ the device-side data path


def test_encode_batch_is_encode_and_xflip_flips_on_the_device():
    model = build_model(EDMModelConfig(**TINY_NET), IMAGE)
    rows = images(16)
    stored = model.stage_rows(rows, torch.device("cpu"))
    assert stored.dtype == torch.uint8 and tuple(stored.shape) == (16, *IMAGE)  # 1 byte per value on the device
    assert torch.equal(model.encode_batch(stored), model.encode(rows))
    channels_last = model.encode_batch(stored, channels_last=True)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last, model.encode(rows))
    flip = torch.arange(16) % 3 == 0
    flipped = model.encode_batch(model.flip_batch(stored, flip))
    expected = np.where(flip.numpy()[:, None, None, None], rows[:, :, ::-1, :], rows)
    assert torch.equal(flipped, model.encode(np.ascontiguousarray(expected)))


@pytest.mark.parametrize("xflip", [False, True])
def test_xflip_in_training(xflip):
    """Each batch the loss sees holds training rows, flipped left-right with probability 1/2 (xflip) or never."""
    model = build_model(EDMModelConfig(**TINY_NET, num_steps=2), IMAGE)
    rows = images(32)
    plain = model.encode(rows).flatten(1)
    mirrored = model.encode(np.ascontiguousarray(rows[:, :, ::-1])).flatten(1)
    seen = {"plain": 0, "mirrored": 0}
    original = model.loss

    def recording_loss(net, x, generator):
        for item in x.flatten(1):
            if (plain == item).all(1).any():
                seen["plain"] += 1
            else:
                assert (mirrored == item).all(1).any()
                seen["mirrored"] += 1
        return original(net, x, generator)

    model.loss = recording_loss
    model.fit(rows, 0.32, TrainConfig(batch_size=32, ema_halflife_kimg=0.1, device="cpu", xflip=xflip), seed=0)
    assert sum(seen.values()) == 320
    if xflip:
        assert 100 < seen["mirrored"] < 220
    else:
        assert seen["mirrored"] == 0


def test_channels_last_gives_the_same_training():
    """Memory layout is not maths: a tiny UNet trained channels-last matches the contiguous run."""
    cfg = EDMModelConfig(**TINY_UNET, num_steps=2)
    out = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, IMAGE)
        report = model.fit(
            images(32),
            0.096,
            TrainConfig(batch_size=32, ema_halflife_kimg=0.1, device="cpu", channels_last=channels_last),
            seed=0,
        )
        assert report.channels_last is channels_last
        if channels_last:
            convs = [p for p in model.net.parameters() if p.dim() == 4]
            assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        out[channels_last] = model.tensors()
    for group in ("model", "ema"):
        for key, value in out[False][group].items():
            torch.testing.assert_close(out[True][group][key], value, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_on_cpu_keeps_fp32_weights(tmp_path):
    model = build_model(EDMModelConfig(**TINY_NET, num_steps=2), IMAGE)
    inner = []
    first_linear = next(m for m in model.net.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda module, args, output: inner.append(output.dtype))
    auto = model.fit(images(), 0.032, TrainConfig(batch_size=32, device="cpu"), seed=0)
    assert auto.precision == "fp32" and inner[-1] == torch.float32  # auto is fp32 on CPU
    report = model.fit(images(), 0.096, TrainConfig(batch_size=32, device="cpu", precision="bf16"), seed=0)
    assert report.precision == "bf16" and inner[-1] == torch.bfloat16  # the forward ran in bf16 ...
    assert math.isfinite(report.loss)
    for module in (model.net, model.ema):  # ... the weights, the EMA and Adam's moments stayed fp32
        assert all(p.dtype == torch.float32 for p in module.parameters())
    moments = [v for entry in model.optimizer_state["state"].values() for k, v in entry.items() if k != "step"]
    assert moments and all(v.dtype == torch.float32 for v in moments)
    save_checkpoint(model, tmp_path / "ckpt", {})
    assert all(v.dtype == torch.float32 for v in load_file(str(tmp_path / "ckpt" / "model.safetensors")).values())


def test_compile_without_a_working_compiler_is_a_clear_error():
    import torch._inductor.config as inductor_config

    model = build_model(EDMModelConfig(**TINY_NET), IMAGE)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)}):  # restores the setting (monkeypatch would not)
        with pytest.raises(ModelError, match=r"train.compile=true .*C\+\+ compiler.*set train.compile=false"):
            model.fit(images(), 0.032, TrainConfig(batch_size=32, device="cpu", compile=True), seed=0)


@pytest.mark.slow
def test_compile_trains_and_checkpoints_plain_names(tmp_path):
    """torch.compile on CPU (tens of seconds of compiling): the same weights' names in the checkpoint,
    an uncompiled EMA, and the result of the eager trainer up to float reassociation."""
    cfg = EDMModelConfig(**TINY_NET, num_steps=2)
    out = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, IMAGE)
        report = model.fit(images(32), 0.096, TrainConfig(batch_size=32, device="cpu", compile=compiled), seed=0)
        assert report.compiled is compiled
        assert type(model.net).__name__ == "EDMPrecond" and type(model.ema).__name__ == "EDMPrecond"
        save_checkpoint(model, tmp_path / str(compiled), {})
        out[compiled] = {
            name: load_file(str(tmp_path / str(compiled) / f"{name}.safetensors")) for name in ("model", "ema")
        }
    for group in ("model", "ema"):
        assert out[True][group].keys() == out[False][group].keys()
        assert not any("_orig_mod" in key for key in out[True][group])
        for key in out[False][group]:
            torch.testing.assert_close(out[True][group][key], out[False][group][key], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ options: validation and tracking


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lr_schedule=step", ["train.lr_schedule", "constant", "cosine"]),
        ("train.lr_min_ratio=1.5", ["train.lr_min_ratio", "[0, 1]"]),
        ("train.finetune_from=both", ["train.finetune_from", "net", "ema"]),
        ("train.precision=fp16", ["train.precision", "auto", "fp32", "bf16"]),
        ("train.carry_ema=maybe", ["train.carry_ema", "true or false"]),
        ("train.compile=1", ["train.compile", "true or false"]),
        ("train.xflip=yes please", ["train.xflip", "true or false"]),
    ],
)
def test_new_options_are_validated(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert all(w in str(info.value) for w in words), str(info.value)


def test_image_options_are_refused_for_vectors(tiny_cfg):
    for option in ("train.xflip", "train.channels_last"):
        with pytest.raises(ConfigError, match=f"{option}=true applies to images"):
            tiny_cfg("toy", f"{option}=true")
    with pytest.warns(ConfigWarning, match="train.xflip=true flips digits"):
        tiny_cfg("digits", "train.xflip=true")


def test_protocol_options_are_mlflow_params(tiny_cfg):
    from autophagy.tracking import Tracker

    cfg = tiny_cfg("digits", "tracking.enabled=true", "train.lr_schedule=cosine", "train.carry_ema=false")
    tracker = Tracker(cfg)
    params = tracker.client.get_run(tracker.parent_run()).data.params
    expected = {
        "train.lr_schedule": "cosine",
        "train.lr_min_ratio": "0.0",
        "train.lr_warmup_kimg": "0.0",
        "train.carry_ema": "False",
        "train.carry_optimizer": "True",
        "train.finetune_from": "net",
        "train.ema_halflife_kimg": "0.5",
        "train.budget_kimg": "1.0",
        "train.precision": "auto",
        "train.channels_last": "None",
        "train.compile": "False",
        "train.xflip": "False",
    }
    assert {k: params.get(k) for k in expected} == expected
    assert set(flatten(cfg)) <= set(params)


# ------------------------------------------------------------------ data parallel (torchrun, CPU, gloo)


def test_only_train_runs_under_torchrun(monkeypatch, capsys, tmp_path):
    from autophagy.cli import main
    from autophagy.distributed import is_main_process, process_group

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    assert main(["mix", "--real", str(tmp_path), "--lam", "0", "--out", str(tmp_path / "m"), "--generation", "1"]) == 2
    assert "only `autophagy train` runs under torchrun" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.device=cuda:1 pins every process to one GPU"):
        with process_group("cuda:1"):
            pass


def _torchrun(*args, cwd: Path) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "autophagy.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def _config_args(cfg, path: Path) -> list[str]:
    import yaml

    from autophagy.config import to_dict

    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return ["--config", str(path)]


@pytest.mark.slow
def test_two_processes_equal_one_for_a_deterministic_loss(tiny_cfg, tmp_path):
    """The flow's loss (-log p(x)) draws no noise: with the same global batch and seed, 2 ranks of
    32 images each give the 1-process weights (up to the order of float summation)."""
    from autophagy.stages import prepare, train

    cfg = tiny_cfg("toy", "train.gen0_budget_kimg=0.64", "train.ema_halflife_kimg=0.2")  # 10 steps of 64
    prepare.run(cfg, tmp_path / "data")
    single = train.run(cfg, tmp_path / "data" / "train", tmp_path / "one", generation=0, seed=0)
    result = _torchrun(
        "train",
        *_config_args(cfg, tmp_path / "cfg.yaml"),
        "--train-set",
        str(tmp_path / "data" / "train"),
        "--out",
        str(tmp_path / "two"),
        "--generation",
        "0",
        "--seed",
        "0",
        "--result",
        str(tmp_path / "two.json"),
        cwd=tmp_path,
    )
    parallel = json.loads((tmp_path / "two.json").read_text())
    assert result.stdout.count('"train_steps"') == 1  # rank 0 reports, rank 1 stays quiet
    assert parallel["train_world_size"] == 2 and single["train_world_size"] == 1
    assert parallel["train_kimg"] == single["train_kimg"] == 0.64 and parallel["train_steps"] == single["train_steps"]
    assert parallel["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["trained_with"]["world_size"] == 2 and config["trained_with"]["device"] == "cpu"
    for name in ("model", "ema"):
        one, two = (load_file(str(tmp_path / d / f"{name}.safetensors")) for d in ("one", "two"))
        assert one.keys() == two.keys()
        for key in one:
            torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)
    assert not (tmp_path / ".two.partial").exists()


@pytest.mark.slow
def test_data_parallel_train_through_the_kfp_runtime(tiny_cfg, tmp_path, monkeypatch):
    """cluster.gpus_per_train > 1: the KFP train component's runtime runs torchrun in its pod. On CPU
    (gloo) with EDM: every rank draws its own loss noise, so the run is not the 1-process one, but it
    trains (the loss drops well below the zero network's 1), the ranks end with identical weights and
    EMA (fit checks it, else the run fails) and rank 0's checkpoint loads."""
    from autophagy.components import runtime

    from autophagy.data.dataset import open_dataset
    from autophagy.stages import prepare
    from autophagy.stages.train import _initial_model
    from autophagy.step_config import BOOKKEEPING_ENV, bookkeeping, step_options, to_json

    cfg = tiny_cfg("digits", "data.n_train=256", "train.gen0_budget_kimg=3.2")
    prepare.run(cfg, tmp_path / "data")
    monkeypatch.setenv(BOOKKEEPING_ENV, to_json(bookkeeping(cfg)))  # as the pod's env (the ranks inherit it)
    result = runtime.train(
        to_json(step_options(cfg, "train")),
        str(tmp_path / "data" / "train"),
        str(tmp_path / "model"),
        0,
        0,
        "",
        None,
        gpus=2,
    )
    assert result["train_world_size"] == 2 and result["train_kimg"] == pytest.approx(3.2)
    assert math.isfinite(result["train_loss"])
    model = load_checkpoint(tmp_path / "model")
    rows = open_dataset(tmp_path / "data" / "train").load()

    def held_out_loss(net):  # the EDM loss on every training row under one fixed draw of noise levels and noise
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return float(torch.stack([model.loss(net, model.encode(rows), generator) for _ in range(20)]).mean())

    start = _initial_model(cfg, (8, 8, 1), None, seed=0)  # the weights both ranks started from
    assert held_out_loss(model.ema) < 0.85 * held_out_loss(start.net)  # (measured: 1.20 vs 1.67)
    assert model.progress["images_seen"] == 3200 and len(model.progress["noise_generators"]) == 2
    assert not torch.equal(model.progress["noise_generators"][0], model.progress["noise_generators"][1])
    assert json.loads((tmp_path / "model" / "config.json").read_text())["trained_with"]["world_size"] == 2
    assert model.sample(4, seed=0, device="cpu").shape == (4, 8, 8, 1)
