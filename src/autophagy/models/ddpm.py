"""DDPM: Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models" (NeurIPS 2020), for uint8 images.

* Forward process (Eq. 4): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, abar_t = prod_{s<=t} (1 - beta_s),
  betas linear from ``beta_start`` to ``beta_end`` over ``num_train_timesteps`` steps (Sec. 4).
* Loss (Eq. 14, L_simple): t ~ U{0..T-1}, loss = ||eps - eps_theta(x_t, t)||^2.
* Ancestral sampler (Alg. 2): x_{t-1} = mu_theta(x_t, t) + sigma_t z, sigma_t^2 = beta_t (``fixed_large``)
  or the posterior variance (``fixed_small``); mu_theta from the clipped x_0 prediction (Eq. 7, 15).
* DDIM sampler: Song, Meng, Ermon, "Denoising Diffusion Implicit Models" (ICLR 2021), Eq. 12 with
  sigma_t = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1}) on evenly
  spaced timesteps; eta = 0 is deterministic.

The schedules and update rules are diffusers' ``DDPMScheduler`` / ``DDIMScheduler``. Every
random draw of sampling is seeded per sample index: the initial x_T is stream 0 and the noise of
step i stream 1 + i (:func:`~autophagy.models.noise.index_noise`), made on the sampling device; the
ancestral step applies that noise itself (diffusers' ``DDPMScheduler.step`` would draw its own).
Images are encoded to [-1, 1] in NCHW.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from autophagy.config import DDPMModelConfig
from autophagy.models.image import ImageModel

# (x_t [B, ...], t [B] or [1]) -> eps [B, ...]; the samplers pass [1]
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_scheduler(cfg: DDPMModelConfig, sampler: str | None = None) -> DDPMScheduler | DDIMScheduler:
    """The diffusers scheduler of ``sampler`` (default ``cfg.sampler``) with ``cfg.num_steps`` timesteps set."""
    common = dict(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule="linear",
        clip_sample=cfg.clip_denoised,
    )
    if (sampler or cfg.sampler) == "ancestral":
        scheduler = DDPMScheduler(**common, variance_type=cfg.ancestral_variance)
    else:
        scheduler = DDIMScheduler(**common, set_alpha_to_one=True)  # abar_{-1} = 1, as the DDIM reference
    scheduler.set_timesteps(cfg.num_steps)
    return scheduler


ANCESTRAL_VARIANCES = ("fixed_large", "fixed_small")


def ancestral_step(
    scheduler: DDPMScheduler, eps: torch.Tensor, t: torch.Tensor, x: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor:
    """x_{t'} from x_t by Ho et al. Alg. 2, line 4, with the given ``noise`` z [B, ...] (unused, may be
    None, at t = 0, where Alg. 2 adds none); ``eps``, ``x`` [B, ...]. t' = the scheduler's previous
    timestep (t - 1 with all T steps), abar_{t'} = 1 below 0, alpha = abar_t / abar_{t'}, beta = 1 - alpha:

    * x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (Eq. 15), clipped if the scheduler clips;
    * mu = sqrt(abar_{t'}) beta / (1 - abar_t) x0 + sqrt(alpha) (1 - abar_{t'}) / (1 - abar_t) x_t (Eq. 7);
    * sigma^2 = beta (``fixed_large``) or (1 - abar_{t'}) / (1 - abar_t) beta (``fixed_small``, Eq. 7,
      clamped at 1e-20); x_{t'} = mu + sigma z.

    The arithmetic of diffusers' ``DDPMScheduler.step`` (epsilon prediction), with the noise supplied
    and the coefficients in float64 (diffusers' are float32 tensors, whose rounding the division by
    sqrt(abar_t) amplifies: its float32 steps are up to 3e-4 off the float64 ones, these 2e-6).
    """
    config = scheduler.config
    variance_type = config.variance_type
    if config.prediction_type != "epsilon" or config.thresholding or variance_type not in ANCESTRAL_VARIANCES:
        raise ValueError(
            f"ancestral_step supports epsilon prediction, no thresholding and variance {ANCESTRAL_VARIANCES}; "
            f"got {config.prediction_type!r}, thresholding={config.thresholding}, {variance_type!r}"
        )
    prev_t = scheduler.previous_timestep(t)
    abar_t = float(scheduler.alphas_cumprod[t])
    abar_prev = float(scheduler.alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
    alpha, beta = abar_t / abar_prev, 1 - abar_t / abar_prev
    # Python-float coefficients and in-place updates of one new tensor: 6 passes over the batch.
    x0 = torch.add(x, eps, alpha=-((1 - abar_t) ** 0.5)).mul_(abar_t**-0.5)
    if config.clip_sample:
        x0.clamp_(-config.clip_sample_range, config.clip_sample_range)
    mean = x0.mul_(abar_prev**0.5 * beta / (1 - abar_t)).add_(x, alpha=alpha**0.5 * (1 - abar_prev) / (1 - abar_t))
    if t <= 0:
        return mean
    if noise is None:
        raise ValueError(f"ancestral_step needs noise at timestep {int(t)} > 0")
    variance = beta if variance_type == "fixed_large" else max((1 - abar_prev) / (1 - abar_t) * beta, 1e-20)
    return mean.add_(noise.to(x), alpha=variance**0.5)


def ancestral_sample(
    eps_model: EpsModel, latents: torch.Tensor, scheduler: DDPMScheduler, step_noise: Callable[[int], torch.Tensor]
) -> torch.Tensor:
    """Ho et al. Alg. 2 from x_T = ``latents`` [B, ...]; ``step_noise(i)`` [B, ...] is the z of step i
    (asked for only where t > 0). Returns x_0 [B, ...]. The timesteps reach the device once, not
    once per step (a host-to-device copy that would wait for the device every step)."""
    x = latents
    on_device = scheduler.timesteps.to(x.device)
    for i, t in enumerate(scheduler.timesteps):
        eps = eps_model(x, on_device[i : i + 1])  # one level for the batch: [1]
        x = ancestral_step(scheduler, eps, t, x, step_noise(i) if t > 0 else None)
    return x


def ddim_sample(
    eps_model: EpsModel,
    latents: torch.Tensor,
    scheduler: DDIMScheduler,
    eta: float,
    step_noise: Callable[[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Song et al. (2021) Eq. 12 from x_T = ``latents`` [B, ...]; ``step_noise(i)`` [B, ...] is needed
    when ``eta > 0``. The clipped x_0 also gives the eps of the direction term, so eta = 1 with
    all T steps is exactly the ancestral sampler with ``fixed_small``. Returns x_0 [B, ...]."""
    x = latents
    on_device = scheduler.timesteps.to(x.device)  # once, as in ancestral_sample
    for i, t in enumerate(scheduler.timesteps):
        eps = eps_model(x, on_device[i : i + 1])
        noise = step_noise(i).to(x) if eta > 0 else None
        x = scheduler.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise, return_dict=False)[
            0
        ]
    return x


class DDPMModel(ImageModel):
    """DDPM with Ho et al.'s UNet (or the residual MLP) on uint8 images ``[N, H, W, C]`` (H = W)."""

    family = "ddpm"

    def __init__(self, cfg: DDPMModelConfig, item_shape: tuple[int, ...]):
        super().__init__(cfg, item_shape)
        self.noise_scheduler = make_scheduler(cfg, "ancestral")  # its alphas_cumprod noise the training batches

    def build_network(self) -> nn.Module:
        cfg: DDPMModelConfig = self.cfg
        if cfg.network == "mlp":
            return self.build_mlp()
        return self.build_hf_unet("ddpm")

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg: DDPMModelConfig = self.cfg
        t = torch.randint(0, cfg.num_train_timesteps, (x.shape[0],), generator=generator, device=x.device)
        eps = torch.randn(x.shape, generator=generator, device=x.device)
        x_t = self.noise_scheduler.add_noise(x, eps, t)
        return F.mse_loss(net(x_t, t), eps)

    def sample_batch(self, net: nn.Module, noise: torch.Tensor, seed: int, start: int, **options: Any) -> torch.Tensor:
        """``options`` override ``sampler``, ``num_steps``, ``eta`` of the config for this call."""
        cfg: DDPMModelConfig = dataclasses.replace(self.cfg, **options)
        cfg.validate()
        scheduler = make_scheduler(cfg)
        step_noise = self.step_noise(net, seed, start, noise)
        if cfg.sampler == "ancestral":
            return ancestral_sample(net, noise, scheduler, step_noise)
        return ddim_sample(net, noise, scheduler, cfg.eta, step_noise)
