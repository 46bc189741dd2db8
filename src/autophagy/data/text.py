"""Tokenizers and token rows of text datasets (kind ``"text"``, :mod:`autophagy.data.dataset`).

A text dataset holds int32 rows ``[N, L]`` of token ids, ``L = data.seq_len``. The real token
stream of a split is its documents, each encoded without special tokens and followed by the
tokenizer's EOS token; rows are the consecutive ``L``-token chunks of that stream, the last partial
chunk dropped (:func:`chunk_rows`). The BOS token is not stored: a model conditions every row on
it (so each row is ``L`` content tokens, as the 64-token blocks of Shumailov et al., Nature 2024).

:class:`TextTokenizer` wraps a Hugging Face ``tokenizers.Tokenizer`` with its identity: the JSON
text it was loaded from, that text's sha256 (what the dataset manifest and a model's checkpoint
compare), its vocabulary size and its BOS and EOS ids. It comes from

* :func:`train_bpe`: a byte-level BPE (GPT-2's scheme: every byte is a symbol, so any text
  encodes, no unknown token) trained on the training split, with ``<bos>``, ``<eos>`` and ``<pad>``
  special tokens (ids 0, 1, 2). Training is deterministic: the same texts and vocabulary size give
  byte-identical JSON in any process;
* :func:`pretrained_tokenizer`: a pretrained fast tokenizer through ``transformers.AutoTokenizer``
  (a hub id such as ``gpt2`` or ``facebook/opt-125m``, or a local directory), no remote code;
* :func:`dataset_tokenizer`: the ``tokenizer.json`` a text dataset directory carries.

``tokenizers`` and ``transformers`` are the ``text`` extra (``pip install 'autophagy[text]'``);
they are imported when first used.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autophagy import atomic
from autophagy.data.dataset import Dataset, DatasetError

#: The special tokens of :func:`train_bpe`, in id order.
BPE_SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>")
#: The smallest vocabulary :func:`train_bpe` accepts: the 256 byte symbols and the special tokens.
BPE_MIN_VOCAB = 256 + len(BPE_SPECIAL_TOKENS)
#: The row dtype of text datasets.
TOKEN_DTYPE = np.dtype(np.int32)


class TokenizerError(DatasetError):
    """A tokenizer cannot be built, loaded or found (offline hub, corrupted JSON, missing BOS/EOS)."""


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as err:
        raise TokenizerError(f"text data needs the tokenizers library ({err}): pip install 'autophagy[text]'") from None
    return tokenizers


@dataclass(frozen=True)
class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with its identity.

    ``sha256`` is the hash of ``to_json()``'s UTF-8 bytes, the exact text it was built from (the
    ``tokenizer.json`` of a dataset or a checkpoint), so a tokenizer saved and loaded keeps its hash.
    """

    tokenizer: Any = field(repr=False, compare=False)  # tokenizers.Tokenizer
    json: str = field(repr=False)
    name: str
    sha256: str
    vocab_size: int
    bos_id: int
    eos_id: int

    @classmethod
    def from_json(
        cls,
        text: str,
        name: str,
        bos_token: str | None = None,
        eos_token: str | None = None,
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
    ) -> TextTokenizer:
        """Parse a ``tokenizers`` JSON. BOS/EOS: the given ids (a manifest's, a checkpoint's), else
        the ids of the given tokens, else ``<bos>``/``<eos>`` of :func:`train_bpe`, else GPT-2's
        ``<|endoftext|>`` (both), else ``<s>``/``</s>``."""
        tokenizers = _import_tokenizers()
        try:
            tokenizer = tokenizers.Tokenizer.from_str(text)
        except Exception as err:  # the Rust side raises a bare Exception for bad JSON
            raise TokenizerError(f"tokenizer {name} is not a valid tokenizers JSON: {err}") from None
        vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        if bos_id is None or eos_id is None:
            bos_id, eos_id = _special_ids(tokenizer, name, bos_token, eos_token)
        for label, value in (("BOS", bos_id), ("EOS", eos_id)):
            if not 0 <= int(value) < vocab_size:
                raise TokenizerError(
                    f"tokenizer {name}: {label} id {value} is outside its vocabulary [0, {vocab_size})"
                )
        return cls(
            tokenizer=tokenizer,
            json=text,
            name=name,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            vocab_size=vocab_size,
            bos_id=int(bos_id),
            eos_id=int(eos_id),
        )

    @classmethod
    def load(
        cls, path: str | Path, name: str | None = None, *, bos_id: int | None = None, eos_id: int | None = None
    ) -> TextTokenizer:
        """Read a ``tokenizer.json`` file (``name`` defaults to its path; BOS/EOS as :meth:`from_json`)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TokenizerError(f"tokenizer file {path} is missing") from None
        except (OSError, UnicodeDecodeError) as err:
            raise TokenizerError(f"cannot read tokenizer file {path}: {err}") from None
        return cls.from_json(text, name or str(path), bos_id=bos_id, eos_id=eos_id)

    def to_json(self) -> str:
        return self.json

    def save(self, path: str | Path) -> None:
        """Write ``to_json()`` to ``path`` atomically (its sha256 is :attr:`sha256`)."""
        atomic.write_bytes(path, self.json.encode())

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (no BOS/EOS added)."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, rows: np.ndarray) -> list[str]:
        """The text of each row of ``rows`` (int ``[N, L]``), special tokens (BOS, EOS, pad) skipped."""
        rows = np.asarray(rows)
        if rows.ndim != 2:
            raise TokenizerError(f"decode takes token rows [N, L], got shape {list(rows.shape)}")
        return self.tokenizer.decode_batch(rows.tolist(), skip_special_tokens=True)

    def entry(self, file: str) -> dict[str, Any]:
        """The manifest's ``"tokenizer"`` entry for this tokenizer stored as ``file``."""
        return {
            "file": file,
            "sha256": self.sha256,
            "name": self.name,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
        }


