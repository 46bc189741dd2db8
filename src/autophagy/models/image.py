"""What the image families (edm, ddpm, otcfm) share: uint8 NHWC rows <-> float32 NCHW in [-1, 1],
and the choice of network F(x [B, C, H, W], labels [B]) -> [B, C, H, W].

The samplers call F with one noise level for the whole batch, ``labels`` [1]: the networks
broadcast it, so the level's embedding (sinusoids and MLP) is computed once per call, not once
per row (the residual MLP: ~11 % of its multiply-adds; ``benchmarks/bench_sampling.py``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from autophagy.models.mlp import MLPDenoiser
from autophagy.models.noise import index_noise
from autophagy.models.sampling import fused_noise
from autophagy.models.torch_model import TorchGenerativeModel


class ImageModel(TorchGenerativeModel):
    """A neural family on square uint8 images ``[N, H, W, C]``; the network sees ``[B, C, H, W]`` in [-1, 1]."""

    kind = "image"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``; raises for non-square images."""
        height, width, channels = self.item_shape
        if height != width:
            raise ValueError(f"{self.family} needs square images, got {height}x{width}")
        return channels, height, width

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return self.image_shape

    def step_noise(self, net: nn.Module, seed: int, start: int, like: torch.Tensor) -> Callable[[int], torch.Tensor]:
        """``step_noise(i)``: the noise z ``[B, C, H, W]`` of sampler step ``i`` for rows ``start ..
        start + B`` (B = ``like``'s rows), stream ``1 + i`` of ``seed`` made on ``like``'s device;
        in one compiled kernel when ``net`` is compiled for sampling."""
        count, device, fused = like.shape[0], like.device, fused_noise(net)

        def noise(i: int) -> torch.Tensor:
            return index_noise(seed, start, count, self.noise_shape, stream=1 + i, device=device, fused=fused)

        return noise

    def encode(self, rows: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(rows)).permute(0, 3, 1, 2).to(torch.float32)
        return x / 127.5 - 1

    def stage_rows(self, rows: np.ndarray, device: torch.device) -> torch.Tensor:
        """uint8 ``[N, H, W, C]`` on ``device`` (no float copy: a quarter of float32's memory). On CPU
        the tensor shares the rows' memory (a memory-mapped shard stays mapped); it is only read."""
        with warnings.catch_warnings():  # a read-only memmap: torch warns it is not writable; it is never written
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.ascontiguousarray(rows)).to(device)

    def encode_batch(self, batch: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """uint8 ``[B, H, W, C]`` -> float32 ``[B, C, H, W]`` in [-1, 1] on the batch's device, exactly
        :meth:`encode`'s values; in channels-last memory (NHWC strides, no copy) if ``channels_last``."""
        layout = torch.channels_last if channels_last else torch.contiguous_format
        x = batch.permute(0, 3, 1, 2).contiguous(memory_format=layout).to(torch.float32)
        return x / 127.5 - 1

    def flip_batch(self, batch: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Rows of uint8 ``[B, H, W, C]`` where ``flip`` [B] is set, mirrored left-right (W), on the device."""
        return torch.where(flip.reshape(-1, 1, 1, 1), batch.flip(2), batch)

    def decode(self, x: torch.Tensor) -> np.ndarray:
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def build_mlp(self) -> nn.Module:
        """The residual-MLP network of ``self.cfg`` (``model_channels`` wide, ``num_blocks`` deep)."""
        cfg = self.cfg
        return MLPDenoiser(self.image_shape, width=cfg.model_channels, num_blocks=cfg.num_blocks, dropout=cfg.dropout)

    def build_hf_unet(self, style: str, **options: Any) -> nn.Module:
        """diffusers' ``UNet2DModel`` laid out as ``style`` (``ddpm``: Ho et al.; ``adm``: torchcfm's) from
        ``self.cfg``'s ``model_channels``, ``channel_mult``, ``num_blocks``, ``attn_resolutions``, ``dropout``."""
        from autophagy.models.hf_unet import HFUNet

        cfg = self.cfg
        return HFUNet(
            self.image_shape,
            cfg.model_channels,
            cfg.channel_mult,
            cfg.num_blocks,
            cfg.attn_resolutions,
            cfg.dropout,
            style=style,
            **options,
        )
