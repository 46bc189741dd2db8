"""The tracking stack's credentials and MLflow authentication, for real, on loopback.

Everything comes from the rendered k8s/base (credentials made by k8s/make-secrets.sh, as at
install): a real PostgreSQL is initialised with the superuser password of Secret
``postgres-superuser``, then the Deployment's own init script (ConfigMap ``postgres-init``) creates
MLflow's application role; the MLflow pod's init-container script (ConfigMap ``mlflow-users``)
creates the pipeline's user; and ``mlflow server`` runs with the Deployment's arguments
(``--app-name basic-auth``) and the ini of ConfigMap ``mlflow-auth-config`` (database host and
port replaced by the loopback ones). Checked:

* the application role is no superuser, may create no database or role, owns both databases;
* without credentials, or with wrong ones, every API and artifact call gets 401; /health stays open;
* the pipeline's user (Secret autophagy-tracking-credentials) creates an experiment, logs a run
  with a metric and an artifact through the server's artifact proxy, and reads it back;
* it is not an admin: it cannot create users, read the user list, or write into an experiment it
  did not create (it may read it: default_permission READ);
* the init-container script sets the password from the Secret again on every start (rotation), and
  refuses to turn the admin into the pipeline user.

PostgreSQL comes from Debian's packages (``.ci/run`` installs it); as root it runs as ``postgres``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import k8s_helpers as h
import pytest
from postgres_cluster import free_port, postgres_cluster

pytestmark = pytest.mark.timeout(600)


def _values(kind: str, name: str, container: str) -> dict[str, str]:
    objects = h.render("base")
    return h.env_values(h.container(h.find(objects, kind, name), container), objects, include_secrets=True)


@pytest.fixture(scope="module")
def database():
    """A real PostgreSQL initialised like the StatefulSet's, after postgres-init/app-role.sh ran."""
    pg = _values("StatefulSet", "postgres", "postgres")
    objects = h.render("base")
    script = h.find(objects, "ConfigMap", "postgres-init")["data"]["app-role.sh"]
    with postgres_cluster(
        superuser="postgres", password=pg["POSTGRES_PASSWORD"], prefix="autophagy-pg-auth-"
    ) as cluster:
        (cluster.root / "app-role.sh").write_text(script)
        init = subprocess.run(
            ["bash", str(cluster.root / "app-role.sh")],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
                "PGHOST": str(cluster.sockets),
                "PGPORT": str(cluster.port),
                "POSTGRES_USER": "postgres",
                **{k: pg[k] for k in ("MLFLOW_DB_USER", "MLFLOW_DB_NAME", "MLFLOW_AUTH_DB_NAME", "MLFLOW_DB_PASSWORD")},
            },
        )
        assert init.returncode == 0, init.stderr
        yield {"port": cluster.port, "sockets": cluster.sockets, "pg": pg, "root": cluster.root}