def _special_ids(tokenizer, name: str, bos_token: str | None, eos_token: str | None) -> tuple[int, int]:
    """The BOS and EOS ids of ``tokenizer`` (see :meth:`TextTokenizer.from_json`)."""
    candidates = [(bos_token, eos_token)] if bos_token or eos_token else []
    candidates += [("<bos>", "<eos>"), ("<|endoftext|>", "<|endoftext|>"), ("<s>", "</s>")]
    for bos, eos in candidates:
        bos_id = tokenizer.token_to_id(bos) if bos else None
        eos_id = tokenizer.token_to_id(eos) if eos else None
        if bos_id is None and eos_id is not None:
            bos_id = eos_id  # a tokenizer without a BOS token (the model conditions on EOS)
        if bos_id is not None and eos_id is not None:
            return int(bos_id), int(eos_id)
    raise TokenizerError(
        f"tokenizer {name} has no EOS token (looked for {eos_token or '<eos>'}, <|endoftext|>, </s>): "
        "documents in the token stream are separated by EOS"
    )


def train_bpe(texts: Sequence[str], vocab_size: int, name: str = "bpe") -> TextTokenizer:
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens trained on ``texts``.

    GPT-2's byte-level scheme (Radford et al. 2019) with the ``tokenizers`` trainer: the 256 byte
    symbols, ``<bos>``/``<eos>``/``<pad>`` (ids 0, 1, 2) and the learned merges; a small corpus may
    give fewer than ``vocab_size`` tokens. Deterministic: byte-identical JSON for the same inputs.
    """
    if vocab_size < BPE_MIN_VOCAB:
        raise TokenizerError(
            f"a byte-level BPE vocabulary needs at least {BPE_MIN_VOCAB} tokens (256 bytes and "
            f"{len(BPE_SPECIAL_TOKENS)} special tokens), got vocab_size={vocab_size}"
        )
    tokenizers = _import_tokenizers()
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(iter(texts), trainer=trainer, length=len(texts))
    return TextTokenizer.from_json(tokenizer.to_str(), name, "<bos>", "<eos>")


def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub id (``owner/name`` is both: it is a path when it exists)."""
    return name.startswith((".", "/", "~")) or os.path.isabs(name)


