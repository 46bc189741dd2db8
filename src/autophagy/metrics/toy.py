"""Metrics for vector samples (2-D toy data, the Gaussian warm-up) against a reference set.

- Sliced Wasserstein-1 distance (Rabin et al. 2011; Bonneel et al. 2015): the mean over
  random unit directions theta of W1(theta^T X, theta^T Y). In one dimension W1 is the L1
  distance between quantile functions, int_0^1 |F^{-1}(u) - G^{-1}(u)| du, which for empirical
  distributions is piecewise constant between the breakpoints {i/n} U {j/m}; it is computed
  exactly, also when the two sizes differ.
- Mean error ||mu_s - mu_r||_2 and covariance error ||Sigma_s - Sigma_r||_F (unbiased covariances).
- For the Gaussian warm-up (Bertrand et al. 2024): ``mean_norm`` = ||mu_s||_2 and
  ``std_mean`` = the mean over dimensions of the per-dimension standard deviation, whose decay
  under fully synthetic retraining is the collapse predicted in closed form.
"""

from __future__ import annotations

import numpy as np


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, *, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between the empirical distributions of ``x`` ``[N, D]`` and ``y`` ``[M, D]``.

    The ``n_projections`` directions are drawn uniformly on the unit sphere from ``seed``, so two
    calls with the same seed use the same directions (comparable across generations). For D = 1
    every direction is +1 or -1 and the result is the exact W1 distance.
    """
    x = _as_vectors("x", x, min_rows=1)
    y = _as_vectors("y", y, min_rows=1)
    _check_same_dim(x, y)
    if n_projections < 1:
        raise ValueError(f"n_projections must be positive, got {n_projections}")
    theta = np.random.default_rng(seed).standard_normal((x.shape[1], n_projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    return float(wasserstein_1d(x @ theta, y @ theta).mean())


def wasserstein_1d(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact W1 between empirical 1-D distributions, column by column.

    Args:
        x: ``[N, P]``, N samples of P distributions; y: ``[M, P]``.

    Returns:
        ``[P]``: int_0^1 |F_x^{-1}(u) - F_y^{-1}(u)| du per column.
    """
    n, m = x.shape[0], y.shape[0]
    xs, ys = np.sort(x, axis=0), np.sort(y, axis=0)
    # Breakpoints of both quantile functions, as exact fractions of the common denominator n*m.
    ticks = np.union1d(np.arange(0, n * m + 1, m), np.arange(0, n * m + 1, n))
    widths = np.diff(ticks) / (n * m)
    mid = ticks[:-1] + np.diff(ticks) / 2  # F^{-1} is constant on each interval
    ix = (mid * n // (n * m)).astype(np.int64)
    iy = (mid * m // (n * m)).astype(np.int64)
    return (np.abs(xs[ix] - ys[iy]) * widths[:, None]).sum(axis=0)


def mean_error(x: np.ndarray, y: np.ndarray) -> float:
    """||mean(x) - mean(y)||_2 for ``x`` ``[N, D]`` and ``y`` ``[M, D]``."""
    x = _as_vectors("x", x, min_rows=1)
    y = _as_vectors("y", y, min_rows=1)
    _check_same_dim(x, y)
    return float(np.linalg.norm(x.mean(axis=0) - y.mean(axis=0)))


def covariance_error(x: np.ndarray, y: np.ndarray) -> float:
    """||cov(x) - cov(y)||_F (unbiased covariances) for ``x`` ``[N, D]`` and ``y`` ``[M, D]``."""
    x = _as_vectors("x", x, min_rows=2)
    y = _as_vectors("y", y, min_rows=2)
    _check_same_dim(x, y)
    return float(np.linalg.norm(_cov(x) - _cov(y)))


def gaussian_summary(x: np.ndarray) -> dict[str, float]:
    """``{"mean_norm": ||mean(x)||_2, "std_mean": mean_d std(x[:, d])}`` (ddof = 1) for ``x`` ``[N, D]``."""
    x = _as_vectors("samples", x, min_rows=2)
    return {
        "mean_norm": float(np.linalg.norm(x.mean(axis=0))),
        "std_mean": float(x.std(axis=0, ddof=1).mean()),
    }


def _cov(x: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.cov(x, rowvar=False))


def _check_same_dim(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} dimensions, the reference has {y.shape[1]}")


def _as_vectors(which: str, x: np.ndarray, *, min_rows: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{which} must be a 2-D array [N, D] of vectors, got shape {x.shape}")
    if x.shape[0] < min_rows:
        need = "a covariance needs at least 2 samples" if min_rows == 2 else "need at least one sample"
        raise ValueError(f"{which}: {need}, got {x.shape[0]}")
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{which} contains NaN or infinite values")
    return x
