"""Programs the tests build from source with a script of ``.ci/`` (Go: the KFP backend check,
kube-apiserver + etcd, SeaweedFS), once per test process.

Each script prints the path of what it built (or found in its cache, keyed by the sources) on the
last line of its output. :func:`built` runs a script once and remembers the path or the failure;
:func:`built_or_skip` turns a failure into a skip that says why, unless the environment variable
that the CI sets (``AUTOPHAGY_REQUIRE_...=1``) requires the program, then into a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A cold build: Go modules downloaded and a large dependency graph compiled on two cores.
BUILD_TIMEOUT_S = 3600


class ToolUnavailable(RuntimeError):
    """A build script failed, or found nothing to build from; the message holds the end of its output."""


_results: dict[Path, Path | ToolUnavailable] = {}


def built(script: Path) -> Path:
    """The path ``script`` prints on its last line, the script run once per process."""
    if script not in _results:
        _results[script] = _run(script)
    result = _results[script]
    if isinstance(result, ToolUnavailable):
        raise result
    return result


def _run(script: Path) -> Path | ToolUnavailable:
    try:
        proc = subprocess.run(
            ["bash", str(script)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return ToolUnavailable(f"{script} did not finish in {BUILD_TIMEOUT_S} s")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return ToolUnavailable(f"{script} failed (exit status {proc.returncode}):\n{proc.stderr.strip()[-4000:]}")
    path = Path(lines[-1])
    if not path.exists():
        return ToolUnavailable(f"{script} printed {path}, which does not exist")
    return path


def built_or_skip(script: Path, require_env: str) -> Path:
    """:func:`built`, or a pytest skip saying why; a failure when ``$require_env`` is ``1`` (CI)."""
    import pytest

    try:
        return built(script)
    except ToolUnavailable as exc:
        if os.environ.get(require_env) == "1":
            raise
        pytest.skip(str(exc).splitlines()[0])


def executable(path: Path) -> Path:
    """``path``, checked to be an executable file (raises :class:`ToolUnavailable` otherwise)."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolUnavailable(f"{path} is not an executable")
    return path
