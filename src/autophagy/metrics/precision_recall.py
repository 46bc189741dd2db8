"""Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019, Eqs. 1-3).

Each feature set approximates its manifold by the union of k-NN balls: the ball around x_i has
radius NND_k(x_i), the distance to the k-th nearest *other* point of the same set. Then

    f(x, Phi) = 1 if ||x - x'|| <= NND_k(x') for some x' in Phi, else 0,      (Eq. 1)
    precision = mean_{g in generated} f(g, Phi_real),                         (Eq. 2)
    recall    = mean_{r in real}      f(r, Phi_generated).                    (Eq. 3)

Distances are float32, computed in tiles of ``row_chunk x col_chunk`` so that 50k x 50k sets never
materialise the full distance matrix: the k-NN radii merge per-tile ``topk`` results, and the
coverage test ORs per-tile ball memberships. Squared distances are compared with squared radii
(the square root is monotone).
"""

from __future__ import annotations

import numpy as np
import torch


def precision_recall(
    real: np.ndarray,
    generated: np.ndarray,
    *,
    k: int = 3,
    device: str | torch.device = "cpu",
    row_chunk: int = 2048,
    col_chunk: int = 8192,
) -> tuple[float, float]:
    """Improved precision and recall of ``generated`` with respect to ``real``.

    Args:
        real: float ``[N, F]`` reference features, N > k.
        generated: float ``[M, F]`` features of the model's samples, M > k.
        k: neighbourhood size for the radii (the paper uses k = 3).
        device: torch device for the distance tiles.
        row_chunk, col_chunk: tile shape; memory is about ``4 * row_chunk * col_chunk`` bytes.

    Returns:
        ``(precision, recall)``, each in [0, 1].
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if row_chunk < 1 or col_chunk < 1:
        raise ValueError(f"row_chunk and col_chunk must be positive, got {row_chunk} and {col_chunk}")
    r = _as_features("real", real, k, device)
    g = _as_features("generated", generated, k, device)
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"real features have {r.shape[1]} dimensions, generated features have {g.shape[1]}")
    r_radii2 = knn_radii_squared(r, k, row_chunk=row_chunk, col_chunk=col_chunk)
    g_radii2 = knn_radii_squared(g, k, row_chunk=row_chunk, col_chunk=col_chunk)
    precision = _coverage(g, r, r_radii2, row_chunk=row_chunk, col_chunk=col_chunk)
    recall = _coverage(r, g, g_radii2, row_chunk=row_chunk, col_chunk=col_chunk)
    return precision, recall


def knn_radii_squared(x: torch.Tensor, k: int, *, row_chunk: int = 2048, col_chunk: int = 8192) -> torch.Tensor:
    """Squared distance from each row of ``x`` ``[N, F]`` to its k-th nearest other row: ``[N]``.

    The k+1 smallest distances of a row include the row itself (distance 0, the minimum), so the
    (k+1)-th smallest is the k-th nearest other point; duplicates of the row count as neighbours.
    """
    n = x.shape[0]
    radii = torch.empty(n, dtype=x.dtype, device=x.device)
    x_sq = _squared_norms(x)
    for i in range(0, n, row_chunk):
        rows, rows_sq = x[i : i + row_chunk], x_sq[i : i + row_chunk]
        best = None  # [rows, <= k + 1] smallest squared distances so far
        for j in range(0, n, col_chunk):
            d2 = _squared_distances(rows, rows_sq, x[j : j + col_chunk], x_sq[j : j + col_chunk])
            if best is not None:
                d2 = torch.cat([best, d2], dim=1)
            best = torch.topk(d2, min(k + 1, d2.shape[1]), dim=1, largest=False).values
        radii[i : i + row_chunk] = best[:, k]
    return radii


def _coverage(
    queries: torch.Tensor, centres: torch.Tensor, radii2: torch.Tensor, *, row_chunk: int, col_chunk: int
) -> float:
    """Fraction of ``queries`` ``[M, F]`` inside some ball (``centres`` ``[N, F]``, ``radii2`` ``[N]``)."""
    q_sq, c_sq = _squared_norms(queries), _squared_norms(centres)
    covered = 0
    for i in range(0, queries.shape[0], row_chunk):
        rows, rows_sq = queries[i : i + row_chunk], q_sq[i : i + row_chunk]
        inside = torch.zeros(rows.shape[0], dtype=torch.bool, device=queries.device)
        for j in range(0, centres.shape[0], col_chunk):
            d2 = _squared_distances(rows, rows_sq, centres[j : j + col_chunk], c_sq[j : j + col_chunk])
            inside |= (d2 <= radii2[j : j + col_chunk]).any(dim=1)
        covered += int(inside.sum())
    return covered / queries.shape[0]


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def _squared_distances(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 = ||a_i||^2 - 2 a_i.b_j + ||b_j||^2, clamped at 0 against rounding: ``[A, B]``."""
    return (a_sq[:, None] - 2.0 * (a @ b.T) + b_sq[None, :]).clamp_(min=0)


def _as_features(which: str, x: np.ndarray, k: int, device: str | torch.device) -> torch.Tensor:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{which} features must be a 2-D array [N, F], got shape {x.shape}")
    if x.shape[0] <= k:
        raise ValueError(f"{which} features: k-NN radii with k={k} need more than {k} samples, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{which} features contain NaN or infinite values")
    return torch.as_tensor(x, dtype=torch.float32, device=torch.device(device))
