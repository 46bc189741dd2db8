"""``train``: fit the model of one generation and write its checkpoint directory.

Generation 0 starts from scratch on D_real, or from ``train.init_checkpoint``: an autophagy
checkpoint directory or a public pretrained checkpoint (a path, a URL or ``hf://owner/name``),
converted once and cached by :mod:`autophagy.models.pretrained` without running code from it;
``train.gen0_budget_kimg`` then fine-tunes it on D_real (0: used as it is). Generation
t >= 1 fine-tunes generation t-1 (``train.init=previous``, Bertrand et al. 2024, Sec. 5) or
starts from scratch (``train.init=scratch``).

Resumable: every ``train.checkpoint_every_kimg`` the model, EMA, optimizer and data order are
written to a scratch directory; a killed run started again with the same inputs continues from
there, bit for bit. The scratch directory is beside the output (``.<name>.partial``), or with
``$AUTOPHAGY_SCRATCH_DIR`` (durable storage shared by the pods of a cluster, ``cluster.scratch_pvc``)
``$AUTOPHAGY_SCRATCH_DIR/train/<hash of the inputs>``, so that a retried pod, whose output lands
at a new path, still finds it. The output directory appears only when training has finished.
The finished checkpoint and its result stay in the scratch directory (``finished/``, hard links)
until the training's MLflow records are written: a run that fails there and is started again
publishes them again and redoes only the tracking.

Progress (:mod:`autophagy.progress`): a bar with ETA on a terminal, a plain line every 30 s
elsewhere. Every tick of ``fit`` (loss, learning rate, images/s) goes to the training log beside
the checkpoint, ``<out_dir>.train_log.jsonl``, and to the chain's MLflow run at step = images seen
by the chain (:mod:`autophagy.train_log`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from autophagy import atomic, mlflow_model, train_log
from autophagy.config import ExperimentConfig, format_lambda, to_dict
from autophagy.data.dataset import DatasetError, open_dataset
from autophagy.distributed import Group, process_group
from autophagy.layout import train_scratch_dir
from autophagy.models import ModelError, build_model
from autophagy.models.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from autophagy.progress import Progress
from autophagy.seeding import derive_seed
from autophagy.tracking import Tracker, keeps_checkpoint, open_tracker

#: In the scratch directory: the finished checkpoint and its result (``result.json``), kept until tracked.
FINISHED = "finished"
FINISHED_RESULT = "result.json"


def run(
    cfg: ExperimentConfig,
    train_set: str | Path,
    out_dir: str | Path,
    generation: int,
    seed: int,
    lam: float | None = None,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train generation ``generation`` on ``train_set``; write ``out_dir`` (a checkpoint directory).

    Under ``torchrun --nproc_per_node=N`` (:mod:`autophagy.distributed`) the N processes train one
    model data-parallel; rank 0 writes the checkpoint and the MLflow records, and every rank
    returns the same result once it is written.
    """
    with process_group(cfg.train.device) as group:
        return _run(cfg, train_set, out_dir, generation, seed, lam, init, group)


