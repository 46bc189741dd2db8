"""Never silent (issue 14, item 1): progress with ETA for train, sample and evaluate, and the
per-tick training curve in ``<checkpoint>.train_log.jsonl`` and in the chain's MLflow run.

The training is the tiny digits EDM with a 1.6 kimg budget in batches of 32 and a train state
every 0.5 kimg: ``fit`` ticks every 25 steps (800 images), at each train state and at the end, so
at 512, 800, 1024, 1504 and 1600 images (train states: the first
batch boundary past each multiple of 500). The kill test SIGKILLs a real ``autophagy train``
process after its 1600-image tick (past the 1504-image train state) through
``$AUTOPHAGY_KILL_AT``, then runs it again.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import PRESETS

from autophagy.stages import evaluate, mix, prepare, sample, train

OPTIONS = ("train.checkpoint_every_kimg=0.5", "train.gen0_budget_kimg=1.6", "train.budget_kimg=1.2", "loop.lambdas=[1]")
TICKS = [512, 800, 1024, 1504, 1600]  # images seen at each tick of generation 0
TICKS_GEN1 = [512, 800, 1024, 1216]  # generation 1 (128 rows, 1.2 kimg: 38 batches)
LINE = re.compile(r"^train gen 0 \(seed 0\): +\d+% \S+/\S+ img \[\d\d:\d\d<\S+, \S+img/s, loss=\S+, lr=\S+\]$")


@pytest.fixture(scope="module")
def digits(tmp_path_factory, tiny_cfg):
    """``(cfg, root, result)``: digits data and generation 0 trained once (no tracking) at ``root/gen-000/model``."""
    cfg = tiny_cfg("digits", *OPTIONS)
    root = tmp_path_factory.mktemp("progress")
    prepare.run(cfg, root / "data")
    result = train.run(cfg, root / "data" / "train", root / "gen-000" / "model", generation=0, seed=0)
    return cfg, root, result


def read_records(path):
    """Every line of a training log, as strict JSON."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def losses_and_steps(client, run_id, key):
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in history], [m.value for m in history]


def test_train_log_beside_the_checkpoint(digits):
    """One record per tick, in order, with finite loss, lr, rate and time; the checkpoint directory
    itself is unchanged (it stays byte for byte reproducible)."""
    cfg, root, result = digits
    records = read_records(root / "gen-000" / "model.train_log.jsonl")
    assert [r["images_seen"] for r in records] == TICKS
    assert all(r["generation"] == 0 and r["kimg"] == r["images_seen"] / 1000 for r in records)
    for field in ("loss", "lr", "images_per_s", "seconds"):
        assert all(math.isfinite(r[field]) and r[field] > 0 for r in records), field
    assert all(r["lr"] <= cfg.train.lr for r in records)
    seconds = [r["seconds"] for r in records]
    assert seconds == sorted(seconds)
    # the stage's train_loss is fit's mean of its last 4 ticks: the log holds the same numbers
    assert result["train_loss"] == pytest.approx(sum(r["loss"] for r in records[-4:]) / 4, rel=1e-12)
    assert sorted(p.name for p in (root / "gen-000" / "model").iterdir()) == [
        "config.json",
        "ema.safetensors",
        "model.safetensors",
        "train_state.pt",
    ]


def autophagy_train(root, out, **env):
    """``autophagy train`` of generation 0 in a child process, sending its curve to MLflow at every tick."""
    code = (
        "import sys, autophagy.train_log as log; log.LIVE_SECONDS = 0; from autophagy.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    options = [arg for option in (*PRESETS["digits"], *OPTIONS, "tracking.enabled=true") for arg in ("-S", option)]
    return subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "train",
            *options,
            "--train-set",
            str(root / "data" / "train"),
            "--out",
            str(out),
            "--generation",
            "0",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "AUTOPHAGY_PROGRESS_SECONDS": "0", **env},
        timeout=600,
    )


