""":func:`~autophagy.models.noise.index_noise` as one compiled loop on a CPU (``torch.compile``).

The eager torch ops of :mod:`autophagy.models.noise` make the Philox words in ~100 passes over
int64 buffers and the Box-Muller normals in ~25 more: on a CPU that is ~7x the time of
``torch.randn`` for the same number of floats, a few percent of every ancestral step of a small
network. Inductor compiles the same arithmetic into one C++ loop that keeps each block's four
words in registers: the same integer words (bit for bit), normals that may differ from the eager
ones in the last float bits of log/cos/sin, about as fast as ``torch.randn``.

The function is compiled once per process for every batch size and shape (``dynamic=True``; the
seed's key and the first index are tensors, so a new stream or batch does not recompile). Compiling
needs a C++ compiler and takes tens of seconds the first time on a machine (seconds once Inductor's
on-disk cache holds it), so it is used where sampling is compiled anyway (``sample.compile``).
"""

from __future__ import annotations

import functools
import math

import torch

from autophagy.models.noise import MASK32, PHILOX_M, PHILOX_ROUNDS, PHILOX_W


def _philox_box_muller(start: torch.Tensor, key: torch.Tensor, count: int, blocks: int) -> torch.Tensor:
    """float32 ``[count, 4 * blocks]``: the normals of sample indices ``start .. start + count - 1``
    under the Philox ``key`` ([2] int64, two 32-bit words), in the element order of the eager path."""
    block = torch.arange(blocks, dtype=torch.int64).unsqueeze(0)  # [1, blocks]
    index = torch.arange(count, dtype=torch.int64).unsqueeze(1) + start  # [count, 1]
    c0, c1, c2, c3 = torch.broadcast_tensors(block & MASK32, block >> 32, index & MASK32, index >> 32)
    k0, k1 = key[0], key[1]
    for round_ in range(PHILOX_ROUNDS):
        if round_:
            k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
        product0, product1 = c0 * PHILOX_M[0], c2 * PHILOX_M[1]
        c0, c1, c2, c3 = (
            ((product1 >> 32) & MASK32) ^ c1 ^ k0,
            product1 & MASK32,
            ((product0 >> 32) & MASK32) ^ c3 ^ k1,
            product0 & MASK32,
        )
    normals = []
    for a, b in ((c0, c1), (c2, c3)):
        radius = ((a.to(torch.float32) + 0.5) * 2.0**-32).log().mul(-2.0).sqrt()  # sqrt(-2 ln u_a)
        angle = (b.to(torch.float32) + 0.5) * (2 * math.pi * 2.0**-32)  # 2 pi u_b
        normals += [torch.cos(angle) * radius, torch.sin(angle) * radius]
    return torch.stack(normals, dim=-1).reshape(count, 4 * blocks)  # [row, block, (pair, (cos, sin))]


@functools.cache
def _compiled():
    return torch.compile(_philox_box_muller, dynamic=True, fullgraph=True)


def compiled_index_noise(
    key: tuple[int, int], start: int, count: int, size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """float32 ``[count, size]`` on the CPU: row ``j`` the Philox normals of sample index ``start + j``."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"compiled_index_noise makes noise on the CPU, got device {device}")
    blocks = -(-size // 4)
    if not count or not blocks:
        return torch.empty((count, size), dtype=torch.float32)
    normals = _compiled()(torch.tensor(start), torch.tensor(key, dtype=torch.int64), count, blocks)
    return normals[:, :size]
