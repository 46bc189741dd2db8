"""The shared training loop and sampler plumbing of the neural families (flow, edm, ddpm, otcfm).

A neural family supplies a network, a loss and a batch sampler; this module supplies the rest:
a budget in images seen, Adam with linear warmup, an EMA with a half-life in images
(Karras et al. 2022, App. C), NaN detection, resumable train states and sampling seeded per sample
index (:mod:`autophagy.models.noise`).
"""

from __future__ import annotations

import copy
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from autophagy.config import TrainConfig
from autophagy.models.base import GenerativeModel, LogFn, ModelError, TrainingDivergedError, TrainReport
from autophagy.models.noise import index_noise

CHECK_EVERY_STEPS = 25  # how often the loss is synced to the host and checked for NaN


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for but CUDA is not available on this machine")
    return torch.device(device)


class TorchGenerativeModel(GenerativeModel):
    """Base class of the neural families: ``net`` is trained, ``ema`` is sampled from."""

    def __init__(self, cfg: Any, item_shape: tuple[int, ...]):
        super().__init__(cfg, item_shape)
        self.net = self.build_network()
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.optimizer_state: dict[str, Any] | None = None
        self.progress: dict[str, Any] = {}

    # ------------------------------------------------------------------ family hooks

    @abstractmethod
    def build_network(self) -> nn.Module:
        """A freshly initialised network for ``self.cfg`` and ``self.item_shape``."""

    @abstractmethod
    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mean training loss of ``net`` on an encoded batch ``x`` ``[B, ...]`` (a scalar)."""

    @abstractmethod
    def sample_batch(self, net: nn.Module, noise: torch.Tensor, seed: int, start: int, **options: Any) -> torch.Tensor:
        """Encoded samples ``[B, ...]`` from base noise ``[B, ...]`` of rows ``start .. start + B``."""

    @abstractmethod
    def encode(self, rows: np.ndarray) -> torch.Tensor:
        """Dataset rows -> the network's float32 space (e.g. uint8 images -> [-1, 1], NCHW)."""

    @abstractmethod
    def decode(self, x: torch.Tensor) -> np.ndarray:
        """Inverse of :meth:`encode` (images are rounded to uint8)."""

    @property
    @abstractmethod
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of one sample's base noise in the encoded space."""

    # ------------------------------------------------------------------ generations

    def start_generation(self, carry_optimizer: bool) -> None:
        """Begin a new fit: counters reset; Adam moments kept only if ``carry_optimizer``."""
        self.progress = {}
        if not carry_optimizer:
            self.optimizer_state = None

    # ------------------------------------------------------------------ training

    def fit(
        self,
        rows: np.ndarray,
        budget_kimg: float,
        train: TrainConfig,
        seed: int,
        scratch_dir: Path | None = None,
        log: LogFn | None = None,
    ) -> TrainReport:
        device = resolve_device(train.device)
        self.net.to(device).train()
        self.ema.to(device)
        data = self.encode(rows).to(device)
        budget = int(round(budget_kimg * 1000))
        batch = min(train.batch_size, len(data))
        optimizer = torch.optim.Adam(
            self.net.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=device.type == "cuda"
        )
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
        generator = torch.Generator(device).manual_seed(seed)
        seen, step, position = 0, 0, 0
        order = torch.randperm(len(data), generator=generator, device=device)
        resumed = self.progress.get("images_seen", 0)
        if resumed:
            seen, step, position = resumed, self.progress["step"], self.progress["position"]
            order = self.progress["order"].to(device)
            generator.set_state(self.progress["generator"])
        ema_beta = 0.5 ** (batch / max(train.ema_halflife_kimg * 1000, 1e-8))
        checkpoint_every = max(1, int(train.checkpoint_every_kimg * 1000))
        next_checkpoint = (seen // checkpoint_every + 1) * checkpoint_every
        ema_params, net_params = list(self.ema.parameters()), list(self.net.parameters())
        loss_sum = torch.zeros((), device=device)
        loss_count = 0  # steps summed in loss_sum since the last check
        losses: list[float] = []
        started = time.perf_counter()
        while seen < budget:
            if position + batch > len(order):
                order, position = torch.randperm(len(data), generator=generator, device=device), 0
            x = data[order[position : position + batch]]
            position += batch
            lr = train.lr * min(1.0, (seen + batch) / (train.lr_warmup_kimg * 1000)) if train.lr_warmup_kimg > 0 else train.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = self.loss(self.net, x, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.net.parameters(), train.grad_clip)
            optimizer.step()
            with torch.no_grad():  # one fused kernel per dtype/device group, not one per tensor
                torch._foreach_lerp_(ema_params, net_params, 1.0 - ema_beta)
            loss_sum += loss.detach()
            loss_count += 1
            seen += batch
            step += 1
            # Check (and sync) every CHECK_EVERY_STEPS steps, at the end, and before a train state is written.
            at_checkpoint = scratch_dir is not None and seen >= next_checkpoint
            if step % CHECK_EVERY_STEPS == 0 or seen >= budget or at_checkpoint:
                mean = self._check_loss(loss_sum, loss_count, step, seen)
                losses.append(mean)
                loss_sum.zero_()
                loss_count = 0
                if log is not None:
                    log({"loss": mean, "kimg": seen / 1000.0, "lr": lr})
            if scratch_dir is not None and seen >= next_checkpoint and seen < budget:
                self._remember(optimizer, generator, seen, step, position, order)
                from autophagy.models.checkpoint import write_checkpoint_files

                write_checkpoint_files(self, Path(scratch_dir), {"images_seen": seen})
                next_checkpoint += checkpoint_every
        self._remember(optimizer, generator, seen, step, position, order)
        self.net.eval()
        return TrainReport(
            steps=step,
            images_seen=seen,
            loss=float(np.mean(losses[-4:])) if losses else float("nan"),
            seconds=time.perf_counter() - started,
            resumed_from_kimg=resumed / 1000.0,
        )

    @staticmethod
    def _check_loss(loss_sum: torch.Tensor, count: int, step: int, seen: int) -> float:
        mean = float(loss_sum) / count
        if not np.isfinite(mean):
            raise TrainingDivergedError(
                f"training diverged: the loss is {mean} at step {step} ({seen / 1000:.1f} kimg); "
                "lower train.lr, set train.grad_clip, or check the data"
            )
        return mean

    def _remember(self, optimizer, generator, seen, step, position, order) -> None:
        self.optimizer_state = optimizer.state_dict()
        self.progress = {
            "images_seen": seen,
            "step": step,
            "position": position,
            "order": order.cpu(),
            "generator": generator.get_state(),
        }

    # ------------------------------------------------------------------ sampling

    @torch.inference_mode()
    def sample(self, n: int, seed: int, batch_size: int = 1024, device: str = "auto", temperature: float = 1.0,
               **options: Any) -> np.ndarray:
        """Rows ``[n, *item_shape]`` from base noise scaled by ``temperature`` (1 = unbiased)."""
        target = resolve_device(device)
        self.ema.to(target).eval()
        out = []
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            noise = index_noise(seed, start, count, self.noise_shape, device=target) * temperature
            out.append(self.decode(self.sample_batch(self.ema, noise, seed, start, **options)))
        return np.concatenate(out, axis=0) if out else np.empty((0, *self.item_shape), dtype=np.float32)

    # ------------------------------------------------------------------ state

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"model": dict(self.net.state_dict()), "ema": dict(self.ema.state_dict())}

    def load_tensors(self, tensors: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        for name, module in (("model", self.net), ("ema", self.ema)):
            state = tensors.get(name, tensors["model"])
            try:
                module.load_state_dict(state)
            except RuntimeError as err:
                raise ModelError(f"checkpoint weights do not fit this {self.family} network: {err}") from None

    def train_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.optimizer_state is not None:
            state["optimizer"] = self.optimizer_state
        if self.progress:
            state["progress"] = self.progress
        return state

    def load_train_state(self, state: Mapping[str, Any]) -> None:
        self.optimizer_state = state.get("optimizer")
        self.progress = dict(state.get("progress", {}))
