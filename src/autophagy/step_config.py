"""The config options each step reads, and a config that holds only those.

A Kubeflow task's cache key is made of its inputs (parameter values, input artifacts, command and
image). So that changing ``evaluate.k`` re-runs the evaluations but retrains nothing, every task
receives, as one JSON parameter, only the options its step reads (:data:`STEP_OPTIONS`), and
:func:`config_for_step` rebuilds from it a config in which every other option *raises when read*:
a step that starts reading a new option fails loudly, naming it, until it is listed here.

Where to log never changes a result, so it is not an input: :data:`BOOKKEEPING` (the experiment
name, the ``tracking`` section and the chains of the experiment, into which generation 0 logs)
reaches a task through the environment (:data:`BOOKKEEPING_ENV`), outside the cache key.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from autophagy.config import (
    DEFAULT_FAMILY,
    FAMILIES,
    ConfigError,
    DataConfig,
    EvaluateConfig,
    ExperimentConfig,
    LoopConfig,
    SampleConfig,
    TrackingConfig,
    TrainConfig,
    build_section,
    to_dict,
)

#: The options each step reads: a section name stands for all of its options.
STEP_OPTIONS: dict[str, tuple[str, ...]] = {
    "prepare": ("data", "loop.strategy"),
    "features": ("evaluate.features", "evaluate.inception_weights", "train.device"),
    "mix": ("data.n_train", "loop.strategy", "loop.correction", "loop.correction_strength"),
    "train": ("model", "train"),
    "sample": ("model.family", "sample", "train.device"),
    "evaluate": ("evaluate", "sample.n_eval", "train.device", "loop.collapse_metric", "loop.collapse_ratio"),
    "handoff": (),  # records where a run's outputs are: bookkeeping only
}
#: Options that only say where results are logged (never an input of a cached task).
#: (``loop.generations``: which checkpoints ``tracking.keep_checkpoints`` logs, the last among them.)
BOOKKEEPING: tuple[str, ...] = ("name", "tracking", "loop.lambdas", "loop.seeds", "loop.generations")
#: The environment variable that carries :func:`bookkeeping` (JSON) into a Kubeflow task.
BOOKKEEPING_ENV = "AUTOPHAGY_BOOKKEEPING"

_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
    "evaluate": EvaluateConfig,
    "loop": LoopConfig,
    "tracking": TrackingConfig,
}


def _select(data: Mapping[str, Any], options: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for option in options:
        section, _, name = option.partition(".")
        if not name:
            out[section] = data[section]
        else:
            out.setdefault(section, {})[name] = data[section][name]
    return out


def step_options(cfg: ExperimentConfig, step: str) -> dict[str, Any]:
    """The options ``step`` reads, as plain data (``{"train": {...}, "sample": {"n_eval": 200}}``)."""
    if step not in STEP_OPTIONS:
        raise ValueError(f"unknown step {step!r}; steps with options: {', '.join(STEP_OPTIONS)}")
    return _select(to_dict(cfg), STEP_OPTIONS[step])


def bookkeeping(cfg: ExperimentConfig) -> dict[str, Any]:
    """Where a step's results are logged (:data:`BOOKKEEPING`), as plain data."""
    return _select(to_dict(cfg), BOOKKEEPING)


def to_json(data: Mapping[str, Any]) -> str:
    """Canonical JSON (sorted keys, no spaces): equal options give equal text, hence equal cache keys."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class _Withheld:
    """A config section, or part of one, that a step was not given: reading it is an error."""

    def __init__(self, section: str, step: str, real: Any = None, allowed: frozenset[str] = frozenset()):
        object.__setattr__(self, "_where", (section, step, real, allowed))

    def __getattr__(self, name: str) -> Any:
        section, step, real, allowed = object.__getattribute__(self, "_where")
        if name in allowed:
            return getattr(real, name)
        raise ConfigError(
            f"step {step} read {section}.{name}, which is not among the options it is given "
            f"(autophagy.step_config.STEP_OPTIONS[{step!r}]): add it there, so that its cache key covers it"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def config_for_step(step: str, options: Mapping[str, Any], books: Mapping[str, Any]) -> ExperimentConfig:
    """The config a task of ``step`` runs with: its ``options`` (:func:`step_options`) and
    ``books`` (:func:`bookkeeping`); any other option raises :class:`ConfigError` when read.

    The whole config was validated where the run was planned; here each section that is given
    whole is validated again, and partial sections are checked by their types only.
    """
    if step not in STEP_OPTIONS:
        raise ValueError(f"unknown step {step!r}; steps with options: {', '.join(STEP_OPTIONS)}")
    given: dict[str, Any] = {}
    for source in (books, options):
        for key, value in source.items():
            if isinstance(value, Mapping) and isinstance(given.get(key), dict):
                given[key] = {**given[key], **value}
            else:
                given[key] = dict(value) if isinstance(value, Mapping) else value
    whole = {option for option in (*STEP_OPTIONS[step], *BOOKKEEPING) if "." not in option}
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(ExperimentConfig):
        name = field.name
        if name == "name":
            fields[name] = given["name"] if "name" in given else _Withheld("name", step)
            continue
        raw = given.get(name)
        if raw is None:
            fields[name] = _Withheld(name, step)
            continue
        cls = FAMILIES[raw.get("family", DEFAULT_FAMILY)].config if name == "model" else _SECTIONS[name]
        section = build_section(cls, raw, name)
        if name in whole:
            section.validate()
            fields[name] = section
        else:
            fields[name] = _Withheld(name, step, section, frozenset(raw))
    return ExperimentConfig(**fields)
