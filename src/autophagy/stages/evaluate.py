"""``evaluate``: metrics of one generation's samples against the real train (and test) sets.

Images: Fréchet distance and precision/recall (Kynkäänniemi et al. 2019, k = 3) on the
features of ``evaluate.features``; the paper compares against the *training* set, and autophagy
also reports the held-out test set. Vectors: the same on raw coordinates plus sliced Wasserstein
distance and mean/covariance errors. The reference sets' features are computed once and cached
by content hash and extractor id; beside them, their mean, covariance and k-NN radii, valid for
the very features they were computed from (:mod:`autophagy.metrics.feature_stats`). Writes a
sample grid, logs to MLflow, and then, last, ``metrics.json`` (atomically), with the collapse
verdict of :mod:`autophagy.collapse` for generations >= 1.

Text (:func:`_text_metrics`; Shumailov et al., Nature 2024): the current model's perplexity on the
real sets (``perplexity_<ref>``), the samples' perplexities under the generation-0 model and their
quantiles (``gen0_ppl_*``, the per-text values saved beside ``metrics.json``:
:data:`autophagy.layout.PERPLEXITY_SAMPLES_FILE`), Fréchet distance and precision/recall on
all-MiniLM-L6-v2 sentence embeddings (the project's :func:`~autophagy.metrics.compute_metrics`;
the references' embeddings cached as image features are), MAUVE, distinct-n and the coverage of
the real sets' rare words (:mod:`autophagy.metrics.text`). ``evaluate.features`` is not used for text.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autophagy import atomic, collapse, layout
from autophagy.cache import cache_dir
from autophagy.config import ExperimentConfig, format_lambda
from autophagy.data.dataset import Dataset, DatasetError, open_dataset
from autophagy.metrics import (
    FeatureStatistics,
    build_extractor,
    cached_statistics,
    compute_metrics,
    compute_toy_metrics,
    save_image_grid,
    save_scatter,
)
from autophagy.metrics.grid import save_text_samples
from autophagy.models.base import ModelError
from autophagy.models.torch_model import resolve_device
from autophagy.seeding import derive_seed
from autophagy.tracking import open_tracker

#: At most this many decoded samples in a text generation's ``samples.png``.
TEXT_GRID = 10


def run(
    cfg: ExperimentConfig,
    samples_dir: str | Path,
    references: Mapping[str, str | Path],
    out_path: str | Path,
    features_dir: str | Path | None,
    generation: int,
    seed: int,
    lam: float | None = None,
    grid_path: str | Path | None = None,
    baseline: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    models: Mapping[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Evaluate the first ``sample.n_eval`` rows of ``samples_dir``; write ``out_path`` (metrics.json).

    ``references``: ``{"train": dir, "test": dir}``. ``lam`` is None for generation 0 (shared).
    ``baseline``/``previous``: the metrics of generation 0 and of generation - 1 of the chain
    (:attr:`autophagy.plan.GenerationPlan.collapse_against`); with ``baseline`` the collapse
    verdict (``collapse_factor``, ``collapsed``) is part of the metrics written. ``models``: for
    text only (required there), ``{"current": this generation's checkpoint directory,
    "generation0": generation 0's}``, the language models of the perplexity metrics.
    """
    started = time.perf_counter()
    samples_set = open_dataset(samples_dir)
    refs = {name: open_dataset(path) for name, path in references.items()}
    for name, ref in refs.items():
        if ref.kind != samples_set.kind or ref.item_shape != samples_set.item_shape:
            raise DatasetError(
                f"samples {samples_dir} ({samples_set.kind} {list(samples_set.item_shape)}) and reference "
                f"{name} ({ref.kind} {list(ref.item_shape)}) do not match"
            )
    if samples_set.rows < cfg.sample.n_eval:
        raise DatasetError(
            f"evaluate needs sample.n_eval={cfg.sample.n_eval} samples, {samples_dir} has {samples_set.rows}"
        )
    samples = samples_set.load()[: cfg.sample.n_eval]
    if samples_set.kind == "text":
        extractor, metrics, ref_features = _text_metrics(
            cfg, samples_set, samples, refs, models, Path(out_path).parent, generation, seed
        )
    else:
        extractor = build_extractor(
            cfg.evaluate.features,
            weights_path=cfg.evaluate.inception_weights,
            cache_dir=Path(features_dir) if features_dir else None,
            device=cfg.train.device,
        )
        sample_features = extractor(samples, label=f"evaluate gen {generation} (seed {seed}): samples")
        metrics, ref_features = _feature_metrics(sample_features, refs, extractor, cfg, seed)
    if samples_set.kind == "vector":
        metrics.update(
            compute_toy_metrics(samples, {name: _subsample(ref.load(), cfg, seed) for name, ref in refs.items()})
        )
    metrics.update(
        {
            "generation": generation,
            "lambda": None if lam is None else format_lambda(lam),
            "seed": seed,
            "features": extractor.id,
            "n_samples": int(len(samples)),
            **{f"n_reference_{name}": int(len(f)) for name, f in ref_features.items()},
            "evaluate_seconds": time.perf_counter() - started,
        }
    )
    if baseline is not None:
        metrics.update(collapse.assess(cfg.loop, metrics, baseline, previous))
    # metrics.json is written last: once it exists, the grid and the tracking records exist too
    if grid_path is not None and samples_set.kind == "text":
        _save_text_grid(cfg, samples_set, samples, Path(grid_path), generation, seed)
    elif grid_path is not None:
        _save_grid(cfg, samples, refs.get("train"), Path(grid_path))
    atomic.kill_point(Path(out_path).parent, "evaluate:grid")
    _track(
        cfg,
        lam,
        seed,
        generation,
        metrics,
        grid_path,
        newly_collapsed=bool(metrics.get("collapsed") and not (previous or {}).get("collapsed")),
    )
    atomic.kill_point(Path(out_path).parent, "evaluate:tracked")
    atomic.write_json(out_path, metrics)
    return metrics


