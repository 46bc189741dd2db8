"""The option reference of ``autophagy config --list``: every config key with its type, default and help.

Keys, types and defaults are read from the config dataclasses (:mod:`autophagy.config`), so the
reference cannot drift from what ``-S key=value`` accepts. A field's help is the comment on its
line in the class source (``budget_kimg: float = 100.0  # images per generation``); a field
without one is listed with ``-``. The ``model`` section lists the options of the resolved
config's family; ``-S model.family=NAME`` lists another family's.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class Option:
    """One ``-S`` key: ``key`` (``train.budget_kimg``), its type hint as text, default and help."""

    key: str
    type: str
    default: Any
    help: str


def options(cfg) -> list[Option]:
    """Every option of the experiment config ``cfg`` (sections recursively; the model section of its family)."""
    return list(_walk(cfg, ""))


def format_reference(cfg) -> str:
    """One line per option: ``key  type  default  help``, in aligned columns."""
    rows = [(o.key, o.type, _text(o.default), o.help) for o in options(cfg)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{k:<{widths[0]}}  {t:<{widths[1]}}  {d:<{widths[2]}}  {h}" for k, t, d, h in rows]
    header = (
        f"# every option of `-S KEY=VALUE` (model: the options of model.family={cfg.model.family}; "
        "-S model.family=NAME --list shows another family's)"
    )
    return "\n".join([header, *lines]) + "\n"


def _walk(instance, prefix: str):
    cls = type(instance)
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    for field in dataclasses.fields(cls):
        value = getattr(instance, field.name)
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            yield from _walk(value, f"{key}.")
            continue
        default = _default(cls, field)
        yield Option(key, _type_text(hints[field.name]), default, comments.get(field.name, "-"))


def _default(cls, field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _type_text(hint: Any) -> str:
    return (getattr(hint, "__name__", None) if not typing.get_args(hint) else None) or str(hint).replace("typing.", "")


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@cache
def _field_comments(cls: type) -> dict[str, str]:
    """``field -> the comment on its line`` for the fields ``cls`` and its bases declare."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # defined where no source is kept (an interactive session)
            continue
        on_line = {
            tok.start[0]: tok.string.lstrip("# ").strip()
            for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT
        }
        body = ast.parse(source).body[0].body
        for node in body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.lineno in on_line:
                comments[node.target.id] = on_line[node.lineno]
    return comments
