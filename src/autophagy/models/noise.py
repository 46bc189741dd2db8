"""Per-sample-index Gaussian noise from a counter-based RNG, computed on any torch device.

Row ``j`` of :func:`index_noise` depends only on ``(seed, start + j, stream)`` and the element
position, so a sample set is reproducible however it is split into batches, GPUs or pods, and
the noise is made directly on the target device in a few vectorised kernels (no Python per row,
no host-to-device copy).

* Bits: Philox-4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
  SC 2011, Sec. 4.2): a 10-round bijection of a 128-bit counter ``(c0, c1, c2, c3)`` under a 64-bit
  key ``(k0, k1)``. Each round is ``hi0, lo0 = mulhilo(M0, c0)``, ``hi1, lo1 = mulhilo(M1, c2)``,
  ``c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)``; the key is bumped by the Weyl constants
  ``(W0, W1)`` between rounds. Words are held in int64 tensors; a 32x32-bit product is one int64
  multiply (its 64 bits, modulo 2^64), split into its high and low words.
* Key: two 32-bit words of ``numpy.random.SeedSequence([seed, stream])``.
* Counter: ``(block, block >> 32, index, index >> 32)`` (low 32 bits of each), where ``index`` is
  the sample index and ``block`` numbers the groups of 4 elements of one row.
* Normals: each 32-bit word ``w`` becomes ``u = (w + 1/2) 2^-32`` in (0, 1), and the two pairs of a
  block become 4 standard normals by the Box-Muller transform (Box & Muller 1958):
  ``z = sqrt(-2 ln u_a) (cos 2 pi u_b, sin 2 pi u_b)``.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

MASK32 = 0xFFFFFFFF
PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # round multipliers
PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # key bumps (golden ratio, sqrt(3) - 1)
PHILOX_ROUNDS = 10

Words = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def philox4x32_10(counter: Words, key: tuple[int, int]) -> Words:
    """Philox-4x32-10 of ``counter`` (4 broadcastable int64 tensors holding 32-bit words) under ``key``.

    Returns the 4 output words: int64 tensors of the broadcast shape, values in [0, 2^32). The
    rounds run in place in 5 buffers of that shape (allocating is what costs most on a CPU), 10
    passes over them per round:

    * a 32x32-bit product is one int64 multiply: below 2^64, torch keeps it modulo 2^64 in two's
      complement (as every CPU and CUDA integer unit does), so its low 32 bits are the low word and
      its arithmetic shift by 32 has the high word in its low 32 bits;
    * the low words (the next ``c1``, ``c3``) are left unmasked: bits above 32 only reach the
      multiplied words through a XOR, which is masked to 32 bits before the next multiply. The two
      unmasked words are masked once, after the last round.
    """
    if any(c.dtype != torch.int64 for c in counter):
        raise TypeError("philox4x32_10 needs int64 counter words")
    if not all(0 <= k <= MASK32 for k in key):
        raise ValueError(f"philox4x32_10 needs a key of two 32-bit words, got {key}")
    shape = torch.broadcast_shapes(*(c.shape for c in counter))
    c0, c1, c2, c3 = (c.expand(shape).clone(memory_format=torch.contiguous_format) for c in counter)
    free = torch.empty_like(c0)
    k0, k1 = key
    for round_ in range(PHILOX_ROUNDS):
        if round_:
            k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
        lo0 = torch.mul(c0, PHILOX_M[0], out=free)
        torch.bitwise_right_shift(lo0, 32, out=c0)  # hi0 in the low 32 bits
        c0.bitwise_xor_(c3).bitwise_xor_(k1).bitwise_and_(MASK32)  # the next c2 = hi0 ^ c3 ^ k1; c3 is free now
        lo1 = torch.mul(c2, PHILOX_M[1], out=c3)
        torch.bitwise_right_shift(lo1, 32, out=c2)
        c2.bitwise_xor_(c1).bitwise_xor_(k0).bitwise_and_(MASK32)  # the next c0 = hi1 ^ c1 ^ k0; c1 is free now
        c0, c1, c2, c3, free = c2, lo1, c0, lo0, c1
    return c0, c1.bitwise_and_(MASK32), c2, c3.bitwise_and_(MASK32)


def philox_key(seed: int, stream: int) -> tuple[int, int]:
    """The Philox key of ``(seed, stream)``: two 32-bit words of ``SeedSequence([seed, stream])``."""
    k0, k1 = np.random.SeedSequence([seed, stream]).generate_state(2, np.uint32)
    return int(k0), int(k1)


def index_noise(
    seed: int,
    start: int,
    count: int,
    shape: tuple[int, ...],
    stream: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    fused: bool | None = None,
) -> torch.Tensor:
    """Standard normal noise ``[count, *shape]`` where row ``j`` depends only on ``(seed, start + j, stream)``.

    Made on ``device`` (default CPU) in ``dtype``; the uniforms and Box-Muller run in float64 when
    ``dtype`` is float64 and in float32 otherwise, so the values agree across dtypes to rounding.
    ``seed``, ``start``, ``count`` and ``stream`` are non-negative integers with ``start + count < 2^63``.

    ``fused`` makes float32 noise in one kernel: on CUDA a Triton kernel
    (:mod:`autophagy.models.noise_kernel`), on a CPU Inductor's C++ loop
    (:mod:`autophagy.models.noise_compiled`, compiled once per process: tens of seconds the first
    time on a machine). Either gives the same integer words; its log/cos/sin may differ from
    torch's in the last float bits. None: fused on CUDA when Triton is installed, never on a CPU.
    Otherwise torch ops run over chunks of about ``CHUNK_WORDS`` words (on a CPU the chunk's
    buffers stay in cache: the same values, ~3x faster than one pass over the whole batch); peak
    memory is then the output plus ~2 MB.
    """
    for name, value in (("seed", seed), ("start", start), ("count", count), ("stream", stream)):
        if int(value) != value or value < 0:
            raise ValueError(f"index_noise needs a non-negative integer {name}, got {value!r}")
    if start + count >= 2**63:
        raise ValueError(f"index_noise needs start + count below 2^63 (int64), got start={start} count={count}")
    if not dtype.is_floating_point:
        raise ValueError(f"index_noise makes floating-point noise, got dtype {dtype}")
    device = torch.device("cpu" if device is None else device)
    size = math.prod(shape)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    key = philox_key(seed, stream)
    automatic = fused is None
    if automatic:
        fused = _fused_by_default(device, work)
    if fused:
        if work != torch.float32:
            raise ValueError(f"the fused noise kernel makes float32 noise, got dtype {dtype}")
        try:
            return _fused_kernel(device)(key, start, count, size, device).reshape(count, *shape).to(dtype)
        except Exception as err:  # a compiler on a device it has not met: torch ops make the same words
            if not automatic:
                raise
            _TRITON_FAILED.append(err)
            warnings.warn(f"the fused noise kernel failed ({type(err).__name__}: {err}); using torch ops", stacklevel=2)
    blocks = -(-size // 4)
    z = torch.empty((count, blocks, 2, 2), dtype=work, device=device)  # [row, block, pair, (cos, sin)]
    block = torch.arange(blocks, dtype=torch.int64, device=device).unsqueeze(0)  # [1, blocks]
    block_words = (block & MASK32, block >> 32)
    rows = count if device.type != "cpu" else max(1, CHUNK_WORDS // max(blocks, 1))
    for first in range(0, count, rows):
        chunk = z[first : first + rows]
        index = torch.arange(start + first, start + first + len(chunk), dtype=torch.int64, device=device)
        index = index.unsqueeze(1)  # [rows, 1]
        _box_muller_into(chunk, philox4x32_10((*block_words, index & MASK32, index >> 32), key))
    return z.reshape(count, 4 * blocks)[:, :size].reshape(count, *shape).to(dtype)


#: The fused kernel's failure in this process, if it failed: the automatic choice stops using it.
_TRITON_FAILED: list[Exception] = []
CHUNK_WORDS = 1 << 15  # words per Philox buffer on a CPU (256 KiB of int64): 5 of them stay in cache


def _box_muller_into(z: torch.Tensor, words: Words) -> None:
    """4 normals per Philox block into ``z`` [rows, blocks, 2, 2] (pair, (cos, sin)), in ``z``'s dtype."""
    work = z.dtype
    for pair, (a, b) in enumerate((words[:2], words[2:])):
        radius = a.to(work).add_(0.5).mul_(2.0**-32).log_().mul_(-2.0).sqrt_()  # sqrt(-2 ln u_a)
        angle = b.to(work).add_(0.5).mul_(2 * math.pi * 2.0**-32)  # 2 pi u_b
        torch.cos(angle, out=z[:, :, pair, 0]).mul_(radius)
        torch.sin(angle, out=z[:, :, pair, 1]).mul_(radius)


def _fused_kernel(device: torch.device):
    """``kernel(key, start, count, size, device) -> float32 [count, size]`` for ``device``."""
    if device.type == "cpu":
        from autophagy.models.noise_compiled import compiled_index_noise as kernel
    else:
        from autophagy.models.noise_kernel import fused_index_noise as kernel
    return kernel


def _fused_by_default(device: torch.device, work: torch.dtype) -> bool:
    """The fused kernel for float32 noise on CUDA, with Triton installed, unless it failed in this process."""
    return device.type == "cuda" and work == torch.float32 and _triton_available() and not _TRITON_FAILED


@functools.cache
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
