"""Improved precision/recall: against a dense sklearn/scipy reference for many tilings, and known answers."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

from autophagy.metrics import precision_recall
from autophagy.metrics.precision_recall import knn_radii_squared


pytestmark = pytest.mark.usefixtures("one_thread")


def _dense_reference(real, generated, k):
    """Kynkaanniemi et al. (2019), Eqs. 1-3, with full float64 distance matrices."""

    def radii(x):
        distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
        return distances[:, k]  # column 0 is the point itself

    def coverage(queries, centres):
        return float(np.mean((cdist(queries, centres) <= radii(centres)[None, :]).any(axis=1)))

    return coverage(generated, real), coverage(real, generated)


@pytest.mark.parametrize("row_chunk, col_chunk", [(10_000, 10_000), (7, 13), (64, 5), (1, 300), (257, 64)])
def test_matches_dense_reference(row_chunk, col_chunk):
    rng = np.random.default_rng(0)
    real = rng.standard_normal((301, 16)).astype(np.float32)
    generated = (1.3 * rng.standard_normal((257, 16)) + 0.4).astype(np.float32)
    expected = _dense_reference(real.astype(np.float64), generated.astype(np.float64), k=3)
    assert 0.1 < expected[0] < 0.9 and 0.1 < expected[1] < 0.99  # a non-trivial case
    assert precision_recall(real, generated, k=3, row_chunk=row_chunk, col_chunk=col_chunk) == expected


@pytest.mark.parametrize("k", [1, 5])
def test_matches_dense_reference_other_k(k):
    rng = np.random.default_rng(k)
    real, generated = rng.standard_normal((200, 8)), rng.standard_normal((150, 8)) * 0.8
    assert precision_recall(real, generated, k=k, row_chunk=33, col_chunk=50) == _dense_reference(real, generated, k)


def test_radii_match_sklearn_with_chunks():
    x = np.random.default_rng(1).standard_normal((123, 5))
    distances, _ = NearestNeighbors(n_neighbors=4).fit(x).kneighbors(x)
    radii = knn_radii_squared(torch.as_tensor(x, dtype=torch.float32), 3, row_chunk=10, col_chunk=3)
    np.testing.assert_allclose(radii.sqrt().numpy(), distances[:, 3], rtol=1e-4)


def test_identical_sets():
    x = np.random.default_rng(2).standard_normal((100, 10))
    assert precision_recall(x, x.copy(), row_chunk=30, col_chunk=40) == (1.0, 1.0)


def test_far_apart_sets():
    rng = np.random.default_rng(3)
    real, generated = rng.standard_normal((100, 4)), rng.standard_normal((80, 4)) + 1000.0
    assert precision_recall(real, generated) == (0.0, 0.0)


def test_one_mode_of_two():
    """Samples that are exactly one of two real modes: every sample is real (precision 1); half the
    real data, the other mode, lies far from every sample (recall 1/2)."""
    rng = np.random.default_rng(4)
    mode_a, mode_b = rng.standard_normal((100, 6)), rng.standard_normal((100, 6)) + 50.0
    real = np.concatenate([mode_a, mode_b])
    assert precision_recall(real, mode_a.copy(), row_chunk=64, col_chunk=48) == (1.0, 0.5)


@pytest.mark.parametrize(
    "real, generated, k, message",
    [
        (np.zeros((10, 3)), np.zeros((10, 4)), 3, "3 dimensions, generated features have 4"),
        (np.zeros((3, 2)), np.zeros((10, 2)), 3, "more than 3 samples, got 3"),
        (np.zeros((10, 2)), np.zeros((2, 2)), 3, "generated features: k-NN radii"),
        (np.full((10, 2), np.nan), np.zeros((10, 2)), 3, "NaN"),
        (np.zeros(10), np.zeros((10, 2)), 3, "2-D array"),
        (np.zeros((10, 2)), np.zeros((10, 2)), 0, "k must be a positive integer"),
    ],
)
def test_rejects_bad_input(real, generated, k, message):
    with pytest.raises(ValueError, match=message):
        precision_recall(real, generated, k=k)
