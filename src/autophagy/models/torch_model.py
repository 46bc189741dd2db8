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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autophagy.config import TrainConfig
from autophagy.models.base import GenerativeModel, LogFn, ModelError, TrainingDivergedError, TrainReport
from autophagy.models.noise import index_noise
from autophagy.models.sampling import (
    SamplingSpeed,
    compile_for_sampling,
    fused_noise,
    resolve_sampling,
    sampling_network,
)

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
        self.optimizer_state: dict[str, Any] | None = None
        self.progress: dict[str, Any] = {}
        self._compiled_ema: tuple[nn.Module, nn.Module] | None = None  # (ema, torch.compile(ema)) for sampling
        network = self.build_network()
        if network is None:  # the family installs it once it knows enough (causal-lm: its tokenizer)
            self.net = self.ema = None
        else:
            self.install_network(network)

    def install_network(self, network: nn.Module) -> None:
        """Make ``network`` the trained network and a copy of it the EMA (the sampled weights)."""
        self.net = network
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self._compiled_ema = None

    # ------------------------------------------------------------------ family hooks

    @abstractmethod
    def build_network(self) -> nn.Module | None:
        """A freshly initialised network for ``self.cfg`` and ``self.item_shape``, or ``None`` when
        the family needs more than those and installs its network later (:meth:`install_network`;
        ``causal-lm`` does so in ``bind_data`` or ``load_files``, once it knows its tokenizer)."""

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

    def wants_next_batch(self, device: torch.device) -> bool:
        """Whether :meth:`fit` on ``device`` should call :meth:`prepare_next` every step (default: no)."""
        return False

    def prepare_next(self, x_next: torch.Tensor, noise: torch.Generator) -> None:
        """Start the next step's loss work while this step runs (e.g. otcfm's OT pairing).

        ``x_next`` [B, ...] is the next step's encoded batch and ``noise`` a copy of the
        loss-noise generator as the next :meth:`loss` will find it: drawing from it changes nothing.
        Called after this step's loss, before its backward, when :meth:`wants_next_batch`."""

    # ------------------------------------------------------------------ data on the device

    def stage_rows(self, rows: np.ndarray, device: torch.device) -> torch.Tensor:
        """The training rows on ``device``, once per fit, in their compact stored form (images stay
        uint8 ``[N, H, W, C]``, 4x smaller than float32); :meth:`encode_batch` converts a batch.
        Vector families store the encoded floats."""
        return self.encode(rows).to(device)

    def encode_batch(self, batch: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """A batch of :meth:`stage_rows` -> the network's float32 space, on the batch's device."""
        return batch

    def flip_batch(self, batch: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """``train.xflip``: the rows of a stored batch where ``flip`` [B] (bool) is set, mirrored left-right."""
        raise ModelError(f"train.xflip applies to the image families, not {self.family}")

    # ------------------------------------------------------------------ generations

    def start_generation(self, carry_optimizer: bool, carry_ema: bool = True, finetune_from: str = "net") -> None:
        """The generation boundary: begin fine-tuning the loaded weights of generation t-1.

        The image counter, data order and random streams restart (so do the lr warmup and
        schedule); ``finetune_from="ema"`` first copies the EMA (the sampled model) into the trained
        network; ``carry_ema=False`` restarts the EMA as an exact copy of the starting weights;
        ``carry_optimizer=False`` drops Adam's moments (they are kept otherwise).
        """
        self.progress = {}
        if finetune_from == "ema":
            self.net.load_state_dict(self.ema.state_dict())
        elif finetune_from != "net":
            raise ModelError(f"train.finetune_from must be net or ema, got {finetune_from!r}")
        if not carry_ema:
            self.ema.load_state_dict(self.net.state_dict())
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
        """Train on ``rows`` until ``budget_kimg`` thousand images are seen (see :class:`TrainConfig`).

        Hot loop: the rows live on the device (uint8 for images), a step indexes its batch there,
        converts it to float (and flips it, ``train.xflip``) on the device, runs forward and loss
        under bf16 autocast when ``precision`` resolves to bf16, steps (fused) Adam in fp32 and
        lerps the fp32 EMA in one foreach kernel; the loss reaches the host every
        CHECK_EVERY_STEPS steps only.

        Randomness: the data order and flips come from a generator seeded with ``seed``; the loss
        noise from a second one seeded with ``(seed, rank)``. Under a ``torch.distributed`` process
        group (:mod:`autophagy.distributed`) every rank draws the same permutation, trains on its
        slice of each global batch of ``train.batch_size`` images through DistributedDataParallel,
        keeps identical weights and EMA, and only rank 0 writes ``scratch_dir``. The budget counts
        global images. A deterministic loss (``flow``) then gives the single-process result up to
        float summation order; a noisy one draws different (independent) noise per rank.
        """
        from autophagy.distributed import rank_and_world
        from autophagy.models.training import (
            check_ranks_agree,
            compile_failure,
            compile_network,
            generator_copy,
            learning_rate,
            match_layout,
            next_batch_rows,
            noise_seed,
            resolve_speed,
            weights_fingerprint,
        )

        rank, world = rank_and_world()
        device = resolve_device(train.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # cuda:LOCAL_RANK under torchrun
        speed = resolve_speed(train, device, image=self.kind == "image")
        if train.xflip and self.kind != "image":
            raise ModelError(f"train.xflip applies to the image families, not {self.family}")
        layout = torch.channels_last if speed.channels_last else torch.contiguous_format
        self.net.to(device=device, memory_format=layout).train()
        self.ema.to(device=device, memory_format=layout)  # same strides as net: the EMA lerp stays one fused kernel
        data = self.stage_rows(rows, device)
        budget = int(round(budget_kimg * 1000))
        batch = min(train.batch_size, len(data))  # global images per step
        if world > 1:
            if train.batch_size % world:
                raise ModelError(
                    f"train.batch_size={train.batch_size} (the global batch) must be divisible by the "
                    f"{world} data-parallel processes"
                )
            batch -= batch % world
            if batch == 0:
                raise ModelError(f"{len(data)} training rows cannot fill one batch on each of {world} processes")
        local = batch // world
        optimizer = torch.optim.Adam(
            self.net.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=device.type == "cuda"
        )
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
            match_layout(optimizer)
        generator = torch.Generator(device).manual_seed(seed)  # data order and flips: the same on every rank
        noise = torch.Generator(device).manual_seed(noise_seed(seed, rank))  # loss noise: one stream per rank
        seen, step, position = 0, 0, 0
        order = torch.randperm(len(data), generator=generator, device=device)
        resumed = self.progress.get("images_seen", 0)
        if resumed:
            seen, step, position = resumed, self.progress["step"], self.progress["position"]
            order = self.progress["order"].to(device)
            generator.set_state(self.progress["generator"])
            streams = self.progress.get("noise_generators", [])
            if len(streams) == world:
                noise.set_state(streams[rank])
            else:  # resumed with another number of processes: fresh, still distinct, streams
                noise.manual_seed(noise_seed(seed + step, rank))
        train_net: nn.Module = self.net
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            train_net = DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True
            )
        compiling = speed.compile
        if compiling:
            train_net = compile_network(train_net, device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=speed.precision == "bf16")
        ema_beta = 0.5 ** (batch / max(train.ema_halflife_kimg * 1000, 1e-8))
        checkpoint_every = max(1, int(train.checkpoint_every_kimg * 1000))
        next_checkpoint = (seen // checkpoint_every + 1) * checkpoint_every
        ema_params, net_params = list(self.ema.parameters()), list(self.net.parameters())
        loss_sum = torch.zeros((), device=device)
        loss_count = 0  # steps summed in loss_sum since the last check
        losses: list[float] = []
        lr = learning_rate(seen, batch, budget, train)
        mine = slice(rank * local, (rank + 1) * local)
        look_ahead = self.wants_next_batch(device)

        def local_batch(rows_of_step: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
            x = data[rows_of_step[mine]]
            if flip is not None:
                x = self.flip_batch(x, flip[mine])
            return self.encode_batch(x, speed.channels_last)

        started = time.perf_counter()
        while seen < budget:
            order, position, rows_of_step, flip = next_batch_rows(order, position, batch, generator, train.xflip)
            x = local_batch(rows_of_step, flip)
            lr = learning_rate(seen, batch, budget, train)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                with autocast:
                    loss = self.loss(train_net, x, noise)
                if look_ahead and seen + batch < budget:  # from copies: the real streams do not move
                    _, _, rows_next, flip_next = next_batch_rows(
                        order, position, batch, generator_copy(generator), train.xflip
                    )
                    self.prepare_next(local_batch(rows_next, flip_next), generator_copy(noise))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            except torch._dynamo.exc.TorchDynamoException as err:
                if compiling:
                    raise compile_failure(err) from None
                raise
            if train.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.net.parameters(), train.grad_clip)
            optimizer.step()
            with torch.no_grad():  # one fused kernel per dtype/device group, not one per tensor
                torch._foreach_lerp_(ema_params, net_params, 1.0 - ema_beta)
            loss_sum += loss.detach().float()
            loss_count += 1
            seen += batch
            step += 1
            # Check (and sync) every CHECK_EVERY_STEPS steps, at the end, and before a train state is written.
            at_checkpoint = scratch_dir is not None and seen >= next_checkpoint
            if step % CHECK_EVERY_STEPS == 0 or seen >= budget or at_checkpoint:
                if world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(loss_sum)  # the logged loss is the mean over the global batches
                mean = self._check_loss(loss_sum, loss_count * world, step, seen)
                losses.append(mean)
                loss_sum.zero_()
                loss_count = 0
                if log is not None:
                    log({"loss": mean, "kimg": seen / 1000.0, "lr": lr})
            if scratch_dir is not None and seen >= next_checkpoint and seen < budget:
                self._remember(optimizer, generator, noise, seen, step, position, order, world)
                if rank == 0:
                    from autophagy.models.checkpoint import write_checkpoint_files

                    write_checkpoint_files(self, Path(scratch_dir), {"images_seen": seen})
                next_checkpoint += checkpoint_every
        self._remember(optimizer, generator, noise, seen, step, position, order, world)
        if world > 1:
            check_ranks_agree(weights_fingerprint(self.net, self.ema).to(device), world)
        self.net.eval()
        return TrainReport(
            steps=step,
            images_seen=seen,
            loss=float(np.mean(losses[-4:])) if losses else float("nan"),
            seconds=time.perf_counter() - started,
            resumed_from_kimg=resumed / 1000.0,
            device=str(device),
            precision=speed.precision,
            channels_last=speed.channels_last,
            compiled=speed.compile,
            world_size=world,
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

    def _remember(self, optimizer, generator, noise, seen, step, position, order, world=1) -> None:
        """Keep what a resumed fit needs (every rank's noise stream, gathered: a collective under DDP)."""
        streams = [noise.get_state()]
        if world > 1:
            import torch.distributed as dist

            streams = [None] * world
            dist.all_gather_object(streams, noise.get_state())
        self.optimizer_state = optimizer.state_dict()
        self.progress = {
            "images_seen": seen,
            "step": step,
            "position": position,
            "order": order.cpu(),
            "generator": generator.get_state(),
            "noise_generators": [state.cpu() for state in streams],
        }

    # ------------------------------------------------------------------ sampling

    sampling_state_dtype = torch.float32  # the sampler state's dtype under sample.precision=auto off CUDA

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        seed: int,
        batch_size: int = 1024,
        device: str = "auto",
        temperature: float = 1.0,
        start: int = 0,
        precision: str = "auto",
        compile: bool = False,
        **options: Any,
    ) -> np.ndarray:
        """Rows ``start .. start + n - 1`` ``[n, *item_shape]`` from base noise scaled by ``temperature``
        (1 = unbiased). ``precision`` and ``compile``: :mod:`autophagy.models.sampling`. On CUDA a
        finished batch is decoded and copied to the host on a side stream while the next one runs."""
        target = resolve_device(device)
        speed = resolve_sampling(precision, compile, target, self.kind == "image", self.sampling_state_dtype)
        self.ema.to(target).eval()
        net = self.ema  # a vector family's network is called its own way (flow: net().transform.inv)
        if self.kind == "image":
            net = sampling_network(self._sampling_module(speed, target), speed, target)
        copies = torch.cuda.Stream(target) if target.type == "cuda" else None
        out: list[np.ndarray] = []
        pending = None  # the previous batch and the event marking its end on the compute stream
        for first in range(start, start + n, batch_size):
            count = min(batch_size, start + n - first)
            noise = index_noise(seed, first, count, self.noise_shape, device=target, fused=fused_noise(net))
            noise = noise * temperature
            x = self.sample_batch(net, noise.to(speed.state_dtype), seed, first, **options).to(torch.float32)
            if pending is not None:
                out.append(self._decode_on(copies, *pending))
            done = None
            if copies is not None:
                done = torch.cuda.Event()
                done.record()
            pending = (x, done)
        if pending is not None:
            out.append(self._decode_on(copies, *pending))
        return np.concatenate(out, axis=0) if out else np.empty((0, *self.item_shape), dtype=np.float32)

    def _sampling_module(self, speed: SamplingSpeed, device: torch.device) -> nn.Module:
        """The EMA, or its ``torch.compile`` wrapper (made once per EMA module) under ``speed.compile``."""
        if not speed.compile:
            return self.ema
        if self._compiled_ema is None or self._compiled_ema[0] is not self.ema:
            self._compiled_ema = (self.ema, compile_for_sampling(self.ema, device))
        return self._compiled_ema[1]

    def _decode_on(self, copies: torch.cuda.Stream | None, x: torch.Tensor, done: Any) -> np.ndarray:
        """:meth:`decode` of a finished batch ``x``; on the ``copies`` stream (CUDA) after ``done``, so
        the host waits for this batch only, not for the batch queued behind it."""
        if copies is None:
            return self.decode(x)
        copies.wait_event(done)
        with torch.cuda.stream(copies):
            return self.decode(x)

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
