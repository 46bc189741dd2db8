"""The training curve of one generation: per-tick records in a JSON-lines file and in MLflow.

``fit`` reports the mean loss every ``CHECK_EVERY_STEPS`` optimizer steps, at the end, and before
each resumable train state (a *tick*). Each tick becomes one record::

    {"generation": 3, "images_seen": 51200, "kimg": 51.2, "loss": 0.1234, "lr": 0.0002,
     "images_per_s": 1830.5, "seconds": 27.9, "time": 1767225600.0}

``images_per_s`` counts the images since the previous record (the first: since training started
in this process, so it includes moving the data and compiling); ``seconds`` is training time of
this generation, summed over resumed runs; ``time`` is the Unix time of the record.

The records are appended to ``train_log.jsonl`` in the training's scratch directory as they come
(a resumed training keeps those up to the train state it resumes from and drops the rest, so no
tick appears twice), and the finished log is written atomically beside the checkpoint as
``<checkpoint>.train_log.jsonl`` (:func:`log_path`; ``gen-003/model.train_log.jsonl``). It is not
inside the checkpoint directory: the checkpoint stays byte for byte reproducible, and the log
holds wall-clock times.

In MLflow, the chain's child run gets ``train/loss``, ``train/lr`` and ``train/images_per_s`` at
``step`` = images seen by the chain: generation ``g``'s records are offset by :func:`chain_offset`,
the images its earlier generations were budgeted (``train.gen0_budget_kimg`` for generation 0,
``train.budget_kimg`` for each later one), so a chain's generations follow each other on one chart.
(A generation trains whole batches, up to one batch past its budget, so its last point may lie
just past the next generation's offset.) Points reach MLflow in batches, every
:data:`LIVE_SECONDS` during training and the rest at the end; a step the run already holds is not
logged again.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autophagy import atomic
from autophagy.config import TrainConfig

LOG_NAME = "train_log.jsonl"
#: MLflow metric names of the record fields.
METRICS = {"loss": "train/loss", "lr": "train/lr", "images_per_s": "train/images_per_s"}
#: Seconds between two batches of points sent to MLflow while training runs.
LIVE_SECONDS = 60.0


def log_path(checkpoint_dir: str | Path) -> Path:
    """Where the training log of ``checkpoint_dir`` is published: ``<checkpoint_dir>.train_log.jsonl``."""
    checkpoint_dir = Path(checkpoint_dir)
    return checkpoint_dir.with_name(f"{checkpoint_dir.name}.{LOG_NAME}")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a training log; a line cut short by a killed write is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("images_seen"), int):
            records.append(record)
    return records


class TrainLog:
    """The growing log of one training in ``scratch`` (``train_log.jsonl``): :meth:`record` turns
    a tick of ``fit`` into a record and appends it. Started with ``resumed_images`` > 0 (a resumed
    training), it keeps the records up to that point and continues their ``seconds``; otherwise
    it starts empty."""

    def __init__(self, scratch: Path, generation: int, resumed_images: int = 0):
        self.path = Path(scratch) / LOG_NAME
        self.generation = generation
        kept = [r for r in read_records(self.path) if r["images_seen"] <= resumed_images] if resumed_images else []
        atomic.write_text(self.path, "".join(_line(r) for r in kept))
        self.records = kept
        self.seconds_before = kept[-1]["seconds"] if kept else 0.0
        self.started = self.last_time = time.perf_counter()
        self.last_images = resumed_images

    def record(self, tick: Mapping[str, float]) -> dict[str, Any]:
        """Append the record of ``tick`` (``fit``'s ``{"loss", "kimg", "lr"}``) and return it."""
        now = time.perf_counter()
        images = int(round(tick["kimg"] * 1000))
        span = now - self.last_time
        record = {
            "generation": self.generation,
            "images_seen": images,
            "kimg": images / 1000.0,
            "loss": float(tick["loss"]),
            "lr": float(tick["lr"]),
            "images_per_s": (images - self.last_images) / span if span > 0 else float("nan"),
            "seconds": self.seconds_before + now - self.started,
            "time": time.time(),
        }
        with open(self.path, "a") as handle:  # one write per line: a kill leaves at most a torn last line
            handle.write(_line(record))
        self.records.append(record)
        self.last_time, self.last_images = now, images
        return record


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, allow_nan=True) + "\n"


def publish(records: Sequence[Mapping[str, Any]], checkpoint_dir: str | Path) -> Path:
    """Write ``records`` atomically to :func:`log_path` of ``checkpoint_dir``; return that path."""
    path = log_path(checkpoint_dir)
    atomic.write_text(path, "".join(_line(r) for r in records))
    return path


def chain_offset(train: TrainConfig, generation: int) -> int:
    """The MLflow step of generation ``generation``'s first image: the images budgeted to the
    generations before it in its chain (``gen0_budget_kimg``, then ``budget_kimg`` each)."""
    if generation == 0:
        return 0
    return int(round(train.first_budget_kimg * 1000)) + (generation - 1) * int(round(train.budget_kimg * 1000))


def curve_points(records: Sequence[Mapping[str, Any]], offset: int) -> list[tuple[str, float, int, int]]:
    """``(metric, value, step, timestamp in ms)`` of ``records`` at ``step = offset + images_seen``
    (non-finite values left out)."""
    points = []
    for record in records:
        step, stamp = offset + int(record["images_seen"]), int(record["time"] * 1000)
        points += [
            (name, float(record[field]), step, stamp) for field, name in METRICS.items() if math.isfinite(record[field])
        ]
    return points


def log_curve(tracker: Any, run_id: str, records: Sequence[Mapping[str, Any]], offset: int) -> int:
    """Log the points of ``records`` that the run does not hold yet (by step of ``train/loss``)
    to ``run_id``; return how many points were sent."""
    logged = {m.step for m in tracker.client.get_metric_history(run_id, METRICS["loss"])}
    points = [p for p in curve_points(records, offset) if p[2] not in logged]
    if points:
        tracker.log_points(run_id, points)
    return len(points)


class LiveCurve:
    """Sends the records to MLflow while training runs, every ``every`` seconds, to the chain runs
    ``run_ids()`` opens on the first send. A tracking error stops the live sending with one line
    on stderr (training goes on; the end of the stage logs the curve, or fails, as before)."""

    def __init__(self, tracker: Any, run_ids: Callable[[], list[str]], offset: int, every: float | None = None):
        self.tracker, self.open_runs, self.offset = tracker, run_ids, offset
        self.every = LIVE_SECONDS if every is None else every
        self.runs: list[str] | None = None
        self.pending: list[Mapping[str, Any]] = []
        self.last = time.monotonic()

    def add(self, record: Mapping[str, Any]) -> None:
        if self.tracker is None:
            return
        self.pending.append(record)
        if time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        from autophagy.tracking import TrackingError

        self.last = time.monotonic()
        if self.tracker is None or not self.pending:
            return
        try:
            if self.runs is None:
                self.runs = self.open_runs()
                for run_id in self.runs:  # a resumed training: skip what the killed one sent
                    log_curve(self.tracker, run_id, self.pending, self.offset)
            else:
                points = curve_points(self.pending, self.offset)
                for run_id in self.runs:
                    self.tracker.log_points(run_id, points)
        except TrackingError as err:
            print(
                f"autophagy: warning: live loss curve stopped ({err}); it is logged when training ends",
                file=sys.stderr,
                flush=True,
            )
            self.tracker = None
        self.pending = []
