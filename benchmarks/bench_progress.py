"""What the training curve and progress output cost (issue 14, item 1).

    .venv/bin/python benchmarks/bench_progress.py [--repeat 3] [--json out.json]

* **per tick**: microseconds of the train stage's reporter for one tick of ``fit`` (a record
  appended to the training log, the progress display, the live MLflow curve without a tracker),
  over 5,000 ticks: with plain lines every 30 s (the default off a terminal) and with a line per
  tick (``AUTOPHAGY_PROGRESS_SECONDS=0``, written to /dev/null);
* **end to end**: ``fit`` of the tests' 32-channel MLP at batch 32 for 20,000 images (a tick, 800
  images, takes milliseconds there, so the per-tick cost weighs most) with ``log=None`` and with
  the reporter, interleaved; a loaded machine makes these noisy, the per-tick figure is the robust one;
* **MLflow**: the end-of-stage logging of a long generation's curve (``--ticks`` records, 3
  metrics each) into a fresh SQLite store.

Medians of ``--repeat``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autophagy import train_log
from autophagy.config import load_config
from autophagy.data.sources import digits_images_and_labels
from autophagy.models import build_model
from autophagy.stages.train import _Reporter

IMAGES = 20_000
TINY = ["model.network=mlp", "model.model_channels=32", "model.num_blocks=1", "train.batch_size=32", "train.device=cpu"]


def reporter_microseconds(interval: str, folder: Path, ticks: int = 5000) -> float:
    """Microseconds per tick of the stage's reporter (``interval``: AUTOPHAGY_PROGRESS_SECONDS)."""
    os.environ["AUTOPHAGY_PROGRESS_SECONDS"] = interval
    cfg = load_config(None, TINY)
    log = train_log.TrainLog(folder, 0)
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        with _Reporter(log, None, cfg, None, 0, 0, ticks * 0.8) as reporter:
            started = time.perf_counter()
            for tick in range(1, ticks + 1):
                reporter({"loss": 0.5, "kimg": tick * 0.8, "lr": 1e-3})
            return (time.perf_counter() - started) / ticks * 1e6


def fit_seconds(cfg, rows: np.ndarray, scratch: Path | None) -> float:
    """Seconds of one fit; with ``scratch``, through the stage's reporter."""
    torch.manual_seed(0)
    model = build_model(cfg.model, rows.shape[1:])
    started = time.perf_counter()
    if scratch is None:
        model.fit(rows, IMAGES / 1000, cfg.train, seed=0)
    else:
        os.environ["AUTOPHAGY_PROGRESS_SECONDS"] = "30"
        with _Reporter(train_log.TrainLog(scratch, 0), None, cfg, None, 0, 0, IMAGES / 1000) as reporter:
            model.fit(rows, IMAGES / 1000, cfg.train, seed=0, log=reporter)
    return time.perf_counter() - started


def mlflow_seconds(ticks: int, folder: Path) -> float:
    """Seconds to log ``ticks`` records' curve (at the end of a stage) into a fresh SQLite store."""
    from autophagy.tracking import Tracker

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    cfg = load_config(None, ["tracking.enabled=true", "loop.lambdas=[1]"])
    tracker = Tracker(cfg)
    run_id = tracker.child_run(1.0, 0)
    now = time.time()
    records = [
        {"images_seen": 512 * 25 * (i + 1), "loss": 0.1, "lr": 1e-4, "images_per_s": 2e3, "time": now + i}
        for i in range(ticks)
    ]
    started = time.perf_counter()
    train_log.log_curve(tracker, run_id, records, 0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--ticks",
        type=int,
        default=15_625,
        help="ticks of the MLflow measurement (default: a 200 Mimg generation at batch 512)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    rows = digits_images_and_labels("train")[0]
    results: dict[str, object] = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        results["per_tick_us"] = {
            name: float(np.median([reporter_microseconds(interval, Path(tmp)) for _ in range(args.repeat)]))
            for name, interval in (("lines every 30 s", "30"), ("a line per tick", "0"))
        }
        print("per tick", json.dumps(results["per_tick_us"]), flush=True)
        cfg = load_config(None, TINY)
        times: dict[str, list[float]] = {"bare": [], "reporter": []}
        fit_seconds(cfg, rows, None)  # warm-up
        for _ in range(args.repeat):
            times["bare"].append(fit_seconds(cfg, rows, None))
            times["reporter"].append(fit_seconds(cfg, rows, Path(tmp)))
        ticks = len(train_log.read_records(Path(tmp) / train_log.LOG_NAME))
        bare, reporter = (float(np.median(times[key])) for key in ("bare", "reporter"))
        results["tiny_fit"] = {
            "images": IMAGES,
            "ticks": ticks,
            "bare_s": bare,
            "reporter_s": reporter,
            "runs": times,
            "overhead_percent": 100 * (reporter / bare - 1),
            "per_tick_share_percent": 100 * ticks * results["per_tick_us"]["lines every 30 s"] / 1e6 / bare,
        }
        print("tiny fit", json.dumps(results["tiny_fit"]), flush=True)
        results["mlflow"] = {"ticks": args.ticks, "seconds": mlflow_seconds(args.ticks, Path(tmp))}
        print("mlflow", json.dumps(results["mlflow"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
