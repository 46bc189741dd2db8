"""Frechet distance: against clean-fid's sqrtm-based formula, closed forms, and input checks."""

import time

import numpy as np
import pytest
import torch
from cleanfid.fid import frechet_distance as cleanfid_frechet_distance

from autophagy.metrics import frechet_distance, gaussian_statistics
from autophagy.metrics.frechet import covariance_products, trace_sqrt_product

# clean-fid's reference implementation passes scipy's deprecated ``disp`` argument to sqrtm.
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning"),
]


def _features(rng, n, f, shift=0.0, scale=1.0):
    mixing = rng.standard_normal((f, f)) / np.sqrt(f)
    return (rng.standard_normal((n, f)) @ mixing) * scale + shift


@pytest.mark.parametrize("f, n1, n2", [(64, 100, 300), (64, 1000, 1000), (512, 1200, 800)])
def test_matches_cleanfid(f, n1, n2):
    rng = np.random.default_rng(f + n1)
    a = _features(rng, n1, f)
    b = _features(rng, n2, f, shift=0.1, scale=1.3)
    stats = (*gaussian_statistics(a), *gaussian_statistics(b))
    expected = cleanfid_frechet_distance(*stats)
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)


def test_statistics_match_numpy():
    x = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    mu, sigma = gaussian_statistics(x, float64_products=True)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False))


