"""The one interface every model family implements.

A family turns dataset rows into a trained model and a trained model into fresh rows:

* ``fit(rows, budget_kimg, train_cfg, seed, scratch_dir)``: train on ``rows`` (uint8
  ``[N, H, W, C]`` images, float32 ``[N, D]`` vectors, float64 for the Gaussian family, or int32
  ``[N, L]`` token ids for text) for a budget of items seen (images, vectors or sequences),
  resuming from ``scratch_dir`` if a train state is there;
* ``sample(n, seed, batch_size)``: ``n`` new rows in the same encoding; sample ``i`` depends only
  on ``(seed, i)``, so sample sets can be split across workers and merged;
* ``tensors()`` / ``load_tensors()``: the weights (and EMA weights) as flat tensor dicts for
  safetensors; ``train_state()`` / ``load_train_state()``: what a resumed run needs;
* ``bind_data(tokenizer)``: what the model must know of its data beyond the rows (the text
  families' tokenizer), before ``fit``; ``files()`` / ``load_files()``: small side files of the
  checkpoint (a tokenizer, a network config), loaded before the weights. Both are no-ops by default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autophagy.config import TrainConfig

LogFn = Callable[[Mapping[str, float]], None]


class ModelError(ValueError):
    """A checkpoint does not fit (wrong family, wrong shape), or training went wrong."""


class TrainingDivergedError(ModelError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainReport:
    """What one call of ``fit`` did."""

    steps: int
    images_seen: int
    loss: float  # mean loss over the last steps
    seconds: float
    resumed_from_kimg: float = 0.0
    # How it ran (resolved from train.device / precision / channels_last / compile and the launcher):
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    compiled: bool = False
    world_size: int = 1  # data-parallel processes (torchrun); images_seen counts all of them

    def settings(self) -> dict[str, object]:
        """The resolved speed settings (recorded in the checkpoint's config.json)."""
        return {
            "device": self.device,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.compiled,
            "world_size": self.world_size,
        }

    def as_metrics(self) -> dict[str, float]:
        rate = self.images_seen / self.seconds if self.seconds > 0 else float("nan")
        return {
            "train_steps": float(self.steps),
            "train_kimg": self.images_seen / 1000.0,
            "train_loss": self.loss,
            "train_seconds": self.seconds,
            "train_images_per_second": rate,
        }


class GenerativeModel(ABC):
    """A model family. ``item_shape`` is ``(H, W, C)`` for images and ``(D,)`` for vectors."""

    family: ClassVar[str]
    kind: ClassVar[str]  # "image", "vector" or "text": the rows it trains on and produces

    def __init__(self, cfg: Any, item_shape: tuple[int, ...]):
        self.cfg = cfg
        self.item_shape = tuple(item_shape)

    @abstractmethod
    def fit(
        self,
        rows: np.ndarray,
        budget_kimg: float,
        train: TrainConfig,
        seed: int,
        scratch_dir: Path | None = None,
        log: LogFn | None = None,
    ) -> TrainReport:
        """Train on ``rows`` ``[N, *item_shape]`` until ``budget_kimg`` thousand images are seen."""

    @abstractmethod
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
        """Draw rows ``start .. start + n - 1`` ``[n, *item_shape]``; row ``i`` depends only on ``(seed, i)``,
        so pieces drawn on different workers concatenate to the one-piece draw.

        ``temperature`` scales the base noise (sampling bias; 1 = sample the model as it is)."""

    @abstractmethod
    def tensors(self) -> dict[str, dict[str, Any]]:
        """``{"model": {...}, "ema": {...}}``: weights as flat dicts of tensors (``ema`` optional)."""

    @abstractmethod
    def load_tensors(self, tensors: Mapping[str, Mapping[str, Any]]) -> None:
        """Inverse of :meth:`tensors`; raises :class:`ModelError` on mismatched shapes."""

    def bind_data(self, tokenizer: Any) -> None:
        """Learn what the training data's rows mean beyond their values, before :meth:`fit`.

        The train stage calls it with the training set's tokenizer
        (:class:`autophagy.data.text.TextTokenizer`) for text data. A text family builds its
        network for that vocabulary, or checks that the tokenizer it already has (from a checkpoint
        or a pretrained model) is the same one (by sha256) and raises :class:`ModelError` if not.
        Families of images and vectors have nothing to learn: the default does nothing."""

    def files(self) -> dict[str, bytes]:
        """Side files of the checkpoint, ``{file name: content}`` (e.g. ``tokenizer.json``): written
        beside the weights by :mod:`autophagy.models.checkpoint`, listed with their sha256 in its
        ``config.json``. None by default."""
        return {}

    def load_files(self, files: Mapping[str, bytes]) -> None:
        """Inverse of :meth:`files`, called (with the verified contents) before :meth:`load_tensors`:
        a family may build its network from them. The default ignores them."""

    def start_generation(self, carry_optimizer: bool, carry_ema: bool = True, finetune_from: str = "net") -> None:
        """Begin fine-tuning for a new generation (neural families reset their counters and apply
        ``train.carry_optimizer``, ``train.carry_ema`` and ``train.finetune_from``)."""

    def train_state(self) -> dict[str, Any]:
        """Optimizer moments and counters needed to continue training (tensors and numbers)."""
        return {}

    def load_train_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`train_state`; families without an optimizer ignore it."""

    def parameter_count(self) -> int:
        return sum(int(np.prod(t.shape)) for t in self.tensors()["model"].values())
