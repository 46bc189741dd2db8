"""The loopback S3 server of tests/s3_server.py (SeaweedFS), and DVC and MLflow against it.

boto3 round trip (a multipart upload included), refused credentials with the server's error codes, a DVC
remote on S3 (push, pull into a clone-like folder, a missing object makes `dvc pull` fail naming its hash)
and an MLflow tracking server started with the Deployment's flags (k8s/base/mlflow.yaml, env of
k8s/overlays/s3) that proxies artifacts into the bucket (--serve-artifacts, --artifacts-destination s3://).

Measured with the binary cached, 2 cores: the whole module takes ~35 s (the S3 server's start 11 s, the
MLflow server's start 5 s and its test 6 s, each DVC test 4-6 s); a cold build of `weed` adds ~9 min to the
first test (hence the timeout mark).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from s3_server import S3_TEST_TIMEOUT_S, s3_server  # noqa: F401  (the session fixture)

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(S3_TEST_TIMEOUT_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


# --- the server itself ------------------------------------------------------------------------------------
def test_put_get_list_delete_round_trip(s3_server, tmp_path):
    s3 = s3_server.client()
    b, prefix = s3_server.bucket, "roundtrip/"
    small = {f"{prefix}a.txt": b"hello s3\n", f"{prefix}deep/er/b.bin": os.urandom(70_001), f"{prefix}empty": b""}
    for key, body in small.items():
        s3.put_object(Bucket=b, Key=key, Body=body)
    # 9 MiB through boto3's transfer manager: a multipart upload (threshold 8 MiB), as DVC and MLflow do.
    big_key, big = f"{prefix}big.bin", os.urandom(9 * 1024 * 1024 + 17)
    (tmp_path / "big.bin").write_bytes(big)
    s3.upload_file(str(tmp_path / "big.bin"), b, big_key)
    assert s3.head_object(Bucket=b, Key=big_key)["ETag"].strip('"').endswith("-2")  # 2 parts of 8 MiB max
    expected = {**{k: len(v) for k, v in small.items()}, big_key: len(big)}
    assert s3_server.objects(prefix) == expected
    for key, body in {**small, big_key: big}.items():
        assert s3.get_object(Bucket=b, Key=key)["Body"].read() == body
    assert s3.get_object(Bucket=b, Key=big_key, Range="bytes=100-199")["Body"].read() == big[100:200]
    listed = s3.list_objects_v2(Bucket=b, Prefix=prefix, Delimiter="/")
    assert [p["Prefix"] for p in listed.get("CommonPrefixes", [])] == [f"{prefix}deep/"]

    s3_server.delete(f"{prefix}a.txt")
    assert f"{prefix}a.txt" not in s3_server.objects(prefix)
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=b, Key=f"{prefix}a.txt")
    assert client_error_code(excinfo) == "NoSuchKey"

    other = s3_server.new_bucket("autophagy-roundtrip-2")
    s3.put_object(Bucket=other, Key="x", Body=b"1")
    assert s3_server.objects(bucket=other) == {"x": 1}
    assert {other, b} <= {x["Name"] for x in s3.list_buckets()["Buckets"]}
    for key in s3_server.objects(prefix):
        s3_server.delete(key)
    assert s3_server.objects(prefix) == {}


def test_wrong_credentials_are_refused(s3_server):
    from botocore.exceptions import ClientError

    b, key = s3_server.bucket, "auth/secret.txt"
    s3_server.client().put_object(Bucket=b, Key=key, Body=b"only for the test identity")
    cases = {
        # a key the server knows, granted nothing
        "AccessDenied": s3_server.client(s3_server.denied_access_key, s3_server.denied_secret_key),
        # the test identity's key with a wrong secret
        "SignatureDoesNotMatch": s3_server.client(s3_server.access_key, s3_server.secret_key[::-1]),
        # a key the server does not know
        "InvalidAccessKeyId": s3_server.client("AKNOSUCHKEY000000000", s3_server.secret_key),
    }
    for code, s3 in cases.items():
        with pytest.raises(ClientError) as excinfo:
            s3.get_object(Bucket=b, Key=key)
        assert client_error_code(excinfo) == code
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError) as excinfo:
            s3.put_object(Bucket=b, Key=f"auth/by-{code}", Body=b"x")
        assert client_error_code(excinfo) == code
        with pytest.raises(ClientError) as excinfo:
            s3.list_objects_v2(Bucket=b)
        assert client_error_code(excinfo) == code
    assert s3_server.objects("auth/") == {key: len(b"only for the test identity")}
    s3_server.delete(key)


# --- DVC --------------------------------------------------------------------------------------------------
def dvc(args: list[str], cwd: Path, env: dict[str, str], *, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dvc_env(tmp_path):
    """Environment for `dvc` without S3 credentials: a test adds them where it means to."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        DVC_NO_ANALYTICS="1",
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    (tmp_path / "home").mkdir()
    return env