def test_a_killed_training_resumes_its_log_and_curve_without_duplicates(digits, tmp_path, tracking_uri):
    """SIGKILLed after a tick past its last train state, the training has already sent that tick to
    MLflow and appended it to its scratch log; run again, it resumes from the train state, drops the
    tick from the log and does not send it twice. Its stderr (a pipe) shows plain progress lines."""
    from mlflow import MlflowClient

    _, root, _ = digits
    killed = autophagy_train(root, tmp_path / "model", AUTOPHAGY_KILL_AT="*/train:tick-1600")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    scratch_log = read_records(tmp_path / ".model.partial" / "train_log.jsonl")
    assert [r["images_seen"] for r in scratch_log] == TICKS  # the 1600 tick is in, the train state is at 1504
    client = MlflowClient(tracking_uri)
    chain = client.search_runs(
        [client.get_experiment_by_name("tiny-digits").experiment_id], filter_string="tags.`autophagy.role` = 'chain'"
    )
    assert len(chain) == 1
    run_id = chain[0].info.run_id
    assert losses_and_steps(client, run_id, "train/loss")[0] == TICKS  # sent live, before the kill

    resumed = autophagy_train(root, tmp_path / "model")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from_kimg"] == pytest.approx(1.504)
    records = read_records(tmp_path / "model.train_log.jsonl")
    assert [r["images_seen"] for r in records] == TICKS
    assert records[:4] == scratch_log[:4]  # the ticks before the train state are kept as they were
    for key, field in (("train/loss", "loss"), ("train/lr", "lr")):
        steps, values = losses_and_steps(client, run_id, key)
        assert steps == TICKS, key  # each tick once
        assert values == pytest.approx([r[field] for r in records], rel=1e-12)  # resumed bit for bit
    for run, ticks in ((killed, TICKS), (resumed, [1600])):  # a line per tick (interval 0 s)
        lines = [line for line in run.stderr.splitlines() if line.startswith("train gen 0")]
        assert len(lines) == len(ticks) and all(LINE.match(line) for line in lines), run.stderr
        assert [re.search(r"(\d+)% ", line).group(1) for line in lines] == [str(round(100 * t / 1600)) for t in ticks]


