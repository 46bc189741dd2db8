"""Checkpoint directories: weights in safetensors, metadata in JSON, a resumable train state.

``model.safetensors`` (+ ``ema.safetensors``), ``config.json`` (family, network config, item
shape, training config, generation, data hash) and ``train_state.pt`` (optimizer moments,
counters; loaded with ``torch.load(weights_only=True)``). A family's side files
(:meth:`~autophagy.models.base.GenerativeModel.files`: a text model's ``tokenizer.json`` and
network config) lie beside them, listed with their sha256 under ``"files"`` in ``config.json`` and
verified before the model reads them. Nothing is a pickle of code, so loading an untrusted
checkpoint never executes code.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from autophagy import atomic
from autophagy.config import FAMILIES, ConfigError, build_section, to_dict
from autophagy.models.base import GenerativeModel, ModelError

FORMAT = "autophagy.checkpoint/v1"
CONFIG = "config.json"
TRAIN_STATE = "train_state.pt"
SIDE_FILES = "files"  # the config.json key listing the side files: {name: sha256}
PLAIN_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # a side file's name: one file in the checkpoint directory
WRITE_ID = "autophagy.write_id"  # ties the files of one write together (safetensors metadata, train state, config)


def save_checkpoint(model: GenerativeModel, out_dir: str | Path, meta: Mapping[str, Any]) -> None:
    """Write ``model`` to ``out_dir`` atomically (the directory appears whole or not at all)."""
    with atomic.staging_dir(out_dir) as stage:
        write_checkpoint_files(model, stage, meta)


def write_checkpoint_files(model: GenerativeModel, directory: Path, meta: Mapping[str, Any]) -> None:
    """Write the checkpoint files into an existing directory (each file atomically).

    The files are not replaced together, so each carries the id of this write and ``config.json``
    (written last) names it: :func:`load_checkpoint` refuses a directory whose files come from
    different writes (a process killed while rewriting a resumable train state).
    """
    write_id = _write_id(model, meta)
    side_files = model.files()
    for name, content in side_files.items():
        _check_side_file_name(model, name)
        atomic.write_bytes(directory / name, content)
    for name, tensors in model.tensors().items():
        with atomic.temp_path(directory / f"{name}.safetensors") as tmp:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata={WRITE_ID: write_id}
            )
    state = model.train_state()
    if state:
        with atomic.temp_path(directory / TRAIN_STATE) as tmp:
            with open(tmp, "wb") as handle:  # a handle, not the path: the archive then never embeds the temp name
                torch.save({**state, WRITE_ID: write_id}, handle)
    atomic.write_json(
        directory / CONFIG,
        {
            "format": FORMAT,
            "family": model.family,
            "item_shape": list(model.item_shape),
            "model": to_dict(model.cfg),
            "parameters": model.parameter_count(),
            **meta,
            **(
                {SIDE_FILES: {name: hashlib.sha256(content).hexdigest() for name, content in side_files.items()}}
                if side_files
                else {}
            ),
            WRITE_ID: write_id,
        },
    )


def _check_side_file_name(model: GenerativeModel, name: str) -> None:
    """A side file is a plain file name that is none of the checkpoint's own files."""
    if not re.fullmatch(PLAIN_NAME, name) or name in (CONFIG, TRAIN_STATE) or name.endswith(".safetensors"):
        raise ModelError(
            f"{model.family}: side file name {name!r} must be a plain file name other than {CONFIG}, "
            f"{TRAIN_STATE} and *.safetensors"
        )


def read_side_files(path: Path, config: Mapping[str, Any]) -> dict[str, bytes]:
    """The side files listed in a checkpoint's ``config.json``, each checked against its sha256."""
    listed = config.get(SIDE_FILES, {})
    if not isinstance(listed, Mapping):
        raise ModelError(f"checkpoint {path}: {CONFIG} has a malformed {SIDE_FILES!r} entry")
    files = {}
    for name, digest in listed.items():
        if not isinstance(name, str) or not re.fullmatch(PLAIN_NAME, name):
            raise ModelError(f"checkpoint {path}: {CONFIG} lists a side file that is no plain file name: {name!r}")
        file = path / name
        if not file.is_file():
            raise ModelError(f"checkpoint {path} is incomplete: {name} (listed in {CONFIG}) is missing")
        content = file.read_bytes()
        if hashlib.sha256(content).hexdigest() != digest:
            raise ModelError(
                f"checkpoint file {file} is corrupted: its sha256 differs from the one {CONFIG} lists "
                "(altered, or interrupted while saving?)"
            )
        files[name] = content
    return files


