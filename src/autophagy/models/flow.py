"""Normalizing flows for vectors: a neural spline flow (Durkan et al. 2019) built with ``zuko``.

Trained by maximum likelihood, loss = -E[log p(x)]; sampled as x = T^{-1}(z) with z ~ N(0, I)
seeded per row, so sample sets are reproducible however they are batched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import zuko
from torch import nn

from autophagy.config import FlowModelConfig
from autophagy.models.torch_model import TorchGenerativeModel


class FlowModel(TorchGenerativeModel):
    """NSF on float32 vectors ``[N, D]``."""

    family = "flow"
    kind = "vector"

    def build_network(self) -> nn.Module:
        cfg: FlowModelConfig = self.cfg
        (dim,) = self.item_shape
        return zuko.flows.NSF(
            features=dim, transforms=cfg.transforms, hidden_features=cfg.hidden_features, bins=cfg.bins
        )

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return self.item_shape

    def encode(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(rows, dtype=np.float32))

    def decode(self, x: torch.Tensor) -> np.ndarray:
        return x.to(torch.float32).cpu().numpy()

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -net().log_prob(x).mean()

    def sample_batch(self, net: nn.Module, noise: torch.Tensor, seed: int, start: int, **options: Any) -> torch.Tensor:
        return net().transform.inv(noise)
