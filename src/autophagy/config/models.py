"""The built-in model families' configs, each followed by its registration (:mod:`.families`).

The image families (edm, ddpm, otcfm) share their network options through
:class:`ImageNetworkConfig`; each config's defaults are the one source of that family's defaults
(the CPU presets for 8x8 digits; ``configs/cifar10-*.yaml`` hold the paper networks). The
text family ``causal-lm`` (:class:`CausalLMModelConfig`) defaults to a tiny GPT-2 for CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from autophagy.config.checks import ConfigError, choice, finite, non_negative, positive
from autophagy.config.families import Family, ModelConfig, register_family

DDPM_SAMPLERS = ("ancestral", "ddim")
DDPM_VARIANCES = ("fixed_large", "fixed_small")
OTCFM_SAMPLERS = ("euler", "midpoint", "dopri5")
IMAGE_NETWORKS = ("unet", "mlp")


@dataclass(frozen=True)
class GaussianModelConfig(ModelConfig):
    """Closed-form maximum-likelihood fit of N(mu, diag(sigma^2)) (the paper's warm-up, Sec. 3)."""

    family: Literal["gaussian"] = "gaussian"
    estimator: str = "mle"  # mle (divide by n) | unbiased (divide by n - 1)

    def validate(self) -> None:
        choice("model.estimator", self.estimator, ("mle", "unbiased"))


register_family(Family("gaussian", GaussianModelConfig, "autophagy.models.gaussian:GaussianModel", "vector", ema=False))


@dataclass(frozen=True)
class FlowModelConfig(ModelConfig):
    """Neural spline flow for vectors (Durkan et al. 2019), built with ``zuko``."""

    family: Literal["flow"] = "flow"
    transforms: int = 4  # autoregressive spline transforms stacked in the flow (zuko NSF, a MAF with splines)
    hidden_features: tuple[int, ...] = (64, 64)  # hidden-layer widths of each transform's masked MLP (MADE)
    bins: int = 8  # bins K of each monotonic rational-quadratic spline (Durkan et al. 2019)

    def validate(self) -> None:
        positive("model.transforms", self.transforms)
        positive("model.bins", self.bins)
        if not self.hidden_features or min(self.hidden_features) < 1:
            raise ConfigError(f"model.hidden_features must be positive widths, got {self.hidden_features}")


register_family(Family("flow", FlowModelConfig, "autophagy.models.flow:FlowModel", "vector"))


@dataclass(frozen=True)
class ImageNetworkConfig(ModelConfig):
    """The network F of an image family: ``unet`` (``model_channels`` at the first level times
    ``channel_mult`` per level, ``num_blocks`` residual blocks per level, attention at
    ``attn_resolutions``) or ``mlp`` (a residual MLP of width ``model_channels`` and depth
    ``num_blocks``, for tiny images on CPU)."""

    network: str = "mlp"  # unet (the family's paper UNet) | mlp (a residual MLP, for tiny images on CPU)
    model_channels: int = 256  # unet: channels of the first level; mlp: the width
    channel_mult: tuple[int, ...] = (1, 2)  # unet: channels of each level as multiples of model_channels
    num_blocks: int = 3  # unet: residual blocks per level; mlp: residual blocks (the depth)
    attn_resolutions: tuple[int, ...] = ()  # unet: self-attention at the levels of these resolutions (pixels)
    dropout: float = 0.0  # dropout probability in the residual blocks

    def validate(self) -> None:
        choice("model.network", self.network, IMAGE_NETWORKS)
        positive("model.model_channels", self.model_channels)
        positive("model.num_blocks", self.num_blocks)
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"model.channel_mult must be positive multipliers, got {self.channel_mult}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class EDMModelConfig(ImageNetworkConfig):
    """EDM (Karras et al. 2022): preconditioning, loss and Heun sampler, with a UNet.

    ``network``: ``unet`` (DDPM++, the paper's) or ``mlp``. The defaults are the CPU preset for
    8x8 digits; ``configs/cifar10-edm.yaml`` and ``configs/ffhq64-edm.yaml`` hold the paper's networks.
    """

    family: Literal["edm"] = "edm"
    sigma_min: float = 0.002  # lowest noise level of the sampler's schedule (Karras et al. 2022, Table 1)
    sigma_max: float = 80.0  # highest noise level; sampling starts at N(0, sigma_max^2 I) (Karras et al. 2022, Table 1)
    sigma_data: float = 0.5  # data std in the preconditioning and loss weight (Karras et al. 2022, Table 1)
    P_mean: float = -1.2  # training noise levels: ln sigma ~ N(P_mean, P_std^2) (Karras et al. 2022, Table 1)
    P_std: float = 1.2  # see P_mean (Karras et al. 2022, Table 1)
    rho: float = 7.0  # exponent of the sampler's noise-level schedule, Eq. 5 (Karras et al. 2022, Table 1)
    num_steps: int = 18  # Heun steps; 2 * num_steps - 1 network evaluations
    S_churn: float = 0.0  # stochasticity of the Heun sampler at every step (Karras et al. 2022, Alg. 2); 0: none

    def validate(self) -> None:
        super().validate()
        positive("model.num_steps", self.num_steps)
        if not (0.0 < self.sigma_min < self.sigma_max and math.isfinite(self.sigma_max)):
            raise ConfigError(f"need 0 < model.sigma_min < model.sigma_max, got {self.sigma_min}, {self.sigma_max}")
        positive("model.sigma_data", self.sigma_data)
        finite("model.P_mean", self.P_mean)
        positive("model.P_std", self.P_std)
        positive("model.rho", self.rho)
        non_negative("model.S_churn", self.S_churn)


register_family(
    Family(
        "edm",
        EDMModelConfig,
        "autophagy.models.edm:EDMModel",
        "image",
        pretrained_formats=("edm-pickle",),
        paper_config="configs/cifar10-edm.yaml",
    )
)


@dataclass(frozen=True)
class DDPMModelConfig(ImageNetworkConfig):
    """DDPM (Ho, Jain, Abbeel 2020): epsilon prediction on a linear beta schedule, ancestral or DDIM sampling.

    ``network`` is ``unet`` (Ho et al.'s CIFAR-10 UNet through diffusers' ``UNet2DModel``, one
    attention head) or ``mlp``. ``sampler=ancestral`` runs Ho et al.'s Alg. 2 with variance
    ``ancestral_variance`` (``fixed_large``: sigma_t^2 = beta_t, Ho's CIFAR-10 choice;
    ``fixed_small``: the posterior variance); ``sampler=ddim`` runs Song, Meng, Ermon (2021)
    Eq. 12 with ``eta``. Both use ``num_steps`` evenly spaced timesteps. The defaults are the CPU
    preset for 8x8 digits; ``configs/cifar10-ddpm.yaml`` holds the paper's network.
    """

    family: Literal["ddpm"] = "ddpm"
    num_train_timesteps: int = 1000  # T, the diffusion steps of the forward process (Ho et al. 2020: 1000)
    beta_start: float = 1e-4  # beta_1 of the linear beta schedule (Ho et al. 2020, Sec. 4)
    beta_end: float = 0.02  # beta_T of the linear beta schedule (Ho et al. 2020, Sec. 4)
    sampler: str = "ddim"  # ancestral (Ho et al. 2020, Alg. 2) | ddim (Song et al. 2021, Eq. 12)
    num_steps: int = 50  # sampling steps (network evaluations), evenly spaced over the T timesteps
    eta: float = 0.0  # DDIM only: 0 deterministic, 1 the DDPM posterior variance
    ancestral_variance: str = "fixed_large"  # ancestral: fixed_large (sigma_t^2 = beta_t) | fixed_small (posterior)
    clip_denoised: bool = True  # clip the predicted x_0 to [-1, 1] while sampling (Ho et al.'s sampler)

    def validate(self) -> None:
        super().validate()
        positive("model.num_train_timesteps", self.num_train_timesteps)
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ConfigError(f"need 0 < model.beta_start < model.beta_end < 1, got {self.beta_start}, {self.beta_end}")
        choice("model.sampler", self.sampler, DDPM_SAMPLERS)
        if not 1 <= self.num_steps <= self.num_train_timesteps:
            raise ConfigError(
                f"model.num_steps must be in [1, model.num_train_timesteps={self.num_train_timesteps}], "
                f"got {self.num_steps}"
            )
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"model.eta must be in [0, 1], got {self.eta}")
        choice("model.ancestral_variance", self.ancestral_variance, DDPM_VARIANCES)