def _write_id(model: GenerativeModel, meta: Mapping[str, Any]) -> str:
    """Names one write: the metadata and training progress (different for every train-state
    checkpoint of a run, and the same when a run is repeated, so checkpoints stay reproducible)."""
    progress = getattr(model, "progress", None) or {}
    key = {"meta": meta, "images_seen": progress.get("images_seen"), "step": progress.get("step")}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise ModelError(f"{path} is not a checkpoint directory: {CONFIG} is missing")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{config_path} is corrupted: {err}") from None
    if config.get("format") != FORMAT:
        raise ModelError(f"{config_path}: unknown checkpoint format {config.get('format')!r}")
    return config


def load_checkpoint(path: str | Path, family: str | None = None, with_train_state: bool = True) -> GenerativeModel:
    """Rebuild the model stored in ``path``; ``family`` guards against loading the wrong kind."""
    from autophagy.models import build_model

    path = Path(path)
    config = read_checkpoint_config(path)
    if family is not None and config["family"] != family:
        raise ModelError(f"checkpoint {path} holds a {config['family']!r} model, the config asks for {family!r}")
    try:
        model_cfg = build_section(FAMILIES[config["family"]].config, config["model"], "model")
        model_cfg.validate()
    except (ConfigError, KeyError) as err:
        raise ModelError(f"checkpoint {path} has an invalid model config: {err}") from None
    model = build_model(model_cfg, tuple(config["item_shape"]))
    write_id = config.get(WRITE_ID)  # absent in checkpoints written before write ids
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            tensors[file.stem] = load_file(str(file))
            with safe_open(str(file), framework="pt") as handle:
                file_id = (handle.metadata() or {}).get(WRITE_ID)
        except (SafetensorError, OSError) as err:
            raise ModelError(f"checkpoint file {file} is corrupted: {err}") from None
        if write_id is not None and file_id != write_id:
            raise ModelError(
                f"checkpoint {path} is inconsistent: {file.name} and {CONFIG} come from different writes "
                "(interrupted while saving?)"
            )
    if "model" not in tensors:
        raise ModelError(f"checkpoint {path} has no model.safetensors")
    model.load_files(read_side_files(path, config))
    model.load_tensors(tensors)
    state_file = path / TRAIN_STATE
    if with_train_state and state_file.is_file():
        state = load_plain_tensors(state_file, f"checkpoint file {state_file}", "a train state autophagy wrote")
        if not isinstance(state, dict) or (write_id is not None and state.get(WRITE_ID) != write_id):
            raise ModelError(
                f"checkpoint {path} is inconsistent: {TRAIN_STATE} and {CONFIG} come from different writes "
                "(interrupted while saving?)"
            )
        model.load_train_state(state)
    return model


def load_plain_tensors(source: str | Path | BinaryIO, what: str, expected: str = "a plain tensor file") -> Any:
    """``torch.load(source, weights_only=True)``; a refusal or a damaged file is a :class:`ModelError`
    naming ``what`` in our words. torch's own message advises loading the file with
    ``weights_only=False``, which would run whatever code the file carries, so it is never shown."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _refusal_detail(err)
        if re.search(r"global|class|function", detail, re.IGNORECASE):
            raise ModelError(
                f"{what} is not {expected}: it asks for objects that only code could build ({detail}). "
                "It was altered or made by other software; autophagy does not load such files"
            ) from None
        raise ModelError(f"{what} is corrupted or not {expected}: {detail}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{what} is corrupted or truncated: {first_line}") from None


def _refusal_detail(err: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused (``GLOBAL os.system``, an unknown opcode ...),
    without its advice."""
    for paragraph in str(err).split("\n\n"):
        text = " ".join(paragraph.split())
        if text and "weights_only" not in text and "Weights only" not in text and "documentation" not in text:
            return text.removeprefix("WeightsUnpickler error: ").rstrip(".")
    return "torch.load's weights-only unpickler refused it"
