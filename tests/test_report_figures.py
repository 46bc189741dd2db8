"""The report's figures as a paper needs them: three formats, reproducible bytes, words on the axes,
error bars exactly when there are several seeds, lambda = inf last and apart, distinguishable colours."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.container import ErrorbarContainer

from autophagy import figures, report
from autophagy.layout import RunLayout
from autophagy.metrics import save_image_grid


def records(lambdas: tuple[float, ...], seeds: int, generations: int = 3) -> list[dict]:
    """Made-up metrics.json records: fd_train grows with generation for lambda > 0, plus a seed offset."""
    out = []
    for lam, seed, generation in itertools.product(lambdas, range(seeds), range(generations + 1)):
        slope = 0.0 if lam == 0 else (1.0 if math.isfinite(lam) else 5.0)
        name = "inf" if math.isinf(lam) else f"{lam:g}"
        out.append(
            {
                "lambda": name,
                "seed": seed,
                "generation": generation,
                "fd_train": 10.0 + slope * generation + 0.5 * seed,
                "recall_train": 0.5 - 0.01 * seed,
            }
        )
    return out


def summary_of(lambdas: tuple[float, ...], seeds: int) -> list[dict]:
    return report.summarise(records(lambdas, seeds), ["fd_train", "recall_train"])


@pytest.fixture
def run_dir(tmp_path) -> Path:
    layout = RunLayout(tmp_path / "toy-experiment")
    for record in records((0.0, 1.0, math.inf), seeds=2):
        lam = math.inf if record["lambda"] == "inf" else float(record["lambda"])
        if record["generation"] == 0 and lam != 0.0:
            continue  # generation 0 is shared by every lambda of a seed
        out = layout.generation(lam, record["seed"], record["generation"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(record))
        save_image_grid(np.full((4, 8, 8, 1), 40 * record["generation"], dtype=np.uint8), out / "samples.png")
    return layout.root


def test_every_figure_is_written_as_png_pdf_and_svg(run_dir):
    pngs = [Path(f) for f in report.write_report(run_dir)["figures"]]
    assert len(pngs) == 5
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        assert b"<svg" in png.with_suffix(".svg").read_bytes()[:1000]
    assert "also written as PDF and SVG" in (run_dir / "report" / "report.md").read_text()


def test_rewriting_the_report_gives_the_same_bytes(run_dir):
    report.write_report(run_dir)
    first = {p.name: p.read_bytes() for p in (run_dir / "report").iterdir() if p.suffix in (".png", ".pdf", ".svg")}
    report.write_report(run_dir)
    second = {p.name: p.read_bytes() for p in (run_dir / "report").iterdir() if p.suffix in (".png", ".pdf", ".svg")}
    assert len(first) == 15
    assert second == first


def test_axes_and_titles_are_words_from_the_metric_registry(run_dir):
    summary = summary_of((0.0, 1.0, math.inf), seeds=2)
    ax = report.metric_figure(summary, "fd_train", "toy-experiment").axes[0]
    assert ax.get_ylabel() == "Frechet distance, train set (lower is better)"
    assert ax.get_xlabel() == "generation"
    assert ax.get_title() == "toy-experiment: Frechet distance, train set, across generations"
    assert "λ = ∞ (fully synthetic) (n = 2)" in [t.get_text() for t in ax.get_legend().get_texts()]
    ax = report.metric_vs_lambda_figure(summary, "recall_train", "toy-experiment").axes[0]
    assert ax.get_ylabel() == "recall (Kynkaanniemi et al. 2019), train set at generation 3"
    assert ax.get_xlabel().startswith("λ (synthetic : real data")
    assert ax.get_title().startswith("toy-experiment: recall")
    report.write_report(run_dir)
    svg = (run_dir / "report" / "fd_train.svg").read_text()
    assert "Frechet distance, train set (lower is better)" in svg  # text stays text in the SVG
    assert ">fd_train<" not in svg


def test_an_unregistered_metric_keeps_its_key_as_label():
    assert figures.metric_label("made_up_key") == "made_up_key"
    assert figures.direction("made_up_key") == ""


def error_bars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.has_yerr]


@pytest.mark.parametrize("build", [report.metric_figure, report.metric_vs_lambda_figure])
def test_error_bars_exactly_when_there_are_several_seeds(build):
    several = build(summary_of((0.0, 1.0, math.inf), seeds=3), "fd_train", "toy").axes[0]
    assert error_bars(several)
    one = build(summary_of((0.0, 1.0, math.inf), seeds=1), "fd_train", "toy").axes[0]
    assert not error_bars(one)
    assert one.get_lines()  # the means are still drawn


def test_lambda_axis_is_categorical_with_infinity_last_and_apart():
    ax = report.metric_vs_lambda_figure(summary_of((0.0, 0.5, 2.0, 10.0, math.inf), 2), "fd_train", "toy").axes[0]
    ticks = list(ax.get_xticks())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.5", "2", "10", "∞"]
    assert np.diff(ticks[:4]).tolist() == [1.0, 1.0, 1.0]  # categories, not 0.5 vs 8 apart
    assert ticks[4] - ticks[3] >= 1.5  # the gap before infinity
    separators = [line for line in ax.get_lines() if list(line.get_xdata()) == [line.get_xdata()[0]] * 2]
    assert any(ticks[3] < line.get_xdata()[0] < ticks[4] for line in separators)
    bars = error_bars(ax)
    assert len(bars) == 2  # finite lambdas joined, infinity on its own
    inf_line = bars[1].lines[0]
    assert list(inf_line.get_xdata()) == [ticks[4]] and to_rgb(inf_line.get_color()) == (0, 0, 0)
    only_inf = report.metric_vs_lambda_figure(summary_of((math.inf,), 1), "fd_train", "toy").axes[0]
    assert [t.get_text() for t in only_inf.get_xticklabels()] == ["∞"]


def srgb_to_lab(colour) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour."""
    c = np.array(to_rgb(colour))
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def contrast_with_white(colour) -> float:
    """WCAG contrast ratio of ``colour`` against white (1: invisible, 21: black)."""
    c = np.array(to_rgb(colour))
    luminance = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4) @ [0.2126, 0.7152, 0.0722]
    return 1.05 / (luminance + 0.05)


def test_line_colours_are_distinct_and_visible_on_white():
    lambdas = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0, math.inf)
    ax = report.metric_figure(summary_of(lambdas, 1), "fd_train", "toy").axes[0]
    colours = [line.get_color() for line in ax.get_lines()]
    assert len(colours) == len(lambdas)
    assert to_rgb(colours[-1]) == (0, 0, 0)  # fully synthetic: black, last
    assert min(contrast_with_white(c) for c in colours) >= 2.2  # viridis' yellow end is 1.5
    assert min(np.linalg.norm(srgb_to_lab(a) - srgb_to_lab(b)) for a, b in itertools.combinations(colours, 2)) >= 20
    assert len({line.get_marker() for line in ax.get_lines()}) == len(lambdas)


def test_more_finite_lambdas_than_colours_differ_by_line_style():
    styles = figures.lambda_style([str(i) for i in range(8)] + ["inf"])
    looks = {(s["color"], s["linestyle"]) for s in styles.values()}
    assert len(looks) == 9


def test_a_figure_path_must_be_a_png(tmp_path):
    import matplotlib.pyplot as plt

    with pytest.raises(ValueError, match=r"must end in \.png"):
        figures.save_figure(plt.figure(), tmp_path / "figure.pdf")
