"""Model families behind one interface (:class:`~autophagy.models.base.GenerativeModel`).

The families are registered in :data:`autophagy.config.FAMILIES`; each model class is imported
only when its family is used, so that ``gaussian`` never imports zuko or diffusers.
"""

from __future__ import annotations

from autophagy.config import FAMILIES
from autophagy.models.base import GenerativeModel, ModelError, TrainingDivergedError, TrainReport


def family_class(family: str) -> type[GenerativeModel]:
    """The model class of the registered family ``family``."""
    return FAMILIES[family].model_class()


def build_model(cfg, item_shape: tuple[int, ...]) -> GenerativeModel:
    """A freshly initialised model of ``cfg.family`` for rows of shape ``item_shape``."""
    return family_class(cfg.family)(cfg, item_shape)


__all__ = ["GenerativeModel", "ModelError", "TrainingDivergedError", "TrainReport", "build_model", "family_class"]
