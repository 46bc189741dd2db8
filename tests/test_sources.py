"""Real-data sources: digits, toy2d, gaussian, cifar10 (offline), image-folder (folder and zip)."""

from __future__ import annotations

import urllib.error
import zipfile

import numpy as np
import pytest

from autophagy.config import DataConfig
from autophagy.data.sources import DataSourceError, load_split


def rows_as_set(array: np.ndarray) -> list[bytes]:
    return sorted(row.tobytes() for row in array)


# ------------------------------------------------------------------ digits


def test_digits_splits_shapes_and_levels():
    from sklearn.datasets import load_digits

    train = load_split(DataConfig(source="digits"), "train")
    test = load_split(DataConfig(source="digits"), "test")
    assert train.shape == (1497, 8, 8, 1) and test.shape == (300, 8, 8, 1)
    assert train.dtype == np.uint8 and test.dtype == np.uint8
    assert train.flags.c_contiguous
    both = np.concatenate([train, test])
    assert both.min() == 0 and both.max() == 255
    # sklearn's 17 gray levels 0..16, spread over 0..255
    assert set(np.unique(both).tolist()) == set(np.rint(np.arange(17) * 255 / 16).astype(int).tolist())
    # the two splits are exactly sklearn's 1797 images, each once
    expected = np.rint(load_digits().images * 255 / 16).astype(np.uint8)[..., None]
    assert rows_as_set(both) == rows_as_set(expected)


