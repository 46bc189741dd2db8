"""A real MLflow tracking server on a real PostgreSQL, on loopback, started with the same
command and flags as the Kubernetes Deployment in k8s/base (read from the rendered manifest).

A tiny loop logs to it over HTTP; the runs, metrics and artifacts are read back through the
REST API. PostgreSQL runs as a throwaway cluster (tests/postgres_cluster.py).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from k8s_helpers import mlflow_auth_settings, mlflow_server_args_from_manifest, mlflow_server_env_from_manifest
from postgres_cluster import free_port, postgres_cluster

BIN = Path(sys.executable).parent
PASSWORD = "s3cret:@/pw"  # characters that would break a URI: the password travels in PGPASSWORD
#: Basic-auth header of MLflow's admin user (the server runs the Deployment's basic-auth app).
ADMIN_AUTH: dict[str, str] = {}


@pytest.fixture(scope="module")
def postgres():
    with postgres_cluster(superuser="mlflow", password=PASSWORD) as cluster:
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        for database in ("mlflow", "mlflow_auth"):  # runs; MLflow's users (k8s/base/mlflow-auth/basic_auth.ini)
            subprocess.run(
                ["createdb", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "mlflow", database],
                check=True,
                env=env,
                capture_output=True,
                timeout=60,
            )
        yield {"port": cluster.port}


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    artifacts = tmp_path_factory.mktemp("artifacts")
    port = free_port()
    args = mlflow_server_args_from_manifest(
        variables={
            "POSTGRES_USER": "mlflow",
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(postgres["port"]),
            "POSTGRES_DB": "mlflow",
            "ARTIFACTS_DESTINATION": str(artifacts),
            "ALLOWED_HOSTS": f"127.0.0.1:{port},localhost:{port}",
            "CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
        },
        flags={"--host": "127.0.0.1", "--port": str(port)},
    )
    auth = mlflow_auth_settings(artifacts.parent, postgres_host="127.0.0.1", postgres_port=postgres["port"])
    env = {
        **os.environ,
        **mlflow_server_env_from_manifest(),
        **auth,
        "PGPASSWORD": PASSWORD,
        "HOME": str(artifacts.parent),
        "TMPDIR": tempfile.gettempdir(),
    }
    ADMIN_AUTH.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=auth["MLFLOW_AUTH_ADMIN_PASSWORD"])
    log = open(artifacts.parent / "mlflow-server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert server.poll() is None, (artifacts.parent / "mlflow-server.log").read_text()
        assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
        time.sleep(0.5)
    yield {"uri": uri, "args": args, "artifacts": artifacts}
    server.terminate()
    server.wait(timeout=30)
    log.close()


def rest(uri: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    token = base64.b64encode(
        f"{ADMIN_AUTH['MLFLOW_TRACKING_USERNAME']}:{ADMIN_AUTH['MLFLOW_TRACKING_PASSWORD']}".encode()
    )
    request = urllib.request.Request(
        uri + path,
        data=data,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token.decode()}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_loop_logs_to_mlflow_on_postgres(mlflow_server, tmp_path):
    uri = mlflow_server["uri"]
    assert "postgresql+psycopg://mlflow@127.0.0.1" in " ".join(mlflow_server["args"])
    env = {**os.environ, **ADMIN_AUTH, "MLFLOW_TRACKING_URI": uri, "AUTOPHAGY_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [
            str(BIN / "autophagy"),
            "run",
            "--config",
            "configs/toy2d-flow.yaml",
            "--root",
            str(tmp_path / "runs"),
            "-S",
            "loop.lambdas=[0,inf]",
            "-S",
            "loop.seeds=[0]",
            "-S",
            "loop.generations=2",
            "-S",
            "train.gen0_budget_kimg=2",
            "-S",
            "train.budget_kimg=1",
            "-S",
            "data.n_train=300",
            "-S",
            "data.n_test=300",
            "-S",
            "sample.n_eval=300",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr

    experiment = rest(uri, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=toy2d-flow")["experiment"]
    runs = rest(
        uri, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 50}
    )["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags) if t.get("autophagy.role") == "parent"]
    children = [(r, t) for r, t in zip(runs, tags) if t.get("autophagy.role") == "chain"]
    assert len(parents) == 1 and len(children) == 2
    parent_id = parents[0]["info"]["run_id"]
    assert {t["autophagy.lambda"] for _, t in children} == {"0", "inf"}
    for run, tag in children:
        assert tag["mlflow.parentRunId"] == parent_id
        run_id = run["info"]["run_id"]
        history = rest(uri, f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=swd_train")["metrics"]
        assert sorted(m["step"] for m in history) == [0, 1, 2]
        assert all(m["value"] >= 0 for m in history)
        listed = rest(uri, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")
        # The sample grid as an MLflow image (step = generation), under images/; kept checkpoints as Logged
        # Models of the chain's run, their files uploaded through the server.
        assert "images" in {f["path"] for f in listed.get("files", [])}
        found = rest(
            uri,
            "/api/2.0/mlflow/logged-models/search",
            {"experiment_ids": [experiment["experiment_id"]], "filter": f"source_run_id = '{run_id}'"},
        )
        assert {m["info"]["status"] for m in found["models"]} == {"LOGGED_MODEL_READY"}
    # Artifacts went through the server (--serve-artifacts) into --artifacts-destination.
    stored = {p.name for p in mlflow_server["artifacts"].rglob("*.safetensors")}
    assert "model.safetensors" in stored


def test_unreachable_tracking_server_fails_fast_and_clearly(tmp_path):
    from autophagy.config import load_config
    from autophagy.tracking import Tracker, TrackingError

    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}"):
        Tracker(load_config(None), uri=f"http://127.0.0.1:{port}")
    assert time.monotonic() - started < 10
