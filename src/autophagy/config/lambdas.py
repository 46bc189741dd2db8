"""lambda, the ratio |D_synth| / |D_real| of a chain: parsing, range checks and its canonical text.

Generation 0 belongs to no lambda (it is shared by every chain of a seed): ``None`` in Python
(``null`` in JSON records, and in the seeds derived from it), :data:`NO_LAMBDA` in text (labels,
the Kubeflow tasks' records). :func:`chain_lambda` reads either, and the Kubeflow tasks' empty
``lam`` parameter.
"""

from __future__ import annotations

import math
import typing
from typing import Any

from autophagy.config.checks import ConfigError

if typing.TYPE_CHECKING:
    from autophagy.config.experiment import ExperimentConfig

#: The most synthetic samples, floor(lambda n), one generation may draw. Each generation draws them
#: (every one with its own noise row, indexed by int64) and holds them in memory as one array; 10^8
#: is 2000 times CIFAR-10's training set, 0.8 GB of 2-D vectors, 6.4 GB of 8x8 digits.
MAX_SYNTHETIC_SAMPLES = 10**8
#: Training-split sizes of the sources whose split is fixed (``data.n_train`` unset keeps all of it).
FIXED_TRAIN_SPLIT_ROWS = {"digits": 1497, "cifar10": 50000}
#: The text of "no lambda" (generation 0, shared by every chain of a seed).
NO_LAMBDA = "shared"


def parse_lambda(value: Any, option: str = "lambda") -> float:
    """Parse a lambda value: a number >= 0 or ``inf`` (fully synthetic). Errors name ``option``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("inf", "+inf", "infinity", ".inf", "full", "fully-synthetic"):
            return math.inf
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{option}: lambda must be a number >= 0 or 'inf', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{option}: lambda must be a number >= 0 or 'inf', got {value!r}")
    return check_lambda(float(value), option=option)


def check_lambda(lam: float, option: str = "lambda", n_real: int | None = None, n_from: str = "") -> float:
    """Reject NaN and negative ratios; ``inf`` is legal (fully synthetic). With ``n_real`` real
    items (``n_from`` says where that number comes from), also a finite lambda whose floor(lambda n)
    synthetic samples exceed :data:`MAX_SYNTHETIC_SAMPLES`."""
    if math.isnan(lam) or lam < 0:
        raise ConfigError(f"{option}: lambda is the ratio |D_synth| / |D_real| and must be >= 0 or inf, got {lam}")
    if n_real is not None and math.isfinite(lam) and lam * n_real > MAX_SYNTHETIC_SAMPLES:
        count = lam * n_real
        raise ConfigError(
            f"{option}: lambda = {format_lambda(lam)} asks for floor(lambda n) = "
            f"{f'{math.floor(count):,}' if math.isfinite(count) else 'over 1e308'} synthetic samples "
            f"per generation with n = {n_real} real items{n_from}; at most {MAX_SYNTHETIC_SAMPLES:,} are allowed, so "
            f"lambda <= {MAX_SYNTHETIC_SAMPLES / n_real:.6g} here (each generation draws them and holds them in memory "
            "as one array). For synthetic data only, use lambda = inf."
        )
    return lam


def chain_lambda(text: str | None, option: str = "lambda") -> float | None:
    """The lambda of a chain from text; None (no lambda: generation 0) for :data:`NO_LAMBDA`, ``""`` or None."""
    if text is None or text.strip() in ("", NO_LAMBDA):
        return None
    return parse_lambda(text, option=option)


def real_items_bound(cfg: ExperimentConfig) -> tuple[int, str]:
    """n, the real items a generation trains on, as far as it is known before the data is prepared,
    and where that number comes from: ``data.n_train``, a fixed split's size, else the bound 1."""
    if cfg.data.n_train is not None:
        return cfg.data.n_train, " (data.n_train)"
    if cfg.data.source in FIXED_TRAIN_SPLIT_ROWS:
        return FIXED_TRAIN_SPLIT_ROWS[cfg.data.source], f" (the {cfg.data.source} training split)"
    return 1, " (at least 1; the data is not prepared yet)"


def format_lambda(lam: float) -> str:
    """Canonical text of a lambda for paths and tags: ``0``, ``0.5``, ``inf``."""
    if math.isinf(lam):
        return "inf"
    text = f"{lam:g}"
    # ``:g`` keeps 6 significant digits; fall back to the shortest exact text so that two
    # different lambdas never share a run directory (0.1234567 vs 0.1234568).
    return text if float(text) == lam else repr(float(lam))


def format_lambdas(lams: typing.Iterable[float]) -> str:
    return "[" + ", ".join(format_lambda(x) for x in lams) + "]"
