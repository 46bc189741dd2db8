"""Feature extractors: the space in which Frechet distance and precision/recall are measured.

Every extractor maps items to float32 features ``[N, F]``, batch by batch (memory-mapped shards
are read one batch at a time). Items are uint8 images ``[N, H, W, C]`` or float32 vectors
``[N, D]``, the two shard kinds of a dataset directory.

==============  ======================================================  =====================
name            features                                                ``id``
==============  ======================================================  =====================
``raw``         the items flattened; images scaled to [0, 1]            ``raw``
``digits-net``  penultimate layer (64-d) of a CNN trained on the        ``digits-net:<sha12>``
                digits training split (:mod:`.digits_net`)
``inception``   clean-fid's Inception-v3 pool features (2048-d) after   ``inception:<sha12>``
                its "clean" resize to 299x299 (Parmar et al. 2022)
==============  ======================================================  =====================

``id`` names the extractor and its weights (``<sha12>`` = the first 12 hex digits of the weights
file's sha256), so it can key caches of reference statistics.

The Inception weights are a TorchScript archive, which ``torch.jit.load`` runs as code: when
``$AUTOPHAGY_INCEPTION_SHA256`` is set (the Docker image sets it to :data:`INCEPTION_SHA256`, the
hash of clean-fid's file), a weights file with another hash is refused before it is loaded. The
hash is computed once per process and file (keyed by path, size, mtime and inode).
"""

from __future__ import annotations

import abc
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from autophagy.atomic import sha256_file
from autophagy.config import FEATURE_EXTRACTORS as EXTRACTORS
from autophagy.metrics.clean_resize import clean_resize, clean_resize_matrices
from autophagy.metrics.digits_net import images_to_tensor, load_digits_net, train_digits_net
from autophagy.progress import batches

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_ENV = "AUTOPHAGY_INCEPTION_WEIGHTS"
INCEPTION_SHA256_ENV = "AUTOPHAGY_INCEPTION_SHA256"
#: sha256 of inception-2015-12-05.pt at INCEPTION_URL, the file clean-fid 0.1.35 downloads (the
#: same hash is pinned by crowsonkb/k-diffusion's k_diffusion/evaluation.py and other public code)
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"


class FeatureExtractorUnavailable(RuntimeError):
    """An extractor's weights are missing and cannot be obtained (e.g. offline)."""


class WeightsHashMismatch(FeatureExtractorUnavailable):
    """The weights file is not the pinned one (``$AUTOPHAGY_INCEPTION_SHA256``): it is not loaded."""


