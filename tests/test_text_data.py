"""Text datasets (issue 16, item 1): tokenizers, token rows, the manifest's tokenizer entry, the
text sources (python-docs, text-folder, hf-text) and the mixing rule on token shards.

Nothing here reaches a network: the pretrained-tokenizer and Hugging Face dataset paths read local
directories, and their offline errors are checked with the hub switched off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from autophagy.config import ConfigError, DataConfig, ExperimentConfig  # noqa: E402
from autophagy.data import strategies  # noqa: E402
from autophagy.data.dataset import DatasetError, NewShard, kind_of, open_dataset, write_dataset  # noqa: E402
from autophagy.data.sources import DataSourceError, load_split, text_corpus  # noqa: E402
from autophagy.data.text import (  # noqa: E402
    TextTokenizer,
    TokenizerError,
    chunk_rows,
    dataset_tokenizer,
    pretrained_tokenizer,
    train_bpe,
)
from autophagy.stages import prepare  # noqa: E402

REAL = {"type": "real"}
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "Sphinx of black quartz, judge my vow: 3 + 4 = 7\n\tindented line",
    "Ünïcödé text — with an em dash and 日本語.",
] * 5


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return train_bpe(TEXTS, 300, name="tiny")


@pytest.fixture(scope="module")
def other_tok() -> TextTokenizer:
    return train_bpe(TEXTS, 280, name="tiny-280")


def token_rows(tokenizer: TextTokenizer, n: int, seq_len: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, tokenizer.vocab_size, size=(n, seq_len)).astype(np.int32)


# ------------------------------------------------------------------------------ tokenizers


def test_bpe_training_is_deterministic_across_processes(tok):
    again = train_bpe(TEXTS, 300, name="tiny")
    assert again.to_json() == tok.to_json() and again.sha256 == tok.sha256
    code = f"import sys; from autophagy.data.text import train_bpe; print(train_bpe({TEXTS!r}, 300, 'tiny').sha256)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == tok.sha256  # the Rust trainer's hash maps are seeded per process
    assert (tok.bos_id, tok.eos_id) == (0, 1) and tok.vocab_size <= 300
    assert train_bpe(TEXTS, 280).sha256 != tok.sha256


def test_bpe_round_trips_text_and_skips_special_tokens(tok):
    ids = tok.encode(TEXTS[:4])
    assert all(0 <= i < tok.vocab_size for row in ids for i in row)
    assert tok.bos_id not in ids[0] and tok.eos_id not in ids[0]  # encode adds no special tokens
    for text, row in zip(TEXTS[:4], ids):
        framed = np.array([[tok.bos_id, *row, tok.eos_id]], dtype=np.int32)
        assert tok.decode(framed) == [text]  # byte-level: lossless, unicode included


def test_tokenizer_save_load_keeps_its_identity(tok, tmp_path):
    tok.save(tmp_path / "t.json")
    loaded = TextTokenizer.load(tmp_path / "t.json", "tiny")
    assert loaded.sha256 == tok.sha256 == __import__("hashlib").sha256((tmp_path / "t.json").read_bytes()).hexdigest()
    assert (loaded.bos_id, loaded.eos_id, loaded.vocab_size) == (tok.bos_id, tok.eos_id, tok.vocab_size)
    with pytest.raises(TokenizerError, match="not a valid tokenizers JSON"):
        TextTokenizer.from_json("{not json", "broken")
    with pytest.raises(TokenizerError, match="missing"):
        TextTokenizer.load(tmp_path / "absent.json")
    with pytest.raises(TokenizerError, match="at least 259"):
        train_bpe(TEXTS, 100)


def test_pretrained_tokenizer_from_a_local_directory(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok.tokenizer, bos_token="<bos>", eos_token="<eos>").save_pretrained(
        tmp_path / "saved"
    )
    loaded = pretrained_tokenizer(str(tmp_path / "saved"))
    assert (loaded.bos_id, loaded.eos_id) == (tok.bos_id, tok.eos_id)
    assert loaded.encode(TEXTS[:2]) == tok.encode(TEXTS[:2])
    with pytest.raises(TokenizerError, match="does not exist"):
        pretrained_tokenizer(str(tmp_path / "nowhere"))


def test_pretrained_tokenizer_offline_names_the_id_and_where_to_place_it(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(TokenizerError) as caught:
        pretrained_tokenizer("gpt2-autophagy-test-absent")
    message = str(caught.value)
    assert "'gpt2-autophagy-test-absent'" in message and str(tmp_path / "hf") in message
    assert "data.tokenizer" in message


# ------------------------------------------------------------------------------ token rows


def test_chunk_rows_cuts_the_eos_separated_stream():
    documents = [[5, 6, 7], [8], [9, 10]]  # stream: 5 6 7 EOS 8 EOS 9 10 EOS
    np.testing.assert_array_equal(chunk_rows(documents, 3, eos_id=1), [[5, 6, 7], [1, 8, 1], [9, 10, 1]])
    np.testing.assert_array_equal(chunk_rows(documents, 4, eos_id=1), [[5, 6, 7, 1], [8, 1, 9, 10]])
    assert chunk_rows(documents, 4, 1).dtype == np.int32
    assert chunk_rows([], 4, 1).shape == (0, 4) and chunk_rows([[2]], 4, 1).shape == (0, 4)
    with pytest.raises(DatasetError, match="seq_len"):
        chunk_rows(documents, 0, 1)
    with pytest.raises(DatasetError, match="token ids"):
        chunk_rows([[-1]], 1, 1)


# ------------------------------------------------------------------------------ the manifest


def test_text_dataset_carries_and_verifies_its_tokenizer(tok, tmp_path):
    rows = token_rows(tok, 12)
    assert kind_of(rows) == "text"
    written = write_dataset(tmp_path / "d", [NewShard(REAL, rows)], tokenizer=tok)
    data = open_dataset(tmp_path / "d", kind="text")
    assert data.item_shape == (8,) and data.rows == 12 and written.tokenizer == data.tokenizer
    assert data.tokenizer == {
        "file": "tokenizer.json",
        "sha256": tok.sha256,
        "name": "tiny",
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
    }
    assert (tmp_path / "d" / "tokenizer.json").read_text() == tok.to_json()
    assert dataset_tokenizer(data).sha256 == tok.sha256
    np.testing.assert_array_equal(data.load(), rows)

    file = tmp_path / "d" / "tokenizer.json"
    file.write_text(file.read_text().replace('"<pad>"', '"<PAD>"'))
    with pytest.raises(DatasetError, match=r"tokenizer file .*tokenizer\.json is corrupted: sha256"):
        open_dataset(tmp_path / "d")
    file.unlink()
    with pytest.raises(DatasetError, match="tokenizer file tokenizer.json listed in .* is missing"):
        open_dataset(tmp_path / "d")


def test_text_rows_need_a_tokenizer_and_ids_in_its_vocabulary(tok, tmp_path):
    rows = token_rows(tok, 4)
    with pytest.raises(DatasetError, match="text rows need their tokenizer"):
        write_dataset(tmp_path / "a", [NewShard(REAL, rows)])
    bad = rows.copy()
    bad[2, 5] = tok.vocab_size
    with pytest.raises(DatasetError, match=rf"token id {tok.vocab_size} at row 2, outside the vocabulary"):
        write_dataset(tmp_path / "a", [NewShard(REAL, bad)], tokenizer=tok)
    bad[2, 5] = -3
    with pytest.raises(DatasetError, match="token id -3 at row 2"):
        write_dataset(tmp_path / "a", [NewShard(REAL, bad)], tokenizer=tok)
    with pytest.raises(DatasetError, match="tokenizer was given for vector data"):
        write_dataset(tmp_path / "a", [NewShard(REAL, np.zeros((2, 2), np.float32))], tokenizer=tok)
    assert not (tmp_path / "a").exists()

    # ids beyond a (tampered) manifest's vocabulary are caught on open, in the hash pass
    write_dataset(tmp_path / "b", [NewShard(REAL, rows)], tokenizer=tok)
    manifest = json.loads((tmp_path / "b" / "dataset.json").read_text())
    manifest["tokenizer"]["vocab_size"] = int(rows.max())  # the largest id is now out of range
    (tmp_path / "b" / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"holds token id \d+ at row \d+, outside the tokenizer's vocabulary"):
        open_dataset(tmp_path / "b")
    del manifest["tokenizer"]
    (tmp_path / "b" / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match='a text dataset needs a "tokenizer" entry'):
        open_dataset(tmp_path / "b")


def test_mixing_datasets_of_different_tokenizers_is_refused(tok, other_tok, tmp_path):
    real = write_dataset(tmp_path / "real", [NewShard(REAL, token_rows(tok, 10))], tokenizer=tok)
    other = write_dataset(
        tmp_path / "other", [NewShard({"type": "synthetic"}, token_rows(other_tok, 10))], tokenizer=other_tok
    )
    with pytest.raises(DatasetError, match="different tokenizers: .*tiny.*tiny-280"):
        write_dataset(tmp_path / "mix", [*strategies.real_shards(real), *strategies.real_shards(other)])
    with pytest.raises(DatasetError, match="different tokenizers: the given tokenizer tiny-280 .* tokenizer tiny of"):
        write_dataset(tmp_path / "mix", strategies.real_shards(real), tokenizer=other_tok)
    for strategy, synthetic in (("replace", [other]), ("fully-synthetic", [other]), ("accumulate", [other, other])):
        with pytest.raises(DatasetError, match=r"tokenized by tiny-280 .*the real data .* by tiny \(sha256"):
            strategies.compose(strategy, 0.5, real, synthetic, tmp_path / "mix", seed=0)
    assert not (tmp_path / "mix").exists()


# ------------------------------------------------------------------------------ mixing token shards


@pytest.mark.parametrize("lam", [0.5, 0.29, 1.0, 2.0])
def test_replace_mix_of_token_shards_reuses_the_real_shard_and_carries_the_tokenizer(tok, tmp_path, lam):
    n = 100
    real = write_dataset(tmp_path / "real", [NewShard(REAL, token_rows(tok, n), name="real-train.npy")], tokenizer=tok)
    synthetic = write_dataset(
        tmp_path / "synth",
        [NewShard({"type": "synthetic", "generation": 0}, token_rows(tok, 250, seed=1))],
        tokenizer=tok,
    )
    mixed = strategies.compose("replace", lam, real, [synthetic], tmp_path / "mix", seed=0)
    k = int(np.floor(round(lam * 100) * n / 100))  # floor(lambda n), lambda at its decimal value
    assert mixed.counts_by_origin() == {"real": n, "synthetic": k}
    real_file, mixed_file = tmp_path / "real" / "real-train.npy", tmp_path / "mix" / "real-train.npy"
    assert os.stat(real_file).st_ino == os.stat(mixed_file).st_ino  # a hard link: the same bytes, stored once
    assert real_file.read_bytes() == mixed_file.read_bytes()
    assert (tmp_path / "mix" / "tokenizer.json").read_bytes() == (tmp_path / "real" / "tokenizer.json").read_bytes()
    assert mixed.tokenizer == real.tokenizer
    data = open_dataset(tmp_path / "mix").load()
    np.testing.assert_array_equal(data[:n], real.load())
    np.testing.assert_array_equal(data[n:], synthetic.load()[:k])


@pytest.mark.parametrize("strategy", ["fully-synthetic", "accumulate", "accumulate-subsample"])
def test_every_strategy_writes_token_sets_with_the_tokenizer(tok, tmp_path, strategy):
    n = 40
    real = write_dataset(tmp_path / "real", [NewShard(REAL, token_rows(tok, n))], tokenizer=tok)
    samples = [
        write_dataset(
            tmp_path / f"s{g}",
            [NewShard({"type": "synthetic", "generation": g}, token_rows(tok, 60, seed=g))],
            tokenizer=tok,
        )
        for g in range(2)
    ]
    for lam in (0.5, float("inf")):
        out = tmp_path / f"{strategy}-{lam}"
        mixed = strategies.compose(strategy, lam, real, samples, out, seed=3)
        assert open_dataset(out).kind == "text" and mixed.tokenizer["sha256"] == tok.sha256
        k = n if lam == float("inf") else n // 2
        expected = {
            "fully-synthetic": {"synthetic": k},
            "accumulate": {"synthetic": 2 * k} if lam == float("inf") else {"real": n, "synthetic": 2 * k},
            "accumulate-subsample": None,
        }[strategy]
        if expected is not None:
            assert mixed.counts_by_origin() == expected
        else:
            assert mixed.rows == (k if lam == float("inf") else n + k)


def test_fresh_real_draw_of_token_rows_keeps_the_tokenizer(tok, tmp_path):
    pool = write_dataset(tmp_path / "pool", [NewShard(REAL, token_rows(tok, 50))], tokenizer=tok)
    drawn = strategies.fresh_real_draw(pool, 20, tmp_path / "draw", seed=0, generation=2)
    assert drawn.rows == 20 and drawn.tokenizer["sha256"] == tok.sha256


# ------------------------------------------------------------------------------ sources and prepare


def text_config(**options) -> DataConfig:
    return DataConfig(**{"seq_len": 32, "vocab_size": 300, **options})


def test_prepare_python_docs_writes_both_splits_with_one_tokenizer(tmp_path):
    import platform

    cfg = ExperimentConfig(data=text_config(source="python-docs", n_train=60, n_test=20))
    cfg.data.validate()
    result = prepare.run(cfg, tmp_path / "data")
    assert result["n_train"] == 60 and result["n_test"] == 20 and result["kind"] == "text"
    assert result["item_shape"] == [32]
    train, test = open_dataset(tmp_path / "data" / "train"), open_dataset(tmp_path / "data" / "test")
    assert train.tokenizer == test.tokenizer and train.tokenizer["sha256"] == result["tokenizer"]["sha256"]
    assert (tmp_path / "data/train/tokenizer.json").read_bytes() == (tmp_path / "data/test/tokenizer.json").read_bytes()
    corpus = train.provenance["corpus"]
    assert corpus["python"] == platform.python_version() and len(corpus["sha256"]) == 64
    assert corpus["documents"]["test"] >= 1 and corpus["documents"]["train"] > corpus["documents"]["test"]
    text = dataset_tokenizer(train).decode(train.load()[:3])
    assert all(isinstance(t, str) and t for t in text)

    again = prepare.run(cfg, tmp_path / "again")  # deterministic, to the byte
    for split in ("train", "test"):
        assert (
            open_dataset(tmp_path / "again" / split).content_hash
            == open_dataset(tmp_path / "data" / split).content_hash
        )
    assert again["tokenizer"] == result["tokenizer"]
    other_seed = load_split(text_config(source="python-docs", n_train=60, seed=1), "train")
    assert not np.array_equal(other_seed, train.load())
    with pytest.raises(
        DataSourceError, match=r"data.n_train=100000 but the python-docs train split gives only \d+ rows"
    ):
        load_split(text_config(source="python-docs", n_train=100000), "train")


def test_python_docs_split_is_by_paragraph_and_fixed(tmp_path):
    corpus = text_corpus(text_config(source="python-docs", test_fraction=0.2))
    assert len(corpus.train) + len(corpus.test) > 1000  # paragraphs, not the ~80 topics
    assert not set(corpus.train) & set(corpus.test)
    assert corpus.provenance["documents"]["test"] == round(0.2 * (len(corpus.train) + len(corpus.test)))
    assert text_corpus(text_config(source="python-docs", test_fraction=0.2, seed=5)).test == corpus.test


def write_texts(folder: Path, texts: dict[str, str]) -> None:
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")


def test_text_folder_reads_one_document_per_file(tmp_path):
    write_texts(tmp_path / "txt", {f"sub/doc{i:02d}.txt": f"Document {i}. " + TEXTS[i % 4] * 3 for i in range(10)})
    write_texts(tmp_path / "txt", {"notes.md": "ignored"})
    cfg = text_config(source="text-folder", path=str(tmp_path / "txt"), test_fraction=0.2, seq_len=8)
    corpus = text_corpus(cfg)
    assert (
        len(corpus.train) == 8 and len(corpus.test) == 2 and corpus.provenance["documents"] == {"train": 8, "test": 2}
    )
    assert all(text.startswith("Document") for text in [*corpus.train, *corpus.test])
    result = prepare.run(ExperimentConfig(data=cfg), tmp_path / "data")
    assert result["n_train"] > result["n_test"] > 0

    write_texts(tmp_path / "split", {"train/a.txt": TEXTS[0], "train/b.txt": TEXTS[1], "test/c.txt": TEXTS[2]})
    corpus = text_corpus(text_config(source="text-folder", path=str(tmp_path / "split")))
    assert list(corpus.train) == TEXTS[:2] and list(corpus.test) == [TEXTS[2]]

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "bad" / "ok.txt").write_text("fine")
    with pytest.raises(DataSourceError, match=r"latin1\.txt is not UTF-8 text"):
        text_corpus(text_config(source="text-folder", path=str(tmp_path / "bad")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="no .txt files in"):
        text_corpus(text_config(source="text-folder", path=str(tmp_path / "empty")))
    with pytest.raises(DataSourceError, match="is not a folder"):
        text_corpus(text_config(source="text-folder", path=str(tmp_path / "absent")))


@pytest.fixture
def hf_offline(monkeypatch, tmp_path):
    """The Hugging Face hub switched off, its caches empty under tmp_path (no network is tried)."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    return tmp_path / "hf-datasets"


