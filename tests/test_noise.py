"""Per-sample-index noise (autophagy.models.noise): Philox-4x32-10 known answers, batch-split
invariance, and the statistics of the normals. The statistical checks use fixed seeds and bounds
of 6 standard errors, so they are deterministic and far from their limits."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from autophagy.models import noise
from autophagy.models.noise import MASK32, PHILOX_M, PHILOX_W, index_noise, philox4x32_10

pytestmark = pytest.mark.usefixtures("one_thread")

N_ROWS, N_COLS = 1000, 1000  # 1e6 draws
SE = 1 / np.sqrt(N_ROWS * N_COLS)  # standard error of a mean or correlation of 1e6 unit-variance draws

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key, output).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.fixture(scope="module")
def draws() -> torch.Tensor:
    return index_noise(2024, 0, N_ROWS, (N_COLS,))


@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT)
def test_philox_matches_the_random123_known_answers(counter, key, expected):
    words = philox4x32_10(tuple(torch.tensor([c], dtype=torch.int64) for c in counter), key)
    assert tuple(int(w) for w in words) == expected


def test_philox_broadcasts_its_counter_words():
    """Counter words of shapes [2, 1] and [1, 3] give [2, 3] outputs, each the scalar answer."""
    counter = (
        torch.tensor([[0], [0xFFFFFFFF]]),
        torch.tensor([[0, 0, 0]]),
        torch.zeros(1, 1, dtype=torch.int64),
        torch.tensor([[0, 1, 2]]),
    )
    words = philox4x32_10(counter, (5, 6))
    assert all(w.shape == (2, 3) for w in words)
    one = philox4x32_10(tuple(torch.tensor([v]) for v in (0xFFFFFFFF, 0, 0, 2)), (5, 6))
    assert [int(w[1, 2]) for w in words] == [int(w) for w in one]


def philox_in_python_integers(counter: tuple[int, ...], key: tuple[int, int]) -> tuple[int, ...]:
    """Random123's Philox-4x32-10 round by round in Python's unbounded integers (no wrap-around to trust)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
        p0, p1 = PHILOX_M[0] * c0, PHILOX_M[1] * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32
    return c0, c1, c2, c3


def test_philox_is_the_integer_arithmetic_on_random_and_extreme_words():
    """The in-place int64 rounds (products modulo 2^64, low words masked only after the last round)
    give Philox's exact words for 200 random counters and keys and the words' extreme values."""
    rng = np.random.default_rng(0)
    counters = [tuple(int(v) for v in rng.integers(0, 2**32, 4)) for _ in range(200)]
    counters += [(MASK32, MASK32, MASK32, MASK32), (0, MASK32, 0, MASK32), (2**31, 2**31 - 1, 2**31, 1)]
    key = (0xFFFFFFFE, 0x80000001)
    words = philox4x32_10(tuple(torch.tensor(column, dtype=torch.int64) for column in zip(*counters)), key)
    assert [tuple(int(w[i]) for w in words) for i in range(len(counters))] == [
        philox_in_python_integers(c, key) for c in counters
    ]


def test_rows_do_not_depend_on_how_the_range_is_split():
    whole = index_noise(7, 0, 10, (3, 5))
    assert whole.shape == (10, 3, 5) and whole.dtype == torch.float32
    assert torch.equal(whole[3:8], index_noise(7, 3, 5, (3, 5)))
    assert torch.equal(
        whole, torch.cat([index_noise(7, 0, 4, (3, 5)), index_noise(7, 4, 1, (3, 5)), index_noise(7, 5, 5, (3, 5))])
    )
    assert len({row.numpy().tobytes() for row in whole}) == 10


def test_chunked_rows_are_the_one_pass_rows(monkeypatch):
    """On a CPU the rows are made a cache-sized chunk at a time: any chunk size gives the same bits."""
    one_pass = index_noise(11, 5, 37, (3, 4, 4), stream=2)
    for words in (1, 12, 13, 64):  # a row per chunk, rows split across the 12-block row, several rows
        monkeypatch.setattr(noise, "CHUNK_WORDS", words)
        assert torch.equal(index_noise(11, 5, 37, (3, 4, 4), stream=2), one_pass)


FUSED_CHECK = """
import math
import torch
from autophagy.models.noise import index_noise, philox_key
from autophagy.models.noise_kernel import fused_index_noise
cases = [(0, 0, 5, (3, 4, 4), 1), (7, 2**40, 3, (7,), 999), (1, 2**33 - 2, 4, (2,), 5)]
for seed, start, count, shape, stream in cases:
    key, size = philox_key(seed, stream), math.prod(shape)
    fused = fused_index_noise(key, start, count, size, "cpu")
    assert fused.shape == (count, size) and fused.dtype == torch.float32
    eager = index_noise(seed, start, count, shape, stream=stream, fused=False).reshape(count, size)
    torch.testing.assert_close(fused, eager, rtol=0, atol=1e-6)
    assert torch.equal(fused[1:], fused_index_noise(key, start + 1, count - 1, size, "cpu"))
print("ok")
"""


