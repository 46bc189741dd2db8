"""The speed options of sampling (``sample.precision``, ``sample.compile``), resolved for a device.

* ``fp64``: the sampler's state (EDM's Heun iterate, DDPM's x_t, the flow ODE's x) in float64
  around the float32 network: the reference path (Karras et al.'s EDM sampler keeps float64).
* ``fp32``: state and network in float32.
* ``bf16``: state float32, the network under bf16 autocast (weights stay float32); for CUDA.
* ``auto``: each family's reference state on every device (edm: fp64; ddpm, otcfm, flow: fp32).
  bf16 is opt-in: a generation's Fréchet distance is the loop's signal, and bf16's agreement with
  the reference (``tests/test_sampling_fast_path.py``, gpu-marked: within 5 %) has not yet been
  measured on a GPU (``benchmarks/gpu_check.sh`` measures it).

``compile`` wraps the network in ``torch.compile`` for sampling only (checkpoints and the EMA are
never the compiled module) and makes the per-sample-index noise in one compiled kernel on every
device (:func:`fused_noise`; on CUDA the Triton kernel is the default anyway). Every option keeps sampling
seeded per sample index: a row never depends on the batch it is drawn in beyond float rounding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from autophagy.config.sections import SAMPLE_PRECISIONS
from autophagy.models.base import ModelError


@dataclass(frozen=True)
class SamplingSpeed:
    """Resolved sampling options: ``precision`` is fp64, fp32 or bf16."""

    precision: str
    compile: bool

    @property
    def state_dtype(self) -> torch.dtype:
        return torch.float64 if self.precision == "fp64" else torch.float32


def resolve_sampling(
    precision: str, compile: bool, device: torch.device, image: bool, reference: torch.dtype
) -> SamplingSpeed:
    """``precision`` (one of :data:`SAMPLE_PRECISIONS`) for ``device``; ``reference`` is the family's
    state dtype under ``auto`` off CUDA. The network options apply to the image families only."""
    if precision not in SAMPLE_PRECISIONS:
        raise ModelError(f"sample.precision must be one of {', '.join(SAMPLE_PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = "fp64" if reference == torch.float64 else "fp32"
    if not image and (precision != "fp32" or compile):
        raise ModelError(
            f"sample.precision={precision} / sample.compile={compile} apply to the image families "
            "(edm, ddpm, otcfm); use auto and false"
        )
    return SamplingSpeed(precision=precision, compile=bool(compile))


class SamplingNetwork(nn.Module):
    """The network ``F(x [B, ...], labels [1]) -> [B, ...]`` as a sampler calls it under ``speed``:
    ``x`` and floating ``labels`` enter in float32 (from the sampler's state dtype), the forward
    runs under bf16 autocast for ``bf16``, and the output returns in ``x``'s dtype."""

    def __init__(self, network: nn.Module, speed: SamplingSpeed, device: torch.device):
        super().__init__()
        self.network = network
        self.speed = speed
        self.device_type = device.type

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            labels = labels.to(torch.float32)
        with self.autocast():
            out = self.network(x.to(torch.float32), labels)
        return out.to(x.dtype)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.speed.precision == "bf16")


def compile_for_sampling(network: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(network)`` after checking that it can work on ``device`` (a clear error if not)."""
    from autophagy.models.training import check_compiler

    try:
        check_compiler(device)
    except ModelError as err:
        raise ModelError(str(err).replace("train.compile", "sample.compile")) from None
    return torch.compile(network)


def sampling_network(network: nn.Module, speed: SamplingSpeed, device: torch.device) -> SamplingNetwork:
    """What a family's sampler calls under ``speed``: ``network`` (an image network, or its compiled
    wrapper) with float32 inputs, bf16 autocast for ``bf16`` and outputs in the state's dtype."""
    return SamplingNetwork(network, speed, device)


def fused_noise(net: nn.Module) -> bool | None:
    """``index_noise``'s ``fused`` for a sampler calling ``net``: True under ``sample.compile`` (on a
    CPU the compiled kernel is ~6x the eager ops' speed, after a compilation that only pays for
    itself over many steps), otherwise None (the device's default)."""
    return True if isinstance(net, SamplingNetwork) and net.speed.compile else None
