"""The look of autophagy's figures and how they are saved: words on the axes, a colour-blind-safe
palette with lambda = inf set apart, and PNG + PDF + SVG written side by side, byte-identical on a rerun.

* :func:`metric_label`: ``fd_train`` -> ``Frechet distance, train set``, from the metric registry
  (:mod:`autophagy.metric_keys`: its label and ``suffix_label``); an unregistered key is shown as it is.
* :func:`lambda_style`: the colour and marker of each lambda. Finite lambdas take the Okabe-Ito
  colours (Okabe & Ito 2008, safe for the common colour-vision deficiencies) without its yellow,
  which is faint on white; lambda = inf (fully synthetic) is black with its own marker.
* :func:`save_figure`: the PNG (for the markdown and HTML reports) and a PDF and an SVG beside it
  (for a paper), each written atomically. Text stays text in both (TrueType fonts in the PDF,
  ``<text>`` elements in the SVG); the SVG ids and the files' dates are fixed, so rerunning a
  report rewrites the same bytes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from autophagy import atomic
from autophagy.config import parse_lambda
from autophagy.metric_keys import metric_of

#: Okabe-Ito without its yellow (#F0E442), in the order finite lambdas take them.
FINITE_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
FINITE_MARKERS = ("o", "s", "^", "D", "v", "P")
#: A seventh and later finite lambda reuses the colours with another line style.
LINE_STYLES = ("-", "--", ":", "-.")
INF_COLOUR = "#000000"
INF_MARKER = "X"
#: The formats written for each figure; the first is the one the reports embed.
FORMATS = ("png", "pdf", "svg")
#: Settings that make the PDF and SVG editable (text as text) and reproducible byte for byte.
SAVE_RC = {"svg.hashsalt": "autophagy", "svg.fonttype": "none", "pdf.fonttype": 42}
METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "Producer": None},
    "svg": {"Date": None, "Creator": None},
}


def metric_label(key: str) -> str:
    """Words for a metric key: ``fd_train`` -> ``Frechet distance, train set``, ``distinct_2`` ->
    ``distinct n-grams (Li et al. 2016), n = 2``."""
    metric = metric_of(key)
    if metric is None:
        return key
    return f"{metric.label}, {metric.suffix_label.format(key[len(metric.name) + 1 :])}"


def direction(key: str) -> str:
    """``(lower is better)``, ``(higher is better)``, or '' for an unregistered key or one without a direction."""
    metric = metric_of(key)
    if metric is None or metric.lower_is_better is None:
        return ""
    return "(lower is better)" if metric.lower_is_better else "(higher is better)"


def lambda_label(lam: str) -> str:
    """``λ = 0.5``; ``λ = ∞ (fully synthetic)`` for ``inf``."""
    return "λ = ∞ (fully synthetic)" if math.isinf(parse_lambda(lam)) else f"λ = {lam}"


def lambda_style(lambdas: list[str]) -> dict[str, dict[str, str]]:
    """``{lambda: {"color", "marker", "linestyle"}}`` for ``ax.plot``; finite lambdas in ascending
    order take :data:`FINITE_COLOURS`, ``inf`` is black with :data:`INF_MARKER`."""
    finite = sorted((lam for lam in lambdas if not math.isinf(parse_lambda(lam))), key=parse_lambda)
    styles = {}
    for index, lam in enumerate(finite):
        cycle, slot = divmod(index, len(FINITE_COLOURS))
        styles[lam] = {
            "color": FINITE_COLOURS[slot],
            "marker": FINITE_MARKERS[slot],
            "linestyle": LINE_STYLES[cycle % len(LINE_STYLES)],
        }
    for lam in lambdas:
        if math.isinf(parse_lambda(lam)):
            styles[lam] = {"color": INF_COLOUR, "marker": INF_MARKER, "linestyle": "-"}
    return styles


def figure_paths(png: Path) -> list[Path]:
    """The PNG and its PDF and SVG siblings."""
    return [Path(png).with_suffix(f".{fmt}") for fmt in FORMATS]


def save_figure(fig, path: str | Path) -> list[Path]:
    """Write ``fig`` as ``path`` (a ``.png``) and as a PDF and an SVG beside it, each atomically,
    then close it. Returns the three paths."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix != ".png":
        raise ValueError(f"figure path must end in .png (PDF and SVG are written beside it), got {path}")
    fig.tight_layout()
    written = []
    try:
        with matplotlib.rc_context(SAVE_RC):
            for target, fmt in zip(figure_paths(path), FORMATS):
                buffer = io.BytesIO()
                fig.savefig(buffer, format=fmt, metadata=METADATA[fmt])
                atomic.write_bytes(target, buffer.getvalue())
                written.append(target)
    finally:
        plt.close(fig)
    return written