def psql(
    database,
    sql: str,
    *,
    user: str = "postgres",
    dbname: str = "postgres",
    password: str | None = None,
    tcp: bool = False,
) -> subprocess.CompletedProcess[str]:
    host = "127.0.0.1" if tcp else str(database["sockets"])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "PGPASSWORD": password or ""}
    return subprocess.run(
        [
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            host,
            "-p",
            str(database["port"]),
            "-U",
            user,
            "-d",
            dbname,
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def ensure_user(database, folder: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    """The MLflow pod's init container: its script and env from the manifests, the ini on loopback."""
    objects = h.render("base")
    deployment = h.find(objects, "Deployment", "mlflow")
    (init,) = h.pod_spec(deployment)["initContainers"]
    env = h.env_values(init, objects, include_secrets=True)
    script = folder / "ensure_pipeline_user.py"
    script.write_text(h.find(objects, "ConfigMap", "mlflow-users")["data"][script.name])
    auth = h.mlflow_auth_settings(folder, postgres_host="127.0.0.1", postgres_port=database["port"])
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=auth["MLFLOW_AUTH_CONFIG_PATH"], HOME=str(folder), TMPDIR=str(folder), **overrides
    )
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_"))}, **env},
    )


@pytest.fixture(scope="module")
def server(database, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-auth")
    made = ensure_user(database, folder)
    assert made.returncode == 0, made.stderr
    assert "created 'autophagy-pipeline' (not an admin)" in made.stdout
    port = free_port()
    args = h.mlflow_server_args_from_manifest(
        variables={
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(database["port"]),
            "ARTIFACTS_DESTINATION": str(folder / "artifacts"),
            "ALLOWED_HOSTS": f"127.0.0.1:{port}",
            "CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
        },
        flags={"--host": "127.0.0.1", "--port": str(port)},
    )
    assert args[:3] == ["server", "--app-name", "basic-auth"]
    mlflow_env = _values("Deployment", "mlflow", "mlflow")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_"))},
        **h.mlflow_server_env_from_manifest(),
        **h.mlflow_auth_settings(folder, postgres_host="127.0.0.1", postgres_port=database["port"]),
        "PGPASSWORD": mlflow_env["PGPASSWORD"],
        "HOME": str(folder),
        "TMPDIR": str(folder),
    }
    log = (folder / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "mlflow", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        assert process.poll() is None, (folder / "server.log").read_text()
        assert time.monotonic() < deadline, (folder / "server.log").read_text()[-4000:]
        time.sleep(0.5)
    tracking = _values("Deployment", "mlflow", "pipeline-user")  # the init container's Secret values
    try:
        yield {
            "uri": uri,
            "folder": folder,
            "admin": ("admin", env["MLFLOW_AUTH_ADMIN_PASSWORD"]),
            "pipeline": (tracking["MLFLOW_TRACKING_USERNAME"], tracking["MLFLOW_TRACKING_PASSWORD"]),
        }
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def call(server, method: str, path: str, body: dict | None = None, auth: tuple[str, str] | None = None):
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(
        server["uri"] + path, method=method, headers=headers, data=None if body is None else json.dumps(body).encode()
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read()
            return answer.status, json.loads(text) if text.strip().startswith(b"{") else {}
    except urllib.error.HTTPError as refusal:
        return refusal.code, {}


# --- PostgreSQL -------------------------------------------------------------------------------------


def test_the_application_role_is_not_a_superuser(database):
    pg = database["pg"]
    user = pg["MLFLOW_DB_USER"]
    attributes = psql(
        database,
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
        f"FROM pg_roles WHERE rolname = '{user}'",
    )
    assert attributes.stdout.strip() == "f|f|f|f|f|t", attributes
    owners = psql(
        database,
        "SELECT datname || '=' || pg_get_userbyid(datdba) FROM pg_database "
        f"WHERE datname IN ('{pg['MLFLOW_DB_NAME']}', '{pg['MLFLOW_AUTH_DB_NAME']}')",
    )
    assert set(owners.stdout.split()) == {f"{pg['MLFLOW_AUTH_DB_NAME']}={user}", f"{pg['MLFLOW_DB_NAME']}={user}"}
    # It logs in over TCP with its own password (scram), and may do nothing a superuser does.
    ok = psql(
        database,
        "SELECT current_user",
        user=user,
        dbname=pg["MLFLOW_DB_NAME"],
        password=pg["MLFLOW_DB_PASSWORD"],
        tcp=True,
    )
    assert ok.returncode == 0 and ok.stdout.strip() == user, ok.stderr
    for sql, refusal in (
        ("CREATE DATABASE other", "permission denied to create database"),
        ("CREATE ROLE other", "permission denied to create role"),
        ("ALTER ROLE postgres PASSWORD 'x'", "must be superuser|permission denied"),
        ("COPY (SELECT 1) TO PROGRAM 'true'", "permission denied|must be superuser"),
    ):
        refused = psql(
            database, sql, user=user, dbname=pg["MLFLOW_DB_NAME"], password=pg["MLFLOW_DB_PASSWORD"], tcp=True
        )
        assert refused.returncode != 0 and re.search(refusal, refused.stderr), (sql, refused.stderr)
    wrong = psql(database, "SELECT 1", user=user, dbname=pg["MLFLOW_DB_NAME"], password="not-the-password", tcp=True)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    # The superuser's generated password is a different one.
    assert pg["POSTGRES_PASSWORD"] != pg["MLFLOW_DB_PASSWORD"]


# --- MLflow ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"),
        ("POST", "/api/2.0/mlflow/experiments/create"),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts"),
        ("GET", "/api/2.0/mlflow/users/get?username=admin"),
        ("GET", "/"),
    ],
)
def test_requests_without_valid_credentials_are_refused(server, method, path):
    body = {"name": "x"} if method == "POST" else None
    assert call(server, method, path, body)[0] == 401
    assert call(server, method, path, body, auth=(server["pipeline"][0], "wrong-password-123"))[0] == 401
    assert call(server, method, path, body, auth=("admin", ""))[0] == 401
    assert call(server, "GET", "/health")[0] == 200  # the kubelet's probes need no user


def test_the_pipeline_user_logs_a_run_with_an_artifact(server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    username, password = server["pipeline"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(tracking_uri=server["uri"])
    experiment = client.create_experiment("pipeline-writes")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "fid", 12.5, step=3)
    (tmp_path / "grid.txt").write_text("samples")
    client.log_artifact(run.info.run_id, str(tmp_path / "grid.txt"))  # through the server's artifact proxy
    assert client.get_metric_history(run.info.run_id, "fid")[0].value == 12.5
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["grid.txt"]
    assert Path(client.download_artifacts(run.info.run_id, "grid.txt", str(tmp_path / "back"))).read_text() == "samples"
    # The creator got MANAGE on it.
    status, answer = call(
        server,
        "GET",
        f"/api/3.0/mlflow/users/permissions/get?username={username}&resource_type=experiment&resource_id={experiment}",
        auth=server["admin"],
    )
    assert status == 200 and answer["permission"] == "MANAGE", answer


def test_the_pipeline_user_is_not_an_admin(server):
    pipeline, admin = server["pipeline"], server["admin"]
    status, answer = call(server, "GET", f"/api/2.0/mlflow/users/get?username={pipeline[0]}", auth=admin)
    assert status == 200 and answer["user"]["is_admin"] is False, answer
    assert (
        call(
            server,
            "POST",
            "/api/2.0/mlflow/users/create",
            {"username": "intruder", "password": "x" * 16},
            auth=pipeline,
        )[0]
        == 403
    )
    assert (
        call(
            server,
            "PATCH",
            "/api/2.0/mlflow/users/update-admin",
            {"username": pipeline[0], "is_admin": True},
            auth=pipeline,
        )[0]
        == 403
    )
    # An experiment someone else made: readable (default_permission READ), not writable.
    status, made = call(server, "POST", "/api/2.0/mlflow/experiments/create", {"name": "admin-only"}, auth=admin)
    assert status == 200
    experiment = made["experiment_id"]
    assert call(server, "GET", f"/api/2.0/mlflow/experiments/get?experiment_id={experiment}", auth=pipeline)[0] == 200
    assert call(server, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment}, auth=pipeline)[0] == 403
    assert (
        call(server, "POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": experiment}, auth=pipeline)[0]
        == 403
    )
    assert call(server, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment}, auth=admin)[0] == 200


