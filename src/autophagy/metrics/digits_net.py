"""A small CNN classifier of sklearn's 8x8 digits whose penultimate layer is the feature space.

Inception-v3 (FID's network) sees an 8x8 digit as an upsampled blur; a classifier trained on the
digits themselves gives features that separate the ten classes, the role Inception plays for
natural images. The net is trained deterministically (fixed seed, deterministic algorithms, one
thread, fixed epochs, one-pixel shifts as augmentation) on the training split only, so the
held-out test split measures it and the weights are reproducible; their sha256 names the feature
space (``digits-net:<sha256[:12]>``).

Files in a digits-net directory (written atomically, never a pickle):
``digits_net.safetensors`` (the state dict) and ``digits_net.json`` (architecture, seed, epochs,
accuracies, training time, the weights' sha256). The JSON is written last, so its presence marks
a complete directory.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autophagy.atomic import sha256_file, temp_path, write_json
from autophagy.data.sources import digits_images_and_labels

WEIGHTS_FILE = "digits_net.safetensors"
INFO_FILE = "digits_net.json"
ARCHITECTURE = {"channels": [16, 32], "hidden": 64, "classes": 10}
EPOCHS = 20
BATCH_SIZE = 64
LEARNING_RATE = 3e-3  # peak of a one-cycle schedule (Smith & Topin 2019)
MAX_SHIFT = 1  # augmentation: each batch is translated by up to one pixel


class DigitsNet(nn.Module):
    """conv3x3(1->c1) ReLU conv3x3(c1->c2) ReLU maxpool2 -> linear(16 c2 -> hidden) ReLU -> linear(hidden -> 10).

    Input: float ``[B, 1, 8, 8]`` in [0, 1]. :meth:`features` returns the ``[B, hidden]``
    activations of the penultimate layer (after the ReLU); :meth:`forward` the ``[B, 10]`` logits.
    """

    def __init__(self, channels: list[int], hidden: int, classes: int):
        super().__init__()
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * c2, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, classes)
        self.hidden = hidden

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, 8, 8, 1]`` -> float32 ``[N, 1, 8, 8]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def train_digits_net(out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Train the digits-net on the training split and write it to ``out_dir``.

    Deterministic: the seed fixes the initialisation and the batch order, training runs on the
    CPU with one thread and ``torch.use_deterministic_algorithms(True)`` (all restored
    afterwards, as is the global RNG), for a fixed number of epochs.

    Returns:
        The JSON record written beside the weights (``test_accuracy``, ``sha256``, ...).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = digits_images_and_labels("train")
    test_images, test_labels = digits_images_and_labels("test")
    x_train, y_train = images_to_tensor(train_images), torch.from_numpy(train_labels.astype(np.int64))
    x_test, y_test = images_to_tensor(test_images), torch.from_numpy(test_labels.astype(np.int64))

    start = time.perf_counter()
    with _deterministic_cpu(seed):
        net = DigitsNet(**ARCHITECTURE)
        optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
        steps_per_epoch = -(-len(x_train) // BATCH_SIZE)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, LEARNING_RATE, total_steps=EPOCHS * steps_per_epoch)
        rng = torch.Generator().manual_seed(seed)
        for _ in range(EPOCHS):
            for batch in torch.randperm(len(x_train), generator=rng).split(BATCH_SIZE):
                x = _random_shift(x_train[batch], rng)
                loss = nn.functional.cross_entropy(net(x), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        net.eval()
        train_accuracy, test_accuracy = _accuracy(net, x_train, y_train), _accuracy(net, x_test, y_test)
    seconds = time.perf_counter() - start

    weights_path = out_dir / WEIGHTS_FILE
    with temp_path(weights_path) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp)
    info = {
        "architecture": ARCHITECTURE,
        "feature_dim": ARCHITECTURE["hidden"],
        "seed": seed,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "lr": LEARNING_RATE,
        "max_shift": MAX_SHIFT,
        "train_size": len(x_train),
        "test_size": len(x_test),
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "training_seconds": round(seconds, 3),
        "torch_version": torch.__version__,
        "sha256": sha256_file(weights_path),
    }
    write_json(out_dir / INFO_FILE, info)
    return info


def load_digits_net(directory: Path) -> tuple[DigitsNet, dict[str, Any]]:
    """Load a trained digits-net (safetensors, no pickle) and its JSON record; the net is in eval mode.

    Raises:
        FileNotFoundError: the directory holds no complete digits-net.
        ValueError: the weights do not match the sha256 recorded when they were written.
    """
    directory = Path(directory)
    info_path, weights_path = directory / INFO_FILE, directory / WEIGHTS_FILE
    if not (info_path.is_file() and weights_path.is_file()):
        raise FileNotFoundError(f"no trained digits-net in {directory} (expected {INFO_FILE} and {WEIGHTS_FILE})")
    info = json.loads(info_path.read_text())
    digest = sha256_file(weights_path)
    if digest != info["sha256"]:
        raise ValueError(
            f"{weights_path} has sha256 {digest} but {info_path} records {info['sha256']}: "
            "the directory is corrupt; delete it to retrain"
        )
    with torch.device("meta"):  # no random initialisation: the global RNG is left alone
        net = DigitsNet(**info["architecture"])
    net.load_state_dict(load_file(weights_path), assign=True)
    return net.eval(), info


def _random_shift(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Translate a batch ``[B, 1, 8, 8]`` by one random offset in [-MAX_SHIFT, MAX_SHIFT]^2, zero-filled."""
    padded = nn.functional.pad(x, (MAX_SHIFT,) * 4)
    dy, dx = torch.randint(0, 2 * MAX_SHIFT + 1, (2,), generator=rng).tolist()
    return padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


@torch.inference_mode()
def _accuracy(net: DigitsNet, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(dim=1) == y).float().mean())


@contextlib.contextmanager
def _deterministic_cpu(seed: int) -> Iterator[None]:
    """Seed a forked global RNG, use one thread and deterministic algorithms; restore all on exit."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            torch.set_num_threads(1)
            torch.use_deterministic_algorithms(True)
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
