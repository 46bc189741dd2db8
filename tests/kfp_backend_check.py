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
commit; see the build script). Where there is none, the build fails and ``binary()`` raises
:class:`built_tools.ToolUnavailable`, which ``skip_if_unavailable`` turns into a skip
(``AUTOPHAGY_REQUIRE_KFP_BACKEND=1`` makes it fail instead).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import built_tools

BUILD_SCRIPT = built_tools.ROOT / ".ci" / "build_kfp_backend.sh"
RUN_TIMEOUT_S = 600


class KfpBackendUsageError(ValueError):
    """kfp-backend-check refused its arguments (exit status 2)."""


def binary() -> Path:
    """The kfp-backend-check executable, built (or found in the cache) once per session."""
    return built_tools.executable(built_tools.built(BUILD_SCRIPT))


def skip_if_unavailable() -> Path:
    """``binary()``, or a skip saying why it cannot be built (a failure under AUTOPHAGY_REQUIRE_KFP_BACKEND=1)."""
    return built_tools.executable(built_tools.built_or_skip(BUILD_SCRIPT, "AUTOPHAGY_REQUIRE_KFP_BACKEND"))


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
        proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if proc.returncode == 2:
        raise KfpBackendUsageError(f"kfp-backend-check {' '.join(args[1:])}: {proc.stderr.strip()}")
    if proc.returncode not in (0, 1):
        raise RuntimeError(
            f"kfp-backend-check exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    report = json.loads(proc.stdout)
    report["exit_code"] = proc.returncode
    return report
