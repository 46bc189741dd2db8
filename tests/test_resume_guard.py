"""Resuming a run directory: other options are refused (naming them) unless --redo-changed or
--new-root; one process per seed (a flock with a clear message, never stale); leftovers of killed
runs cleared; experiment names that are not one folder refused; OS errors as one line."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autophagy import cli, run_lock
from autophagy.atomic import LEFTOVER
from autophagy.layout import RunLayout

BIN = Path(sys.executable).parent
NAME = "guard"
OPTIONS = [
    f"name={NAME}",
    "data.source=gaussian",
    "data.dim=2",
    "data.n_train=20",
    "data.n_test=100",
    "model.family=gaussian",
    "evaluate.features=raw",
    "sample.n_eval=20",
    "loop.lambdas=[0, inf]",
    "loop.seeds=[0]",
    "loop.generations=2",
    "tracking.enabled=false",
]


def run(capsys, parent: Path, *sets: str, flags: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """``autophagy run`` in this process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main(
        ["run", "--root", str(parent), "--no-report", *flags, *sum((["-S", s] for s in [*OPTIONS, *sets]), [])]
    )
    out, err = capsys.readouterr()
    return code, out, err


def tree(parent: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(parent)): p.read_bytes()
        for p in sorted(parent.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def metrics(parent: Path, relative: str) -> dict:
    data = json.loads((parent / NAME / relative / "metrics.json").read_text())
    data.pop("evaluate_seconds")
    return data


@pytest.fixture
def finished(capsys, tmp_path):
    code, _, err = run(capsys, tmp_path)
    assert code == 0, err
    return tmp_path


# ------------------------------------------------------------------ changed options


def test_changed_options_are_refused_naming_them_and_nothing_is_touched(capsys, finished):
    before = tree(finished)
    code, out, err = run(capsys, finished, "train.budget_kimg=2", "sample.n_eval=30")
    assert code == 2 and out.startswith("estimated training cost: ") and out.count("\n") == 1  # the cost line only
    assert err.count("\n") == 1 and err.startswith(f"autophagy: error: {finished / NAME}: ")
    assert "train.budget_kimg 100.0 -> 2.0" in err and "sample.n_eval 20 -> 30" in err
    assert "--redo-changed" in err and f"--new-root to start in {finished / NAME}-2" in err
    assert tree(finished) == before  # config.json included: it still describes what was trained


def test_options_that_change_no_output_are_not_refused(capsys, finished):
    code, out, err = run(
        capsys,
        finished,
        "loop.generations=3",
        "loop.lambdas=[0, 0.5, inf]",
        "tracking.log_samples=false",
        "loop.stop_on_collapse=true",
    )
    assert code == 0, err
    assert out.count("complete, skipped") == 1 + 2 * 2  # generation 0 and generations 1-2 of both chains
    assert (finished / NAME / "lam-0.5/seed-0/gen-003/metrics.json").is_file()


def test_redo_changed_redoes_only_what_the_change_affects(capsys, finished, tmp_path_factory):
    models = {p: p.stat().st_ino for p in (finished / NAME).rglob("model.safetensors")}
    code, out, err = run(capsys, finished, "evaluate.k=2", flags=("--redo-changed",))
    assert code == 0, err
    assert "complete, skipped" not in out
    assert {p: p.stat().st_ino for p in (finished / NAME).rglob("model.safetensors")} == models  # not retrained
    fresh = tmp_path_factory.mktemp("fresh")
    assert run(capsys, fresh, "evaluate.k=2")[0] == 0
    for relative in ("seed-0/gen-000", "lam-0/seed-0/gen-002", "lam-inf/seed-0/gen-002"):
        assert metrics(finished, relative) == metrics(fresh, relative)


def test_redo_changed_after_a_training_option_retrains_every_generation(capsys, finished, tmp_path_factory):
    code, _, err = run(capsys, finished, "model.estimator=unbiased", flags=("--redo-changed",))
    assert code == 0, err
    fresh = tmp_path_factory.mktemp("fresh")
    assert run(capsys, fresh, "model.estimator=unbiased")[0] == 0
    for relative in ("seed-0/gen-000", "lam-0/seed-0/gen-001", "lam-inf/seed-0/gen-002"):
        assert metrics(finished, relative) == metrics(fresh, relative)
        assert (
            json.loads((finished / NAME / relative / "model" / "config.json").read_text())["model"]["estimator"]
            == "unbiased"
        )


def test_new_root_starts_in_the_next_free_directory(capsys, finished):
    before = tree(finished)
    code, out, err = run(capsys, finished, "train.budget_kimg=2", flags=("--new-root",))
    assert code == 0, err
    assert f"run directory: {finished / NAME}-2" in out
    assert (finished / f"{NAME}-2" / "lam-inf/seed-0/gen-002/metrics.json").is_file()
    assert f"\nrun directory: {finished / NAME}-3\n" in run(capsys, finished, flags=("--new-root",))[1]
    assert {k: v for k, v in tree(finished).items() if k.startswith(f"{NAME}/")} == before


def test_outputs_without_a_record_are_not_trusted(capsys, finished):
    record = finished / NAME / "lam-inf/seed-0/gen-001/generation.json"
    record.unlink()  # as an autophagy without records left it
    code, _, err = run(capsys, finished)
    assert code == 2 and "1 directory (e.g. " in err and "no record of the options" in err
    code, out, err = run(capsys, finished, flags=("--redo-changed",))
    assert code == 0, err
    assert "gen-001 seed=0 lambda=inf: complete, skipped" not in out and record.is_file()


def test_the_dvc_stage_redoes_what_changed_instead_of_refusing(capsys, finished):
    """`autophagy generation` runs when DVC decides (params or inputs changed): it redoes, never refuses."""
    capsys.readouterr()
    code = cli.main(
        [
            "generation",
            "--root",
            str(finished / NAME),
            "--seed",
            "0",
            "--generation",
            "0",
            *sum((["-S", s] for s in [*OPTIONS, "evaluate.k=2"]), []),
        ]
    )
    assert code == 0, capsys.readouterr().err
    record = json.loads((finished / NAME / "seed-0/gen-000/generation.json").read_text())
    assert record["options"]["evaluate"]["evaluate"]["k"] == 2 and record["done"][-1] == "evaluate"


# ------------------------------------------------------------------ locks


def test_a_second_run_on_a_held_seed_fails_at_once_naming_the_holder(capsys, tmp_path):
    layout = RunLayout(tmp_path / NAME)
    with run_lock.hold(layout.seed_lock(0), "seed 0"):
        code, _, err = run(capsys, tmp_path)
        assert code == 2 and err.count("\n") == 1
        assert f"{tmp_path / NAME} (seed 0) is in use by pid {os.getpid()} on host {socket.gethostname()}" in err
        assert not (tmp_path / NAME / "data").exists()  # refused before any work
        code, _, err = run(capsys, tmp_path, "loop.seeds=[1]")  # another seed shares the directory
        assert code == 0, err
    assert run(capsys, tmp_path)[0] == 0


def test_the_shared_data_is_not_replaced_while_another_seed_uses_it(capsys, finished):
    layout = RunLayout(finished / NAME)
    with run_lock.hold(layout.seed_lock(1), "seed 1"):
        code, _, err = run(capsys, finished, "data.n_train=30", flags=("--redo-changed",))
    assert code == 2 and f"its data or feature extractor must be made again, but pid {os.getpid()}" in err


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    lock = tmp_path / "seed-0" / ".lock"
    holder = (
        "import os, signal, sys; from pathlib import Path; from autophagy.run_lock import hold\n"
        "with hold(Path(sys.argv[1]), 'x'):\n    os.kill(os.getpid(), signal.SIGKILL)"
    )
    killed = subprocess.run([sys.executable, "-c", holder, str(lock)], timeout=60)
    assert killed.returncode == -signal.SIGKILL and lock.is_file()
    assert not run_lock.in_use(lock)
    with run_lock.hold(lock, "x"):
        assert run_lock.in_use(lock)


# ------------------------------------------------------------------ leftovers of killed runs


def test_leftovers_of_dead_processes_are_cleared_and_live_ones_kept(capsys, finished):
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        root = finished / NAME
        litter = [
            root / f".config.json.{dead.pid}-ab12cd34.tmp",
            root / f"data/.train.{dead.pid}-x9y8z7w6.staging",
            root / f"seed-0/gen-000/.model.{dead.pid}-k2j3h4g5.staging",
            root / f"lam-inf/seed-0/gen-002/.samples.old-{dead.pid}",
        ]
        kept = root / f"lam-0/seed-0/gen-001/.metrics.json.{live.pid}-qw12er34.tmp"
        for path in litter[1:]:
            path.mkdir()
            (path / "half.npy").write_bytes(b"\x93NUMPY")
        litter[0].write_text("{")
        kept.write_text("{")
        code, out, err = run(capsys, finished)
        assert code == 0, err
        assert "removed 4 leftover(s) of killed runs" in out
        assert not any(path.exists() for path in litter) and kept.is_file()
        assert out.count("complete, skipped") == 5  # the outputs themselves are untouched
    finally:
        live.kill()


# ------------------------------------------------------------------ names and OS errors


@pytest.mark.parametrize("name", ["..", ".", "a/b", ".hidden", "sp ace", "é"])
def test_names_that_are_not_one_folder_are_refused(capsys, tmp_path, name):
    parent = tmp_path / "runs"
    parent.mkdir()
    capsys.readouterr()
    code = cli.main(["run", "--root", str(parent), "-S", f"name={name}", "-S", "tracking.enabled=false"])
    err = capsys.readouterr().err
    assert code == 2 and "name must be one folder name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"] and not any(parent.iterdir())


def test_a_root_below_a_file_is_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, tmp_path / "file" / "runs")
    assert code == 2
    assert err == f"autophagy: error: {tmp_path / 'file' / 'runs' / NAME}: Not a directory (ENOTDIR)\n"


@pytest.mark.parametrize(
    "limit, sets, failing",
    [
        (2048, (), "seed-0/gen-000/generation.json"),  # a plain write() fails: the OS error, given the file's name
        (8192, ("data.n_test=2000",), "data/test"),  # inside numpy, whose error has no errno: diagnosed
    ],
)
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(tmp_path, limit, sets, failing):
    """RLIMIT_FSIZE makes every write past ``limit`` bytes fail with EFBIG, as a full disk fails with ENOSPC."""

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(BIN / "autophagy"), "run", "--root", str(tmp_path), *sum((["-S", s] for s in [*OPTIONS, *sets]), [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"autophagy: error: {tmp_path / NAME / failing}: File too large (EFBIG)\n"
    assert not (tmp_path / NAME / failing).exists()  # the write failed as a whole
    assert not [p for p in tmp_path.rglob("*") if LEFTOVER.fullmatch(p.name)]
    for path in tmp_path.rglob("*.json"):
        json.loads(path.read_text())  # every file there is whole
