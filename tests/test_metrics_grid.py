"""Sample pictures: PNG grids of images and 2-D scatter plots open with PIL at the expected size."""

import numpy as np
import pytest
from PIL import Image

from autophagy.metrics import save_image_grid, save_scatter


def test_digit_grid_is_upscaled(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
    path = save_image_grid(images, tmp_path / "grid.png")
    with Image.open(path) as picture:
        # 4 columns x 3 rows of 32-pixel tiles (8 x 4), 2-pixel padding
        assert picture.size == (4 * 34 + 2, 3 * 34 + 2)
        assert picture.mode == "L"
        pixels = np.asarray(picture)
    tile = pixels[2:34, 2:34]
    np.testing.assert_array_equal(tile, images[0, :, :, 0].repeat(4, axis=0).repeat(4, axis=1))
    assert not list(tmp_path.glob(".*.tmp"))


def test_rgb_grid_with_explicit_layout(tmp_path):
    images = np.full((6, 32, 32, 3), 200, dtype=np.uint8)
    path = save_image_grid(images, tmp_path / "sub" / "grid.png", ncols=6, scale=1, padding=0)
    with Image.open(path) as picture:
        assert picture.size == (6 * 32, 32)
        assert picture.mode == "RGB"


def test_grid_rejects_non_images(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        save_image_grid(np.zeros((4, 8, 8, 1), dtype=np.float32), tmp_path / "grid.png")
    assert not list(tmp_path.iterdir())


def test_scatter(tmp_path):
    rng = np.random.default_rng(1)
    path = save_scatter(
        rng.standard_normal((300, 2)), rng.standard_normal((500, 2)), tmp_path / "s.png", title="gen-001"
    )
    with Image.open(path) as picture:
        assert picture.size == (400, 400)


def test_scatter_rejects_non_2d(tmp_path):
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        save_scatter(np.zeros((5, 3)), np.zeros((5, 2)), tmp_path / "s.png")
