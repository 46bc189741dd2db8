"""Integrators of dx/dt = v(x, t) from t = 0 to t = 1, for flow-matching samplers.

``euler`` and ``midpoint`` take ``num_steps`` equal steps (``num_steps`` and ``2 num_steps``
network evaluations); they are written out because torchdiffeq's fixed-grid solvers either
return the state at every grid time (memory O(steps x batch)) or round a step size to a step
count. ``dopri5`` is torchdiffeq's adaptive Dormand-Prince 5(4) with ``atol = rtol = tol``, as
in torchcfm's CIFAR-10 evaluation. Its step sizes are chosen per batch, so a row agrees across
batchings to within the tolerance, not bit for bit.

``velocity(x [B, ...], t [1]) -> [B, ...]``: one time for the whole batch, broadcast by the network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchdiffeq import odeint

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METHODS = ("euler", "midpoint", "dopri5")


def integrate(
    velocity: Velocity, x0: torch.Tensor, method: str, num_steps: int = 100, tol: float = 1e-5
) -> torch.Tensor:
    """x(1) from x(0) = ``x0`` [B, ...]."""
    at = lambda t: torch.full((1,), float(t), dtype=x0.dtype, device=x0.device)  # noqa: E731  one level for the batch
    if method == "dopri5":
        span = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
        return odeint(lambda t, x: velocity(x, at(t)), x0, span, method="dopri5", atol=tol, rtol=tol)[-1]
    if method not in METHODS:
        raise ValueError(f"unknown ODE method {method!r}; allowed: {', '.join(METHODS)}")
    h = 1.0 / num_steps
    x = x0
    for i in range(num_steps):
        t = i * h
        if method == "euler":
            x = x + h * velocity(x, at(t))
        else:
            x = x + h * velocity(x + 0.5 * h * velocity(x, at(t)), at(t + 0.5 * h))
    return x