def test_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    s1, s2 = rng.uniform(0.1, 3, 32), rng.uniform(0.1, 3, 32)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_zero_for_identical_and_symmetric():
    rng = np.random.default_rng(2)
    mu_a, sig_a = gaussian_statistics(_features(rng, 400, 64))
    mu_b, sig_b = gaussian_statistics(_features(rng, 300, 64, shift=0.5))
    assert frechet_distance(mu_a, sig_a, mu_a, sig_a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(mu_a, sig_a, mu_b, sig_b) == pytest.approx(
        frechet_distance(mu_b, sig_b, mu_a, sig_a), rel=1e-9
    )


def test_singular_covariances():
    """Fewer samples than features: the eigenvalue route stays finite and agrees with the diagonal formula."""
    rng = np.random.default_rng(3)
    s1 = np.diag(np.r_[rng.uniform(0.5, 2, 10), np.zeros(22)])
    s2 = np.diag(np.r_[np.zeros(5), rng.uniform(0.5, 2, 27)])
    expected = np.sum((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2)
    assert frechet_distance(np.zeros(32), s1, np.zeros(32), s2) == pytest.approx(expected, rel=1e-9)


def test_fast_without_sqrtm(monkeypatch):
    """No dense sqrtm (clean-fid's takes ~15 s for 2048 features on two cores): two eigendecompositions.

    One thread (fixture): about 1 s here; the bound leaves room for a busy machine.
    """
    import scipy.linalg

    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda *a, **k: pytest.fail("dense sqrtm called"))
    rng = np.random.default_rng(4)
    a = rng.standard_normal((1024, 1024)) / 32
    sigma = a @ a.T
    start = time.perf_counter()
    frechet_distance(np.zeros(1024), sigma, np.ones(1024), sigma + np.eye(1024))
    assert time.perf_counter() - start < 10.0


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros(2048), np.eye(2048), np.zeros(64), np.eye(64)), "mu1 has 2048 features, mu2 has 64"),
        ((np.zeros(4), np.eye(3), np.zeros(4), np.eye(4)), "sigma1 must be"),
        ((np.zeros((4, 1)), np.eye(4), np.zeros(4), np.eye(4)), "mu1 must be a vector"),
        ((np.zeros(4), np.eye(4), np.full(4, np.nan), np.eye(4)), "NaN"),
        ((np.zeros(4), np.eye(4), np.zeros(4), np.full((4, 4), np.inf)), "NaN or infinite"),
    ],
)
def test_rejects_bad_statistics(args, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(*args)


@pytest.mark.parametrize(
    "features, message",
    [(np.zeros((1, 3)), "at least 2 samples"), (np.zeros(5), "2-D"), (np.array([[0.0, np.nan], [1, 2]]), "NaN")],
)
def test_statistics_reject_bad_features(features, message):
    with pytest.raises(ValueError, match=message):
        gaussian_statistics(features)


def test_one_dimensional_data_closed_form():
    """1-D features (the gaussian family): sigma is [1, 1], not 0-d, and the distance is
    (mu1 - mu2)^2 + s1^2 + s2^2 - 2 s1 s2, i.e. (mu1 - mu2)^2 + (s1 - s2)^2."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(500, 1))
    y = rng.normal(-0.5, 0.7, size=(300, 1))
    mu1, sigma1 = gaussian_statistics(x)
    mu2, sigma2 = gaussian_statistics(y)
    assert sigma1.shape == (1, 1) and mu1.shape == (1,)
    s1, s2 = x.std(ddof=1), y.std(ddof=1)
    expected = (x.mean() - y.mean()) ** 2 + s1**2 + s2**2 - 2 * s1 * s2
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 10_000])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_one_pass_statistics_match_numpy_at_every_chunking(chunk_rows, offset):
    """The chunked float64 accumulation equals np.cov of a float64 copy, also on float32 features
    10^4 from the origin (the shift by the first chunk's mean cancels the offset before squaring)."""
    rng = np.random.default_rng(3)
    x = (_features(rng, 300, 24, shift=0.5, scale=2.0) + offset).astype(np.float32)
    mu, sigma = gaussian_statistics(x, chunk_rows=chunk_rows, float64_products=True)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(axis=0), rtol=1e-12)
    expected = np.cov(x.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(sigma, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    assert np.array_equal(sigma, sigma.T)


def test_frechet_distance_of_one_pass_statistics_matches_numpy_statistics():
    """FD from the one-pass statistics equals FD from numpy's to 1e-9 relative (2048-wide in the
    benchmark; 128 here)."""
    rng = np.random.default_rng(4)
    a, b = _features(rng, 1500, 128).astype(np.float32), _features(rng, 900, 128, shift=0.05).astype(np.float32)
    numpy_stats = [(x.astype(np.float64).mean(axis=0), np.cov(x.astype(np.float64), rowvar=False)) for x in (a, b)]
    expected = frechet_distance(*numpy_stats[0], *numpy_stats[1])
    exact = {"float64_products": True}
    got = frechet_distance(
        *gaussian_statistics(a, chunk_rows=256, **exact), *gaussian_statistics(b, chunk_rows=100, **exact)
    )
    assert got == pytest.approx(expected, rel=1e-9) and expected > 0.1


def test_float32_products_are_the_cpu_default_for_float32_features_only():
    assert covariance_products(np.float32, "cpu", 4096, 2048) == np.float32
    assert covariance_products(np.float32, "cpu", 4096, 2048, float64_products=True) == np.float64
    assert covariance_products(np.float32, "cpu", 4095, 2048) == np.float64  # nearly singular
    assert covariance_products(np.float64, "cpu", 50_000, 2048) == np.float64
    assert covariance_products(np.float16, "cpu", 50_000, 2048) == np.float64
    assert covariance_products(np.float32, "cuda", 50_000, 2048) == np.float64


def test_fewer_than_twice_as_many_rows_as_features_multiply_in_float64():
    """A (nearly) singular covariance: the square roots of its near-zero eigenvalues would amplify
    float32 rounding (4e-4 relative at 1,200 x 2048), so such a set gets the float64 path's numbers."""
    rng = np.random.default_rng(7)
    few = _features(rng, 120, 64).astype(np.float32)  # fewer rows than features
    many = _features(rng, 1000, 64, shift=0.1).astype(np.float32)
    for x in (few, many[:127]):
        for got, exact in zip(gaussian_statistics(x), gaussian_statistics(x, float64_products=True), strict=True):
            assert np.array_equal(got, exact)
    assert not np.array_equal(gaussian_statistics(many)[1], gaussian_statistics(many, float64_products=True)[1])


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, None])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_float32_products_stay_within_their_rounding(chunk_rows, offset):
    """The CPU default (float32 products within a chunk, float64 sums across chunks): the mean is
    the float64 one to 1e-12, and each covariance entry is within 2^-24 * 32 = 1.9e-6 of
    sqrt(sigma_ii sigma_jj) of np.cov's, also 10^4 from the origin. The float64-product path is
    ~1000x closer, so this bound fails if float32 rounding were lost anywhere larger."""
    rng = np.random.default_rng(3)
    x = (_features(rng, 3000, 24, shift=0.5, scale=2.0) + offset).astype(np.float32)
    mu, sigma = gaussian_statistics(x, chunk_rows=chunk_rows)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(axis=0), rtol=1e-12)
    expected = np.cov(x.astype(np.float64), rowvar=False)
    scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    error = np.abs(sigma - expected) / scale
    assert error.max() < 32 * 2.0**-24
    assert error.max() > 1e-10  # float32 products, not float64 ones
    assert np.array_equal(sigma, sigma.T)


