"""The errors of a configuration and the range checks every section's ``validate`` uses.

Each check raises :class:`ConfigError` naming the option (``model.num_steps``) and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


class ConfigWarning(UserWarning):
    """A legal but probably unintended setting (e.g. an EMA that cannot move within a generation)."""


def choice(option: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


def positive(option: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{option} must be a finite number > 0, got {value}")


def non_negative(option: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"{option} must be a finite number >= 0, got {value}")


def finite(option: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{option} must be a finite number, got {value}")