def test_hf_text_offline_names_the_dataset_and_what_to_place_where(hf_offline):
    cfg = text_config(source="hf-text", hf_dataset="wikitext", hf_config="wikitext-2-raw-v1")
    cfg.validate()
    with pytest.raises(DataSourceError) as caught:
        load_split(cfg, "train")
    message = str(caught.value)
    assert "wikitext (wikitext-2-raw-v1)" in message and str(hf_offline) in message
    assert "HF_DATASETS_OFFLINE=1" in message and "data.source=text-folder" in message


def test_hf_text_loads_a_local_dataset_through_the_datasets_loader(hf_offline, tmp_path):
    write_texts(tmp_path / "local", {"train.txt": "\n".join(TEXTS) + "\n\n", "test.txt": "\n".join(TEXTS[:2])})
    cfg = text_config(source="hf-text", hf_dataset=str(tmp_path / "local"), seq_len=8)
    corpus = text_corpus(cfg)
    assert len(corpus.train) >= len(TEXTS) and corpus.provenance["documents"]["test"] == 2
    assert load_split(cfg, "test").shape[1] == 8
    with pytest.raises(DataSourceError, match="split 'validation'.*data.hf_test_split"):
        text_corpus(text_config(source="hf-text", hf_dataset=str(tmp_path / "local"), hf_test_split="validation"))
    with pytest.raises(DataSourceError, match="no column 'story' .*data.text_column.*columns: text"):
        text_corpus(text_config(source="hf-text", hf_dataset=str(tmp_path / "local"), text_column="story"))


def test_text_options_are_validated_by_name():
    for options, message in (
        ({"source": "hf-text"}, "data.hf_dataset is required"),
        ({"source": "hf-text", "hf_dataset": "x", "hf_test_split": "train"}, "data.hf_test_split"),
        ({"source": "text-folder"}, "data.path is required for data.source=text-folder"),
        ({"source": "python-docs", "seq_len": 0}, "data.seq_len"),
        ({"source": "python-docs", "vocab_size": 100}, "data.vocab_size must be at least 259"),
        ({"source": "python-docs", "tokenizer": ""}, "data.tokenizer"),
    ):
        with pytest.raises(ConfigError, match=message):
            DataConfig(**options).validate()
    DataConfig(source="python-docs", tokenizer="gpt2", vocab_size=1).validate()  # vocab_size is BPE's only
