"""A Kubeflow run with ``cluster.dvc_remote``: every generation's data sets and models pushed from the
tasks to a DVC remote, content-addressed, and pulled onto a fresh checkout with ``autophagy pull``.

The run goes through ``kfp.local`` (``autophagy pipeline submit --local``: the very packages a cluster
gets). The remote here is a local folder, which DVC treats like any remote; tests/test_s3_dvc.py runs the
same against a real S3 server.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autophagy.config import flatten

IMAGE = "registry.example.com/autophagy:test"


def overrides(cfg) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in flatten(cfg).items()]


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    assert not check or done.returncode == 0, done.stderr + done.stdout
    return done


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def checkout(path: Path) -> Path:
    """A fresh project checkout: a git repository with DVC initialised, nothing else."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    dvc("init", "-q", cwd=path)
    return path


def run_on_kfp_local(cfg, remote: dict, root: Path, monkeypatch, extra: tuple[str, ...] = ()) -> str:
    from autophagy.pipelines import cli_submit

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(root)
    spec = json.dumps(remote)
    return cli_submit(
        None,
        None,
        [*overrides(cfg), "cluster.window=2", f"cluster.dvc_remote={spec}", *extra],
        image=IMAGE,
        local_root=root / "kfp",
        log=lambda _: None,
    )


@pytest.mark.slow
def test_a_cluster_run_is_pulled_onto_a_fresh_checkout(tmp_path, tiny_cfg, tracking_uri, monkeypatch):
    from autophagy.pipelines.pull import pull
    from mlflow import MlflowClient

    from autophagy.tracking import Tracker

    cfg = tiny_cfg(
        "gaussian", "loop.lambdas=[0.5, inf]", "loop.seeds=[0]", "loop.generations=3", "tracking.enabled=true"
    )
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    run_on_kfp_local(cfg, {"url": str(remote_dir), "credentials_secret": None}, tmp_path, monkeypatch)

    # Every generation's data sets and models are in the remote, each file stored once.
    project = checkout(tmp_path / "checkout")
    result = pull(cfg.name, project, log=lambda _: None)
    tree = project / "runs" / cfg.name
    pointers = sorted(p.relative_to(tree) for p in tree.rglob("*.dvc"))
    expected = {
        Path("data/train.dvc"),
        Path("data/test.dvc"),
        Path("seed-0/gen-000/model.dvc"),
        Path("seed-0/gen-000/samples.dvc"),
    }
    for lam in ("0.5", "inf"):
        for g in (1, 2, 3):
            expected |= {Path(f"lam-{lam}/seed-0/gen-{g:03d}/{name}.dvc") for name in ("train_set", "model", "samples")}
    assert set(pointers) == expected and len(result["pulled"]) == len(expected)
    probe = hashlib.md5(b"autophagy: can this remote be written?\n").hexdigest()  # submit's check of the remote
    stored = {
        p: p.stat().st_size
        for p in remote_dir.rglob("*")
        if p.is_file() and not p.name.endswith(".tmp") and p.name != probe[2:]
    }
    files = [p for pointer in pointers for p in (tree / pointer).with_suffix("").rglob("*") if p.is_file()]
    distinct = {hashlib.md5(p.read_bytes()).hexdigest() for p in files}
    assert len([p for p in stored if not p.name.endswith(".dir")]) == len(distinct) < len(files)
    real_shard = (tree / "data" / "train" / "real-train.npy").read_bytes()
    copies = [p for p in files if p.name == "real-train.npy"]
    assert len(copies) == 1 + 3  # data/train and the training sets of lambda 0.5 (inf keeps no real data)
    md5 = hashlib.md5(real_shard).hexdigest()
    assert [p for p in stored if p.name == md5[2:]] == [remote_dir / "files" / "md5" / md5[:2] / md5[2:]]  # once
    print(
        f"remote: {len(stored)} objects, {sum(stored.values())} bytes; the {len(pointers)} data sets and models: "
        f"{len(files)} files, {sum(p.stat().st_size for p in files)} bytes"
    )

    # Byte for byte what the tasks wrote: the last chain run handed off its model and samples.
    handoffs = Tracker(cfg, tracking_uri).handoffs()
    for lam in ("0.5", "inf"):
        uris = handoffs[f"lam-{lam}-seed-0"]["uris"]
        for name in ("model", "samples"):
            assert tree_digest(tree / f"lam-{lam}" / "seed-0" / "gen-003" / name) == tree_digest(Path(uris[name]))

    # DVC works on it as on a local `dvc repro`: status clean, metrics shown.
    assert "up to date" in dvc("status", cwd=project).stdout
    shown = dvc("metrics", "show", "--json", cwd=project).stdout
    metric_files = json.loads(shown)[""]["data"]
    assert len(metric_files) == 1 + 2 * 3
    assert all("fd_train" in entry["data"] for entry in metric_files.values())

    # MLflow <-> DVC: each chain run carries the md5 of its data sets.
    client = MlflowClient(tracking_uri)
    child = next(
        r
        for r in client.search_runs([client.get_experiment_by_name(cfg.name).experiment_id])
        if r.data.tags.get("autophagy.lambda") == "0.5"
    )
    pointer = yaml.safe_load((tree / "lam-0.5" / "seed-0" / "gen-002" / "train_set.dvc").read_text())["outs"][0]
    assert child.data.tags["autophagy.dvc.gen-002.train_set"] == pointer["md5"]

    # A missing object in the remote: DVC says so, nothing silently wrong.
    victim = remote_dir / "files" / "md5" / md5[:2] / md5[2:]
    victim.unlink()
    fresh = checkout(tmp_path / "fresh")
    with pytest.raises(Exception) as err:
        pull(cfg.name, fresh, ["data/train"], log=lambda _: None)
    assert "dvc pull" in str(err.value) and ("missing" in str(err.value).lower() or md5 in str(err.value))


def test_a_remote_that_refuses_stops_the_submission_before_any_run(tmp_path, tiny_cfg, monkeypatch):
    """Checked when the experiment is submitted: one line naming the remote, and no KFP run starts."""
    from autophagy.pipelines import PipelineSubmitError

    cfg = tiny_cfg("gaussian", "loop.lambdas=[0.5]", "loop.seeds=[0]", "loop.generations=1")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the remote's folder should be")
    with pytest.raises(PipelineSubmitError) as err:
        run_on_kfp_local(cfg, {"url": str(blocked / "remote"), "credentials_secret": None}, tmp_path, monkeypatch)
    message = str(err.value)
    assert message.startswith(f"DVC remote {blocked / 'remote'}: pushing probe failed") and "\n" not in message
    assert not (tmp_path / "kfp").exists()  # nothing ran
