"""Real-data sources: each returns the rows of one split as uint8 images, float32 vectors or
int32 token ids.

=============  ==========================  =========================================
source         rows                         splits
=============  ==========================  =========================================
digits         uint8 [N, 8, 8, 1]           sklearn's 1797 digits: 1497 train / 300 test
toy2d          float32 [N, 2]               drawn with the seed (train and test streams)
gaussian       float32 [N, d]               N(mean, std^2 I) drawn with the seed
cifar10        uint8 [N, 32, 32, 3]         torchvision: 50000 train / 10000 test
image-folder   uint8 [N, R, R, 3]           a folder or .zip of PNG/JPEG, held-out share;
                                            local, or s3://bucket/prefix, s3://bucket/key.zip
python-docs    int32 [N, L]                 the Python documentation's topics, held-out share
text-folder    int32 [N, L]                 a folder of .txt files (train/ and test/, or a
                                            held-out share of the files)
hf-text        int32 [N, L]                 Hugging Face datasets (WikiText-2, TinyStories):
                                            the train split and data.hf_test_split
=============  ==========================  =========================================

Text sources (:func:`text_corpus`) give documents; :func:`text_rows` encodes them with the
tokenizer (:func:`text_tokenizer`) and cuts the EOS-separated token stream into rows of
``data.seq_len`` tokens (:func:`autophagy.data.text.chunk_rows`). ``n_train`` / ``n_test`` count
rows: with a count, the documents are taken in an order shuffled with ``data.seed`` until that many
rows are filled; without one, every row of the split in the documents' order.

The embedded corpus ``python-docs`` is the standard library's ``pydoc_data.topics``: the 80 or so
topics of the Python language reference that ``help()`` shows (about 0.5 MB of English prose and
code in ~2,100 distinct paragraphs, each a document; PSF licence), which ships with every CPython,
so the CPU default needs no download and no package. A search of PyPI for a prose corpus with a
clear licence inside a wheel found none that was usable (corpora packages download their data at
run time, or ship fragments, or state no licence). Its documents depend on the Python version,
which the provenance records with the sha256 of the text.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import platform
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from autophagy.cache import cache_dir
from autophagy.config import DataConfig
from autophagy.data.dataset import DatasetError

if TYPE_CHECKING:
    from autophagy.data.text import TextTokenizer

SPLITS = ("train", "test")
DIGITS_TEST_SIZE = 300
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Offsets that separate the random streams of the train and test draws of synthetic sources.
_SPLIT_STREAM = {"train": 0, "test": 1}


class DataSourceError(DatasetError):
    """A real-data source cannot be read (missing files, offline download, bad folder)."""


def load_split(cfg: DataConfig, split: str, tokenizer: TextTokenizer | None = None) -> np.ndarray:
    """Rows of ``split`` for ``cfg``, subsampled to ``n_train`` / ``n_test`` with ``cfg.seed``.

    Text sources encode with ``tokenizer`` (None: :func:`text_tokenizer` builds it; pass the same
    one for both splits)."""
    if split not in SPLITS:
        raise DataSourceError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if cfg.is_text:
        corpus = text_corpus(cfg)
        return text_rows(cfg, corpus, split, tokenizer or text_tokenizer(cfg, corpus))
    limit = cfg.n_train if split == "train" else cfg.n_test
    rng = np.random.default_rng([cfg.seed, _SPLIT_STREAM[split]])
    if cfg.source == "toy2d":
        return toy2d(cfg.name, limit, rng)
    if cfg.source == "gaussian":
        return (cfg.mean + cfg.std * rng.standard_normal((limit, cfg.dim))).astype(np.float32)
    loaders = {"digits": digits, "cifar10": cifar10, "image-folder": image_folder}
    rows = loaders[cfg.source](cfg, split)
    if limit is not None:
        if limit > len(rows):
            raise DataSourceError(
                f"data.n_{split}={limit} but the {cfg.source} {split} split has only {len(rows)} items"
            )
        rows = rows[np.sort(rng.choice(len(rows), size=limit, replace=False))]
    return np.ascontiguousarray(rows)


# ---------------------------------------------------------------------------- digits


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The fixed, stratified train/test split of sklearn's 1797 digits (1497 / 300)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, test = train_test_split(np.arange(len(target)), test_size=DIGITS_TEST_SIZE, random_state=0, stratify=target)
    return np.sort(train), np.sort(test)


def digits_images_and_labels(split: str) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as uint8 [N, 8, 8, 1] (17 gray levels 0..16 mapped to 0..255) and labels [N]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    train, test = digits_split_indices()
    index = train if split == "train" else test
    return images[index], bunch.target[index]


def digits(cfg: DataConfig, split: str) -> np.ndarray:
    return digits_images_and_labels(split)[0]


# ---------------------------------------------------------------------------- toy 2-D


def toy2d(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """2-D toy distributions of the normalizing-flow literature (FFJORD, torchcfm): float32 [n, 2]."""
    if name == "8gaussians":
        angles = 2 * np.pi * rng.integers(0, 8, size=n) / 8
        centers = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        points = centers + 0.5 * rng.standard_normal((n, 2))
        return (points / math.sqrt(2)).astype(np.float32)
    if name == "moons":
        upper = rng.random(n) < 0.5
        t = np.pi * rng.random(n)
        x = np.where(upper, np.cos(t), 1 - np.cos(t))
        y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
        points = np.stack([x, y], axis=1) + 0.05 * rng.standard_normal((n, 2))
        return ((points - [0.5, 0.25]) * 2.0).astype(np.float32)
    if name == "spiral":
        t = np.sqrt(rng.random(n)) * 3 * np.pi
        points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 3.0
        return (points + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    raise DataSourceError(f"unknown toy2d distribution {name!r}")


# ---------------------------------------------------------------------------- CIFAR-10


def cifar10(cfg: DataConfig, split: str) -> np.ndarray:
    """CIFAR-10 through torchvision: uint8 [50000 | 10000, 32, 32, 3]; downloads when online."""
    from torchvision.datasets import CIFAR10

    root = Path(cfg.path) if cfg.path else cache_dir("cifar10")
    try:
        dataset = CIFAR10(str(root), train=split == "train", download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise DataSourceError(
            f"CIFAR-10 is not under {root} and could not be downloaded ({err}). Offline? Place "
            f"cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/) in {root}, or set data.path."
        ) from None
    return np.asarray(dataset.data, dtype=np.uint8)


# ---------------------------------------------------------------------------- image folder


def image_folder(cfg: DataConfig, split: str) -> np.ndarray:
    """PNG/JPEG files from a folder or .zip (e.g. FFHQ-64): uint8 [N, R, R, 3], sorted by path.

    ``data.path`` is a local folder or .zip, or the same in an object store: ``s3://bucket/prefix``
    (the image objects under ``prefix/``, in any sub-"folder") or ``s3://bucket/key.zip`` (see
    :func:`_s3_image_files`); a local copy of the same files gives the same rows. The test split is a
    fixed share (``test_fraction``) of the files chosen with seed 0, so it does not move when
    ``data.seed`` changes.
    """
    from PIL import Image

    path = str(cfg.path)
    with contextlib.ExitStack() as stack:
        names, read = _s3_image_files(path, stack) if path.startswith(S3_SCHEME) else _image_files(Path(path), stack)
        if not names:
            raise DataSourceError(f"no PNG/JPEG files in {path}")
        test_count = max(1, int(round(len(names) * cfg.test_fraction)))
        order = np.random.default_rng(0).permutation(len(names))
        chosen = [names[i] for i in np.sort(order[:test_count] if split == "test" else order[test_count:])]
        images = []
        for name, data in zip(chosen, read(chosen), strict=True):
            try:
                image = Image.open(io.BytesIO(data)).convert("RGB")
            except OSError as err:
                raise DataSourceError(f"cannot decode image {name} in {path}: {err}") from None
            if cfg.resolution is not None and image.size != (cfg.resolution, cfg.resolution):
                image = image.resize((cfg.resolution, cfg.resolution), Image.Resampling.LANCZOS)
            images.append(np.asarray(image, dtype=np.uint8))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataSourceError(f"images in {path} have different sizes {sorted(shapes)[:3]}...; set data.resolution")
    return np.stack(images)


#: The image files of a folder or archive: their names in row order, and a reader that yields the
#: bytes of the given names in the order given.
ImageFiles = tuple[list[str], Callable[[list[str]], Iterator[bytes]]]


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _image_files(path: Path, stack: contextlib.ExitStack) -> ImageFiles:
    """The image files of a local folder or .zip, sorted by path (component by component: ``a/b.png``
    before ``a-c.png``), so that a folder, its .zip and their copies in an object store give the same rows."""
    if not path.exists():
        raise DataSourceError(f"data.path {path} does not exist (expected a folder or .zip of PNG/JPEG files)")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DataSourceError(f"data.path {path} is a file but not a .zip archive")
        return _zip_members(stack.enter_context(zipfile.ZipFile(path)))
    files = sorted(p for p in path.rglob("*") if _is_image(p.name))
    return [str(file) for file in files], lambda names: (Path(name).read_bytes() for name in names)


def _zip_members(archive: zipfile.ZipFile) -> ImageFiles:
    """The image members of ``archive``, sorted by path as the same files in a folder are."""
    names = sorted((n for n in archive.namelist() if _is_image(n)), key=PurePosixPath)
    return names, lambda chosen: (archive.read(name) for name in chosen)


# ---------------------------------------------------------------------------- text

#: Documents encoded per batch (the tokenizer encodes a batch on all cores).
_ENCODE_BATCH = 1024


@dataclass(frozen=True)
class TextCorpus:
    """The documents of a text source's train and test splits, in their canonical order, and what
    identifies them (recorded in the datasets' provenance)."""

    train: Sequence[str]
    test: Sequence[str]
    provenance: Mapping[str, Any]

    def split(self, split: str) -> Sequence[str]:
        return self.train if split == "train" else self.test


def text_corpus(cfg: DataConfig) -> TextCorpus:
    """The documents of ``cfg.source`` (a text source), both splits."""
    loaders = {"python-docs": python_docs, "text-folder": text_folder, "hf-text": hf_text}
    if cfg.source not in loaders:
        raise DataSourceError(f"data.source={cfg.source} is not a text source ({', '.join(loaders)})")
    corpus = loaders[cfg.source](cfg)
    for split in SPLITS:
        if not any(_has_text(doc) for doc in _iterate(corpus.split(split))):
            raise DataSourceError(f"the {cfg.source} {split} split holds no text ({dict(corpus.provenance)})")
    return corpus


def text_tokenizer(cfg: DataConfig, corpus: TextCorpus) -> TextTokenizer:
    """``data.tokenizer``: a byte-level BPE of ``data.vocab_size`` trained on the corpus's train split
    (``bpe``), or a pretrained tokenizer (a hub id or a local directory)."""
    from autophagy.data.text import pretrained_tokenizer, train_bpe

    if cfg.tokenizer == "bpe":
        texts = [doc for doc in _iterate(corpus.train) if _has_text(doc)]
        return train_bpe(texts, cfg.vocab_size, name=f"bpe-{cfg.vocab_size}-{cfg.source}")
    return pretrained_tokenizer(cfg.tokenizer)


def text_rows(cfg: DataConfig, corpus: TextCorpus, split: str, tokenizer: TextTokenizer) -> np.ndarray:
    """int32 ``[N, seq_len]`` token rows of ``split``: ``n_train`` / ``n_test`` rows from documents in
    an order shuffled with ``cfg.seed``, or (count None) every row in the documents' order."""
    from autophagy.data.text import chunk_rows

    documents = corpus.split(split)
    limit = cfg.n_train if split == "train" else cfg.n_test
    if limit is None:
        order = np.arange(len(documents))
    else:
        order = np.random.default_rng([cfg.seed, _SPLIT_STREAM[split]]).permutation(len(documents))
    encoded: list[np.ndarray] = []
    tokens = 0
    for start in range(0, len(order), _ENCODE_BATCH):
        texts = [doc for doc in _take(documents, order[start : start + _ENCODE_BATCH]) if _has_text(doc)]
        for ids in tokenizer.encode(texts):
            encoded.append(np.asarray(ids, dtype=np.int32))
            tokens += len(ids) + 1  # and its EOS
        if limit is not None and tokens >= limit * cfg.seq_len:
            break
    rows = chunk_rows(encoded, cfg.seq_len, tokenizer.eos_id)
    if limit is not None and len(rows) < limit:
        raise DataSourceError(
            f"data.n_{split}={limit} but the {cfg.source} {split} split gives only {len(rows)} rows of "
            f"data.seq_len={cfg.seq_len} tokens ({tokens} tokens with {tokenizer.name})"
        )
    if len(rows) == 0:
        raise DataSourceError(
            f"the {cfg.source} {split} split has {tokens} tokens with {tokenizer.name}, fewer than one row of "
            f"data.seq_len={cfg.seq_len}"
        )
    return rows[:limit] if limit is not None else rows


def _has_text(document: str) -> bool:
    return bool(document and not document.isspace())


def _take(documents: Sequence[str], indices: np.ndarray) -> list[str]:
    if isinstance(documents, _HFColumn):
        return documents.take(indices)
    return [documents[int(i)] for i in indices]


def _iterate(documents: Sequence[str]) -> Iterator[str]:
    return documents.iterate() if isinstance(documents, _HFColumn) else iter(documents)


def _held_out(count: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The train and test indices of ``count`` documents: a share ``test_fraction`` (at least one)
    held out with seed 0, so the split does not move when ``data.seed`` changes; sorted."""
    if count < 2:
        raise DataSourceError(f"a train/test split needs at least 2 documents, got {count}")
    test_count = min(count - 1, max(1, int(round(count * test_fraction))))
    order = np.random.default_rng(0).permutation(count)
    return np.sort(order[test_count:]), np.sort(order[:test_count])


def _text_sha256(*splits: Sequence[str]) -> str:
    """sha256 of the UTF-8 text of every document in order (the train split's, then the test split's)."""
    digest = hashlib.sha256()
    for documents in splits:
        for document in documents:
            digest.update(document.encode())
    return digest.hexdigest()


def python_docs(cfg: DataConfig) -> TextCorpus:
    """The standard library's ``pydoc_data.topics`` (the language reference topics ``help()`` shows,
    PSF licence): one document per paragraph (blank-line separated) of the topics sorted by name, a
    share ``test_fraction`` of the (distinct) paragraphs held out. Paragraphs, not topics: with only ~80 topics a
    held-out topic is a different subject (the test set would differ from the train set by more than
    any generation does); thousands of paragraphs split at random give two samples of one distribution."""
    from pydoc_data.topics import topics

    texts = [topics[key] for key in sorted(topics)]
    paragraphs = (paragraph.strip("\n") for text in texts for paragraph in text.split("\n\n") if _has_text(paragraph))
    documents = list(dict.fromkeys(paragraphs))  # each once: a repeated paragraph would be in both splits
    train, test = _held_out(len(documents), cfg.test_fraction)
    return TextCorpus(
        train=[documents[i] for i in train],
        test=[documents[i] for i in test],
        provenance={
            "corpus": "pydoc_data.topics (Python Software Foundation License)",
            "python": platform.python_version(),
            "sha256": _text_sha256(texts),  # the topics in key order, concatenated
            "documents": {"train": len(train), "test": len(test)},
        },
    )


def text_folder(cfg: DataConfig) -> TextCorpus:
    """The ``.txt`` files under ``data.path`` (UTF-8), one document per file, sorted by path. With
    ``train/`` and ``test/`` subfolders those are the splits; otherwise a share ``test_fraction`` of
    the files (at least one) is held out with seed 0."""
    root = Path(str(cfg.path)).expanduser()
    if not root.is_dir():
        raise DataSourceError(f"data.path {root} is not a folder (data.source=text-folder reads the .txt files in it)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        files = {split: _txt_files(root / split) for split in SPLITS}
        layout = "train/ and test/ folders"
    else:
        every = _txt_files(root)
        train, test = _held_out(len(every), cfg.test_fraction)
        files = {"train": [every[i] for i in train], "test": [every[i] for i in test]}
        layout = f"test_fraction={cfg.test_fraction:g} of the files held out"
    texts = {split: [_read_text(file) for file in files[split]] for split in SPLITS}
    return TextCorpus(
        train=texts["train"],
        test=texts["test"],
        provenance={
            "path": str(root),
            "layout": layout,
            "sha256": _text_sha256(texts["train"], texts["test"]),
            "documents": {split: len(files[split]) for split in SPLITS},
        },
    )


def _txt_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.rglob("*") if p.suffix.lower() == ".txt" and p.is_file()), key=lambda p: p.parts)
    if not files:
        raise DataSourceError(f"no .txt files in {folder} (data.source=text-folder: one document per .txt file)")
    return files


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataSourceError(f"{file} is not UTF-8 text: {err}") from None
    except OSError as err:
        raise DataSourceError(f"cannot read {file}: {err}") from None


@dataclass(frozen=True)
class _HFColumn(Sequence[str]):
    """One text column of a Hugging Face ``datasets.Dataset`` (memory-mapped Arrow) as documents."""

    dataset: Any
    column: str

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):  # Sequence's protocol; the loaders use take() and iterate()
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        return self.dataset[int(index)][self.column]

    def take(self, indices: np.ndarray) -> list[str]:
        return list(self.dataset.select(np.asarray(indices, dtype=np.int64))[self.column])

    def iterate(self) -> Iterator[str]:
        for batch in self.dataset.iter(batch_size=_ENCODE_BATCH):
            yield from batch[self.column]


def hf_text(cfg: DataConfig) -> TextCorpus:
    """``datasets.load_dataset(data.hf_dataset, data.hf_config)``: its ``train`` split and
    ``data.hf_test_split``, one document per row of ``data.text_column`` (blank rows skipped).

    WikiText-2 (Merity et al. 2016; Shumailov et al. 2024): ``hf_dataset=wikitext``,
    ``hf_config=wikitext-2-raw-v1``, each row a paragraph or heading line. TinyStories (Eldan and Li
    2023; Gerstgrasser et al. 2024): ``hf_dataset=roneneldan/TinyStories``,
    ``hf_test_split=validation``, each row a story. Downloads into the datasets cache when online.
    """
    what = cfg.hf_dataset + (f" ({cfg.hf_config})" if cfg.hf_config else "")
    try:
        import datasets
    except ImportError as err:
        raise DataSourceError(
            f"data.source=hf-text needs the datasets library ({err}): pip install 'autophagy[text]'"
        ) from None
    from autophagy import progress

    if progress.mode() != "bar":  # AUTOPHAGY_PROGRESS=0 or lines (logs): no tqdm bars from datasets either
        datasets.disable_progress_bars()
    splits = {"train": "train", "test": cfg.hf_test_split}
    loaded = {}
    for split, name in splits.items():
        try:
            loaded[split] = datasets.load_dataset(cfg.hf_dataset, cfg.hf_config, split=name)
        except ValueError as err:  # an unknown split or configuration
            raise DataSourceError(
                f"cannot load split {name!r} of the Hugging Face dataset {what}: {err} "
                "(data.hf_test_split names the test split, data.hf_config the configuration)"
            ) from None
        except (OSError, ConnectionError) as err:  # offline: ConnectionError; not on the hub: FileNotFoundError
            raise DataSourceError(
                f"cannot load the Hugging Face dataset {what} (split {name}): {type(err).__name__}: {err}. "
                f"Offline? Load it once where there is a network (datasets.load_dataset({cfg.hf_dataset!r}"
                f"{', ' + repr(cfg.hf_config) if cfg.hf_config else ''})) and copy the datasets cache to "
                f"{datasets.config.HF_DATASETS_CACHE} (set by HF_HOME or HF_DATASETS_CACHE), then run with "
                "HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1; or save the splits as .txt files in <folder>/train/ "
                "and <folder>/test/ and use data.source=text-folder with data.path=<folder>"
            ) from None
        if cfg.text_column not in loaded[split].column_names:
            raise DataSourceError(
                f"the Hugging Face dataset {what} (split {name}) has no column {cfg.text_column!r} "
                f"(data.text_column); its columns: {', '.join(loaded[split].column_names)}"
            )
    columns = {split: _HFColumn(loaded[split], cfg.text_column) for split in SPLITS}
    return TextCorpus(
        train=columns["train"],
        test=columns["test"],
        provenance={
            "hf_dataset": cfg.hf_dataset,
            "hf_config": cfg.hf_config,
            "splits": splits,
            "fingerprints": {split: getattr(loaded[split], "_fingerprint", None) for split in SPLITS},
            "documents": {split: len(loaded[split]) for split in SPLITS},
            "datasets": datasets.__version__,
        },
    )


# ---------------------------------------------------------------------------- object store (s3://)

S3_SCHEME = "s3://"
#: Seconds to open a connection to the object store and to wait for its next bytes, and attempts per
#: request, the first included (botocore's "standard" retries: refused connections, timeouts, 5xx,
#: throttling): an endpoint that drops packets fails after about S3_ATTEMPTS * S3_CONNECT_TIMEOUT_S,
#: one that accepts connections and never answers after S3_ATTEMPTS * S3_READ_TIMEOUT_S, never hangs.
S3_CONNECT_TIMEOUT_S = 10.0
S3_READ_TIMEOUT_S = 30.0
S3_ATTEMPTS = 3
#: Objects fetched concurrently per batch of a folder read (s3fs ``cat``): bounds the bytes held at once.
S3_BATCH = 256
#: Range reads of a .zip in the object store (members are read in name order, mostly sequential).
S3_ZIP_BLOCK_BYTES = 32 * 2**20


def _s3_image_files(url: str, stack: contextlib.ExitStack) -> ImageFiles:
    """The image objects under ``s3://bucket/prefix`` (sorted by path, as a local copy would be), or
    the members of the archive ``s3://bucket/key.zip``, read with s3fs.

    The endpoint and the credentials are the standard AWS ones botocore reads: ``AWS_ENDPOINT_URL_S3``
    (or ``AWS_ENDPOINT_URL``) for S3-compatible servers (MinIO, SeaweedFS), ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` (on Kubeflow: ``cluster.data_s3``).
    """
    bucket, _, key = url[len(S3_SCHEME) :].partition("/")
    key = key.strip("/")
    if not bucket:
        raise DataSourceError(f"data.path {url!r} names no bucket (expected s3://bucket/prefix or s3://bucket/key.zip)")
    fs = _s3_filesystem(url)
    endpoint = fs.s3.meta.endpoint_url
    root = f"{bucket}/{key}" if key else bucket
    with _s3_errors(url, endpoint):
        try:
            listed = fs.find(root)  # the object `root` itself, or every object under `root/`
        except FileNotFoundError as err:
            if _s3_error_code(err) == "NoSuchBucket":
                raise DataSourceError(f"data.path {url}: bucket {bucket!r} does not exist at {endpoint}") from None
            raise DataSourceError(
                f"{endpoint} answered 'not found' to a listing of {url} ({err}) without naming a missing bucket: "
                "is it the address of an S3 server? Set AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) to one"
            ) from None
        if key and root in listed:  # an object: a .zip
            handle = stack.enter_context(fs.open(root, "rb", block_size=S3_ZIP_BLOCK_BYTES))
            if not _is_zip(handle):
                raise DataSourceError(f"data.path {url} is an object but not a .zip archive")
            archive = stack.enter_context(zipfile.ZipFile(handle))
            names, read_members = _zip_members(archive)
            return names, lambda chosen: _s3_reads(url, endpoint, read_members(chosen))
    if not listed:
        raise DataSourceError(
            f"data.path {url} does not exist: no objects under {S3_SCHEME}{root}/ at {endpoint} "
            "(expected a prefix of PNG/JPEG objects or a .zip object)"
        )
    keys = sorted((k for k in listed if _is_image(k)), key=PurePosixPath)

    def read(chosen: list[str]) -> Iterator[bytes]:
        for start in range(0, len(chosen), S3_BATCH):
            batch = [name[len(S3_SCHEME) :] for name in chosen[start : start + S3_BATCH]]
            with _s3_errors(url, endpoint):
                contents = fs.cat(batch)
            yield from (contents[k] for k in batch)

    return [S3_SCHEME + k for k in keys], read


def _is_zip(handle) -> bool:
    """``zipfile.is_zipfile`` of an s3fs file, which raises ValueError (not OSError) on a seek before its start."""
    try:
        return zipfile.is_zipfile(handle)
    except ValueError:  # shorter than a zip's end-of-archive record
        return False


def _s3_reads(url: str, endpoint: str, reads: Iterator[bytes]) -> Iterator[bytes]:
    """``reads`` with the object store's errors as :class:`DataSourceError`."""
    with _s3_errors(url, endpoint):
        yield from reads


def _s3_error_code(err: Exception) -> str | None:
    """The S3 error code (``NoSuchBucket``, ``AccessDenied``...) of what s3fs raised, if the server sent one."""
    response = getattr(err.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code")


def _s3_filesystem(url: str):
    """A fresh s3fs file system (no cached listings or credentials) with bounded timeouts and retries."""
    try:
        import s3fs
    except ImportError as err:
        raise DataSourceError(
            f"data.path {url} is in an object store, which is read with s3fs ({err}): "
            "pip install 'autophagy[dvc]' (dvc-s3 installs it) or pip install s3fs"
        ) from None
    fs = s3fs.S3FileSystem(
        skip_instance_cache=True,
        config_kwargs={
            "connect_timeout": S3_CONNECT_TIMEOUT_S,
            "read_timeout": S3_READ_TIMEOUT_S,
            "retries": {"mode": "standard", "total_max_attempts": S3_ATTEMPTS},
        },
    )
    fs.retries = 1  # botocore retries each request (above); s3fs's own 5 would multiply the attempts
    fs.connect()  # builds the client (no request): its endpoint names the store in errors
    return fs


@contextlib.contextmanager
def _s3_errors(url: str, endpoint: str) -> Iterator[None]:
    """What s3fs and botocore raise, as a :class:`DataSourceError` naming ``url``, the endpoint and the problem."""
    from botocore.exceptions import BotoCoreError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError
    from botocore.exceptions import ReadTimeoutError as BotoReadTimeout
    from fsspec.exceptions import FSTimeoutError

    try:
        yield
    except PermissionError as err:
        raise DataSourceError(
            f"the object store at {endpoint} refused access to {url} ({err}): check AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, and that this identity may list and read the bucket"
        ) from None
    except NoCredentialsError:
        raise DataSourceError(
            f"no credentials to read {url} at {endpoint}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(on Kubeflow: cluster.data_s3.credentials_secret)"
        ) from None
    except (EndpointConnectionError, ConnectTimeoutError, BotoReadTimeout, FSTimeoutError, TimeoutError) as err:
        raise DataSourceError(
            f"cannot reach the object store at {endpoint} to read {url} ({S3_ATTEMPTS} attempts, "
            f"{S3_CONNECT_TIMEOUT_S:g} s to connect, {S3_READ_TIMEOUT_S:g} s to answer): {err}. Set "
            "AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) to the address of an S3-compatible server"
        ) from None
    except FileNotFoundError as err:  # an object deleted between the listing and its read
        raise DataSourceError(f"data.path {url}: an object is gone at {endpoint}: {err}") from None
    except (BotoCoreError, OSError) as err:
        raise DataSourceError(f"cannot read {url} at {endpoint}: {err}") from None
