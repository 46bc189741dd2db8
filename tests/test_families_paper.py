"""The ddpm and otcfm families and the paper presets (issue 4): tiny presets train, sample and
round-trip their checkpoints on CPU; the paper presets have the published parameter counts; every
sampler recovers a Gaussian data distribution from its analytic eps-predictor or velocity field."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from autophagy.config import ConfigError, DDPMModelConfig, EDMModelConfig, OTCFMModelConfig, TrainConfig, load_config
from autophagy.models import build_model
from autophagy.models.checkpoint import load_checkpoint, save_checkpoint
from autophagy.models.ddpm import ancestral_sample, ancestral_step, ddim_sample, make_scheduler
from autophagy.models.noise import index_noise
from autophagy.models.ode import integrate
from autophagy.models.otcfm import ot_pair

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")


TRAIN = TrainConfig(batch_size=32, lr=1e-3, device="cpu", ema_halflife_kimg=0.5)
TINY_UNET = dict(network="unet", model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,))
FAMILIES = {
    "ddpm-default": DDPMModelConfig(),  # the CPU preset: residual MLP, DDIM with 50 steps
    "ddpm-unet-ancestral": DDPMModelConfig(**TINY_UNET, sampler="ancestral", num_steps=4),
    "ddpm-ddim-eta": DDPMModelConfig(model_channels=32, num_blocks=1, num_steps=5, eta=0.5),
    "otcfm-default": OTCFMModelConfig(),  # the CPU preset: residual MLP, 50 Euler steps
    "otcfm-unet-midpoint": OTCFMModelConfig(**TINY_UNET, head_channels=8, sampler="midpoint", num_steps=3),
    "otcfm-dopri5": OTCFMModelConfig(model_channels=32, num_blocks=1, sampler="dopri5", tol=1e-4, sigma=0.1),
}
ITEM_SHAPE = (8, 8, 1)


def tiny_rows(n=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *ITEM_SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_model(request):
    torch.manual_seed(0)
    model = build_model(FAMILIES[request.param], ITEM_SHAPE)
    report = model.fit(tiny_rows(), 0.064, TRAIN, seed=1)
    return request.param, model, report


def assert_same_rows(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding across batch sizes: at most 1 uint8 level on under 1% of pixels."""
    assert a.shape == b.shape and a.dtype == b.dtype
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_tiny_presets_train_and_sample(family_model):
    name, model, report = family_model
    assert model.family == FAMILIES[name].family and model.kind == "image"
    assert report.steps == 2 and report.images_seen == 64 and math.isfinite(report.loss)
    samples = model.sample(7, seed=3, batch_size=4)
    assert samples.shape == (7, *ITEM_SHAPE) and samples.dtype == np.uint8
    assert len({row.tobytes() for row in samples}) == 7


def test_sampling_is_per_index_seeded(family_model):
    _, model, _ = family_model
    ten = model.sample(10, seed=11, batch_size=3)
    assert_same_rows(ten[:5], model.sample(5, seed=11, batch_size=5))
    np.testing.assert_array_equal(ten, model.sample(10, seed=11, batch_size=3))
    assert not np.array_equal(ten, model.sample(10, seed=12, batch_size=3))


def test_checkpoint_round_trip(family_model, tmp_path):
    _, model, _ = family_model
    save_checkpoint(model, tmp_path / "ckpt", {"generation": 1})
    loaded = load_checkpoint(tmp_path / "ckpt", family=model.family)
    assert type(loaded) is type(model) and loaded.cfg == model.cfg
    for group, tensors in model.tensors().items():
        for key, value in tensors.items():
            assert torch.equal(loaded.tensors()[group][key], value), (group, key)
    np.testing.assert_array_equal(loaded.sample(6, seed=5, batch_size=4), model.sample(6, seed=5, batch_size=4))


def test_sampler_options_override_the_config(family_model):
    name, model, _ = family_model
    option = {"sampler": "ddim", "num_steps": 2} if model.family == "ddpm" else {"sampler": "euler", "num_steps": 2}
    assert model.sample(3, seed=0, batch_size=3, **option).shape == (3, *ITEM_SHAPE)
    with pytest.raises(ConfigError, match="model.sampler"):
        model.sample(1, seed=0, sampler="heun")


