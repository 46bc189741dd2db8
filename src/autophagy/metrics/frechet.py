"""Frechet distance between Gaussians fitted to feature sets (FID when the features are Inception's).

For N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982; the FID of Heusel et al. 2017):

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).

The trace term is computed without a dense matrix square root (``scipy.linalg.sqrtm`` needs ~14 s
for 2048 features on two cores). S1 S2 is similar to the symmetric positive semi-definite matrix
S1^{1/2} S2 S1^{1/2}, so tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i) over the eigenvalues lambda_i of
that matrix. With S1 = V diag(w) V^T (``eigh``) and A = V diag(sqrt(w)), the matrix A^T S2 A is
orthogonally similar to S1^{1/2} S2 S1^{1/2} and needs one product fewer. Eigenvalues that
rounding makes slightly negative are clipped to zero. Two symmetric eigendecompositions in
float64 replace the Schur decomposition of a non-symmetric product.
"""

from __future__ import annotations

import numpy as np
import torch


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set, as clean-fid computes them.

    Args:
        features: float array ``[N, F]``, one row per item; N >= 2.

    Returns:
        ``(mu, sigma)``: float64 ``[F]`` and ``[F, F]``; ``sigma`` equals
        ``np.cov(features, rowvar=False)`` (divides by N - 1), as a ``[1, 1]`` matrix for 1-D data.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array [N, F], got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {features.shape[0]}")
    features = features.astype(np.float64, copy=False)
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    # np.cov of one column is 0-d: atleast_2d keeps sigma [F, F] when F = 1 (1-D data).
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


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
    w, v = torch.linalg.eigh(s1)
    a = v * w.clamp(min=0).sqrt()  # A = V diag(sqrt(w)), so A A^T = S1
    inner = a.T @ s2 @ a
    inner = 0.5 * (inner + inner.T)
    tr_covmean = torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum()
    diff = m1 - m2
    d2 = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return max(float(d2), 0.0)


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
