"""Pictures of a generation's samples: an image grid (PNG), a 2-D scatter plot against the data, and
a card of the first generated texts (PNG).

Both files are written atomically (:func:`autophagy.atomic.temp_path`), so a reader never sees
half a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from autophagy.atomic import temp_path

MIN_TILE = 32  # pixels: tiny images (8x8 digits) are upscaled to at least this by default


def save_image_grid(
    images: np.ndarray,
    path: str | Path,
    *,
    ncols: int | None = None,
    scale: int | None = None,
    padding: int = 2,
) -> Path:
    """Write ``images`` (uint8 ``[N, H, W, C]``, C = 1 or 3) as one PNG grid.

    Args:
        ncols: tiles per row; default ``ceil(sqrt(N))``.
        scale: integer nearest-neighbour upscaling of every tile (pixels stay sharp); default
            the smallest factor that makes a tile at least ``MIN_TILE`` pixels high.
        padding: black pixels between tiles and around the grid (after scaling).

    Returns:
        ``path``. The PNG is ``ncols * (W * scale + padding) + padding`` pixels wide and
        ``nrows * (H * scale + padding) + padding`` high, grayscale for C = 1, RGB for C = 3.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3) or len(images) == 0:
        raise ValueError(f"images must be uint8 [N>0, H, W, 1 or 3], got {images.dtype} {list(images.shape)}")
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    scale = scale or max(1, math.ceil(MIN_TILE / h))
    if ncols < 1 or scale < 1 or padding < 0:
        raise ValueError(f"need ncols >= 1, scale >= 1, padding >= 0; got {ncols}, {scale}, {padding}")
    nrows = math.ceil(n / ncols)
    tiles = images.repeat(scale, axis=1).repeat(scale, axis=2)
    th, tw = h * scale, w * scale
    canvas = np.zeros((nrows * (th + padding) + padding, ncols * (tw + padding) + padding, c), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        top, left = padding + (i // ncols) * (th + padding), padding + (i % ncols) * (tw + padding)
        canvas[top : top + th, left : left + tw] = tile
    picture = Image.fromarray(canvas[:, :, 0] if c == 1 else canvas)
    with temp_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def save_scatter(
    vectors: np.ndarray,
    reference: np.ndarray,
    path: str | Path,
    *,
    title: str | None = None,
    max_points: int = 5000,
) -> Path:
    """Scatter plot (PNG) of 2-D samples ``vectors`` ``[N, 2]`` over the data ``reference`` ``[M, 2]``.

    At most ``max_points`` of each set are drawn (the first ones). Uses matplotlib's Agg canvas
    directly, without pyplot's global figure state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for which, arr in (("vectors", vectors), ("reference", reference)):
        if np.ndim(arr) != 2 or np.shape(arr)[1] != 2:
            raise ValueError(f"{which} must be 2-D points [N, 2], got shape {np.shape(arr)}")
    fig = Figure(figsize=(4, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ref, vec = np.asarray(reference)[:max_points], np.asarray(vectors)[:max_points]
    ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.4, c="tab:gray", label="data")
    ax.scatter(vec[:, 0], vec[:, 1], s=2, alpha=0.6, c="tab:orange", label="samples")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=4, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with temp_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def save_text_samples(
    texts: list[str], path: str | Path, *, title: str | None = None, width: int = 100, lines_per_text: int = 3
) -> Path:
    """A PNG of ``texts`` (decoded samples), one numbered paragraph each in a monospace font: each
    text's whitespace collapsed, control characters shown as U+FFFD (a sampled byte-level BPE can
    emit them), wrapped at ``width`` characters and cut to ``lines_per_text`` lines
    (``…`` marks a cut). The text picture of a text generation, where images get a grid."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not texts:
        raise ValueError("no texts to draw")
    paragraphs = []
    for index, text in enumerate(texts):
        printable = "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in " ".join(text.split()))
        lines = textwrap.wrap(printable or "(empty)", width=width) or ["(empty)"]
        if len(lines) > lines_per_text:
            lines = lines[:lines_per_text]
            lines[-1] = lines[-1][: width - 1] + "…"
        paragraphs.append(
            "\n".join(f"{f'{index + 1:>2}.' if i == 0 else '   '} {line}" for i, line in enumerate(lines))
        )
    body = "\n\n".join(paragraphs)
    rows = body.count("\n") + 1 + (2 if title else 0)
    fig = Figure(figsize=(0.075 * (width + 6), 0.16 * rows + 0.3), dpi=100)
    FigureCanvasAgg(fig)
    if title:
        fig.text(0.01, 1 - 0.1 / fig.get_figheight(), title, va="top", fontsize=9, parse_math=False)
    top = 1 - (0.45 if title else 0.1) / fig.get_figheight()
    fig.text(0.01, top, body, va="top", family="monospace", fontsize=8, parse_math=False)
    with temp_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