def test_digits_subsampling_is_seeded():
    full = load_split(DataConfig(source="digits"), "train")
    a = load_split(DataConfig(source="digits", n_train=100, seed=1), "train")
    b = load_split(DataConfig(source="digits", n_train=100, seed=1), "train")
    c = load_split(DataConfig(source="digits", n_train=100, seed=2), "train")
    assert a.shape == (100, 8, 8, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(rows_as_set(a)) <= set(rows_as_set(full))  # a subset of the split, not new rows
    assert load_split(DataConfig(source="digits", n_test=50), "test").shape == (50, 8, 8, 1)
    with pytest.raises(DataSourceError, match=r"data.n_train=2000 .* only 1497"):
        load_split(DataConfig(source="digits", n_train=2000), "train")
    with pytest.raises(DataSourceError, match="split"):
        load_split(DataConfig(source="digits"), "validation")


# ------------------------------------------------------------------ toy2d and gaussian


@pytest.mark.parametrize("name", ["8gaussians", "moons", "spiral"])
def test_toy2d_is_seeded(name):
    cfg = DataConfig(source="toy2d", name=name, n_train=500, n_test=200, seed=3)
    train = load_split(cfg, "train")
    assert train.shape == (500, 2) and train.dtype == np.float32
    assert np.isfinite(train).all()
    np.testing.assert_array_equal(train, load_split(cfg, "train"))
    other_seed = load_split(DataConfig(source="toy2d", name=name, n_train=500, n_test=200, seed=4), "train")
    assert not np.allclose(train, other_seed)
    test = load_split(cfg, "test")
    assert test.shape == (200, 2)
    assert not np.allclose(train[:200], test)  # the splits are separate random streams


def test_toy2d_shapes_of_the_distributions():
    def draw(name):
        return load_split(DataConfig(source="toy2d", name=name, n_train=4000, n_test=10), "train").astype(np.float64)

    x = draw("8gaussians")  # 8 modes on a circle of radius 4 / sqrt(2), std 0.5 / sqrt(2)
    angle = np.arctan2(x[:, 1], x[:, 0])
    nearest = np.round(angle / (np.pi / 4))
    assert np.median(np.abs(np.linalg.norm(x, axis=1) - 4 / np.sqrt(2))) < 0.4
    assert len(np.unique(nearest % 8)) == 8
    counts = np.bincount((nearest % 8).astype(int), minlength=8)
    assert counts.min() > 350  # roughly 500 per mode
    moons = draw("moons")
    assert abs(moons.mean(axis=0)).max() < 0.15  # centred
    spiral = draw("spiral")
    assert np.linalg.norm(spiral, axis=1).max() < np.pi + 0.6  # radius t / 3 with t <= 3 pi


def test_gaussian_source_mean_and_std():
    cfg = DataConfig(source="gaussian", dim=3, mean=2.0, std=0.5, n_train=20000, n_test=100, seed=5)
    x = load_split(cfg, "train").astype(np.float64)
    assert x.shape == (20000, 3) and load_split(cfg, "train").dtype == np.float32
    standard_error = 0.5 / np.sqrt(len(x))
    assert np.abs(x.mean(axis=0) - 2.0).max() < 4 * standard_error
    assert np.abs(x.std(axis=0) - 0.5).max() < 4 * 0.5 / np.sqrt(2 * len(x))
    assert abs(np.corrcoef(x.T)[0, 1]) < 0.05  # isotropic
    assert load_split(cfg, "test").shape == (100, 3)


# ------------------------------------------------------------------ cifar10 offline


@pytest.mark.timeout(120)
def test_cifar10_offline_names_the_path(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    # There is no network here. A firewall that drops packets can make a real download hang for
    # minutes, so the download itself is replaced by what urllib raises offline.
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known (simulated offline)")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    root = tmp_path / "cifar-root"
    root.mkdir()
    with pytest.raises(DataSourceError) as info:
        load_split(DataConfig(source="cifar10", path=str(root)), "train")
    message = str(info.value)
    assert str(root) in message and "cifar-10-python.tar.gz" in message and "Offline" in message


# ------------------------------------------------------------------ image-folder


def make_pngs(folder, n=10, size=6, mode="RGB"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = []
    for i in range(n):
        array = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        image = Image.fromarray(array)
        if mode != "RGB":
            image = image.convert(mode)
            array = np.asarray(image.convert("RGB"))
        image.save(folder / f"img-{i:02d}.png")
        arrays.append(array)
    return np.stack(arrays)


def folder_cfg(path, **kwargs):
    return DataConfig(source="image-folder", path=str(path), **kwargs)


def test_image_folder_splits(tmp_path):
    originals = make_pngs(tmp_path / "pngs")
    cfg = folder_cfg(tmp_path / "pngs", test_fraction=0.2)
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert train.shape == (8, 6, 6, 3) and test.shape == (2, 6, 6, 3) and train.dtype == np.uint8
    # PNG is lossless: the two splits are exactly the files' pixels, each file once
    assert rows_as_set(np.concatenate([train, test])) == rows_as_set(originals)
    # the held-out split does not move with data.seed; n_train subsamples the train split
    np.testing.assert_array_equal(load_split(folder_cfg(tmp_path / "pngs", test_fraction=0.2, seed=9), "test"), test)
    assert load_split(folder_cfg(tmp_path / "pngs", test_fraction=0.2, n_train=5), "train").shape == (5, 6, 6, 3)


def test_image_folder_from_zip_equals_folder(tmp_path):
    make_pngs(tmp_path / "pngs")
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in sorted((tmp_path / "pngs").iterdir()):
            handle.write(file, f"faces/{file.name}")
        handle.writestr("faces/README.txt", "not an image")
    for split in ("train", "test"):
        np.testing.assert_array_equal(
            load_split(folder_cfg(archive), split), load_split(folder_cfg(tmp_path / "pngs"), split)
        )


def test_image_folder_resolution_and_grayscale(tmp_path):
    make_pngs(tmp_path / "pngs", n=5, size=8, mode="L")
    resized = load_split(folder_cfg(tmp_path / "pngs", resolution=4, test_fraction=0.2), "train")
    assert resized.shape == (4, 4, 4, 3) and resized.dtype == np.uint8
    gray = load_split(folder_cfg(tmp_path / "pngs", test_fraction=0.2), "train")
    assert gray.shape == (4, 8, 8, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    make_pngs(tmp_path / "pngs" / "big", n=2, size=10)  # now two sizes in the folder
    with pytest.raises(DataSourceError, match="data.resolution"):
        load_split(folder_cfg(tmp_path / "pngs", test_fraction=0.2), "train")
    assert load_split(folder_cfg(tmp_path / "pngs", test_fraction=0.2, resolution=5), "train").shape[1:] == (5, 5, 3)


def test_image_folder_bad_file(tmp_path):
    make_pngs(tmp_path / "pngs", n=4)
    (tmp_path / "pngs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG body")

    def load_both():
        cfg = folder_cfg(tmp_path / "pngs", test_fraction=0.2)
        return load_split(cfg, "train"), load_split(cfg, "test")

    with pytest.raises(DataSourceError, match="cannot decode image .*broken.png"):
        load_both()


def test_image_folder_path_errors(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        load_split(folder_cfg(tmp_path / "missing"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="no PNG/JPEG"):
        load_split(folder_cfg(tmp_path / "empty"), "train")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataSourceError, match="not a .zip"):
        load_split(folder_cfg(tmp_path / "notes.txt"), "train")
