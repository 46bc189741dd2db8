"""Locks on a run directory, so that two processes never work on the same outputs at once.

A lock is an advisory ``flock`` on a small file, which records its holder (pid, host, command,
start time) for the message another process gets. The kernel releases a ``flock`` when its
holder dies, however it dies, so a killed run never leaves a stale lock behind. The lock files
of a run directory are :func:`autophagy.layout.RunLayout.lock` (its shared parts: real data,
feature extractor, ``config.json``) and :func:`autophagy.layout.RunLayout.seed_lock` (one seed's
generations), so that one ``autophagy run`` per seed can share a run directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class RunRootBusy(RuntimeError):
    """Another live process holds the lock on (part of) a run directory."""


def holder(path: Path) -> str:
    """Who holds (or last held) the lock file ``path``: ``pid 42 on host h (autophagy run ..., since 12:00:01)``."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (
        f"pid {info.get('pid')} on host {info.get('host')} ({info.get('command', '?')}, since {info.get('since', '?')})"
    )


@contextlib.contextmanager
def hold(path: Path, what: str, wait: bool = False, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the exclusive lock ``path`` for the ``with`` block. Busy: raise :class:`RunRootBusy`
    naming ``what`` and the holder, or with ``wait`` say whom it waits for and wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise RunRootBusy(
                    f"{what} is in use by {holder(path)}; wait for it to end, or use another "
                    "--root (autophagy run --new-root picks a new one)"
                ) from None
            log(f"waiting for {holder(path)}, which holds {what}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:160],
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
            + "\n"
        )
        handle.flush()
        yield


def in_use(path: Path) -> bool:
    """Whether another process holds the lock file ``path`` now (a probe: it takes and drops it)."""
    if not path.is_file():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
