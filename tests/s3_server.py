"""A real S3 server on loopback for the tests: SeaweedFS (Apache-2.0), built from source, cached.

``weed`` is built by ``.ci/build_s3_server.sh`` from ``tests/s3_server/go.mod`` (the
github.com/seaweedfs/seaweedfs pseudo-version of commit 7506e5f91cd6, SeaweedFS 4.53, from the Go module
proxy) into ``~/.cache/autophagy/tools/seaweedfs-<version>-<key>/weed``. A cold build (empty GOMODCACHE and
GOCACHE, Go 1.26.8, two cores) took 544 s (9 min 4 s wall): GOMODCACHE +2.1 GB (474 MB of it module zips),
GOCACHE +1.8 GB, the binary 164 MB (stripped, CGO off). A warm cache answers in ~0.02 s. The server starts in
~11 s (it accepts writes once the master has elected itself and the filer has joined) and stops in ~2 s.

Use from a test module (tests/ is on ``sys.path``)::

    from s3_server import s3_server  # noqa: F401   (registers the session-scoped fixture)

    def test_something(s3_server, tmp_path):
        s3 = s3_server.client()                       # a boto3 S3 client with the test identity
        s3.put_object(Bucket=s3_server.bucket, Key="a/b.txt", Body=b"hi")
        assert s3_server.objects("a/") == {"a/b.txt": 2}
        env = {**os.environ, **s3_server.env()}        # AWS_* + MLFLOW_S3_ENDPOINT_URL for subprocesses

``s3_server`` yields an :class:`S3Server`: ``endpoint_url``, ``access_key``, ``secret_key``, ``bucket``,
``region``, ``env()``, ``client()``, ``objects(prefix)``, ``delete(key)``, ``new_bucket(name)``, plus
``denied_access_key``/``denied_secret_key`` (an identity the server knows but grants nothing), ``command``
(the server's command line) and ``log_text()``. One server per pytest process, however many modules import
the fixture (they share it; it stops when the last one tears down). Tests that delete or overwrite objects
should work under a prefix of their own or in a ``new_bucket``.

The server is ``weed server`` (master + volume server + filer + S3 gateway in one process) on free loopback
ports in a temporary folder, with an S3 identity config of two generated key pairs (no real credentials).
Where ``weed`` cannot be built (no Go, a failed build) the tests that use the fixture are skipped with the
reason; with ``AUTOPHAGY_REQUIRE_S3_SERVER=1`` (CI) they fail instead. A server that was built but does not
start is always a failure.

``weed server`` also leaves gRPC Unix sockets at ``/tmp/seaweedfs-<service>-grpc-<port>.sock`` (a fixed
path in its source); the fixture removes the four named by its ports when it stops the server.

A cold build in the fixture (~9 min here) may run past pytest's 900 s default timeout on a slower machine:
modules that use the fixture may set ``pytestmark = pytest.mark.timeout(S3_TEST_TIMEOUT_S)`` (CI builds
before pytest runs).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import built_tools
import pytest

ROOT = built_tools.ROOT
#: A cold build downloads and compiles ~4 GB of Go modules and build cache on two cores (544 s measured).
BUILD_SCRIPT = ROOT / ".ci" / "build_s3_server.sh"
#: A per-test timeout that leaves room for a cold build in the first test that uses the fixture.
S3_TEST_TIMEOUT_S = built_tools.BUILD_TIMEOUT_S + 900
START_TIMEOUT_S = 120
#: SIGTERM, then SIGKILL after this: a graceful stop takes ~15 s (the filer retries flushing its metadata log
#: to the volume server, which stops first), and the data is thrown away anyway.
STOP_GRACE_S = 2
REGION = "us-east-1"
DEFAULT_BUCKET = "autophagy-test"
REQUIRE_ENV = "AUTOPHAGY_REQUIRE_S3_SERVER"


class S3ServerStartError(RuntimeError):
    """``weed server`` did not come up: the message holds its log."""


def binary() -> Path:
    """The ``weed`` executable, built (or found in the cache) once per process."""
    return built_tools.executable(built_tools.built(BUILD_SCRIPT))


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _key(prefix: str, n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


@dataclass
class S3Server:
    """A running SeaweedFS with its S3 gateway on loopback (see the module docstring)."""

    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    denied_access_key: str
    denied_secret_key: str
    command: list[str]
    folder: Path
    process: subprocess.Popen | None = field(default=None, repr=False)
    grpc_ports: list[int] = field(default_factory=list, repr=False)

    # --- clients ---------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment for boto3, DVC (s3fs) and MLflow in a subprocess: credentials, region, endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,  # boto3/botocore >= 1.31 read it
            "AWS_EC2_METADATA_DISABLED": "true",  # never probe an instance-metadata service
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client for this server (the test identity unless keys are given; no retries)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=10, read_timeout=60
            ),
        )

    # --- bucket contents -------------------------------------------------------------------------------
    def objects(self, prefix: str = "", bucket: str | None = None) -> dict[str, int]:
        """``{key: size}`` of every object under ``prefix``."""
        out: dict[str, int] = {}
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket or self.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def delete(self, key: str, bucket: str | None = None) -> None:
        self.client().delete_object(Bucket=bucket or self.bucket, Key=key)

    def new_bucket(self, name: str) -> str:
        """Create bucket ``name`` (for tests that need one of their own); returns the name."""
        self.client().create_bucket(Bucket=name)
        return name

    def log_text(self) -> str:
        log = self.folder / "weed.log"
        return log.read_text(errors="replace") if log.exists() else ""

    # --- lifecycle -------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after STOP_GRACE_S) and remove its files."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=30)
        # `weed server` puts its gRPC Unix sockets at a fixed /tmp/seaweedfs-<service>-grpc-<port>.sock
        # (weed/command/server.go) and leaves them behind: remove the ones named by our ports.
        for service, port in zip(("master", "volume", "filer", "s3"), self.grpc_ports):
            sock = Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock")
            try:
                if stat.S_ISSOCK(sock.lstat().st_mode):
                    sock.unlink()
            except FileNotFoundError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


def start(weed: Path, bucket: str = DEFAULT_BUCKET) -> S3Server:
    """Start ``weed server`` with the S3 gateway in a new temporary folder; wait until it stores objects."""
    folder = Path(tempfile.mkdtemp(prefix="autophagy-s3-"))
    (folder / "data").mkdir()
    (folder / "conf").mkdir()
    access_key, secret_key = _key("AKTEST", 14), secrets.token_urlsafe(30)
    denied_access_key, denied_secret_key = _key("AKDENY", 14), secrets.token_urlsafe(30)
    identities = {
        "identities": [
            {
                "name": "autophagy-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "no-permissions",
                "credentials": [{"accessKey": denied_access_key, "secretKey": denied_secret_key}],
                "actions": [],
            },
        ]
    }
    config = folder / "s3.json"
    config.write_text(json.dumps(identities, indent=1))
    config.chmod(0o600)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    command = [
        str(weed),
        "-logtostderr",
        f"-config_dir={folder / 'conf'}",
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={folder / 'data'}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=100",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-s3.localSocket={folder / 's3.sock'}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(folder), TMPDIR=str(folder))
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        bucket=bucket,
        region=REGION,
        denied_access_key=denied_access_key,
        denied_secret_key=denied_secret_key,
        command=command,
        folder=folder,
        grpc_ports=[master_grpc, volume_grpc, filer_grpc, s3_grpc],
    )
    with open(folder / "weed.log", "wb") as log:
        server.process = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: S3Server) -> None:
    """The S3 port answers, the bucket exists and an object can be written and deleted."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: str = ""

    def check_alive() -> None:
        if server.process.poll() is not None:
            problem = f"weed server exited with status {server.process.returncode} while starting"
        elif time.monotonic() > deadline:
            problem = f"weed server did not serve S3 in {START_TIMEOUT_S} s (last: {last})"
        else:
            return
        raise S3ServerStartError(
            f"{problem}\n$ {' '.join(server.command)}\n--- log (tail) ---\n{server.log_text()[-8000:]}"
        )

    while True:  # the gateway answers HTTP (an anonymous request gets 403 AccessDenied)
        check_alive()
        try:
            urllib.request.urlopen(server.endpoint_url + "/", timeout=2).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.2)

    from botocore.exceptions import BotoCoreError, ClientError

    s3 = server.client()
    while True:  # the filer and a volume server are registered with the master
        check_alive()
        try:
            try:
                s3.create_bucket(Bucket=server.bucket)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            s3.put_object(Bucket=server.bucket, Key=".ready-probe", Body=b"ok")
            s3.delete_object(Bucket=server.bucket, Key=".ready-probe")
            return
        except (ClientError, BotoCoreError) as exc:
            last = repr(exc)
        time.sleep(0.3)


# --- one server per process, shared by every module that imports the fixture ----------------------------
_lock = threading.Lock()
_shared: S3Server | None = None
_users = 0


def _acquire() -> S3Server:
    global _shared, _users
    with _lock:
        if _shared is None:
            _shared = start(binary())
            atexit.register(_shared.stop)  # should pytest end without tearing the fixture down
        _users += 1
        return _shared


def _release() -> None:
    global _shared, _users
    with _lock:
        _users -= 1
        if _users == 0 and _shared is not None:
            _shared.stop()
            _shared = None


@pytest.fixture(scope="session")
def s3_server():
    """A running SeaweedFS S3 server on loopback (skipped when ``weed`` cannot be built, unless
    ``AUTOPHAGY_REQUIRE_S3_SERVER=1``)."""
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"boto3 is not installed ({exc}); it is in pyproject.toml's `server` extra")
        pytest.skip(f"boto3 is not installed ({exc}): pip install -e '.[server]'")
    built_tools.executable(built_tools.built_or_skip(BUILD_SCRIPT, REQUIRE_ENV))
    server = _acquire()
    try:
        yield server
    finally:
        _release()