def _run(
    cfg: ExperimentConfig,
    train_set: str | Path,
    out_dir: str | Path,
    generation: int,
    seed: int,
    lam: float | None,
    init: str | Path | None,
    group: Group,
) -> dict[str, Any]:
    out_dir = Path(out_dir)
    dataset = open_dataset(train_set)
    family_kind = _family_kind(cfg)
    if dataset.kind != family_kind:
        raise DatasetError(
            f"model.family={cfg.model.family} trains on {family_kind} data, {train_set} holds {dataset.kind} data"
        )
    init = init if generation > 0 and cfg.train.init == "previous" else None
    if generation == 0 and cfg.train.init_checkpoint:
        from autophagy.models.pretrained import resolve_init

        if not group.is_main:
            group.barrier()  # data parallel: rank 0 converts and caches a pretrained checkpoint first
        init = resolve_init(cfg.train.init_checkpoint, cfg.model, dataset.item_shape)
        if group.is_main:
            group.barrier()
    budget = cfg.train.first_budget_kimg if generation == 0 else cfg.train.budget_kimg
    fingerprint = {
        "data": dataset.content_hash,
        "init": _checkpoint_id(init),
        "generation": generation,
        "seed": seed,
        "lambda": None if lam is None else format_lambda(lam),
        "budget_kimg": budget,
        "model": to_dict(cfg.model),
        "train": to_dict(cfg.train),
    }
    scratch = train_scratch_dir(out_dir, fingerprint)
    finished = _finished(scratch, fingerprint)
    tracker = open_tracker(cfg) if group.is_main else None
    if finished is not None:  # trained by an earlier run that failed afterwards (in its tracking, say)
        group.barrier()  # every rank has read it
        if group.is_main:
            with atomic.staging_dir(out_dir) as stage:
                shutil.copytree(
                    scratch / FINISHED,
                    stage,
                    copy_function=atomic.link_or_copy,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(FINISHED_RESULT),
                )
            records = train_log.read_records(scratch / train_log.LOG_NAME)
            train_log.publish(records, out_dir)
            _track(tracker, cfg, lam, seed, generation, finished, out_dir, records)
            shutil.rmtree(scratch, ignore_errors=True)
        group.barrier()
        return finished
    tokenizer = _data_tokenizer(dataset)
    model = _resume(scratch, fingerprint, cfg.model.family) if group.is_main else None
    if group.is_main and model is None:
        shutil.rmtree(scratch, ignore_errors=True)
        model = _initial_model(cfg, dataset.item_shape, init, seed, tokenizer)
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "fingerprint.json").write_text(json.dumps(fingerprint, sort_keys=True))
    group.barrier()  # data parallel: rank 0 has settled the scratch state (resumed or fresh) ...
    if model is None:  # ... and the other ranks start from the very same one
        model = _resume(scratch, fingerprint, cfg.model.family)
        if model is None:
            model = _initial_model(cfg, dataset.item_shape, init, seed, tokenizer)
    if tokenizer is not None:
        model.bind_data(tokenizer)  # a resumed model: checks that it was trained with this tokenizer
    rows = dataset.load()
    train_seed = derive_seed(seed, "train", fingerprint["lambda"], generation)
    if group.is_main:
        log = train_log.TrainLog(scratch, generation, (getattr(model, "progress", None) or {}).get("images_seen", 0))
        with _Reporter(log, tracker, cfg, lam, seed, generation, budget) as reporter:
            report = model.fit(rows, budget, cfg.train, train_seed, scratch, log=reporter)
    else:
        report = model.fit(rows, budget, cfg.train, train_seed, scratch)
    meta = {
        "generation": generation,
        "seed": seed,
        "lambda": fingerprint["lambda"],
        "data_hash": dataset.content_hash,
        "init": fingerprint["init"],
        "train": to_dict(cfg.train),
        "budget_kimg": budget,
        "train_set_counts": dataset.counts_by_origin(),
        "trained_with": report.settings(),
    }
    result = {
        **report.as_metrics(),
        "resumed_from_kimg": report.resumed_from_kimg,
        "parameters": model.parameter_count(),
        "train_world_size": report.world_size,
    }
    if group.is_main:
        save_checkpoint(model, out_dir, meta)
        train_log.publish(log.records, out_dir)
        _keep_finished(out_dir, scratch, result)
        _track(tracker, cfg, lam, seed, generation, result, out_dir, log.records)
        shutil.rmtree(scratch, ignore_errors=True)
    group.barrier()  # the other ranks return once the checkpoint is written
    return result


def _family_kind(cfg: ExperimentConfig) -> str:
    from autophagy.models import family_class

    return family_class(cfg.model.family).kind


def _checkpoint_id(path: str | Path | None) -> str | None:
    """A checkpoint's identity for the resume fingerprint: its weights' hash if known, else its path."""
    if path is None:
        return None
    from autophagy.atomic import sha256_file

    weights = Path(path) / "model.safetensors"
    return sha256_file(weights) if weights.is_file() else str(path)


def _keep_finished(out_dir: Path, scratch: Path, result: dict[str, Any]) -> None:
    """Keep the published checkpoint (hard links where possible) and its result in the scratch
    directory until the run's tracking is done: a run that fails there (a stalled tracking server)
    then reuses them when started again instead of training again."""
    with atomic.staging_dir(scratch / FINISHED) as stage:
        shutil.copytree(out_dir, stage, copy_function=atomic.link_or_copy, dirs_exist_ok=True)
        atomic.write_text(stage / FINISHED_RESULT, json.dumps(result, default=str))  # NaN allowed


