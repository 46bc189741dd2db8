"""A residual MLP denoiser for tiny images (e.g. 8x8 digits) on CPU.

On 8x8 inputs a UNet spends its time in small convolutions that CPUs run badly: measured on
this project's 2-core CI machine, the tiny DDPM++ UNet (16 channels) trains at ~1,200 images/s,
this 484k-parameter MLP at ~11,600 images/s (benchmarks/README.md). The EDM preconditioning,
loss and sampler are identical for both; only the network F differs.

Shapes: ``forward(x [B, C, H, W], noise_labels [B] or [1]) -> [B, C, H, W]``; a [1] level is
embedded once and broadcast over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autophagy.models.unet import PositionalEmbedding


class ResidualBlock(nn.Module):
    """h + W2 SiLU(W1 SiLU(LN(h)) + P(emb)); W2 starts at zero so each block starts as identity."""

    def __init__(self, width: int, emb_channels: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_channels, width)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = F.silu(self.fc1(F.silu(self.norm(h))) + self.emb(emb))
        return h + self.fc2(self.dropout(z))


class MLPDenoiser(nn.Module):
    """Flatten, ``num_blocks`` residual blocks of ``width`` conditioned on the noise level, unflatten."""

    def __init__(
        self,
        item_shape: tuple[int, int, int],
        width: int = 256,
        num_blocks: int = 3,
        dropout: float = 0.0,
        emb_channels: int = 64,
    ):
        super().__init__()
        channels, height, width_px = item_shape
        self.shape = (channels, height, width_px)
        features = channels * height * width_px
        self.map_noise = PositionalEmbedding(emb_channels)
        self.map_layer = nn.Linear(emb_channels, emb_channels)
        self.inp = nn.Linear(features, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, emb_channels, dropout) for _ in range(num_blocks))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, features)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.map_layer(self.map_noise(noise_labels).to(x.dtype)))
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h))).view(x.shape[0], *self.shape)
