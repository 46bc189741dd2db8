"""Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019, Eqs. 1-3).

Each feature set approximates its manifold by the union of k-NN balls: the ball around x_i has
radius NND_k(x_i), the distance to the k-th nearest *other* point of the same set. Then

    f(x, Phi) = 1 if ||x - x'|| <= NND_k(x') for some x' in Phi, else 0,      (Eq. 1)
    precision = mean_{g in generated} f(g, Phi_real),                         (Eq. 2)
    recall    = mean_{r in real}      f(r, Phi_generated).                    (Eq. 3)

Distances are float32, computed in tiles of ``row_chunk x col_chunk`` so that 50k x 50k sets never
materialise the full distance matrix: the k-NN radii merge per-tile ``topk`` results, and the
coverage test ORs per-tile ball memberships. Squared distances are compared with squared radii
(the square root is monotone). Each generated-real tile is computed once and serves both
precision (is the generated row inside some real ball?) and recall (is the real column inside
some generated ball?). A tile is one ``addmm`` into a reused buffer, then in-place operations.

A tile computes ||a||^2 - 2 a.b + ||b||^2, whose float32 rounding error grows with the norms, not
with the distance: features far from the origin (a common offset of 10^4 on unit clouds) would
lose every digit of the distances. Both sets are therefore first moved, in float64, by the mean of
the real features (a translation changes no distance), so the norms are those of the spread; the
real set's radii may be computed beforehand, in that same frame (:func:`knn_radii`), and passed
in: they serve every generation. The generated set's radii are computed in that frame too, so
that the tiles they are compared with carry the same rounding. Against several real sets
(:func:`precision_recall_against`, e.g. train and test) every set is moved by one centre, the
first real set's mean, so that the generated set is moved and its radii computed once; the other
real sets' radii must then be computed in that frame (``knn_radii(..., centre=...)``).
What float32 still cannot resolve are distances below about 5e-4 times a point's distance from
that mean (two points 0.01 apart in a mode 150 away from it). Exact copies of a duplicated point,
whose k-NN radius is 0, are covered by its ball at every tiling the tests try, as in the float64
reference, whether the duplicated point is real or generated (a collapsed model repeats samples).
"""

from __future__ import annotations

from collections.abc import Mapping

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
    real_radii2: np.ndarray | None = None,
) -> tuple[float, float]:
    """Improved precision and recall of ``generated`` with respect to ``real``.

    Args:
        real: float ``[N, F]`` reference features, N > k.
        generated: float ``[M, F]`` features of the model's samples, M > k.
        k: neighbourhood size for the radii (the paper uses k = 3).
        device: torch device for the distance tiles.
        row_chunk, col_chunk: tile shape; memory is about ``5 * row_chunk * col_chunk`` bytes.
        real_radii2: float ``[N]``, the real set's squared k-NN radii as :func:`knn_radii` returns
            them for this ``k`` (e.g. cached with the real features); computed here when not given.

    Returns:
        ``(precision, recall)``, each in [0, 1].
    """
    given = None if real_radii2 is None else {"real": real_radii2}
    return precision_recall_against(
        generated, {"real": real}, k=k, device=device, row_chunk=row_chunk, col_chunk=col_chunk, real_radii2=given
    )["real"]


