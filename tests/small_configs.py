"""Overrides that shrink a config to a size a CPU runs in seconds, shared by the end-to-end tests
(``test_every_config.py``, ``test_text_three_ways.py``). They cut budgets, widths and counts and
keep each config's model family, network kind and data shape."""

from __future__ import annotations

#: Training from scratch (pretrained starts are downloads) for 64 + 32 rows in batches of 16.
SMALL_TRAIN = [
    "train.init_checkpoint=null",
    "train.gen0_budget_kimg=0.064",
    "train.budget_kimg=0.032",
    "train.batch_size=16",
    "train.lr_warmup_kimg=0",
    "train.ema_halflife_kimg=0.01",
]
#: A causal LM of one layer, 2 heads, width 16, on 64 rows of 16 tokens of a 300-token BPE.
SMALL_TEXT = [
    "data.n_train=64",
    "data.n_test=32",
    "data.vocab_size=300",
    "data.seq_len=16",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "sample.n_eval=32",
    "sample.batch_size=32",
    "evaluate.max_reference=32",
    *SMALL_TRAIN,
]
