"""NVlabs/edm network pickles (``edm-*.pkl``) -> our ``edm`` family's weights.

The pickle is read by :mod:`.unpickler` into a tree of inert records; this module walks that tree
(a crafted file can make it any shape: every step checks what it finds, cycles included), checks
the SongUNet's constructor arguments against the config and renames the tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autophagy.models.base import ModelError
from autophagy.models.pretrained.unpickler import Record, safe_load_pickle

#: SongUNet's constructor defaults in NVlabs/edm training/networks.py (the pickles keep only the
#: keyword arguments that were passed).
SONG_UNET_DEFAULTS = dict(
    label_dim=0,
    augment_dim=0,
    model_channels=128,
    channel_mult=[1, 2, 2, 2],
    channel_mult_emb=4,
    num_blocks=4,
    attn_resolutions=[16],
    dropout=0.10,
    label_dropout=0,
    embedding_type="positional",
    channel_mult_noise=1,
    encoder_type="standard",
    decoder_type="standard",
    resample_filter=[1, 1],
)
MAX_DEPTH = 64  # module nesting of a network (SongUNet's is 5)


def _module_state(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, Record) or not isinstance(record.state, dict):
        raise ModelError(f"expected a torch module at {where or 'the root'}, found {type(record).__name__}")
    return record.state


def _named(mapping: Any, what: str, where: str) -> dict[str, Any]:
    """A module's ``_modules``/``_parameters``/``_buffers``: a dict with string keys (or nothing)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict) or not all(type(k) is str for k in mapping):
        raise ModelError(f"the {what} of the module at {where or 'the root'} are not a dict of names")
    return mapping


def module_records(root: Record) -> dict[str, Record]:
    """Every sub-module record of a tree by dotted name (the root is ``""``); refuses cycles and
    implausibly deep trees."""
    out: dict[str, Record] = {}
    seen: set[int] = set()
    todo = [("", root, 0)]
    while todo:
        name, record, depth = todo.pop()
        if id(record) in seen or depth > MAX_DEPTH:
            raise ModelError(f"the module tree loops or nests deeper than {MAX_DEPTH} levels at {name or 'the root'}")
        seen.add(id(record))
        out[name] = record
        children = _named(_module_state(record, name).get("_modules"), "sub-modules", name)
        todo.extend(
            (f"{name}.{child}" if name else child, value, depth + 1)
            for child, value in reversed(children.items())
            if value is not None
        )
    return out


def module_tensors(root: Record) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a record tree: parameters and persistent buffers under dotted names."""
    out: dict[str, torch.Tensor] = {}
    for name, record in module_records(root).items():
        state = record.state
        skip = state.get("_non_persistent_buffers_set") or set()
        if not isinstance(skip, (set, frozenset)) or not all(type(k) is str for k in skip):
            raise ModelError(f"the non-persistent buffers of the module at {name or 'the root'} are not a set of names")
        for group in ("_parameters", "_buffers"):
            for leaf, value in _named(state.get(group), group.strip("_"), name).items():
                if value is None or leaf in skip:
                    continue
                if not isinstance(value, torch.Tensor):
                    raise ModelError(f"{name}.{leaf} is a {type(value).__name__}, not a tensor")
                out[f"{name}.{leaf}" if name else leaf] = value.detach()
    return out


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Prefixes ``path`` to the errors of the tree walk (which knows only names inside the file)."""
    try:
        yield
    except ModelError as err:
        raise ModelError(err.args[0] if str(path) in str(err) else f"{path}: {err}") from None


