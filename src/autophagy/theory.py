"""The Gaussian warm-up of Bertrand et al. (2024, Sec. 3), simulated exactly and vectorised.

Generation 0 fits N(mu, sigma^2) to n real samples of N(mu_data, sigma_data^2), by maximum likelihood
(``estimator="mle"``) or with the unbiased variance (``"unbiased"``, divided by n - 1).
Generation t >= 1 refits on the fixed real samples plus k = floor(lambda n) fresh samples of
generation t-1 (k = n and no real data for lambda = inf). Only sufficient statistics are drawn:
the k fresh samples of N(mu, sigma^2) have mean ~ N(mu, sigma^2 / k) and sum of squared
deviations ~ sigma^2 chi^2_{k-1}, independently, so a generation costs O(replicates) whatever k.

Fully synthetic with the maximum-likelihood fit, sigma_{t+1}^2 = sigma_t^2 chi^2_{n-1} / n, hence
E[sigma_t | sigma_0] = (c(n) sqrt((n-1)/n))^t sigma_0 with
c(n) = sqrt(2/(n-1)) Gamma(n/2) / Gamma((n-1)/2) (c for the unbiased estimator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

#: How the report names each ``model.estimator``.
ESTIMATOR_NAMES = {"mle": "MLE", "unbiased": "unbiased-variance"}


def c(n: int) -> float:
    """E[s] / sigma for the unbiased sample standard deviation s of n normal samples."""
    return math.sqrt(2.0 / (n - 1)) * math.exp(gammaln(n / 2) - gammaln((n - 1) / 2))


def predicted_std_ratio(n: int, generations: int, estimator: str = "mle") -> np.ndarray:
    """E[sigma_t / sigma_0] for t = 0..generations under fully synthetic retraining: ``[T + 1]``."""
    factor = c(n) * (math.sqrt((n - 1) / n) if estimator == "mle" else 1.0)
    return factor ** np.arange(generations + 1)


@dataclass(frozen=True)
class GaussianTrajectories:
    """Fitted parameters per replicate and generation: ``mean``, ``std`` are ``[R, T + 1]``."""

    lam: float
    mean: np.ndarray
    std: np.ndarray


def simulate(
    n: int,
    lam: float,
    generations: int,
    replicates: int,
    seed: int = 0,
    estimator: str = "mle",
    mu_data: float = 0.0,
    sigma_data: float = 1.0,
) -> GaussianTrajectories:
    """Exact simulation of ``replicates`` independent 1-D retraining chains for one lambda."""
    if n < 2:
        raise ValueError(f"n must be >= 2 to fit a variance, got {n}")
    if math.isnan(lam) or lam < 0:
        raise ValueError(f"lambda must be >= 0 or inf, got {lam}")
    if estimator not in ESTIMATOR_NAMES:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATOR_NAMES)}, got {estimator!r}")
    rng = np.random.default_rng(seed)
    real = mu_data + sigma_data * rng.standard_normal((replicates, n))
    real_mean, real_ss = real.mean(axis=1), ((real - real.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    k = n if math.isinf(lam) else math.floor(lam * n)
    use_real = not math.isinf(lam)
    mean, std = np.empty((replicates, generations + 1)), np.empty((replicates, generations + 1))
    mean[:, 0], std[:, 0] = real_mean, _std(real_ss, n, estimator)
    for t in range(1, generations + 1):
        if k == 0:
            mean[:, t], std[:, t] = mean[:, 0], std[:, 0]
            continue
        syn_mean = mean[:, t - 1] + std[:, t - 1] / math.sqrt(k) * rng.standard_normal(replicates)
        syn_ss = std[:, t - 1] ** 2 * (rng.chisquare(k - 1, replicates) if k > 1 else np.zeros(replicates))
        if use_real:  # pool the real and synthetic sufficient statistics
            total = n + k
            pooled = (n * real_mean + k * syn_mean) / total
            ss = real_ss + syn_ss + n * (real_mean - pooled) ** 2 + k * (syn_mean - pooled) ** 2
            mean[:, t], std[:, t] = pooled, _std(ss, total, estimator)
        else:
            mean[:, t], std[:, t] = syn_mean, _std(syn_ss, k, estimator)
    return GaussianTrajectories(lam, mean, std)


def _std(ss: np.ndarray, count: int, estimator: str) -> np.ndarray:
    return np.sqrt(ss / (count if estimator == "mle" else count - 1))


def summary(traj: GaussianTrajectories) -> dict[str, np.ndarray]:
    """Per generation: mean of sigma_t / sigma_0 with its 95% normal half-width, and |mu_t| mean: ``[T + 1]``."""
    ratio = traj.std / traj.std[:, :1]
    replicates = ratio.shape[0]
    return {
        "std_ratio": ratio.mean(axis=0),
        "std_ratio_ci95": 1.96 * ratio.std(axis=0, ddof=1) / math.sqrt(replicates),
        "abs_mean": np.abs(traj.mean).mean(axis=0),
    }


def write_report(
    out_dir, ns, lambdas, generations: int, replicates: int, seed: int = 0, estimator: str = "mle"
) -> dict[str, object]:
    """Simulate every (n, lambda); write ``theory.csv``, ``theory.md`` and ``std_ratio_n<n>.png`` in ``out_dir``.

    Each plot's title, also its alt text in ``theory.md``, names the estimator (``ESTIMATOR_NAMES``).
    """
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autophagy import atomic
    from autophagy.config import format_lambda
    from autophagy.figures import lambda_label, lambda_style, save_figure

    out = Path(out_dir)
    rows, figures = [], []
    lines = ["| n | λ | E[σ_T/σ_0] ± 95% | predicted (fully synthetic) | E[abs μ_T] |", "|---|---|---|---|---|"]
    for n in ns:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        predicted = predicted_std_ratio(n, generations, estimator)
        colours = {lam: style["color"] for lam, style in lambda_style([format_lambda(lam) for lam in lambdas]).items()}
        for index, lam in enumerate(lambdas):
            stats = summary(simulate(n, lam, generations, replicates, seed + index, estimator))
            t = np.arange(generations + 1)
            (line,) = ax.plot(
                t, stats["std_ratio"], label=lambda_label(format_lambda(lam)), color=colours[format_lambda(lam)]
            )
            ax.fill_between(
                t,
                stats["std_ratio"] - stats["std_ratio_ci95"],
                stats["std_ratio"] + stats["std_ratio_ci95"],
                color=line.get_color(),
                alpha=0.2,
            )
            for g in range(generations + 1):
                rows.append(
                    f"{n},{format_lambda(lam)},{g},{stats['std_ratio'][g]:.6g},{stats['std_ratio_ci95'][g]:.3g},"
                    f"{predicted[g] if math.isinf(lam) else ''},{stats['abs_mean'][g]:.6g}"
                )
            lines.append(
                f"| {n} | {format_lambda(lam)} | {stats['std_ratio'][-1]:.4g} ± {stats['std_ratio_ci95'][-1]:.2g} | "
                f"{format(predicted[-1], '.4g') if math.isinf(lam) else '–'} | {stats['abs_mean'][-1]:.4f} |"
            )
        ax.plot(
            np.arange(generations + 1),
            predicted,
            "--",
            color="0.45",
            label=f"c({n})^t (theory)" if estimator != "mle" else f"(c({n})·√((n−1)/n))^t (theory)",
        )
        ax.set_xlabel("generation t")
        ax.set_ylabel("fitted std over initial std, E[σ_t / σ_0]")
        title = f"Gaussian {ESTIMATOR_NAMES[estimator]} retraining, n = {n}, {replicates} replicates"
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save_figure(fig, out / f"std_ratio_n{n}.png")
        figures.append((title, str(out / f"std_ratio_n{n}.png")))
    atomic.write_text(
        out / "theory.csv", "n,lambda,generation,std_ratio,std_ratio_ci95,predicted,abs_mean\n" + "\n".join(rows) + "\n"
    )
    heading = f"# Gaussian retraining, {ESTIMATOR_NAMES[estimator]} fit, {replicates} replicates, T = {generations}"
    text = (
        f"{heading}\n\n" + "\n".join(lines) + "\n\n" + "".join(f"![{title}]({Path(f).name})\n" for title, f in figures)
    )
    atomic.write_text(out / "theory.md", text)
    return {"markdown": str(out / "theory.md"), "figures": [f for _, f in figures]}
