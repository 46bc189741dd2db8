"""Plain data (YAML, JSON, ``-S`` overrides) to frozen dataclasses, each field coerced to its type hint.

A field whose values are not read by their type alone says so in its metadata
(:func:`parsed_by`): ``loop.lambdas`` (``inf``, ``full``), Kubernetes label values (an unquoted
YAML ``true`` meant as the text ``"true"``), the ``model`` section (its class depends on
``model.family``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from autophagy.config.checks import ConfigError

#: The field-metadata key of :func:`parsed_by`.
PARSE = "autophagy.config.parse"

Parse = Callable[[Any, str], Any]


def parsed_by(parse: Parse) -> dict[str, Parse]:
    """Field metadata: read the field's values with ``parse(value, option)`` instead of by their type
    hint. In a ``tuple[...]`` or ``Mapping[str, ...]`` field it reads each item (option
    ``loop.lambdas[0]``, ``cluster.pod_labels.team``)."""
    return {PARSE: parse}


def yaml_boolean_as_text(value: Any, option: str) -> str:
    """A text value that YAML may have read as a boolean (``true`` unquoted): ``"true"``/``"false"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _coerce(str, value, option)


def build_section(cls: type, raw: Any, where: str) -> Any:
    """Build the dataclass ``cls`` from plain data, coercing each field to its type hint.

    ``where`` is the option path of ``raw`` (``"train"``, ``"cluster.gpu_resources"``; ``""`` for
    the top level), used in every error. Unknown keys, wrong types and values outside a
    ``Literal`` raise :class:`ConfigError` naming the option; range checks are left to the
    sections' ``validate``. Used for the experiment, for checkpoints' stored model configs and
    for the pipeline's ``cluster:`` section.
    """
    if dataclasses.is_dataclass(raw):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, typing.Mapping):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        label = f"{where}." if where else ""
        close = {u: difflib.get_close_matches(u, fields, n=1) for u in unknown}
        hints = "".join(f" (did you mean {label}{close[u][0]}?)" for u in unknown if close[u])
        raise ConfigError(
            f"unknown option(s) {', '.join(label + u for u in unknown)}{hints}; allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in raw.items():
        option = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, option, fields[name].metadata.get(PARSE))
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, option: str, parse: Parse | None = None) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce([a for a in args if a is not type(None)][0], value, option, parse)
    if origin is tuple:
        if value is None:
            return ()
        if isinstance(value, (str, bytes, typing.Mapping)) or not isinstance(value, typing.Iterable):
            value = [value]  # one item given without a list
        return tuple(_coerce(args[0], v, f"{option}[{i}]", parse) for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping) or hint in (dict, typing.Mapping):
        if value is None:
            return {}
        if not isinstance(value, typing.Mapping):
            raise ConfigError(f"{option} must be a mapping, got {value!r}")
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(value_type, v, f"{option}.{k}", parse) for k, v in value.items()}
    if parse is not None:
        return parse(value, option)
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, option)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{option} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{option} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{option} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{option} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{option} must be a string, got {value!r}")
        return str(value)
    return value