class FeatureExtractor(abc.ABC):
    """Maps items to features.

    Attributes:
        name: the extractor's name (one of ``EXTRACTORS``).
        id: the name and a digest of the weights; equal ids give equal features.
        dim: the feature dimension F, or ``None`` when it depends on the items (``raw``).
        batch_size: items per forward pass.
    """

    name: str
    id: str
    dim: int | None
    batch_size: int

    def __call__(self, items: np.ndarray, label: str = "features") -> np.ndarray:
        """Features of ``items`` (uint8 ``[N, H, W, C]`` or float ``[N, D]``): float32 ``[N, F]``,
        with progress on stderr named ``label`` (:mod:`autophagy.progress`)."""
        _check_items(items)
        return np.concatenate(
            [
                self._features(items[i : i + self.batch_size])
                for i in batches(f"{label} ({self.name})", len(items), self.batch_size, "item")
            ]
        ).astype(np.float32, copy=False)

    @abc.abstractmethod
    def _features(self, batch: np.ndarray) -> np.ndarray:
        """Features of one batch of checked items: float32 ``[B, F]``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, dim={self.dim})"


class RawExtractor(FeatureExtractor):
    """The items themselves: vectors as float32, images flattened to ``[N, H*W*C]`` and scaled to [0, 1]."""

    name = id = "raw"
    dim = None

    def __init__(self, batch_size: int = 65536):
        self.batch_size = batch_size

    def _features(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype == np.uint8:
            return batch.reshape(len(batch), -1).astype(np.float32) / 255.0
        return batch.astype(np.float32)


class DigitsNetExtractor(FeatureExtractor):
    """Penultimate-layer features of the digits-net; items are uint8 digits ``[N, 8, 8, 1]``."""

    name = "digits-net"

    def __init__(self, directory: Path, device: str | torch.device = "cpu", batch_size: int = 4096):
        self.net, self.info = load_digits_net(directory)
        self.device = torch.device(device)
        self.net.to(self.device)
        self.id = f"digits-net:{self.info['sha256'][:12]}"
        self.dim = self.info["feature_dim"]
        self.batch_size = batch_size

    def _features(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.uint8 or batch.shape[1:] != (8, 8, 1):
            raise ValueError(f"digits-net takes uint8 digits [N, 8, 8, 1], got {batch.dtype} {list(batch.shape)}")
        with torch.inference_mode():
            return self.net.features(images_to_tensor(batch).to(self.device)).cpu().numpy()


class InceptionExtractor(FeatureExtractor):
    """clean-fid's Inception-v3 (``InceptionV3W``) on "clean"-resized images: ``[N, 2048]``.

    Items are uint8 images ``[N, H, W, C]`` with C = 1 (repeated to RGB) or C = 3. The batch is
    resized on ``device`` (:mod:`.clean_resize`), exactly what clean-fid feeds the network.
    """

    name = "inception"
    dim = 2048

    def __init__(self, network: torch.nn.Module, id: str, device: str | torch.device = "cpu", batch_size: int = 64):
        """``network``: float ``[B, 3, 299, 299]`` in 0..255 -> ``[B, 2048]`` (clean-fid's calling
        convention, also that of its ``custom_feat_extractor``); ``id`` names it and its weights."""
        self.device = torch.device(device)
        self.model = network.to(self.device).eval()
        self.id = id
        self.batch_size = batch_size
        self._matrices: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_weights(
        cls, weights: Path, device: str | torch.device = "cpu", batch_size: int = 64
    ) -> InceptionExtractor:
        """clean-fid's TorchScript Inception-v3 (``inception-2015-12-05.pt``)."""
        from cleanfid.inception_torchscript import InceptionV3W

        digest = verify_inception_weights(weights)  # before torch.jit.load runs the archive
        network = InceptionV3W(str(weights.parent), download=False)
        return cls(network, f"inception:{digest[:12]}", device, batch_size)

    def _features(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] not in (1, 3):
            raise ValueError(f"inception takes uint8 images [N, H, W, 1 or 3], got {batch.dtype} {list(batch.shape)}")
        h, w = batch.shape[1:3]
        if (h, w) not in self._matrices:
            self._matrices[h, w] = tuple(
                torch.as_tensor(m, dtype=torch.float32, device=self.device) for m in clean_resize_matrices(h, w)
            )
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2).float()
            x = clean_resize(x, *self._matrices[h, w]).expand(-1, 3, -1, -1)
            return self.model(x).cpu().numpy()


