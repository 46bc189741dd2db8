"""Typed, frozen experiment configuration: the one source of defaults.

An experiment is an :class:`ExperimentConfig`. It is loaded from YAML (``configs/*.yaml``),
validated where it enters (ranges, choices, incompatible combinations; every message names the
option and what is allowed), overridden with ``key.path=value`` strings from the CLI or
``params.yaml``, and written beside every run's outputs (:func:`to_dict`).

The CLI, ``params.yaml`` and the Kubeflow pipeline parameters are all derived from these
dataclasses, so they cannot drift. The modules, one job each:

* :mod:`.checks`: :class:`ConfigError`, :class:`ConfigWarning` and the range checks;
* :mod:`.coerce`: plain data to dataclasses by type hint, special fields by metadata (:func:`parsed_by`);
* :mod:`.registry`: the registries of model families, loop strategies and metrics;
* :mod:`.families`: the family registry (:data:`FAMILIES`) and the base of every model config;
* :mod:`.models`: the built-in families' configs and registrations;
* :mod:`.sections`: data, train, sample, evaluate, loop, tracking;
* :mod:`.experiment`: :class:`ExperimentConfig` and its checks across sections;
* :mod:`.lambdas`: parsing, checking and writing lambda;
* :mod:`.loading`: YAML files, overrides, plain data and flat keys in and out.

Lists derived from the registries (``MODEL_CONFIGS``, ``IMAGE_FAMILIES``, ``STRATEGIES``,
``COLLAPSE_METRIC_PREFIXES``) are computed when read, so they include families, strategies and
metrics registered later.
"""

from __future__ import annotations

from typing import Any

from autophagy.config.checks import ConfigError, ConfigWarning
from autophagy.config.coerce import build_section, parsed_by
from autophagy.config.experiment import ExperimentConfig
from autophagy.config.families import DEFAULT_FAMILY, FAMILIES, Family, ModelConfig, register_family
from autophagy.config.lambdas import (
    FIXED_TRAIN_SPLIT_ROWS,
    MAX_SYNTHETIC_SAMPLES,
    NO_LAMBDA,
    chain_lambda,
    check_lambda,
    format_lambda,
    format_lambdas,
    parse_lambda,
    real_items_bound,
)
from autophagy.config.loading import (
    apply_override,
    flatten,
    flatten_dict,
    from_dict,
    load_config,
    read_yaml_mapping,
    to_dict,
    to_json,
)
from autophagy.config.models import (
    DDPM_SAMPLERS,
    DDPM_VARIANCES,
    OTCFM_SAMPLERS,
    CausalLMModelConfig,
    DDPMModelConfig,
    EDMModelConfig,
    FlowModelConfig,
    GaussianModelConfig,
    ImageNetworkConfig,
    OTCFMModelConfig,
)
from autophagy.config.sections import (
    DATA_SOURCES,
    EMA_STALE_WEIGHT,
    FEATURE_EXTRACTORS,
    FINETUNE_FROM,
    LR_SCHEDULES,
    PRECISIONS,
    TOY2D_NAMES,
    DataConfig,
    EvaluateConfig,
    LoopConfig,
    SampleConfig,
    TrackingConfig,
    TrainConfig,
    ema_start_weight,
)

__all__ = [
    "apply_override",
    "build_section",
    "CausalLMModelConfig",
    "chain_lambda",
    "check_lambda",
    "COLLAPSE_METRIC_PREFIXES",
    "ConfigError",
    "ConfigWarning",
    "DATA_SOURCES",
    "DataConfig",
    "DDPM_SAMPLERS",
    "DDPM_VARIANCES",
    "DDPMModelConfig",
    "DEFAULT_FAMILY",
    "EDMModelConfig",
    "EMA_STALE_WEIGHT",
    "ema_start_weight",
    "EvaluateConfig",
    "ExperimentConfig",
    "FAMILIES",
    "Family",
    "FEATURE_EXTRACTORS",
    "FINETUNE_FROM",
    "FIXED_TRAIN_SPLIT_ROWS",
    "flatten",
    "flatten_dict",
    "FlowModelConfig",
    "format_lambda",
    "format_lambdas",
    "from_dict",
    "GaussianModelConfig",
    "IMAGE_FAMILIES",
    "ImageNetworkConfig",
    "load_config",
    "LoopConfig",
    "LR_SCHEDULES",
    "MAX_SYNTHETIC_SAMPLES",
    "MODEL_CONFIGS",
    "ModelConfig",
    "NO_LAMBDA",
    "OTCFM_SAMPLERS",
    "OTCFMModelConfig",
    "parse_lambda",
    "parsed_by",
    "PRECISIONS",
    "read_yaml_mapping",
    "real_items_bound",
    "register_family",
    "SampleConfig",
    "STRATEGIES",
    "to_dict",
    "to_json",
    "TOY2D_NAMES",
    "TrackingConfig",
    "TrainConfig",
]


def __getattr__(name: str) -> Any:
    """The lists derived from the registries, as of now."""
    if name == "MODEL_CONFIGS":
        return {family.name: family.config for family in FAMILIES.values()}
    if name == "IMAGE_FAMILIES":
        return tuple(family.name for family in FAMILIES.values() if family.kind == "image")
    if name == "STRATEGIES":
        from autophagy.data.strategies import STRATEGIES

        return tuple(STRATEGIES)
    if name == "COLLAPSE_METRIC_PREFIXES":
        from autophagy.metric_keys import METRICS

        return tuple(f"{metric}_" for metric in METRICS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
