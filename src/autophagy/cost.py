"""An estimate of an experiment's training compute, printed before ``autophagy run`` starts (issue 14 item 3).

    images  = seeds x (generation-0 budget + lambdas x generations x budget) x 1000
    FLOPs   = images x (FLOPs of one training step on one image: forward + backward of the loss)
    GPU-h   = FLOPs / (stated throughput x utilisation) / 3600

Generation 0 is shared by a seed's lambdas; a pretrained start with ``gen0_budget_kimg=0`` trains
nothing there. The FLOPs per image are counted with :class:`torch.utils.flop_counter.FlopCounterMode`
on one forward + backward of the family's loss for a batch of one item of the data's shape, on the
CPU (matrix products and convolutions; elementwise work is not counted). Sampling and evaluation are
not included. The throughput is a stated figure (``--gpu-tflops``, default 989: an H100 SXM's dense
bf16 peak) times a utilisation (``--gpu-utilisation``, default 0.35, typical of a UNet in bf16).
A stop on collapse can only make the run shorter: the estimate is an upper bound.

For language models (``causal-lm``) an "image" is one row of ``data.seq_len`` tokens, and its FLOPs
are Kaplan et al. (2020)'s count, per token 3 x (2 N + 2 n_layer n_ctx d_model) with N the
non-embedding parameters 12 n_layer d_model^2, plus the output projection 2 d_model V, times
n_ctx = seq_len + 1 tokens (the BOS in front). A pretrained network's shape is read from its
config (a local directory, or the Hugging Face cache: unknown offline until it is there).
"""

from __future__ import annotations

from dataclasses import dataclass

#: An H100 SXM's dense bf16 peak, TFLOP/s (an A100's is 312).
DEFAULT_TFLOPS = 989.0
#: The share of the peak a training step sustains.
DEFAULT_UTILISATION = 0.35

_ITEM_SHAPES = {"cifar10": (32, 32, 3), "digits": (8, 8, 1), "toy2d": (2,)}


@dataclass(frozen=True)
class CostEstimate:
    images: float
    flops_per_image: float
    gpu_hours: float
    tflops: float
    utilisation: float
    unit: str = "image"  # what a budget's "k" counts: images, or rows of tokens for language models

    def line(self) -> str:
        return (
            f"estimated training cost: {self.gpu_hours:.3g} GPU-hours ({self.images:.3g} {self.unit}s x "
            f"{self.flops_per_image:.3g} FLOP/{self.unit} = {self.images * self.flops_per_image:.3g} FLOP at "
            f"{self.tflops:g} TFLOP/s x {self.utilisation:g} utilisation; sampling and evaluation not included)"
        )


def training_images(cfg) -> float:
    """Images the experiment trains on over every chain (generation 0 once per seed)."""
    train, loop = cfg.train, cfg.loop
    gen0 = train.budget_kimg if train.gen0_budget_kimg is None else train.gen0_budget_kimg
    return len(loop.seeds) * (gen0 + len(loop.lambdas) * loop.generations * train.budget_kimg) * 1000.0


def item_shape(data) -> tuple[int, ...] | None:
    """The shape of one data item, where the config states it (None: an image folder read as it is)."""
    if data.is_text:
        return (data.seq_len,)
    if data.source == "gaussian":
        return (data.dim,)
    if data.source == "image-folder":
        return None if data.resolution is None else (data.resolution, data.resolution, 3)
    return _ITEM_SHAPES.get(data.source)


def flops_per_image(model_cfg, shape: tuple[int, ...]) -> float:
    """FLOPs of one training step (loss forward + backward) on one item, counted on the CPU (0: not a network)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from autophagy.models import build_model
    from autophagy.models.torch_model import TorchGenerativeModel

    model = build_model(model_cfg, shape)
    if not isinstance(model, TorchGenerativeModel):
        return 0.0
    x = torch.randn(1, *model.noise_shape)
    generator = torch.Generator().manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        model.loss(model.net, x, generator).backward()
    return float(counter.get_total_flops())


def causal_lm_flops_per_row(model_cfg, data) -> float | None:
    """Training FLOPs of one row of ``data.seq_len`` tokens (Kaplan et al. 2020, Table 1: forward
    2 N + 2 n_layer n_ctx d_model per token, backward twice that), the LM head included; None when a
    pretrained network's config cannot be read (offline and not cached)."""
    if model_cfg.pretrained:
        try:
            from transformers import AutoConfig

            network = AutoConfig.from_pretrained(model_cfg.pretrained, trust_remote_code=False)
        except (OSError, ValueError):
            return None
        n_layer, d_model, vocab = network.num_hidden_layers, network.hidden_size, network.vocab_size
    else:
        n_layer, d_model = model_cfg.n_layer, model_cfg.n_embd
        vocab = data.vocab_size if data.tokenizer == "bpe" else None
        if vocab is None:
            return None
    n_ctx = data.seq_len + 1
    forward_per_token = 2 * 12 * n_layer * d_model**2 + 2 * n_layer * n_ctx * d_model + 2 * d_model * vocab
    return float(3 * forward_per_token * n_ctx)


def estimate(cfg, tflops: float = DEFAULT_TFLOPS, utilisation: float = DEFAULT_UTILISATION) -> CostEstimate | None:
    """The estimate for ``cfg``, or None when the item shape is not known before the data is read."""
    from autophagy.config import ConfigError

    if not (tflops > 0 and 0 < utilisation <= 1):
        raise ConfigError(f"--gpu-tflops must be > 0 and --gpu-utilisation in (0, 1], got {tflops} and {utilisation}")
    shape = item_shape(cfg.data)
    if shape is None:
        return None
    if cfg.data.is_text:
        per_image = causal_lm_flops_per_row(cfg.model, cfg.data)
        if per_image is None:
            return None
    else:
        per_image = flops_per_image(cfg.model, shape)
    images = training_images(cfg)
    gpu_hours = images * per_image / (tflops * 1e12 * utilisation) / 3600.0
    return CostEstimate(images, per_image, gpu_hours, tflops, utilisation, "row" if cfg.data.is_text else "image")


def describe(cfg, tflops: float = DEFAULT_TFLOPS, utilisation: float = DEFAULT_UTILISATION) -> str:
    """The one line printed before a run, a compile or a submit starts."""
    found = estimate(cfg, tflops, utilisation)
    if found is None and cfg.data.is_text:
        return (
            "estimated training cost: unknown until the network config of "
            f"{cfg.model.pretrained or cfg.data.tokenizer} is available (a local directory, or the Hugging Face cache)"
        )
    if found is None:
        return "estimated training cost: unknown until the image folder is read (set data.resolution)"
    return found.line()
