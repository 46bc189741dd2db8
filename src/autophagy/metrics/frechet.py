"""Frechet distance between Gaussians fitted to feature sets (FID when the features are Inception's).

For N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982; the FID of Heusel et al. 2017):

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).

The trace term is computed without a dense matrix square root (``scipy.linalg.sqrtm``, which
clean-fid uses, needs ~10 s for 2048 features on two idle cores). The eigenvalues of S1 S2 are
real and non-negative, and tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i) over them. With a Cholesky
factor S1 = L L^T, S1 S2 = L (L^T S2 L) L^{-1} is similar to the symmetric L^T S2 L, so one
Cholesky factorisation, two matrix products and one symmetric eigenvalue solve (no eigenvectors)
give the trace: ~0.7 s at 2048 features. A covariance with fewer rows than features is singular
and has no Cholesky factor; then the other one is tried, and if both are singular,
S1 = V diag(w) V^T (``eigh``, eigenvectors included, ~2x the cost) gives A = V diag(sqrt(w)) and
the eigenvalues of A^T S2 A, which is orthogonally similar to S1^{1/2} S2 S1^{1/2}. Eigenvalues
that rounding makes slightly negative are clipped to zero. All of it is float64.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import blas


def gaussian_statistics(
    features: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    chunk_rows: int | None = None,
    float64_products: bool = False,
    name: str = "features",
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set, as clean-fid computes them, in one pass.

    The rows are read ``chunk_rows`` at a time and moved to ``device``. The mean is their float64
    sum over N. The covariance sums the outer products of the rows shifted by the mean of the first
    chunk, so that a large common offset cancels before it is squared (the "shifted data"
    algorithm; Chan, Golub & LeVeque 1983). Each chunk is checked for NaN/inf as it arrives. No
    float64 copy of the whole set is made: memory is one chunk plus the ``[F, F]`` accumulator.

    The products (:func:`covariance_products`): on the CPU, float32 features of at least 2F rows
    are multiplied in float32 within a chunk (BLAS ``ssyrk``: one triangle, twice the rate of
    float64 on a CPU) and the chunks' sums are added in float64; on a GPU, for any other dtype and
    for fewer rows, each chunk is multiplied in float64, where the product of two float32 numbers
    is exact. The float32 sums of a chunk round to ~sqrt(chunk_rows) * 2^-24 of the sum of the
    products' magnitudes: the Frechet distance moves by ~1e-8 relative at 50k x 2048
    (``benchmarks/bench_metrics.py``; 1.6e-7 with a condition number of 2.5e10), four orders of
    magnitude below its sampling error, in half the time. A covariance of fewer than 2F rows is
    singular or nearly so, and the square roots of its near-zero eigenvalues amplify that rounding
    (4e-4 relative at 1,200 x 2048): float64 then, which costs little at so few rows.
    ``float64_products=True`` multiplies in float64 everywhere (the reference for the tests).

    Args:
        features: float array ``[N, F]``, one row per item; N >= 2.
        device: torch device of the accumulation (``"cuda"`` is much faster for F = 2048).
        chunk_rows: rows per chunk; by default 4,096 with float32 products (bounds their
            rounding) and 16,384 with float64 ones.
        float64_products: multiply in float64 on the CPU too.
        name: the set's name in error messages (e.g. ``"reference 'train'"``).

    Returns:
        ``(mu, sigma)``: float64 ``[F]`` and ``[F, F]``; ``sigma`` equals
        ``np.cov(features, rowvar=False)`` (divides by N - 1) up to the rounding above, is exactly
        symmetric, and is a ``[1, 1]`` matrix for 1-D data.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, F], got shape {features.shape}")
    n, f = features.shape
    if n < 2:
        raise ValueError(f"{name}: a covariance needs at least 2 samples, got {n}")
    device = torch.device(device)
    products = covariance_products(features.dtype, device, n, f, float64_products=float64_products)
    if chunk_rows is None:
        chunk_rows = 4096 if products == np.float32 else 16384
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    if device.type == "cpu":
        sums = _HostMomentSums(f, products, min(chunk_rows, n))
    else:
        sums = _DeviceMomentSums(f, device)
    for start in range(0, n, chunk_rows):
        chunk = np.ascontiguousarray(features[start : start + chunk_rows])
        if not np.isfinite(chunk).all():
            raise ValueError(f"{name}: contains NaN or infinite values (in rows {start}..{start + len(chunk) - 1})")
        sums.add(chunk)
    return sums.mean_and_covariance(n)


def covariance_products(
    dtype: np.dtype, device: str | torch.device, rows: int, features: int, *, float64_products: bool = False
) -> np.dtype:
    """The dtype :func:`gaussian_statistics` multiplies ``[rows, features]`` of ``dtype`` in on
    ``device``: float32 for float32 features of at least ``2 * features`` rows on the CPU (unless
    ``float64_products``), else float64."""
    cpu_float32 = np.dtype(dtype) == np.float32 and torch.device(device).type == "cpu"
    well_determined = rows >= 2 * features
    return np.dtype(np.float32 if cpu_float32 and well_determined and not float64_products else np.float64)


class _HostMomentSums:
    """Float64 sums of the rows and of the outer products of the rows shifted by the first chunk's
    mean, over numpy chunks ``[rows, F]`` on the CPU (:func:`gaussian_statistics`).

    The outer products are BLAS's symmetric rank-k update (scipy's OpenBLAS), which computes one
    triangle, half the multiply-adds of a general product: ``dsyrk`` straight into the float64 sum
    for float64 products (0.20 s for 4096 x 2048 on this project's two-core machine), ``ssyrk`` for
    float32 ones (0.08 s), its triangle then added to the float64 sum. numpy, not torch: its
    reductions and finiteness check of a float32 chunk are 2.5-20x faster than torch's here. The
    shifted chunk and the float32 triangle live in buffers allocated once: arrays over 32 MiB are
    fresh mappings at every allocation, and their page faults cost ~0.1 s each at 2048 features.
    """

    def __init__(self, features: int, products: np.dtype, chunk_rows: int):
        self.products = products
        self.total = np.zeros(features)
        self.upper = np.zeros((features, features), order="F")  # only its upper triangle is written
        self.shifted = np.empty((chunk_rows, features), dtype=products)
        self.gram = np.zeros((features, features), dtype=np.float32, order="F") if products == np.float32 else None
        self.shift = None

    def add(self, chunk: np.ndarray) -> None:
        if self.shift is None:
            self.shift = chunk.mean(axis=0, dtype=np.float64).astype(self.products)
        self.total += chunk.sum(axis=0, dtype=np.float64)
        shifted = np.subtract(chunk, self.shift, out=self.shifted[: len(chunk)], dtype=self.products)
        # shifted^T is F-contiguous [F, rows]: syrk's A A^T with A = shifted^T, no copy
        if self.gram is None:
            self.upper = blas.dsyrk(1.0, shifted.T, beta=1.0, c=self.upper, overwrite_c=1)
        else:
            self.gram = blas.ssyrk(1.0, shifted.T, beta=0.0, c=self.gram, overwrite_c=1)
            self.upper += self.gram  # its strict lower triangle stays 0

    def mean_and_covariance(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mu [F], sigma [F, F])`` of the ``n`` rows added: sigma = (sum of the shifted outer
        products - n m m^T) / (n - 1), m the shifted rows' mean, on the triangle in place (BLAS
        ``dsyr``), then mirrored: exactly symmetric."""
        shifted_mean = self.total / n - self.shift.astype(np.float64)
        upper = blas.dsyr(-float(n), shifted_mean, a=self.upper, overwrite_a=1)
        upper /= n - 1
        sigma = upper + upper.T  # the strict lower triangle of ``upper`` is 0
        sigma[np.diag_indices_from(sigma)] *= 0.5
        return self.total / n, np.ascontiguousarray(sigma)


class _DeviceMomentSums:
    """:class:`_HostMomentSums` on a torch device (a GPU): float64 products, one ``addmm`` per chunk."""

    def __init__(self, features: int, device: torch.device):
        t = {"dtype": torch.float64, "device": device}
        self.t = t
        self.total, self.shifted_total = torch.zeros(features, **t), torch.zeros(features, **t)
        self.outer = torch.zeros(features, features, **t)
        self.shift = None

    def add(self, chunk: np.ndarray) -> None:
        chunk = torch.as_tensor(chunk).to(**self.t)
        if self.shift is None:
            self.shift = chunk.mean(dim=0)
        self.total += chunk.sum(dim=0)
        shifted = chunk - self.shift  # not in place: a float64 chunk may share the caller's memory
        self.shifted_total += shifted.sum(dim=0)
        self.outer.addmm_(shifted.T, shifted)

    def mean_and_covariance(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        shifted_mean = self.shifted_total / n
        sigma = (self.outer - n * torch.outer(shifted_mean, shifted_mean)) / (n - 1)
        sigma = 0.5 * (sigma + sigma.T)  # a matrix product of X^T and X is not bitwise symmetric
        return (self.total / n).cpu().numpy(), sigma.cpu().numpy()


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    device: str | torch.device = "cpu",
) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (module docstring).

    Args:
        mu1, mu2: means ``[F]``.
        sigma1, sigma2: symmetric positive semi-definite covariances ``[F, F]``.
        device: torch device for the float64 linear algebra (``"cuda"`` is much faster for
            F = 2048).

    Returns:
        The distance as a Python float, clipped at 0 (rounding can make equal statistics
        come out at -1e-12).
    """
    mu1, sigma1 = _check_statistics("1", mu1, sigma1)
    mu2, sigma2 = _check_statistics("2", mu2, sigma2)
    if mu1.shape[0] != mu2.shape[0]:
        raise ValueError(f"mu1 has {mu1.shape[0]} features, mu2 has {mu2.shape[0]}")
    t = {"dtype": torch.float64, "device": torch.device(device)}
    m1, s1, m2, s2 = (torch.as_tensor(a, **t) for a in (mu1, sigma1, mu2, sigma2))
    tr_covmean = trace_sqrt_product(s1, s2)
    diff = m1 - m2
    d2 = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return max(float(d2), 0.0)


def trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """tr((S1 S2)^{1/2}) of two symmetric positive semi-definite float64 ``[F, F]`` tensors, as a
    0-d tensor: through the Cholesky factor of S1 (or of S2: the trace is symmetric in the two),
    or, when both are singular, through the eigendecomposition of S1 (module docstring)."""
    for factored, other in ((s1, s2), (s2, s1)):
        cholesky, info = torch.linalg.cholesky_ex(factored)
        if int(info) == 0:
            inner = _lower_congruence(cholesky, other)
            break
    else:
        w, v = torch.linalg.eigh(s1)
        a = v * w.clamp(min=0).sqrt()  # A = V diag(sqrt(w)), so A A^T = S1
        inner = a.T @ s2 @ a
    inner = 0.5 * (inner + inner.T)
    return torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum()


def _lower_congruence(lower: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """L^T S L of a lower-triangular L and a symmetric S, both ``[F, F]`` float64: on the CPU as
    two triangular products (BLAS ``dtrmm``: half the multiply-adds of general ones, 0.18 s
    instead of 0.39 s at F = 2048 on two cores), on a GPU as two matrix products."""
    if lower.device.type != "cpu":
        return lower.T @ s @ lower
    lower = np.asfortranarray(lower.numpy())  # LAPACK's factor is already column-major: no copy
    s_lower = blas.dtrmm(1.0, lower, s.numpy().T, side=1, lower=1)  # S L (S^T = S, F-contiguous)
    return torch.from_numpy(blas.dtrmm(1.0, lower, s_lower, side=0, lower=1, trans_a=1, overwrite_b=1))


def _check_statistics(which: str, mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1:
        raise ValueError(f"mu{which} must be a vector [F], got shape {mu.shape}")
    f = mu.shape[0]
    if sigma.shape != (f, f):
        raise ValueError(f"sigma{which} must be [{f}, {f}] to match mu{which}, got shape {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"mu{which} or sigma{which} contains NaN or infinite values")
    return mu, sigma
