"""Experiment configs in and out: YAML files, ``key.path=value`` overrides, plain data, flat keys."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from autophagy.config.checks import ConfigError
from autophagy.config.coerce import build_section
from autophagy.config.experiment import ExperimentConfig


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Load ``path`` (YAML; None = the embedded default), apply ``key.path=value`` overrides, validate.

    Two top-level sections are not part of the experiment and are ignored here: ``dvc`` (the
    derived chain in params.yaml, :mod:`autophagy.dvc_params`) and ``cluster`` (Kubeflow
    settings, read by ``autophagy.pipelines``).
    """
    raw = read_yaml_mapping(path)
    for item in overrides:
        if not item.strip().startswith("cluster."):
            apply_override(raw, item)
    raw.pop("dvc", None)
    raw.pop("cluster", None)
    return from_dict(raw)


def read_yaml_mapping(path: str | Path | None) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (``{}`` for None), with clear errors."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in a raw mapping; the value is parsed as YAML (``[0, 1]``, ``inf``)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.option=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def from_dict(raw: typing.Mapping[str, Any]) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from plain data (YAML/JSON)."""
    return build_section(ExperimentConfig, raw, "").validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, JSON-safe data (``inf`` as the string ``"inf"``); inverse of :func:`from_dict`."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        if isinstance(value, typing.Mapping):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value

    return convert(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}``: for MLflow params and DVC ``-S`` keys."""
    out: dict[str, Any] = {}
    for key, value in to_dict(cfg).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_dict(value, name + "."))
        else:
            out[name] = value
    return out


def flatten_dict(data: typing.Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
