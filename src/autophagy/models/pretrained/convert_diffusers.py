"""diffusers ``UNet2DModel`` directories (families ``ddpm``, ``otcfm``) -> our ``HFUNet`` weights.

The directory's ``config.json`` must describe the network the config builds (every difference is
named); the weights are safetensors, or a ``.bin`` read with ``torch.load(weights_only=True)``
(e.g. ``google/ddpm-cifar10-32``, with the pre-0.14 attention names).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from autophagy.models.base import ModelError
from autophagy.models.checkpoint import load_plain_tensors
from autophagy.models.pretrained.convert_edm import plain

#: UNet2DModel options that change the function of the network (dropout does not).
DIFFUSERS_ARCH_KEYS = (
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "time_embedding_type",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "class_embed_type",
    "num_class_embeds",
    "time_embedding_dim",
)
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def our_unet(model_cfg: Any, item_shape: tuple[int, ...]):
    if model_cfg.network != "unet":
        raise ModelError(f"model.family={model_cfg.family} starts from a UNet checkpoint only with model.network=unet")
    from autophagy.models import build_model

    with torch.device("meta"):
        return build_model(model_cfg, tuple(item_shape)).net.unet


def convert_diffusers(weights: Path, model_cfg: Any, item_shape: tuple[int, ...]):
    """``(model_state, ema_state, notes)`` of ``ddpm``/``otcfm`` from a diffusers ``UNet2DModel`` directory."""
    from diffusers import UNet2DModel

    config_path = weights.parent / "config.json"
    try:
        theirs = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{config_path}: {err}") from None
    if theirs.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ModelError(f"{config_path} describes a {theirs['_class_name']}; only UNet2DModel is supported")
    defaults = {
        k: p.default
        for k, p in inspect.signature(UNet2DModel.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    ours = dict(our_unet(model_cfg, item_shape).config)
    diff = []
    for key in DIFFUSERS_ARCH_KEYS:
        a, b = plain(theirs.get(key, defaults.get(key))), plain(ours.get(key, defaults.get(key)))
        if key == "attention_head_dim" and a is None and b is None:
            continue
        if a != b:
            diff.append(f"{key}: checkpoint {a!r}, config {b!r}")
    if diff:
        raise ModelError(
            f"the UNet2DModel in {weights.parent} differs from the one model.family={model_cfg.family} "
            f"builds from the config: {'; '.join(diff)} (google/ddpm-cifar10-32 is configs/cifar10-ddpm.yaml)"
        )
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = load_plain_tensors(weights, str(weights))
    renamed = {}
    for name, tensor in state.items():
        parts = name.split(".")
        if len(parts) >= 2 and "attentions" in parts and parts[-2] in _OLD_ATTENTION_NAMES:
            name = ".".join(parts[:-2] + [_OLD_ATTENTION_NAMES[parts[-2]], parts[-1]])
        renamed["unet." + name] = tensor.float()
    notes = []
    if "dropout" in theirs and theirs["dropout"] != model_cfg.dropout:
        notes.append(
            f"config.json dropout {theirs.get('dropout', 0.0)}, fine-tuned with model.dropout={model_cfg.dropout}"
        )
    return renamed, renamed, notes