# ------------------------------------------------------------------ paper presets


def _preset_model(name: str, resolution: int):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    with torch.device("meta"):  # no memory, no initialisation time
        return cfg, build_model(cfg.model, (resolution, resolution, 3))


@pytest.mark.parametrize(
    "name, resolution, expected",
    [
        # Karras et al. (2022), NVlabs/edm: DDPM++ CIFAR-10 and FFHQ-64 networks (counted with the reference code).
        ("cifar10-edm", 32, 55_732_739),
        ("ffhq64-edm", 64, 61_804_419),
        # Ho et al. (2020), App. B: "35.7 million parameters"; diffusers' google/ddpm-cifar10-32 config: 35,746,307.
        ("cifar10-ddpm", 32, 35_746_307),
        # torchcfm examples/images/cifar10 UNetModelWrapper: counted once with torchcfm 1.0.7's own class (it is not a
        # dependency: it pulls torchdyn and a Jupyter stack), the same 35,746,307.
        ("cifar10-otcfm", 32, 35_746_307),
    ],
)
def test_paper_presets_have_the_published_parameter_counts(name, resolution, expected):
    cfg, model = _preset_model(name, resolution)
    assert cfg.name == name and cfg.model.network == "unet" and cfg.evaluate.features == "inception"
    assert cfg.train.budget_kimg == 50 and cfg.sample.n_eval == 50_000 and cfg.loop.generations == 20
    assert model.parameter_count() == expected
    assert sum(p.numel() for p in model.ema.parameters()) == expected


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.sampler=heun", ["model.sampler", "ancestral", "ddim"]),
        ("model.num_steps=1001", ["model.num_steps", "1000"]),
        ("model.eta=1.5", ["model.eta"]),
        ("model.beta_end=0.00001", ["model.beta_start", "model.beta_end"]),
        ("model.ancestral_variance=learned", ["model.ancestral_variance", "fixed_large"]),
        ("model.network=vit", ["model.network", "unet", "mlp"]),
    ],
)
def test_ddpm_config_errors_name_the_option(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "cifar10-ddpm.yaml", [override])
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.sampler=rk4", ["model.sampler", "euler", "midpoint", "dopri5"]),
        ("model.coupling=sinkhorn", ["model.coupling", "ot", "independent"]),
        ("model.sigma=-0.1", ["model.sigma"]),
        ("model.tol=0", ["model.tol"]),
    ],
)
def test_otcfm_config_errors_name_the_option(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "cifar10-otcfm.yaml", [override])
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("family", ["ddpm", "otcfm"])
def test_image_families_refuse_vector_data(family):
    with pytest.raises(ConfigError, match=f"model.family={family} needs image data"):
        load_config(
            None,
            [
                f"model.family={family}",
                "data.source=toy2d",
                "data.name=moons",
                "data.n_train=8",
                "data.n_test=8",
                "evaluate.features=raw",
            ],
        )


# ------------------------------------------------------------------ DDPM maths

MU, S = 0.3, 0.5  # 1-D data N(MU, S^2)
N = 20_000


