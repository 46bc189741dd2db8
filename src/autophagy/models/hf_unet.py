"""The DDPM / ADM-style UNet of the ``ddpm`` and ``otcfm`` families, built with diffusers' ``UNet2DModel``.

diffusers is a maintained implementation of exactly these networks (its ``google/ddpm-cifar10-32``
config is Ho et al.'s CIFAR-10 model), so nothing is written by hand here. Two styles:

* ``ddpm`` (Ho et al. 2020, App. B; the TF reference ``diffusion_utils``): sinusoidal embedding
  sin-then-cos with frequency shift 1, GroupNorm eps 1e-6, stride-2 downsampling conv padded
  on the bottom/right only, one attention head.
* ``adm`` (Dhariwal & Nichol 2021's UNet, as used by torchcfm's ``UNetModelWrapper``):
  cos-then-sin embedding, GroupNorm eps 1e-5, symmetric padding, heads of ``head_channels``.

With ``model_channels=128, channel_mult=(1, 2, 2, 2), num_blocks=2, attn_resolutions=(16,)``
both have 35,746,307 parameters at 32x32: Ho et al.'s "35.7 million" and torchcfm's CIFAR-10
network (counted in tests/test_families_paper.py against torchcfm's own class where installed).

Shapes: ``forward(x [B, C, H, W], labels [B] or [1]) -> [B, C, H, W]`` (diffusers repeats a [1]
level over the batch); ``labels`` are the timesteps as the family defines them (integers 0..T-1
for ddpm, t in [0, 1] for otcfm, as torchcfm).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import nn

STYLES = {
    "ddpm": dict(flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, downsample_padding=0),
    "adm": dict(flip_sin_to_cos=True, freq_shift=0, norm_eps=1e-5, downsample_padding=1),
}


class HFUNet(nn.Module):
    """``UNet2DModel`` behind the ``(x, labels) -> output`` signature the families call."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        model_channels: int,
        channel_mult: tuple[int, ...],
        num_blocks: int,
        attn_resolutions: tuple[int, ...],
        dropout: float,
        style: str,
        head_channels: int | None = None,
    ):
        super().__init__()
        channels, resolution, _ = image_shape
        levels = [resolution >> level for level in range(len(channel_mult))]
        attention = [res in attn_resolutions for res in levels]
        self.unet = UNet2DModel(
            sample_size=resolution,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(model_channels * mult for mult in channel_mult),
            layers_per_block=num_blocks,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            attention_head_dim=head_channels,
            norm_num_groups=min(32, model_channels),
            dropout=dropout,
            **STYLES[style],
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x, labels, return_dict=False)[0]
