"""Model families behind one interface (:class:`~autophagy.models.base.GenerativeModel`)."""

from __future__ import annotations

from autophagy.models.base import GenerativeModel, ModelError, TrainingDivergedError, TrainReport


def family_class(family: str) -> type[GenerativeModel]:
    """The class of a family; imported lazily so that ``gaussian`` never imports zuko or diffusers."""
    if family == "gaussian":
        from autophagy.models.gaussian import GaussianModel as cls
    elif family == "flow":
        from autophagy.models.flow import FlowModel as cls
    elif family == "edm":
        from autophagy.models.edm import EDMModel as cls
    elif family == "ddpm":
        from autophagy.models.ddpm import DDPMModel as cls
    elif family == "otcfm":
        from autophagy.models.otcfm import OTCFMModel as cls
    else:
        raise ModelError(f"unknown model family {family!r}")
    return cls


def build_model(cfg, item_shape: tuple[int, ...]) -> GenerativeModel:
    """A freshly initialised model of ``cfg.family`` for rows of shape ``item_shape``."""
    return family_class(cfg.family)(cfg, item_shape)


__all__ = ["GenerativeModel", "ModelError", "TrainingDivergedError", "TrainReport", "build_model", "family_class"]