def _feature_metrics(
    sample_features: np.ndarray, refs: Mapping[str, Dataset], extractor, cfg: ExperimentConfig, seed: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`compute_metrics` of ``sample_features`` against every reference's (cached) features and
    (cached) statistics; returns the metrics and the reference features."""
    ref_features = {name: _reference_features(ref, extractor, cfg, seed, name) for name, ref in refs.items()}
    device, k = resolve_device(cfg.train.device), cfg.evaluate.k
    ref_statistics: dict[str, FeatureStatistics] = {}
    for name, ref in refs.items():
        ref_statistics[name] = cached_statistics(
            _features_cache_path(ref, extractor, cfg, seed).with_suffix(f".stats-k{k}.npz"),
            ref_features[name],
            k=k,
            device=device,
            name=f"reference {name!r}",
            # every reference's k-NN radii in the first one's frame (compute_metrics)
            centre=next(iter(ref_statistics.values())).centre if ref_statistics else None,
        )
    metrics: dict[str, Any] = compute_metrics(
        sample_features, ref_features, k=k, device=device, reference_statistics=ref_statistics
    )
    return metrics, ref_features


class _TextFeatures:
    """A text set's rows as sentence embeddings: decoded with the dataset's tokenizer, embedded by
    all-MiniLM-L6-v2. Called like an image feature extractor (``features(rows, label=...)``), so the
    reference embeddings are cached by :func:`_reference_features`; ``id`` names the embedder and the
    tokenizer (the same token ids are other texts under another tokenizer)."""

    def __init__(self, tokenizer, embedder, batch_size: int):
        self.tokenizer, self.embedder, self.batch_size = tokenizer, embedder, batch_size
        self.id = f"{embedder.id}-tok{tokenizer.sha256[:12]}"

    def __call__(self, rows: np.ndarray, label: str = "") -> np.ndarray:
        return self.embedder(self.tokenizer.decode(rows), batch_size=self.batch_size)


def _text_metrics(
    cfg: ExperimentConfig,
    samples_set: Dataset,
    samples: np.ndarray,
    refs: Mapping[str, Dataset],
    models: Mapping[str, str | Path] | None,
    out_dir: Path,
    generation: int,
    seed: int,
) -> tuple[_TextFeatures, dict[str, Any], dict[str, np.ndarray]]:
    """The text metrics of ``samples`` (int32 ``[N, L]`` token ids) against ``refs``; writes the
    per-text perplexities (:data:`autophagy.layout.PERPLEXITY_SAMPLES_FILE`, ...) into ``out_dir``.

    Every reference is subsampled to ``evaluate.max_reference`` rows (with the seed, as for images);
    the same rows give its perplexity, embeddings and words. Rare words are those a reference set
    holds that occur 1..``evaluate.rare_word_count`` times in the train reference.
    """
    from autophagy.data.text import dataset_tokenizer
    from autophagy.metrics import text as tm

    if "train" not in refs:
        raise DatasetError(
            f"the text metrics need the real train set as reference 'train' (its rare words), got {sorted(refs)}"
        )
    tokenizer = dataset_tokenizer(samples_set)
    for name, ref in refs.items():
        other = dataset_tokenizer(ref)
        if other.sha256 != tokenizer.sha256:
            raise DatasetError(
                f"samples {samples_set.path} (tokenizer {tokenizer.name}, sha256 {tokenizer.sha256[:12]}...) and "
                f"reference {name} {ref.path} (tokenizer {other.name}, sha256 {other.sha256[:12]}...) "
                "have different tokenizers"
            )
    current, generation0 = _language_models(models, tokenizer)
    ev = cfg.evaluate
    rows = {name: _subsample(ref.load(), cfg, seed) for name, ref in refs.items()}

    def nll(model, data: np.ndarray) -> np.ndarray:
        return np.asarray(model.sequence_nll(data, batch_size=ev.nll_batch_size, device=cfg.train.device), np.float64)

    metrics: dict[str, Any] = {}
    for name, data in rows.items():
        values = nll(current, data)
        metrics[f"perplexity_{name}"] = float(np.exp(values.mean()))
        _save_array(out_dir / layout.PERPLEXITY_REFERENCE_FILE.format(name), np.exp(values))
    sample_nll = nll(generation0, samples)
    metrics.update({f"gen0_ppl_{key}": value for key, value in tm.perplexity_summary(sample_nll).items()})
    _save_array(out_dir / layout.PERPLEXITY_SAMPLES_FILE, np.exp(sample_nll))

    features = _TextFeatures(
        tokenizer, tm.sentence_embedder(str(resolve_device(cfg.train.device))), ev.embedding_batch_size
    )
    texts = tokenizer.decode(samples)
    sample_embeddings = features.embedder(texts, batch_size=ev.embedding_batch_size)
    embedding_metrics, ref_embeddings = _feature_metrics(sample_embeddings, refs, features, cfg, seed)
    metrics.update(embedding_metrics)
    if ev.mauve:
        mauve_seed = derive_seed("mauve", seed) % 2**31  # the chain's seed: the same clustering at every generation
        buckets = {}
        for name, reference in ref_embeddings.items():
            buckets[name] = tm.mauve_buckets(len(reference), len(sample_embeddings), ev.mauve_clusters)
            metrics[f"mauve_{name}"] = tm.mauve_score(
                reference, sample_embeddings, clusters=buckets[name], seed=mauve_seed
            )
        metrics["mauve_settings"] = tm.mauve_settings(buckets, mauve_seed)
    sample_words = tm.inner_words(texts)  # the words of the rows less their (possibly cut) edge words
    metrics.update({f"distinct_{n}": value for n, value in tm.distinct(sample_words).items()})
    ref_words = {name: tm.inner_words(tokenizer.decode(data)) for name, data in rows.items()}
    train_counts = tm.word_counts(ref_words["train"])
    for name, reference_words in ref_words.items():
        rare = tm.rare_words(reference_words, train_counts, ev.rare_word_count)
        metrics[f"n_rare_words_{name}"] = len(rare)
        if rare:  # none in a tiny reference set: the coverage is undefined and left out
            metrics[f"rare_coverage_{name}"] = tm.rare_word_coverage(sample_words, rare)
    metrics["tokenizer"] = tokenizer.name
    return features, metrics, ref_embeddings


def _language_models(models: Mapping[str, str | Path] | None, tokenizer) -> tuple[Any, Any]:
    """The current and the generation-0 language models of ``models`` (loaded once if the same
    directory), each checked to score token ids with ``tokenizer``."""
    from autophagy.models.checkpoint import load_checkpoint

    missing = [key for key in ("current", "generation0") if not (models or {}).get(key)]
    if missing:
        raise ModelError(
            f"evaluating text needs the language models: models={{'current': <this generation's checkpoint dir>, "
            f"'generation0': <generation 0's>}} (missing: {', '.join(missing)})"
        )
    paths = {key: Path(models[key]) for key in ("current", "generation0")}
    loaded: dict[Path, Any] = {}
    for key, path in paths.items():
        if path.resolve() in loaded:
            continue
        model = load_checkpoint(path, with_train_state=False)
        if not callable(getattr(model, "sequence_nll", None)):
            raise ModelError(
                f"models[{key!r}] = {path} is a {model.family!r} model, not a language model (no sequence_nll)"
            )
        own = getattr(model, "tokenizer", None)
        if own is not None and own.sha256 != tokenizer.sha256:
            raise ModelError(
                f"models[{key!r}] = {path} has tokenizer {own.name} (sha256 {own.sha256[:12]}...), the samples "
                f"{tokenizer.name} (sha256 {tokenizer.sha256[:12]}...): its perplexities would be meaningless"
            )
        loaded[path.resolve()] = model
    return loaded[paths["current"].resolve()], loaded[paths["generation0"].resolve()]


def _save_array(path: Path, values: np.ndarray) -> None:
    with atomic.temp_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(values, dtype=np.float64), allow_pickle=False)


def _subsample(rows: np.ndarray, cfg: ExperimentConfig, seed: int) -> np.ndarray:
    cap = cfg.evaluate.max_reference
    if cap is None or len(rows) <= cap:
        return rows
    index = np.random.default_rng(derive_seed("reference", seed) % (2**63)).choice(len(rows), cap, replace=False)
    return rows[np.sort(index)]


def _reference_features(
    ref: Dataset, extractor, cfg: ExperimentConfig, seed: int, name: str = "reference"
) -> np.ndarray:
    """Features of (a capped subsample of) a reference set, cached by content hash + extractor id."""
    path = _features_cache_path(ref, extractor, cfg, seed)
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError):
            pass  # a damaged cache entry is recomputed
    features = extractor(_subsample(ref.load(), cfg, seed), label=f"evaluate: {name} reference").astype(np.float32)
    with atomic.temp_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, features, allow_pickle=False)
    return features


def _features_cache_path(ref: Dataset, extractor, cfg: ExperimentConfig, seed: int) -> Path:
    """Where a reference set's features are cached: keyed by its content hash, the extractor's id and
    the subsample (cap and seed)."""
    cap = cfg.evaluate.max_reference
    key = f"{ref.content_hash[:24]}-{extractor.id.replace(':', '-')}-{cap}-{derive_seed('reference', seed) % 10**8}.npy"
    return cache_dir("features", key)


def _save_grid(cfg: ExperimentConfig, samples: np.ndarray, train: Dataset | None, path: Path) -> None:
    if samples.ndim == 4:
        if cfg.evaluate.grid_size > 0:
            save_image_grid(samples[: cfg.evaluate.grid_size], path)
    elif samples.shape[1] == 2 and train is not None:
        save_scatter(samples, train.load(), path)


def _save_text_grid(
    cfg: ExperimentConfig, samples_set: Dataset, samples: np.ndarray, path: Path, generation: int, seed: int
) -> None:
    """The first ``min(evaluate.grid_size, TEXT_GRID)`` samples, decoded, as a PNG (the text's sample grid)."""
    from autophagy.data.text import dataset_tokenizer

    count = min(cfg.evaluate.grid_size, TEXT_GRID)
    if count > 0:
        texts = dataset_tokenizer(samples_set).decode(samples[:count])
        save_text_samples(texts, path, title=f"generation {generation} (seed {seed}): the first {count} samples")


def _track(cfg, lam, seed, generation, metrics, grid_path, newly_collapsed: bool) -> None:
    tracker = open_tracker(cfg)
    if tracker is None:
        return
    for chain_lam in cfg.loop.lambdas if lam is None else (lam,):
        run_id = tracker.child_run(chain_lam, seed)
        tracker.log_generation(run_id, generation, metrics, tag=f"gen-{generation}-evaluate")
        if cfg.tracking.log_samples and grid_path is not None and Path(grid_path).is_file():
            tracker.log_image(run_id, Path(grid_path), "samples", step=generation)
        if newly_collapsed:
            tracker.set_tags(
                run_id, {"autophagy.collapsed": "true", "autophagy.collapsed_at_generation": str(generation)}
            )
