"""compute_metrics / compute_toy_metrics: flat ``<metric>_<reference>`` keys, values, input checks."""

import importlib

import numpy as np
import pytest

import autophagy.metrics as metrics
from autophagy.metrics import compute_metrics, compute_toy_metrics
from autophagy.metrics.feature_stats import features_digest, load_statistics, save_statistics

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
    pr = metrics.precision_recall_against(samples, {"train": train, "test": test}, k=3)
    assert (out["precision_test"], out["recall_test"]) == pr["test"]
    assert (out["precision_train"], out["recall_train"]) == pr["train"] == metrics.precision_recall(train, samples)


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


# ------------------------------------------------------------------ reference statistics, cached


def _sets(seed=3):
    rng = np.random.default_rng(seed)
    samples = (1.1 * rng.standard_normal((400, 16)) + 0.2).astype(np.float32)
    return samples, rng.standard_normal((500, 16)).astype(np.float32), rng.standard_normal((120, 16)).astype(np.float32)


def test_given_reference_statistics_give_the_plain_numbers():
    """compute_metrics with cached reference statistics = without them = the plain computation
    (numpy mean/cov of float64 copies, precision/recall from scratch): FD to 1e-6 relative (the
    covariance's float32 products on the CPU; 1e-9 with float64 ones, test_metrics_frechet.py),
    P/R exactly."""
    samples, train, test = _sets()
    refs = {"train": train, "test": test}
    computed = compute_metrics(samples, refs, k=3)
    centre = train.mean(axis=0, dtype=np.float64)  # every reference's radii in the first one's frame
    statistics = {name: metrics.feature_statistics(x, k=3, centre=centre) for name, x in refs.items()}
    assert compute_metrics(samples, refs, k=3, reference_statistics=statistics) == computed
    for name, x in refs.items():
        plain = [(s.astype(np.float64).mean(axis=0), np.cov(s.astype(np.float64), rowvar=False)) for s in (samples, x)]
        assert computed[f"fd_{name}"] == pytest.approx(metrics.frechet_distance(*plain[0], *plain[1]), rel=1e-6)
    assert {name: (computed[f"precision_{name}"], computed[f"recall_{name}"]) for name in refs} == (
        metrics.precision_recall_against(samples, refs)
    )
    assert 0.05 < computed["precision_train"] < 0.95 and 0.05 < computed["recall_train"] < 0.95


@pytest.mark.parametrize(
    "statistics, message",
    [({"valid": 3}, "not among the reference sets"), ({"train": 5}, "k-NN radii for k=5, not k=3")],
)
def test_compute_metrics_rejects_mismatched_statistics(statistics, message):
    samples, train, _ = _sets()
    given = {name: metrics.feature_statistics(train, k=k) for name, k in statistics.items()}
    with pytest.raises(ValueError, match=message):
        compute_metrics(samples, {"train": train}, k=3, reference_statistics=given)


def _equal(a, b) -> bool:
    fields = ("mu", "sigma", "radii2", "centre")
    return a.k == b.k and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)


def test_statistics_in_another_frame_give_the_numbers_of_the_first_ones_frame():
    """Statistics of the test set cached in its own frame (not the train set's) are not used as they
    are: their radii are recomputed in the train set's frame, and the numbers are those computed
    from scratch; their mean and covariance are kept."""
    samples, train, test = _sets()
    refs = {"train": train, "test": test}
    own_frame = {name: metrics.feature_statistics(x, k=3) for name, x in refs.items()}
    assert not np.array_equal(own_frame["test"].centre, own_frame["train"].centre)
    assert compute_metrics(samples, refs, k=3, reference_statistics=own_frame) == compute_metrics(samples, refs, k=3)


def test_samples_radii_are_computed_once_for_all_reference_sets(monkeypatch):
    """Two reference sets: the samples' k-NN radii once (they were computed per reference set), the
    references' radii once each when not given, not at all when given."""
    module = importlib.import_module("autophagy.metrics.precision_recall")  # not the function of that name

    calls = []
    original = module.knn_radii_squared
    monkeypatch.setattr(module, "knn_radii_squared", lambda x, k, **kw: calls.append(len(x)) or original(x, k, **kw))
    samples, train, test = _sets()
    refs = {"train": train, "test": test}
    compute_metrics(samples, refs, k=3)
    assert sorted(calls) == sorted([len(samples), len(train), len(test)])
    centre = train.mean(axis=0, dtype=np.float64)
    statistics = {name: metrics.feature_statistics(x, k=3, centre=centre) for name, x in refs.items()}
    calls.clear()
    compute_metrics(samples, refs, k=3, reference_statistics=statistics)
    assert calls == [len(samples)]


