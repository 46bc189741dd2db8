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

A tile computes ||a||^2 - 2 a.b + ||b||^2, whose float32 rounding error grows with the norms, not
with the distance: features far from the origin (a common offset of 10^4 on unit clouds) would
lose every digit of the distances. Both sets are therefore first moved, in float64, by the mean of
the real features (a translation changes no distance), so the norms are those of the spread.
What float32 still cannot resolve are distances below about 5e-4 times a point's distance from
that mean (two points 0.01 apart in a mode 150 away from it). Exact copies of a duplicated point,
whose k-NN radius is 0, are covered by its ball at every tiling the tests try, as in the float64
reference.
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
    real, generated = _checked("real", real, k), _checked("generated", generated, k)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dimensions, generated features have {generated.shape[1]}")
    centre = real.mean(axis=0, dtype=np.float64)
    r, g = _centred(real, centre, device, row_chunk), _centred(generated, centre, device, row_chunk)
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


def _checked(which: str, x: np.ndarray, k: int) -> np.ndarray:
    """``x`` as an array, refused unless it is ``[N, F]`` with N > k and finite."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{which} features must be a 2-D array [N, F], got shape {x.shape}")
    if x.shape[0] <= k:
        raise ValueError(f"{which} features: k-NN radii with k={k} need more than {k} samples, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{which} features contain NaN or infinite values")
    return x


def _centred(x: np.ndarray, centre: np.ndarray, device: str | torch.device, row_chunk: int) -> torch.Tensor:
    """``x - centre`` as float32 on ``device``: ``[N, F]``. The subtraction is float64, a block of
    ``row_chunk`` rows at a time, so that no full float64 copy of ``x`` exists."""
    out = torch.empty(x.shape, dtype=torch.float32, device=torch.device(device))
    for i in range(0, x.shape[0], row_chunk):
        out[i : i + row_chunk] = torch.from_numpy(np.subtract(x[i : i + row_chunk], centre, dtype=np.float64))
    return out
