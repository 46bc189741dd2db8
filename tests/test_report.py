"""The report of a run directory: tables over seeds, the figures, and what they are drawn from."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from autophagy import report
from autophagy.layout import RunLayout
from autophagy.metrics import save_image_grid

LAMBDAS = (0.0, 1.0, math.inf)
SEEDS = (0, 1, 2)
GENERATIONS = 4


def fd_of(lam: float, seed: int, generation: int) -> float:
    """A made-up metric: grows with generation for lambda > 0, plus a seed offset."""
    slope = 0.0 if lam == 0 else (1.0 if math.isfinite(lam) else 5.0)
    return 10.0 + slope * generation + 0.5 * seed


@pytest.fixture
def run_dir(tmp_path) -> Path:
    layout = RunLayout(tmp_path / "toy")
    for seed in SEEDS:
        for lam in LAMBDAS:
            for generation in range(GENERATIONS + 1):
                if generation == 0 and lam != LAMBDAS[0]:
                    continue  # generation 0 is shared by every lambda of a seed
                out = layout.generation(lam, seed, generation)
                out.mkdir(parents=True, exist_ok=True)
                metrics = {"generation": generation, "fd_train": fd_of(lam, seed, generation), "recall_train": 0.5}
                (out / "metrics.json").write_text(json.dumps(metrics))
                shade = np.uint8(40 * generation)
                save_image_grid(np.full((4, 8, 8, 1), shade, dtype=np.uint8), out / "samples.png")
    return layout.root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_last_generation_table_is_the_mean_and_t_interval_over_seeds(run_dir):
    report.write_report(run_dir)
    rows = read_csv(run_dir / "report" / "last_generation.csv")
    assert [r["lambda"] for r in rows] == ["0", "1", "inf"]
    for row, lam in zip(rows, LAMBDAS):
        values = np.array([fd_of(lam, s, GENERATIONS) for s in SEEDS])
        half = stats.t.ppf(0.975, len(SEEDS) - 1) * values.std(ddof=1) / math.sqrt(len(SEEDS))
        assert int(row["generation"]) == GENERATIONS and int(row["n_seeds"]) == len(SEEDS)
        assert float(row["fd_train"]) == pytest.approx(values.mean())
        assert float(row["fd_train_ci95"]) == pytest.approx(half)


def test_report_writes_every_figure_and_links_them(run_dir):
    paths = report.write_report(run_dir)
    out = run_dir / "report"
    expected = {
        "fd_train.png",
        "fd_train_vs_lambda.png",
        "recall_train.png",
        "recall_train_vs_lambda.png",
        "samples_across_generations.png",
    }
    assert {Path(f).name for f in paths["figures"]} == expected
    text = (out / "report.md").read_text()
    for name in expected:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text
    assert "| inf | 4 | 3 | 30.5 ± " in text  # 10 + 5 * 4 + mean seed offset 0.5


def test_samples_figure_has_one_row_per_lambda_and_spaced_generations(run_dir, tmp_path):
    import matplotlib.image as mpimg

    path = report.plot_samples_across_generations(run_dir, tmp_path / "grid.png", "toy", columns=3)
    picture = mpimg.imread(path)
    wide = report.plot_samples_across_generations(run_dir, tmp_path / "wide.png", "toy", columns=5)
    assert mpimg.imread(wide).shape[1] > picture.shape[1]  # more generations, more columns
    assert report.spaced_generations(4, 3) == [0, 2, 4]
    assert report.spaced_generations(20, 6) == [0, 4, 8, 12, 16, 20]
    assert report.spaced_generations(2, 6) == [0, 1, 2]


def test_samples_figure_is_skipped_without_pictures(run_dir, tmp_path):
    for png in run_dir.rglob("samples.png"):
        png.unlink()
    assert report.plot_samples_across_generations(run_dir, tmp_path / "none.png", "toy") is None
    names = {Path(f).name for f in report.write_report(run_dir)["figures"]}
    assert "samples_across_generations.png" not in names and "fd_train_vs_lambda.png" in names
