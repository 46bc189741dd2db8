"""compute_metrics / compute_toy_metrics: flat ``<metric>_<reference>`` keys, values, input checks."""

import numpy as np
import pytest

import autophagy.metrics as metrics
from autophagy.metrics import compute_metrics, compute_toy_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def test_compute_metrics_keys_and_values():
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((200, 8)).astype(np.float32)
    train, test = rng.standard_normal((300, 8)) + 0.3, rng.standard_normal((100, 8))
    out = compute_metrics(samples, {"train": train, "test": test}, k=3)
    assert list(out) == [f"{m}_{r}" for r in ("train", "test") for m in ("fd", "precision", "recall")]
    assert all(isinstance(v, float) for v in out.values())
    fd = metrics.frechet_distance(*metrics.gaussian_statistics(samples), *metrics.gaussian_statistics(train))
    assert out["fd_train"] == pytest.approx(fd)
    assert (out["precision_test"], out["recall_test"]) == metrics.precision_recall(test, samples, k=3)


def test_compute_metrics_of_the_reference_itself():
    x = np.random.default_rng(1).standard_normal((100, 4))
    out = compute_metrics(x, {"train": x})
    assert out["fd_train"] == pytest.approx(0.0, abs=1e-9)
    assert out["precision_train"] == out["recall_train"] == 1.0


@pytest.mark.parametrize(
    "samples, references, message",
    [
        (np.zeros((10, 3)), {"train": np.zeros((10, 4))}, r"reference 'train': shape \[10, 4\]"),
        (np.zeros(10), {"train": np.zeros((10, 3))}, "samples: shape"),
        (np.zeros((10, 3)), {}, "at least one reference"),
        (np.zeros((10, 3)), {"a b": np.zeros((10, 3))}, "short identifiers"),
        (np.ones((3, 3)), {"train": np.ones((10, 3))}, "samples: k-NN radii with k=3 needs at least 4 rows, got 3"),
        (np.ones((10, 3)), {"test": np.ones((2, 3))}, "reference 'test': k-NN radii"),
        (np.ones((10, 3)), {"test": np.full((10, 3), np.nan)}, "reference 'test': contains NaN"),
    ],
)
def test_compute_metrics_rejects_bad_input(samples, references, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(samples, references)


def test_compute_toy_metrics():
    rng = np.random.default_rng(2)
    samples, train, test = rng.standard_normal((300, 2)), rng.standard_normal((400, 2)), rng.standard_normal((50, 2))
    out = compute_toy_metrics(samples, {"train": train, "test": test})
    assert set(out) == {"mean_norm", "std_mean"} | {
        f"{m}_{r}" for m in ("swd", "mean_err", "cov_err") for r in ("train", "test")
    }
    assert out["swd_train"] == metrics.sliced_wasserstein(samples, train)
    assert out["mean_err_test"] == metrics.mean_error(samples, test)
    assert out["cov_err_train"] == metrics.covariance_error(samples, train)
    assert out["std_mean"] == pytest.approx(samples.std(axis=0, ddof=1).mean())
    assert compute_toy_metrics(train, {"train": train})["swd_train"] == 0.0


def test_compute_toy_metrics_rejects_mismatched_dims():
    with pytest.raises(ValueError, match="same F"):
        compute_toy_metrics(np.zeros((5, 2)), {"train": np.zeros((5, 3))})
    with pytest.raises(ValueError, match="samples: a covariance needs at least 2 rows"):
        compute_toy_metrics(np.zeros((1, 2)), {"train": np.zeros((5, 2))})


def test_public_names():
    for name in metrics.__all__:
        assert hasattr(metrics, name), name
