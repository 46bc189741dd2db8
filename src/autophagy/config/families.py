"""The model-family registry: each family's config class, model class, data kind and pretrained
formats, registered once beside its config (:mod:`autophagy.config.models`).

Everything that used to keep its own list of families reads :data:`FAMILIES`: config loading and
validation (``model.family``, image vs vector data, EMA warnings), :func:`autophagy.models.build_model`,
checkpoints, the pretrained starts (:mod:`autophagy.models.pretrained`) and ``benchmarks/bench_families.py``.
A family's model class is named as ``"module:Class"`` and imported on first use, so that loading
a config never imports torch (or a family's own dependencies, zuko or diffusers).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from autophagy.config.checks import ConfigError
from autophagy.config.coerce import build_section
from autophagy.config.registry import Registry

KINDS = ("image", "vector", "text")
#: The family of a ``model:`` section that names none.
DEFAULT_FAMILY = "edm"


@dataclass(frozen=True)
class ModelConfig:
    """The ``model:`` section. Each family's config subclasses it, with
    ``family: Literal["<name>"] = "<name>"``, its options (all with defaults) and ``validate``."""

    family: str = ""  # the model family, a name registered in FAMILIES; the model.* options below are its own

    def validate(self) -> None:
        """Range checks of the family's options; errors name ``model.<option>``."""


@dataclass(frozen=True)
class Family:
    """One model family.

    ``model``: the :class:`~autophagy.models.base.GenerativeModel` subclass, or ``"module:Class"``
    (imported on first use). ``kind``: ``image`` (uint8 ``[N, H, W, C]``), ``vector`` (float ``[N, D]``)
    or ``text`` (int32 token ids ``[N, L]``, :mod:`autophagy.data.text`) data.
    ``pretrained_formats``: the foreign checkpoint formats ``train.init_checkpoint`` may convert
    (:data:`autophagy.models.pretrained.CONVERTERS`). ``ema``: the model keeps an EMA of its
    weights (``train.ema_halflife_kimg`` applies). ``paper_config``: the config of the paper's
    network, relative to the repository (``benchmarks/bench_families.py --paper``).
    """

    name: str
    config: type[ModelConfig]
    model: type | str
    kind: Literal["image", "vector", "text"]
    pretrained_formats: tuple[str, ...] = ()
    ema: bool = True
    paper_config: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"family {self.name}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not (isinstance(self.config, type) and issubclass(self.config, ModelConfig)):
            raise ConfigError(f"family {self.name}: config must be a ModelConfig subclass, got {self.config!r}")
        if self.config().family != self.name:
            raise ConfigError(
                f"family {self.name}: {self.config.__name__}.family defaults to "
                f"{self.config().family!r}, not {self.name!r}"
            )
        if isinstance(self.model, str) and ":" not in self.model:
            raise ConfigError(f"family {self.name}: model must be a class or 'module:Class', got {self.model!r}")

    def model_class(self) -> type:
        """The model class (imported now if it was given as ``"module:Class"``)."""
        cls = self.model
        if isinstance(cls, str):
            module, _, attribute = cls.partition(":")
            cls = getattr(importlib.import_module(module), attribute)
        if getattr(cls, "family", None) != self.name or getattr(cls, "kind", None) != self.kind:
            declared = f"family={getattr(cls, 'family', None)!r}, kind={getattr(cls, 'kind', None)!r}"
            raise ConfigError(
                f"family {self.name}: {cls.__name__} declares {declared}; "
                f"its registration says {self.name!r}, {self.kind!r}"
            )
        return cls


#: Every model family, by name.
FAMILIES: Registry[Family] = Registry("model.family")


def register_family(family: Family) -> Family:
    """Register a model family (see docs/extending.md)."""
    return FAMILIES.register(family)


def model_section(raw: Any, option: str = "model") -> ModelConfig:
    """The ``model:`` section as the config class of its ``family`` (default :data:`DEFAULT_FAMILY`)."""
    if isinstance(raw, ModelConfig):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{option} must be a mapping, got {raw!r}")
    return build_section(FAMILIES[raw.get("family", DEFAULT_FAMILY)].config, raw, option)


def default_model() -> ModelConfig:
    """The model section of a config that has none: :data:`DEFAULT_FAMILY` with its defaults."""
    return FAMILIES[DEFAULT_FAMILY].config()
