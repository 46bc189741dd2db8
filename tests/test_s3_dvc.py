"""DVC remotes on a real S3 server (SeaweedFS on loopback, tests/s3_server.py): a Kubeflow run's data
versions pushed from its tasks and pulled onto a fresh checkout, the local ``dvc repro`` path pushed with
``dvc push``, and a remote that cannot be used refused with one line before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from s3_server import S3_TEST_TIMEOUT_S, s3_server  # noqa: F401  (registers the fixture)

from autophagy.config import flatten

pytestmark = pytest.mark.timeout(S3_TEST_TIMEOUT_S)
REPO = Path(__file__).resolve().parents[1]
IMAGE = "registry.example.com/autophagy:test"


def dvc(*args: str, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1", **(env or {})},
    )
    assert not check or done.returncode == 0, done.stderr + done.stdout
    return done


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def remote_of(s3, prefix: str, **changes) -> dict:
    return {
        "url": f"s3://{s3.bucket}/{prefix}",
        "endpoint_url": s3.endpoint_url,
        "region": s3.region,
        "credentials_secret": None,
        **changes,
    }


@pytest.mark.slow
def test_a_kfp_run_versions_every_generation_in_s3_and_a_fresh_checkout_pulls_it(
    s3_server, tmp_path, tiny_cfg, tracking_uri, monkeypatch
):  # noqa: F811
    from autophagy.pipelines import cli_submit
    from autophagy.pipelines.pull import pull

    from autophagy.tracking import Tracker

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg("digits", "loop.lambdas=[0.5, inf]", "loop.seeds=[0]", "loop.generations=2")
    spec = json.dumps(remote_of(s3_server, "kfp-run"))
    cli_submit(
        None,
        None,
        [*(f"{k}={json.dumps(v)}" for k, v in flatten(cfg).items()), f"cluster.dvc_remote={spec}"],
        image=IMAGE,
        local_root=tmp_path / "kfp",
        log=lambda _: None,
    )

    project = tmp_path / "checkout"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc("init", "-q", cwd=project)
    pull(cfg.name, project, log=lambda _: None)
    tree = project / "runs" / cfg.name
    handoffs = Tracker(cfg, tracking_uri).handoffs()
    for lam in ("0.5", "inf"):
        for name in ("model", "samples"):  # byte for byte what the last tasks wrote
            assert tree_digest(tree / f"lam-{lam}" / "seed-0" / "gen-002" / name) == tree_digest(
                Path(handoffs[f"lam-{lam}-seed-0"]["uris"][name])
            )
    assert "up to date" in dvc("status", cwd=project).stdout

    # Each file stored once: the real shard of data/train and of every lambda-0.5 training set is one object.
    stored = s3_server.objects("kfp-run/")
    files = [p for pointer in tree.rglob("*.dvc") for p in pointer.with_suffix("").rglob("*") if p.is_file()]
    real = hashlib.md5((tree / "data" / "train" / "real-train.npy").read_bytes()).hexdigest()
    assert len([p for p in files if p.name == "real-train.npy"]) == 3
    assert [key for key in stored if key.endswith(real[2:])] == [f"kfp-run/files/md5/{real[:2]}/{real[2:]}"]
    total = sum(p.stat().st_size for p in files)
    print(
        f"S3 remote: {len(stored)} objects, {sum(stored.values())} bytes; the data sets and models pulled: "
        f"{len(files)} files, {total} bytes"
    )
    assert sum(stored.values()) < total


@pytest.mark.slow
def test_a_local_dvc_repro_is_pushed_to_s3_and_pulled_by_a_clone(s3_server, tmp_path):  # noqa: F811
    """The local path, as DVC users do it: `dvc repro`, `dvc remote add`, `dvc push`; a clone pulls it all."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        **s3_server.env(),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "AUTOPHAGY_CACHE_DIR": str(tmp_path / "cache"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "OMP_NUM_THREADS": "1",
    }
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, project)
    shutil.copytree(REPO / ".dvc", project / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))

    def sh(*cmd: str, cwd: Path = project) -> str:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    sh("git", "init", "-q")
    sh(
        str(bin_dir / "autophagy"),
        "dvc-params",
        "--config",
        str(REPO / "configs" / "digits-edm.yaml"),
        "-S",
        "train.gen0_budget_kimg=2",
        "-S",
        "train.budget_kimg=1",
        "-S",
        "train.batch_size=64",
        "-S",
        "sample.n_eval=150",
        "-S",
        "loop.generations=1",
        "-S",
        "loop.lambdas=[0,inf]",
        "-S",
        "tracking.enabled=false",
        "-S",
        "evaluate.max_reference=300",
        "--out",
        "params.yaml",
    )
    sh(sys.executable, "-m", "dvc", "repro", "-q")
    sh(sys.executable, "-m", "dvc", "remote", "add", "-d", "storage", f"s3://{s3_server.bucket}/local-repro")
    sh(sys.executable, "-m", "dvc", "remote", "modify", "storage", "endpointurl", s3_server.endpoint_url)
    sh(sys.executable, "-m", "dvc", "push")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "experiment")
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    sh(sys.executable, "-m", "dvc", "pull", cwd=clone)
    for part in ("runs/digits-edm/seed-0/gen-000/model", "runs/digits-edm/lam-inf/seed-0/gen-001/train_set"):
        assert tree_digest(clone / part) == tree_digest(project / part), part
    assert "in sync" in sh(sys.executable, "-m", "dvc", "status", "--cloud", cwd=clone)
    stored = s3_server.objects("local-repro/")
    assert stored and not [key for key in stored if key.endswith(".tmp")]


@pytest.mark.parametrize("problem", ["wrong credentials", "missing bucket", "unreachable endpoint"])
def test_a_remote_that_cannot_be_used_is_refused_in_one_line(s3_server, tmp_path, monkeypatch, problem):  # noqa: F811
    from autophagy.components import dvc_remote

    env = s3_server.env()
    remote = remote_of(s3_server, "checks")
    if problem == "wrong credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    elif problem == "missing bucket":
        remote["url"] = "s3://no-such-bucket-here/checks"
    else:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            remote["endpoint_url"] = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(dvc_remote.RemoteError) as err:
        dvc_remote.check(remote)
    message = str(err.value)
    expected = {
        "wrong credentials": "the server refused bucket",
        "missing bucket": "bucket no-such-bucket-here does not exist",
        "unreachable endpoint": "cannot reach it",
    }[problem]
    assert message.startswith(f"DVC remote {remote['url']} (endpoint {remote['endpoint_url']}): {expected}"), message
    assert "\n" not in message
    assert "no-such-bucket-here" not in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert not s3_server.objects("checks/")  # nothing was written