def alphas_bar(cfg: DDPMModelConfig) -> torch.Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s), linear betas (Ho et al. Sec. 4), computed independently in float64."""
    betas = np.linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, dtype=np.float64)
    return torch.from_numpy(np.cumprod(1 - betas))


def gaussian_eps(cfg: DDPMModelConfig):
    """The optimal eps-predictor of N(MU, S^2) data:
    E[eps | x_t] = sqrt(1 - ab) (x - sqrt(ab) MU) / (ab S^2 + 1 - ab)."""
    ab_all = alphas_bar(cfg)

    def eps(x, t):
        ab = ab_all[t.long()].reshape(-1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * MU) / (ab * S**2 + 1 - ab)

    return eps


def test_training_noise_follows_the_linear_schedule():
    model = build_model(DDPMModelConfig(), ITEM_SHAPE)
    np.testing.assert_allclose(
        model.noise_scheduler.alphas_cumprod.double().numpy(), alphas_bar(model.cfg).numpy(), rtol=1e-5
    )


def assert_gaussian(x: torch.Tensor, tol: float) -> None:
    x = x.double().ravel()
    assert abs(float(x.mean()) - MU) < tol and abs(float(x.std()) - S) < tol, (float(x.mean()), float(x.std()))


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_ancestral_sampler_recovers_a_gaussian(variance):
    cfg = DDPMModelConfig(sampler="ancestral", num_steps=1000, ancestral_variance=variance, clip_denoised=False)
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn((N, 1), generator=generator, dtype=torch.float64)
    noise = lambda i: torch.randn((N, 1), generator=generator, dtype=torch.float64)  # noqa: E731
    x = ancestral_sample(gaussian_eps(cfg), x_T, make_scheduler(cfg), noise)
    assert_gaussian(x, 0.015)


@pytest.mark.parametrize("eta, steps", [(0.0, 100), (1.0, 1000)])
def test_ddim_sampler_recovers_a_gaussian(eta, steps):
    """Deterministic DDIM is accurate at 100 steps; eta = 1 needs fine steps (at 100 it loses ~6% of
    the std here, as Song et al. Table 1 shows for FID: stochastic DDIM degrades with few steps)."""
    cfg = DDPMModelConfig(sampler="ddim", num_steps=steps, eta=eta, clip_denoised=False)
    generator = torch.Generator().manual_seed(1)
    x_T = torch.randn((N, 1), generator=generator, dtype=torch.float64)
    noise = lambda i: torch.randn((N, 1), generator=generator, dtype=torch.float64)  # noqa: E731
    x = ddim_sample(gaussian_eps(cfg), x_T, make_scheduler(cfg), eta, noise)
    assert_gaussian(x, 0.015)


def test_ddim_with_eta_1_over_all_steps_is_the_ancestral_sampler():
    """Song et al. (2021), Sec. 4.1: eta = 1 gives the DDPM posterior variance; the same noise, the same samples."""
    cfg = DDPMModelConfig(num_steps=1000, eta=1.0, ancestral_variance="fixed_small")
    n, shape = 32, (1,)
    x_T = index_noise(0, 0, n, shape)
    noise = lambda i: index_noise(0, 0, n, shape, stream=1 + i)  # noqa: E731
    ancestral = ancestral_sample(gaussian_eps(cfg), x_T, make_scheduler(cfg, "ancestral"), noise)
    ddim = ddim_sample(gaussian_eps(cfg), x_T, make_scheduler(cfg, "ddim"), 1.0, noise)
    torch.testing.assert_close(ddim, ancestral, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
@pytest.mark.parametrize("steps", [1000, 7])
@pytest.mark.parametrize("clip", [True, False])
def test_ancestral_step_is_diffusers_step_with_the_noise_supplied(variance, steps, clip):
    """At every timestep (all T, or 7 spaced ones), ancestral_step with z is diffusers'
    DDPMScheduler.step drawing that same z from a generator, run with its schedule in float64: in
    float64 to 1e-12, and in float32 to 5e-6. (Its coefficients are Python floats; diffusers' own
    float32 run, with float32 coefficients, is up to 3e-4 off the float64 one: the x0 prediction
    divides by sqrt(abar_t), 0.0064 at t = T, which amplifies their rounding.)"""
    cfg = DDPMModelConfig(num_steps=steps, ancestral_variance=variance, clip_denoised=clip)
    scheduler = make_scheduler(cfg, "ancestral")
    in_float64 = make_scheduler(cfg, "ancestral")
    for name in ("alphas_cumprod", "alphas", "betas", "one"):
        setattr(in_float64, name, getattr(in_float64, name).double())
    generator = torch.Generator().manual_seed(0)
    x = 1.5 * torch.randn((8, 1, 3, 3), generator=generator, dtype=torch.float64)  # x0 is often clipped
    eps = torch.randn((8, 1, 3, 3), generator=generator, dtype=torch.float64)
    for k, t in enumerate(scheduler.timesteps):
        expected = in_float64.step(eps, t, x, generator=torch.Generator().manual_seed(k), return_dict=False)[0]
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64) if t > 0 else None
        assert expected.dtype == torch.float64
        torch.testing.assert_close(ancestral_step(scheduler, eps, t, x, z), expected, rtol=0, atol=1e-12)
        z32 = None if z is None else z.float()
        ours32 = ancestral_step(scheduler, eps.float(), t, x.float(), z32)
        torch.testing.assert_close(ours32.double(), expected, rtol=0, atol=5e-6)


def test_ddpm_loss_of_a_zero_network_is_one():
    """L_simple with eps_theta = 0 is E||eps||^2 / d = 1."""
    model = build_model(DDPMModelConfig(), ITEM_SHAPE)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    loss = model.loss(zero, torch.rand(2048, 1, 8, 8) * 2 - 1, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(1.0, abs=0.01)


# ------------------------------------------------------------------ OT-CFM maths


def independent_velocity(x, t):
    """E[x1 - x0 | x_t = x] for x_t = t x1 + (1 - t) x0, x0 ~ N(0, 1), x1 ~ N(MU, S^2) independent:
    MU + (t S^2 - (1 - t)) / ((1 - t)^2 + t^2 S^2) (x - t MU) (Gaussian conditioning: mean + Cov/Var)."""
    t = t.reshape(-1, 1).to(x.dtype)
    return MU + (t * S**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * S**2) * (x - t * MU)


def ot_velocity(x, t):
    """The OT (monotone) coupling x1 = MU + S x0 gives straight paths x_t = t MU + (1 - t + t S) x0 and
    u = MU + (S - 1) (x - t MU) / (1 - t + t S)."""
    t = t.reshape(-1, 1).to(x.dtype)
    return MU + (S - 1) * (x - t * MU) / (1 - t + t * S)


def test_independent_velocity_is_the_conditional_mean():
    """Monte-Carlo check of the closed form: regress x1 - x0 on x_t at a fixed t."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(400_000, generator=g, dtype=torch.float64)
    x1 = MU + S * torch.randn(400_000, generator=g, dtype=torch.float64)
    for t in (0.2, 0.5, 0.9):
        xt, u = t * x1 + (1 - t) * x0, x1 - x0
        slope = float(((xt - xt.mean()) * (u - u.mean())).mean() / xt.var())
        closed = independent_velocity(torch.tensor([[0.0], [1.0]], dtype=torch.float64), torch.full((2,), t))
        assert slope == pytest.approx(float(closed[1] - closed[0]), abs=0.01)
        assert float(u.mean() - slope * xt.mean()) == pytest.approx(float(closed[0]), abs=0.01)