def dvc_origin(root: Path, s3_server, env: dict[str, str], prefix: str) -> dict[str, bytes]:
    """`dvc init --no-scm`, `dvc add data`, an S3 default remote (credentials in .dvc/config.local), push."""
    root.mkdir()
    dvc(["init", "--no-scm", "-q"], root, env)
    data = root / "data"
    (data / "sub" / "deeper").mkdir(parents=True)
    (data / "notes.txt").write_text("a small text file\n")
    (data / "sub" / "weights.bin").write_bytes(os.urandom(200_003))
    (data / "sub" / "deeper" / "empty").write_bytes(b"")
    (data / "sub" / "deeper" / "same-as-notes.txt").write_text("a small text file\n")  # deduplicated
    dvc(["add", "-q", "data"], root, env)
    dvc(["remote", "add", "-d", "store", f"s3://{s3_server.bucket}/{prefix}"], root, env)
    dvc(["remote", "modify", "store", "endpointurl", s3_server.endpoint_url], root, env)
    dvc(["remote", "modify", "--local", "store", "access_key_id", s3_server.access_key], root, env)
    dvc(["remote", "modify", "--local", "store", "secret_access_key", s3_server.secret_key], root, env)
    dvc(["remote", "modify", "--local", "store", "region", s3_server.region], root, env)
    assert s3_server.secret_key not in (root / ".dvc" / "config").read_text()  # only in config.local
    pushed = dvc(["push"], root, env)
    assert "4 files pushed" in pushed.stdout + pushed.stderr, pushed.stdout + pushed.stderr
    return tree(data)


def clone_like(origin: Path, clone: Path, env: dict[str, str]) -> None:
    """What a git clone of the origin holds: .dvc/config (no config.local) and the .dvc files."""
    clone.mkdir()
    dvc(["init", "--no-scm", "-q"], clone, env)
    shutil.copy(origin / ".dvc" / "config", clone / ".dvc" / "config")
    shutil.copy(origin / "data.dvc", clone / "data.dvc")


def test_dvc_push_then_pull_into_a_clone(s3_server, tmp_path, dvc_env):
    prefix = "dvc/roundtrip"
    files = dvc_origin(tmp_path / "origin", s3_server, dvc_env, prefix)
    stored = s3_server.objects(prefix + "/")
    # DVC 3's layout: files/md5/<2 hex>/<30 hex> per distinct file, and the directory's .dir listing.
    contents = {hashlib.md5(b).hexdigest(): len(b) for b in files.values()}
    assert {
        k.rsplit("/", 2)[-2] + k.rsplit("/", 1)[-1]: v for k, v in stored.items() if not k.endswith(".dir")
    } == contents
    assert sum(k.endswith(".dir") for k in stored) == 1

    clone = tmp_path / "clone"
    clone_like(tmp_path / "origin", clone, dvc_env)
    # No credentials in the clone's config: without them the pull is refused by the server...
    refused = dvc(["pull"], clone, dvc_env, check=False)
    assert refused.returncode != 0
    assert not (clone / "data").exists()
    # ...with them in the environment (as CI would pass them) it gets every byte back.
    dvc(["pull"], clone, {**dvc_env, **s3_server.env()})
    assert tree(clone / "data") == files
    status = dvc(["status", "--cloud"], clone, {**dvc_env, **s3_server.env()})
    assert "in sync" in status.stdout, status.stdout


def test_dvc_pull_fails_when_an_object_is_missing_in_the_remote(s3_server, tmp_path, dvc_env):
    prefix = "dvc/missing"
    files = dvc_origin(tmp_path / "origin", s3_server, dvc_env, prefix)
    md5 = hashlib.md5(files["sub/weights.bin"]).hexdigest()
    key = f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}"
    assert key in s3_server.objects(prefix + "/")
    s3_server.delete(key)

    clone = tmp_path / "clone"
    clone_like(tmp_path / "origin", clone, dvc_env)
    pulled = dvc(["pull"], clone, {**dvc_env, **s3_server.env()}, check=False)
    output = pulled.stdout + pulled.stderr
    assert pulled.returncode != 0, output
    assert f"failed to transfer '{md5}'" in output, output
    assert "NoSuchKey" in output or "does not exist" in output, output
    assert "failed to pull data from the cloud" in output, output
    assert not (clone / "data" / "sub" / "weights.bin").exists()