def pretrained_tokenizer(name_or_path: str) -> TextTokenizer:
    """The fast tokenizer of a pretrained model: a hub id (``gpt2``, ``facebook/opt-125m``) or a
    local directory holding ``tokenizer.json`` (or the files a slow tokenizer converts from).

    Loaded with ``transformers.AutoTokenizer`` (``use_fast=True``, ``trust_remote_code=False``) and
    kept as its ``tokenizers`` JSON; BOS and EOS are the tokenizer's own (GPT-2 has one token,
    ``<|endoftext|>``, for both; one without a BOS token conditions on EOS). Offline, a hub id loads
    from the Hugging Face cache (``$HF_HOME/hub``) or fails naming what to place where.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise TokenizerError(
            f"a pretrained tokenizer ({name_or_path}) needs transformers ({err}): pip install 'autophagy[text]'"
        ) from None
    local = Path(name_or_path).expanduser()
    if _looks_like_path(name_or_path) and not local.is_dir():
        raise TokenizerError(f"tokenizer directory {local} does not exist (data.tokenizer={name_or_path!r})")
    source = str(local) if local.is_dir() else name_or_path
    try:
        loaded = AutoTokenizer.from_pretrained(source, use_fast=True, trust_remote_code=False)
    except (OSError, ValueError) as err:  # OSError: not cached offline, no network; ValueError: bad files
        if local.is_dir():
            raise TokenizerError(
                f"cannot load a tokenizer from the directory {local} ({err}): it needs tokenizer.json "
                "(and tokenizer_config.json), as save_pretrained writes them"
            ) from None
        hf_home = os.environ.get("HF_HOME", str(Path("~/.cache/huggingface").expanduser()))
        raise TokenizerError(
            f"cannot load the tokenizer {name_or_path!r} from the Hugging Face hub ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Offline (HF_HUB_OFFLINE=1 or no network), "
            f"place it in the cache under {hf_home}/hub (run `huggingface-cli download {name_or_path} "
            f"tokenizer.json tokenizer_config.json` where there is a network and copy $HF_HOME over), or "
            f"save it to a directory (AutoTokenizer.from_pretrained({name_or_path!r}).save_pretrained(DIR)) "
            "and set data.tokenizer to that directory's path"
        ) from None
    if not getattr(loaded, "is_fast", False) or getattr(loaded, "backend_tokenizer", None) is None:
        raise TokenizerError(f"tokenizer {name_or_path} has no fast (tokenizers) version")
    eos_id = loaded.eos_token_id
    if eos_id is None:
        raise TokenizerError(f"tokenizer {name_or_path} has no EOS token: documents are separated by EOS")
    bos_id = loaded.bos_token_id if loaded.bos_token_id is not None else eos_id
    return TextTokenizer.from_json(loaded.backend_tokenizer.to_str(), name_or_path, bos_id=bos_id, eos_id=eos_id)


def dataset_tokenizer(ds: Dataset) -> TextTokenizer:
    """The tokenizer of the text dataset ``ds`` (its ``tokenizer.json``, checked against the manifest)."""
    entry = ds.tokenizer
    if ds.kind != "text" or entry is None:
        raise TokenizerError(f"{ds.path} holds {ds.kind} data, which has no tokenizer")
    path = ds.path / entry["file"]
    tokenizer = TextTokenizer.load(path, entry["name"], bos_id=int(entry["bos_id"]), eos_id=int(entry["eos_id"]))
    if tokenizer.sha256 != entry["sha256"]:
        raise TokenizerError(
            f"tokenizer file {path} is corrupted: sha256 {tokenizer.sha256[:12]}... "
            f"!= manifest {entry['sha256'][:12]}..."
        )
    return tokenizer


def chunk_rows(documents: Sequence[list[int]], seq_len: int, eos_id: int) -> np.ndarray:
    """Rows of ``seq_len`` tokens, int32 ``[N, seq_len]``: the stream ``doc_0, EOS, doc_1, EOS, ...``
    cut into consecutive chunks, the last partial chunk dropped (N may be 0)."""
    if seq_len < 1:
        raise DatasetError(f"seq_len must be a positive number of tokens, got {seq_len}")
    pieces = []
    eos = np.array([eos_id], dtype=np.int64)
    for document in documents:
        pieces.append(np.asarray(document, dtype=np.int64))
        pieces.append(eos)
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    if len(stream) and (stream.min() < 0 or stream.max() > np.iinfo(np.int32).max):
        raise DatasetError("token ids must be in [0, 2**31): int32 rows cannot hold them")
    usable = len(stream) // seq_len * seq_len
    return stream[:usable].astype(TOKEN_DTYPE).reshape(-1, seq_len)
