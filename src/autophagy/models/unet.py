"""The DDPM++ UNet of EDM (``SongUNet`` in NVlabs/edm ``training/networks.py``), standard
encoder/decoder variant, written out because no maintained pip package ships it.

With ``model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,)`` it is
the CIFAR-10 network of Karras et al. (2022), Table 7 ("DDPM++", config F); with
``channel_mult=(1, 2, 2, 2)`` the FFHQ-64 one. Layer names, initialisation and the resampling
filter [1, 1] follow the reference so that parameter counts match it exactly. The [1, 1] FIR
filter is a 2x2 box filter: down-sampling is an average pool, up-sampling nearest-neighbour.

Shapes: ``forward(x [B, C, H, W], noise_labels [B] or [1]) -> [B, C_out, H, W]``; a [1] level
is embedded once and broadcast over the batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _weight_init(shape: list[int], mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"unknown init mode {mode}")


class Linear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init_mode: str = "kaiming_normal",
        init_weight: float = 1.0,
    ):
        super().__init__()
        self.weight = nn.Parameter(
            _weight_init([out_features, in_features], init_mode, in_features, out_features) * init_weight
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class Conv2d(nn.Module):
    """3x3/1x1 convolution with optional 2x up/down-sampling before it (kernel 0: resample only)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        up: bool = False,
        down: bool = False,
        init_mode: str = "kaiming_normal",
        init_weight: float = 1.0,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.up, self.down = in_channels, out_channels, up, down
        fan_in, fan_out = in_channels * kernel * kernel, out_channels * kernel * kernel
        self.weight = (
            nn.Parameter(
                _weight_init([out_channels, in_channels, kernel, kernel], init_mode, fan_in, fan_out) * init_weight
            )
            if kernel
            else None
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            x = F.avg_pool2d(x, 2)
        if self.weight is not None:
            x = F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=self.weight.shape[-1] // 2)
        return x


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with min(32, C // 4) groups, as in the reference."""
    return nn.GroupNorm(num_groups=min(32, channels // 4), num_channels=channels, eps=eps)


class UNetBlock(nn.Module):
    """Residual block: GN-SiLU-conv, additive noise embedding, GN-SiLU-dropout-conv, skip, optional self-attention."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.skip_scale = math.sqrt(0.5)
        self.norm0 = group_norm(in_channels)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, **init)
        self.affine = Linear(emb_channels, out_channels, **init)
        self.norm1 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = Conv2d(out_channels, out_channels, 3, **init_zero)
        self.skip = (
            Conv2d(in_channels, out_channels, 1, up=up, down=down, **init)
            if out_channels != in_channels or up or down
            else None
        )
        self.attention = attention
        if attention:
            self.norm2 = group_norm(out_channels)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, **init_attn)
            self.proj = Conv2d(out_channels, out_channels, 1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        x = F.silu(self.norm1(x + self.affine(emb)[:, :, None, None]))
        x = self.conv1(self.dropout(x))
        x = (x + (self.skip(orig) if self.skip is not None else orig)) * self.skip_scale
        if self.attention:
            b, c, h, w = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(b, c, 3, h * w).unbind(2)  # one head
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            x = (self.proj(a.transpose(1, 2).reshape(b, c, h, w)) + x) * self.skip_scale
        return x


class PositionalEmbedding(nn.Module):
    """Transformer sinusoidal embedding of the noise level, ``endpoint=True`` as in DDPM++."""

    def __init__(self, num_channels: int, max_positions: int = 10000):
        super().__init__()
        self.num_channels, self.max_positions = num_channels, max_positions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - 1)
        freqs = (1 / self.max_positions) ** freqs
        x = torch.outer(x.float(), freqs)
        return torch.cat([x.sin(), x.cos()], dim=1)  # the reference's cos/sin order after its flip


class SongUNet(nn.Module):
    """DDPM++ UNet (Song et al. 2021, as re-implemented by Karras et al. 2022)."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        model_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.10,
    ):
        super().__init__()
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        block = dict(emb_channels=emb_channels, dropout=dropout)
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        skips = [b.out_channels for b in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **block)
        self.out_norm = group_norm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3, **init_zero)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor) -> torch.Tensor:
        emb = self.map_noise(noise_labels).to(x.dtype)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips = []
        for layer in self.enc.values():
            x = layer(x, emb) if isinstance(layer, UNetBlock) else layer(x)
            skips.append(x)
        for layer in self.dec.values():
            if x.shape[1] != layer.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


def count_parameters(module: nn.Module) -> int:
    return int(np.sum([p.numel() for p in module.parameters()]))
