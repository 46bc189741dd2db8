"""The stage server: stage commands forked from a process that imported torch and mlflow once.

Real processes throughout: the ``autophagy`` console script as DVC runs it (``DVC_STAGE`` set),
a real server started by the first command, real signals. Each test has its own socket directory
(``XDG_RUNTIME_DIR``) and stops its servers at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from autophagy import stage_server

SERVER_WAIT = 60.0  # seconds for a server's imports on a busy 2-core machine


@pytest.fixture
def runtime_dir(monkeypatch):
    """A short private ``XDG_RUNTIME_DIR`` (a socket path must stay under ~100 bytes); the servers
    started in it are stopped afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ap-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(root))
    monkeypatch.setenv(stage_server.IDLE_ENV, "60")
    monkeypatch.setenv("DVC_STAGE", "test")
    monkeypatch.delenv(stage_server.SWITCH, raising=False)
    yield root / "autophagy"
    for lock in (root / "autophagy").glob("*.lock"):
        pid = lock.read_text().strip()
        if pid:
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass


def run(exe, *args, cwd, **kwargs):
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, **kwargs)


def wait_for_server(directory: Path) -> Path:
    """The socket of the server in ``directory`` once it accepts connections."""
    deadline = time.monotonic() + SERVER_WAIT
    while time.monotonic() < deadline:
        for path in directory.glob("*.sock"):
            conn = stage_server._connect(path)
            if conn is not None:
                conn.close()  # the server reads no request from it and closes its end
                return path
        time.sleep(0.2)
    logs = "\n".join(log.read_text() for log in directory.glob("*.log"))
    raise AssertionError(f"no stage server after {SERVER_WAIT} s; its log:\n{logs}")


def served_lines(directory: Path) -> list[str]:
    return [line for log in directory.glob("*.log") for line in log.read_text().splitlines() if "process" in line]


def test_which_commands_are_served(monkeypatch):
    assert stage_server.served_command(["--debug", "generation", "--seed", "0"]) == "generation"
    assert stage_server.served_command(["run"]) is None and stage_server.served_command(["--help"]) is None
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.delenv(stage_server.SWITCH, raising=False)
    assert stage_server.run_through_server(["prepare", "--out", "x"]) is None  # outside DVC: this process
    monkeypatch.setenv(stage_server.SWITCH, "0")
    monkeypatch.setenv("DVC_STAGE", "prepare")
    assert stage_server.run_through_server(["prepare", "--out", "x"]) is None  # switched off