def build_extractor(
    name: str,
    *,
    weights_path: str | Path | None = None,
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """The extractor called ``name`` (``raw``, ``digits-net`` or ``inception``).

    Args:
        weights_path: inception only: the ``inception-2015-12-05.pt`` file or its folder
            (see :func:`inception_weights`). Ignored by the others.
        cache_dir: digits-net only (required): the folder of the trained net; trained there
            (a few seconds, deterministic) when it holds none.
        device: torch device for the forward passes; ``"auto"`` picks CUDA when available.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "raw":
        return RawExtractor()
    if name == "digits-net":
        if cache_dir is None:
            raise ValueError(
                "the digits-net extractor needs cache_dir, the folder that holds (or will hold) the trained net"
            )
        try:
            return DigitsNetExtractor(Path(cache_dir), device=device)
        except FileNotFoundError:
            train_digits_net(Path(cache_dir))
            return DigitsNetExtractor(Path(cache_dir), device=device)
    if name == "inception":
        # 256 images (~4 GB of activations) per forward on a GPU; 64 on a CPU.
        batch_size = 256 if torch.device(device).type == "cuda" else 64
        return InceptionExtractor.from_weights(inception_weights(weights_path), device=device, batch_size=batch_size)
    raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def inception_weights(path: str | Path | None = None) -> Path:
    """Locate clean-fid's Inception weights, downloading them with clean-fid if missing.

    The file is ``path`` (the file itself or its folder), else ``$AUTOPHAGY_INCEPTION_WEIGHTS``,
    else clean-fid's download location ``<tempdir>/inception-2015-12-05.pt``. It must carry
    clean-fid's file name, which ``InceptionV3W`` appends to the folder it is given.

    Raises:
        FeatureExtractorUnavailable: the file is missing and the download failed.
    """
    if path is None:
        path = os.environ.get(INCEPTION_ENV) or Path(tempfile.gettempdir()) / INCEPTION_FILE
    path = Path(path)
    if path.is_dir() or path.suffix != ".pt":
        path = path / INCEPTION_FILE
    if path.name != INCEPTION_FILE:
        raise ValueError(
            f"the Inception weights file must be named {INCEPTION_FILE} (clean-fid loads that name), got {path}"
        )
    if not path.is_file():
        _download_inception(path)
    return path


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def weights_sha256(path: Path) -> str:
    """The sha256 of a weights file, hashed once per process while its path, size, mtime and
    inode stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def verify_inception_weights(path: Path) -> str:
    """The sha256 of the Inception weights at ``path``, which must be ``$AUTOPHAGY_INCEPTION_SHA256``
    when that is set (empty: not checked).

    Raises:
        WeightsHashMismatch: the file has another hash (or the variable is not a sha256).
    """
    expected = os.environ.get(INCEPTION_SHA256_ENV, "").strip().lower()
    if expected and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
        raise WeightsHashMismatch(f"{INCEPTION_SHA256_ENV}={expected!r} is not a sha256 (64 hex digits)")
    digest = weights_sha256(path)
    if expected and digest != expected:
        raise WeightsHashMismatch(
            f"the Inception weights {path} have sha256 {digest}, not the pinned {expected} ({INCEPTION_SHA256_ENV}); "
            "they are not loaded (torch.jit.load would run them). Replace the file with clean-fid's "
            f"{INCEPTION_FILE} from {INCEPTION_URL}, or set {INCEPTION_SHA256_ENV} to the hash of the weights you trust"
        )
    return digest


def _download_inception(path: Path) -> None:
    """Download the weights with clean-fid into a temporary folder beside ``path``, then move them into place."""
    from cleanfid.downloads_helper import check_download_inception

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".inception-download-") as tmp:
            os.replace(check_download_inception(fpath=tmp), path)
    except OSError as err:  # urllib's URLError is an OSError
        raise FeatureExtractorUnavailable(
            f"the Inception-v3 weights could not be downloaded (offline?): {err}. "
            f"Fetch {INCEPTION_URL} on a connected machine and place it at {path}, "
            f"or set {INCEPTION_ENV} (or evaluate.inception_weights) to the file's path."
        ) from err


def _check_items(items: np.ndarray) -> None:
    if not hasattr(items, "dtype") or not hasattr(items, "shape"):
        raise TypeError(f"items must be a numpy array, got {type(items).__name__}")
    if len(items) == 0:
        raise ValueError("no items to extract features from")
    if items.dtype == np.uint8 and items.ndim == 4:
        return
    if np.issubdtype(items.dtype, np.floating) and items.ndim == 2:
        if not np.isfinite(items).all():
            raise ValueError("vector items contain NaN or infinite values")
        return
    raise ValueError(
        f"items must be uint8 images [N, H, W, C] or float vectors [N, D], got {items.dtype} {list(items.shape)}"
    )
