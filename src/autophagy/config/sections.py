"""The experiment's sections other than ``model``: data, train, sample, evaluate, loop, tracking.

Each is a frozen dataclass whose defaults are the one source of that option's default, with a
``validate`` that checks ranges and choices and names the option in every error.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from autophagy import metric_keys  # the module, not its names: metric_keys imports autophagy.config
from autophagy.config.checks import ConfigError, ConfigWarning, choice, finite, non_negative, positive
from autophagy.config.coerce import parsed_by
from autophagy.config.lambdas import check_lambda, format_lambdas, parse_lambda

TEXT_SOURCES = ("python-docs", "text-folder", "hf-text")  # token rows (kind "text", autophagy.data.text)
DATA_SOURCES = ("digits", "toy2d", "gaussian", "cifar10", "image-folder", *TEXT_SOURCES)
TOY2D_NAMES = ("8gaussians", "moons", "spiral")
BPE_MIN_VOCAB = 259  # a byte-level BPE holds the 256 byte symbols and <bos>, <eos>, <pad>


@dataclass(frozen=True)
class DataConfig:
    """Where the real data D_real comes from.

    ``n_train`` items of the training split form D_real (n in the paper); ``None`` keeps the
    whole split. ``toy2d`` and ``gaussian`` are drawn with ``seed`` (sizes ``n_train`` and
    ``n_test``); ``digits`` and ``cifar10`` have fixed splits and ``seed`` only picks a subset.

    Text sources (:data:`TEXT_SOURCES`, :mod:`autophagy.data.sources`) give rows of ``seq_len``
    token ids; ``n_train`` / ``n_test`` count rows (sequences), not documents. The tokenizer is a
    byte-level BPE of ``vocab_size`` tokens trained on the train split (``tokenizer: bpe``) or a
    pretrained one (a hub id such as ``gpt2`` or a local directory).
    """

    source: str = "digits"  # digits | toy2d | gaussian | cifar10 | image-folder | python-docs | text-folder | hf-text
    name: str = ""  # toy2d: one of TOY2D_NAMES
    n_train: int | None = None  # n, the size of D_real drawn from the train split (None: the whole split)
    n_test: int | None = None  # items of the test split, the *_test metrics' reference (None: whole split)
    dim: int = 2  # gaussian: dimension d of N(mean, std^2 I)
    mean: float = 0.0  # gaussian
    std: float = 1.0  # gaussian
    path: str | None = None  # image-folder: folder or .zip; text-folder: folder of .txt; cifar10: download root
    resolution: int | None = None  # image-folder: square resize (None: keep, all must match)
    test_fraction: float = 0.1  # image-folder, text-folder, python-docs: share of files/documents held out as test
    n_pool: int | None = None  # loop.strategy=fresh-real: real pool size (None: whole split; toy/gaussian: 10 n_train)
    seed: int = 0  # draws toy2d/gaussian data and the n_train/n_test subsets (the chains use loop.seeds)
    seq_len: int = 64  # text: tokens per row (a BOS token in front is implied, not stored)
    tokenizer: str = "bpe"  # text: bpe (byte-level BPE trained on the train split) | a hub id (gpt2) | a directory
    vocab_size: int = 2048  # text, tokenizer=bpe: the BPE vocabulary size (at most; special tokens included)
    hf_dataset: str = ""  # hf-text: the datasets.load_dataset name (wikitext, roneneldan/TinyStories)
    hf_config: str | None = None  # hf-text: its configuration (wikitext-2-raw-v1; None: the default)
    hf_test_split: str = "test"  # hf-text: the split used as the test split (TinyStories: validation)
    text_column: str = "text"  # hf-text: the column holding the documents' text

    @property
    def is_text(self) -> bool:
        """Whether the source gives token rows (kind ``text``)."""
        return self.source in TEXT_SOURCES

    def validate(self) -> None:
        choice("data.source", self.source, DATA_SOURCES)
        if self.source == "toy2d":
            choice("data.name", self.name, TOY2D_NAMES)
        if self.source == "image-folder" and not self.path:
            raise ConfigError("data.path is required for data.source=image-folder (a folder or .zip of PNG/JPEG files)")
        for key in ("n_train", "n_test", "n_pool"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"data.{key} must be a positive integer or null, got {value}")
        if self.source in ("toy2d", "gaussian") and (self.n_train is None or self.n_test is None):
            raise ConfigError(f"data.n_train and data.n_test are required for data.source={self.source}")
        positive("data.dim", self.dim)
        finite("data.mean", self.mean)
        positive("data.std", self.std)
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")
        positive("data.seq_len", self.seq_len)
        if not self.tokenizer:
            raise ConfigError("data.tokenizer must be bpe, a Hugging Face hub id (gpt2) or a directory, got ''")
        if self.tokenizer == "bpe" and self.vocab_size < BPE_MIN_VOCAB:
            raise ConfigError(
                f"data.vocab_size must be at least {BPE_MIN_VOCAB} for data.tokenizer=bpe (256 byte symbols "
                f"and 3 special tokens), got {self.vocab_size}"
            )
        if self.source == "text-folder" and not self.path:
            raise ConfigError("data.path is required for data.source=text-folder (a folder of .txt files)")
        if self.source == "hf-text":
            if not self.hf_dataset:
                raise ConfigError(
                    "data.hf_dataset is required for data.source=hf-text (e.g. wikitext with "
                    "data.hf_config=wikitext-2-raw-v1, or roneneldan/TinyStories)"
                )
            if not self.hf_test_split or self.hf_test_split == "train":
                raise ConfigError(f"data.hf_test_split must name a split other than train, got {self.hf_test_split!r}")
            if not self.text_column:
                raise ConfigError("data.text_column must name the column holding the text, got ''")


FINETUNE_FROM = ("net", "ema")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
SAMPLE_PRECISIONS = ("auto", "fp64", "fp32", "bf16")  # auto: the family's reference state (bf16 is opt-in)
#: Validation warns when the EMA would still weigh its starting point by more than this after a generation.
EMA_STALE_WEIGHT = 0.9


def ema_start_weight(budget_kimg: float, halflife_kimg: float) -> float:
    """The weight an EMA with half-life ``halflife_kimg`` still gives its starting point after
    ``budget_kimg`` thousand images: 0.5 ** (budget / halflife) (0 when there is no EMA, half-life 0)."""
    if halflife_kimg <= 0:
        return 0.0
    return 0.5 ** (budget_kimg / halflife_kimg)


@dataclass(frozen=True)
class TrainConfig:
    """How each generation is trained: a budget in images seen, optimiser, EMA, initialisation.

    Generation 0 trains on D_real from scratch (``gen0_budget_kimg``) or starts from
    ``init_checkpoint`` and fine-tunes it for ``gen0_budget_kimg`` (0: used as it is);
    generation t >= 1 fine-tunes generation t-1 (``init=previous``, the
    paper's protocol) or retrains from scratch (``init=scratch``) for ``budget_kimg``.

    The fine-tuning protocol (what happens at the generation boundary,
    :meth:`autophagy.models.torch_model.TorchGenerativeModel.start_generation`): the trained
    network starts from generation t-1's trained network (``finetune_from=net``: the previous
    training run continues on the new data) or from its EMA, the weights that were sampled
    (``finetune_from=ema``: what resuming EDM's reference code from a network snapshot does, those
    pickles hold only the EMA). The EMA continues from t-1's EMA (``carry_ema=true``) or restarts
    as a copy of the starting weights (``false``); Adam's moments carry over or reset
    (``carry_optimizer``). The image counter restarts, so ``lr_warmup_kimg`` of linear warmup and
    the ``lr_schedule`` (``constant``, or ``cosine`` decay to ``lr_min_ratio * lr`` at the end of
    the generation's budget) restart every generation (:func:`~autophagy.models.torch_model.learning_rate`).
    After a generation of ``budget_kimg`` the EMA still weighs its starting point by
    0.5 ** (budget_kimg / ema_halflife_kimg): validation warns when that exceeds 0.9.

    Speed (none of these changes the maths): ``precision`` (``auto``: bf16 autocast of the forward
    pass and loss on CUDA for the image families, fp32 otherwise; weights, EMA and Adam stay
    fp32), ``channels_last`` (null = auto: on CUDA for the image families), ``compile``
    (``torch.compile`` of the trained network's forward; the EMA and checkpoints are never the
    compiled wrapper). ``xflip`` flips each training image horizontally with probability 1/2 on
    the device (image families; never for digits). Multi-GPU data parallelism comes from the
    launcher (``torchrun --nproc_per_node=N -m autophagy.cli train ...``), not from this config:
    ``batch_size`` is then the global batch, split evenly across the processes.
    """

    budget_kimg: float = 100.0  # training of each generation t >= 1, in kimg (thousands of items seen)
    gen0_budget_kimg: float | None = None  # None: same as budget_kimg
    batch_size: int = 128  # items per optimiser step, global over all GPUs (capped at the training-set size)
    lr: float = 1e-3  # Adam learning rate (after the warmup)
    lr_warmup_kimg: float = 0.0  # linear learning-rate warmup in kimg, restarted every generation (0: none)
    weight_decay: float = 0.0  # Adam's L2 penalty (torch.optim.Adam weight_decay, not AdamW's decoupled one)
    grad_clip: float | None = None  # clip the gradients' global L2 norm to this (None: no clipping)
    ema_halflife_kimg: float = 10.0  # half-life of the weights' EMA in kimg (EDM, Karras et al. 2022); 0: no averaging
    init: str = "previous"  # previous | scratch
    # generation 0 from a checkpoint: an autophagy checkpoint directory, or a pretrained one (a path, an
    # http(s) URL with an optional #sha256=<hex>, or hf://owner/name) converted by autophagy.models.pretrained
    init_checkpoint: str | None = None  # gen. 0 starts here: a checkpoint path, URL or hf://owner/name; None: scratch
    carry_optimizer: bool = True  # fine-tuning: keep Adam moments from generation t-1
    carry_ema: bool = True  # fine-tuning: the EMA continues from t-1's EMA (false: restarts from the starting weights)
    finetune_from: str = "net"  # net | ema: the weights generation t's training starts from
    lr_schedule: str = "constant"  # constant | cosine (after warmup, to lr_min_ratio * lr over the generation)
    lr_min_ratio: float = 0.0  # cosine: the final learning rate as a fraction of lr
    checkpoint_every_kimg: float = 50.0  # resumable train_state cadence
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 (auto: bf16 autocast on CUDA for image families, else fp32)
    channels_last: bool | None = None  # image families; null: true on CUDA, false on CPU
    compile: bool = False  # torch.compile the trained network's forward
    xflip: bool = False  # image families: random horizontal flips on the device (p = 0.5 per image)

    def validate(self) -> None:
        positive("train.budget_kimg", self.budget_kimg)
        if self.gen0_budget_kimg is not None:
            non_negative("train.gen0_budget_kimg", self.gen0_budget_kimg)
            if self.gen0_budget_kimg == 0 and not self.init_checkpoint:
                raise ConfigError("train.gen0_budget_kimg=0 (generation 0 is not trained) needs train.init_checkpoint")
        positive("train.batch_size", self.batch_size)
        positive("train.lr", self.lr)
        non_negative("train.lr_warmup_kimg", self.lr_warmup_kimg)
        non_negative("train.weight_decay", self.weight_decay)
        if self.grad_clip is not None:
            positive("train.grad_clip", self.grad_clip)
        non_negative("train.ema_halflife_kimg", self.ema_halflife_kimg)
        choice("train.init", self.init, ("previous", "scratch"))
        positive("train.checkpoint_every_kimg", self.checkpoint_every_kimg)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        choice("train.finetune_from", self.finetune_from, FINETUNE_FROM)
        choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ConfigError(f"train.lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")
        choice("train.precision", self.precision, PRECISIONS)

    def warn_if_ema_is_stale(self) -> None:
        """Warn when a generation's budget barely moves the EMA (the sampled model) off its start."""
        for budget_option, budget in (
            ("train.budget_kimg", self.budget_kimg),
            ("train.gen0_budget_kimg", self.first_budget_kimg),
        ):
            kept = ema_start_weight(budget, self.ema_halflife_kimg)
            if budget > 0 and kept > EMA_STALE_WEIGHT:
                warnings.warn(
                    f"train.ema_halflife_kimg={self.ema_halflife_kimg:g} is long for {budget_option}={budget:g}: after "
                    f"the generation the EMA (the sampled model) still weighs its starting point by "
                    f"0.5 ** ({budget:g} / {self.ema_halflife_kimg:g}) = {kept:.2f} and barely moves; a half-life of "
                    f"at most {budget / 3:.3g} kimg (budget / 3) lets it follow the training",
                    ConfigWarning,
                    stacklevel=4,
                )
                break

    @property
    def first_budget_kimg(self) -> float:
        return self.budget_kimg if self.gen0_budget_kimg is None else self.gen0_budget_kimg


@dataclass(frozen=True)
class SampleConfig:
    """Sampling: batch size, the number of samples kept per generation for evaluation, and speed
    (``precision``, ``compile``: :mod:`autophagy.models.sampling`)."""

    batch_size: int = 1024  # samples per sampling batch (memory only: each sample's noise is seeded by its index)
    precision: str = "auto"  # fp64 (float64 sampler state, the reference) | fp32 | bf16 (CUDA autocast) | auto
    compile: bool = False  # torch.compile the network and noise kernel for sampling (image families; minutes at first)
    n_eval: int = 2000  # samples per generation for the metrics (50k in the paper)
    temperature: float = 1.0  # base-noise scale; for text a logit divisor (sampling bias, Alemohammad 2024); 1: none
    curation_k: int = 1  # curation (Ferbach et al. 2024): keep 1 of curation_k candidates per sample; 1: off
    curation_beta: float = 1.0  # curation: a candidate is kept with probability ~ exp(reward / curation_beta)
    curation_reward: str = "digits-confidence"  # digits-confidence | toy-nearest-real

    def validate(self) -> None:
        positive("sample.temperature", self.temperature)
        positive("sample.curation_k", self.curation_k)
        positive("sample.curation_beta", self.curation_beta)
        choice("sample.curation_reward", self.curation_reward, ("digits-confidence", "toy-nearest-real"))
        choice("sample.precision", self.precision, SAMPLE_PRECISIONS)
        positive("sample.batch_size", self.batch_size)
        positive("sample.n_eval", self.n_eval)


#: minilm: sentence embeddings of decoded text (all-MiniLM-L6-v2), the feature space of text data.
FEATURE_EXTRACTORS = ("raw", "digits-net", "inception", "minilm")


@dataclass(frozen=True)
class EvaluateConfig:
    """Metrics per generation: Frechet distance and precision/recall on a feature space."""

    features: str = "digits-net"  # raw | digits-net | inception | minilm (text: all-MiniLM-L6-v2 sentence embeddings)
    k: int = 3  # k-NN radius for precision/recall (Kynkaanniemi et al. 2019)
    max_reference: int | None = 10000  # cap on reference items (subsampled with the seed)
    inception_weights: str | None = None  # path to clean-fid's inception-2015-12-05.pt
    grid_size: int = 64  # samples in the PNG grid per generation (images only)
    nll_batch_size: int = 32  # text: rows per batch of the perplexity passes (current and generation-0 models)
    embedding_batch_size: int = 64  # text: texts per batch of the all-MiniLM-L6-v2 sentence embeddings
    mauve: bool = True  # text: MAUVE (Pillutla et al. 2021; the mauve-text package, GPL-3.0) against each reference
    mauve_clusters: int | None = None  # text: MAUVE's k-means clusters (null: its auto, min(N, M) / 10)
    rare_word_count: int = 5  # text: a rare word occurs 1..this many times in the train reference

    def validate(self) -> None:
        choice("evaluate.features", self.features, FEATURE_EXTRACTORS)
        positive("evaluate.k", self.k)
        if self.max_reference is not None:
            positive("evaluate.max_reference", self.max_reference)
        non_negative("evaluate.grid_size", self.grid_size)
        positive("evaluate.nll_batch_size", self.nll_batch_size)
        positive("evaluate.embedding_batch_size", self.embedding_batch_size)
        if self.mauve_clusters is not None and self.mauve_clusters < 2:
            raise ConfigError(f"evaluate.mauve_clusters must be >= 2 or null, got {self.mauve_clusters}")
        positive("evaluate.rare_word_count", self.rare_word_count)


@dataclass(frozen=True)
class LoopConfig:
    """The self-consuming recursion (Bertrand et al. 2024, Alg. 1).

    ``lambdas`` are ratios of synthetic to real data (not fractions): generation t >= 1 trains on
    all n real items plus floor(lambda * n) fresh samples of generation t-1; ``inf`` trains on n
    samples of generation t-1 and no real data.
    """

    lambdas: tuple[float, ...] = field(  # λ (Bertrand et al. 2024): synthetic items per real item; inf: no real data
        default=(0.0, 0.5, 1.0, math.inf), metadata=parsed_by(parse_lambda)
    )
    seeds: tuple[int, ...] = (0,)  # one chain per seed and λ; a seed's generation 0 is shared by its λs
    generations: int = 5  # generations after generation 0
    strategy: str = "replace"  # a name in autophagy.data.strategies.STRATEGIES
    # Collapse detection: a chain is marked collapsed at the first generation where
    # collapse_metric is worse than at generation 0 by the factor collapse_ratio (larger for
    # distances such as fd_*/swd_*, smaller for precision_*/recall_*: autophagy.metric_keys);
    # null disables it.
    collapse_metric: str = "fd_train"  # collapse detection: the metric (autophagy.metric_keys) compared with gen. 0's
    collapse_ratio: float | None = None  # collapsed once collapse_metric is this factor worse than at gen. 0; null: off
    stop_on_collapse: bool = False  # skip the chain's remaining generations (locally and in the pipeline)
    correction: str | None = None  # self-correction (Gillman et al. 2024) before mixing: null | nearest-real (vectors)
    correction_strength: float = 0.5  # nearest-real: move each sample this fraction of the way to its nearest real item

    def validate(self) -> None:
        if self.correction is not None:
            choice("loop.correction", self.correction, ("nearest-real",))
        if not 0.0 <= self.correction_strength <= 1.0:
            raise ConfigError(f"loop.correction_strength must be in [0, 1], got {self.correction_strength}")
        if self.collapse_ratio is not None and not (math.isfinite(self.collapse_ratio) and self.collapse_ratio > 1):
            raise ConfigError(f"loop.collapse_ratio must be a finite factor > 1 or null, got {self.collapse_ratio}")
        metric_keys.collapse_metric(self.collapse_metric)  # refuses a key of no registered metric
        if not self.lambdas:
            raise ConfigError("loop.lambdas must list at least one value")
        for lam in self.lambdas:
            check_lambda(lam, option="loop.lambdas")
        if len(set(self.lambdas)) != len(self.lambdas):
            raise ConfigError(f"loop.lambdas has duplicates: {format_lambdas(self.lambdas)}")
        if not self.seeds:
            raise ConfigError("loop.seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"loop.seeds must be distinct non-negative integers, got {list(self.seeds)}")
        non_negative("loop.generations", self.generations)
        from autophagy.data.strategies import STRATEGIES  # numpy: imported when a config is validated

        STRATEGIES[self.strategy]  # refuses an unregistered strategy, naming the registered ones


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow logging. The tracking URI comes from the standard ``MLFLOW_TRACKING_URI``
    (default: the embedded ``sqlite:///mlflow.db`` in the working directory)."""

    enabled: bool = True  # log runs to MLflow at MLFLOW_TRACKING_URI; false: no tracking
    log_checkpoints: bool = True  # the checkpoints keep_checkpoints keeps, as MLflow Logged Models of the chain's run
    keep_checkpoints: int = 10  # log generation 0's, the last's and every k-th's checkpoint (1: all, 0: first, last)
    log_samples: bool = True  # each generation's sample grid as a run image (step = generation)

    def validate(self) -> None:
        if (
            isinstance(self.keep_checkpoints, bool)
            or not isinstance(self.keep_checkpoints, int)
            or self.keep_checkpoints < 0
        ):
            raise ConfigError(
                "tracking.keep_checkpoints must be a whole number >= 0 (log generation 0, the last and "
                f"every k-th; 1: all, 0: the first and last only), got {self.keep_checkpoints!r}"
            )
