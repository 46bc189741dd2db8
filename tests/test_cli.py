"""The ``autophagy`` command line: help, ``config``, one-line errors with exit code 2, and the
stages chained through the CLI.

``--help``, ``config`` and one error of each kind run as real subprocesses of the venv's console
script. Everything else runs in-process through ``autophagy.cli.main``, the console script's entry
point (same parsing, same error handling): a subprocess per command would spend most of the
suite's time importing torch on the two shared cores.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from autophagy.cli import build_parser, main
from autophagy.config import load_config
from autophagy.data.dataset import MANIFEST, NewShard, open_dataset, write_dataset

COMMANDS = {
    "config",
    "prepare",
    "features",
    "train",
    "sample",
    "mix",
    "evaluate",
    "generation",
    "run",
    "report",
    "dvc-params",
}

TINY = [
    "-S",
    "data.n_train=64",
    "-S",
    "data.n_test=32",
    "-S",
    "model.model_channels=32",
    "-S",
    "model.num_blocks=1",
    "-S",
    "model.num_steps=4",
    "-S",
    "train.gen0_budget_kimg=1",
    "-S",
    "train.budget_kimg=0.5",
    "-S",
    "train.batch_size=32",
    "-S",
    "train.device=cpu",
    "-S",
    "sample.n_eval=100",
    "-S",
    "evaluate.features=raw",
    "-S",
    "tracking.enabled=false",
]


def cli(exe, *args, cwd=None):
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("autophagy: error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_help(autophagy_exe):
    top = cli(autophagy_exe, "--help")
    assert top.returncode == 0 and "usage: autophagy" in top.stdout
    for command in COMMANDS:
        assert command in top.stdout
    parser_commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert COMMANDS <= parser_commands
    for command in sorted(parser_commands):
        result = cli(autophagy_exe, command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert f"usage: autophagy {command}" in result.stdout and result.stderr == ""


def test_no_command_is_a_usage_error(autophagy_exe):
    result = cli(autophagy_exe)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_config_prints_yaml_that_loads_back(autophagy_exe, tmp_path):
    result = cli(autophagy_exe, "config", "-S", "loop.lambdas=[0,inf]", "-S", "train.budget_kimg=7")
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["loop"]["lambdas"] == [0.0, "inf"] and data["train"]["budget_kimg"] == 7.0
    (tmp_path / "cfg.yaml").write_text(result.stdout)
    assert load_config(tmp_path / "cfg.yaml") == load_config(None, ["loop.lambdas=[0,inf]", "train.budget_kimg=7"])
    again = cli(autophagy_exe, "config", "--config", tmp_path / "cfg.yaml")
    assert again.stdout == result.stdout


@pytest.fixture
def real_dir(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 1), dtype=np.uint8)
    write_dataset(tmp_path / "real", [NewShard(origin={"type": "real"}, array=rows, name="real-train.npy")])
    return tmp_path / "real"


def run_main(capsys, *argv):
    """``autophagy ARGV`` in this process: exit code, stdout, stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_user_errors_in_a_real_process(autophagy_exe, real_dir, tmp_path):
    """What a user sees: exit code 2 and one line on stderr, no traceback (one case per kind of error;
    the variants run in-process below)."""
    cases = [
        (["mix", "--real", real_dir, "--lam", "-1", "--out", tmp_path / "m", "--generation", "1"], ["lambda", "-1"]),
        (
            ["mix", "--real", tmp_path / "nowhere", "--lam", "0", "--out", tmp_path / "m", "--generation", "1"],
            ["dataset directory not found", "nowhere"],
        ),
    ]
    for argv, needles in cases:
        result = cli(autophagy_exe, *argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stdout == ""
        assert_one_line_error(result.stderr, *needles)
    assert not (tmp_path / "m").exists()


def test_config_errors_do_not_import_torch():
    """Reporting a typo must not cost a torch import (seconds on these machines): the error path
    only classifies the exception."""
    import sys

    script = (
        "import sys\n"
        "from autophagy.cli import main\n"
        "code = main(['config', '-S', 'train.bogus=1'])\n"
        "assert code == 2, code\n"
        "heavy = sorted(m for m in ('torch', 'mlflow', 'sklearn') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported {result.stdout.strip()} to report a config error"


@pytest.mark.parametrize(
    "lam, needle", [("-1", "-1"), ("nan", "nan"), ("-0.5", "-0.5"), ("lots", "lots"), ("-inf", "-inf")]
)
def test_bad_lambda(capsys, real_dir, tmp_path, lam, needle):
    code, out, err = run_main(
        capsys, "mix", "--real", real_dir, f"--lam={lam}", "--out", tmp_path / "mixed", "--generation", "1"
    )
    assert code == 2 and out == ""
    assert_one_line_error(err, "lambda", needle)
    assert not (tmp_path / "mixed").exists()


def test_bad_config(capsys, tmp_path):
    code, _, err = run_main(capsys, "config", "-S", "train.bogus=1")
    assert code == 2
    assert_one_line_error(err, "train.bogus")
    code, _, err = run_main(capsys, "config", "-S", "loop.lambdas=[0,-2]")
    assert code == 2
    assert_one_line_error(err, "loop.lambdas")
    (tmp_path / "bad.yaml").write_text("train: {lr: [1, 2]}\n")
    code, _, err = run_main(capsys, "config", "--config", tmp_path / "bad.yaml")
    assert code == 2
    assert_one_line_error(err, "train.lr")
    code, _, err = run_main(capsys, "config", "--config", tmp_path / "missing.yaml")
    assert code == 2
    assert_one_line_error(err, "missing.yaml")
    code, _, err = run_main(capsys, "config", "-S", "model.family=flow")  # flow on images
    assert code == 2
    assert_one_line_error(err, "model.family=flow", "data.source=digits")


def test_missing_dataset_dir(capsys, tmp_path):
    code, _, err = run_main(
        capsys, "mix", "--real", tmp_path / "nowhere", "--lam", "0", "--out", tmp_path / "m", "--generation", "1"
    )
    assert code == 2
    assert_one_line_error(err, "dataset directory not found", "nowhere")


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest", "missing-shard"])
def test_corrupted_shard(capsys, real_dir, tmp_path, damage):
    shard = real_dir / "real-train.npy"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[-1] ^= 0x01
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[:-10]))
    elif damage == "manifest":
        (real_dir / MANIFEST).write_text("{")
    else:
        shard.unlink()
    code, _, err = run_main(
        capsys, "mix", "--real", real_dir, "--lam", "0", "--out", tmp_path / "m", "--generation", "1"
    )
    assert code == 2
    assert_one_line_error(err, "real")
    assert {"flip": "sha256", "truncate": "truncated", "manifest": "corrupted", "missing-shard": "missing"}[
        damage
    ] in err
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ models and the chained stages