def precision_recall_against(
    generated: np.ndarray,
    reals: Mapping[str, np.ndarray],
    *,
    k: int = 3,
    device: str | torch.device = "cpu",
    row_chunk: int = 2048,
    col_chunk: int = 8192,
    real_radii2: Mapping[str, np.ndarray] | None = None,
    centre: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Improved precision and recall of ``generated`` with respect to each of several real sets.

    All sets are moved by one ``centre`` (module docstring), so the generated set is centred and
    its k-NN radii computed once for all real sets; each generated-real tile is computed once.

    Args:
        generated: float ``[M, F]`` features of the model's samples, M > k.
        reals: name -> float ``[N, F]`` real features, N > k; the name labels its errors.
        k, device, row_chunk, col_chunk: as for :func:`precision_recall`.
        real_radii2: name -> float ``[N]``, that set's squared k-NN radii computed in the frame of
            ``centre`` (``knn_radii(real, k, centre=centre)``); computed here for the others.
        centre: float ``[F]``, the frame's origin; the first real set's mean when not given.

    Returns:
        name -> ``(precision, recall)``.
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if row_chunk < 1 or col_chunk < 1:
        raise ValueError(f"row_chunk and col_chunk must be positive, got {row_chunk} and {col_chunk}")
    if not reals:
        raise ValueError("at least one real set is needed")
    reals = {name: _checked(name, real, k) for name, real in reals.items()}
    generated = _checked("generated", generated, k)
    for name, real in reals.items():
        if real.shape[1] != generated.shape[1]:
            raise ValueError(
                f"{name} features have {real.shape[1]} dimensions, generated features have {generated.shape[1]}"
            )
    tiles = {"row_chunk": row_chunk, "col_chunk": col_chunk}
    given = real_radii2 or {}
    if unknown := sorted(set(given) - set(reals)):
        raise ValueError(f"radii of {unknown}, which are not among the real sets {sorted(reals)}")
    if centre is None:
        centre = next(iter(reals.values())).mean(axis=0, dtype=np.float64)
    centre = _checked_centre(centre, generated.shape[1])
    g = _centred("generated", generated, centre, device, row_chunk)
    g_radii2 = knn_radii_squared(g, k, **tiles)
    result = {}
    for name, real in reals.items():
        r = _centred(name, real, centre, device, row_chunk)
        if given.get(name) is None:
            r_radii2 = knn_radii_squared(r, k, **tiles)
        else:
            r_radii2 = _radii_tensor(name, given[name], len(real), r.device)
        result[name] = _coverage_both_ways(g, r, g_radii2, r_radii2, **tiles)
    return result


def knn_radii(
    features: np.ndarray,
    k: int,
    *,
    device: str | torch.device = "cpu",
    row_chunk: int = 2048,
    col_chunk: int = 8192,
    name: str = "features",
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Squared k-NN radii of a feature set ``[N, F]`` (N > k): float32 ``[N]`` (see
    :func:`knn_radii_squared`), computed with the set moved by ``centre`` (float ``[F]``; by default
    its own mean, the frame :func:`precision_recall` uses for a real set). ``name`` names the set in
    error messages."""
    features = _checked(name, features, k)
    if centre is None:
        centre = features.mean(axis=0, dtype=np.float64)
    x = _centred(name, features, _checked_centre(centre, features.shape[1]), device, row_chunk)
    return knn_radii_squared(x, k, row_chunk=row_chunk, col_chunk=col_chunk).cpu().numpy()


def knn_radii_squared(x: torch.Tensor, k: int, *, row_chunk: int = 2048, col_chunk: int = 8192) -> torch.Tensor:
    """Squared distance from each row of ``x`` ``[N, F]`` to its k-th nearest other row: ``[N]``.

    The k+1 smallest distances of a row include the row itself (distance 0, the minimum), so the
    (k+1)-th smallest is the k-th nearest other point; duplicates of the row count as neighbours.
    Distances are symmetric, so about half the tiles are computed: a block of rows ``[i0, i1)``
    meets the columns ``[i0, N)`` only; each tile's k+1 smallest per row update those rows, and,
    for the columns at or after ``i1`` (whose own blocks come later and skip these rows), its k+1
    smallest per column update the rows of those columns. Every pair of rows is seen once from
    each side, and each row keeps its k+1 smallest so far (``[N, k + 1]``).
    """
    n = x.shape[0]
    keep = min(k + 1, n)
    best = torch.full((n, keep), float("inf"), dtype=x.dtype, device=x.device)
    x_sq = _squared_norms(x)
    buffer = torch.empty(min(row_chunk, n) * min(col_chunk, n), dtype=x.dtype, device=x.device)
    for i in range(0, n, row_chunk):
        end = min(i + row_chunk, n)
        rows, rows_sq = x[i:end], x_sq[i:end]
        for j in range(i, n, col_chunk):
            d2 = _squared_distances(rows, rows_sq, x[j : j + col_chunk], x_sq[j : j + col_chunk], buffer)
            _merge_smallest(best, slice(i, end), d2, keep)
            later = max(end - j, 0)  # the tile's columns before ``end`` are rows of this block
            if later < d2.shape[1]:
                _merge_smallest(best, slice(j + later, j + d2.shape[1]), d2[:, later:].T, keep)
    return best[:, k]


def _merge_smallest(best: torch.Tensor, rows: slice, d2: torch.Tensor, keep: int) -> None:
    """``best[rows]`` ``[R, keep]`` becomes the ``keep`` smallest of itself and of ``d2`` ``[R, C]``'s
    rows."""
    smallest = torch.topk(d2, min(keep, d2.shape[1]), dim=1, largest=False).values
    merged = torch.cat([best[rows], smallest], dim=1)
    best[rows] = torch.topk(merged, keep, dim=1, largest=False).values


def _coverage_both_ways(
    g: torch.Tensor,
    r: torch.Tensor,
    g_radii2: torch.Tensor,
    r_radii2: torch.Tensor,
    *,
    row_chunk: int,
    col_chunk: int,
) -> tuple[float, float]:
    """``(precision, recall)``: the fraction of generated rows ``g`` ``[M, F]`` inside some real ball
    (``r`` ``[N, F]``, ``r_radii2`` ``[N]``) and of real rows inside some generated ball, from one
    pass over the ``[M, N]`` squared distances, a tile at a time."""
    m, n = g.shape[0], r.shape[0]
    g_sq, r_sq = _squared_norms(g), _squared_norms(r)
    g_covered = torch.zeros(m, dtype=torch.bool, device=g.device)
    r_covered = torch.zeros(n, dtype=torch.bool, device=g.device)
    size = min(row_chunk, m) * min(col_chunk, n)
    buffer = torch.empty(size, dtype=g.dtype, device=g.device)
    inside = torch.empty(size, dtype=torch.bool, device=g.device)
    for i in range(0, m, row_chunk):
        rows, rows_sq, rows_radii2 = g[i : i + row_chunk], g_sq[i : i + row_chunk], g_radii2[i : i + row_chunk, None]
        for j in range(0, n, col_chunk):
            cols, cols_sq, cols_radii2 = (
                r[j : j + col_chunk],
                r_sq[j : j + col_chunk],
                r_radii2[None, j : j + col_chunk],
            )
            d2 = _squared_distances(rows, rows_sq, cols, cols_sq, buffer)
            mask = inside[: d2.numel()].view(d2.shape)
            g_covered[i : i + row_chunk] |= torch.le(d2, cols_radii2, out=mask).any(dim=1)
            r_covered[j : j + col_chunk] |= torch.le(d2, rows_radii2, out=mask).any(dim=0)
    return int(g_covered.sum()) / m, int(r_covered.sum()) / n


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def _squared_distances(
    a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor, buffer: torch.Tensor
) -> torch.Tensor:
    """||a_i - b_j||^2 = ||b_j||^2 - 2 a_i.b_j + ||a_i||^2, clamped at 0 against rounding: ``[A, B]``,
    written into the first ``A * B`` elements of ``buffer`` (one ``addmm``, then in place)."""
    out = buffer[: a.shape[0] * b.shape[0]].view(a.shape[0], b.shape[0])
    torch.addmm(b_sq[None, :], a, b.T, beta=1.0, alpha=-2.0, out=out)
    return out.add_(a_sq[:, None]).clamp_(min=0)


def _checked(which: str, x: np.ndarray, k: int) -> np.ndarray:
    """``x`` as an array, refused unless it is ``[N, F]`` with N > k (finiteness: :func:`_centred`)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{which} features must be a 2-D array [N, F], got shape {x.shape}")
    if x.shape[0] <= k:
        raise ValueError(f"{which} features: k-NN radii with k={k} need more than {k} samples, got {x.shape[0]}")
    return x


def _centred(which: str, x: np.ndarray, centre: np.ndarray, device: str | torch.device, row_chunk: int) -> torch.Tensor:
    """``x - centre`` as float32 on ``device``: ``[N, F]``. The subtraction is float64, a block of
    ``row_chunk`` rows at a time, so that no full float64 copy of ``x`` exists; each block is
    checked for NaN/inf on the way (a NaN would also make ``centre`` NaN)."""
    out = torch.empty(x.shape, dtype=torch.float32, device=torch.device(device))
    if not np.isfinite(centre).all():
        raise ValueError(f"{which} features contain NaN or infinite values")
    for i in range(0, x.shape[0], row_chunk):
        block = np.subtract(x[i : i + row_chunk], centre, dtype=np.float64)
        if not np.isfinite(block).all():
            raise ValueError(f"{which} features contain NaN or infinite values")
        out[i : i + row_chunk] = torch.from_numpy(block)
    return out


def _checked_centre(centre: np.ndarray, width: int) -> np.ndarray:
    centre = np.asarray(centre, dtype=np.float64)
    if centre.shape != (width,):
        raise ValueError(f"the centre must be [{width}] (one value per feature), got shape {centre.shape}")
    return centre


def _radii_tensor(which: str, radii2: np.ndarray, rows: int, device: torch.device) -> torch.Tensor:
    """Given squared radii as float32 ``[rows]`` on ``device``, refused unless finite and >= 0."""
    radii2 = np.asarray(radii2)
    if radii2.shape != (rows,):
        raise ValueError(f"{which} radii must be [{rows}] (one per row of the {which} features), got {radii2.shape}")
    if not (np.isfinite(radii2).all() and (radii2 >= 0).all()):
        raise ValueError(f"{which} radii must be finite and non-negative")
    return torch.as_tensor(radii2, dtype=torch.float32, device=device)
