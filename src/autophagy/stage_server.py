"""The stage server: one process that has imported what a stage needs forks one child per command.

Every DVC stage is its own ``autophagy`` process, and the default experiment's are short: a
generation stage on the 2-core reference machine computes for ~4 s and, before that, imports for
~4 s (torch 1.2 s; ``torch._dynamo`` 1.4 s, which the first ``torch.optim`` optimizer imports;
mlflow with its SQL store 1.7 s). Imports were ~45 % of a default ``dvc repro``, and torch with
``torch._dynamo`` alone would keep them near 30 % however lazily the rest were imported. So a
stage command (:data:`SERVED`) is handed to a server that imported all of it once
(:func:`preload`): the server forks a child, the child takes the command's standard streams,
working directory, environment, umask and arguments, runs :func:`autophagy.cli.main` and exits as
:func:`autophagy.cli.console_main` does. The ``autophagy`` process that asked (the client) only
relays: it forwards SIGINT, SIGTERM and SIGHUP to the child and exits with the child's code, or
by the same signal.

* **When.** For :data:`SERVED` commands on Linux that DVC runs as a stage (it sets ``DVC_STAGE``);
  ``AUTOPHAGY_STAGE_SERVER=1`` serves them outside DVC too, ``0`` never. Elsewhere (a command
  typed by hand, a Kubeflow task, ``torchrun``, ``autophagy run``) nothing changes. With no server
  running, the command runs in its own process as before and starts a server in the background
  for the commands after it.
* **Which server.** One per :func:`server_key`: the interpreter, ``sys.path`` (after the script's
  own directory), the modification
  times and sizes of autophagy's source files and of the ``sys.path`` directories (a ``pip
  install`` changes them), and the environment variables read when torch, mlflow or the Hugging
  Face libraries are imported. Editing a source file or installing a package means a new server;
  the old one exits after :data:`IDLE_SECONDS` without a command.
* **Where.** A Unix socket in ``$XDG_RUNTIME_DIR/autophagy`` (else ``/tmp/autophagy-<uid>``), a
  directory only its owner can enter; the server's output goes to a ``.log`` beside the socket.
* **Safety of fork.** The server runs no torch or BLAS computation and never initialises CUDA
  (it refuses to serve if an import did); a child starts as a fresh process that has already
  imported its modules. A child whose client disappears (killed) is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

SWITCH = "AUTOPHAGY_STAGE_SERVER"
IDLE_ENV = "AUTOPHAGY_STAGE_SERVER_IDLE"  # seconds a server waits for a command before it exits
SERVED = frozenset({"prepare", "features", "generation", "mix", "train", "sample", "evaluate", "report"})
IDLE_SECONDS = 120.0
CONNECT_TIMEOUT = 5.0
# environment variables read when the interpreter starts or a preloaded library is imported (not
# those read later, e.g. MLFLOW_TRACKING_URI or CUDA_VISIBLE_DEVICES: the child has the client's)
IMPORT_TIME_ENV = (
    "HF_", "KMP_", "LANG", "LC_", "LD_", "MKL_", "MLFLOW_DISABLE_TELEMETRY", "OMP_", "OPENBLAS_", "PYTHON",
    "PYTORCH_", "TMPDIR", "TORCH", "TRANSFORMERS_", "TRITON_",
)  # fmt: skip
_STREAMS = (0, 1, 2)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def served_command(argv: Sequence[str]) -> str | None:
    """The subcommand of ``autophagy`` arguments when it is one the server runs, else None."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return command if command in SERVED else None


def run_through_server(argv: Sequence[str]) -> int | None:
    """``autophagy argv`` run by the stage server: its exit code (or this process ends by the
    child's signal); None when the command is to run in this process: not a stage command, not a
    DVC stage (unless ``AUTOPHAGY_STAGE_SERVER=1``), switched off, not Linux, or no server yet (one
    is then started for the next command)."""
    switch = os.environ.get(SWITCH, "auto")
    wanted = switch == "1" or (switch == "auto" and bool(os.environ.get("DVC_STAGE")))
    if not wanted or served_command(argv) is None or not sys.platform.startswith("linux"):
        return None
    try:
        path = socket_path(server_key())
    except OSError as err:  # e.g. a socket directory that is not private: not used
        print(f"autophagy: warning: no stage server: {err}", file=sys.stderr)
        return None
    conn = _connect(path)
    if conn is None:
        if not path.with_suffix(".failed").exists():  # its log says why
            start_server(path)
        return None
    with conn:
        return _relay(conn, list(argv))


