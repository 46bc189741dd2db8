"""kfp-backend-check from pytest: a pipeline compiled and validated by the KFP 2.17.0 API server's own code.

``binary()`` builds the Go program in ``tests/kfp_backend`` once per session with
``.ci/build_kfp_backend.sh`` (cached outside the repository, keyed by the sources' hash: a warm cache
answers at once; a cold build downloads Go modules and compiles the KFP backend's dependencies, minutes on
two cores). ``check(pipeline_yaml, parameters, **options)`` runs it and returns its JSON report::

    from tests.kfp_backend_check import check   # or `from kfp_backend_check import check` inside tests/

    report = check(Path("pipeline.yaml"), {"msg": "hi"}, iterations=4, runtime_parameter_bytes=1024)
    assert report["valid"], report["error"]
    assert report["workflow_bytes"] < report["limits"]["etcd_object_bytes"]

Options are the program's flags with ``_`` for ``-`` (``run_name``, ``namespace``, ``service_account``,
``workflow_out``, ``status_out``, ``iterations``, ``artifact_uri_bytes``, ``artifact_metadata_bytes``,
``runtime_parameter_bytes``, ``pipeline_root``, ``run_id``, ``cache_disabled=True``, ``server_env`` as a
mapping or a list of ``KEY=VALUE``). The report gains ``exit_code``: 0 when the backend accepts the run,
1 when it refuses it (``error`` holds the backend's text, ``stage`` where: ``template``, ``run_workflow``
or ``validate``). A usage error (exit 2) raises ``KfpBackendUsageError``.

The KFP source comes from a git mirror of kubeflow/pipelines (the Go module proxy does not serve the 2.17.0
commit; see the build script). Where there is none, the build exits with status 3 and ``binary()`` raises
``KfpBackendUnavailable``, which tests may turn into a skip (``AUTOPHAGY_REQUIRE_KFP_BACKEND=1`` makes
``skip_if_unavailable`` fail instead).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / ".ci" / "build_kfp_backend.sh"
#: A cold build: ~1 GB of Go modules and the KFP backend's dependency graph compiled on two cores.
BUILD_TIMEOUT_S = 3600
RUN_TIMEOUT_S = 600
#: The build script's exit status when the KFP source is not on this machine.
SOURCE_UNAVAILABLE = 3


class KfpBackendBuildError(RuntimeError):
    """The build script failed; the message holds its output."""


class KfpBackendUnavailable(KfpBackendBuildError):
    """The KFP 2.17.0 source is not available on this machine (no git mirror, no cached tree)."""


class KfpBackendUsageError(ValueError):
    """kfp-backend-check refused its arguments (exit status 2)."""


_binary: Path | None = None
_failure: KfpBackendBuildError | None = None


def binary() -> Path:
    """The kfp-backend-check executable, built (or found in the cache) once per session."""
    global _binary, _failure
    if _binary is not None:
        return _binary
    if _failure is not None:
        raise _failure
    try:
        proc = subprocess.run(["bash", str(BUILD_SCRIPT)], cwd=ROOT, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        _failure = KfpBackendBuildError(
            f"{BUILD_SCRIPT} did not finish in {BUILD_TIMEOUT_S} s\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}")
        raise _failure from None
    output = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == SOURCE_UNAVAILABLE:
        _failure = KfpBackendUnavailable(f"{BUILD_SCRIPT}: the KFP 2.17.0 source is not available\n{output}")
        raise _failure
    if proc.returncode != 0 or not lines:
        _failure = KfpBackendBuildError(f"{BUILD_SCRIPT} failed (exit status {proc.returncode})\n{output}")
        raise _failure
    path = Path(lines[-1])
    if not (path.is_file() and os.access(path, os.X_OK)):
        _failure = KfpBackendBuildError(f"{BUILD_SCRIPT} printed {path}, which is not an executable\n{output}")
        raise _failure
    _binary = path
    return path


def skip_if_unavailable() -> Path:
    """``binary()``, skipping the calling test where the KFP source is missing (not on a build failure)."""
    import pytest

    try:
        return binary()
    except KfpBackendUnavailable as exc:
        if os.environ.get("AUTOPHAGY_REQUIRE_KFP_BACKEND") == "1":
            raise
        pytest.skip(str(exc).splitlines()[0] + " (set KFP_SOURCE_MIRROR; see .ci/build_kfp_backend.sh)")


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def _flags(options: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                args += [flag, f"{k}={v}"]
        elif isinstance(value, (list, tuple)):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value)]
    return args


def check(pipeline_yaml: Path, parameters: dict | None = None, **options: Any) -> dict:
    """Run kfp-backend-check on a compiled pipeline; its JSON report plus ``exit_code`` (0 valid, 1 refused)."""
    exe = binary()
    with tempfile.TemporaryDirectory(prefix="kfp-backend-check-") as tmp:
        args = [str(exe), "--pipeline", str(pipeline_yaml)]
        if parameters is not None:
            params_file = Path(tmp) / "parameters.json"
            params_file.write_text(json.dumps(parameters))
            args += ["--parameters", str(params_file)]
        args += _flags(options)
        proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    if proc.returncode == 2:
        raise KfpBackendUsageError(f"kfp-backend-check {' '.join(args[1:])}: {proc.stderr.strip()}")
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"kfp-backend-check exited with {proc.returncode}\n"
                           f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    report = json.loads(proc.stdout)
    report["exit_code"] = proc.returncode
    return report