# --- MLflow -----------------------------------------------------------------------------------------------
CLIENT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    uri, work = sys.argv[1], Path(sys.argv[2])
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("s3-artifacts")
    X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(work / "payload.bin"), artifact_path="files")
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    got = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="files/payload.bin",
                                              dst_path=str(work / "download"))
    model_dir = mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=str(work / "model"))
    loaded = mlflow.sklearn.load_model(info.model_uri)
    print(json.dumps({
        "run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri, "model_uri": info.model_uri,
        "payload": got, "model_dir": model_dir,
        "same_predictions": bool((loaded.predict(X) == model.predict(X)).all()),
    }))
""")


@pytest.fixture
def mlflow_on_s3(s3_server, tmp_path):
    """`mlflow server` with the Deployment's args (k8s/base) and the S3 overlay's env, on loopback."""
    from k8s_helpers import (
        mlflow_auth_settings,
        mlflow_container,
        mlflow_server_args_from_manifest,
        mlflow_server_env_from_manifest,
    )

    port = free_port()
    destination = f"s3://{s3_server.bucket}/mlflow"
    args = mlflow_server_args_from_manifest(
        variables={
            "POSTGRES_USER": "unused",
            "POSTGRES_HOST": "unused",
            "POSTGRES_PORT": "0",
            "POSTGRES_DB": "unused",
            "ARTIFACTS_DESTINATION": destination,
            "ALLOWED_HOSTS": f"127.0.0.1:{port},localhost:{port}",
            "CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
        },
        # SQLite instead of the PostgreSQL of the manifest (tests/test_mlflow_postgres.py covers that one).
        flags={
            "--host": "127.0.0.1",
            "--port": str(port),
            "--backend-store-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        },
        kustomization="overlays/s3",
    )
    assert "--serve-artifacts" in args and args[args.index("--artifacts-destination") + 1] == destination
    # Every S3 variable the overlay hands the container is one the fixture provides (values: ours).
    overlay_env = {e["name"] for e in mlflow_container("overlays/s3")["env"]}
    s3_names = {n for n in overlay_env if n.startswith("AWS_") or n == "MLFLOW_S3_ENDPOINT_URL"}
    assert s3_names == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL"}
    assert s3_names <= set(s3_server.env())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(mlflow_server_env_from_manifest("overlays/s3"))
    env.update(s3_server.env(), HOME=str(tmp_path), TMPDIR=str(tmp_path), MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    # The Deployment's basic-auth app, its users in SQLite here too.
    auth = mlflow_auth_settings(tmp_path, database_uri=f"sqlite:///{tmp_path / 'mlflow-auth.db'}")
    env.update(auth)
    log_path = tmp_path / "mlflow-server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", *args],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s\n" + log_path.read_text()
            time.sleep(0.5)
        yield {
            "uri": uri,
            "destination": destination,
            "log": log_path,
            "credentials": {
                "MLFLOW_TRACKING_USERNAME": "admin",
                "MLFLOW_TRACKING_PASSWORD": auth["MLFLOW_AUTH_ADMIN_PASSWORD"],
            },
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def test_mlflow_server_stores_artifacts_in_s3_and_serves_them_back(s3_server, mlflow_on_s3, tmp_path):
    work = tmp_path / "client"
    work.mkdir()
    payload = os.urandom(300_007)
    (work / "payload.bin").write_bytes(payload)
    # The client has no S3 credentials: every byte goes through the tracking server (--serve-artifacts).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MLFLOW_S3_ENDPOINT_URL"}
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        HOME=str(tmp_path),
        MLFLOW_TRACKING_URI=mlflow_on_s3["uri"],
        **mlflow_on_s3["credentials"],
    )
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, mlflow_on_s3["uri"], str(work)],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n--- server log ---\n{mlflow_on_s3['log'].read_text()}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out
    assert Path(out["payload"]).read_bytes() == payload
    assert out["same_predictions"]

    s3 = s3_server.client()
    stored = s3_server.objects("mlflow/")
    # The file: in the bucket under --artifacts-destination, with the same bytes.
    [payload_key] = [k for k in stored if k.endswith(f"{out['run_id']}/artifacts/files/payload.bin")]
    assert s3.get_object(Bucket=s3_server.bucket, Key=payload_key)["Body"].read() == payload
    # The logged model: its files are in the bucket (mlflow/<experiment>/models/<model id>/artifacts/) and
    # the client downloaded each of them byte for byte (it also writes a local registered_model_meta).
    model_dir = Path(out["model_dir"])
    model_keys = {k.split("/artifacts/", 1)[1]: k for k in stored if "/models/" in k}
    assert "MLmodel" in model_keys and any(n.startswith("model.") for n in model_keys), sorted(stored)
    assert len({k.split("/artifacts/", 1)[0] for k in model_keys.values()}) == 1, sorted(stored)
    for name, key in model_keys.items():
        assert (model_dir / name).read_bytes() == s3.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read(), name
