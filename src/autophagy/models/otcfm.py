"""OT-CFM: Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio, "Improving and
Generalizing Flow-Based Generative Models with Minibatch Optimal Transport" (TMLR 2024), for uint8 images.

* Coupling (Sec. 3.2, Alg. 2): a batch of noise x0 ~ N(0, I) [B, ...] is re-paired with the data
  batch x1 [B, ...] by the exact OT plan for the squared Euclidean cost. For uniform weights
  and equal batch sizes the exact plan is a permutation matrix / B (Birkhoff-von Neumann), so the
  linear assignment problem gives it: ``scipy.optimize.linear_sum_assignment``. Reference:
  torchcfm's ``ExactOptimalTransportConditionalFlowMatcher``, which solves the same LP with POT's
  ``ot.emd`` and then draws B pairs from the plan *with replacement*; here each pair is used
  exactly once (the plan itself, without the resampling noise).
* Overlap: the assignment is solved on the host, and waiting for its cost matrix would stall the
  device every step. On CUDA (``OTCFMModel.overlap_pairing``) the trainer hands
  :meth:`OTCFMModel.prepare_next` the next step's batch and a copy of the loss-noise generator
  while this step runs; the next step's cost matrix is queued on the device behind this step's
  forward, copied to pinned memory without blocking, and the assignment solved in a worker thread
  (scipy releases the GIL) during this step's backward (where it is forced on a CPU, the worker
  computes the cost matrix as well). The pairing is the same assignment of the same noise (same
  generator state, same cost), so training is unchanged bit for bit;
  ``benchmarks/bench_otcfm_pairing.py`` measures the stall.
* Path and target (Eq. 14-15): x_t = t x1 + (1 - t) x0 + sigma eps, u_t = x1 - x0, t ~ U[0, 1];
  loss = ||v_theta(x_t, t) - u_t||^2.
* Sampling: integrate dx/dt = v_theta(x, t) from x(0) = noise to t = 1 (:mod:`autophagy.models.ode`).

The network sees t in [0, 1] as its time label, as torchcfm's UNet does. Images are encoded to
[-1, 1] in NCHW.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from autophagy.config import OTCFMModelConfig
from autophagy.models.image import ImageModel
from autophagy.models.ode import integrate


def ot_cost(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """float64 ``[B, B]`` on their device: ``||x0[i] - x1[j]||^2`` for ``x0``, ``x1`` [B, ...]."""
    return torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()) ** 2


def assignment_order(cost: np.ndarray) -> np.ndarray:
    """int64 ``[B]``: ``order`` such that noise ``order[j]`` goes to data ``j`` in the exact minimum-cost
    assignment of ``cost`` [B, B] (rows: noise, columns: data; scipy's ``linear_sum_assignment``)."""
    rows, cols = linear_sum_assignment(cost)  # noise rows[i] goes to data cols[i]
    order = np.empty_like(rows)
    order[cols] = rows
    return order


def ot_pair(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """``x0`` [B, ...] reordered so that (x0[j], x1[j]) are the pairs of the exact OT plan between
    the two uniform empirical measures under ||x0 - x1||^2 (solved here, synchronously)."""
    order = assignment_order(ot_cost(x0, x1).cpu().numpy())
    return x0[torch.from_numpy(order).to(x0.device)]


_solver: ThreadPoolExecutor | None = None
_solver_lock = threading.Lock()


def pairing_solver() -> ThreadPoolExecutor:
    """The process's one worker thread for :class:`PendingPairing` (created on first use)."""
    global _solver
    with _solver_lock:
        if _solver is None:
            _solver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otcfm-pairing")
        return _solver


def _solve_when_copied(cost: torch.Tensor, copied: torch.cuda.Event) -> np.ndarray:
    copied.synchronize()  # waits for the device work queued up to the copy, not for later steps
    return assignment_order(cost.numpy())


def _solve_on_host(x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
    return assignment_order(ot_cost(x0, x1).numpy())


class PendingPairing:
    """The exact OT pairing of a coming training step, solved in a worker thread while the current
    step runs.

    ``x1`` [B, ...] is that step's encoded data batch; ``noise`` is a copy of the loss-noise
    generator as that step's :meth:`OTCFMModel.loss` will find it. The noise the loss will draw is
    drawn here from the copy. On CUDA its cost matrix (:func:`ot_cost`) is queued on the device,
    copied to pinned memory without blocking, and the assignment (:func:`assignment_order`) solved
    by the worker once the copy has landed; on the CPU the worker computes the cost matrix too
    (torch and scipy release the GIL), beside this step's backward.
    """

    def __init__(self, x1: torch.Tensor, noise: torch.Generator):
        self.noise_state = noise.get_state()
        x0 = torch.randn(x1.shape, generator=noise, device=x1.device)  # what the loss will draw
        if x1.device.type == "cpu":
            self.order: Future[np.ndarray] = pairing_solver().submit(_solve_on_host, x0, x1)
            return
        cost = ot_cost(x0, x1)
        if cost.device.type != "cuda":  # another accelerator: a plain (blocking) copy
            self.order = pairing_solver().submit(assignment_order, cost.cpu().numpy())
            return
        host = torch.empty(cost.shape, dtype=cost.dtype, pin_memory=True)
        host.copy_(cost, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(cost.device))
        self.order = pairing_solver().submit(_solve_when_copied, host, copied)

    def order_for(self, noise_state: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """The noise order ``[B]`` on ``device`` (waiting for the solver if it has not finished),
        or None when the loss-noise generator is not in the state this pairing was drawn from."""
        if not torch.equal(noise_state, self.noise_state):
            return None
        order = torch.from_numpy(self.order.result())
        if device.type == "cuda":  # from pinned memory without blocking: a pageable copy would wait for the device
            return order.pin_memory().to(device, non_blocking=True)
        return order.to(device)


class OTCFMModel(ImageModel):
    """OT-CFM with torchcfm's CIFAR-10 UNet (or the residual MLP) on uint8 images ``[N, H, W, C]``."""

    family = "otcfm"
    #: Solve the next step's OT pairing while the current step runs (:class:`PendingPairing`):
    #: "auto" on CUDA only (on a CPU there is no idle device to keep busy, and the worker competes
    #: with torch's threads for the cores: ``bench_otcfm_pairing.py`` measured no gain there);
    #: True or False: always or never (the same pairing either way, solved earlier or later).
    overlap_pairing: bool | str = "auto"
    _next_pairing: PendingPairing | None = None

    def wants_next_batch(self, device: torch.device) -> bool:
        cfg: OTCFMModelConfig = self.cfg
        if cfg.coupling != "ot":
            return False
        return device.type == "cuda" if self.overlap_pairing == "auto" else bool(self.overlap_pairing)

    def prepare_next(self, x_next: torch.Tensor, noise: torch.Generator) -> None:
        self._next_pairing = PendingPairing(x_next, noise)

    def build_network(self) -> nn.Module:
        cfg: OTCFMModelConfig = self.cfg
        if cfg.network == "mlp":
            return self.build_mlp()
        return self.build_hf_unet("adm", head_channels=cfg.head_channels)

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg: OTCFMModelConfig = self.cfg
        pending, self._next_pairing = self._next_pairing, None
        noise_state = generator.get_state() if pending is not None else None
        x0 = torch.randn(x.shape, generator=generator, device=x.device)
        if cfg.coupling == "ot":
            order = pending.order_for(noise_state, x.device) if pending is not None else None
            x0 = x0[order] if order is not None else ot_pair(x0, x)
        t = torch.rand((x.shape[0],), generator=generator, device=x.device)
        t_ = t.reshape(-1, *([1] * (x.dim() - 1)))
        x_t = t_ * x + (1 - t_) * x0
        if cfg.sigma > 0:
            x_t = x_t + cfg.sigma * torch.randn(x.shape, generator=generator, device=x.device)
        return F.mse_loss(net(x_t, t), x - x0)

    def sample_batch(self, net: nn.Module, noise: torch.Tensor, seed: int, start: int, **options: Any) -> torch.Tensor:
        """``options`` override ``sampler``, ``num_steps``, ``tol`` of the config for this call."""
        cfg: OTCFMModelConfig = dataclasses.replace(self.cfg, **options)
        cfg.validate()
        return integrate(net, noise, cfg.sampler, cfg.num_steps, cfg.tol)
