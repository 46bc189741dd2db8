"""Pretrained starts for generation 0: public checkpoints converted to autophagy checkpoints,
without ever running code from the file.

``train.init_checkpoint`` names an autophagy checkpoint directory or a *foreign* checkpoint: a
local file or directory, an ``https://`` URL (downloaded once into the cache; append
``#sha256=<hex>`` to check its hash; a plain ``http://`` URL needs the hash), or
``hf://owner/name[@revision]`` (a diffusers repository on the Hugging Face Hub). The format is
recognised by content, and each has its converter:

* ``edm-pickle`` (family ``edm``, :mod:`.convert_edm`): NVlabs/edm's ``edm-*.pkl`` network
  snapshots, Python pickles that would run their embedded source code if unpickled the usual way;
  :mod:`.unpickler` reads them into inert records instead (allow-listed globals, calls and states).
* ``diffusers`` (families ``ddpm``, ``otcfm``, :mod:`.convert_diffusers`): a ``UNet2DModel``
  directory (``config.json`` + ``diffusion_pytorch_model.safetensors``, or ``.bin`` read with
  ``weights_only=True``), e.g. ``google/ddpm-cifar10-32``.
* ``torchcfm`` (family ``otcfm``, :mod:`.convert_torchcfm`): a ``torch.save`` dict of torchcfm's
  training script, read with ``weights_only=True``.

Which family converts which formats is its registration's ``pretrained_formats``
(:data:`autophagy.config.FAMILIES`).

Sources (URLs, the Hub, format detection) are :mod:`.sources`. The network described by the file
must be the one the config builds: every difference is reported by option name
(``model.channel_mult`` ...), and tensor shapes are checked. The converted checkpoint is cached
under ``$AUTOPHAGY_CACHE_DIR/pretrained/converted`` (default ``~/.cache/autophagy``), keyed by the
source's sha256 and the model config, so every generation-0 task of an experiment reuses one
conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autophagy import atomic
from autophagy.config import FAMILIES, to_dict
from autophagy.models.base import ModelError
from autophagy.models.pretrained.convert_diffusers import convert_diffusers
from autophagy.models.pretrained.convert_edm import convert_edm_pickle
from autophagy.models.pretrained.convert_torchcfm import convert_torchcfm
from autophagy.models.pretrained.sources import (
    FORMATS,
    cache_root,
    check_sha256,
    check_source,
    detect_format,
    download_path,
    fetch,
    hf_snapshot,
    is_autophagy_checkpoint,
    scheme,
    split_sha256,
    weights_file,
)
from autophagy.models.pretrained.unpickler import Record, SafeUnpickler, UnsafePickleError, safe_load_pickle

CONVERTER_VERSION = 2  # part of the cache key: bump when a conversion changes (2: the hardened unpickler)
CONVERTERS: dict[str, Callable] = {
    "edm-pickle": convert_edm_pickle,
    "diffusers": convert_diffusers,
    "torchcfm": convert_torchcfm,
}

__all__ = [
    "CONVERTERS",
    "FORMATS",
    "Record",
    "SafeUnpickler",
    "UnsafePickleError",
    "cache_root",
    "check_source",
    "detect_format",
    "download_path",
    "fetch",
    "is_autophagy_checkpoint",
    "resolve_init",
    "safe_load_pickle",
    "split_sha256",
]


def resolve_init(spec: str | Path, model_cfg: Any, item_shape: tuple[int, ...]) -> Path:
    """An autophagy checkpoint directory for ``train.init_checkpoint=spec`` (converted and cached
    if ``spec`` is a foreign checkpoint; returned unchanged if it already is one)."""
    text, sha256 = check_source(str(spec))
    kind = scheme(text)
    if kind == "hf":
        source = hf_snapshot(text)
    elif kind in ("http", "https"):
        source = fetch(text, sha256)
    else:
        source = Path(text).expanduser()
        if not source.exists():
            raise ModelError(f"train.init_checkpoint={spec}: no such file or directory")
        if sha256 is not None and source.is_file():
            check_sha256(source, sha256, f"train.init_checkpoint={spec}")
    fmt = detect_format(source)
    if fmt == "autophagy":
        return source
    family = model_cfg.family
    formats = FAMILIES[family].pretrained_formats  # each family's registration lists the formats it converts
    if fmt not in formats:
        allowed = ", ".join(formats) or "none"
        raise ModelError(
            f"train.init_checkpoint={spec} is a {fmt} checkpoint; model.family={family} can start from "
            f"an autophagy checkpoint or: {allowed}"
        )
    weights = weights_file(source, fmt)
    key = {
        "converter": CONVERTER_VERSION,
        "format": fmt,
        "sha256": atomic.sha256_file(weights),
        "model": to_dict(model_cfg),
        "item_shape": list(item_shape),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    target = cache_root() / "converted" / f"{family}-{fmt}-{digest}"
    if is_autophagy_checkpoint(target):
        return target
    model_sd, ema_sd, notes = CONVERTERS[fmt](weights, model_cfg, item_shape)
    _publish(
        target,
        model_cfg,
        item_shape,
        model_sd,
        ema_sd,
        {"pretrained": {"source": text, "format": fmt, "sha256": key["sha256"], "notes": notes}},
    )
    return target


def _publish(target: Path, model_cfg, item_shape, model_sd, ema_sd, meta) -> None:
    """Write the converted checkpoint; concurrent converters of the same source race harmlessly
    (the first directory renamed into place wins, it is never replaced under a reader)."""
    from autophagy.models import build_model
    from autophagy.models.checkpoint import write_checkpoint_files

    with torch.device("meta"):
        model = build_model(model_cfg, tuple(item_shape))
    for module, state in ((model.net, model_sd), (model.ema, ema_sd)):
        expected = module.state_dict()
        _check_state(state, {k: tuple(v.shape) for k, v in expected.items()}, meta["pretrained"]["source"])
        module.load_state_dict({k: v.to(expected[k].dtype).contiguous().clone() for k, v in state.items()}, assign=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".staging"))
    try:
        write_checkpoint_files(model, stage, meta)
        try:
            os.rename(stage, target)
        except OSError:
            if not is_autophagy_checkpoint(target):
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _check_state(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)}, network {expected[k]}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensors of other shapes ({'; '.join(wrong[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
        raise ModelError(
            f"the weights of {source} do not fit the configured network: {'; '.join(parts)}. "
            "Check model.model_channels, channel_mult, num_blocks and attn_resolutions against the "
            "checkpoint's network"
        )
