"""OT-CFM: Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio, "Improving and
Generalizing Flow-Based Generative Models with Minibatch Optimal Transport" (TMLR 2024), for uint8 images.

* Coupling (Sec. 3.2, Alg. 2): a batch of noise x0 ~ N(0, I) [B, ...] is re-paired with the data
  batch x1 [B, ...] by the exact OT plan for the squared Euclidean cost. For uniform weights
  and equal batch sizes the exact plan is a permutation matrix / B (Birkhoff-von Neumann), so the
  linear assignment problem gives it: ``scipy.optimize.linear_sum_assignment``. Reference:
  torchcfm's ``ExactOptimalTransportConditionalFlowMatcher``, which solves the same LP with POT's
  ``ot.emd`` and then draws B pairs from the plan *with replacement*; here each pair is used
  exactly once (the plan itself, without the resampling noise).
* Path and target (Eq. 14-15): x_t = t x1 + (1 - t) x0 + sigma eps, u_t = x1 - x0, t ~ U[0, 1];
  loss = ||v_theta(x_t, t) - u_t||^2.
* Sampling: integrate dx/dt = v_theta(x, t) from x(0) = noise to t = 1 (:mod:`autophagy.models.ode`).

The network sees t in [0, 1] as its time label, as torchcfm's UNet does. Images are encoded to
[-1, 1] in NCHW.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from autophagy.config import OTCFMModelConfig
from autophagy.models.image import ImageModel
from autophagy.models.ode import integrate


def ot_pair(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """``x0`` [B, ...] reordered so that (x0[j], x1[j]) are the pairs of the exact OT plan between
    the two uniform empirical measures under ||x0 - x1||^2."""
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()) ** 2
    rows, cols = linear_sum_assignment(cost.cpu().numpy())  # noise rows[i] goes to data cols[i]
    order = np.empty_like(rows)
    order[cols] = rows
    return x0[torch.from_numpy(order).to(x0.device)]


class OTCFMModel(ImageModel):
    """OT-CFM with torchcfm's CIFAR-10 UNet (or the residual MLP) on uint8 images ``[N, H, W, C]``."""

    family = "otcfm"

    def build_network(self) -> nn.Module:
        cfg: OTCFMModelConfig = self.cfg
        if cfg.network == "mlp":
            return self.build_mlp()
        return self.build_hf_unet("adm", head_channels=cfg.head_channels)

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg: OTCFMModelConfig = self.cfg
        x0 = torch.randn(x.shape, generator=generator, device=x.device)
        if cfg.coupling == "ot":
            x0 = ot_pair(x0, x)
        t = torch.rand((x.shape[0],), generator=generator, device=x.device)
        t_ = t.reshape(-1, *([1] * (x.dim() - 1)))
        x_t = t_ * x + (1 - t_) * x0
        if cfg.sigma > 0:
            x_t = x_t + cfg.sigma * torch.randn(x.shape, generator=generator, device=x.device)
        return F.mse_loss(net(x_t, t), x - x0)

    def sample_batch(self, net: nn.Module, noise: torch.Tensor, seed: int, start: int, **options: Any) -> torch.Tensor:
        """``options`` override ``sampler``, ``num_steps``, ``tol`` of the config for this call."""
        cfg: OTCFMModelConfig = dataclasses.replace(self.cfg, **options)
        cfg.validate()
        return integrate(net, noise, cfg.sampler, cfg.num_steps, cfg.tol)