@pytest.mark.parametrize("f, n1, n2, shift", [(128, 1500, 900, 0.05), (16, 400, 500, 0.2), (512, 3000, 2000, 0.0)])
def test_frechet_distance_with_float32_products_matches_float64_products(f, n1, n2, shift):
    """FD from the default statistics equals FD from float64 products to 1e-6 relative (at
    50k x 2048 Inception-like features, ~2e-8: ``benchmarks/bench_metrics.py``)."""
    rng = np.random.default_rng(f)
    a = _features(rng, n1, f).astype(np.float32)
    b = (_features(rng, n2, f, shift=shift) * 1.1).astype(np.float32)
    exact = frechet_distance(
        *gaussian_statistics(a, float64_products=True), *gaussian_statistics(b, float64_products=True)
    )
    fast = frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))
    assert fast == pytest.approx(exact, rel=1e-6) and fast != exact


def test_statistics_leave_float64_input_unchanged():
    x = np.random.default_rng(5).standard_normal((40, 3))
    before = x.copy()
    gaussian_statistics(x, chunk_rows=16)
    assert np.array_equal(x, before)


def test_statistics_name_the_set_and_rows_with_nan():
    x = np.zeros((20, 3), dtype=np.float32)
    x[13, 1] = np.inf
    with pytest.raises(ValueError, match=r"reference 'test': contains NaN or infinite values \(in rows 8\.\.15\)"):
        gaussian_statistics(x, chunk_rows=8, name="reference 'test'")


def _eigh_trace_sqrt_product(s1, s2):
    """tr((S1 S2)^{1/2}) through the eigendecomposition of S1: the route when both are singular."""
    w, v = np.linalg.eigh(s1)
    a = v * np.sqrt(np.clip(w, 0, None))
    return np.sqrt(np.clip(np.linalg.eigvalsh(a.T @ s2 @ a), 0, None)).sum()


@pytest.mark.parametrize("rows1, rows2", [(900, 700), (40, 700), (900, 40), (40, 30)])
def test_trace_through_either_cholesky_factor_or_the_eigendecomposition(rows1, rows2):
    """Both covariances positive definite (the Cholesky factor of S1), S1 singular (fewer rows than
    features: S2's factor), S2 singular (S1's), both singular (S1's eigendecomposition): every route
    gives the eigendecomposition's trace, to 1e-10 relative when both are definite; with a singular
    one to 1e-7 (the square roots of its zero eigenvalues, +-1e-16 after rounding, are +-1e-8:
    numpy's and torch's eigendecompositions differ by as much). And sqrtm's (clean-fid's) to 1e-6."""
    import scipy.linalg

    rng = np.random.default_rng(rows1 + rows2)
    s1 = np.cov(_features(rng, rows1, 64), rowvar=False)
    s2 = np.cov(_features(rng, rows2, 64, scale=1.5), rowvar=False)
    got = float(trace_sqrt_product(torch.as_tensor(s1), torch.as_tensor(s2)))
    rel = 1e-10 if min(rows1, rows2) > 64 else 1e-7
    assert got == pytest.approx(_eigh_trace_sqrt_product(s1, s2), rel=rel)
    if rows1 > 64 or rows2 > 64:
        assert got == pytest.approx(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real, rel=1e-6)
