"""Figures and tables across lambdas, seeds and generations of a run directory.

Reads every ``metrics.json`` under ``runs/<experiment>`` (generation 0 is shared by all lambdas
of a seed) and writes to ``runs/<experiment>/report/``:

* ``curves.csv``: one row per (lambda, seed, generation) with every numeric metric;
* ``summary.csv``: one row per (lambda, generation): mean, 95% confidence half-width (Student t
  over seeds) and seed count of each metric — also the data of the DVC plots;
* ``last_generation.csv``: the last generation of each lambda (mean, CI, seeds) — the DVC bar plots;
* ``<metric>.png``: metric vs generation, one line per lambda, mean with 95% CI error bars over
  seeds where seeds > 1;
* ``<metric>_vs_lambda.png``: the metric at the last generation against a categorical lambda axis,
  lambda = inf last and set apart; mean and 95% CI error bars;
* ``samples_across_generations.png``: each lambda's sample grids (or 2-D scatter plots) of the
  first seed at evenly spaced generations, one row per lambda (Bertrand et al. 2024, Fig. 1/4);
* ``perplexity_tails.png`` (text): the generated texts' perplexities under the generation-0 model,
  one curve per generation, one column per lambda (Shumailov et al. 2024, Fig. 1: the tails vanish);
* a PDF and an SVG beside every PNG, for papers (:mod:`autophagy.figures`: axis labels in words
  from the metric registry, colour-blind-safe colours, byte-identical on a rerun);
* ``report.md``: the last generation per lambda as a markdown table, with the figures.

For the Kubeflow UI, :func:`inline_images` and :func:`write_html` make self-contained pages
(figures embedded as data URIs).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autophagy import atomic, figures, layout
from autophagy.config import ExperimentConfig, parse_lambda
from autophagy.metric_keys import headline_keys

#: The distance on the lambda axis from the largest finite lambda to inf (finite ones are 1 apart).
INF_GAP = 2.0
#: How far apart (in generations) the error bars of neighbouring lambdas are drawn at one generation.
DODGE = 0.04


def collect(root: Path) -> list[dict[str, Any]]:
    """One record per (lambda, seed, generation); generation 0 is repeated for every lambda."""
    shared = {}
    for path in sorted(root.glob("seed-*/gen-000/metrics.json")):
        shared[int(path.parent.parent.name.removeprefix("seed-"))] = json.loads(path.read_text())
    records = []
    lam_dirs = sorted(root.glob("lam-*"), key=lambda p: parse_lambda(p.name.removeprefix("lam-")))
    for lam_dir in lam_dirs:
        lam = lam_dir.name.removeprefix("lam-")
        for seed_dir in sorted(lam_dir.glob("seed-*")):
            seed = int(seed_dir.name.removeprefix("seed-"))
            if seed in shared:
                records.append({**shared[seed], "lambda": lam, "seed": seed, "generation": 0})
            for path in sorted(seed_dir.glob("gen-*/metrics.json")):
                records.append({**json.loads(path.read_text()), "lambda": lam, "seed": seed})
    return records


def summarise(records: Iterable[dict[str, Any]], metrics: Iterable[str]) -> list[dict[str, Any]]:
    """Mean, 95% CI half-width and count over seeds for each (lambda, generation)."""
    from scipy import stats

    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["lambda"], int(record["generation"])), []).append(record)
    rows = []
    for (lam, generation), group in sorted(groups.items(), key=lambda kv: (parse_lambda(kv[0][0]), kv[0][1])):
        row: dict[str, Any] = {"lambda": lam, "generation": generation, "n_seeds": len(group)}
        for metric in metrics:
            values = np.array([r[metric] for r in group if isinstance(r.get(metric), (int, float))], dtype=float)
            values = values[np.isfinite(values)]
            if len(values) == 0:
                continue
            row[metric] = float(values.mean())
            half = (
                float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
                if len(values) > 1
                else 0.0
            )
            row[f"{metric}_ci95"] = half
        rows.append(row)
    return rows


def numeric_metrics(records: list[dict[str, Any]]) -> list[str]:
    skip = {"generation", "seed", "lambda"}
    names = {k for r in records for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(names - skip)


def metric_figure(summary: list[dict[str, Any]], metric: str, title: str):
    """Metric vs generation, one line per lambda: the mean over seeds, with error bars (95% CI,
    Student t) where a lambda has more than one seed. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    lams = sorted({r["lambda"] for r in summary}, key=parse_lambda)
    styles = figures.lambda_style(lams)
    with_bars = False
    for index, lam in enumerate(lams):
        rows = [r for r in summary if r["lambda"] == lam and metric in r]
        if not rows:
            continue
        g = np.array([r["generation"] for r in rows], dtype=float)
        mean = np.array([r[metric] for r in rows])
        seeds = max(r["n_seeds"] for r in rows)
        label = f"{figures.lambda_label(lam)} (n = {seeds})"
        if seeds > 1:
            half = np.array([r[f"{metric}_ci95"] for r in rows])
            g += DODGE * (index - (len(lams) - 1) / 2)  # side by side, so that the bars do not overlap
            ax.errorbar(
                g,
                mean,
                yerr=half,
                ms=4,
                capsize=2,
                elinewidth=0.8,
                label=label,
                errorevery=max(1, len(g) // 25),
                **styles[lam],
            )
            with_bars = True
        else:
            ax.plot(g, mean, ms=4, label=label, **styles[lam])
    ax.set_xlabel("generation")
    ax.set_ylabel(f"{figures.metric_label(metric)} {figures.direction(metric)}".strip())
    ax.set_title(f"{title}: {figures.metric_label(metric)}, across generations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="mean ± 95% CI over n seeds" if with_bars else None, title_fontsize=8)
    return fig


def plot_metric(summary: list[dict[str, Any]], metric: str, path: Path, title: str) -> list[Path]:
    """:func:`metric_figure` saved as ``path`` (PNG) with a PDF and an SVG beside it."""
    return figures.save_figure(metric_figure(summary, metric, title), path)


def last_generation(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary row of each lambda's last generation, in lambda order."""
    last: dict[str, dict[str, Any]] = {}
    for row in summary:
        if row["generation"] >= last.get(row["lambda"], {}).get("generation", -1):
            last[row["lambda"]] = row
    return [last[lam] for lam in sorted(last, key=parse_lambda)]


def metric_vs_lambda_figure(summary: list[dict[str, Any]], metric: str, title: str):
    """The metric at each lambda's last generation against lambda: mean over seeds, with 95% CI
    error bars where seeds > 1. Returns the matplotlib figure.

    Lambda is a categorical axis (the values span 0 to inf): finite lambdas equally spaced in
    ascending order, then a gap, a dotted separator with a break mark on the axis, and lambda = inf
    (fully synthetic) last, in black and not joined to the others. Each point is labelled with its
    seed count; the dotted line is the seeds' generation-0 mean, where every chain starts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    rows = [r for r in last_generation(summary) if metric in r]
    finite = [r for r in rows if not math.isinf(parse_lambda(r["lambda"]))]
    infinite = [r for r in rows if math.isinf(parse_lambda(r["lambda"]))]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    gap = INF_GAP if finite else 0.0
    groups = [
        (np.arange(len(finite), dtype=float), finite, figures.FINITE_COLOURS[0], "o"),
        (np.array([len(finite) - 1 + gap] if infinite else []), infinite, figures.INF_COLOUR, figures.INF_MARKER),
    ]
    for x, group, colour, marker in groups:
        if not group:
            continue
        mean = np.array([r[metric] for r in group])
        if max(r["n_seeds"] for r in group) > 1:
            ax.errorbar(x, mean, yerr=[r[f"{metric}_ci95"] for r in group], color=colour, marker=marker, capsize=4)
        else:
            ax.plot(x, mean, color=colour, marker=marker)
        for xi, yi, row in zip(x, mean, group):
            ax.annotate(f"n={row['n_seeds']}", (xi, yi), textcoords="offset points", xytext=(6, -10), fontsize=7)
    if finite and infinite:
        split = len(finite) - 1 + gap / 2
        ax.axvline(split, color="0.6", lw=0.8, ls=":")
        ax.text(
            split,
            0,
            "//",
            transform=blended_transform_factory(ax.transData, ax.transAxes),
            ha="center",
            va="center",
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
            clip_on=False,
        )
    start = [r[metric] for r in summary if r["generation"] == 0 and metric in r]
    if start:
        ax.axhline(float(np.mean(start)), ls=":", color="0.4", label="generation 0 (mean over seeds)")
        ax.legend(fontsize=8)
    ticks = [*range(len(finite)), *([len(finite) - 1 + gap] if infinite else [])]
    ax.set_xticks(ticks, [r["lambda"] for r in finite] + (["∞"] if infinite else []))
    ax.set_xlim(min(ticks) - 0.5, max(ticks) + 0.5)
    generations = sorted({r["generation"] for r in rows})
    when = f"generation {generations[0]}" if len(generations) == 1 else "the last generation"
    ax.set_xlabel("λ (synthetic : real data; ∞ = fully synthetic)")
    ax.set_ylabel(f"{figures.metric_label(metric)} at {when}")
    ax.set_title(f"{title}: {figures.metric_label(metric)}, by λ")
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_metric_vs_lambda(summary: list[dict[str, Any]], metric: str, path: Path, title: str) -> list[Path]:
    """:func:`metric_vs_lambda_figure` saved as ``path`` (PNG) with a PDF and an SVG beside it."""
    return figures.save_figure(metric_vs_lambda_figure(summary, metric, title), path)


def spaced_generations(last: int, columns: int) -> list[int]:
    """Up to ``columns`` generations evenly spaced from 0 to ``last``, both included."""
    return sorted({int(round(g)) for g in np.linspace(0, last, min(columns, last + 1))})


def plot_samples_across_generations(root: Path, path: Path, title: str, columns: int = 6) -> Path | None:
    """One row per lambda, one column per generation (up to ``columns``, evenly spaced from 0 to
    the last): the ``samples.png`` each generation's evaluation wrote, for the lowest seed.
    Returns ``None`` when the run has no sample pictures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    pictures: dict[str, dict[int, Path]] = {}
    for lam_dir in sorted(root.glob("lam-*"), key=lambda p: parse_lambda(p.name.removeprefix("lam-"))):
        seeds = sorted(lam_dir.glob("seed-*"), key=lambda p: int(p.name.removeprefix("seed-")))
        if not seeds:
            continue
        chain = {int(g.parent.name.removeprefix("gen-")): g for g in seeds[0].glob("gen-*/samples.png")}
        start = root / seeds[0].name / "gen-000" / "samples.png"
        if start.is_file():
            chain[0] = start
        if chain:
            pictures[lam_dir.name.removeprefix("lam-")] = chain
    if not pictures:
        return None
    wanted = spaced_generations(max(max(chain) for chain in pictures.values()), columns)
    fig, axes = plt.subplots(
        len(pictures), len(wanted), figsize=(1.6 * len(wanted), 1.6 * len(pictures)), dpi=150, squeeze=False
    )
    for i, (lam, chain) in enumerate(pictures.items()):
        for j, generation in enumerate(wanted):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if generation in chain:
                picture = mpimg.imread(chain[generation])  # [H, W] for gray grids, [H, W, 3|4] otherwise
                ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
            if i == 0:
                ax.set_title(f"generation {generation}", fontsize=8)
            if j == 0:
                ax.set_ylabel(figures.lambda_label(lam).replace(" (", "\n("), fontsize=8)
    fig.suptitle(f"{title}: samples across generations", fontsize=9)
    figures.save_figure(fig, path)
    return path


def perplexity_chains(root: Path) -> dict[str, dict[int, np.ndarray]]:
    """``{lambda: {generation: per-text perplexities [N]}}`` of the lowest seed of each lambda: the
    samples' perplexities under the generation-0 model that the text evaluation saved
    (:data:`autophagy.layout.PERPLEXITY_SAMPLES_FILE`); generation 0 from the seed's shared directory."""
    chains: dict[str, dict[int, np.ndarray]] = {}
    for lam_dir in sorted(root.glob("lam-*"), key=lambda p: parse_lambda(p.name.removeprefix("lam-"))):
        seeds = sorted(lam_dir.glob("seed-*"), key=lambda p: int(p.name.removeprefix("seed-")))
        if not seeds:
            continue
        files = {
            int(f.parent.name.removeprefix("gen-")): f for f in seeds[0].glob(f"gen-*/{layout.PERPLEXITY_SAMPLES_FILE}")
        }
        start = root / seeds[0].name / "gen-000" / layout.PERPLEXITY_SAMPLES_FILE
        if start.is_file():
            files[0] = start
        if files:
            chains[lam_dir.name.removeprefix("lam-")] = {
                g: np.load(f, allow_pickle=False) for g, f in sorted(files.items())
            }
    return chains


def perplexity_tails_figure(
    chains: dict[str, dict[int, np.ndarray]], title: str, reference: np.ndarray | None = None, columns: int = 6
):
    """Shumailov et al. (Nature 2024), Fig. 1: the distribution of the generated texts' perplexities
    under the generation-0 model, one curve per generation (up to ``columns``, evenly spaced from 0 to
    the last), one column of panels per lambda. Top: the density of log10 perplexity (shared bins);
    bottom: the share of texts above each perplexity (log scale), where a vanishing tail shows.
    ``reference``: the real test set's per-text perplexities under the generation-0 model (dashed).
    Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [v for chain in chains.values() for v in chain.values()] + ([reference] if reference is not None else [])
    logs = np.log10(np.concatenate([np.asarray(v, dtype=float) for v in values]))
    bins = np.linspace(logs.min(), logs.max() if logs.max() > logs.min() else logs.min() + 1, 41)
    last = max(max(chain) for chain in chains.values())
    wanted = spaced_generations(last, columns)
    colours = {g: matplotlib.colormaps["viridis"](i / max(1, len(wanted) - 1) * 0.9) for i, g in enumerate(wanted)}
    fig, axes = plt.subplots(2, len(chains), figsize=(4 * len(chains), 6), dpi=120, squeeze=False, sharex=True)
    for column, (lam, chain) in enumerate(chains.items()):
        top, bottom = axes[0, column], axes[1, column]
        curves = [(f"generation {g}", chain[g], {"color": colours[g]}) for g in wanted if g in chain]
        if reference is not None:
            curves.append(("real test set", reference, {"color": "black", "linestyle": "--"}))
        for label, ppl, style in curves:
            x = np.log10(np.asarray(ppl, dtype=float))
            top.hist(x, bins=bins, density=True, histtype="step", label=label, **style)
            ordered = np.sort(x)
            above = 1.0 - np.arange(1, len(ordered) + 1) / len(ordered)
            bottom.step(ordered[:-1], above[:-1], where="post", **style)
        top.set_title(figures.lambda_label(lam), fontsize=9)
        bottom.set_yscale("log")
        bottom.set_xlabel("log10 perplexity under the generation-0 model")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("density")
    axes[1, 0].set_ylabel("share of texts above")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"{title}: perplexity of the generated texts under the generation-0 model (first seed)", fontsize=9)
    return fig


def plot_perplexity_tails(root: Path, path: Path, title: str) -> Path | None:
    """:func:`perplexity_tails_figure` of the run directory ``root`` saved as ``path`` (PNG, with PDF
    and SVG); ``None`` when the run has no saved perplexities (not a text run)."""
    chains = perplexity_chains(root)
    if not chains:
        return None
    seeds = sorted(root.glob("seed-*/gen-000"), key=lambda p: int(p.parent.name.removeprefix("seed-")))
    test = seeds[0] / layout.PERPLEXITY_REFERENCE_FILE.format("test") if seeds else None
    reference = np.load(test, allow_pickle=False) if test is not None and test.is_file() else None
    figures.save_figure(perplexity_tails_figure(chains, title, reference), path)
    return path


def markdown_table(summary: list[dict[str, Any]], metrics: Iterable[str]) -> str:
    """The last generation of each lambda: ``mean ± CI95 (n)``."""
    metrics = [m for m in metrics if any(m in r for r in summary)]
    lines = ["| λ | generation | seeds | " + " | ".join(metrics) + " |", "|---" * (3 + len(metrics)) + "|"]
    for row in last_generation(summary):
        cells = []
        for m in metrics:
            if m not in row:
                cells.append("–")
            elif row["n_seeds"] > 1:
                cells.append(f"{row[m]:.4g} ± {row[m + '_ci95']:.2g}")
            else:
                cells.append(f"{row[m]:.4g}")
        lines.append(f"| {row['lambda']} | {row['generation']} | {row['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def collapse_lines(records: list[dict[str, Any]]) -> list[str]:
    """``λ = inf: collapsed in 3/3 seeds (first at generations 4, 5, 5)`` for chains that collapsed."""
    first: dict[str, dict[int, int]] = {}
    seeds: dict[str, set[int]] = {}
    for record in records:
        seeds.setdefault(record["lambda"], set()).add(record["seed"])
        if record.get("collapsed"):
            chain = first.setdefault(record["lambda"], {})
            chain[record["seed"]] = min(chain.get(record["seed"], 10**9), int(record["generation"]))
    return [
        f"- λ = {lam}: collapsed in {len(first[lam])}/{len(seeds[lam])} seeds "
        f"(first at generation {', '.join(str(g) for g in sorted(first[lam].values()))})"
        for lam in sorted(first, key=parse_lambda)
    ]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, buffer.getvalue())


def write_report(
    root: Path, cfg: ExperimentConfig | None = None, metric: str | None = None, out: Path | None = None
) -> dict[str, Any]:
    """Write the report of ``root`` into ``out`` (default ``root/report``); returns the paths written."""
    root = Path(root)
    records = collect(root)
    if not records:
        raise FileNotFoundError(f"no metrics.json under {root}: run the experiment first")
    names = numeric_metrics(records)
    summary = summarise(records, names)
    out = Path(out) if out is not None else root / "report"
    write_csv([{k: r.get(k) for k in ["lambda", "seed", "generation", *names]} for r in records], out / "curves.csv")
    write_csv(summary, out / "summary.csv")
    write_csv(last_generation(summary), out / "last_generation.csv")
    metric = metric or next((key for key in headline_keys() if key in names), names[0])
    title = root.name
    pngs = []
    for name in dict.fromkeys([metric, *headline_keys()]):
        if name in names:
            plot_metric(summary, name, out / f"{name}.png", title)
            plot_metric_vs_lambda(summary, name, out / f"{name}_vs_lambda.png", title)
            pngs += [out / f"{name}.png", out / f"{name}_vs_lambda.png"]
    grids = plot_samples_across_generations(root, out / "samples_across_generations.png", title)
    if grids is not None:
        pngs.append(grids)
    tails = plot_perplexity_tails(root, out / "perplexity_tails.png", title)
    if tails is not None:
        pngs.append(tails)
    table = markdown_table(summary, headline_keys())
    collapsed = collapse_lines(records)
    if collapsed:
        table += "\nCollapse (loop.collapse_metric / loop.collapse_ratio):\n\n" + "\n".join(collapsed) + "\n"
    text = (
        f"# {title}\n\nLast generation per λ (mean ± 95% CI over seeds where seeds > 1).\n\n{table}\n"
        + "".join(f"![{f.stem}]({f.name})\n" for f in pngs)
        + "\nEach figure is also written as PDF and SVG beside its PNG (same name).\n"
    )
    atomic.write_text(out / "report.md", text)
    if cfg is not None and cfg.tracking.enabled:
        from autophagy.tracking import Tracker, execution

        with execution(cfg, root):  # the runs of this run directory's execution
            tracker = Tracker(cfg)
            parent = tracker.parent_run()
            tracker.log_artifact(parent, out, "report")
            tracker.log_summary(parent, last_generation(summary), headline_keys())  # configs compare in the runs table
    return {"markdown": str(out / "report.md"), "figures": [str(f) for f in pngs], "summary": str(out / "summary.csv")}


# ------------------------------------------------------------------ self-contained pages


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def write_html(path: str | Path, title: str, images: Sequence[Path], text: str = "") -> None:
    """A self-contained HTML page (images embedded), which the KFP UI shows for HTML artifacts."""
    body = "".join(
        f'<p><img src="{_data_uri(p)}" alt="{html.escape(p.name)}" style="image-rendering: pixelated; '
        f'width: 512px"></p>'
        for p in images
    )
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h3>{html.escape(title)}</h3><p>{html.escape(text)}</p>{body}</body></html>"
    )
    Path(path).write_text(page)


def inline_images(markdown: Path) -> str:
    """``report.md`` with its ``![alt](file.png)`` figures embedded, so the page stands alone."""

    def embed(match: re.Match) -> str:
        image = markdown.parent / match.group(2)
        return f"![{match.group(1)}]({_data_uri(image)})" if image.is_file() else match.group(0)

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", embed, markdown.read_text())
