"""The Inception weights are pinned by hash: the image's default, its download step, and the check
before ``torch.jit.load`` runs the TorchScript archive (``AUTOPHAGY_INCEPTION_SHA256``).

The download step is the Dockerfile's own RUN command, run by ``sh`` against a loopback server
(its /opt path moved under tmp_path); the real weights cannot be downloaded here.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from autophagy.cli import _is_user_error
from autophagy.metrics import build_extractor, features
from autophagy.metrics.features import (
    INCEPTION_FILE,
    INCEPTION_SHA256,
    INCEPTION_SHA256_ENV,
    WeightsHashMismatch,
    verify_inception_weights,
)

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def test_the_image_pins_clean_fids_hash_by_default():
    text = DOCKERFILE.read_text()
    assert re.search(rf"^ARG INCEPTION_SHA256={INCEPTION_SHA256}$", text, re.MULTILINE)
    assert re.search(r"^\s+AUTOPHAGY_INCEPTION_SHA256=\$\{INCEPTION_SHA256\}$", text, re.MULTILINE)
    assert re.fullmatch(r"[0-9a-f]{64}", INCEPTION_SHA256)


def _weights_step() -> str:
    """The Dockerfile's RUN command that fetches the weights, for sh."""
    lines = DOCKERFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("RUN mkdir -p /opt/autophagy/weights"))
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    return "\n".join(lines[start : end + 1])[len("RUN ") :]


@pytest.fixture
def weights_server():
    """A loopback server of one fake weights file: (url, its bytes, the request paths)."""
    body = b"not really inception " * 100
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{INCEPTION_FILE}", body, requests
    finally:
        server.shutdown()
        server.server_close()


def _run_step(tmp_path: Path, url: str, sha256: str) -> tuple[subprocess.CompletedProcess, Path]:
    weights = tmp_path / "weights"
    target = weights / INCEPTION_FILE
    script = _weights_step().replace("/opt/autophagy/weights", str(weights))
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "FETCH_INCEPTION": "1",
        "INCEPTION_URL": url,
        "INCEPTION_SHA256": sha256,
        "AUTOPHAGY_INCEPTION_WEIGHTS": str(target),
    }
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, env=env), target


def test_the_image_step_keeps_only_weights_with_the_pinned_hash(tmp_path, weights_server):
    url, body, requests = weights_server
    good, target = _run_step(tmp_path / "good", url, hashlib.sha256(body).hexdigest())
    assert good.returncode == 0, good.stderr
    assert target.read_bytes() == body and hashlib.sha256(body).hexdigest() in good.stdout  # recorded in the build log
    bad, target = _run_step(tmp_path / "bad", url, INCEPTION_SHA256)
    assert bad.returncode != 0 and "FAILED" in bad.stdout + bad.stderr
    assert not target.exists()


def test_the_image_step_needs_a_hash_to_fetch(tmp_path, weights_server):
    url, _, requests = weights_server
    result, target = _run_step(tmp_path, url, "")
    assert result.returncode != 0 and "FETCH_INCEPTION=1 needs INCEPTION_SHA256" in result.stderr
    assert requests == [] and not target.exists()


@pytest.fixture
def weights_file(tmp_path, monkeypatch):
    path = tmp_path / INCEPTION_FILE
    path.write_bytes(b"torchscript archive stand-in")
    monkeypatch.setattr(features, "_DIGESTS", {})
    return path


def test_weights_with_another_hash_are_refused_before_loading(weights_file, monkeypatch):
    monkeypatch.setenv(INCEPTION_SHA256_ENV, INCEPTION_SHA256)
    actual = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    with pytest.raises(WeightsHashMismatch) as err:
        build_extractor("inception", weights_path=weights_file)  # not a TorchScript file: loading would fail otherwise
    message = str(err.value)
    assert str(weights_file) in message and actual in message and INCEPTION_SHA256 in message
    assert INCEPTION_SHA256_ENV in message and _is_user_error(err.value)  # the CLI prints it as one line


def test_the_pinned_hash_passes_and_an_empty_pin_checks_nothing(weights_file, monkeypatch):
    actual = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    monkeypatch.setenv(INCEPTION_SHA256_ENV, actual.upper())
    assert verify_inception_weights(weights_file) == actual
    monkeypatch.setenv(INCEPTION_SHA256_ENV, "")
    weights_file.write_bytes(b"other weights")
    assert verify_inception_weights(weights_file) == hashlib.sha256(b"other weights").hexdigest()
    monkeypatch.setenv(INCEPTION_SHA256_ENV, "abc")
    with pytest.raises(WeightsHashMismatch, match=r"AUTOPHAGY_INCEPTION_SHA256='abc' is not a sha256"):
        verify_inception_weights(weights_file)


def test_the_hash_is_computed_once_per_file_version(weights_file, monkeypatch):
    """Cached by path, size, mtime and inode: the same file is not hashed again (a change that
    keeps all four is not noticed; any real rewrite changes the mtime)."""
    original = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    monkeypatch.setenv(INCEPTION_SHA256_ENV, original)
    assert verify_inception_weights(weights_file) == original
    stat = weights_file.stat()
    with open(weights_file, "r+b") as handle:  # same size, same inode, mtime restored
        handle.write(b"T")
    os.utime(weights_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert verify_inception_weights(weights_file) == original  # the cached verdict
    os.utime(weights_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(WeightsHashMismatch):
        verify_inception_weights(weights_file)  # a new mtime: hashed again, and refused