@pytest.mark.parametrize("method, steps, tol", [("euler", 200, 0.015), ("midpoint", 50, 0.01), ("dopri5", 0, 0.01)])
def test_ode_samplers_recover_a_gaussian(method, steps, tol):
    x0 = torch.randn((N, 1), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_gaussian(integrate(independent_velocity, x0, method, steps, tol=1e-6), tol)
    # in 1-D the flow map is the unique monotone map pushing N(0, 1) to N(MU, S^2): MU + S x0, pointwise
    x = integrate(independent_velocity, x0, method, max(steps, 1), tol=1e-6)
    torch.testing.assert_close(x, MU + S * x0, atol=0.02 if method == "euler" else 1e-3, rtol=0)


def test_euler_is_exact_on_the_ot_field():
    """Straight paths: one Euler step lands exactly on x1 = MU + S x0."""
    x0 = torch.randn((1000, 1), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(integrate(ot_velocity, x0, "euler", 1), MU + S * x0)


def test_ot_pair_is_the_exact_plan():
    """Against brute force over all 6! permutations."""
    g = torch.Generator().manual_seed(4)
    x0, x1 = torch.randn(6, 1, 2, 2, generator=g), torch.randn(6, 1, 2, 2, generator=g)
    paired = ot_pair(x0, x1)
    cost = lambda a: float(((a - x1) ** 2).sum())  # noqa: E731
    best = min(cost(x0[list(p)]) for p in itertools.permutations(range(6)))
    assert cost(paired) == pytest.approx(best, rel=1e-6)
    assert sorted(map(tuple, paired.flatten(1).tolist())) == sorted(map(tuple, x0.flatten(1).tolist()))


def test_otcfm_loss_is_zero_for_the_target_on_a_point_mass():
    """Data at one point c: the OT velocity c - x0 is u_t for every pair, so a network returning
    (c - x_t) / (1 - t) has zero loss (sigma = 0)."""
    model = build_model(OTCFMModelConfig(), ITEM_SHAPE)
    c = torch.full((64, 1, 8, 8), 0.25)
    net = lambda x, t: (c - x) / (1 - t.reshape(-1, 1, 1, 1))  # noqa: E731
    assert model.loss(net, c, torch.Generator().manual_seed(0)).item() < 1e-8


ONE_LEVEL_CASES = {  # family config, the noise level a sampler passes (EDM: sigma; DDPM: timestep; OT-CFM: t)
    "edm-mlp": (EDMModelConfig(network="mlp", model_channels=32, num_blocks=2), 0.7),
    "edm-unet": (EDMModelConfig(**TINY_UNET), 2.5),
    "ddpm-mlp": (DDPMModelConfig(model_channels=32, num_blocks=2), 37),
    "ddpm-unet": (DDPMModelConfig(**TINY_UNET), 611),
    "otcfm-mlp": (OTCFMModelConfig(model_channels=32, num_blocks=2), 0.3),
    "otcfm-unet": (OTCFMModelConfig(**TINY_UNET, head_channels=8), 0.85),
}


@pytest.mark.parametrize("name", list(ONE_LEVEL_CASES))
def test_one_level_for_the_batch_is_that_level_in_every_row(name):
    """The samplers pass one noise level for the whole batch, labels [1], which the networks
    broadcast (the level is embedded once per call): the output is the one with the level
    repeated in every row, labels [B], to float32 rounding. Weights are randomised, since the
    zero-initialised output layers would make any labels give the same output."""
    cfg, level = ONE_LEVEL_CASES[name]
    torch.manual_seed(0)
    net = build_model(cfg, ITEM_SHAPE).ema.eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.2)
    x = torch.randn(6, 1, 8, 8)
    labels = torch.tensor([level], dtype=torch.int64 if isinstance(level, int) else torch.float32)
    with torch.inference_mode():
        per_row, once = net(x, labels.expand(6)), net(x, labels)
        other_level = net(x, labels + 1)
    assert once.shape == per_row.shape == x.shape
    torch.testing.assert_close(once, per_row, rtol=1e-5, atol=1e-5)
    assert (once - other_level).abs().max() > 1e-3  # the level matters: the comparison is not vacuous


SAMPLERS = {
    "edm heun": ONE_LEVEL_CASES["edm-mlp"][0],
    "edm heun + churn": EDMModelConfig(network="mlp", model_channels=32, num_blocks=1, num_steps=4, S_churn=10.0),
    "ddpm ddim": FAMILIES["ddpm-default"],
    "ddpm ancestral": FAMILIES["ddpm-unet-ancestral"],
    "otcfm euler": FAMILIES["otcfm-default"],
    "otcfm midpoint": FAMILIES["otcfm-unet-midpoint"],
    "otcfm dopri5": FAMILIES["otcfm-dopri5"],
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_call_the_network_with_one_level_per_call(name):
    calls = []
    model = build_model(SAMPLERS[name], ITEM_SHAPE)

    def network(x, labels):
        calls.append(tuple(labels.shape))
        return model.ema(x, labels)

    with torch.inference_mode():
        model.sample_batch(network, torch.randn(5, 1, 8, 8), seed=0, start=0)
    assert calls and set(calls) == {(1,)}