@pytest.fixture
def gaussian_checkpoint(tmp_path):
    from autophagy.config import GaussianModelConfig
    from autophagy.models.checkpoint import save_checkpoint
    from autophagy.models.gaussian import GaussianModel

    save_checkpoint(GaussianModel(GaussianModelConfig(), (2,)), tmp_path / "gauss", {"generation": 0})
    return tmp_path / "gauss"


def test_wrong_checkpoint_family(capsys, gaussian_checkpoint, tmp_path):
    code, out, err = run_main(
        capsys, "sample", "--model", gaussian_checkpoint, "--out", tmp_path / "s", "--n", 5, "--generation", 0
    )
    assert code == 2 and out == ""
    assert_one_line_error(err, "'gaussian'", "'edm'")


def test_sample_count_must_be_positive(capsys, gaussian_checkpoint, tmp_path):
    code, _, err = run_main(
        capsys, "sample", "--model", gaussian_checkpoint, "--out", tmp_path / "s", "--n", 0, "--generation", 0, *TINY
    )
    assert code == 2
    assert_one_line_error(err, "n")


def test_nan_loss_is_a_clear_error(capsys, tmp_path):
    code, _, err = run_main(capsys, "prepare", "--out", tmp_path / "data", *TINY)
    assert code == 0, err
    code, _, err = run_main(
        capsys,
        "train",
        "--train-set",
        tmp_path / "data" / "train",
        "--out",
        tmp_path / "model",
        "--generation",
        0,
        *TINY,
        "-S",
        "train.lr=1e30",
    )
    assert code == 2
    assert_one_line_error(err, "diverged", "train.lr")
    assert not (tmp_path / "model").exists()


