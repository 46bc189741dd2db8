"""Toy metrics with known answers, and the exact 1-D Wasserstein distance against scipy."""

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from autophagy.metrics import covariance_error, gaussian_summary, mean_error, sliced_wasserstein
from autophagy.metrics.toy import wasserstein_1d


def test_swd_of_identical_sets_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 2))
    assert sliced_wasserstein(x, x.copy()) == 0.0


@pytest.mark.parametrize("v", [0.7, -2.5])
def test_swd_of_a_shift_in_1d(v):
    x = np.random.default_rng(1).standard_normal((300, 1))
    assert sliced_wasserstein(x + v, x) == pytest.approx(abs(v), rel=1e-12)


def test_swd_of_a_shift_in_2d_is_the_mean_projection():
    """Shifting by v moves every projection by theta.v: SWD = mean |theta.v| over the directions."""
    x = np.random.default_rng(2).standard_normal((100, 2))
    v = np.array([3.0, 4.0])
    swd = sliced_wasserstein(x + v, x, n_projections=4096)
    assert swd == pytest.approx(2 / np.pi * np.linalg.norm(v), rel=0.03)  # E|cos| = 2/pi on the circle


@pytest.mark.parametrize("n, m", [(5, 5), (7, 3), (100, 37), (1, 4)])
def test_wasserstein_1d_matches_scipy_for_unequal_sizes(n, m):
    rng = np.random.default_rng(n * m)
    x, y = rng.standard_normal((n, 3)), rng.exponential(size=(m, 3))
    expected = [wasserstein_distance(x[:, j], y[:, j]) for j in range(3)]
    np.testing.assert_allclose(wasserstein_1d(x, y), expected, rtol=1e-12)


def test_swd_uses_fixed_directions():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((50, 3)), rng.standard_normal((60, 3))
    assert sliced_wasserstein(x, y, seed=5) == sliced_wasserstein(x, y, seed=5)
    assert sliced_wasserstein(x, y, seed=5) != sliced_wasserstein(x, y, seed=6)


def test_mean_error():
    x = np.array([[0.0, 0.0], [2.0, 2.0]])  # mean (1, 1)
    y = np.array([[4.0, 5.0]])
    assert mean_error(x, y) == pytest.approx(5.0)


def test_covariance_error_of_known_matrices():
    # Unbiased covariance of the four corners (+-1, +-a): diag(4/3, 4 a^2 / 3).
    def corners(a):
        return np.array([[1.0, a], [1.0, -a], [-1.0, a], [-1.0, -a]])

    assert covariance_error(corners(2.0), corners(1.0)) == pytest.approx(4 / 3 * (4 - 1))
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((30, 3))
    expected = np.linalg.norm(np.cov(x, rowvar=False) - np.cov(y, rowvar=False), "fro")
    assert covariance_error(x, y) == pytest.approx(expected)


def test_covariance_error_in_1d():
    x, y = np.array([[0.0], [2.0]]), np.array([[0.0], [4.0]])  # variances 2 and 8
    assert covariance_error(x, y) == pytest.approx(6.0)


def test_gaussian_summary():
    x = np.array([[1.0, -1.0], [3.0, 1.0]])  # mean (2, 0); per-dimension std (ddof 1) sqrt(2) each
    summary = gaussian_summary(x)
    assert summary == pytest.approx({"mean_norm": 2.0, "std_mean": np.sqrt(2.0)})


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: sliced_wasserstein(np.zeros((5, 2)), np.zeros((5, 3))), "2 dimensions, the reference has 3"),
        (lambda: covariance_error(np.zeros((1, 2)), np.zeros((5, 2))), "covariance needs at least 2 samples"),
        (lambda: mean_error(np.zeros((0, 2)), np.zeros((5, 2))), "at least one sample"),
        (lambda: mean_error(np.full((3, 2), np.nan), np.zeros((5, 2))), "NaN"),
        (lambda: gaussian_summary(np.zeros(4)), "2-D array"),
        (lambda: sliced_wasserstein(np.zeros((5, 2)), np.zeros((5, 2)), n_projections=0), "n_projections"),
    ],
)
def test_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