register_family(
    Family(
        "ddpm",
        DDPMModelConfig,
        "autophagy.models.ddpm:DDPMModel",
        "image",
        pretrained_formats=("diffusers",),
        paper_config="configs/cifar10-ddpm.yaml",
    )
)


@dataclass(frozen=True)
class OTCFMModelConfig(ImageNetworkConfig):
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
    head_channels: int = 64  # unet: channels per attention head
    sigma: float = 0.0  # std of the Gaussian path around t x1 + (1 - t) x0 (Tong et al.); 0: no noise
    coupling: str = "ot"  # ot (exact minibatch OT pairing: OT-CFM) | independent (I-CFM)
    sampler: str = "euler"  # ODE solver from t = 0 to 1: euler | midpoint (num_steps) | dopri5 (adaptive, tol)
    num_steps: int = 50  # euler/midpoint steps (dopri5 ignores it)
    tol: float = 1e-5  # dopri5 atol and rtol

    def validate(self) -> None:
        super().validate()
        positive("model.head_channels", self.head_channels)
        widths = [self.model_channels * mult for mult in self.channel_mult]
        if self.network == "unet" and any(width % self.head_channels for width in widths):
            raise ConfigError(
                f"model.head_channels={self.head_channels} must divide every level's width "
                f"(model_channels x channel_mult = {widths}) into whole attention heads"
            )
        non_negative("model.sigma", self.sigma)
        choice("model.coupling", self.coupling, ("ot", "independent"))
        choice("model.sampler", self.sampler, OTCFM_SAMPLERS)
        positive("model.num_steps", self.num_steps)
        positive("model.tol", self.tol)