def test_stages_chained_through_the_cli(capsys, tmp_path):
    root = tmp_path / "run"

    def ok(*argv):
        code, out, err = run_main(capsys, *argv, *TINY)
        assert code == 0, err
        return out

    prepared = json.loads(ok("prepare", "--out", root / "data"))
    assert prepared["n_train"] == 64 and prepared["kind"] == "image"
    trained = json.loads(
        ok(
            "train",
            "--train-set",
            root / "data" / "train",
            "--out",
            root / "seed-0" / "gen-000" / "model",
            "--generation",
            0,
        )
    )
    assert trained["train_kimg"] == pytest.approx(1.024)
    sampled = json.loads(
        ok(
            "sample",
            "--model",
            root / "seed-0" / "gen-000" / "model",
            "--out",
            root / "seed-0" / "gen-000" / "samples",
            "--n",
            100,
            "--generation",
            0,
        )
    )
    assert sampled["sample_count"] == 100
    gen1 = root / "lam-0.5" / "seed-0" / "gen-001"
    mixed = json.loads(
        ok(
            "mix",
            "--real",
            root / "data" / "train",
            "--synthetic",
            root / "seed-0" / "gen-000" / "samples",
            "--lam",
            "0.5",
            "--out",
            gen1 / "train_set",
            "--generation",
            1,
        )
    )
    assert mixed == {"train_set_real": 64, "train_set_synthetic": 32}
    ok(
        "train",
        "--train-set",
        gen1 / "train_set",
        "--out",
        gen1 / "model",
        "--generation",
        1,
        "--lam",
        "0.5",
        "--init",
        root / "seed-0" / "gen-000" / "model",
    )
    ok("sample", "--model", gen1 / "model", "--out", gen1 / "samples", "--n", 100, "--generation", 1)
    metrics = json.loads(
        ok(
            "evaluate",
            "--samples",
            gen1 / "samples",
            "--reference",
            f"train={root / 'data' / 'train'}",
            "--reference",
            f"test={root / 'data' / 'test'}",
            "--out",
            gen1 / "metrics.json",
            "--generation",
            1,
            "--lam",
            "0.5",
            "--grid",
            gen1 / "samples.png",
        )
    )
    assert json.loads((gen1 / "metrics.json").read_text()) == metrics
    assert {"fd_train", "precision_train", "recall_train", "fd_test"} <= set(metrics) and metrics["n_samples"] == 100
    for directory in ("train_set", "model", "samples"):
        assert (gen1 / directory).is_dir()
    assert open_dataset(gen1 / "train_set").counts_by_origin() == {"real": 64, "synthetic": 32}
    assert open_dataset(gen1 / "samples").rows == 100
    assert (gen1 / "samples.png").is_file()
    assert json.loads((gen1 / "model" / "config.json").read_text())["lambda"] == "0.5"


def test_the_command_exits_without_teardown_but_after_threads_hooks_and_flushed_output(tmp_path):
    """console_main ends the process after CPython's own first steps of finalization: a non-daemon
    thread finishes, atexit hooks run, piped output arrives whole, and the exit code is main's."""
    script = (
        "import atexit, sys, threading, time\n"
        "from autophagy.cli import console_main\n"
        "atexit.register(lambda: print('hook ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))).start()\n"
        "sys.argv = ['autophagy', *sys.argv[1:]]\n"
        "console_main()\n"
    )
    listed = subprocess.run([sys.executable, "-c", script, "config", "--list"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    # the thread may print before the listing ends on a loaded machine; it must end before the hook runs
    assert lines[-1] == "hook ran" and lines.count("thread done") == 1 and lines.index("thread done") < len(lines) - 1
    assert any(line.startswith("tracking.log_samples") for line in lines)
    refused = subprocess.run(
        [sys.executable, "-c", script, "run", "--config", str(tmp_path / "nope.yaml")], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "config file not found" in refused.stderr
    assert refused.stdout.splitlines()[-1] == "hook ran"