def convert_edm_pickle(path: Path, model_cfg: Any, item_shape: tuple[int, ...]):
    """``(model_state, ema_state, notes)`` of our ``edm`` family from an NVlabs network pickle."""
    data = safe_load_pickle(path)
    net = data.get("ema") if isinstance(data, dict) else None
    if not isinstance(net, Record):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ModelError(f"{path} holds no 'ema' network (found: {found})")
    if net.class_name != "EDMPrecond":
        raise ModelError(
            f"{path}: the network is a {net.class_name}; the edm family reproduces EDMPrecond "
            "(VPPrecond/VEPrecond/iDDPMPrecond snapshots use another parameterisation)"
        )
    with _naming(path):
        records = module_records(net)
    unet = records.get("model")
    if unet is None or unet.class_name != "SongUNet":
        found = unet.class_name if unet is not None else "nothing"
        raise ModelError(
            f"{path}: EDMPrecond wraps {found}; the edm family's network=unet is SongUNet (DDPM++); "
            "DhariwalUNet (ADM) snapshots are not supported"
        )
    init_kwargs = unet.state.get("_init_kwargs") or {}
    if not isinstance(init_kwargs, dict):
        raise ModelError(f"{path}: the SongUNet's _init_kwargs are a {type(init_kwargs).__name__}, not a dict")
    with _naming(path):
        kwargs = {**SONG_UNET_DEFAULTS, **{k: plain(v) for k, v in init_kwargs.items()}}
        notes = _check_edm_arch(path, net.state, kwargs, model_cfg, item_shape)
        tensors = module_tensors(net)
    state: dict[str, torch.Tensor] = {}
    box = torch.full((1, 1, 2, 2), 0.25)
    res = item_shape[0]
    for name, tensor in tensors.items():
        if name.endswith(".resample_filter"):
            if tensor.shape != box.shape or not torch.allclose(tensor.float(), box):
                raise ModelError(f"{path}: {name} is not the [1, 1] box filter our SongUNet implements")
            continue
        if name.startswith("model.map_augment."):
            continue  # augmentation conditioning: zero labels (no augmentation) make it vanish exactly
        name = name.replace(f"model.dec.{res}x{res}_aux_norm.", "model.out_norm.")
        name = name.replace(f"model.dec.{res}x{res}_aux_conv.", "model.out_conv.")
        state[name] = tensor.float()
    if kwargs.get("augment_dim"):
        notes.append(
            f"dropped map_augment ({kwargs['augment_dim']} augmentation labels; equivalent to no augmentation)"
        )
    return state, state, notes


def _check_edm_arch(path: Path, precond: dict[str, Any], kwargs: dict[str, Any], cfg: Any, item_shape) -> list[str]:
    resolution, channels = item_shape[0], item_shape[-1]
    fixed = {
        "label_dim": 0,
        "embedding_type": "positional",
        "channel_mult_noise": 1,
        "encoder_type": "standard",
        "decoder_type": "standard",
        "resample_filter": [1, 1],
        "channel_mult_emb": 4,
    }
    unsupported = [f"{k}={kwargs.get(k)!r} (ours: {v!r})" for k, v in fixed.items() if kwargs.get(k) != v]
    if unsupported:
        raise ModelError(f"{path}: a SongUNet variant the edm family does not implement: {', '.join(unsupported)}")
    if cfg.network != "unet":
        raise ModelError(
            f"{path} holds a SongUNet; set model.network=unet (the file's network is described by "
            f"model_channels={kwargs['model_channels']}, channel_mult={kwargs['channel_mult']})"
        )
    theirs = {
        "data resolution": kwargs.get("img_resolution", plain(precond.get("img_resolution"))),
        "data channels": kwargs.get("in_channels", plain(precond.get("img_channels"))),
        "model.model_channels": kwargs["model_channels"],
        "model.channel_mult": kwargs["channel_mult"],
        "model.num_blocks": kwargs["num_blocks"],
        "model.attn_resolutions": kwargs["attn_resolutions"],
        "model.sigma_data": plain(precond.get("sigma_data")),
    }
    ours = {
        "data resolution": resolution,
        "data channels": channels,
        "model.model_channels": cfg.model_channels,
        "model.channel_mult": list(cfg.channel_mult),
        "model.num_blocks": cfg.num_blocks,
        "model.attn_resolutions": list(cfg.attn_resolutions),
        "model.sigma_data": cfg.sigma_data,
    }
    diff = [f"{k}: checkpoint {theirs[k]!r}, config {ours[k]!r}" for k in theirs if theirs[k] != ours[k]]
    if diff:
        raise ModelError(
            f"the network in {path} differs from the configured one: {'; '.join(diff)} "
            "(NVlabs' CIFAR-10 network is configs/cifar10-edm.yaml, FFHQ-64's configs/ffhq64-edm.yaml)"
        )
    notes = []
    if kwargs.get("dropout") != cfg.dropout:
        notes.append(f"trained with dropout {kwargs.get('dropout')}, fine-tuned with model.dropout={cfg.dropout}")
    return notes


def plain(value: Any, depth: int = 0) -> Any:
    """Numbers, arrays and sequences as JSON-like Python values, for comparisons and messages;
    anything else (records, dicts) as an inert description."""
    if depth > MAX_DEPTH:
        raise ModelError(f"a constructor argument nests deeper than {MAX_DEPTH} levels (or contains itself)")
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        return value.tolist()  # numeric only: the unpickler builds no object arrays
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"<{type(value).__name__}>"