def server_directory() -> Path:
    """Where the servers' sockets, locks and logs are: ``$XDG_RUNTIME_DIR/autophagy``, else
    ``/tmp/autophagy-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "autophagy" if runtime else Path("/tmp") / f"autophagy-{os.getuid()}"


def socket_path(key: str) -> Path:
    """The socket of the server with ``key``, in a directory only this user can enter."""
    base = server_directory()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = base.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{base}: the stage server's directory must belong to you and be private (mode 700)")
    return base / f"{key}.sock"


def server_key(package: Path | None = None) -> str:
    """A digest of what a preloaded process depends on (module docstring), with the sources of
    ``package`` (default: autophagy's): 20 hex digits."""
    paths = sys.path[1:]  # sys.path[0] is the running script's directory or ""
    digest = hashlib.sha256(f"{sys.executable}\0{sys.version}\0{paths!r}".encode())
    for entry in paths:
        with contextlib.suppress(OSError):
            info = os.stat(entry)
            digest.update(f"{entry}\0{info.st_mtime_ns}\0".encode())
    package = package or Path(__file__).resolve().parent
    for source in sorted(package.rglob("*.py")):
        info = source.stat()
        digest.update(f"{source.relative_to(package)}\0{info.st_mtime_ns}\0{info.st_size}\0".encode())
    for name in sorted(os.environ):
        if name.startswith(IMPORT_TIME_ENV) and name != SWITCH:
            digest.update(f"{name}={os.environ[name]}\0".encode())
    return digest.hexdigest()[:20]


def start_server(path: Path) -> None:
    """Start the server for ``path`` in the background, detached from this process and terminal;
    its log (a line per command it runs, and why it stopped if it failed) starts anew."""
    with open(path.with_suffix(".log"), "wb") as log:
        subprocess.Popen(
            [sys.executable, "-m", "autophagy.stage_server", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",  # holds no command's directory
            start_new_session=True,
            close_fds=True,
        )


# ------------------------------------------------------------------ the client


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(CONNECT_TIMEOUT)
    try:
        conn.connect(str(path))
    except OSError:  # no server, a stale socket, or one not yet listening
        conn.close()
        return None
    conn.settimeout(None)
    return conn


def _relay(conn: socket.socket, argv: list[str]) -> int | None:
    """Send the command with this process's standard streams; relay signals; the child's exit."""
    frame = _frame({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask()})
    child: list[int] = []  # the child's pid, once the server has sent it
    pending: list[int] = []  # signals that came before: forwarded as soon as it is known

    def forward(sig: int, _frame) -> None:
        if child:
            _kill(child[0], sig)
        else:
            pending.append(sig)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        try:
            socket.send_fds(conn, [frame[:4]], list(_STREAMS))  # the length, with the streams
            conn.sendall(frame[4:])
            child.append(pid := _receive(conn)["pid"])
        except (OSError, ValueError, KeyError):
            return None  # the server went away before it forked: run here
        for sig in pending:
            _kill(pid, sig)
        result = _receive(conn)
    except (OSError, ValueError):
        print(f"autophagy: error: the stage server ended before the command (process {pid}) did", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "signal" in result:  # end as the child ended, so the caller sees the same signal
        sys.stdout.flush()
        if result["signal"] != signal.SIGKILL:  # SIGKILL's action cannot be set, nor caught
            signal.signal(result["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), result["signal"])
    return int(result["exit"])


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack("!I", len(body)) + body


def _receive(conn: socket.socket) -> dict:
    """One length-prefixed JSON message; ValueError when the peer closed the connection."""
    header = _exactly(conn, 4)
    return json.loads(_exactly(conn, struct.unpack("!I", header)[0]))


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("connection closed")
        data += chunk
    return data


# ------------------------------------------------------------------ the server


def preload() -> None:
    """Import what the stage commands use: torch, ``torch._dynamo`` (what a ``torch.optim``
    optimizer imports when it is made), the loop with its stages, mlflow's client and SQL store."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401
    from mlflow import MlflowClient  # noqa: F401

    import autophagy.loop  # noqa: F401
    import autophagy.report  # noqa: F401
    import autophagy.stages.features  # noqa: F401
    import autophagy.stages.prepare  # noqa: F401
    import autophagy.tracking  # noqa: F401

    driver = any("libcuda.so" in line for line in Path("/proc/self/maps").read_text().splitlines())
    if torch.cuda.is_initialized() or driver:
        raise RuntimeError("an import initialised CUDA (libcuda is loaded): a forked child could not use it")


def serve(path: Path, idle_seconds: float = IDLE_SECONDS) -> None:
    """Serve the commands sent to ``path`` until ``idle_seconds`` pass without one running, or a
    SIGTERM (its running commands are then sent SIGTERM, and their exits to their clients)."""
    lock = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 - held for the server's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"{_now()} process {os.getpid()}: another server for this key runs; exiting", flush=True)
        return
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")  # who holds it: `kill $(cat KEY.lock)` stops the server
    lock.flush()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # listening before the imports: a command that comes meanwhile waits for them, not imports twice
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)  # a socket left by a server that was killed
    listener.bind(str(path))
    listener.listen(16)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as autophagy.cli.main sets them
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        preload()
    except BaseException:
        path.with_suffix(".failed").touch()  # clients stop starting servers for this key
        path.unlink(missing_ok=True)  # the waiting commands' connections close: they run alone
        raise
    children: dict[int, socket.socket] = {}
    wakeup, wakeup_write = os.pipe()  # a child's exit (SIGCHLD) wakes the select below
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    last = time.monotonic()
    try:
        while children or time.monotonic() - last < idle_seconds:
            readable, _, _ = select.select([listener, wakeup, *children.values()], [], [], 1.0)
            for ready in readable:
                if ready is listener:
                    _start_child(listener, children, (wakeup, wakeup_write, lock.fileno()))
                elif ready == wakeup:
                    os.read(wakeup, 4096)
                else:  # a client's end closed before its child's exit: the client is gone
                    pid = next(pid for pid, conn in children.items() if conn is ready)
                    _kill(pid, signal.SIGKILL)
            _reap(children)
            if children:
                last = time.monotonic()
    finally:  # the lock is still held: the path is this server's
        path.unlink(missing_ok=True)
        listener.close()
        for pid in children:
            _kill(pid, signal.SIGTERM)
        while children:
            _reap(children, block=True)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _exit_on_signal(sig: int, _frame) -> None:
    raise SystemExit(128 + sig)


def _start_child(listener: socket.socket, children: dict[int, socket.socket], server_fds: tuple[int, ...]) -> None:
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        header, fds, _, _ = socket.recv_fds(conn, 4, len(_STREAMS))
        if len(fds) != len(_STREAMS):
            raise ValueError(f"{len(fds)} file descriptors, not {len(_STREAMS)}")
        header += _exactly(conn, 4 - len(header))
        request = json.loads(_exactly(conn, struct.unpack("!I", header)[0]))
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    if _closed(conn):  # the client gave up while the server was starting: nothing to run
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    for stream in (sys.stdout, sys.stderr):  # nothing of the server's may reach the client's streams
        stream.flush()
    # a signal the client forwards at once waits until the child can take it (not in fork hooks)
    signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in server_fds:  # the wake-up pipe and the lock (a child must not hold it)
            os.close(fd)
        listener.close()
        for other in children.values():
            other.close()
        conn.close()
        _run_child(request, fds)  # never returns
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    for fd in fds:
        os.close(fd)
    print(f"{_now()} process {pid}: autophagy {' '.join(request['argv'])}", flush=True)
    try:
        conn.sendall(_frame({"pid": pid}))
    except OSError:
        _kill(pid, signal.SIGKILL)
    children[pid] = conn


def _closed(conn: socket.socket) -> bool:
    """Whether the peer has closed ``conn`` (it sends nothing more after its request)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _reap(children: dict[int, socket.socket], block: bool = False) -> None:
    """Send each finished child's exit code (or signal) to its client (``block``: wait for each)."""
    for pid in list(children):
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if not done:
            continue
        conn = children.pop(pid)
        if os.WIFSIGNALED(status):
            result = {"signal": os.WTERMSIG(status)}
        else:
            result = {"exit": os.waitstatus_to_exitcode(status)}
        with contextlib.suppress(OSError):
            conn.sendall(_frame(result))
        conn.close()


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the client's command, run it, and exit with its code."""
    code = 1
    try:
        for sig in _FORWARDED:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        for fd, stream in zip(fds, _STREAMS, strict=True):
            os.dup2(fd, stream)
            os.close(fd)
        _reopen_standard_streams()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(request["umask"])
        sys.argv = ["autophagy", *request["argv"]]
        import numpy
        import torch

        # the global generators as a fresh process has them (Python's random reseeds itself at fork)
        numpy.random.seed()
        torch.default_generator.manual_seed(torch.default_generator.initial_seed())
        from autophagy import cli

        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)  # a Ctrl-C that came meanwhile: here
        code = cli.main(request["argv"])
    except KeyboardInterrupt:  # a SIGINT forwarded before autophagy.cli.main caught it itself
        print("autophagy: interrupted", file=sys.stderr)
        code = 130
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - printed as an unhandled exception would be
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        from autophagy.cli import finish_process

        finish_process(code)


def _reopen_standard_streams() -> None:
    """``sys.stdin/stdout/stderr`` anew on fds 0-2 (now the client's), buffered as Python buffers a
    terminal or a pipe."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        tty = os.isatty(fd)
        errors = "backslashreplace" if fd == 2 else None
        stream = open(fd, mode, buffering=-1, errors=errors, closefd=False)  # noqa: SIM115
        if mode == "w":
            stream.reconfigure(line_buffering=tty or fd == 2)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(os.environ.get(IDLE_ENV, IDLE_SECONDS)))
