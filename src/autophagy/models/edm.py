"""EDM: Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based
Generative Models" (NeurIPS 2022), for uint8 images.

* Preconditioning (Table 1): D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) with
  c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
  c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4.
* Loss (Eq. 2, 8): ln sigma ~ N(P_mean, P_std^2), weight lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2,
  loss = lambda(sigma) ||D(y + n; sigma) - y||^2.
* Sampler (Alg. 2): Heun's 2nd-order method on the probability-flow ODE with the rho-schedule
  sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, optional churn.

Images are encoded to [-1, 1] in NCHW; samples are rounded back to uint8 NHWC.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from autophagy.config import EDMModelConfig
from autophagy.models.image import ImageModel
from autophagy.models.unet import SongUNet


class EDMPrecond(nn.Module):
    """The denoiser D(x; sigma) around a raw network F. ``x`` [B, C, H, W], ``sigma`` [B]
    or [1] (one level for the whole batch, broadcast)."""

    def __init__(self, network: nn.Module, sigma_data: float):
        super().__init__()
        self.model = network
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1, 1, 1).to(torch.float32)
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        c_noise = sigma.log().flatten() / 4
        f_x = self.model((c_in * x).to(x.dtype), c_noise)
        return c_skip * x + c_out * f_x.to(torch.float32)


def edm_sigma_steps(cfg: EDMModelConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """The Heun schedule t_0 > ... > t_{N-1} plus a final 0: float64 [num_steps + 1] (Eq. 5)."""
    i = torch.arange(cfg.num_steps, dtype=torch.float64, device=device)
    inv = 1 / cfg.rho
    steps = (cfg.sigma_max**inv + i / max(cfg.num_steps - 1, 1) * (cfg.sigma_min**inv - cfg.sigma_max**inv)) ** cfg.rho
    return torch.cat([steps, torch.zeros_like(steps[:1])])


def heun_sample(
    denoiser, latents: torch.Tensor, cfg: EDMModelConfig, churn_noise=None, state_dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Karras et al. (2022) Alg. 2. ``latents`` [B, ...] ~ N(0, I); returns x_0 [B, ...] in float32.

    ``denoiser(x float32, sigma [1]) -> D(x; sigma)``: one level per call for the whole batch.
    ``churn_noise(i) -> [B, ...]`` supplies the noise of step ``i`` when ``S_churn > 0`` (per-index
    seeded by the caller). The iterate and the schedule are held in ``state_dtype``: float64 is the
    reference (as Karras et al.'s sampler), float32 the fast path (the schedule is computed in
    float64 and rounded once).
    """
    t_steps = edm_sigma_steps(cfg, latents.device).to(state_dtype)
    x_next = latents.to(state_dtype) * t_steps[0]
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        gamma = min(cfg.S_churn / cfg.num_steps, math.sqrt(2) - 1) if cfg.S_churn > 0 else 0.0
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur
        if gamma > 0:
            x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * churn_noise(i).to(x_cur)
        denoised = denoiser(x_hat.to(torch.float32), t_hat.reshape(1)).to(state_dtype)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < cfg.num_steps - 1:
            denoised = denoiser(x_next.to(torch.float32), t_next.reshape(1)).to(state_dtype)
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next.to(torch.float32)


class EDMModel(ImageModel):
    """EDM with the DDPM++ UNet on uint8 images ``[N, H, W, C]`` (H = W)."""

    family = "edm"
    sampling_state_dtype = torch.float64  # the Heun iterate under sample.precision=auto off CUDA (the reference)

    def build_network(self) -> nn.Module:
        channels, resolution, _ = self.image_shape
        cfg: EDMModelConfig = self.cfg
        if cfg.network == "mlp":
            network = self.build_mlp()
        else:
            network = SongUNet(
                img_resolution=resolution,
                in_channels=channels,
                out_channels=channels,
                model_channels=cfg.model_channels,
                channel_mult=cfg.channel_mult,
                num_blocks=cfg.num_blocks,
                attn_resolutions=cfg.attn_resolutions,
                dropout=cfg.dropout,
            )
        return EDMPrecond(network, cfg.sigma_data)

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg: EDMModelConfig = self.cfg
        rnd = torch.randn((x.shape[0],), generator=generator, device=x.device)
        sigma = (rnd * cfg.P_std + cfg.P_mean).exp()
        weight = (sigma**2 + cfg.sigma_data**2) / (sigma * cfg.sigma_data) ** 2
        noise = torch.randn(x.shape, generator=generator, device=x.device) * sigma.reshape(-1, 1, 1, 1)
        denoised = net(x + noise, sigma)
        return (weight.reshape(-1, 1, 1, 1) * (denoised - x) ** 2).mean()

    def sample_batch(self, net: nn.Module, noise: torch.Tensor, seed: int, start: int, **options: Any) -> torch.Tensor:
        """The Heun sampler from ``noise`` [B, C, H, W], its iterate in ``noise``'s dtype (float64 or float32)."""
        cfg: EDMModelConfig = self.cfg
        churn = self.step_noise(net, seed, start, noise)
        return heun_sample(net, noise, cfg, churn_noise=churn, state_dtype=noise.dtype)
