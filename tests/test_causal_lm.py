"""The ``causal-lm`` family (issue 16, item 2): a GPT-2 or a pretrained causal LM on token rows.

Checked against independent references: the likelihood against ``transformers``' own loss on the
same weights, greedy decoding (``top_k=1``) against an argmax loop over full forward passes (no
key/value cache), the support of top-k / top-p against the filtered distributions recomputed from
full forward passes, and the pretrained path against the weights ``save_pretrained`` wrote. All
offline and on CPU, with tiny networks.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from autophagy.config import CausalLMModelConfig, ConfigError, TrainConfig, load_config
from autophagy.data.text import pretrained_tokenizer, train_bpe
from autophagy.models import ModelError, build_model
from autophagy.models.causal_lm import CausalLM
from autophagy.models.checkpoint import load_checkpoint, save_checkpoint

L = 12  # tokens per row
TINY = CausalLMModelConfig(n_layer=1, n_head=2, n_embd=32)
TEXTS = [
    "the cat sat on the mat and the dog sat on the log. ",
    "a quick brown fox jumps over the lazy dog again and again. ",
    "hello world, this is a tiny corpus for a tiny language model. ",
] * 10
CPU = TrainConfig(batch_size=32, lr=3e-3, ema_halflife_kimg=0.1, device="cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TEXTS, 300, "tiny-bpe")


def synthetic_rows(n: int, seed: int = 0) -> np.ndarray:
    """int32 rows [n, L] with structure a model learns fast: every other token is id 5, the others
    are drawn from 8 ids."""
    rows = np.random.default_rng(seed).integers(10, 18, size=(n, L)).astype(np.int32)
    rows[:, ::2] = 5
    return rows


def new_model(tokenizer, cfg: CausalLMModelConfig = TINY, seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    model = build_model(cfg, (L,))
    model.bind_data(tokenizer)
    return model


@pytest.fixture(scope="module")
def trained(tokenizer) -> CausalLM:
    model = new_model(tokenizer)
    model.fit(synthetic_rows(256), 0.64, CPU, seed=1)
    return model


def with_cfg(model: CausalLM, **changes) -> CausalLM:
    """The same weights and tokenizer under other model options (sampling filters)."""
    other = CausalLM(dataclasses.replace(model.cfg, **changes), model.item_shape)
    other.load_files(model.files())
    other.load_tensors(model.tensors())
    return other


def full_logits(model: CausalLM, rows: np.ndarray) -> torch.Tensor:
    """Logits [N, L, V] of every row's tokens after BOS, by one full forward pass (no cache)."""
    x = torch.as_tensor(rows, dtype=torch.int64)
    bos = torch.full((len(x), 1), model.tokenizer.bos_id)
    with torch.no_grad():
        return model.ema(input_ids=torch.cat([bos, x[:, :-1]], 1)).logits.double()


# ------------------------------------------------------------------------------ training


def test_fit_lowers_the_loss_and_counts_sequences(tokenizer):
    model = new_model(tokenizer)
    rows = synthetic_rows(256)
    before = model.sequence_nll(rows, device="cpu").mean()
    report = model.fit(rows, 0.64, CPU, seed=1)
    after = model.sequence_nll(rows, device="cpu").mean()
    assert report.images_seen == 640 and report.steps == 20  # "kimg" = thousands of sequences
    assert after < before - 2.0, (before, after)  # log(300) = 5.7 nats at the start; ~ log(8) / 2 learnable
    assert model.parameter_count() == sum(p.numel() for p in model.net.parameters())  # tied embedding once


