"""Plain float32 sampling loops: the reference the benchmarks time each family's sampler against.

The same network (the model's EMA), the same number of network evaluations and the same update
rule as the family's sampler, written as the simplest PyTorch loop: noise from ``torch.randn``,
float32 state, no per-sample-index noise streams, no batching plumbing; the result is rounded to
uint8 like the project's. Samplers without a fixed-step plain form (EDM with ``S_churn > 0``, DDPM
ancestral or DDIM with ``eta > 0``, OT-CFM's adaptive dopri5) have no reference here.

``loop(net, x [B, C, H, W]) -> [B, C, H, W]`` in the network's encoded space ([-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

Loop = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def edm_heun(cfg) -> Loop:
    """Karras et al. (2022) Alg. 1 (deterministic Heun, 2 num_steps - 1 evaluations) on D(x; sigma)."""
    from autophagy.models.edm import edm_sigma_steps

    sigmas = edm_sigma_steps(cfg).float().tolist()

    def loop(net: nn.Module, noise: torch.Tensor) -> torch.Tensor:
        x = noise * sigmas[0]
        batch = noise.shape[0]
        for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
            d = (x - net(x, torch.full((batch,), s, device=x.device))) / s
            x_next = x + (s_next - s) * d
            if i < len(sigmas) - 2:
                d_next = (x_next - net(x_next, torch.full((batch,), s_next, device=x.device))) / s_next
                x_next = x + (s_next - s) * 0.5 * (d + d_next)
            x = x_next
        return x

    return loop


def ddim(cfg) -> Loop:
    """Song et al. (2021) Eq. 12 with eta = 0 on the family's timesteps (num_steps evaluations)."""
    from autophagy.models.ddpm import make_scheduler

    scheduler = make_scheduler(cfg, "ddim")
    abar = scheduler.alphas_cumprod.float()
    stride = cfg.num_train_timesteps // cfg.num_steps
    timesteps = [int(t) for t in scheduler.timesteps]

    def loop(net: nn.Module, noise: torch.Tensor) -> torch.Tensor:
        x = noise
        for t in timesteps:
            a, a_prev = abar[t], abar[t - stride] if t - stride >= 0 else torch.tensor(1.0)
            eps = net(x, torch.full((x.shape[0],), t, device=x.device))
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            if cfg.clip_denoised:
                x0 = x0.clamp(-1, 1)
                eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return x

    return loop


def flow_euler(cfg) -> Loop:
    """Euler (num_steps evaluations) or midpoint (2 num_steps) steps of dx/dt = v(x, t), t: 0 -> 1."""
    h = 1.0 / cfg.num_steps

    def loop(net: nn.Module, noise: torch.Tensor) -> torch.Tensor:
        x = noise
        at = lambda t: torch.full((x.shape[0],), t, device=x.device)  # noqa: E731
        for i in range(cfg.num_steps):
            t = i * h
            if cfg.sampler == "euler":
                x = x + h * net(x, at(t))
            else:
                x = x + h * net(x + 0.5 * h * net(x, at(t)), at(t + 0.5 * h))
        return x

    return loop


def plain_loop(cfg) -> Loop | None:
    """The plain loop of ``cfg``'s sampler, or None where there is none (see the module docstring)."""
    family = cfg.family
    if family == "edm" and cfg.S_churn == 0:
        return edm_heun(cfg)
    if family == "ddpm" and cfg.sampler == "ddim" and cfg.eta == 0:
        return ddim(cfg)
    if family == "otcfm" and cfg.sampler in ("euler", "midpoint"):
        return flow_euler(cfg)
    return None


@torch.inference_mode()
def plain_sample(loop: Loop, net: nn.Module, n: int, batch_size: int, shape: tuple[int, ...], device) -> np.ndarray:
    """``n`` uint8 images ``[n, H, W, C]`` from ``loop`` on ``net``, ``batch_size`` at a time."""
    net = net.to(device).eval()
    out = []
    for first in range(0, n, batch_size):
        x = loop(net, torch.randn(min(batch_size, n - first), *shape, device=device))
        out.append(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


@torch.inference_mode()
def largest_difference(model, loop: Loop, count: int, device) -> float:
    """The largest |project sampler - plain loop| over ``count`` samples from the same noise, in the
    encoded [-1, 1] space: the plain loop computes what the sampler does (float32 vs. the
    sampler's own precision)."""
    net = model.ema.to(device).eval()
    noise = torch.randn(count, *model.noise_shape, generator=torch.Generator().manual_seed(0)).to(device)
    ours = model.sample_batch(net, noise, seed=0, start=0)
    return float((ours.float() - loop(net, noise)).abs().max())
