"""The whole experiment (:class:`ExperimentConfig`): its sections and the checks across them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from autophagy.config.checks import ConfigError, ConfigWarning
from autophagy.config.coerce import parsed_by
from autophagy.config.families import FAMILIES, ModelConfig, default_model, model_section
from autophagy.config.lambdas import check_lambda, real_items_bound
from autophagy.config.sections import (
    TEXT_SOURCES,
    DataConfig,
    EvaluateConfig,
    LoopConfig,
    SampleConfig,
    TrackingConfig,
    TrainConfig,
)

#: The sources of vector data; :data:`~autophagy.config.sections.TEXT_SOURCES` give token rows, the others images.
VECTOR_SOURCES = ("toy2d", "gaussian")
#: What each data kind is, in errors.
KIND_WORDS = {"image": "image", "vector": "vector", "text": "text (token rows)"}


def data_kind(source: str) -> str:
    """The kind of rows ``data.source`` gives: ``vector`` (toy2d, gaussian), ``text`` (TEXT_SOURCES) or ``image``."""
    if source in VECTOR_SOURCES:
        return "vector"
    return "text" if source in TEXT_SOURCES else "image"


def _kind_mismatch(family: str, family_kind: str, source: str, kind: str) -> str:
    """The error of a family trained on another kind of data than ``data.source`` gives."""
    fitting = " or ".join(sorted(f.name for f in FAMILIES.values() if f.kind == kind))
    if family_kind == "vector" and kind == "image":  # the messages of before text existed
        return f"model.family={family} needs vector data (data.source toy2d or gaussian), got data.source={source}"
    if family_kind == "image" and kind == "vector":
        return f"model.family={family} needs image data; data.source={source} gives vectors (use {fitting})"
    return (
        f"model.family={family} needs {KIND_WORDS[family_kind]} data; data.source={source} "
        f"gives {KIND_WORDS[kind]} data (use {fitting})"
    )


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: one model family on one data set over a grid of lambdas and seeds."""

    name: str = "digits-edm"  # the experiment: its run directory runs/<name> and its MLflow experiment
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=default_model, metadata=parsed_by(model_section))
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> ExperimentConfig:
        if not (self.name[:1].isalnum() and self.name.isascii() and all(c.isalnum() or c in "._-" for c in self.name)):
            raise ConfigError(
                "name must be one folder name (it is the run directory runs/<name>): ASCII letters, "
                f"digits, '.', '_' and '-', starting with a letter or digit; got {self.name!r}"
            )
        for section in (self.data, self.model, self.train, self.sample, self.evaluate, self.loop, self.tracking):
            section.validate()
        n_real, known_from = real_items_bound(self)
        for lam in self.loop.lambdas:
            check_lambda(lam, option="loop.lambdas", n_real=n_real, n_from=known_from)
        family = FAMILIES[self.model.family]
        if family.ema:  # e.g. the closed-form gaussian family has none
            self.train.warn_if_ema_is_stale()
        kind = data_kind(self.data.source)
        vector_data = kind == "vector"
        if kind != family.kind:
            raise ConfigError(_kind_mismatch(self.model.family, family.kind, self.data.source, kind))
        if (kind == "text") != (self.evaluate.features == "minilm"):
            raise ConfigError(
                f"evaluate.features={self.evaluate.features} does not fit data.source={self.data.source}: "
                "text data is compared as sentence embeddings (evaluate.features=minilm), and only text data is"
            )
        if vector_data and self.evaluate.features != "raw":
            raise ConfigError(
                f"evaluate.features={self.evaluate.features} needs images; vector data uses evaluate.features=raw"
            )
        if self.loop.correction is not None and not vector_data:
            raise ConfigError(f"loop.correction={self.loop.correction} is built for vector data (toy2d, gaussian)")
        if kind != "image" and (self.train.xflip or self.train.channels_last):
            option = "train.xflip" if self.train.xflip else "train.channels_last"
            what = "vectors" if vector_data else "token rows (text)"
            raise ConfigError(
                f"{option}=true applies to images; data.source={self.data.source} gives {what}: set {option}=false"
            )
        if self.train.xflip and self.data.source == "digits":
            warnings.warn(
                "train.xflip=true flips digits horizontally (a mirrored 2 is no digit): the model learns "
                "mirrored digits the metrics count as errors",
                ConfigWarning,
                stacklevel=2,
            )
        curating = self.sample.curation_k > 1
        if curating and self.sample.curation_reward == "digits-confidence" and self.evaluate.features != "digits-net":
            raise ConfigError(
                "sample.curation_reward=digits-confidence uses the digits-net: set evaluate.features=digits-net"
            )
        if curating and self.sample.curation_reward == "toy-nearest-real" and not vector_data:
            raise ConfigError("sample.curation_reward=toy-nearest-real needs vector data (toy2d, gaussian)")
        from autophagy.data.strategies import STRATEGIES  # numpy: imported when a config is validated

        if STRATEGIES[self.loop.strategy].fresh_real and self.data.n_train is None:
            raise ConfigError(
                f"loop.strategy={self.loop.strategy} draws data.n_train new real items per generation "
                "from the training split: set data.n_train below the split's size"
            )
        if self.evaluate.features == "digits-net" and self.data.source != "digits":
            raise ConfigError(
                "evaluate.features=digits-net is trained on sklearn's digits; use it with data.source=digits"
            )
        return self
