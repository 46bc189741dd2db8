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

    def line(self) -> str:
        return (
            f"estimated training cost: {self.gpu_hours:.3g} GPU-hours ({self.images:.3g} images x "
            f"{self.flops_per_image:.3g} FLOP/image = {self.images * self.flops_per_image:.3g} FLOP at "
            f"{self.tflops:g} TFLOP/s x {self.utilisation:g} utilisation; sampling and evaluation not included)"
        )


def training_images(cfg) -> float:
    """Images the experiment trains on over every chain (generation 0 once per seed)."""
    train, loop = cfg.train, cfg.loop
    gen0 = train.budget_kimg if train.gen0_budget_kimg is None else train.gen0_budget_kimg
    return len(loop.seeds) * (gen0 + len(loop.lambdas) * loop.generations * train.budget_kimg) * 1000.0


def item_shape(data) -> tuple[int, ...] | None:
    """The shape of one data item, where the config states it (None: an image folder read as it is)."""
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


def estimate(cfg, tflops: float = DEFAULT_TFLOPS, utilisation: float = DEFAULT_UTILISATION) -> CostEstimate | None:
    """The estimate for ``cfg``, or None when the item shape is not known before the data is read."""
    from autophagy.config import ConfigError

    if not (tflops > 0 and 0 < utilisation <= 1):
        raise ConfigError(f"--gpu-tflops must be > 0 and --gpu-utilisation in (0, 1], got {tflops} and {utilisation}")
    shape = item_shape(cfg.data)
    if shape is None:
        return None
    images, per_image = training_images(cfg), flops_per_image(cfg.model, shape)
    return CostEstimate(
        images, per_image, images * per_image / (tflops * 1e12 * utilisation) / 3600.0, tflops, utilisation
    )


def describe(cfg, tflops: float = DEFAULT_TFLOPS, utilisation: float = DEFAULT_UTILISATION) -> str:
    """The one line printed before a run, a compile or a submit starts."""
    found = estimate(cfg, tflops, utilisation)
    if found is None:
        return "estimated training cost: unknown until the image folder is read (set data.resolution)"
    return found.line()
