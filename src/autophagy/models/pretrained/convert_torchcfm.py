"""torchcfm training checkpoints (family ``otcfm``): a ``torch.save`` dict with the
``net_model``/``ema_model`` state dicts of ``UNetModelWrapper`` (guided-diffusion's ADM UNet), read
with ``torch.load(weights_only=True)``; its names are mapped onto diffusers' ``UNet2DModel`` (the
attention ``qkv`` convolution is split into ``to_q``/``to_k``/``to_v``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from autophagy.models.base import ModelError
from autophagy.models.checkpoint import load_plain_tensors
from autophagy.models.pretrained.convert_diffusers import our_unet


def adm_to_diffusers_names(model_cfg: Any, resolution: int) -> list[tuple[str, str, str]]:
    """``(adm_name, diffusers_name, kind)`` for every tensor of torchcfm's ``UNetModelWrapper``
    (guided-diffusion's UNet) built like our ``HFUNet(style="adm")``; ``kind`` is ``qkv`` (to be
    split), ``conv1d`` (to be squeezed to a linear weight) or ``copy``."""
    rows: list[tuple[str, str, str]] = []

    def pair(adm: str, hf: str, kind: str = "copy") -> None:
        for leaf in ("weight", "bias"):
            rows.append((f"{adm}.{leaf}", f"{hf}.{leaf}", kind))

    def resblock(adm: str, hf: str, has_skip: bool) -> None:
        pair(f"{adm}.in_layers.0", f"{hf}.norm1")
        pair(f"{adm}.in_layers.2", f"{hf}.conv1")
        pair(f"{adm}.emb_layers.1", f"{hf}.time_emb_proj")
        pair(f"{adm}.out_layers.0", f"{hf}.norm2")
        pair(f"{adm}.out_layers.3", f"{hf}.conv2")
        if has_skip:
            pair(f"{adm}.skip_connection", f"{hf}.conv_shortcut")

    def attention(adm: str, hf: str) -> None:
        pair(f"{adm}.norm", f"{hf}.group_norm")
        pair(f"{adm}.qkv", hf, "qkv")
        pair(f"{adm}.proj_out", f"{hf}.to_out.0", "conv1d")

    mc, mult, nb = model_cfg.model_channels, list(model_cfg.channel_mult), model_cfg.num_blocks
    levels = len(mult)
    attn = [(resolution >> level) in model_cfg.attn_resolutions for level in range(levels)]
    pair("time_embed.0", "time_embedding.linear_1")
    pair("time_embed.2", "time_embedding.linear_2")
    pair("input_blocks.0.0", "conv_in")
    k, ch, skips = 1, mc, [mc]
    for level in range(levels):
        for j in range(nb):
            out = mc * mult[level]
            resblock(f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{j}", ch != out)
            ch = out
            if attn[level]:
                attention(f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{j}")
            skips.append(ch)
            k += 1
        if level != levels - 1:
            pair(f"input_blocks.{k}.0.op", f"down_blocks.{level}.downsamplers.0.conv")
            skips.append(ch)
            k += 1
    resblock("middle_block.0", "mid_block.resnets.0", False)
    attention("middle_block.1", "mid_block.attentions.0")
    resblock("middle_block.2", "mid_block.resnets.1", False)
    k = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(nb + 1):
            out = mc * mult[level]
            resblock(f"output_blocks.{k}.0", f"up_blocks.{i}.resnets.{j}", ch + skips.pop() != out)
            ch = out
            index = 1
            if attn[level]:
                attention(f"output_blocks.{k}.1", f"up_blocks.{i}.attentions.{j}")
                index = 2
            if level and j == nb:
                pair(f"output_blocks.{k}.{index}.conv", f"up_blocks.{i}.upsamplers.0.conv")
            k += 1
    pair("out.0", "conv_norm_out")
    pair("out.2", "conv_out")
    return rows


def adm_to_diffusers(
    state: dict[str, torch.Tensor], model_cfg: Any, resolution: int, source: str
) -> dict[str, torch.Tensor]:
    """torchcfm/guided-diffusion UNet weights under our ``HFUNet`` names (``unet.`` prefix)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}  # saved from DataParallel
    rows = adm_to_diffusers_names(model_cfg, resolution)
    missing = [adm for adm, _, _ in rows if adm not in state]
    unexpected = sorted(set(state) - {adm for adm, _, _ in rows})
    if missing or unexpected:
        raise ModelError(
            f"the torchcfm weights in {source} do not fit the configured network: "
            f"{len(missing)} missing ({', '.join(missing[:3])}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:3])}). Check model.model_channels, channel_mult, num_blocks and "
            "attn_resolutions (torchcfm's CIFAR-10 network is configs/cifar10-otcfm.yaml)"
        )
    out: dict[str, torch.Tensor] = {}
    for adm, hf, kind in rows:
        tensor = state[adm].float()
        if kind == "copy":
            out[f"unet.{hf}"] = tensor
        elif kind == "conv1d":
            out[f"unet.{hf}"] = tensor.reshape(tensor.shape[0], -1) if tensor.dim() == 3 else tensor
        else:  # qkv: [3C, C, 1] (or [3C]) laid out per head as [heads, (q, k, v), C / heads]
            width = tensor.shape[0] // 3
            if width % model_cfg.head_channels:
                raise ModelError(
                    f"{source}: {adm} has {width} channels, not divisible into heads of "
                    f"model.head_channels={model_cfg.head_channels}"
                )
            heads = width // model_cfg.head_channels
            split = tensor.reshape(heads, 3, width // heads, *tensor.shape[1:]).transpose(0, 1)
            base, leaf = hf.rsplit(".", 1)
            for part, name in zip(split, ("to_q", "to_k", "to_v")):
                part = part.reshape(width, *tensor.shape[1:])
                out[f"unet.{base}.{name}.{leaf}"] = part.reshape(width, -1) if leaf == "weight" else part
    return out


def convert_torchcfm(path: Path, model_cfg: Any, item_shape: tuple[int, ...]):
    """``(model_state, ema_state, notes)`` of ``otcfm`` from torchcfm's ``torch.save`` training checkpoint."""
    data = load_plain_tensors(path, str(path))
    if not isinstance(data, dict) or not ({"ema_model", "net_model"} & set(data)):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ModelError(f"{path} is not a torchcfm training checkpoint (no net_model/ema_model; found {keys})")
    our_unet(model_cfg, item_shape)  # network=unet
    states = {}
    for key in ("net_model", "ema_model"):
        if key in data:
            weights = data[key]
            if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
                raise ModelError(f"{path} [{key}] is not a state dict of tensors")
            states[key] = adm_to_diffusers(dict(weights), model_cfg, item_shape[0], f"{path} [{key}]")
    ema = states.get("ema_model", states.get("net_model"))
    notes = [f"step {data['step']}"] if isinstance(data.get("step"), int) else []
    notes.append(
        f"attention heads of model.head_channels={model_cfg.head_channels} channels (not recorded in the file; "
        "torchcfm's CIFAR-10 script uses 64)"
    )
    return states.get("net_model", ema), ema, notes
