"""Language-model throughput: the ``causal-lm`` family against ``transformers``' own code on the
same network (issue 16).

    nice .venv/bin/python benchmarks/bench_causal_lm.py [--config configs/tinytext-lm.yaml] [-S key=value ...]
        [--n 256] [--rows 1024] [--kimg 1] [--repeat 3] [--device cpu|cuda] [--json out.json]

The network is the config's (default: tinytext-lm's GPT-2, 2 x 4 x 128) for a byte-level BPE
of ``data.vocab_size`` trained on the embedded corpus, with random weights (speed does not
depend on them). After one warm-up round the runs alternate (``paired.py``); the figures are
medians and the median of the per-round ratios (above 1: autophagy is faster).

* sampling, tokens/s: ``CausalLM.sample`` (per-row counter-based noise, inverse-CDF draw, KV cache,
  int32 rows on the host) against ``GenerationMixin.generate(do_sample=True, top_k=0)`` with
  ``torch.manual_seed`` (one stream for the batch, so a row depends on its batch: what the
  project's sampler pays for split-invariance is the difference), both from BOS for ``L`` tokens;
* training, rows/s: ``CausalLM.fit`` for ``--kimg`` thousand rows (Adam, EMA, schedule) against a
  plain loop of the same network, loss and batch (``torch.optim.Adam``, no EMA).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from paired import interleaved, load_average, median, paired_speedup, timed  # benchmarks/ is on sys.path

from autophagy.config import load_config
from autophagy.data.sources import text_corpus, text_rows, text_tokenizer
from autophagy.models import build_model


def plain_training(net: torch.nn.Module, rows: torch.Tensor, bos: int, batch: int, lr: float, steps: int) -> None:
    """The simplest training loop of the same loss: BOS + row[:-1] -> row, Adam, no EMA."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(steps):
        x = rows[torch.randint(0, len(rows), (batch,), generator=generator)]
        inputs = torch.cat([torch.full((batch, 1), bos, dtype=x.dtype), x[:, :-1]], dim=1)
        loss = F.cross_entropy(net(input_ids=inputs, use_cache=False).logits.flatten(0, 1), x.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "tinytext-lm.yaml"))
    parser.add_argument("-S", dest="overrides", action="append", default=[])
    parser.add_argument("--n", type=int, default=256, help="rows sampled per round")
    parser.add_argument("--rows", type=int, default=1024, help="training rows")
    parser.add_argument("--kimg", type=float, default=1.0, help="thousands of rows trained per round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    cfg = load_config(args.config, [*args.overrides, f"data.n_train={args.rows}", "data.n_test=64"])
    corpus = text_corpus(cfg.data)
    tokenizer = text_tokenizer(cfg.data, corpus)
    rows = text_rows(cfg.data, corpus, "train", tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg.model, rows.shape[1:])
    model.bind_data(tokenizer)
    device, length = torch.device(args.device), rows.shape[1]
    net = model.ema.to(device).eval()

    def ours_sample() -> None:
        model.sample(args.n, seed=0, batch_size=args.n, device=args.device)

    def theirs_sample() -> None:
        torch.manual_seed(0)
        start = torch.full((args.n, 1), tokenizer.bos_id, dtype=torch.long, device=device)
        with torch.inference_mode():
            net.generate(
                start,
                attention_mask=torch.ones_like(start),
                do_sample=True,
                top_k=0,
                max_new_tokens=length,
                min_new_tokens=length,
                pad_token_id=tokenizer.eos_id,
                use_cache=True,
            )

    steps = max(1, round(args.kimg * 1000 / cfg.train.batch_size))
    plain_net = copy.deepcopy(model.net).to(device)
    data = torch.from_numpy(rows.astype(np.int64)).to(device)
    train_cfg = dataclasses.replace(cfg.train, device=args.device)

    def ours_train() -> None:
        model.start_generation(carry_optimizer=True)  # the image counter restarts: one more budget
        model.fit(rows, steps * cfg.train.batch_size / 1000, train_cfg, seed=0)

    def theirs_train() -> None:
        plain_training(plain_net, data, tokenizer.bos_id, cfg.train.batch_size, cfg.train.lr, steps)

    sampling = interleaved({"autophagy": timed(ours_sample), "transformers": timed(theirs_sample)}, args.repeat)
    training = interleaved({"autophagy": timed(ours_train), "plain": timed(theirs_train)}, args.repeat)
    tokens, trained = args.n * length, steps * cfg.train.batch_size
    results = {
        "config": Path(args.config).name,
        "network": f"{cfg.model.n_layer}x{cfg.model.n_head}x{cfg.model.n_embd}, vocab {tokenizer.vocab_size}",
        "parameters": model.parameter_count(),
        "seq_len": length,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "load_average": load_average(),
        "sample_tokens_per_s": tokens / median(sampling["autophagy"]),
        "generate_tokens_per_s": tokens / median(sampling["transformers"]),
        "sampling_ratio": paired_speedup(sampling, "autophagy", "transformers"),
        "train_rows_per_s": trained / median(training["autophagy"]),
        "plain_train_rows_per_s": trained / median(training["plain"]),
        "training_ratio": paired_speedup(training, "autophagy", "plain"),
        "measured": time.strftime("%Y-%m-%d"),
    }
    for key, value in results.items():
        print(f"{key:<28} {value:.4g}" if isinstance(value, float) else f"{key:<28} {value}")
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    sys.exit(main())