def test_the_init_container_sets_the_password_from_the_secret_again(server, database):
    pipeline = server["pipeline"]
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    rotated = "r" * 40
    changed = ensure_user(database, server["folder"], MLFLOW_TRACKING_PASSWORD=rotated)
    assert changed.returncode == 0 and "updated the password of 'autophagy-pipeline'" in changed.stdout, changed.stderr
    try:
        assert call(server, "GET", search, auth=pipeline)[0] == 401
        assert call(server, "GET", search, auth=(pipeline[0], rotated))[0] == 200
    finally:
        back = ensure_user(database, server["folder"])
        assert back.returncode == 0, back.stderr
    assert call(server, "GET", search, auth=pipeline)[0] == 200


def test_the_init_container_refuses_the_admin_as_pipeline_user(server, database):
    refused = ensure_user(database, server["folder"], MLFLOW_TRACKING_USERNAME="admin")
    assert refused.returncode == 1
    assert "the pipeline user must not be the admin user 'admin'" in refused.stderr
    empty = ensure_user(database, server["folder"], MLFLOW_TRACKING_PASSWORD="")
    assert empty.returncode == 1 and "MLFLOW_TRACKING_PASSWORD must be set" in empty.stderr
    status, answer = call(server, "GET", "/api/2.0/mlflow/users/get?username=admin", auth=server["admin"])
    assert status == 200 and answer["user"]["is_admin"] is True