def _finished(scratch: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The result of a training with these inputs that finished but was not tracked, if kept."""
    marker, result = scratch / "fingerprint.json", scratch / FINISHED / FINISHED_RESULT
    if not marker.is_file() or not result.is_file():
        return None
    if json.loads(marker.read_text()) != json.loads(json.dumps(fingerprint, sort_keys=True)):
        return None
    return json.loads(result.read_text())


def _resume(scratch: Path, fingerprint: dict[str, Any], family: str):
    """The partially trained model in ``scratch`` if it was started with the same inputs."""
    marker = scratch / "fingerprint.json"
    if not marker.is_file() or not (scratch / "model.safetensors").is_file():
        return None
    if json.loads(marker.read_text()) != json.loads(json.dumps(fingerprint, sort_keys=True)):
        return None
    try:
        return load_checkpoint(scratch, family=family)
    except ModelError:
        return None  # a scratch state from a crash mid-write is discarded, never trusted


def _data_tokenizer(dataset):
    """The tokenizer of a text training set (:mod:`autophagy.data.text`); None for other data."""
    if dataset.kind != "text":
        return None
    from autophagy.data.text import dataset_tokenizer

    return dataset_tokenizer(dataset)


def _initial_model(
    cfg: ExperimentConfig, item_shape: tuple[int, ...], init: str | Path | None, seed: int, tokenizer=None
):
    """The model training starts from: generation t-1's checkpoint (``init``) or a new one seeded by
    ``seed``. A text model gets the training set's ``tokenizer`` (``bind_data``): a new one builds its
    network for it (under the same seed), a loaded one checks it."""
    if init is not None:
        config = read_checkpoint_config(init)
        if tuple(config["item_shape"]) != tuple(item_shape):
            raise ModelError(
                f"checkpoint {init} was trained on items of shape {config['item_shape']}, "
                f"the data has {list(item_shape)}"
            )
        model = load_checkpoint(init, family=cfg.model.family)
        if tokenizer is not None:
            model.bind_data(tokenizer)
        model.start_generation(
            carry_optimizer=cfg.train.carry_optimizer,
            carry_ema=cfg.train.carry_ema,
            finetune_from=cfg.train.finetune_from,
        )
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init") % (2**63))
        model = build_model(cfg.model, item_shape)
        if tokenizer is not None:
            model.bind_data(tokenizer)
        return model


class _Reporter:
    """``fit``'s ``log`` callback on the main process: each tick becomes a training-log record,
    moves the progress bar and joins the live MLflow curve of the generation's chains."""

    def __init__(
        self,
        log: train_log.TrainLog,
        tracker: Tracker | None,
        cfg: ExperimentConfig,
        lam: float | None,
        seed: int,
        generation: int,
        budget_kimg: float,
    ):
        lams = _chains(cfg, lam)
        self.log = log
        self.live = train_log.LiveCurve(
            tracker,
            lambda: [tracker.child_run(chain, seed) for chain in lams],
            train_log.chain_offset(cfg.train, generation),
        )
        where = f"seed {seed}" if lam is None else f"lam {format_lambda(lam)}, seed {seed}"
        self.progress = Progress(
            f"train gen {generation} ({where})", int(round(budget_kimg * 1000)), "img", initial=log.last_images
        )

    def __call__(self, tick) -> None:
        before = self.log.last_images
        record = self.log.record(tick)
        self.progress.update(record["images_seen"] - before, f"loss={record['loss']:.4g}, lr={record['lr']:.3g}")
        self.live.add(record)
        atomic.kill_point(self.log.path.parent, f"train:tick-{record['images_seen']}")  # tests: a kill mid-training

    def __enter__(self) -> _Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.close()


def _chains(cfg: ExperimentConfig, lam: float | None) -> tuple[float, ...]:
    """The lambdas of the chains a generation belongs to: generation 0 (``lam`` None) to every chain of its seed."""
    return tuple(cfg.loop.lambdas) if lam is None else (lam,)


def _track(
    tracker: Tracker | None,
    cfg: ExperimentConfig,
    lam: float | None,
    seed: int,
    generation: int,
    result: dict[str, Any],
    out_dir: Path,
    records: list[dict[str, Any]],
) -> None:
    if tracker is None:
        return
    lams = _chains(cfg, lam)
    offset = train_log.chain_offset(cfg.train, generation)
    for chain_lam in lams:
        run_id = tracker.child_run(chain_lam, seed)
        tracker.log_generation(run_id, generation, result, tag=f"gen-{generation}-train")
        train_log.log_curve(tracker, run_id, records, offset)
        if keeps_checkpoint(cfg, generation) and (lam is not None or chain_lam == lams[0]):
            mlflow_model.log_checkpoint(tracker, run_id, out_dir, generation)