def test_the_fused_triton_kernel_is_the_torch_noise():
    """The CUDA kernel, run by Triton's interpreter on the CPU: the same Philox words (so the normals
    agree to float32 rounding of log/cos/sin) and the same split invariance."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", FUSED_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_values_depend_only_on_the_flat_element_position():
    assert torch.equal(index_noise(1, 0, 4, (2, 3)).reshape(4, 6), index_noise(1, 0, 4, (6,)))
    assert torch.equal(index_noise(1, 0, 4, (8,))[:, :5], index_noise(1, 0, 4, (5,)))


def test_seeds_streams_and_indices_give_different_noise():
    base = index_noise(7, 0, 10, (3, 2))
    for other in (
        index_noise(8, 0, 10, (3, 2)),
        index_noise(7, 0, 10, (3, 2), stream=1),
        index_noise(7, 10, 10, (3, 2)),
        index_noise(7, 2**40, 10, (3, 2)),
    ):
        assert (base != other).all()


def test_moments_and_neighbour_correlations(draws):
    z = draws.to(torch.float64)
    assert abs(float(z.mean())) < 6 * SE
    assert abs(float(z.var()) - 1) < 6 * np.sqrt(2) * SE  # Var of the sample variance of N(0, 1) is 2 / n
    for a, b in ((z[:, :-1], z[:, 1:]), (z[:-1], z[1:]), (z[:, 0::2], z[:, 1::2])):  # neighbours, rows, pairs
        assert abs(float((a * b).mean())) < 6 * SE
    tail = float((z.abs() > 3).to(torch.float64).mean())  # P(|z| > 3) = 0.0026998
    p = 2 * stats.norm.sf(3)
    assert abs(tail - p) < 6 * np.sqrt(p * (1 - p)) * SE


def test_kolmogorov_smirnov_against_the_normal(draws):
    assert stats.kstest(draws.flatten().numpy(), "norm").pvalue > 1e-3


def test_the_compiled_cpu_kernel_is_the_torch_noise():
    """``fused=True`` on a CPU (Inductor's C++ loop, compiled once for every shape): the normals of
    the eager ops to float32 rounding of log/cos/sin, the same split invariance, any row length."""
    cases = [(0, 0, 64, (1, 8, 8), 1), (7, 2**40, 3, (7,), 999), (1, 2**33 - 2, 5, (3, 5, 5), 5)]
    for seed, start, count, shape, stream in cases:
        fused = index_noise(seed, start, count, shape, stream=stream, fused=True)
        assert fused.shape == (count, *shape) and fused.dtype == torch.float32
        torch.testing.assert_close(fused, index_noise(seed, start, count, shape, stream=stream), rtol=0, atol=1e-6)
        assert torch.equal(fused[2:], index_noise(seed, start + 2, count - 2, shape, stream=stream, fused=True))
    assert index_noise(0, 0, 0, (7,), fused=True).shape == (0, 7)


def test_dtypes_and_device():
    z32 = index_noise(3, 0, 64, (7,), device="cpu")
    z64 = index_noise(3, 0, 64, (7,), dtype=torch.float64)
    assert z32.device.type == "cpu" and z64.dtype == torch.float64
    torch.testing.assert_close(z64, z32.to(torch.float64), rtol=0, atol=1e-5)
    assert index_noise(3, 0, 64, (7,), dtype=torch.bfloat16).dtype == torch.bfloat16
    assert index_noise(3, 0, 0, (7,)).shape == (0, 7) and index_noise(3, 0, 2, ()).shape == (2,)


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True])
def test_cuda_noise_is_the_cpu_noise(fused):
    """The integer words are bit-identical; log/cos/sin may differ in the last float bits. On CUDA
    the default is the fused Triton kernel."""
    on_gpu = index_noise(5, 100, 256, (3, 8, 8), stream=9, device="cuda", fused=fused)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), index_noise(5, 100, 256, (3, 8, 8), stream=9), rtol=0, atol=1e-5)
    torch.testing.assert_close(index_noise(5, 100, 256, (3, 8, 8), stream=9, device="cuda"), on_gpu, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(seed=-1), "seed"),
        (dict(start=-2), "start"),
        (dict(stream=1.5), "stream"),
        (dict(start=2**63 - 1, count=1), "2\\^63"),
        (dict(dtype=torch.int64), "floating-point"),
        (dict(dtype=torch.float64, fused=True), "float32"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    args = dict(seed=0, start=0, count=1, shape=(2,)) | kwargs
    with pytest.raises(ValueError, match=message):
        index_noise(**args)


def test_a_fused_kernel_that_fails_falls_back_to_torch_ops_once_with_a_warning(monkeypatch):
    """The automatic choice (a CUDA device, here stood in for by patching the choice) survives a
    Triton compiler failure: a warning, the same noise from torch ops, and no second attempt."""
    from autophagy.models import noise

    attempts = []

    def failing_kernel(*args):
        attempts.append(args)
        raise RuntimeError("stand-in for a Triton compilation error")

    monkeypatch.setattr(noise, "_TRITON_FAILED", [])
    monkeypatch.setattr(noise, "_fused_by_default", lambda device, work: not noise._TRITON_FAILED)
    monkeypatch.setattr(noise, "_fused_kernel", lambda device: failing_kernel)
    expected = noise.index_noise(3, 5, 4, (3, 2, 2), fused=False)
    with pytest.warns(UserWarning, match="fused noise kernel failed .*RuntimeError"):
        first = noise.index_noise(3, 5, 4, (3, 2, 2))
    second = noise.index_noise(3, 5, 4, (3, 2, 2))
    assert torch.equal(first, expected) and torch.equal(second, expected) and len(attempts) == 1
    with pytest.raises(RuntimeError, match="stand-in"):  # asked for explicitly, the failure is not hidden
        noise.index_noise(3, 5, 4, (3, 2, 2), fused=True)
