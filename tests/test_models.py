"""Model families (gaussian, flow, edm with mlp/unet): training, seeded sampling, checkpoints, faults,
resumable training, and the EDM maths against closed forms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from autophagy.config import EDMModelConfig, FlowModelConfig, GaussianModelConfig, TrainConfig
from autophagy.models import ModelError, TrainingDivergedError, build_model
from autophagy.models.checkpoint import load_checkpoint, save_checkpoint
from autophagy.models.edm import EDMPrecond, edm_sigma_steps, heun_sample

pytestmark = pytest.mark.usefixtures("one_thread")


TRAIN = TrainConfig(batch_size=32, lr=1e-3, device="cpu", ema_halflife_kimg=0.5)

FAMILIES = {
    "gaussian": (GaussianModelConfig(), (2,)),
    "flow": (FlowModelConfig(transforms=1, hidden_features=(16,), bins=4), (2,)),
    "edm-mlp": (EDMModelConfig(network="mlp", model_channels=32, num_blocks=1, num_steps=4), (8, 8, 1)),
    "edm-unet": (
        EDMModelConfig(network="unet", model_channels=16, channel_mult=(1, 2), num_blocks=1, num_steps=3),
        (8, 8, 1),
    ),
}


def tiny_rows(item_shape, n=64, seed=0):
    rng = np.random.default_rng(seed)
    if len(item_shape) == 1:
        return (rng.standard_normal((n, *item_shape)) * 0.5 + 1.0).astype(np.float32)
    return rng.integers(0, 256, size=(n, *item_shape), dtype=np.uint8)


def trained(name, budget_kimg=None):
    cfg, item_shape = FAMILIES[name]
    budget_kimg = budget_kimg or (0.064 if name == "edm-unet" else 0.128)  # the UNet is slow on CPU
    torch.manual_seed(0)
    model = build_model(cfg, item_shape)
    report = model.fit(tiny_rows(item_shape), budget_kimg, TRAIN, seed=1)
    return model, report


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_model(request):
    """Each family trained for a few steps on tiny data (once per module)."""
    model, report = trained(request.param)
    return request.param, model, report


def test_trains_and_samples_the_right_shape_and_dtype(family_model):
    name, model, report = family_model
    cfg, item_shape = FAMILIES[name]
    assert model.family == cfg.family and model.item_shape == item_shape
    if name == "gaussian":
        assert report.steps == 1 and report.images_seen == 64
    else:
        steps = 2 if name == "edm-unet" else 4
        assert report.steps == steps and report.images_seen == 32 * steps  # whole batches of 32
        assert math.isfinite(report.loss)
    samples = model.sample(7, seed=3, batch_size=4)
    assert samples.shape == (7, *item_shape)
    vectors = np.float64 if name == "gaussian" else np.float32  # the Gaussian family is float64 end to end
    assert samples.dtype == (vectors if len(item_shape) == 1 else np.uint8)
    if len(item_shape) == 1:
        assert np.isfinite(samples).all()
    assert model.parameter_count() > 0


def assert_same_rows(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding: a network's float32 output may differ in the last bits with the
    batch size (BLAS blocking), so vectors agree to ~1e-6 and uint8 pixels to at most 1 level,
    rarely; the base noise itself is identical (see tests/test_noise.py)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    if a.dtype == np.uint8:
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    else:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_sampling_is_per_index_seeded(family_model):
    """Row i depends only on (seed, i): batch size and count do not change it."""
    _, model, _ = family_model
    ten = model.sample(10, seed=11, batch_size=3)
    assert_same_rows(ten[:5], model.sample(5, seed=11, batch_size=5))
    assert_same_rows(ten, model.sample(10, seed=11, batch_size=10))
    np.testing.assert_array_equal(ten, model.sample(10, seed=11, batch_size=3))  # same call, same bits
    other = model.sample(10, seed=12, batch_size=10)
    assert (
        (np.abs(ten.astype(np.float64) - other.astype(np.float64)).reshape(10, -1).max(axis=1) > 2).sum() >= 5
        if ten.dtype == np.uint8
        else not np.allclose(ten, other, atol=1e-3)
    )
    assert len({row.tobytes() for row in ten}) == 10  # the rows differ from each other


def test_checkpoint_round_trip(family_model, tmp_path):
    name, model, _ = family_model
    save_checkpoint(model, tmp_path / "ckpt", {"generation": 3, "note": "test"})
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert "config.json" in files and "model.safetensors" in files
    assert not any(f.endswith((".pkl", ".pickle")) for f in files)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["family"] == model.family and config["generation"] == 3
    assert config["item_shape"] == list(model.item_shape)
    loaded = load_checkpoint(tmp_path / "ckpt", family=model.family)
    assert type(loaded) is type(model) and loaded.cfg == model.cfg
    for group, tensors in model.tensors().items():
        for key, value in tensors.items():
            assert torch.equal(loaded.tensors()[group][key].cpu(), value.cpu()), (group, key)
    np.testing.assert_array_equal(loaded.sample(6, seed=5, batch_size=4), model.sample(6, seed=5, batch_size=4))


def test_wrong_family_names_both(tmp_path):
    model, _ = trained("gaussian")
    save_checkpoint(model, tmp_path / "ckpt", {})
    with pytest.raises(ModelError) as info:
        load_checkpoint(tmp_path / "ckpt", family="edm")
    assert "'gaussian'" in str(info.value) and "'edm'" in str(info.value)


@pytest.fixture(scope="module")
def edm_checkpoint(tmp_path_factory):
    model, _ = trained("edm-mlp", budget_kimg=0.064)
    path = tmp_path_factory.mktemp("edm") / "ckpt"
    save_checkpoint(model, path, {})
    return path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for file in src.iterdir():
        (dst / file.name).write_bytes(file.read_bytes())
    return dst


@pytest.mark.parametrize("damage", ["truncate", "garbage-header", "empty"])
def test_corrupted_safetensors(edm_checkpoint, tmp_path, damage):
    path = copy_checkpoint(edm_checkpoint, tmp_path / "ckpt")
    file = path / "model.safetensors"
    data = file.read_bytes()
    if damage == "truncate":
        file.write_bytes(data[: len(data) // 2])
    elif damage == "garbage-header":
        file.write_bytes(b"\xff" * 16 + data[16:])
    else:
        file.write_bytes(b"")
    with pytest.raises(ModelError, match="model.safetensors is corrupted"):
        load_checkpoint(path, family="edm")


def test_other_checkpoint_faults(edm_checkpoint, tmp_path):
    path = copy_checkpoint(edm_checkpoint, tmp_path / "ckpt")
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no model.safetensors"):
        load_checkpoint(path)
    with pytest.raises(ModelError, match="config.json is missing"):
        load_checkpoint(tmp_path)
    path = copy_checkpoint(edm_checkpoint, tmp_path / "ckpt2")
    (path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="corrupted"):
        load_checkpoint(path)
    path = copy_checkpoint(edm_checkpoint, tmp_path / "ckpt3")
    config = json.loads((path / "config.json").read_text())
    config["model"]["model_channels"] = 48  # weights of a 32-wide network
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not fit"):
        load_checkpoint(path)
    config["model"]["model_channels"] = -1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="invalid model config"):
        load_checkpoint(path)


class _Payload:
    """Unpickling this would run code; a checkpoint must never do that."""

    ran = False

    def __reduce__(self):
        return (_Payload._run, ())

    @staticmethod
    def _run():
        _Payload.ran = True
        return {}


@pytest.mark.parametrize("damage", ["code", "truncated"])
def test_train_state_never_executes_code(edm_checkpoint, tmp_path, damage):
    path = copy_checkpoint(edm_checkpoint, tmp_path / "ckpt")
    state = path / "train_state.pt"
    if damage == "code":
        torch.save({"optimizer": _Payload()}, state)
    else:
        state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ModelError, match="train_state.pt"):
        load_checkpoint(path)
    assert not _Payload.ran
    assert load_checkpoint(path, with_train_state=False).family == "edm"  # sampling needs no train state


# ------------------------------------------------------------------ training details


def test_nan_data_raises_training_diverged():
    cfg, item_shape = FAMILIES["flow"]
    rows = tiny_rows(item_shape)
    rows[5] = np.nan
    with pytest.raises(TrainingDivergedError, match="diverged: the loss is nan"):
        build_model(cfg, item_shape).fit(rows, 0.2, TRAIN, seed=0)


def test_huge_learning_rate_raises_training_diverged():
    cfg, item_shape = FAMILIES["edm-mlp"]
    with pytest.raises(TrainingDivergedError, match="train.lr"):
        build_model(cfg, item_shape).fit(
            tiny_rows(item_shape), 0.5, TrainConfig(batch_size=32, lr=1e30, device="cpu"), 0
        )


def test_gaussian_fit_is_the_closed_form():
    rows = tiny_rows((3,), n=50, seed=4)
    for estimator, ddof in (("mle", 0), ("unbiased", 1)):
        model = build_model(GaussianModelConfig(estimator=estimator), (3,))
        model.fit(rows, 1.0, TRAIN, seed=0)
        np.testing.assert_allclose(model.mean.numpy(), rows.astype(np.float64).mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(model.std.numpy(), rows.astype(np.float64).std(axis=0, ddof=ddof), rtol=1e-12)
    with pytest.raises(ModelError, match="at least 2 rows"):
        model.fit(rows[:1], 1.0, TRAIN, seed=0)


def test_flow_training_lowers_the_negative_log_likelihood():
    cfg, item_shape = FAMILIES["flow"]
    rows = tiny_rows(item_shape, n=256) + 2.0
    torch.manual_seed(0)
    model = build_model(cfg, item_shape)
    x = torch.from_numpy(rows)
    before = -model.net().log_prob(x).mean().item()
    model.fit(rows, 3.0, TrainConfig(batch_size=64, lr=3e-3, device="cpu"), seed=0)
    after = -model.net().log_prob(x).mean().item()
    assert after < before - 0.5


def test_ema_is_the_documented_moving_average():
    """After one step: ema = beta * theta_0 + (1 - beta) * theta_1, beta = 0.5 ** (batch / halflife)."""
    cfg, item_shape = FAMILIES["edm-mlp"]
    torch.manual_seed(0)
    model = build_model(cfg, item_shape)
    start = {k: v.clone() for k, v in model.net.state_dict().items()}
    train = TrainConfig(batch_size=32, lr=1e-2, device="cpu", ema_halflife_kimg=0.1)
    model.fit(tiny_rows(item_shape), 0.032, train, seed=0)  # exactly one step of 32 images
    beta = 0.5 ** (32 / 100)
    net, ema = model.net.state_dict(), model.ema.state_dict()
    moved = 0
    for key in start:
        np.testing.assert_allclose(ema[key].numpy(), (beta * start[key] + (1 - beta) * net[key]).numpy(), atol=1e-6)
        moved += not torch.equal(net[key], start[key])
    assert moved > 0


def test_logged_loss_is_the_mean_since_the_last_log(tmp_path):
    """Each logged ``loss`` averages exactly the steps since the previous log, also around the
    train-state checkpoints that do not fall on the 25-step cadence."""
    cfg, item_shape = FAMILIES["flow"]
    for scratch in (None, tmp_path / "scratch"):
        if scratch is not None:
            scratch.mkdir()
        model = build_model(cfg, item_shape)
        losses, logs = [], []
        original = model.loss

        def recording_loss(net, x, generator, original=original, losses=losses):
            value = original(net, x, generator)
            losses.append(float(value.detach()))
            return value

        model.loss = recording_loss
        train = TrainConfig(batch_size=8, lr=1e-3, device="cpu", checkpoint_every_kimg=0.08)  # every 10 steps
        report = model.fit(tiny_rows(item_shape), 0.4, train, seed=0, scratch_dir=scratch, log=logs.append)
        assert report.steps == len(losses) == 50
        boundaries = [round(entry["kimg"] * 1000) // 8 for entry in logs]
        assert boundaries[-1] == 50 and boundaries == sorted(set(boundaries))
        assert len(logs) <= 10  # synced now and then, not at every step
        previous = 0
        for entry, end in zip(logs, boundaries):
            assert entry["loss"] == pytest.approx(np.mean(losses[previous:end]), rel=1e-5), (scratch, previous, end)
            previous = end


# ------------------------------------------------------------------ EDM maths


def test_sigma_schedule_is_karras_eq_5():
    cfg = EDMModelConfig(num_steps=18)
    steps = edm_sigma_steps(cfg).numpy()
    i = np.arange(18)
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(steps[:-1], expected, rtol=1e-12)
    assert steps[0] == pytest.approx(80) and steps[17] == pytest.approx(0.002) and steps[18] == 0
    assert (np.diff(steps) < 0).all()


class _Zero(torch.nn.Module):
    def forward(self, x, noise_labels):
        return torch.zeros_like(x)


class _Identity(torch.nn.Module):
    def forward(self, x, noise_labels):
        return x


def test_preconditioning_is_karras_table_1():
    x = torch.randn(5, 1, 2, 2)
    sigma = torch.tensor([0.01, 0.1, 0.5, 2.0, 80.0])
    sd = 0.5
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / (s**2 + sd**2).sqrt()
    c_in = 1 / (s**2 + sd**2).sqrt()
    torch.testing.assert_close(EDMPrecond(_Zero(), sd)(x, sigma), c_skip * x)
    torch.testing.assert_close(EDMPrecond(_Identity(), sd)(x, sigma), c_skip * x + c_out * c_in * x)


def test_edm_loss_has_unit_expectation_for_a_zero_network():
    """With F = 0, D = c_skip x, and data at +-sigma_data, lambda(sigma) E||D(y + n) - y||^2 = 1 for
    every sigma (the point of EDM's weighting): the loss averages to 1."""
    cfg, item_shape = FAMILIES["edm-mlp"]
    model = build_model(cfg, item_shape)
    generator = torch.Generator().manual_seed(0)
    y = torch.where(torch.rand(4096, 1, 8, 8, generator=generator) < 0.5, -0.5, 0.5)
    loss = model.loss(EDMPrecond(_Zero(), 0.5), y, generator)
    assert loss.item() == pytest.approx(1.0, abs=0.02)


MU, S = 0.3, 0.5


def gaussian_denoiser(x, sigma):
    """The exact denoiser of 1-D data N(MU, S^2): E[y | y + n = x], n ~ N(0, sigma^2)."""
    s2 = sigma.reshape(-1, 1).to(torch.float64) ** 2
    return (S**2 * x.to(torch.float64) + s2 * MU) / (S**2 + s2)


def test_heun_sampler_matches_the_closed_form_recursion():
    """For a linear denoiser Heun's method is a product of scalar factors per step; computed here
    independently of the implementation, it must give the same samples."""
    cfg = EDMModelConfig(num_steps=18)
    z = torch.randn((1000, 1), generator=torch.Generator().manual_seed(0))
    samples = heun_sample(gaussian_denoiser, z, cfg).to(torch.float64).numpy()
    t = np.append((80 ** (1 / 7) + np.arange(18) / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7, 0.0)
    slope = lambda s: s / (S**2 + s**2)  # noqa: E731  dx/dsigma = slope(sigma) (x - MU)
    factor = 1.0
    for i in range(18):
        h = t[i + 1] - t[i]
        euler = 1 + h * slope(t[i])
        factor *= 1 + h / 2 * (slope(t[i]) + slope(t[i + 1]) * euler) if i < 17 else euler
    expected = MU + (80 * z.to(torch.float64).numpy() - MU) * factor
    np.testing.assert_allclose(samples, expected, atol=2e-4)


def test_heun_sampler_recovers_a_gaussian():
    """With the exact denoiser and a fine schedule the samples are N(MU, S^2): the probability-flow
    ODE maps x_T = sigma_max z to MU + (x_T - MU) S / sqrt(S^2 + sigma_max^2)."""
    n = 100_000
    cfg = EDMModelConfig(num_steps=256)
    z = torch.randn((n, 1), generator=torch.Generator().manual_seed(1))
    x = heun_sample(gaussian_denoiser, z, cfg).to(torch.float64).numpy().ravel()
    shrink = S / math.sqrt(S**2 + 80**2)
    assert x.mean() == pytest.approx(MU * (1 - shrink), abs=4 * S / math.sqrt(n))
    assert x.std() == pytest.approx(80 * shrink, abs=4 * S / math.sqrt(2 * n))
    assert abs(x.mean() - MU) < 0.01 and abs(x.std() - S) < 0.01
    exact = MU + (80 * z.to(torch.float64).numpy().ravel() - MU) * shrink
    assert (np.abs(x - exact) <= 1e-3 * (1 + np.abs(exact))).all()


def test_churn_noise_is_per_index_seeded():
    cfg = EDMModelConfig(network="mlp", model_channels=32, num_blocks=1, num_steps=4, S_churn=5.0)
    torch.manual_seed(0)
    model = build_model(cfg, (8, 8, 1))
    a = model.sample(6, seed=2, batch_size=4)
    assert_same_rows(a[:3], model.sample(3, seed=2, batch_size=3))
    stochastic = build_model(EDMModelConfig(network="mlp", model_channels=32, num_blocks=1, num_steps=4), (8, 8, 1))
    stochastic.load_tensors(model.tensors())
    assert not np.array_equal(a, stochastic.sample(6, seed=2, batch_size=4))  # churn changes the samples


# ------------------------------------------------------------------ resumable training (stage level)


class Killed(RuntimeError):
    pass


def run_train(cfg, train_set, out):
    from autophagy.stages import train

    return train.run(cfg, train_set, out, generation=0, seed=0)


@pytest.fixture(scope="module")
def resumable_data(tmp_path_factory, tiny_cfg):
    """Real digits and an uninterrupted reference run (once for the module)."""
    from autophagy.stages import prepare

    cfg = tiny_cfg("digits", "train.checkpoint_every_kimg=0.5", "train.gen0_budget_kimg=1.6")
    root = tmp_path_factory.mktemp("resume")
    prepare.run(cfg, root / "data")
    reference = run_train(cfg, root / "data" / "train", root / "reference")
    assert reference["resumed_from_kimg"] == 0
    return cfg, root


@pytest.fixture
def resumable(resumable_data, tmp_path):
    """``(cfg, dir)``: ``dir/data/train`` and ``dir/reference`` are shared, the rest is this test's."""
    cfg, root = resumable_data
    for name in ("data", "reference"):
        (tmp_path / name).symlink_to(root / name)
    return cfg, tmp_path


def weights(path):
    return {name: load_file(str(path / f"{name}.safetensors")) for name in ("model", "ema")}


def assert_same_weights(a, b):
    for group in a:
        assert a[group].keys() == b[group].keys()
        for key in a[group]:
            assert torch.allclose(a[group][key], b[group][key], rtol=1e-5, atol=1e-7), (group, key)


def test_train_resumes_after_being_killed(resumable, monkeypatch):
    import autophagy.models.checkpoint as checkpoint

    cfg, tmp_path = resumable
    original = checkpoint.write_checkpoint_files
    writes = []

    def write_then_die(model, directory, meta):
        original(model, directory, meta)
        writes.append(meta.get("images_seen"))
        if len(writes) == 2:
            raise Killed("killed after the second train-state checkpoint")

    monkeypatch.setattr(checkpoint, "write_checkpoint_files", write_then_die)
    with pytest.raises(Killed):
        run_train(cfg, tmp_path / "data" / "train", tmp_path / "model")
    assert writes == [512, 1024]  # every 0.5 kimg, in whole batches of 32
    assert not (tmp_path / "model").exists()  # the output appears only when training has finished
    assert (tmp_path / ".model.partial" / "train_state.pt").is_file()
    monkeypatch.setattr(checkpoint, "write_checkpoint_files", original)
    result = run_train(cfg, tmp_path / "data" / "train", tmp_path / "model")
    assert result["resumed_from_kimg"] == pytest.approx(1.024)
    assert result["train_kimg"] == pytest.approx(1.6)
    assert not (tmp_path / ".model.partial").exists()
    assert_same_weights(weights(tmp_path / "model"), weights(tmp_path / "reference"))


def test_train_killed_while_writing_its_train_state(resumable, monkeypatch):
    """A kill between the files of a train-state checkpoint leaves weights of one checkpoint beside
    the counters of another: that state must be discarded, never resumed from."""
    import autophagy.models.checkpoint as checkpoint

    cfg, tmp_path = resumable
    original_save = checkpoint.torch.save
    saves = []

    def save_then_die(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:  # the second checkpoint: its weights are written, its train state is not
            raise Killed("killed while writing train_state.pt")
        return original_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save_then_die)
    with pytest.raises(Killed):
        run_train(cfg, tmp_path / "data" / "train", tmp_path / "model")
    monkeypatch.setattr(checkpoint.torch, "save", original_save)
    result = run_train(cfg, tmp_path / "data" / "train", tmp_path / "model")
    assert result["resumed_from_kimg"] == 0  # the mixed state was not trusted
    assert_same_weights(weights(tmp_path / "model"), weights(tmp_path / "reference"))


def test_changed_inputs_do_not_resume(resumable, monkeypatch):
    import autophagy.models.checkpoint as checkpoint

    cfg, tmp_path = resumable
    original = checkpoint.write_checkpoint_files

    def write_then_die(model, directory, meta):
        original(model, directory, meta)
        raise Killed("killed")

    monkeypatch.setattr(checkpoint, "write_checkpoint_files", write_then_die)
    with pytest.raises(Killed):
        run_train(cfg, tmp_path / "data" / "train", tmp_path / "model")
    monkeypatch.setattr(checkpoint, "write_checkpoint_files", original)
    changed = type(cfg)(**{**cfg.__dict__, "train": type(cfg.train)(**{**cfg.train.__dict__, "lr": 2e-3})})
    assert run_train(changed, tmp_path / "data" / "train", tmp_path / "model")["resumed_from_kimg"] == 0


def test_a_retried_pod_resumes_from_the_durable_scratch_state(tmp_path, tiny_cfg):
    """A Kubeflow train task SIGKILLed mid-generation (a preempted node) and started again as a new pod
    whose output lands at a new path: with ``$AUTOPHAGY_SCRATCH_DIR`` (the scratch PVC) it resumes
    from the last train-state checkpoint, and its weights equal an uninterrupted run's, bit for bit.
    The first pod kills itself with SIGKILL right after its second checkpoint (a kill at a random
    moment can tear a checkpoint, which is discarded: test_train_killed_while_writing_its_train_state)."""
    import os
    import subprocess
    import sys

    from autophagy.stages import prepare
    from autophagy.step_config import BOOKKEEPING_ENV, bookkeeping, step_options, to_json

    cfg = tiny_cfg("digits", "train.checkpoint_every_kimg=2", "train.gen0_budget_kimg=10")
    prepare.run(cfg, tmp_path / "data")
    scratch = tmp_path / "pvc"
    env = {
        **os.environ,
        BOOKKEEPING_ENV: to_json(bookkeeping(cfg)),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "AUTOPHAGY_SCRATCH_DIR": str(scratch),
    }
    options = to_json(step_options(cfg, "train"))
    preempted = (
        "import os, signal\n"
        "import autophagy.models.checkpoint as checkpoint\n"
        "original, written = checkpoint.write_checkpoint_files, []\n"
        "def write_then_die(model, directory, meta):\n"
        "    original(model, directory, meta)\n"
        "    written.append(1)\n"
        "    if len(written) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "checkpoint.write_checkpoint_files = write_then_die\n"
    )

    def task(out: Path, prelude: str = "") -> subprocess.CompletedProcess:
        code = (
            prelude + "import json\nfrom autophagy.components import runtime\n"
            f"print(json.dumps(runtime.train({options!r}, {str(tmp_path / 'data' / 'train')!r}, {str(out)!r}, 0, 0)))"
        )
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)

    reference = task(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    first = task(tmp_path / "pod-1" / "model", preempted)
    assert first.returncode == -9  # SIGKILL
    assert not (tmp_path / "pod-1" / "model").exists()  # nothing that looks like a finished model
    [state] = scratch.glob("train/*")
    retried = task(tmp_path / "pod-2" / "model")
    assert retried.returncode == 0, retried.stderr
    result = json.loads(retried.stdout.strip().splitlines()[-1])
    assert result["resumed_from_kimg"] == pytest.approx(4.0, abs=0.05) and result["train_kimg"] == pytest.approx(
        10, abs=0.05
    )
    assert not state.exists()  # finished: the state is removed
    ours, theirs = weights(tmp_path / "pod-2" / "model"), weights(tmp_path / "reference")
    for group in theirs:
        for key in theirs[group]:
            assert torch.equal(ours[group][key], theirs[group][key]), (group, key)
