"""The Gaussian warm-up of Bertrand et al. (2024), Sec. 3: fit N(mu, diag(sigma^2)) by maximum
likelihood, sample from it, refit. Fully synthetic, sigma_{t+1}^2 = sigma_t^2 chi^2_{n-1} / n, so
sigma_t -> 0 almost surely while mu_t performs a random walk.

Everything is float64 (fit, parameters, samples and the sample sets they are stored in): sigma_t
falls by orders of magnitude (about e^-25 after 1200 generations at n = 50), and float32 samples
around a mean of order 1 cannot resolve a spread below about 1e-7, where the chain would stop.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autophagy.config import GaussianModelConfig, TrainConfig
from autophagy.models.base import GenerativeModel, LogFn, ModelError, TrainReport
from autophagy.models.noise import index_noise


class GaussianModel(GenerativeModel):
    """Closed-form fit on float vectors ``[N, D]``, float64 samples; the "budget" is irrelevant (one pass)."""

    family = "gaussian"
    kind = "vector"

    def __init__(self, cfg: GaussianModelConfig, item_shape: tuple[int, ...]):
        super().__init__(cfg, item_shape)
        (dim,) = self.item_shape
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.std = torch.ones(dim, dtype=torch.float64)

    def fit(
        self,
        rows: np.ndarray,
        budget_kimg: float,
        train: TrainConfig,
        seed: int,
        scratch_dir: Path | None = None,
        log: LogFn | None = None,
    ) -> TrainReport:
        x = torch.from_numpy(np.asarray(rows, dtype=np.float64))
        if len(x) < 2:
            raise ModelError(f"the gaussian family needs at least 2 rows to fit a variance, got {len(x)}")
        self.mean = x.mean(dim=0)
        self.std = x.std(dim=0, correction=0 if self.cfg.estimator == "mle" else 1)
        return TrainReport(steps=1, images_seen=len(x), loss=float("nan"), seconds=0.0)

    def sample(
        self,
        n: int,
        seed: int,
        batch_size: int = 1024,
        device: str = "auto",
        temperature: float = 1.0,
        start: int = 0,
        **options: Any,
    ) -> np.ndarray:
        z = index_noise(seed, start, n, self.item_shape, dtype=torch.float64) * temperature
        return (self.mean + self.std * z).numpy()

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"model": {"mean": self.mean, "std": self.std}}

    def load_tensors(self, tensors: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        model = tensors["model"]
        if set(model) != {"mean", "std"} or model["mean"].shape != self.mean.shape:
            raise ModelError(f"checkpoint tensors do not fit a gaussian of dimension {self.item_shape[0]}")
        self.mean, self.std = model["mean"].to(torch.float64), model["std"].to(torch.float64)