def test_the_key_follows_sources_and_import_time_environment(monkeypatch, tmp_path):
    """A source file touched or an import-time variable changed: another server; a variable read
    later (the tracking URI) is the child's own business."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    key = stage_server.server_key(package)
    assert stage_server.server_key(package) == key
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert stage_server.server_key(package) == key
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = stage_server.server_key(package)
    assert threads != key
    os.utime(package / "a.py", ns=(0, 123))
    assert stage_server.server_key(package) != threads


def test_a_stage_command_runs_in_a_child_of_the_server_as_it_runs_alone(autophagy_exe, runtime_dir, tmp_path):
    """The first command runs alone and starts the server; the next ones run in its children with
    the caller's working directory, environment and streams: the same data set and output as the
    command run alone, exit codes kept (2 for a usage error)."""
    alone = run(autophagy_exe, "prepare", "--out", "alone", cwd=tmp_path, env=os.environ | {"DVC_STAGE": ""})
    assert alone.returncode == 0, alone.stderr
    first = run(autophagy_exe, "prepare", "--out", "first", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    wait_for_server(runtime_dir)
    env = os.environ | {"AUTOPHAGY_PROGRESS": "0"}
    served = run(autophagy_exe, "prepare", "--out", "served", cwd=tmp_path, env=env)
    assert served.returncode == 0, served.stderr
    assert any("autophagy prepare --out served" in line for line in served_lines(runtime_dir))
    assert json.loads(served.stdout.replace("served", "alone")) == json.loads(alone.stdout)
    for split in ("train", "test"):
        assert (tmp_path / "served" / split / "dataset.json").read_bytes() == (
            tmp_path / "alone" / split / "dataset.json"
        ).read_bytes()
    usage = run(autophagy_exe, "prepare", cwd=tmp_path)
    assert usage.returncode == 2 and "the following arguments are required: --out" in usage.stderr
    assert sum("autophagy prepare" in line for line in served_lines(runtime_dir)) == 2


def _train_forever(autophagy_exe, tmp_path) -> list[str]:
    """A served command that runs until it is stopped: training with a huge budget."""
    prepared = run(autophagy_exe, "prepare", "--out", "data", cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    return [autophagy_exe, "train", "--train-set", "data/train", "--out", "model", "--generation", "0",
            "-S", "train.gen0_budget_kimg=100000"]  # fmt: skip


def _child_pid(directory: Path, needle: str) -> int:
    deadline = time.monotonic() + SERVER_WAIT
    while time.monotonic() < deadline:
        for line in served_lines(directory):
            if needle in line:
                return int(line.split("process ")[1].split(":")[0])
        time.sleep(0.1)
    raise AssertionError(f"no served command with {needle!r}")


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_to_the_command_reaches_its_child(autophagy_exe, runtime_dir, tmp_path, sig):
    """SIGINT and SIGTERM are forwarded (the command ends as it would alone: 130 for an
    interrupt, killed by SIGTERM); a command killed outright (SIGKILL) leaves no child running."""
    command = _train_forever(autophagy_exe, tmp_path)
    wait_for_server(runtime_dir)
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = _child_pid(runtime_dir, "autophagy train")
    time.sleep(1.0)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == {signal.SIGINT: 130, signal.SIGTERM: -signal.SIGTERM, signal.SIGKILL: -9}[sig]
    if sig == signal.SIGINT:
        assert "autophagy: interrupted" in stderr
    assert _gone(child)


def test_an_interrupt_while_the_server_imports_reaches_the_child_once_it_runs(autophagy_exe, runtime_dir, tmp_path):
    """A command that reaches a server still importing waits for it; a Ctrl-C meanwhile is kept
    and forwarded as soon as the child exists: the command ends as an interrupted one (130)."""
    command = _train_forever(autophagy_exe, tmp_path)  # the first command: runs alone, starts the server
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "autophagy: interrupted" in stderr, stderr
    child = _child_pid(runtime_dir, "autophagy train")
    assert _gone(child)


def test_a_command_killed_by_a_signal_ends_its_caller_by_that_signal(autophagy_exe, runtime_dir, tmp_path):
    """A stage that dies by SIGKILL (the crash tests' kill points) is seen by DVC as killed."""
    first = run(autophagy_exe, "prepare", "--out", "data", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    wait_for_server(runtime_dir)
    env = os.environ | {"AUTOPHAGY_KILL_AT": "*"}
    killed = run(autophagy_exe, "train", "--train-set", "data/train", "--out", "model", "--generation", "0",
                 cwd=tmp_path, env=env)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert any("autophagy train" in line for line in served_lines(runtime_dir))


def test_a_dead_server_leaves_the_command_to_run_alone_and_is_replaced(autophagy_exe, runtime_dir, tmp_path):
    """A server killed outright leaves its socket behind: the next command runs alone (nothing
    answers) and starts a new server, which takes the stale socket's place."""
    assert run(autophagy_exe, "prepare", "--out", "a", cwd=tmp_path).returncode == 0
    socket = wait_for_server(runtime_dir)
    old = int(socket.with_suffix(".lock").read_text())
    os.kill(old, signal.SIGKILL)
    assert _gone(old) and socket.exists()
    assert run(autophagy_exe, "prepare", "--out", "b", cwd=tmp_path).returncode == 0
    deadline = time.monotonic() + SERVER_WAIT
    while time.monotonic() < deadline and socket.with_suffix(".lock").read_text().strip() in ("", str(old)):
        time.sleep(0.2)
    assert int(socket.with_suffix(".lock").read_text()) != old, socket.with_suffix(".log").read_text()
    wait_for_server(runtime_dir)
    assert run(autophagy_exe, "prepare", "--out", "c", cwd=tmp_path).returncode == 0
    assert any("autophagy prepare --out c" in line for line in served_lines(runtime_dir))


def test_a_server_that_failed_to_start_is_not_started_again(autophagy_exe, runtime_dir, tmp_path):
    """Its ``.failed`` marker (written when its imports raised; the log says why) keeps every later
    command running alone instead of starting a server per command."""
    runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    script = "from autophagy import stage_server; print(stage_server.server_key())"
    key = subprocess.run(
        [Path(autophagy_exe).with_name("python"), "-c", script],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (runtime_dir / f"{key}.failed").touch()
    assert run(autophagy_exe, "prepare", "--out", "a", cwd=tmp_path).returncode == 0
    time.sleep(2.0)
    assert not list(runtime_dir.glob("*.sock")) and not list(runtime_dir.glob("*.log"))
