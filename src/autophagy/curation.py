"""Curation and self-correction of synthetic samples, the two "guided" loops of later work.

* Curation (Ferbach et al. 2024, "Self-Consuming Generative Models with Curated Data Provably
  Optimize Human Preferences"): draw K candidates per kept sample and keep one with probability
  proportional to exp(r(x) / beta) — sampled exactly with the Gumbel-max trick.
* Self-correction (Gillman et al. 2024, "Self-Correcting Self-Consuming Loops for Generative
  Model Training"): an expert correction maps each synthetic sample towards the data manifold
  before it is mixed in. Built in, for vectors: move each sample a fraction ``strength`` of the
  way to its nearest real training item.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

RewardFn = Callable[[np.ndarray], np.ndarray]
REWARDS = ("digits-confidence", "toy-nearest-real")
CORRECTIONS = ("nearest-real",)


def select(rewards: np.ndarray, k: int, beta: float, seed: int, first_group: int = 0) -> np.ndarray:
    """Indices ``[m]`` of the kept candidates: one per group of ``k`` consecutive candidates
    (``rewards`` is ``[m * k]``), drawn with probability softmax(r / beta) within the group
    (the Gumbel-max trick). Group ``first_group + j``'s draw depends only on ``seed`` and that
    index, so a sample set curated in pieces equals the one curated whole."""
    if rewards.ndim != 1 or len(rewards) % k:
        raise ValueError(f"need m * k rewards for k = {k}, got {rewards.shape}")
    groups = rewards.reshape(-1, k) / beta
    gumbel = (
        np.stack([np.random.default_rng([seed, 0xC0BA, first_group + j]).gumbel(size=k) for j in range(len(groups))])
        if len(groups)
        else np.empty((0, k))
    )
    return np.arange(len(groups)) * k + np.argmax(groups + gumbel, axis=1)


def digits_confidence(features_dir: Path) -> RewardFn:
    """r(x) = the digits-net's probability of its most likely class: rewards legible digits."""
    from autophagy.metrics.digits_net import images_to_tensor, load_digits_net

    net, _ = load_digits_net(features_dir)

    def reward(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(net(images_to_tensor(images)), dim=1).max(dim=1).values.numpy()

    return reward


def nearest_real(real: np.ndarray) -> RewardFn:
    """r(x) = -distance to the nearest real item (vectors ``[N, D]``)."""
    reference = torch.from_numpy(np.asarray(real, dtype=np.float32))

    def reward(rows: np.ndarray) -> np.ndarray:
        return -torch.cdist(torch.from_numpy(np.array(rows, dtype=np.float32)), reference).min(dim=1).values.numpy()

    return reward


def build_reward(name: str, features_dir: Path | None, real: np.ndarray) -> RewardFn:
    if name == "digits-confidence":
        if features_dir is None:
            raise ValueError("the digits-confidence reward needs the digits-net (evaluate.features=digits-net)")
        return digits_confidence(features_dir)
    if name == "toy-nearest-real":
        return nearest_real(real)
    raise ValueError(f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}")


def correct_nearest_real(rows: np.ndarray, real: np.ndarray, strength: float) -> np.ndarray:
    """x + strength (NN_real(x) - x): float32 ``[N, D]``; strength 0 is no correction, 1 snaps to data."""
    x = torch.from_numpy(np.array(rows, dtype=np.float32))  # a copy: memory-mapped rows are read-only
    reference = torch.from_numpy(np.asarray(real, dtype=np.float32))
    nearest = reference[torch.cdist(x, reference).argmin(dim=1)]
    return (x + strength * (nearest - x)).numpy()
