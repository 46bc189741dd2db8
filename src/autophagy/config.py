"""Typed, frozen experiment configuration: the one source of defaults.

An experiment is an :class:`ExperimentConfig`. It is loaded from YAML (``configs/*.yaml``),
validated where it enters (ranges, choices, incompatible combinations; every message names the
option and what is allowed), overridden with ``key.path=value`` strings from the CLI or
``params.yaml``, and written beside every run's outputs (:func:`to_dict`).

The CLI, ``params.yaml`` and the Kubeflow pipeline parameters are all derived from these
dataclasses, so they cannot drift.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

DATA_SOURCES = ("digits", "toy2d", "gaussian", "cifar10", "image-folder")
TOY2D_NAMES = ("8gaussians", "moons", "spiral")


@dataclass(frozen=True)
class DataConfig:
    """Where the real data D_real comes from.

    ``n_train`` items of the training split form D_real (n in the paper); ``None`` keeps the
    whole split. ``toy2d`` and ``gaussian`` are drawn with ``seed`` (sizes ``n_train`` and
    ``n_test``); ``digits`` and ``cifar10`` have fixed splits and ``seed`` only picks a subset.
    """

    source: str = "digits"
    name: str = ""  # toy2d: one of TOY2D_NAMES
    n_train: int | None = None
    n_test: int | None = None
    dim: int = 2  # gaussian: dimension d of N(mean, std^2 I)
    mean: float = 0.0  # gaussian
    std: float = 1.0  # gaussian
    path: str | None = None  # image-folder: folder or .zip; cifar10: download/cache root
    resolution: int | None = None  # image-folder: square resize (None: keep, all must match)
    test_fraction: float = 0.1  # image-folder: share of files held out as the test split
    n_pool: int | None = None  # loop.strategy=fresh-real: real pool size (None: whole split; toy/gaussian: 10 n_train)
    seed: int = 0

    def validate(self) -> None:
        _choice("data.source", self.source, DATA_SOURCES)
        if self.source == "toy2d":
            _choice("data.name", self.name, TOY2D_NAMES)
        if self.source == "image-folder" and not self.path:
            raise ConfigError("data.path is required for data.source=image-folder (a folder or .zip of PNG/JPEG files)")
        for key in ("n_train", "n_test", "n_pool"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"data.{key} must be a positive integer or null, got {value}")
        if self.source in ("toy2d", "gaussian") and (self.n_train is None or self.n_test is None):
            raise ConfigError(f"data.n_train and data.n_test are required for data.source={self.source}")
        _positive("data.dim", self.dim)
        _finite("data.mean", self.mean)
        _positive("data.std", self.std)
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class GaussianModelConfig:
    """Closed-form maximum-likelihood fit of N(mu, diag(sigma^2)) (the paper's warm-up, Sec. 3)."""

    family: Literal["gaussian"] = "gaussian"
    estimator: str = "mle"  # mle (divide by n) | unbiased (divide by n - 1)

    def validate(self) -> None:
        _choice("model.estimator", self.estimator, ("mle", "unbiased"))


@dataclass(frozen=True)
class FlowModelConfig:
    """Neural spline flow for vectors (Durkan et al. 2019), built with ``zuko``."""

    family: Literal["flow"] = "flow"
    transforms: int = 4
    hidden_features: tuple[int, ...] = (64, 64)
    bins: int = 8

    def validate(self) -> None:
        _positive("model.transforms", self.transforms)
        _positive("model.bins", self.bins)
        if not self.hidden_features or min(self.hidden_features) < 1:
            raise ConfigError(f"model.hidden_features must be positive widths, got {self.hidden_features}")


@dataclass(frozen=True)
class EDMModelConfig:
    """EDM (Karras et al. 2022): preconditioning, loss and Heun sampler, with a UNet.

    ``network`` picks F: ``unet`` (DDPM++, the paper's; ``model_channels``, ``channel_mult``,
    ``num_blocks``, ``attn_resolutions``) or ``mlp`` (a residual MLP of width ``model_channels``
    and depth ``num_blocks``, for tiny images on CPU). The defaults are the CPU preset for 8x8
    digits; ``configs/cifar10-edm.yaml`` and ``configs/ffhq64-edm.yaml`` hold the paper's networks.
    """

    family: Literal["edm"] = "edm"
    network: str = "mlp"
    model_channels: int = 256
    channel_mult: tuple[int, ...] = (1, 2)
    num_blocks: int = 3
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    P_mean: float = -1.2
    P_std: float = 1.2
    rho: float = 7.0
    num_steps: int = 18  # Heun steps; 2 * num_steps - 1 network evaluations
    S_churn: float = 0.0

    def validate(self) -> None:
        _validate_image_network(self)
        _positive("model.num_steps", self.num_steps)
        if not (0.0 < self.sigma_min < self.sigma_max and math.isfinite(self.sigma_max)):
            raise ConfigError(f"need 0 < model.sigma_min < model.sigma_max, got {self.sigma_min}, {self.sigma_max}")
        _positive("model.sigma_data", self.sigma_data)
        _finite("model.P_mean", self.P_mean)
        _positive("model.P_std", self.P_std)
        _positive("model.rho", self.rho)
        _non_negative("model.S_churn", self.S_churn)


def _validate_image_network(cfg: Any) -> None:
    """The network options shared by the image families (edm, ddpm, otcfm)."""
    _choice("model.network", cfg.network, ("unet", "mlp"))
    _positive("model.model_channels", cfg.model_channels)
    _positive("model.num_blocks", cfg.num_blocks)
    if not cfg.channel_mult or min(cfg.channel_mult) < 1:
        raise ConfigError(f"model.channel_mult must be positive multipliers, got {cfg.channel_mult}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.dropout}")


DDPM_SAMPLERS = ("ancestral", "ddim")
DDPM_VARIANCES = ("fixed_large", "fixed_small")


@dataclass(frozen=True)
class DDPMModelConfig:
    """DDPM (Ho, Jain, Abbeel 2020): epsilon prediction on a linear beta schedule, ancestral or DDIM sampling.

    ``network`` is ``unet`` (Ho et al.'s CIFAR-10 UNet through diffusers' ``UNet2DModel``:
    ``model_channels``, ``channel_mult``, ``num_blocks`` residual blocks per level,
    ``attn_resolutions``, one attention head) or ``mlp`` (the residual MLP, for 8x8 images on CPU).
    ``sampler=ancestral`` runs Ho et al.'s Alg. 2 with variance ``ancestral_variance``
    (``fixed_large``: sigma_t^2 = beta_t, Ho's CIFAR-10 choice; ``fixed_small``: the posterior
    variance); ``sampler=ddim`` runs Song, Meng, Ermon (2021) Eq. 12 with ``eta``. Both use
    ``num_steps`` evenly spaced timesteps. The defaults are the CPU preset for 8x8 digits;
    ``configs/cifar10-ddpm.yaml`` holds the paper's network.
    """

    family: Literal["ddpm"] = "ddpm"
    network: str = "mlp"
    model_channels: int = 256
    channel_mult: tuple[int, ...] = (1, 2)
    num_blocks: int = 3
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sampler: str = "ddim"
    num_steps: int = 50
    eta: float = 0.0  # DDIM only: 0 deterministic, 1 the DDPM posterior variance
    ancestral_variance: str = "fixed_large"
    clip_denoised: bool = True  # clip the predicted x_0 to [-1, 1] while sampling (Ho et al.'s sampler)

    def validate(self) -> None:
        _validate_image_network(self)
        _positive("model.num_train_timesteps", self.num_train_timesteps)
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ConfigError(f"need 0 < model.beta_start < model.beta_end < 1, got {self.beta_start}, {self.beta_end}")
        _choice("model.sampler", self.sampler, DDPM_SAMPLERS)
        if not 1 <= self.num_steps <= self.num_train_timesteps:
            raise ConfigError(f"model.num_steps must be in [1, model.num_train_timesteps={self.num_train_timesteps}], "
                              f"got {self.num_steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"model.eta must be in [0, 1], got {self.eta}")
        _choice("model.ancestral_variance", self.ancestral_variance, DDPM_VARIANCES)


OTCFM_SAMPLERS = ("euler", "midpoint", "dopri5")


@dataclass(frozen=True)
class OTCFMModelConfig:
    """Minibatch OT conditional flow matching (Tong et al. 2023, TMLR 2024; torchcfm's ``otcfm``).

    x_t = t x1 + (1 - t) x0 + sigma eps with x0 ~ N(0, I) re-paired to the data batch x1 by the
    exact minibatch OT plan (``coupling=ot``) or left independent (``coupling=independent``:
    I-CFM); the network regresses u_t = x1 - x0. ``network`` is ``unet`` (torchcfm's CIFAR-10
    UNet through diffusers' ``UNet2DModel``, attention heads of ``head_channels``) or ``mlp``.
    Samples integrate dx/dt = v(x, t) from t = 0 to 1 with ``euler`` or ``midpoint``
    (``num_steps`` steps) or adaptive ``dopri5`` (tolerance ``tol``). The defaults are the CPU
    preset for 8x8 digits; ``configs/cifar10-otcfm.yaml`` holds torchcfm's CIFAR-10 network.
    """

    family: Literal["otcfm"] = "otcfm"
    network: str = "mlp"
    model_channels: int = 256
    channel_mult: tuple[int, ...] = (1, 2)
    num_blocks: int = 3
    attn_resolutions: tuple[int, ...] = ()
    head_channels: int = 64
    dropout: float = 0.0
    sigma: float = 0.0
    coupling: str = "ot"
    sampler: str = "euler"
    num_steps: int = 50
    tol: float = 1e-5  # dopri5 atol and rtol

    def validate(self) -> None:
        _validate_image_network(self)
        _positive("model.head_channels", self.head_channels)
        widths = [self.model_channels * mult for mult in self.channel_mult]
        if self.network == "unet" and any(width % self.head_channels for width in widths):
            raise ConfigError(f"model.head_channels={self.head_channels} must divide every level's width "
                              f"(model_channels x channel_mult = {widths}) into whole attention heads")
        _non_negative("model.sigma", self.sigma)
        _choice("model.coupling", self.coupling, ("ot", "independent"))
        _choice("model.sampler", self.sampler, OTCFM_SAMPLERS)
        _positive("model.num_steps", self.num_steps)
        _positive("model.tol", self.tol)


ModelConfig = Union[GaussianModelConfig, FlowModelConfig, EDMModelConfig, DDPMModelConfig, OTCFMModelConfig]
MODEL_CONFIGS: dict[str, type] = {
    "gaussian": GaussianModelConfig,
    "flow": FlowModelConfig,
    "edm": EDMModelConfig,
    "ddpm": DDPMModelConfig,
    "otcfm": OTCFMModelConfig,
}
IMAGE_FAMILIES = ("edm", "ddpm", "otcfm")


FINETUNE_FROM = ("net", "ema")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
#: Validation warns when the EMA would still weigh its starting point by more than this after a generation.
EMA_STALE_WEIGHT = 0.9


class ConfigWarning(UserWarning):
    """A legal but probably unintended setting (e.g. an EMA that cannot move within a generation)."""


def ema_start_weight(budget_kimg: float, halflife_kimg: float) -> float:
    """The weight an EMA with half-life ``halflife_kimg`` still gives its starting point after
    ``budget_kimg`` thousand images: 0.5 ** (budget / halflife) (0 when there is no EMA, half-life 0)."""
    if halflife_kimg <= 0:
        return 0.0
    return 0.5 ** (budget_kimg / halflife_kimg)


@dataclass(frozen=True)
class TrainConfig:
    """How each generation is trained: a budget in images seen, optimiser, EMA, initialisation.

    Generation 0 trains on D_real from scratch (``gen0_budget_kimg``) or starts from
    ``init_checkpoint`` and fine-tunes it for ``gen0_budget_kimg`` (0: used as it is);
    generation t >= 1 fine-tunes generation t-1 (``init=previous``, the
    paper's protocol) or retrains from scratch (``init=scratch``) for ``budget_kimg``.

    The fine-tuning protocol (what happens at the generation boundary,
    :meth:`autophagy.models.torch_model.TorchGenerativeModel.start_generation`): the trained
    network starts from generation t-1's trained network (``finetune_from=net``: the previous
    training run continues on the new data) or from its EMA, the weights that were sampled
    (``finetune_from=ema``: what resuming EDM's reference code from a network snapshot does, those
    pickles hold only the EMA). The EMA continues from t-1's EMA (``carry_ema=true``) or restarts
    as a copy of the starting weights (``false``); Adam's moments carry over or reset
    (``carry_optimizer``). The image counter restarts, so ``lr_warmup_kimg`` of linear warmup and
    the ``lr_schedule`` (``constant``, or ``cosine`` decay to ``lr_min_ratio * lr`` at the end of
    the generation's budget) restart every generation (:func:`~autophagy.models.torch_model.learning_rate`).
    After a generation of ``budget_kimg`` the EMA still weighs its starting point by
    0.5 ** (budget_kimg / ema_halflife_kimg): validation warns when that exceeds 0.9.

    Speed (none of these changes the maths): ``precision`` (``auto``: bf16 autocast of the forward
    pass and loss on CUDA for the image families, fp32 otherwise; weights, EMA and Adam stay
    fp32), ``channels_last`` (null = auto: on CUDA for the image families), ``compile``
    (``torch.compile`` of the trained network's forward; the EMA and checkpoints are never the
    compiled wrapper). ``xflip`` flips each training image horizontally with probability 1/2 on
    the device (image families; never for digits). Multi-GPU data parallelism comes from the
    launcher (``torchrun --nproc_per_node=N -m autophagy.cli train ...``), not from this config:
    ``batch_size`` is then the global batch, split evenly across the processes.
    """

    budget_kimg: float = 100.0
    gen0_budget_kimg: float | None = None  # None: same as budget_kimg
    batch_size: int = 128
    lr: float = 1e-3
    lr_warmup_kimg: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float | None = None
    ema_halflife_kimg: float = 10.0
    init: str = "previous"  # previous | scratch
    # generation 0 from a checkpoint: an autophagy checkpoint directory, or a pretrained one (a path, an
    # http(s) URL with an optional #sha256=<hex>, or hf://owner/name) converted by autophagy.models.pretrained
    init_checkpoint: str | None = None
    carry_optimizer: bool = True  # fine-tuning: keep Adam moments from generation t-1
    carry_ema: bool = True  # fine-tuning: the EMA continues from t-1's EMA (false: restarts from the starting weights)
    finetune_from: str = "net"  # net | ema: the weights generation t's training starts from
    lr_schedule: str = "constant"  # constant | cosine (after warmup, to lr_min_ratio * lr over the generation)
    lr_min_ratio: float = 0.0  # cosine: the final learning rate as a fraction of lr
    checkpoint_every_kimg: float = 50.0  # resumable train_state cadence
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 (auto: bf16 autocast on CUDA for image families, else fp32)
    channels_last: bool | None = None  # image families; null: true on CUDA, false on CPU
    compile: bool = False  # torch.compile the trained network's forward
    xflip: bool = False  # image families: random horizontal flips on the device (p = 0.5 per image)

    def validate(self) -> None:
        _positive("train.budget_kimg", self.budget_kimg)
        if self.gen0_budget_kimg is not None:
            _non_negative("train.gen0_budget_kimg", self.gen0_budget_kimg)
            if self.gen0_budget_kimg == 0 and not self.init_checkpoint:
                raise ConfigError("train.gen0_budget_kimg=0 (generation 0 is not trained) needs train.init_checkpoint")
        _positive("train.batch_size", self.batch_size)
        _positive("train.lr", self.lr)
        _non_negative("train.lr_warmup_kimg", self.lr_warmup_kimg)
        _non_negative("train.weight_decay", self.weight_decay)
        if self.grad_clip is not None:
            _positive("train.grad_clip", self.grad_clip)
        _non_negative("train.ema_halflife_kimg", self.ema_halflife_kimg)
        _choice("train.init", self.init, ("previous", "scratch"))
        _positive("train.checkpoint_every_kimg", self.checkpoint_every_kimg)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _choice("train.finetune_from", self.finetune_from, FINETUNE_FROM)
        _choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ConfigError(f"train.lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")
        _choice("train.precision", self.precision, PRECISIONS)

    def warn_if_ema_is_stale(self) -> None:
        """Warn when a generation's budget barely moves the EMA (the sampled model) off its start."""
        for budget_option, budget in (("train.budget_kimg", self.budget_kimg),
                                      ("train.gen0_budget_kimg", self.first_budget_kimg)):
            kept = ema_start_weight(budget, self.ema_halflife_kimg)
            if budget > 0 and kept > EMA_STALE_WEIGHT:
                warnings.warn(
                    f"train.ema_halflife_kimg={self.ema_halflife_kimg:g} is long for {budget_option}={budget:g}: after "
                    f"the generation the EMA (the sampled model) still weighs its starting point by "
                    f"0.5 ** ({budget:g} / {self.ema_halflife_kimg:g}) = {kept:.2f} and barely moves; a half-life of "
                    f"at most {budget / 3:.3g} kimg (budget / 3) lets it follow the training",
                    ConfigWarning, stacklevel=4)
                break

    @property
    def first_budget_kimg(self) -> float:
        return self.budget_kimg if self.gen0_budget_kimg is None else self.gen0_budget_kimg


@dataclass(frozen=True)
class SampleConfig:
    """Sampling: batch size and the number of samples kept per generation for evaluation."""

    batch_size: int = 1024
    n_eval: int = 2000  # samples per generation for the metrics (50k in the paper)
    # Sampling bias (Alemohammad et al. 2024): the base noise is scaled by the temperature;
    # < 1 trades diversity for fidelity (like truncation), 1 is unbiased sampling.
    temperature: float = 1.0
    # Curation (Ferbach et al. 2024): keep 1 of curation_k candidates with probability
    # proportional to exp(r(x) / curation_beta); curation_k = 1 disables it.
    curation_k: int = 1
    curation_beta: float = 1.0
    curation_reward: str = "digits-confidence"  # digits-confidence | toy-nearest-real

    def validate(self) -> None:
        _positive("sample.temperature", self.temperature)
        _positive("sample.curation_k", self.curation_k)
        _positive("sample.curation_beta", self.curation_beta)
        _choice("sample.curation_reward", self.curation_reward, ("digits-confidence", "toy-nearest-real"))
        _positive("sample.batch_size", self.batch_size)
        _positive("sample.n_eval", self.n_eval)


FEATURE_EXTRACTORS = ("raw", "digits-net", "inception")


@dataclass(frozen=True)
class EvaluateConfig:
    """Metrics per generation: Frechet distance and precision/recall on a feature space."""

    features: str = "digits-net"  # raw | digits-net | inception
    k: int = 3  # k-NN radius for precision/recall (Kynkaanniemi et al. 2019)
    max_reference: int | None = 10000  # cap on reference items (subsampled with the seed)
    inception_weights: str | None = None  # path to clean-fid's inception-2015-12-05.pt
    grid_size: int = 64  # samples in the PNG grid per generation (images only)

    def validate(self) -> None:
        _choice("evaluate.features", self.features, FEATURE_EXTRACTORS)
        _positive("evaluate.k", self.k)
        if self.max_reference is not None:
            _positive("evaluate.max_reference", self.max_reference)
        _non_negative("evaluate.grid_size", self.grid_size)


STRATEGIES = ("replace", "fully-synthetic", "accumulate", "accumulate-subsample", "fresh-real")
COLLAPSE_METRIC_PREFIXES = ("fd_", "swd_", "precision_", "recall_")


@dataclass(frozen=True)
class LoopConfig:
    """The self-consuming recursion (Bertrand et al. 2024, Alg. 1).

    ``lambdas`` are ratios of synthetic to real data (not fractions): generation t >= 1 trains on
    all n real items plus floor(lambda * n) fresh samples of generation t-1; ``inf`` trains on n
    samples of generation t-1 and no real data.
    """

    lambdas: tuple[float, ...] = (0.0, 0.5, 1.0, math.inf)
    seeds: tuple[int, ...] = (0,)
    generations: int = 5  # generations after generation 0
    strategy: str = "replace"
    # Collapse detection: a chain is marked collapsed at the first generation where
    # collapse_metric is worse than at generation 0 by the factor collapse_ratio (larger for
    # fd_*/swd_*, smaller for precision_*/recall_*); null disables it.
    collapse_metric: str = "fd_train"
    collapse_ratio: float | None = None
    stop_on_collapse: bool = False  # skip the chain's remaining generations (locally and in the pipeline)
    # Self-correction (Gillman et al. 2024) of synthetic samples before mixing: null or
    # nearest-real (vectors: move each sample correction_strength of the way to its nearest real item).
    correction: str | None = None
    correction_strength: float = 0.5

    def validate(self) -> None:
        if self.correction is not None:
            _choice("loop.correction", self.correction, ("nearest-real",))
        if not 0.0 <= self.correction_strength <= 1.0:
            raise ConfigError(f"loop.correction_strength must be in [0, 1], got {self.correction_strength}")
        if self.collapse_ratio is not None and not (math.isfinite(self.collapse_ratio) and self.collapse_ratio > 1):
            raise ConfigError(f"loop.collapse_ratio must be a finite factor > 1 or null, got {self.collapse_ratio}")
        if not self.collapse_metric.startswith(COLLAPSE_METRIC_PREFIXES):
            raise ConfigError(f"loop.collapse_metric must start with one of {', '.join(COLLAPSE_METRIC_PREFIXES)}, got {self.collapse_metric!r}")
        if not self.lambdas:
            raise ConfigError("loop.lambdas must list at least one value")
        for lam in self.lambdas:
            check_lambda(lam, option="loop.lambdas")
        if len(set(self.lambdas)) != len(self.lambdas):
            raise ConfigError(f"loop.lambdas has duplicates: {format_lambdas(self.lambdas)}")
        if not self.seeds:
            raise ConfigError("loop.seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"loop.seeds must be distinct non-negative integers, got {list(self.seeds)}")
        _non_negative("loop.generations", self.generations)
        _choice("loop.strategy", self.strategy, STRATEGIES)


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow logging. The tracking URI comes from the standard ``MLFLOW_TRACKING_URI``
    (default: the embedded ``sqlite:///mlflow.db`` in the working directory)."""

    enabled: bool = True
    log_checkpoints: bool = True  # each generation's checkpoint as run artifacts
    log_samples: bool = True  # each generation's sample grid as a run artifact

    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: one model family on one data set over a grid of lambdas and seeds."""

    name: str = "digits-edm"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=EDMModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> "ExperimentConfig":
        if not (self.name[:1].isalnum() and self.name.isascii() and all(c.isalnum() or c in "._-" for c in self.name)):
            raise ConfigError("name must be one folder name (it is the run directory runs/<name>): ASCII letters, digits, "
                              f"'.', '_' and '-', starting with a letter or digit; got {self.name!r}")
        for section in (self.data, self.model, self.train, self.sample, self.evaluate, self.loop, self.tracking):
            section.validate()
        n_real, known_from = real_items_bound(self)
        for lam in self.loop.lambdas:
            check_lambda(lam, option="loop.lambdas", n_real=n_real, n_from=known_from)
        if self.model.family != "gaussian":  # the closed-form family has no EMA
            self.train.warn_if_ema_is_stale()
        vector_data = self.data.source in ("toy2d", "gaussian")
        if vector_data and self.model.family in IMAGE_FAMILIES:
            raise ConfigError(f"model.family={self.model.family} needs image data; data.source={self.data.source} gives "
                              "vectors (use flow or gaussian)")
        if not vector_data and self.model.family in ("flow", "gaussian"):
            raise ConfigError(f"model.family={self.model.family} needs vector data (data.source toy2d or gaussian), got data.source={self.data.source}")
        if vector_data and self.evaluate.features != "raw":
            raise ConfigError(f"evaluate.features={self.evaluate.features} needs images; vector data uses evaluate.features=raw")
        if self.loop.correction is not None and not vector_data:
            raise ConfigError(f"loop.correction={self.loop.correction} is built for vector data (toy2d, gaussian)")
        if vector_data and (self.train.xflip or self.train.channels_last):
            option = "train.xflip" if self.train.xflip else "train.channels_last"
            raise ConfigError(f"{option}=true applies to images; data.source={self.data.source} gives vectors: "
                              f"set {option}=false")
        if self.train.xflip and self.data.source == "digits":
            warnings.warn("train.xflip=true flips digits horizontally (a mirrored 2 is no digit): the model learns "
                          "mirrored digits the metrics count as errors", ConfigWarning, stacklevel=2)
        if self.sample.curation_k > 1 and self.sample.curation_reward == "digits-confidence" and self.evaluate.features != "digits-net":
            raise ConfigError("sample.curation_reward=digits-confidence uses the digits-net: set evaluate.features=digits-net")
        if self.sample.curation_k > 1 and self.sample.curation_reward == "toy-nearest-real" and not vector_data:
            raise ConfigError("sample.curation_reward=toy-nearest-real needs vector data (toy2d, gaussian)")
        if self.loop.strategy == "fresh-real" and self.data.n_train is None:
            raise ConfigError("loop.strategy=fresh-real draws data.n_train new real items per generation from the "
                              "training split: set data.n_train below the split's size")
        if self.evaluate.features == "digits-net" and self.data.source != "digits":
            raise ConfigError("evaluate.features=digits-net is trained on sklearn's digits; use it with data.source=digits")
        return self


# --------------------------------------------------------------------------------------------
# lambda
# --------------------------------------------------------------------------------------------


def parse_lambda(value: Any, option: str = "lambda") -> float:
    """Parse a lambda value: a number >= 0 or ``inf`` (fully synthetic). Errors name ``option``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("inf", "+inf", "infinity", ".inf", "full", "fully-synthetic"):
            return math.inf
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{option}: lambda must be a number >= 0 or 'inf', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{option}: lambda must be a number >= 0 or 'inf', got {value!r}")
    return check_lambda(float(value), option=option)


#: The most synthetic samples, floor(lambda n), one generation may draw. Each generation draws them
#: (every one with its own noise row, indexed by int64) and holds them in memory as one array; 10^8
#: is 2000 times CIFAR-10's training set, 0.8 GB of 2-D vectors, 6.4 GB of 8x8 digits.
MAX_SYNTHETIC_SAMPLES = 10**8
#: Training-split sizes of the sources whose split is fixed (``data.n_train`` unset keeps all of it).
FIXED_TRAIN_SPLIT_ROWS = {"digits": 1497, "cifar10": 50000}


def check_lambda(lam: float, option: str = "lambda", n_real: int | None = None, n_from: str = "") -> float:
    """Reject NaN and negative ratios; ``inf`` is legal (fully synthetic). With ``n_real`` real
    items (``n_from`` says where that number comes from), also a finite lambda whose floor(lambda n)
    synthetic samples exceed :data:`MAX_SYNTHETIC_SAMPLES`."""
    if math.isnan(lam) or lam < 0:
        raise ConfigError(f"{option}: lambda is the ratio |D_synth| / |D_real| and must be >= 0 or inf, got {lam}")
    if n_real is not None and math.isfinite(lam) and lam * n_real > MAX_SYNTHETIC_SAMPLES:
        count = lam * n_real
        raise ConfigError(
            f"{option}: lambda = {format_lambda(lam)} asks for floor(lambda n) = "
            f"{f'{math.floor(count):,}' if math.isfinite(count) else 'over 1e308'} synthetic samples "
            f"per generation with n = {n_real} real items{n_from}; at most {MAX_SYNTHETIC_SAMPLES:,} are allowed, so "
            f"lambda <= {MAX_SYNTHETIC_SAMPLES / n_real:.6g} here (each generation draws them and holds them in memory "
            "as one array). For synthetic data only, use lambda = inf.")
    return lam


def real_items_bound(cfg: "ExperimentConfig") -> tuple[int, str]:
    """n, the real items a generation trains on, as far as it is known before the data is prepared,
    and where that number comes from: ``data.n_train``, a fixed split's size, else the bound 1."""
    if cfg.data.n_train is not None:
        return cfg.data.n_train, " (data.n_train)"
    if cfg.data.source in FIXED_TRAIN_SPLIT_ROWS:
        return FIXED_TRAIN_SPLIT_ROWS[cfg.data.source], f" (the {cfg.data.source} training split)"
    return 1, " (at least 1; the data is not prepared yet)"


def format_lambda(lam: float) -> str:
    """Canonical text of a lambda for paths and tags: ``0``, ``0.5``, ``inf``."""
    if math.isinf(lam):
        return "inf"
    text = f"{lam:g}"
    # ``:g`` keeps 6 significant digits; fall back to the shortest exact text so that two
    # different lambdas never share a run directory (0.1234567 vs 0.1234568).
    return text if float(text) == lam else repr(float(lam))


def format_lambdas(lams: typing.Iterable[float]) -> str:
    return "[" + ", ".join(format_lambda(x) for x in lams) + "]"


# --------------------------------------------------------------------------------------------
# Loading, overriding, dumping
# --------------------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Load ``path`` (YAML; None = the embedded default), apply ``key.path=value`` overrides, validate.

    Two top-level sections are not part of the experiment and are ignored here: ``dvc`` (the
    derived chain in params.yaml, :mod:`autophagy.dvc_params`) and ``cluster`` (Kubeflow
    settings, read by ``autophagy.pipelines``).
    """
    raw = read_yaml_mapping(path)
    for item in overrides:
        if not item.strip().startswith("cluster."):
            apply_override(raw, item)
    raw.pop("dvc", None)
    raw.pop("cluster", None)
    return from_dict(raw)


def read_yaml_mapping(path: str | Path | None) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (``{}`` for None), with clear errors."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in a raw mapping; the value is parsed as YAML (``[0, 1]``, ``inf``)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.option=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def from_dict(raw: typing.Mapping[str, Any]) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from plain data (YAML/JSON)."""
    raw = dict(raw)
    model_raw = dict(raw.get("model") or {})
    family = model_raw.get("family", "edm")
    if family not in MODEL_CONFIGS:
        raise ConfigError(f"model.family must be one of {', '.join(MODEL_CONFIGS)}, got {family!r}")
    raw["model"] = build_section(MODEL_CONFIGS[family], model_raw, "model")
    cfg = build_section(ExperimentConfig, raw, "")
    return cfg.validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, JSON-safe data (``inf`` as the string ``"inf"``); inverse of :func:`from_dict`."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        if isinstance(value, typing.Mapping):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value

    return convert(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 0.001, ...}``: for MLflow params and DVC ``-S`` keys."""
    out: dict[str, Any] = {}
    for key, value in to_dict(cfg).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_dict(value, name + "."))
        else:
            out[name] = value
    return out


def flatten_dict(data: typing.Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        label = f"{where}." if where else ""
        raise ConfigError(f"unknown option(s) {', '.join(label + u for u in unknown)}; allowed: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in raw.items():
        option = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, option)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, option: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, option)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) > 1 and all(dataclasses.is_dataclass(a) for a in non_none):
            return value  # model configs are built by from_dict
        return _coerce(non_none[0], value, option)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{option} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if value is None:
            return ()
        if isinstance(value, (str, bytes, typing.Mapping)) or not isinstance(value, typing.Iterable):
            value = [value]  # one item given without a list
        item_type = args[0]
        return tuple(_coerce(item_type, v, f"{option}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping) or hint in (dict, typing.Mapping):
        if value is None:
            return {}
        if not isinstance(value, typing.Mapping):
            raise ConfigError(f"{option} must be a mapping, got {value!r}")
        value_type = args[1] if len(args) == 2 else Any
        if value_type is str:
            # Kubernetes labels: YAML reads an unquoted `true` as a boolean, meant as "true".
            value = {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in value.items()}
        return {str(k): _coerce(value_type, v, f"{option}.{k}") for k, v in value.items()}
    if hint is float:
        if option.startswith("loop.lambdas"):
            return parse_lambda(value, option=option)
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


def _choice(option: str, value: Any, allowed: typing.Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


def _positive(option: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{option} must be a finite number > 0, got {value}")


def _non_negative(option: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"{option} must be a finite number >= 0, got {value}")


def _finite(option: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{option} must be a finite number, got {value}")