def test_mlflow_curve_steps_are_images_seen_by_the_chain(digits, tiny_cfg, tmp_path, tracking_uri, monkeypatch):
    """Generation 1's ticks sit after generation 0's budget (1600 images) on the chain's chart; a
    second process training generation 1 again adds no point."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    _, root, _ = digits
    cfg = tiny_cfg("digits", *OPTIONS, "tracking.enabled=true")
    data = root / "data" / "train"
    train.run(cfg, data, tmp_path / "gen-000", generation=0, seed=0)
    sample.run(cfg, tmp_path / "gen-000", tmp_path / "samples", n=64, seed=0, generation=0)
    mix.run(cfg, data, tmp_path / "samples", 1.0, tmp_path / "train_set", generation=1)
    train.run(
        cfg, tmp_path / "train_set", tmp_path / "gen-001", generation=1, seed=0, lam=1.0, init=tmp_path / "gen-000"
    )
    client = MlflowClient(tracking_uri)
    run_id = client.search_runs(
        [client.get_experiment_by_name("tiny-digits").experiment_id], filter_string="tags.`autophagy.role` = 'chain'"
    )[0].info.run_id
    expected = TICKS + [1600 + images for images in TICKS_GEN1]
    logs = read_records(tmp_path / "gen-000.train_log.jsonl") + read_records(tmp_path / "gen-001.train_log.jsonl")
    assert [r["generation"] for r in logs] == [0] * len(TICKS) + [1] * len(TICKS_GEN1)
    for key, field in (("train/loss", "loss"), ("train/lr", "lr"), ("train/images_per_s", "images_per_s")):
        steps, values = losses_and_steps(client, run_id, key)
        assert steps == expected, key
        assert values == pytest.approx([r[field] for r in logs], rel=1e-12), key
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [0, 1]  # per generation, as before
    train.run(
        cfg, tmp_path / "train_set", tmp_path / "gen-001b", generation=1, seed=0, lam=1.0, init=tmp_path / "gen-000"
    )
    assert losses_and_steps(client, run_id, "train/loss")[0] == expected


def test_sample_and_evaluate_show_progress_lines(digits, tmp_path, capfd, monkeypatch):
    """Off a terminal: a line per interval (0 s: every batch), none for a step shorter than the
    interval (default 30 s) or with AUTOPHAGY_PROGRESS=0."""
    cfg, root, _ = digits
    model = root / "gen-000" / "model"
    monkeypatch.setenv("AUTOPHAGY_PROGRESS_SECONDS", "0")
    sample.run(cfg, model, tmp_path / "samples", n=600, seed=0, generation=0)  # sample.batch_size=256: 3 batches
    evaluate.run(
        cfg, tmp_path / "samples", {"train": root / "data" / "train"}, tmp_path / "m.json", None, generation=0, seed=0
    )
    lines = capfd.readouterr().err.splitlines()
    drawn = [line for line in lines if line.startswith("sample gen 0 (seed 0):")]
    assert [re.search(r"(\d+)% (\S+)/600 sample", line).groups() for line in drawn] == [
        ("43", "256"),
        ("85", "512"),
        ("100", "600"),
    ]
    assert all(re.search(r"\[\d\d:\d\d<\d\d:\d\d, .*sample/s\]$", line) for line in drawn)
    assert any(line.startswith("evaluate gen 0 (seed 0): samples (raw): 100% 200/200 item") for line in lines)
    assert any(line.startswith("evaluate: train reference (raw): 100% 64/64 item") for line in lines)

    for quiet in ({"AUTOPHAGY_PROGRESS_SECONDS": ""}, {"AUTOPHAGY_PROGRESS_SECONDS": "0", "AUTOPHAGY_PROGRESS": "0"}):
        for name, value in quiet.items():
            monkeypatch.setenv(name, value)
        sample.run(cfg, model, tmp_path / f"quiet-{len(quiet)}", n=600, seed=0, generation=0)
        assert capfd.readouterr().err == "", quiet


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("AUTOPHAGY_PROGRESS", "yes", "AUTOPHAGY_PROGRESS must be one of auto, bar, lines, 0, got 'yes'"),
        ("AUTOPHAGY_PROGRESS_SECONDS", "-1", "AUTOPHAGY_PROGRESS_SECONDS must be a number of seconds >= 0, got '-1'"),
        (
            "AUTOPHAGY_PROGRESS_SECONDS",
            "soon",
            "AUTOPHAGY_PROGRESS_SECONDS must be a number of seconds >= 0, got 'soon'",
        ),
    ],
)
def test_bad_progress_settings_are_one_line_errors(digits, tmp_path, capsys, monkeypatch, name, value, message):
    from autophagy.cli import EXIT_USER_ERROR, main

    _, root, _ = digits
    monkeypatch.setenv(name, value)
    options = [arg for option in (*PRESETS["digits"], *OPTIONS) for arg in ("-S", option)]
    code = main(
        [
            "sample",
            *options,
            "--model",
            str(root / "gen-000" / "model"),
            "--out",
            str(tmp_path / "s"),
            "--n",
            "10",
            "--generation",
            "0",
        ]
    )
    assert (code, capsys.readouterr().err) == (EXIT_USER_ERROR, f"autophagy: error: {message}\n")
    assert not (tmp_path / "s").exists()


def test_a_forced_bar_is_tqdm(capfd, monkeypatch):
    """AUTOPHAGY_PROGRESS=bar draws tqdm's bar even off a terminal (redrawn in place with \\r)."""
    from autophagy.progress import Progress

    monkeypatch.setenv("AUTOPHAGY_PROGRESS", "bar")
    with Progress("drawing", 4, "sample") as progress:
        for _ in range(4):
            progress.update(1)
    err = capfd.readouterr().err
    assert "\rdrawing: 100%|" in err and "sample/s]" in err
