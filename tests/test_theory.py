"""The exact, vectorised Gaussian warm-up simulation (autophagy.theory) against the closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autophagy import theory


def test_c_constants():
    assert theory.c(20) == pytest.approx(0.98693, abs=5e-6)
    assert theory.c(100) == pytest.approx(0.99748, abs=5e-6)


@pytest.mark.parametrize("n, estimator", [(20, "mle"), (100, "mle"), (20, "unbiased")])
def test_fully_synthetic_decay_matches_the_prediction(n, estimator):
    traj = theory.simulate(n, math.inf, generations=60, replicates=20000, seed=1, estimator=estimator)
    ratio = traj.std / traj.std[:, :1]
    predicted = theory.predicted_std_ratio(n, 60, estimator)
    for t in (1, 5, 20, 60):
        standard_error = ratio[:, t].std(ddof=1) / math.sqrt(ratio.shape[0])
        assert abs(ratio[:, t].mean() - predicted[t]) < 4 * standard_error, t


def test_mean_is_a_random_walk_when_fully_synthetic():
    traj = theory.simulate(20, math.inf, generations=30, replicates=20000, seed=2)
    steps = np.diff(traj.mean, axis=1)
    assert abs(steps.mean()) < 4 * steps.std() / math.sqrt(steps.size)  # no drift
    # Var(mu_t - mu_0 | sigma) = sum sigma_s^2 / n: the spread grows with t.
    assert traj.mean[:, 30].std() > traj.mean[:, 1].std()


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0, 10.0])
def test_real_data_keeps_sigma_near_the_data(lam):
    traj = theory.simulate(20, lam, generations=200, replicates=4000, seed=3)
    ratio = (traj.std / traj.std[:, :1]).mean(axis=0)
    assert ratio[-1] > 0.95 and ratio.min() > 0.95  # fully synthetic would be ~4e-4 by t = 200


def test_lambda_zero_is_the_first_fit_forever():
    traj = theory.simulate(20, 0.0, generations=5, replicates=10, seed=4)
    assert np.array_equal(traj.std, np.repeat(traj.std[:, :1], 6, axis=1))


def test_sufficient_statistics_match_a_brute_force_simulation():
    """The O(1) draw of (mean, SS) of k fresh samples equals drawing them one by one (in distribution)."""
    n, lam, gens, reps = 10, 1.0, 5, 20000
    fast = theory.simulate(n, lam, gens, reps, seed=5).std[:, -1]
    rng = np.random.default_rng(6)
    real = rng.standard_normal((reps, n))
    mu, sigma = real.mean(1), real.std(1)
    for _ in range(gens):
        synthetic = mu[:, None] + sigma[:, None] * rng.standard_normal((reps, n))
        both = np.concatenate([real, synthetic], axis=1)
        mu, sigma = both.mean(1), both.std(1)
    assert abs(fast.mean() - sigma.mean()) < 4 * math.hypot(fast.std(), sigma.std()) / math.sqrt(reps)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="lambda"):
        theory.simulate(20, -1.0, 3, 10)
    with pytest.raises(ValueError, match="n must be >= 2"):
        theory.simulate(1, 1.0, 3, 10)


def test_report_files(tmp_path):
    result = theory.write_report(tmp_path, [20], [0.0, math.inf], generations=10, replicates=200)
    assert (tmp_path / "std_ratio_n20.png").stat().st_size > 0
    csv = (tmp_path / "theory.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 * 11
    assert "| 20 | inf |" in (tmp_path / "theory.md").read_text() and result["figures"]


@pytest.mark.parametrize(
    "estimator, name, other", [("mle", "MLE", "unbiased"), ("unbiased", "unbiased-variance", "MLE")]
)
def test_report_names_the_estimator_it_simulated(tmp_path, estimator, name, other):
    """Every plot was titled "Gaussian MLE" whatever the estimator; the title (the figure's alt text
    in theory.md) and the heading now name the one simulated."""
    theory.write_report(tmp_path, [20, 50], [math.inf], generations=5, replicates=50, estimator=estimator)
    text = (tmp_path / "theory.md").read_text()
    assert f"# Gaussian retraining, {name} fit" in text
    for n in (20, 50):
        assert f"![Gaussian {name} retraining, n = {n}, 50 replicates](std_ratio_n{n}.png)" in text
    assert other not in text


def test_unknown_estimator_is_refused():
    with pytest.raises(ValueError, match="estimator must be one of mle, unbiased, got 'MLE'"):
        theory.simulate(20, 1.0, 3, 10, estimator="MLE")