def test_fit_is_reproducible_with_dropout(tokenizer):
    cfg = dataclasses.replace(TINY, dropout=0.2)
    weights = []
    for _ in range(2):
        model = new_model(tokenizer, cfg)
        model.fit(synthetic_rows(64), 0.128, CPU, seed=7)
        weights.append(model.tensors()["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_images_options_are_refused(tokenizer):
    model = new_model(tokenizer)
    with pytest.raises(ModelError, match="train.xflip"):
        model.fit(synthetic_rows(32), 0.032, dataclasses.replace(CPU, xflip=True), seed=0)
    with pytest.raises(ModelError, match="channels_last"):
        model.fit(synthetic_rows(32), 0.032, dataclasses.replace(CPU, channels_last=True), seed=0)
    with pytest.raises(ModelError, match=r"token ids must be in \[0, 300\)"):
        model.fit(np.full((4, L), 300, dtype=np.int32), 0.004, CPU, seed=0)
    with pytest.raises(ConfigError, match="needs text"):
        load_config(None, ["model.family=causal-lm"])  # digits are images


def test_the_model_needs_a_tokenizer_and_keeps_it(tokenizer):
    model = build_model(TINY, (L,))
    with pytest.raises(ModelError, match="bind_data"):
        model.sample(2, seed=0, device="cpu")
    model.bind_data(tokenizer)
    model.bind_data(tokenizer)  # the same one again: nothing happens
    other = train_bpe(["completely different words here"] * 5, 280, "other")
    with pytest.raises(ModelError, match="tokenized with other"):
        model.bind_data(other)


def test_config_options_are_validated():
    for changes, option in (
        ({"n_head": 3}, "model.n_head"),
        ({"top_k": -1}, "model.top_k"),
        ({"top_p": 0.0}, "model.top_p"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"n_layer": 0}, "model.n_layer"),
    ):
        with pytest.raises(ConfigError, match=option):
            dataclasses.replace(TINY, **changes).validate()


# ------------------------------------------------------------------------------ sampling


def test_sampling_is_seeded_per_row_whatever_the_batches(trained):
    whole = trained.sample(8, seed=3, batch_size=8, device="cpu")
    pieces = np.concatenate(
        [
            trained.sample(3, 3, batch_size=2, device="cpu", start=0),
            trained.sample(5, 3, batch_size=2, device="cpu", start=3),
        ]
    )
    assert whole.dtype == np.int32 and whole.shape == (8, L)
    np.testing.assert_array_equal(whole, pieces)
    assert not np.array_equal(whole, trained.sample(8, seed=4, batch_size=8, device="cpu"))
    assert ((whole >= 0) & (whole < trained.tokenizer.vocab_size)).all()


def test_top_k_1_is_the_greedy_continuation(trained):
    greedy = with_cfg(trained, top_k=1).sample(4, seed=0, batch_size=4, device="cpu", temperature=2.0)
    rows = np.zeros((1, L), dtype=np.int64)  # argmax decoding by full forward passes, no cache
    for t in range(L):
        rows[0, t] = int(full_logits(trained, rows)[0, t].argmax())
    np.testing.assert_array_equal(greedy, np.repeat(rows, 4, axis=0))


def test_top_k_and_top_p_restrict_the_support(trained):
    base = with_cfg(trained)
    for option, value in (("top_k", 3), ("top_p", 0.5)):
        model = with_cfg(trained, **{option: value})
        rows = model.sample(16, seed=1, batch_size=16, device="cpu", temperature=1.5)
        probs = torch.softmax(full_logits(trained, rows) / 1.5, dim=-1)  # [N, L, V]
        token_p = probs.gather(-1, torch.as_tensor(rows, dtype=torch.int64)[..., None])[..., 0]
        if option == "top_k":
            rank = (probs > token_p[..., None]).sum(-1)  # tokens more likely than the drawn one
            assert (rank < value).all()
        else:
            above = (probs * (probs > token_p[..., None])).sum(-1)  # probability of the more likely tokens
            assert (above < value).all()
        unrestricted = base.sample(16, seed=1, batch_size=16, device="cpu", temperature=1.5)
        assert not np.array_equal(rows, unrestricted)  # the filter changed something


def test_low_temperature_concentrates_on_the_likely_tokens(trained):
    rows = synthetic_rows(64, seed=5)
    cold = trained.sample(32, seed=2, device="cpu", temperature=0.3)
    hot = trained.sample(32, seed=2, device="cpu", temperature=3.0)
    assert trained.sequence_nll(cold, device="cpu").mean() < trained.sequence_nll(hot, device="cpu").mean()
    assert trained.sequence_nll(rows, device="cpu").mean() < trained.sequence_nll(hot, device="cpu").mean()


def test_a_prompt_conditions_the_samples_but_is_not_stored(tokenizer, trained):
    prompted = new_model(tokenizer, dataclasses.replace(TINY, prompt="the cat"))
    assert prompted.prompt_ids[0] == tokenizer.bos_id and len(prompted.prompt_ids) > 1
    assert prompted.net.config.n_positions == L + len(prompted.prompt_ids)  # L + 1 + the prompt's tokens
    greedy = with_cfg(prompted, top_k=1).sample(2, seed=0, device="cpu")
    assert greedy.shape == (2, L)
    x = torch.as_tensor([prompted.prompt_ids + greedy[0].tolist()], dtype=torch.int64)
    with torch.no_grad():  # the greedy continuation of BOS + prompt, by one full pass
        logits = prompted.ema(input_ids=x).logits[0, len(prompted.prompt_ids) - 1 : -1]
    np.testing.assert_array_equal(greedy[0], logits.argmax(-1).numpy())
    assert not np.array_equal(greedy, with_cfg(prompted, top_k=1, prompt="").sample(2, seed=0, device="cpu"))
    with pytest.raises(ModelError, match="need 16 positions; the network has 13"):
        with_cfg(trained, prompt="the cat")  # a network built for BOS-only rows has no room for it


# ------------------------------------------------------------------------------ likelihood


def test_sequence_nll_equals_transformers_loss(trained):
    rows = synthetic_rows(6, seed=9)
    ours = trained.sequence_nll(rows, batch_size=4, device="cpu")
    assert ours.dtype == np.float64 and ours.shape == (6,)
    bos = torch.full((1, 1), trained.tokenizer.bos_id)
    for i, row in enumerate(rows):
        ids = torch.cat([bos, torch.as_tensor(row[None], dtype=torch.int64)], 1)  # [1, L + 1]
        labels = ids.clone()
        labels[:, 0] = -100  # BOS is conditioned on, not predicted
        with torch.no_grad():
            reference = trained.ema(input_ids=ids, labels=labels).loss  # transformers shifts the labels itself
        assert abs(ours[i] - float(reference)) < 1e-5


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip(trained, tmp_path):
    save_checkpoint(trained, tmp_path / "ckpt", {"generation": 0})
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert set(config["files"]) == {"tokenizer.json", "network.json"}
    assert (tmp_path / "ckpt" / "tokenizer.json").read_text() == trained.tokenizer.to_json()
    loaded = load_checkpoint(tmp_path / "ckpt", family="causal-lm")
    assert loaded.tokenizer.sha256 == trained.tokenizer.sha256 and loaded.tokenizer.bos_id == trained.tokenizer.bos_id
    np.testing.assert_array_equal(loaded.sample(5, seed=1, device="cpu"), trained.sample(5, seed=1, device="cpu"))
    rows = synthetic_rows(4)
    np.testing.assert_array_equal(loaded.sequence_nll(rows, device="cpu"), trained.sequence_nll(rows, device="cpu"))
    with pytest.raises(ModelError, match="tokenized with other"):
        loaded.bind_data(train_bpe(["completely different words here"] * 5, 280, "other"))


def test_a_damaged_side_file_is_refused(trained, tmp_path):
    save_checkpoint(trained, tmp_path / "ckpt", {"generation": 0})
    with open(tmp_path / "ckpt" / "tokenizer.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(ModelError, match=r"tokenizer.json is corrupted"):
        load_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"tokenizer.json \(listed in config.json\) is missing"):
        load_checkpoint(tmp_path / "ckpt")


# ------------------------------------------------------------------------------ pretrained


@pytest.fixture(scope="module")
def pretrained_dir(tokenizer, tmp_path_factory):
    """A tiny GPT-2 saved as a Hugging Face model directory (safetensors) with its fast tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-gpt2")
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    ).save_pretrained(directory)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=1
    )
    network = GPT2LMHeadModel(config).eval()
    network.save_pretrained(directory)
    assert (directory / "model.safetensors").is_file()
    return directory, network


def test_a_pretrained_directory_is_loaded_and_fine_tuned(pretrained_dir, tokenizer):
    directory, network = pretrained_dir
    data_tokenizer = pretrained_tokenizer(str(directory))  # what the data stage tokenizes with
    model = new_model(data_tokenizer, CausalLMModelConfig(pretrained=str(directory), dropout=0.0))
    for name, tensor in network.state_dict().items():
        assert torch.equal(model.ema.state_dict()[name], tensor), name
    rows = synthetic_rows(4)
    ids = torch.cat([torch.full((4, 1), data_tokenizer.bos_id), torch.as_tensor(rows, dtype=torch.int64)], 1)
    with torch.no_grad():
        logp = torch.log_softmax(network(input_ids=ids[:, :-1]).logits.double(), -1)
    direct = -logp.gather(-1, ids[:, 1:, None])[..., 0].mean(1).numpy()
    np.testing.assert_allclose(model.sequence_nll(rows, device="cpu"), direct, atol=1e-5)
    model.fit(synthetic_rows(64), 0.064, CPU, seed=0)
    assert model.sample(2, seed=0, device="cpu").shape == (2, L)
    with pytest.raises(ModelError, match="has its own tokenizer"):
        new_model(tokenizer, CausalLMModelConfig(pretrained=str(directory)))  # the BPE of train_bpe, not its JSON


def test_pickled_weights_are_refused(pretrained_dir, tmp_path):
    directory, network = pretrained_dir
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    torch.save(network.state_dict(), tmp_path / "pytorch_model.bin")
    data_tokenizer = pretrained_tokenizer(str(tmp_path))
    with pytest.raises(ModelError, match=r"no \*.safetensors weights.*pytorch_model.bin.*refused"):
        new_model(data_tokenizer, CausalLMModelConfig(pretrained=str(tmp_path)))


def test_a_hub_id_offline_names_what_to_place_where(tokenizer, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match=r"model.pretrained=nobody-here/no-such-lm: .*nobody-here/no-such-lm"):
        new_model(tokenizer, CausalLMModelConfig(pretrained="nobody-here/no-such-lm"))
    from autophagy.models.causal_lm import _load_pretrained

    with pytest.raises(ModelError, match=r"place its config.json and model.safetensors in the cache"):
        _load_pretrained("nobody-here/no-such-lm", None)


# ------------------------------------------------------------------------------ the stages


def test_train_and_sample_stages_carry_the_tokenizer(tokenizer, tmp_path):
    from autophagy.data.dataset import NewShard, open_dataset, write_dataset
    from autophagy.data.text import dataset_tokenizer
    from autophagy.stages import sample, train

    write_dataset(
        tmp_path / "real",
        [NewShard(origin={"type": "real"}, array=synthetic_rows(64), name="real.npy")],
        {},
        tokenizer=tokenizer,
    )
    cfg = load_config(
        None,
        [
            "model.family=causal-lm",
            "data.source=python-docs",
            f"data.seq_len={L}",
            "evaluate.features=minilm",
            "model={family: causal-lm, n_layer: 1, n_head: 2, n_embd: 32}",
            "train.budget_kimg=0.064",
            "train.batch_size=32",
            "train.ema_halflife_kimg=0.02",
            "train.device=cpu",
            "tracking.enabled=false",
        ],
    )
    train.run(cfg, tmp_path / "real", tmp_path / "gen0", generation=0, seed=0)
    sample.run(cfg, tmp_path / "gen0", tmp_path / "samples", n=6, seed=0, generation=1)
    samples = open_dataset(tmp_path / "samples")
    assert samples.kind == "text" and samples.item_shape == (L,)
    assert dataset_tokenizer(samples).sha256 == tokenizer.sha256
    train.run(cfg, tmp_path / "samples", tmp_path / "gen1", generation=1, seed=0, lam=1.0, init=tmp_path / "gen0")
    assert load_checkpoint(tmp_path / "gen1").tokenizer.sha256 == tokenizer.sha256
    other = train_bpe(["completely different words here"] * 5, 280, "other")
    write_dataset(
        tmp_path / "other",
        [NewShard(origin={"type": "real"}, array=synthetic_rows(64), name="o.npy")],
        {},
        tokenizer=other,
    )
    with pytest.raises(ModelError, match="tokenized with other"):
        train.run(cfg, tmp_path / "other", tmp_path / "gen1b", generation=1, seed=0, lam=1.0, init=tmp_path / "gen0")
