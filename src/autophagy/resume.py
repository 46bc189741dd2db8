"""What a resumed run may reuse: every unit of a run directory records the options that made it.

A *unit* is a directory whose outputs steps make in order: one generation (``mix``, ``train``,
``sample``, ``evaluate``, as :func:`autophagy.plan.generation_plan` decides) or the shared part of
the run directory (``prepare``, ``features``). Its :class:`Record` holds the options each step
reads (:func:`autophagy.step_config.step_options`: where results are logged is not among them) and
the steps that are done. A step is done once the record says so, and the record is written after
the step's last write (its output published, its tracking logged): the record's final write is the
unit's completion marker, and a resumed run redoes every step after the last one recorded.

Resuming with other options: a step is redone when its options changed, or those of a step whose
output it reads (:func:`resume_point`); :func:`differences` names the keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autophagy import atomic
from autophagy.config import ConfigError, ExperimentConfig, flatten_dict
from autophagy.step_config import step_options


class OptionsChanged(ConfigError):
    """A run directory holds outputs made with other options than the ones given."""


@dataclass(frozen=True)
class Record:
    """The options each step of a unit reads (``{step: {section: {option: value}}}``) and the steps done."""

    options: dict[str, Any]
    done: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"options": self.options, "done": list(self.done)}


@dataclass(frozen=True)
class Resume:
    """Where a unit resumes: ``start``, the index of the first step to (re)do; ``changed``, the
    options (``{"train.lr": (old, new)}``) whose change forces that; ``unrecorded``: the unit has
    outputs but no record (made by an autophagy that kept none), so nothing in it can be trusted."""

    start: int
    changed: dict[str, tuple[Any, Any]]
    unrecorded: bool = False

    @property
    def refused(self) -> bool:
        """Whether resuming would redo work for another reason than an interruption."""
        return bool(self.changed) or self.unrecorded


def options(cfg: ExperimentConfig, steps: Iterable[str]) -> dict[str, Any]:
    """The options each of ``steps`` reads, as plain JSON data."""
    return json.loads(json.dumps({step: step_options(cfg, step) for step in steps}))


def read(path: Path) -> Record | None:
    """The record at ``path``; None when there is none (or it is unreadable, which an atomic write
    never leaves, so only a hand-edited file: then nothing in the unit is trusted)."""
    try:
        data = json.loads(path.read_text())
        return Record(options=dict(data["options"]), done=tuple(data["done"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def write(path: Path, record: Record) -> None:
    atomic.write_json(path, record.to_json())


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{"train.lr": (old, new)}`` for every option that differs between two ``{step: options}``
    mappings (an option several steps read is listed once; absent: None)."""
    flat_old: dict[str, Any] = {}
    flat_new: dict[str, Any] = {}
    for flat, source in ((flat_old, old), (flat_new, new)):
        for step_options_ in source.values():
            flat.update(flatten_dict(step_options_))
    return {
        key: (flat_old.get(key), flat_new.get(key))
        for key in sorted({*flat_old, *flat_new})
        if flat_old.get(key) != flat_new.get(key)
    }


def resume_point(
    record: Record | None,
    wanted: Mapping[str, Any],
    steps: tuple[str, ...],
    present: Callable[[str], bool],
    reads: Mapping[str, Iterable[str]],
    inherited: Iterable[str] = (),
) -> Resume:
    """Where a unit with ``record`` resumes, to be made of ``steps`` with the options ``wanted``.

    ``present(step)``: whether the step's output exists (DVC deletes a stage's outputs before
    running it again). ``reads[step]``: the other steps whose options its output depends on;
    ``inherited``: those the unit's inputs from other units depend on (generation t reads the
    samples and model of t - 1). A done step counts as done only while every step it depends on
    has the options it was made with.
    """
    if record is None:
        return Resume(0, {}, unrecorded=any(present(step) for step in steps))
    changed_steps = {step for step in wanted if record.options.get(step) != wanted[step]}
    forced, depends = len(steps), set(inherited)
    for index, step in enumerate(steps):
        depends |= {step, *reads.get(step, ())}
        if depends & changed_steps:
            forced = index
            break
    start = 0
    while start < forced and steps[start] in record.done and present(steps[start]):
        start += 1
    changed = (
        differences({s: record.options.get(s) or {} for s in changed_steps}, {s: wanted[s] for s in changed_steps})
        if forced < len(steps)
        else {}
    )
    return Resume(start, changed)


def refusal(root: Path, where: Mapping[Path, Resume], new_root: str) -> OptionsChanged:
    """One error for every unit of ``root`` that cannot be resumed as it is: the differing options
    (old -> new), the units without a record, and the two ways on."""
    changed: dict[str, tuple[Any, Any]] = {}
    for resume in where.values():
        for key, pair in resume.changed.items():
            changed.setdefault(key, pair)
    parts = []
    for what, units in (
        (
            "were made with other options: "
            + ", ".join(f"{key} {_show(old)} -> {_show(new)}" for key, (old, new) in changed.items()),
            sorted(str(path) for path, resume in where.items() if resume.changed),
        ),
        (
            "hold outputs but no record of the options that made them (an older autophagy wrote them)",
            sorted(str(path) for path, resume in where.items() if resume.unrecorded),
        ),
    ):
        if units:
            parts.append(f"{_count(len(units))} (e.g. {units[0]}) {what}")
    return OptionsChanged(
        f"{root}: " + "; ".join(parts) + ". Run again with the same options, or with --redo-changed "
        f"to redo what the change affects (the rest is kept), or --new-root to start in {new_root}"
    )


def _count(n: int) -> str:
    return f"{n} director{'y' if n == 1 else 'ies'}"


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)
