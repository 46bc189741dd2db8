"""Feature extractors: raw, the batched clean resize against clean-fid's, and the Inception path.

The real Inception weights cannot be downloaded here, so the Inception path runs clean-fid's own
``InceptionV3W`` wrapper around a small stand-in TorchScript network saved under clean-fid's file
name, and is compared with clean-fid's per-image pipeline.
"""

import urllib.error

import numpy as np
import pytest
import torch
from cleanfid.inception_torchscript import InceptionV3W
from cleanfid.resize import build_resizer
from torch import nn

from autophagy.metrics import FeatureExtractorUnavailable, build_extractor, inception_weights
from autophagy.metrics.clean_resize import clean_resize, clean_resize_matrices
from autophagy.metrics.features import INCEPTION_ENV, INCEPTION_FILE, INCEPTION_URL

# clean-fid's network is a TorchScript archive; torch deprecates the format, not yet its loading.
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning"),
]


def test_raw_images_and_vectors():
    raw = build_extractor("raw")
    assert raw.name == raw.id == "raw" and raw.dim is None
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    features = raw(images)
    assert features.dtype == np.float32 and features.shape == (2, 48)
    np.testing.assert_allclose(features, images.reshape(2, -1) / 255.0, rtol=1e-6)
    vectors = np.random.default_rng(0).standard_normal((5, 2))
    np.testing.assert_allclose(raw(vectors), vectors.astype(np.float32))


@pytest.mark.parametrize(
    "items, message",
    [
        (np.zeros((0, 2), dtype=np.float32), "no items"),
        (np.array([[0.0, np.nan]], dtype=np.float32), "NaN"),
        (np.zeros((3, 8, 8), dtype=np.uint8), r"uint8 images \[N, H, W, C\] or float vectors"),
        (np.zeros((3, 2), dtype=np.int64), "float vectors"),
    ],
)
def test_items_are_checked(items, message):
    with pytest.raises(ValueError, match=message):
        build_extractor("raw")(items)


def test_unknown_extractor():
    with pytest.raises(ValueError, match="raw, digits-net, inception"):
        build_extractor("lenet")


@pytest.mark.parametrize("shape", [(8, 8, 3), (32, 32, 3), (20, 28, 3)])
def test_batched_clean_resize_matches_cleanfid(shape):
    images = np.random.default_rng(0).integers(0, 256, (3, *shape), dtype=np.uint8)
    expected = np.stack([build_resizer("clean")(image) for image in images])  # [3, 299, 299, 3]
    wy, wx = (torch.as_tensor(m, dtype=torch.float32) for m in clean_resize_matrices(*shape[:2]))
    ours = clean_resize(torch.from_numpy(images).permute(0, 3, 1, 2).float(), wy, wx).permute(0, 2, 3, 1)
    np.testing.assert_allclose(ours.numpy(), expected, atol=2e-3)


class _Layers(nn.Module):
    """Stand-in for Inception's layers: [B, 3, 299, 299] -> [B, 2048, 1, 1], sensitive to layout."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return torch.tanh(self.proj(pooled))[:, :, None, None]


class _Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = _Layers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture
def fake_weights(tmp_path):
    path = tmp_path / INCEPTION_FILE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.jit.script(_Base()).save(str(path))
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_inception_matches_cleanfid_pipeline(fake_weights, channels):
    extractor = build_extractor("inception", weights_path=fake_weights, device="cpu")
    assert extractor.name == "inception" and extractor.dim == 2048
    assert extractor.id.startswith("inception:") and len(extractor.id) == len("inception:") + 12

    images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, channels), dtype=np.uint8)
    extractor.batch_size = 2
    features = extractor(images)
    assert features.shape == (5, 2048) and features.dtype == np.float32

    # clean-fid: per-image "clean" resize of the RGB image, then its InceptionV3W wrapper
    model = InceptionV3W(str(fake_weights.parent), download=False)
    resize = build_resizer("clean")
    batch = np.stack([resize(np.repeat(image, 3 // channels, axis=2)) for image in images])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5)


def test_inception_weights_lookup(fake_weights, monkeypatch):
    assert inception_weights(fake_weights) == fake_weights
    assert inception_weights(fake_weights.parent) == fake_weights  # a folder holding the file
    monkeypatch.setenv(INCEPTION_ENV, str(fake_weights))
    assert inception_weights() == fake_weights
    with pytest.raises(ValueError, match=INCEPTION_FILE):
        inception_weights(fake_weights.parent / "other.pt")


def test_inception_unavailable_offline(tmp_path, monkeypatch):
    def offline(fpath):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("cleanfid.downloads_helper.check_download_inception", offline)
    target = tmp_path / "weights" / INCEPTION_FILE
    with pytest.raises(FeatureExtractorUnavailable) as err:
        build_extractor("inception", weights_path=target)
    message = str(err.value)
    assert "could not be downloaded (offline?)" in message
    assert INCEPTION_URL in message and str(target) in message and INCEPTION_ENV in message
    assert not target.exists() and not list(target.parent.iterdir())  # nothing half-written


def test_inception_download_is_moved_into_place(tmp_path, monkeypatch):
    def fake_download(fpath):
        path = f"{fpath}/{INCEPTION_FILE}"
        open(path, "wb").write(b"weights")
        return path

    monkeypatch.setattr("cleanfid.downloads_helper.check_download_inception", fake_download)
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # clean-fid's location: <tempdir>/<file>
    assert inception_weights() == tmp_path / INCEPTION_FILE
    assert (tmp_path / INCEPTION_FILE).read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == [INCEPTION_FILE]