register_family(
    Family(
        "otcfm",
        OTCFMModelConfig,
        "autophagy.models.otcfm:OTCFMModel",
        "image",
        pretrained_formats=("torchcfm", "diffusers"),
        paper_config="configs/cifar10-otcfm.yaml",
    )
)


@dataclass(frozen=True)
class CausalLMModelConfig(ModelConfig):
    """A causal (autoregressive) language model on token rows through Hugging Face ``transformers``.

    From scratch (``pretrained: ""``): a GPT-2 (Radford et al. 2019, "Language Models are
    Unsupervised Multitask Learners") of ``n_layer`` blocks, ``n_head`` heads and width ``n_embd``
    with the data's tokenizer's vocabulary; the defaults are the tiny CPU preset. Otherwise
    ``pretrained`` names a Hugging Face hub id (``facebook/opt-125m``, the network of Shumailov et
    al., Nature 2024; ``gpt2``) or a local directory, loaded from safetensors only, never with
    remote code; the data must then be tokenized with that checkpoint's tokenizer. A row is
    trained on and scored conditioned on the tokenizer's BOS token; samples are drawn token by
    token with ``sample.temperature`` (dividing the logits), ``top_k`` and ``top_p``, after BOS
    and the tokens of ``prompt``.
    """

    family: Literal["causal-lm"] = "causal-lm"
    pretrained: str = ""  # "": a GPT-2 from scratch; else a hub id (gpt2, facebook/opt-125m) or a local directory
    n_layer: int = 2  # from scratch: transformer blocks of the GPT-2 (gpt2: 12)
    n_head: int = 4  # from scratch: attention heads per block (gpt2: 12); must divide n_embd
    n_embd: int = 128  # from scratch: width of the embeddings and residual stream (gpt2: 768)
    dropout: float | None = None  # every dropout probability of the network; null: 0 from scratch, a checkpoint's own
    top_k: int = 0  # sampling: keep the k most likely tokens at each step (0: off)
    top_p: float = 1.0  # sampling: the smallest set of tokens of probability >= top_p (nucleus sampling); 1: off
    prompt: str = ""  # sampling: a fixed text whose tokens follow BOS before each row (not stored); "": BOS only

    def validate(self) -> None:
        for option in ("n_layer", "n_head", "n_embd"):
            positive(f"model.{option}", getattr(self, option))
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_head={self.n_head} must divide model.n_embd={self.n_embd}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1) or null, got {self.dropout}")
        if self.top_k < 0:
            raise ConfigError(f"model.top_k must be an integer >= 0 (0: off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"model.top_p must be in (0, 1] (1: off), got {self.top_p}")
        if self.pretrained != self.pretrained.strip():
            raise ConfigError(f"model.pretrained has leading or trailing spaces: {self.pretrained!r}")


register_family(Family("causal-lm", CausalLMModelConfig, "autophagy.models.causal_lm:CausalLM", "text"))
