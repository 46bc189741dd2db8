""":func:`~autophagy.models.noise.index_noise` in one Triton kernel (the CUDA fast path).

Each program takes ``BLOCK`` Philox blocks of the flattened ``[count, blocks]`` grid, forms the
counter ``(block, block >> 32, index, index >> 32)`` of each, runs Philox-4x32-10 with
``triton.language.random.philox_impl`` (the Random123 round and Weyl key bumps of
:func:`~autophagy.models.noise.philox4x32_10`, in registers) and writes the 4 Box-Muller normals
of the block: the words are bit-identical to the torch ops', the float32 log/cos/sin may differ in
their last bits. One launch per call instead of ~150 elementwise kernels over int64 buffers.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

BLOCK = 1024  # Philox blocks (4 normals each) per program


@triton.jit
def _index_noise_kernel(out_ptr, start, count, size, blocks, k0, k1, BLOCK: tl.constexpr):
    flat = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] over [count, blocks]
    row = flat // blocks
    block = flat % blocks
    index = row + start
    c0 = (block & 0xFFFFFFFF).to(tl.uint32)
    c1 = (block >> 32).to(tl.uint32)
    c2 = (index & 0xFFFFFFFF).to(tl.uint32)
    c3 = (index >> 32).to(tl.uint32)
    key0 = tl.full([BLOCK], 0, tl.uint32) + k0.to(tl.uint32)
    key1 = tl.full([BLOCK], 0, tl.uint32) + k1.to(tl.uint32)
    w0, w1, w2, w3 = tl.random.philox_impl(c0, c1, c2, c3, key0, key1, 10)
    scale = 2.0**-32
    radius0 = tl.sqrt(-2.0 * tl.log((w0.to(tl.float32) + 0.5) * scale))
    radius1 = tl.sqrt(-2.0 * tl.log((w2.to(tl.float32) + 0.5) * scale))
    angle0 = (w1.to(tl.float32) + 0.5) * (2 * math.pi * scale)
    angle1 = (w3.to(tl.float32) + 0.5) * (2 * math.pi * scale)
    element = block * 4
    base = out_ptr + row * size + element
    live = row < count
    tl.store(base, radius0 * tl.cos(angle0), mask=live & (element < size))
    tl.store(base + 1, radius0 * tl.sin(angle0), mask=live & (element + 1 < size))
    tl.store(base + 2, radius1 * tl.cos(angle1), mask=live & (element + 2 < size))
    tl.store(base + 3, radius1 * tl.sin(angle1), mask=live & (element + 3 < size))


def fused_index_noise(
    key: tuple[int, int], start: int, count: int, size: int, device: torch.device | str
) -> torch.Tensor:
    """float32 ``[count, size]``: row ``j`` the Philox normals of sample index ``start + j`` under ``key``."""
    out = torch.empty((count, size), dtype=torch.float32, device=device)
    blocks = -(-size // 4)
    if count and blocks:
        grid = (triton.cdiv(count * blocks, BLOCK),)
        _index_noise_kernel[grid](out, start, count, size, blocks, key[0], key[1], BLOCK=BLOCK)
    return out
