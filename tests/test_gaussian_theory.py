"""The Gaussian warm-up of Bertrand et al. (2024), Sec. 3, against its closed forms.

Each generation fits N(mu, sigma^2) to n rows and the next generation's synthetic rows are drawn
from that fit. The real :class:`GaussianModel` runs every generation; R independent replicates
run at once as the R coordinates of one diagonal Gaussian (the family fits each coordinate on
its own, and its per-index noise is independent across coordinates), so a Monte-Carlo estimate
over 2000 replicates costs a few hundred small fits.

Indexing: sigma_0 is the data's std; sigma_t is the fit after t generations (t = 1 is the fit on
real data, generation 0 of the loop).

* Fully synthetic, unbiased estimator: E[sigma_t] = c(n)^t sigma_0, with
  c(n) = sqrt(2 / (n - 1)) Gamma(n / 2) / Gamma((n - 1) / 2); MLE: factor c(n) sqrt((n - 1) / n).
* Fully synthetic, MLE: E[sigma_t^2] = ((n - 1) / n)^t sigma_0^2; unbiased: E[sigma_t^2] = sigma_0^2
  (a martingale, although sigma_t -> 0 almost surely); mu_t is a random walk with
  Var(mu_t) = sum_{j < t} E[sigma_j^2] / n.
* With the n real rows kept and k = floor(lambda n) fresh synthetic rows (lambda finite), E[sigma_t^2]
  follows a linear recursion whose fixed point is close to the real data's variance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from autophagy.config import GaussianModelConfig, TrainConfig
from autophagy.data.strategies import synthetic_count
from autophagy.models.gaussian import GaussianModel

pytestmark = pytest.mark.usefixtures("one_thread")


MU0, SIGMA0 = 1.5, 2.0
R = 2000  # replicates
TRAIN = TrainConfig(device="cpu")


def c(n: int) -> float:
    return math.sqrt(2 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def test_c_constants():
    assert c(20) == pytest.approx(0.98693, abs=5e-6)
    assert c(100) == pytest.approx(0.99748, abs=5e-6)
    assert c(2) == pytest.approx(math.sqrt(2 / math.pi))  # E|Z| for one degree of freedom
    # c(n) is E[s] / sigma for the unbiased sample std: check it against a direct simulation
    rng = np.random.default_rng(0)
    s = rng.standard_normal((200_000, 5)).std(axis=1, ddof=1)
    assert s.mean() == pytest.approx(c(5), abs=4 * s.std() / math.sqrt(len(s)))


def retrain(estimator: str, n: int, generations: int, lam: float = math.inf, seed: int = 0):
    """Run the self-consuming loop; returns the fitted means and stds ``[generations, R]`` and the
    real rows ``[n, R]``."""
    rng = np.random.default_rng(seed)
    real = (MU0 + SIGMA0 * rng.standard_normal((n, R))).astype(np.float32)
    k = synthetic_count(lam, n)
    model = GaussianModel(GaussianModelConfig(estimator=estimator), (R,))
    rows, means, stds = real, [], []
    for t in range(1, generations + 1):
        model.fit(rows, 1.0, TRAIN, seed=t)
        means.append(model.mean.numpy().copy())
        stds.append(model.std.numpy().copy())
        synthetic = model.sample(k, seed=1000 * seed + t)
        rows = synthetic if math.isinf(lam) else np.concatenate([real, synthetic])
    return np.array(means), np.array(stds), real


def within(values: np.ndarray, expected: float, z: float = 4.0) -> bool:
    """``values.mean()`` is within ``z`` standard errors of ``expected``."""
    return abs(values.mean() - expected) <= z * values.std(ddof=1) / math.sqrt(len(values))


N, T = 20, 10
CHECKED = (1, 2, 5, 10)


@pytest.fixture(scope="module")
def fully_synthetic():
    return {estimator: retrain(estimator, N, T, seed=i) for i, estimator in enumerate(("unbiased", "mle"))}


def test_unbiased_std_decays_as_c_to_the_t(fully_synthetic):
    _, stds, _ = fully_synthetic["unbiased"]
    for t in CHECKED:
        assert within(stds[t - 1], c(N) ** t * SIGMA0), (t, stds[t - 1].mean(), c(N) ** t * SIGMA0)


def test_mle_std_decays_faster(fully_synthetic):
    _, stds, _ = fully_synthetic["mle"]
    factor = c(N) * math.sqrt((N - 1) / N)
    for t in CHECKED:
        assert within(stds[t - 1], factor**t * SIGMA0), (t, stds[t - 1].mean(), factor**t * SIGMA0)
    # The test has the power to tell the two estimators apart (and both from "no collapse").
    last = stds[-1]
    standard_error = last.std(ddof=1) / math.sqrt(R)
    assert abs(last.mean() - c(N) ** T * SIGMA0) > 10 * standard_error
    assert abs(last.mean() - SIGMA0) > 10 * standard_error


def test_variance_recursions(fully_synthetic):
    _, stds_mle, _ = fully_synthetic["mle"]
    _, stds_unbiased, _ = fully_synthetic["unbiased"]
    for t in CHECKED:
        assert within(stds_mle[t - 1] ** 2, ((N - 1) / N) ** t * SIGMA0**2)
        assert within(stds_unbiased[t - 1] ** 2, SIGMA0**2)  # E[sigma^2] stays put while E[sigma] decays


def test_mean_is_a_random_walk(fully_synthetic):
    means, _, _ = fully_synthetic["mle"]
    for t in CHECKED:
        expected_var = SIGMA0**2 / N * sum(((N - 1) / N) ** j for j in range(t))
        deviation = (means[t - 1] - MU0) ** 2  # E[(mu_t - mu_0)^2] = Var(mu_t): the walk has no drift
        assert within(deviation, expected_var), (t, deviation.mean(), expected_var)
        assert within(means[t - 1], MU0)


def mixed_recursion(n: int, k: int, generations: int) -> np.ndarray:
    """E[sigma_t^2] / v_real for the MLE fit of n fixed real rows (MLE variance v_real, mean m) plus k
    fresh samples of the previous fit. With a = n / (n + k), b = k / (n + k), S_t = E[sigma_t^2],
    D_t = E[(mu_t - m)^2]: S_{t+1} = a v + b (k - 1) / k S_t + a b (D_t + S_t / k),
    D_{t+1} = b^2 (D_t + S_t / k); S_1 = v, D_1 = 0 (generation 0 fits the real rows)."""
    a, b = n / (n + k), k / (n + k)
    S, D, out = 1.0, 0.0, [1.0]
    for _ in range(generations - 1):
        S, D = a + b * (k - 1) / k * S + a * b * (D + S / k), b**2 * (D + S / k)
        out.append(S)
    return np.array(out)


MIXED_GENERATIONS = 20


@pytest.fixture(scope="module")
def collapsed():
    """Fully synthetic over as many generations as the mixed runs, from the same real rows."""
    return retrain("mle", N, MIXED_GENERATIONS, lam=math.inf, seed=7)[1]


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
def test_real_data_keeps_sigma_near_the_data(lam, collapsed):
    generations = MIXED_GENERATIONS
    _, stds, real = retrain("mle", N, generations, lam=lam, seed=7)
    sigma_real = real.astype(np.float64).std(axis=0)  # the fixed real rows' MLE std, per replicate
    ratio_sq = (stds / sigma_real) ** 2
    predicted = mixed_recursion(N, synthetic_count(lam, N), generations)
    for t in (2, 5, 10, 20):
        assert within(ratio_sq[t - 1], predicted[t - 1]), (lam, t, ratio_sq[t - 1].mean(), predicted[t - 1])
    assert predicted[-1] > 0.9  # the fixed point sits next to the data's variance...
    ratio = stds[-1] / sigma_real
    assert abs(ratio.mean() - 1) < 0.06 and ratio.std() < 0.2  # ...and so does every chain
    # while without the real rows the same loop collapses: (c(n) sqrt((n - 1) / n))^20 = 0.46
    assert (collapsed[-1] / sigma_real).mean() < 0.6


def test_a_long_fully_synthetic_chain_follows_the_theory_in_float64():
    """1200 fully synthetic MLE generations at n = 50. sigma_{t+1}^2 = sigma_t^2 chi^2_{n-1} / n, so
    log(sigma_T / sigma_0) is a sum of T independent terms of mean (psi((n-1)/2) + log(2/n)) / 2 and
    variance psi'((n-1)/2) / 4: E = -24.4 at T = 1200, with a replicate spread of 3.5. The mean over
    200 replicates must lie within 4 standard errors (0.25 each) of it. With float32 samples the
    chain stalled near sigma = 1e-7 relative to its mean of order 1 (log ratio -16.2); float64
    resolves down to about -36, well below the chains here."""
    from scipy.special import digamma, polygamma

    from autophagy import theory

    n, generations, replicates = 50, 1200, 200
    model = GaussianModel(GaussianModelConfig(estimator="mle"), (replicates,))
    rows = (MU0 + SIGMA0 * np.random.default_rng(0).standard_normal((n, replicates))).astype(np.float32)
    model.fit(rows, 1.0, TRAIN, seed=0)
    sigma0 = model.std.numpy().copy()
    for t in range(1, generations + 1):
        rows = model.sample(n, seed=t)
        model.fit(rows, 1.0, TRAIN, seed=t)
    log_ratio = np.log(model.std.numpy() / sigma0)
    expected = generations * (digamma((n - 1) / 2) + math.log(2 / n)) / 2
    standard_error = math.sqrt(generations * polygamma(1, (n - 1) / 2) / 4 / replicates)
    assert abs(log_ratio.mean() - expected) < 4 * standard_error, (log_ratio.mean(), expected, standard_error)
    assert rows.dtype == np.float64
    # E[sigma_T / sigma_0] (theory.predicted_std_ratio) sits above exp(E[log]) by the lognormal spread
    assert math.log(theory.predicted_std_ratio(n, generations)[-1]) > expected + 3


def test_gaussian_samples_stay_float64_through_the_loop(tmp_path, tiny_cfg):
    """The sample sets, and the training sets mixing them with the (float32) real rows, are float64
    datasets: the real rows widened exactly, the synthetic rows as the model drew them."""
    from autophagy import loop
    from autophagy.data.dataset import open_dataset

    cfg = tiny_cfg("gaussian", "loop.lambdas=[1]", "sample.n_eval=100")
    layout = loop.run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    real = open_dataset(layout.real_train)
    samples = open_dataset(layout.generation(None, 0, 0) / "samples")
    train_set = open_dataset(layout.generation(1.0, 0, 1) / "train_set")
    assert (real.dtype, samples.dtype, train_set.dtype) == (np.float32, np.float64, np.float64)
    rows = train_set.load()
    np.testing.assert_array_equal(rows[: real.rows], real.load().astype(np.float64))
    np.testing.assert_array_equal(rows[real.rows :], samples.load()[: real.rows])
    assert not np.array_equal(samples.load(), samples.load().astype(np.float32))  # float32 would round them
