"""The pure pieces of the shared trainer (:meth:`TorchGenerativeModel.fit`): the learning-rate
schedule, the resolved speed options, ``torch.compile`` with a clear error, the EMA/weights
fingerprint used to check that data-parallel ranks agree, per-rank noise seeds, and the draw of
each step's data rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autophagy.config import TrainConfig
from autophagy.models.base import ModelError


def learning_rate(seen: int, batch: int, budget: int, train: TrainConfig) -> float:
    """The learning rate of the step that trains on images ``seen .. seen + batch`` of a
    generation's ``budget`` images (all counts in images, global across data-parallel ranks).

    * Warmup: linear over ``lr_warmup_kimg``, factor ``min(1, (seen + batch) / warmup)`` (the
      images seen *after* the step, so the first step does not run at lr 0).
    * ``lr_schedule=constant``: ``lr`` after the warmup.
    * ``lr_schedule=cosine``: ``lr * (r + (1 - r) (1 + cos(pi p)) / 2)`` with ``r = lr_min_ratio``
      and ``p = (seen - warmup) / (budget - warmup)`` clipped to [0, 1] (images seen *before* the
      step): ``lr`` when the warmup ends, ``r * lr`` at the end of the budget.

    ``seen`` counts the images of this generation only: warmup and decay restart every generation.
    """
    warmup = train.lr_warmup_kimg * 1000
    factor = min(1.0, (seen + batch) / warmup) if warmup > 0 else 1.0
    if train.lr_schedule == "cosine":
        span = budget - warmup
        progress = min(max((seen - warmup) / span, 0.0), 1.0) if span > 0 else 0.0
        low = train.lr_min_ratio
        factor *= low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return train.lr * factor


@dataclass(frozen=True)
class Speed:
    """The speed options of one ``fit``, resolved for its device and family."""

    precision: str  # fp32 | bf16
    channels_last: bool
    compile: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None


def resolve_speed(train: TrainConfig, device: torch.device, image: bool) -> Speed:
    """``train.precision=auto`` -> bf16 on CUDA for image families, fp32 otherwise (a normalizing
    flow's log-determinants want fp32); ``train.channels_last=null`` -> true on CUDA for image families."""
    precision = train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and image else "fp32"
    channels_last = train.channels_last
    if channels_last is None:
        channels_last = device.type == "cuda" and image
    if channels_last and not image:
        raise ModelError("train.channels_last=true applies to the image families (edm, ddpm, otcfm)")
    return Speed(precision=precision, channels_last=bool(channels_last), compile=train.compile)


def check_compiler(device: torch.device) -> None:
    """Raise :class:`ModelError` when ``torch.compile`` cannot work here (train.compile=true)."""
    hint = "set train.compile=false"
    if not torch._dynamo.is_dynamo_supported():
        raise ModelError(
            f"train.compile=true but torch.compile is not supported by this Python/torch ({torch.__version__}); {hint}"
        )
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ModelError(
                f"train.compile=true on {device} needs Triton, which this torch cannot use; {hint} "
                "or install the triton matching torch"
            )
    elif device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
        except ImportError:  # a torch without this helper: the first compiled step reports it instead
            return
        try:
            get_cpp_compiler()
        except Exception as err:  # noqa: BLE001 - InvalidCxxCompiler and friends, reported plainly
            raise ModelError(
                f"train.compile=true on CPU needs a C++ compiler (g++ or $CXX), none works here "
                f"({type(err).__name__}); {hint}"
            ) from None


def compile_network(module: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(module)``: a wrapper that shares ``module``'s parameters. Only the training
    forward goes through it: the EMA and every checkpoint use the plain module (no ``_orig_mod.``
    prefixes in the weights)."""
    check_compiler(device)
    return torch.compile(module)


def compile_failure(err: Exception) -> ModelError:
    return ModelError(
        f"train.compile=true but torch.compile failed on this machine ({type(err).__name__}: "
        f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); set train.compile=false"
    )


def next_batch_rows(
    order: torch.Tensor, position: int, batch: int, generator: torch.Generator, xflip: bool
) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor | None]:
    """The next step's rows of the data order: ``(order, position, rows [batch], flip [batch] | None)``,
    the order and position after the step. A new permutation of ``len(order)`` rows is drawn from
    ``generator`` when fewer than ``batch`` are left; ``xflip`` draws a flip per row after it."""
    if position + batch > len(order):
        order, position = torch.randperm(len(order), generator=generator, device=order.device), 0
    rows = order[position : position + batch]
    flip = torch.rand(batch, generator=generator, device=order.device) < 0.5 if xflip else None
    return order, position + batch, rows, flip


def generator_copy(generator: torch.Generator) -> torch.Generator:
    """A new generator on ``generator``'s device in its current state (drawing from it leaves
    ``generator`` as it is)."""
    copy = torch.Generator(generator.device)
    copy.set_state(generator.get_state())
    return copy


def noise_seed(seed: int, rank: int) -> int:
    """The seed of data-parallel rank ``rank``'s loss-noise generator (independent streams per rank)."""
    return int(np.random.SeedSequence([seed, 1, rank]).generate_state(1, np.uint64)[0])


def weights_fingerprint(*modules: nn.Module) -> torch.Tensor:
    """float64 ``[n_tensors]``: the sum of every parameter of ``modules`` (identical weights give
    identical fingerprints; data-parallel ranks compare theirs at the end of a fit)."""
    sums = [p.detach().double().sum() for module in modules for p in module.parameters()]
    return torch.stack(sums) if sums else torch.zeros(1, dtype=torch.float64)


def match_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded Adam moments the memory layout of their parameter (a checkpoint's moments are
    contiguous; a channels-last parameter's fused/foreach update wants equal strides)."""
    for param, state in optimizer.state.items():
        for key, value in list(state.items()):
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def check_ranks_agree(fingerprint: torch.Tensor, world: int) -> None:
    """Raise :class:`ModelError` unless every data-parallel rank holds the same ``fingerprint``
    (:func:`weights_fingerprint` of its network and EMA): DDP keeps them bitwise identical."""
    import torch.distributed as dist

    gathered = [torch.empty_like(fingerprint) for _ in range(world)]
    dist.all_gather(gathered, fingerprint)
    differ = [rank for rank, other in enumerate(gathered) if not torch.equal(other, gathered[0])]
    if differ:
        raise ModelError(
            f"data-parallel training went wrong: rank(s) {differ} ended with weights or EMA that differ from rank 0's"
        )
