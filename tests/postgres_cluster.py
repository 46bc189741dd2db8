"""A throwaway PostgreSQL cluster on loopback for the tests that run MLflow on PostgreSQL.

The server binaries come from Debian's packages (``.ci/run`` installs them when missing).
PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` system user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path:
    """The folder of the newest installed PostgreSQL's server binaries."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    assert candidates, "PostgreSQL server binaries are missing: apt-get install postgresql (.ci/run does)"
    return candidates[-1].parent


def as_postgres_user(cmd: list[str]) -> list[str]:
    """``cmd`` as the ``postgres`` system user when the tests run as root, else unchanged."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass(frozen=True)
class Cluster:
    port: int  #: TCP port on 127.0.0.1 (password authentication, scram-sha-256)
    sockets: Path  #: Unix socket folder (trusted: local connections need no password)
    root: Path  #: scratch folder holding the data directory, the sockets and the server log


@contextmanager
def postgres_cluster(superuser: str, password: str, prefix: str = "autophagy-pg-") -> Iterator[Cluster]:
    """``initdb`` + ``pg_ctl start`` a fresh cluster whose superuser is ``superuser``; stopped and deleted after."""
    bindir = pg_bin()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    data, sockets, pwfile = root / "data", root / "sock", root / "pwfile"
    sockets.mkdir()
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        for path in (root, sockets, pwfile):
            shutil.chown(path, "postgres")
    port = free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", superuser, "--pwfile", str(pwfile)]
    initdb += ["--auth-host=scram-sha-256", "--auth-local=trust"]
    subprocess.run(as_postgres_user(initdb), check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    start = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start"]
    subprocess.run(as_postgres_user(start), check=True, capture_output=True, timeout=120)
    try:
        yield Cluster(port=port, sockets=sockets, root=root)
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
        subprocess.run(as_postgres_user(stop), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
