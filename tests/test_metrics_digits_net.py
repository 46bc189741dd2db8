"""The digits-net: deterministic training, accuracy, safe loading, and its feature extractor."""

import json

import numpy as np
import pytest
import torch

from autophagy.data.sources import digits_images_and_labels
from autophagy.metrics import build_extractor, frechet_distance, gaussian_statistics
from autophagy.metrics.digits_net import (
    INFO_FILE,
    WEIGHTS_FILE,
    load_digits_net,
    train_digits_net,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """build_extractor trains the net into an empty cache directory (once for this module)."""
    cache = tmp_path_factory.mktemp("digits-net")
    threads, rng_state = torch.get_num_threads(), torch.random.get_rng_state()
    extractor = build_extractor("digits-net", cache_dir=cache, device="cpu")
    global_state = {
        "threads": torch.get_num_threads() == threads,
        "deterministic": not torch.are_deterministic_algorithms_enabled(),
        "rng": torch.equal(torch.random.get_rng_state(), rng_state),
    }
    return cache, extractor, global_state


def test_training_is_accurate_and_leaves_no_global_state(trained):
    cache, _, global_state = trained
    info = json.loads((cache / INFO_FILE).read_text())
    assert info["test_accuracy"] >= 0.97
    assert info["seed"] == 0 and info["feature_dim"] == 64
    assert info["training_seconds"] < 60
    assert all(global_state.values()), global_state
    assert sorted(p.name for p in cache.iterdir()) == sorted([INFO_FILE, WEIGHTS_FILE])


def test_training_is_deterministic(trained, tmp_path):
    cache, _, _ = trained
    info = train_digits_net(tmp_path, seed=0)
    assert info["sha256"] == json.loads((cache / INFO_FILE).read_text())["sha256"]
    assert (tmp_path / WEIGHTS_FILE).read_bytes() == (cache / WEIGHTS_FILE).read_bytes()


def test_load_checks_the_recorded_digest(trained, tmp_path):
    cache, _, _ = trained
    net, info = load_digits_net(cache)
    assert not net.training and info["sha256"]
    with pytest.raises(FileNotFoundError, match="no trained digits-net"):
        load_digits_net(tmp_path)
    (tmp_path / INFO_FILE).write_text((cache / INFO_FILE).read_text())
    (tmp_path / WEIGHTS_FILE).write_bytes((cache / WEIGHTS_FILE).read_bytes()[:-1] + b" ")
    with pytest.raises(ValueError, match="corrupt"):
        load_digits_net(tmp_path)


def test_extractor_identity_and_features(trained):
    cache, extractor, _ = trained
    info = json.loads((cache / INFO_FILE).read_text())
    assert extractor.name == "digits-net" and extractor.dim == 64
    assert extractor.id == f"digits-net:{info['sha256'][:12]}"
    # a second build loads the cached net instead of training
    assert build_extractor("digits-net", cache_dir=cache).id == extractor.id

    test_images, _ = digits_images_and_labels("test")
    features = extractor(test_images)
    assert features.shape == (300, 64) and features.dtype == np.float32
    extractor.batch_size = 7
    np.testing.assert_allclose(extractor(test_images), features, rtol=1e-5, atol=1e-6)

    # the feature space tells digits from noise: held-out digits are far closer to the training digits
    noise = np.random.default_rng(0).integers(0, 256, (300, 8, 8, 1), dtype=np.uint8)
    train_stats = gaussian_statistics(extractor(digits_images_and_labels("train")[0]))
    fd_test = frechet_distance(*gaussian_statistics(features), *train_stats)
    fd_noise = frechet_distance(*gaussian_statistics(extractor(noise)), *train_stats)
    assert fd_test < 0.1 * fd_noise


def test_extractor_input_checks(trained):
    _, extractor, _ = trained
    with pytest.raises(ValueError, match=r"uint8 digits \[N, 8, 8, 1\]"):
        extractor(np.zeros((4, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="needs cache_dir"):
        build_extractor("digits-net")
