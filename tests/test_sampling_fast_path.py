"""Sampling speed options (autophagy.models.sampling; issue 15, items 3, 4, 6): the fast paths
agree with the float64 reference path on the Frechet distance, ``auto`` keeps the CPU samples
of before, and rows stay seeded per sample index under every option.

Stated tolerances (raw-pixel Frechet distance to the digits training set, 600 samples of an EDM
trained for a few kimg): fp32 on CPU within 1 % of the fp64 reference, rows within one uint8 level;
bf16 + torch.compile on CUDA within 5 %, rows within 2 levels on average (``-m gpu``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autophagy.config import TrainConfig, load_config
from autophagy.data.sources import digits_images_and_labels
from autophagy.metrics.frechet import frechet_distance, gaussian_statistics
from autophagy.models import ModelError, build_model
from autophagy.models.sampling import SamplingNetwork, SamplingSpeed, resolve_sampling

pytestmark = pytest.mark.usefixtures("one_thread")

N_SAMPLES = 600


def trained_edm(device: str = "cpu", kimg: float = 6.0):
    """EDM with a small residual MLP, trained on the digits for ``kimg`` thousand images."""
    rows = digits_images_and_labels("train")[0]
    cfg = load_config(
        None, ["data.source=digits", "model.family=edm", "model.model_channels=64", "model.num_blocks=2"]
    ).model
    torch.manual_seed(0)
    model = build_model(cfg, rows.shape[1:])
    model.fit(rows, kimg, TrainConfig(batch_size=128, lr=2e-3, ema_halflife_kimg=0.5, device=device), seed=0)
    return model, rows


def raw_fd(samples: np.ndarray, reference: np.ndarray) -> float:
    flat = lambda rows: rows.reshape(len(rows), -1).astype(np.float64)  # noqa: E731
    return frechet_distance(*gaussian_statistics(flat(samples)), *gaussian_statistics(flat(reference)))


@pytest.fixture(scope="module")
def edm_model():
    return trained_edm()


def test_fp32_path_agrees_with_the_fp64_reference_on_fd(edm_model):
    model, rows = edm_model
    reference = model.sample(N_SAMPLES, seed=3, batch_size=256, precision="fp64")
    fast = model.sample(N_SAMPLES, seed=3, batch_size=256, precision="fp32")
    fd_reference, fd_fast = raw_fd(reference, rows), raw_fd(fast, rows)
    assert abs(fd_fast - fd_reference) <= 0.01 * fd_reference, (fd_fast, fd_reference)
    difference = np.abs(fast.astype(np.int16) - reference.astype(np.int16))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    assert raw_fd(model.sample(N_SAMPLES, seed=4, batch_size=256), rows) > 0  # a real distance, not 0 by construction


def test_auto_is_each_familys_reference_path_on_every_device(edm_model):
    model, _ = edm_model
    np.testing.assert_array_equal(model.sample(40, seed=1, batch_size=16), model.sample(40, seed=1, precision="fp64"))
    cpu = torch.device("cpu")
    assert resolve_sampling("auto", False, cpu, True, torch.float64).state_dtype == torch.float64
    assert resolve_sampling("auto", False, cpu, True, torch.float32).precision == "fp32"
    # bf16 is opt-in until a GPU check measures its agreement with the reference
    assert resolve_sampling("auto", False, torch.device("cuda"), True, torch.float64).precision == "fp64"
    assert resolve_sampling("bf16", False, torch.device("cuda"), True, torch.float64).precision == "bf16"
    assert resolve_sampling("auto", False, torch.device("cuda"), False, torch.float32).precision == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "fp64"])
def test_fast_path_rows_do_not_depend_on_the_batching(edm_model, precision):
    model, _ = edm_model
    whole = model.sample(30, seed=2, batch_size=30, precision=precision)
    pieces = np.concatenate(
        [
            model.sample(12, seed=2, batch_size=5, precision=precision),
            model.sample(18, seed=2, start=12, precision=precision),
        ]
    )
    assert np.abs(whole.astype(np.int16) - pieces).max() <= 1  # float rounding of differently shaped batches


def test_sampling_network_casts_in_and_out():
    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, x, labels):
            seen.update(x=x.dtype, labels=labels.dtype)
            return x * 2

    net = SamplingNetwork(Recorder(), SamplingSpeed("fp64", False), torch.device("cpu"))
    out = net(torch.ones(2, 3, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    assert out.dtype == torch.float64 and seen == {"x": torch.float32, "labels": torch.float32}
    net(torch.ones(2, 3), torch.arange(2))  # integer labels (DDPM timesteps) pass unchanged
    assert seen["labels"] == torch.int64


@pytest.mark.parametrize(
    "precision, compile, image, message",
    [("fp16", False, True, "sample.precision must be one of"), ("bf16", False, False, "image families")],
)
def test_bad_options_are_refused(precision, compile, image, message):
    with pytest.raises(ModelError, match=message):
        resolve_sampling(precision, compile, torch.device("cpu"), image, torch.float32)


def test_sample_config_validates_precision():
    from autophagy.config import ConfigError

    with pytest.raises(ConfigError, match="sample.precision"):
        load_config(None, ["sample.precision=half"])


@pytest.mark.gpu
def test_bf16_compiled_cuda_sampling_agrees_with_the_fp64_reference_on_fd():
    model, rows = trained_edm("cuda")
    reference = model.sample(N_SAMPLES, seed=3, batch_size=256, device="cuda", precision="fp64")
    fast = model.sample(N_SAMPLES, seed=3, batch_size=256, device="cuda", precision="bf16", compile=True)
    fd_reference, fd_fast = raw_fd(reference, rows), raw_fd(fast, rows)
    assert abs(fd_fast - fd_reference) <= 0.05 * fd_reference, (fd_fast, fd_reference)
    assert np.abs(fast.astype(np.int16) - reference.astype(np.int16)).mean() < 2
    cpu = model.sample(N_SAMPLES, seed=3, batch_size=256, device="cpu", precision="fp64")
    assert abs(raw_fd(cpu, rows) - fd_reference) <= 0.01 * fd_reference  # CUDA's reference path is the CPU's


def test_compiled_sampling_makes_its_step_noise_in_the_compiled_kernel(monkeypatch):
    """Under ``sample.compile`` the per-step noise (DDPM's ancestral z) comes from the fused kernel
    (on a CPU Inductor's loop): the same samples as the eager noise up to its float32 rounding."""
    from autophagy.models import image

    cfg = load_config(None, ["model.family=ddpm", "model.sampler=ancestral", "model.num_steps=10"]).model
    torch.manual_seed(0)
    model = build_model(cfg, (8, 8, 1))
    calls = []
    real_index_noise = image.index_noise

    def spy(*args, **kwargs):
        calls.append(kwargs["fused"])
        return real_index_noise(*args, **kwargs)

    monkeypatch.setattr(image, "index_noise", spy)
    x_t = torch.randn(6, 1, 8, 8)
    out = {}
    for compiled in (False, True):
        net = SamplingNetwork(model.ema.eval(), SamplingSpeed("fp32", compiled), torch.device("cpu"))
        with torch.inference_mode():
            out[compiled] = model.sample_batch(net, x_t, seed=5, start=3)
    assert calls == [None] * 9 + [True] * 9  # t > 0: 9 of the 10 steps add noise
    torch.testing.assert_close(out[True], out[False], rtol=0, atol=1e-5)
    assert not torch.equal(out[True], x_t)