def test_cached_statistics_are_written_then_read(tmp_path):
    _, train, _ = _sets()
    path = tmp_path / "train.stats-k3.npz"
    first = metrics.cached_statistics(path, train, k=3)
    assert path.is_file() and _equal(first, metrics.feature_statistics(train, k=3))
    written = path.stat().st_mtime_ns
    assert _equal(metrics.cached_statistics(path, train, k=3), first)
    assert path.stat().st_mtime_ns == written  # read, not recomputed and rewritten
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_cached_statistics_follow_the_features_not_the_path(tmp_path):
    """The same path with other features (one value changed), another k, or a damaged file: the
    statistics are recomputed for what is asked and the file rewritten; the old ones are never served."""
    _, train, _ = _sets()
    path = tmp_path / "train.stats.npz"
    old = metrics.cached_statistics(path, train, k=3)
    changed = train.copy()
    changed[7, 3] += 5.0
    new = metrics.cached_statistics(path, changed, k=3)
    assert _equal(new, metrics.feature_statistics(changed, k=3)) and not np.array_equal(new.mu, old.mu)
    assert _equal(metrics.cached_statistics(path, changed, k=3), new)
    other_k = metrics.cached_statistics(path, changed, k=5)
    assert other_k.k == 5 and _equal(other_k, metrics.feature_statistics(changed, k=5))
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert _equal(metrics.cached_statistics(path, train, k=3), old)
    centre = np.full(train.shape[1], 0.25)  # radii in another frame: recomputed
    moved = metrics.cached_statistics(path, train, k=3, centre=centre)
    assert _equal(moved, metrics.feature_statistics(train, k=3, centre=centre))
    assert not np.array_equal(moved.radii2, old.radii2) and np.array_equal(moved.centre, centre)
    assert _equal(metrics.cached_statistics(path, train, k=3), old)


def test_cached_statistics_follow_the_precision_of_the_products(tmp_path):
    """A cache whose covariance was multiplied in float64 (as before float32 products became the
    CPU default for float32 features) is recomputed, not served beside fresh float32-product
    statistics of the samples; one that records float32 products is read."""
    _, train, _ = _sets()
    path = tmp_path / "train.stats.npz"
    mu, sigma = metrics.gaussian_statistics(train, float64_products=True)
    fresh = metrics.feature_statistics(train, k=3)
    assert not np.array_equal(sigma, fresh.sigma)
    older = metrics.FeatureStatistics(mu, sigma, fresh.radii2, 3, fresh.centre)
    digest = features_digest(train)
    save_statistics(path, older, digest, products="float64")
    assert _equal(metrics.cached_statistics(path, train, k=3), fresh)
    assert load_statistics(path, digest, 3, rows=len(train), centre=fresh.centre, products="float32") is not None
    assert load_statistics(path, digest, 3, rows=len(train), centre=fresh.centre, products="float64") is None


def test_cached_statistics_are_written_atomically(tmp_path, monkeypatch):
    """Fault injection (a stand-in for np.savez that writes half an archive, then fails like a full
    disk): the cache file keeps its previous content, no temporary file stays behind, and the next
    call writes a whole file."""
    _, train, _ = _sets()
    path = tmp_path / "train.stats.npz"
    old = metrics.cached_statistics(path, train, k=3)
    before = path.read_bytes()
    real_savez = np.savez

    def savez_that_fails_half_way(handle, **arrays):
        handle.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_that_fails_half_way)
    with pytest.raises(OSError, match="No space left"):
        metrics.cached_statistics(path, train, k=5)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    monkeypatch.setattr(np, "savez", real_savez)
    assert _equal(metrics.cached_statistics(path, train, k=3), old)
    assert metrics.cached_statistics(path, train, k=5).k == 5
