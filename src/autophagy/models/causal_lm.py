"""The ``causal-lm`` family: an autoregressive language model on token rows, through Hugging Face
``transformers``.

A row is ``L`` token ids (int32 ``[N, L]``, :mod:`autophagy.data.text`); the model reads it after
the tokenizer's BOS token, which is never stored. The network is

* from scratch: a GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask
  Learners": pre-LayerNorm transformer decoder, learned positions, tied input/output embeddings)
  of ``model.n_layer`` x ``model.n_head`` x ``model.n_embd``, with the data's vocabulary and
  ``L + 1 + len(prompt)`` positions (``transformers.GPT2LMHeadModel``);
* pretrained: ``AutoModelForCausalLM.from_pretrained(model.pretrained)`` from safetensors only and
  never with remote code (``facebook/opt-125m`` fine-tuned generation after generation is the
  setting of Shumailov et al., "AI models collapse when trained on recursively generated data",
  Nature 2024; ``gpt2`` that of Gerstgrasser et al. 2024). The data must be tokenized with that
  checkpoint's own tokenizer.

Training is :class:`~autophagy.models.torch_model.TorchGenerativeModel`'s loop (budget, Adam, warmup
and schedule, EMA, resume, fine-tuning protocol) with "kimg" meaning thousands of sequences; the loss
is the next-token cross-entropy ``-1/L sum_t log p(x_t | BOS, x_<t)``. Images' options do not apply
(``train.xflip`` and ``train.channels_last`` are refused).

Sampling draws token ``t`` of row ``i`` by inverse-CDF from the filtered next-token distribution
(logits / ``sample.temperature``, then ``model.top_k``, then ``model.top_p``, Holtzman et al. 2020)
with the uniform ``Phi(z[i, t])``, where ``z = index_noise(seed, i)`` is the project's counter-based
Gaussian noise (:mod:`autophagy.models.noise`): row ``i`` depends only on ``(seed, i)``, whatever
batch it is drawn in. The prompt (BOS, then the tokens of ``model.prompt``) is run once, then one
token per step through the key/value cache (``past_key_values``).

The checkpoint carries the tokenizer (``tokenizer.json``) and the network's ``transformers`` config
(``network.json``) as side files (:meth:`files`), so a checkpoint loads without the hub.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autophagy.config import CausalLMModelConfig, TrainConfig
from autophagy.models.base import LogFn, ModelError, TrainReport
from autophagy.models.noise import index_noise
from autophagy.models.sampling import resolve_sampling
from autophagy.models.torch_model import TorchGenerativeModel, resolve_device
from autophagy.progress import quiet_transformers

TOKENIZER_FILE = "tokenizer.json"
NETWORK_FILE = "network.json"
#: The dropout probabilities of the ``transformers`` configs that ``model.dropout`` sets (those a config has).
DROPOUT_ATTRIBUTES = (
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "hidden_dropout",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)
NLL_BATCH = 64  # rows per forward pass of sequence_nll by default


class CausalLM(TorchGenerativeModel):
    """A causal language model on int32 token rows ``[N, L]`` (``item_shape == (L,)``).

    The network exists once the model knows its tokenizer: :meth:`bind_data` (a new model, before
    :meth:`fit`) or :meth:`load_files` (a checkpoint). ``tokenizer`` is then the
    :class:`autophagy.data.text.TextTokenizer` of its data.
    """

    family = "causal-lm"
    kind = "text"

    def __init__(self, cfg: CausalLMModelConfig, item_shape: tuple[int, ...]):
        if len(item_shape) != 1 or item_shape[0] < 1:
            raise ModelError(f"causal-lm rows are [L] token ids, got item shape {list(item_shape)}")
        self.tokenizer: Any = None  # TextTokenizer, set by bind_data or load_files
        self.prompt_ids: list[int] = []
        super().__init__(cfg, item_shape)

    # ------------------------------------------------------------------ the network and its tokenizer

    @property
    def seq_len(self) -> int:
        return self.item_shape[0]

    def build_network(self) -> None:
        """None: the network is made by :meth:`bind_data` or :meth:`load_files` (it needs the tokenizer)."""
        return None

    def bind_data(self, tokenizer: Any) -> None:
        """Take the training set's tokenizer; build the network if there is none yet.

        From scratch: a GPT-2 with ``tokenizer.vocab_size`` tokens. Pretrained: ``model.pretrained``'s
        weights, after checking that its tokenizer is ``tokenizer`` (same sha256). A model that has a
        tokenizer already (a checkpoint of an earlier generation) only checks that it is the same one.
        The network's initial weights come from torch's global RNG (the train stage seeds it).
        """
        if self.tokenizer is not None:
            if tokenizer.sha256 != self.tokenizer.sha256:
                raise ModelError(
                    f"the training data is tokenized with {tokenizer.name} (tokenizer sha256 "
                    f"{tokenizer.sha256[:12]}...), this causal-lm model with {self.tokenizer.name} "
                    f"({self.tokenizer.sha256[:12]}...): token ids would mean other words"
                )
            return
        prompt_ids = _prompt_ids(tokenizer, self.cfg.prompt)
        if self.cfg.pretrained:
            _check_pretrained_tokenizer(self.cfg.pretrained, tokenizer)
            network = _load_pretrained(self.cfg.pretrained, self.cfg.dropout)
        else:
            network = self._scratch_network(tokenizer, len(prompt_ids) - 1)
        self._install(network, tokenizer, prompt_ids)

    def _scratch_network(self, tokenizer: Any, prompt_length: int) -> nn.Module:
        """A freshly initialised GPT-2 (Radford et al. 2019) for ``tokenizer``'s vocabulary."""
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg: CausalLMModelConfig = self.cfg
        dropout = 0.0 if cfg.dropout is None else cfg.dropout
        config = GPT2Config(
            vocab_size=tokenizer.vocab_size,
            n_positions=self.seq_len + 1 + prompt_length,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=tokenizer.bos_id,
            eos_token_id=tokenizer.eos_id,
        )
        return GPT2LMHeadModel(config)

    def _install(self, network: nn.Module, tokenizer: Any, prompt_ids: list[int]) -> None:
        vocab = int(network.config.vocab_size)
        if vocab < tokenizer.vocab_size:
            raise ModelError(
                f"the network has {vocab} output tokens, fewer than the {tokenizer.vocab_size} of the "
                f"tokenizer {tokenizer.name}"
            )
        positions = _max_positions(network.config)
        needed = len(prompt_ids) + self.seq_len - 1  # BOS, the prompt, all generated tokens but the last
        if positions is not None and needed > positions:
            raise ModelError(
                f"rows of {self.seq_len} tokens after BOS and a prompt of {len(prompt_ids) - 1} tokens need "
                f"{needed} positions; the network has {positions}: shorten data.seq_len or model.prompt"
            )
        network.config.use_cache = True
        self.tokenizer = tokenizer
        self.prompt_ids = prompt_ids
        self.install_network(network.eval())

    def _require_network(self) -> None:
        if self.net is None:
            raise ModelError(
                "this causal-lm model has no network yet: it is built for a tokenizer, by "
                "bind_data(tokenizer) (the train stage does it) or by loading a checkpoint"
            )

    # ------------------------------------------------------------------ checkpoint side files

    def files(self) -> dict[str, bytes]:
        """``tokenizer.json`` (the data's tokenizer, byte for byte) and ``network.json`` (the
        ``transformers`` config of the network and the tokenizer's name, BOS and EOS ids)."""
        self._require_network()
        network = {
            "config": self.net.config.to_dict(),
            "tokenizer": {
                "name": self.tokenizer.name,
                "sha256": self.tokenizer.sha256,
                "bos_id": self.tokenizer.bos_id,
                "eos_id": self.tokenizer.eos_id,
            },
        }
        return {
            TOKENIZER_FILE: self.tokenizer.to_json().encode(),
            NETWORK_FILE: json.dumps(network, indent=1, sort_keys=True).encode(),
        }

    def load_files(self, files: Mapping[str, bytes]) -> None:
        """Rebuild the tokenizer and an (uninitialised) network of the stored architecture."""
        missing = [name for name in (TOKENIZER_FILE, NETWORK_FILE) if name not in files]
        if missing:
            raise ModelError(f"a causal-lm checkpoint needs {' and '.join(missing)} beside its weights")
        from autophagy.data.text import TextTokenizer, TokenizerError

        try:
            network = json.loads(files[NETWORK_FILE])
            about, config = network["tokenizer"], network["config"]
            tokenizer = TextTokenizer.from_json(
                files[TOKENIZER_FILE].decode(), about["name"], bos_id=about["bos_id"], eos_id=about["eos_id"]
            )
        except (ValueError, KeyError, TypeError, TokenizerError) as err:
            raise ModelError(
                f"the causal-lm checkpoint's {NETWORK_FILE} or {TOKENIZER_FILE} is unreadable: {err}"
            ) from None
        if tokenizer.sha256 != about["sha256"]:
            raise ModelError(f"the causal-lm checkpoint's {TOKENIZER_FILE} is not the tokenizer {NETWORK_FILE} names")
        self._install(_network_from_config(config), tokenizer, _prompt_ids(tokenizer, self.cfg.prompt))

    # ------------------------------------------------------------------ weights

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """The weights of the network and its EMA; a tied weight (GPT-2's output embedding is its
        input embedding) is stored once, under its first name (safetensors refuses shared tensors)."""
        self._require_network()
        return {"model": _untied(self.net), "ema": _untied(self.ema)}

    def load_tensors(self, tensors: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        self._require_network()
        for name, module in (("model", self.net), ("ema", self.ema)):
            state = tensors.get(name, tensors["model"])
            tied = set(module.state_dict()) - set(_untied(module))
            try:
                result = module.load_state_dict(dict(state), strict=False)
            except RuntimeError as err:
                raise ModelError(f"checkpoint weights do not fit this causal-lm network: {err}") from None
            missing = set(result.missing_keys) - tied
            if missing or result.unexpected_keys:
                raise ModelError(
                    "checkpoint weights do not fit this causal-lm network: "
                    f"missing {sorted(missing)[:5]}, unexpected {sorted(result.unexpected_keys)[:5]}"
                )

    # ------------------------------------------------------------------ training

    def fit(
        self,
        rows: np.ndarray,
        budget_kimg: float,
        train: TrainConfig,
        seed: int,
        scratch_dir: Path | None = None,
        log: LogFn | None = None,
    ) -> TrainReport:
        """Train on token rows ``[N, L]`` until ``budget_kimg`` thousand sequences are seen
        (:meth:`TorchGenerativeModel.fit`; ``train.xflip`` and ``train.channels_last`` are refused)."""
        self._require_network()
        if train.xflip:
            raise ModelError("train.xflip flips images; causal-lm trains on token rows: set train.xflip=false")
        self._check_rows(rows)
        return super().fit(rows, budget_kimg, train, seed, scratch_dir, log)

    def _check_rows(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.seq_len or not np.issubdtype(rows.dtype, np.integer):
            raise ModelError(
                f"causal-lm takes integer token rows [N, {self.seq_len}], got {rows.dtype} {list(rows.shape)}"
            )
        if rows.size and (rows.min() < 0 or rows.max() >= self.tokenizer.vocab_size):
            raise ModelError(
                f"token ids must be in [0, {self.tokenizer.vocab_size}) (the vocabulary of {self.tokenizer.name}), "
                f"got ids in [{rows.min()}, {rows.max()}]"
            )

    def encode(self, rows: np.ndarray) -> torch.Tensor:
        """int32 rows ``[N, L]`` -> int64 token ids ``[N, L]`` (embedding indices)."""
        return torch.from_numpy(np.asarray(rows, dtype=np.int64))

    def decode(self, x: torch.Tensor) -> np.ndarray:
        """Token ids ``[N, L]`` -> int32 rows."""
        return x.to("cpu", torch.int64).numpy().astype(np.int32)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` rows -> the network's inputs ``[B, L]``: BOS, then each row without its last token."""
        bos = torch.full((len(x), 1), self.tokenizer.bos_id, dtype=x.dtype, device=x.device)
        return torch.cat([bos, x[:, :-1]], dim=1)

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of rows ``x`` ``[B, L]`` after BOS. With dropout on,
        its masks come from a torch seed drawn from ``generator`` (so a resumed fit is bit-exact)."""
        with _dropout_seeded(net, generator):
            logits = net(input_ids=self._inputs(x), use_cache=False).logits  # [B, L, V]
        return F.cross_entropy(logits.float().flatten(0, 1), x.flatten())

    # ------------------------------------------------------------------ sampling

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """One standard normal per generated token: ``(L,)``."""
        return (self.seq_len,)

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        seed: int,
        batch_size: int = 1024,
        device: str = "auto",
        temperature: float = 1.0,
        start: int = 0,
        precision: str = "auto",
        compile: bool = False,
        **options: Any,
    ) -> np.ndarray:
        """Rows ``start .. start + n - 1``, int32 ``[n, L]``, from the EMA network; ``temperature``
        divides the logits (1: the model as it is). Row ``i`` depends only on ``(seed, i)``.
        ``precision`` (auto, fp32) and ``compile`` (false) as for the vector families."""
        self._require_network()
        if not temperature > 0:
            raise ModelError(f"sample.temperature must be > 0, got {temperature}")
        target = resolve_device(device)
        resolve_sampling(precision, compile, target, False, torch.float32)
        net = self.ema.to(target).eval()
        out = []
        for first in range(start, start + n, batch_size):
            count = min(batch_size, start + n - first)
            noise = index_noise(seed, first, count, self.noise_shape, device=target, dtype=torch.float64)
            out.append(self.decode(self.sample_batch(net, noise, seed, first, temperature=temperature)))
        return np.concatenate(out, axis=0) if out else np.empty((0, self.seq_len), dtype=np.int32)

    def sample_batch(
        self, net: nn.Module, noise: torch.Tensor, seed: int, start: int, temperature: float = 1.0, **options: Any
    ) -> torch.Tensor:
        """Token ids ``[B, L]`` (int64) from standard normals ``noise`` ``[B, L]``: token ``t`` of row
        ``b`` is the inverse CDF of the filtered next-token distribution at ``Phi(noise[b, t])``."""
        uniforms = torch.special.ndtr(noise.to(torch.float64))  # [B, L] in (0, 1)
        batch = len(noise)
        prefix = torch.tensor([self.prompt_ids], dtype=torch.int64, device=noise.device).expand(batch, -1)
        tokens = torch.empty((batch, self.seq_len), dtype=torch.int64, device=noise.device)
        out = net(input_ids=prefix, use_cache=True, logits_to_keep=1)
        for t in range(self.seq_len):
            logits = out.logits[:, -1, : self.tokenizer.vocab_size]  # [B, V]: only the tokenizer's ids
            tokens[:, t] = self._draw(logits, uniforms[:, t], temperature)
            if t + 1 < self.seq_len:
                step = tokens[:, t : t + 1]
                out = net(input_ids=step, past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
        return tokens

    def _draw(self, logits: torch.Tensor, uniform: torch.Tensor, temperature: float) -> torch.Tensor:
        """One token per row ``[B]`` from ``logits`` ``[B, V]`` at uniforms ``uniform`` ``[B]``: softmax
        of logits / temperature (float64), restricted to the ``top_k`` largest logits and then to
        the smallest set of tokens of probability >= ``top_p``, renormalised, inverted at ``uniform``
        in vocabulary order."""
        logits = logits.to(torch.float64) / temperature
        top_k = self.cfg.top_k
        if 0 < top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if self.cfg.top_p < 1.0:
            ranked, order = torch.sort(probs, dim=-1, descending=True, stable=True)
            before = ranked.cumsum(dim=-1) - ranked  # probability of the more likely tokens
            drop = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, order, before >= self.cfg.top_p)
            probs = probs.masked_fill(drop, 0.0)
        cdf = probs.cumsum(dim=-1)
        token = torch.searchsorted(cdf, (uniform * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
        last = probs.shape[-1] - 1 - (probs > 0).flip(-1).to(torch.int64).argmax(dim=-1)  # last allowed token
        return torch.minimum(token, last)

    # ------------------------------------------------------------------ likelihood

    @torch.inference_mode()
    def sequence_nll(self, rows: np.ndarray, batch_size: int = NLL_BATCH, device: str = "auto") -> np.ndarray:
        """Mean negative log-likelihood per token (nats) of each row, float64 ``[N]``, under the EMA
        weights (the sampled model) in eval mode: ``-1/L sum_t log p(x_t | BOS, x_<t)``, with the
        network's full output vocabulary as a direct ``transformers`` computation has it. Per-token
        terms in float32 (the network's precision), their mean in float64. Perplexity of a row is
        ``exp(nll)``, of a set of equal-length rows ``exp(mean nll)``."""
        self._require_network()
        if batch_size < 1:
            raise ModelError(f"sequence_nll: batch_size must be >= 1, got {batch_size}")
        self._check_rows(rows)
        target = resolve_device(device)
        net = self.ema.to(target).eval()
        x_all = self.encode(rows)
        out = np.empty(len(x_all), dtype=np.float64)
        for first in range(0, len(x_all), batch_size):
            x = x_all[first : first + batch_size].to(target)
            logits = net(input_ids=self._inputs(x), use_cache=False).logits  # [B, L, V]
            terms = F.cross_entropy(logits.float().transpose(1, 2), x, reduction="none")  # [B, L]
            out[first : first + len(x)] = terms.to(torch.float64).mean(dim=1).cpu().numpy()
        return out


# ---------------------------------------------------------------------- helpers


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """What every sample is generated after: BOS, then the tokens of ``prompt`` (none for "")."""
    return [tokenizer.bos_id, *(tokenizer.encode([prompt])[0] if prompt else [])]


def _max_positions(config: Any) -> int | None:
    """The number of positions a ``transformers`` config's network can attend over (None: unbounded)."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _untied(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with each shared tensor kept once, under its first name."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, tensor in module.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen and tensor.numel():
            continue
        seen.add(key)
        out[name] = tensor
    return out


@contextlib.contextmanager
def _dropout_seeded(net: nn.Module, generator: torch.Generator) -> Iterator[None]:
    """Run a training forward pass with torch's RNG (dropout's) seeded from ``generator`` and
    restored after it; without active dropout, nothing is drawn."""
    active = net.training and (
        _config_dropout(net) > 0 or any(isinstance(m, nn.Dropout) and m.p > 0 for m in net.modules())
    )
    if not active:
        yield
        return
    device = generator.device
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _config_dropout(net: nn.Module) -> float:
    """The largest dropout probability of the wrapped ``transformers`` network's config (0 if none)."""
    module = getattr(net, "module", net)  # DistributedDataParallel
    module = getattr(module, "_orig_mod", module)  # torch.compile
    config = getattr(module, "config", None)
    values = [getattr(config, name, 0.0) for name in DROPOUT_ATTRIBUTES]
    return max((float(v) for v in values if isinstance(v, int | float)), default=0.0)


def _network_from_config(config: Mapping[str, Any]) -> nn.Module:
    """An uninitialised-weights network of the stored ``transformers`` config (no hub, no remote code)."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelError(f"the causal-lm checkpoint's network is a {model_type!r}, which this transformers lacks")
    try:
        return AutoModelForCausalLM.from_config(CONFIG_MAPPING[model_type].from_dict(dict(config)))
    except (ValueError, TypeError, KeyError) as err:
        raise ModelError(f"cannot build the causal-lm checkpoint's {model_type} network: {err}") from None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().is_absolute()


def _check_pretrained_tokenizer(pretrained: str, tokenizer: Any) -> None:
    """``pretrained``'s own tokenizer must be the data's (the same token ids for the same text)."""
    from autophagy.data.text import TokenizerError, pretrained_tokenizer

    try:
        own = pretrained_tokenizer(pretrained)
    except TokenizerError as err:
        raise ModelError(f"model.pretrained={pretrained}: {err}") from None
    if own.sha256 != tokenizer.sha256:
        raise ModelError(
            f"model.pretrained={pretrained} has its own tokenizer (sha256 {own.sha256[:12]}...); the training "
            f"data is tokenized with {tokenizer.name} ({tokenizer.sha256[:12]}...): prepare the data with "
            f"data.tokenizer={pretrained}"
        )


def _load_pretrained(pretrained: str, dropout: float | None) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` in float32, safetensors only, no remote code; ``dropout``
    (unless None) replaces every dropout probability of its config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    local = Path(pretrained).expanduser()
    if _looks_like_path(pretrained) and not local.is_dir():
        raise ModelError(f"model.pretrained={pretrained}: the directory {local} does not exist")
    if local.is_dir():
        if not any(local.glob("*.safetensors")):
            found = ", ".join(sorted(p.name for p in local.iterdir())[:8]) or "nothing"
            raise ModelError(
                f"model.pretrained={pretrained}: {local} holds no *.safetensors weights (it holds {found}). "
                "Pickled weights (pytorch_model.bin) can run code when loaded and are refused: convert them "
                "once where they are trusted with save_pretrained(DIR, safe_serialization=True)"
            )
        source = str(local)
    else:
        source = pretrained
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        if dropout is not None:
            for name in DROPOUT_ATTRIBUTES:
                if isinstance(getattr(config, name, None), int | float):
                    setattr(config, name, dropout)
        with quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(
                source, config=config, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
            )
    except (OSError, ValueError) as err:
        detail = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        if local.is_dir():
            raise ModelError(
                f"model.pretrained={pretrained}: cannot load a causal language model from {local} ({detail})"
            ) from None
        raise ModelError(
            f"model.pretrained={pretrained}: cannot load it from the Hugging Face hub ({detail}). Offline "
            "(HF_HUB_OFFLINE=1 or no network), place its config.json and model.safetensors in the cache "
            f"($HF_HOME/hub; `huggingface-cli download {pretrained} config.json model.safetensors` where there "
            "is a network), or save it to a directory with save_pretrained(DIR, safe_serialization=True) and set "
            "model.pretrained to DIR. Only safetensors weights are loaded, never remote code"
        ) from None
