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
step i stream 1 + i (:func:`~autophagy.models.torch_model.index_noise`). Images are encoded to
[-1, 1] in NCHW.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from autophagy.config import DDPMModelConfig
from autophagy.models.hf_unet import HFUNet
from autophagy.models.image import ImageModel
from autophagy.models.torch_model import index_generators, index_noise

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B, ...], t [B]) -> eps [B, ...]


def make_scheduler(cfg: DDPMModelConfig, sampler: str | None = None) -> DDPMScheduler | DDIMScheduler:
    """The diffusers scheduler of ``sampler`` (default ``cfg.sampler``) with ``cfg.num_steps`` timesteps set."""
    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                  beta_schedule="linear", clip_sample=cfg.clip_denoised)
    if (sampler or cfg.sampler) == "ancestral":
        scheduler = DDPMScheduler(**common, variance_type=cfg.ancestral_variance)
    else:
        scheduler = DDIMScheduler(**common, set_alpha_to_one=True)  # abar_{-1} = 1, as the DDIM reference
    scheduler.set_timesteps(cfg.num_steps)
    return scheduler


def ancestral_sample(eps_model: EpsModel, latents: torch.Tensor, scheduler: DDPMScheduler,
                     step_generator: Callable[[int], torch.Generator | list[torch.Generator]]) -> torch.Tensor:
    """Ho et al. Alg. 2 from x_T = ``latents`` [B, ...]; ``step_generator(i)`` draws step i's noise
    (one generator, or one per row). Returns x_0 [B, ...]."""
    x = latents
    for i, t in enumerate(scheduler.timesteps):
        eps = eps_model(x, t.to(x.device).expand(x.shape[0]))
        x = scheduler.step(eps, t, x, generator=step_generator(i), return_dict=False)[0]
    return x


def ddim_sample(eps_model: EpsModel, latents: torch.Tensor, scheduler: DDIMScheduler, eta: float,
                step_noise: Callable[[int], torch.Tensor] | None = None) -> torch.Tensor:
    """Song et al. (2021) Eq. 12 from x_T = ``latents`` [B, ...]; ``step_noise(i)`` [B, ...] is needed
    when ``eta > 0``. The clipped x_0 also gives the eps of the direction term, so eta = 1 with
    all T steps is exactly the ancestral sampler with ``fixed_small``. Returns x_0 [B, ...]."""
    x = latents
    for i, t in enumerate(scheduler.timesteps):
        eps = eps_model(x, t.to(x.device).expand(x.shape[0]))
        noise = step_noise(i).to(x) if eta > 0 else None
        x = scheduler.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise,
                           return_dict=False)[0]
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
        return HFUNet(self.image_shape, cfg.model_channels, cfg.channel_mult, cfg.num_blocks, cfg.attn_resolutions,
                      cfg.dropout, style="ddpm")

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
        count = noise.shape[0]
        if cfg.sampler == "ancestral":
            return ancestral_sample(net, noise, scheduler, lambda i: index_generators(seed, start, count, stream=1 + i))
        step_noise = lambda i: index_noise(seed, start, count, self.noise_shape, stream=1 + i)  # noqa: E731
        return ddim_sample(net, noise, scheduler, cfg.eta, step_noise)
