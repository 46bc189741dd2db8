"""clean-fid's "clean" resize to 299x299 (Parmar et al., CVPR 2022), applied to whole batches.

clean-fid resizes one image at a time: each channel goes through PIL's antialiased bicubic
filter in float32 (``cleanfid.resize.build_resizer("clean")``), then is clipped to [0, 255]. That
filter is separable and linear, so for an input of size H x W it is out = Wy @ x @ Wx^T with
fixed matrices Wy ``[299, H]`` and Wx ``[299, W]``. The matrices are read off clean-fid's own
resizer, fed with a constant image plus one indicator column (or row) per channel: PIL's weights
sum to one, so the constant passes through and the indicator's response is a column of Wx (Wy).
The offset keeps every response inside [0, 255], where clean-fid's clip does nothing. Applying the
matrices is then two batched matrix products on any device, and matches clean-fid's per-image
output to float32 rounding (tests).
"""

from __future__ import annotations

import numpy as np
import torch
from cleanfid.resize import build_resizer

SIZE = 299
# PIL's bicubic weights lie in [-0.125, 1.125] (largest at the borders of tiny inputs), so the
# responses stay within [48, 208]; a response at 0 or 255 would mean clean-fid's clip acted.
_OFFSET, _AMPLITUDE = 64.0, 128.0


def clean_resize_matrices(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(Wy [299, height], Wx [299, width])``, float64, of clean-fid's "clean" resize."""
    resize = build_resizer("clean")

    def columns(n: int, along_rows: bool) -> np.ndarray:
        out = np.empty((SIZE, n))
        for start in range(0, n, 3):  # three indicators per call, one per channel
            image = np.full((height, width, 3), _OFFSET, dtype=np.float32)
            picked = list(range(start, min(start + 3, n)))
            for channel, index in enumerate(picked):
                if along_rows:
                    image[index, :, channel] += _AMPLITUDE
                else:
                    image[:, index, channel] += _AMPLITUDE
            response = resize(image).astype(np.float64)  # [299, 299, 3]
            if response.min() <= 0.0 or response.max() >= 255.0:
                raise RuntimeError(f"clean resize of a {height}x{width} image left the linear range")
            for channel, index in enumerate(picked):
                profile = response[:, :, channel].mean(axis=1 if along_rows else 0)
                out[:, index] = (profile - _OFFSET) / _AMPLITUDE
        return out

    return columns(height, along_rows=True), columns(width, along_rows=False)


def clean_resize(images: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """Resize a batch with the matrices of :func:`clean_resize_matrices` and clip to [0, 255].

    Args:
        images: float32 ``[B, C, H, W]`` with values in [0, 255].
        wy, wx: float32 ``[299, H]`` and ``[299, W]`` on the images' device.

    Returns:
        float32 ``[B, C, 299, 299]``.
    """
    return (wy @ images @ wx.T).clamp_(0.0, 255.0)
