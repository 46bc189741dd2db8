"""Push a Kubeflow task's output to the experiment's DVC remote, content-addressed, from inside its pod.

``cluster.dvc_remote`` (``autophagy.pipelines.cluster.DvcRemote``) reaches the pods as
``AUTOPHAGY_DVC_REMOTE`` (JSON: ``url``, ``endpoint_url``, ``region``) and the credentials as the
standard ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` from a Secret. :func:`push` is DVC's own
``add`` and ``push`` (its Python API, in process) in a throwaway DVC repository: DVC hashes the
directory, uploads each file
that the remote does not have yet under its md5 (so the real shard that every training set reuses
is stored once) and writes the pointer, whose ``outs`` entry is returned. The pointer exists only
once every file is uploaded: a push that fails part-way leaves no pointer, and the task fails with
one line naming the remote.

The library (``src/autophagy``) never imports DVC; this module, which runs in the pods and in
``autophagy pull``, does (inside its functions).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from autophagy.atomic import link_or_copy

#: The remote's settings in a pod's environment (JSON).
REMOTE_ENV = "AUTOPHAGY_DVC_REMOTE"
#: The name of the remote in the repositories this module makes and in a user's checkout.
REMOTE_NAME = "autophagy"


class RemoteError(RuntimeError):
    """The DVC remote refused, or could not be reached; the message names it."""


def configured() -> dict[str, Any] | None:
    """The remote of this pod (``AUTOPHAGY_DVC_REMOTE``), or None when the experiment has none."""
    text = os.environ.get(REMOTE_ENV)
    return json.loads(text) if text else None


def describe(remote: dict[str, Any]) -> str:
    return remote["url"] + (f" (endpoint {remote['endpoint_url']})" if remote.get("endpoint_url") else "")


@contextlib.contextmanager
def _inside(directory: Path) -> Iterator[None]:
    """Work in ``directory`` (DVC resolves an ``add`` output's path against the working directory)."""
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def configure(repo_root: Path, remote: dict[str, Any], default: bool = True) -> None:
    """Add ``remote`` to the DVC repository at ``repo_root`` as :data:`REMOTE_NAME` (its config file)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    settings = {"url": remote["url"]}
    settings.update({key.replace("_", ""): str(remote[key]) for key in ("endpoint_url", "region") if remote.get(key)})
    try:
        with Repo(str(repo_root)).config.edit() as config:
            config["remote"][REMOTE_NAME] = settings
            if default:
                config["core"]["remote"] = REMOTE_NAME
    except DvcException as err:
        raise RemoteError(f"DVC remote {describe(remote)}: cannot configure it in {repo_root}: {err}") from None


def check(remote: dict[str, Any]) -> None:
    """Fail with one line naming ``remote`` unless a file can be pushed to it (reachable, credentials
    accepted, bucket present): a probe of a few bytes, stored once however often it is checked. An
    S3 bucket must exist already (DVC would create a missing one, so a typo in its name would
    quietly start a new remote)."""
    if remote["url"].startswith("s3://"):
        _check_bucket(remote)
    with tempfile.TemporaryDirectory(prefix="autophagy-dvc-check-") as tmp:
        probe = Path(tmp) / "probe"
        probe.write_bytes(b"autophagy: can this remote be written?\n")
        push(probe, "probe", remote)


def _check_bucket(remote: dict[str, Any]) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = remote["url"][len("s3://") :].split("/", 1)[0]
    # a new session: boto3's default one keeps the credentials it first read from the environment
    client = boto3.session.Session().client(
        "s3", endpoint_url=remote.get("endpoint_url"), region_name=remote.get("region")
    )
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        missing = code in ("404", "NoSuchBucket") or (code == "403" and not _listed(client, bucket))
        what = (
            f"bucket {bucket} does not exist"
            if missing
            else f"the server refused bucket {bucket} ({code}: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        )
        raise RemoteError(f"DVC remote {describe(remote)}: {what}") from None
    except BotoCoreError as err:
        raise RemoteError(f"DVC remote {describe(remote)}: cannot reach it ({err})") from None


def _listed(client: Any, bucket: str) -> bool:
    """Whether the credentials see ``bucket`` in their bucket list (True when they may not list:
    then a 403 is theirs, not a missing bucket's; some servers answer 403 for both)."""
    from botocore.exceptions import ClientError

    try:
        return bucket in {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    except ClientError:
        return True


def push(path: str | Path, name: str, remote: dict[str, Any] | None = None) -> dict[str, Any]:
    """Upload the file or directory at ``path`` to ``remote`` (default: this pod's, :func:`configured`);
    returns its pointer entry (``md5``, ``size``, ``nfiles``, ``hash``, ``path: name``), as a ``.dvc``
    file holds it."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    remote = remote or configured()
    if remote is None:
        raise RemoteError(f"no DVC remote: {REMOTE_ENV} is not set")
    source = Path(path).resolve()  # before the working directory changes
    logging.getLogger("dvc").setLevel(logging.WARNING)
    # ``dvc add --to-remote`` would be one step, but DVC 3.67 leaves a ``.tmp`` copy of every file
    # it uploads beside it in the remote; ``add`` + ``push`` stores each file once. The data are
    # hard-linked into the throwaway repository (copied across filesystems) and its cache links
    # them again, so nothing is copied twice.
    with tempfile.TemporaryDirectory(prefix="autophagy-dvc-") as tmp, _inside(Path(tmp)):
        Repo.init(tmp, no_scm=True)
        configure(Path(tmp), remote)
        with Repo(tmp).config.edit() as config:
            config["cache"]["type"] = "hardlink,copy"
        staged = Path(tmp) / name
        if source.is_dir():
            shutil.copytree(source, staged, copy_function=link_or_copy)
        else:
            link_or_copy(source, staged)
        try:
            repo = Repo(tmp)
            repo.add(name)
            repo.push([f"{name}.dvc"])
        except (DvcException, ImportError, OSError) as err:
            cause = f" ({err.__cause__})" if err.__cause__ else ""
            raise RemoteError(f"DVC remote {describe(remote)}: pushing {name} failed: {err}{cause}") from None
        [out] = yaml.safe_load((Path(tmp) / f"{name}.dvc").read_text())["outs"]
    return out


def pointer_text(out: dict[str, Any]) -> str:
    """The ``.dvc`` pointer file of ``out`` (what :func:`push` returned; counts that travelled through
    KFP metadata as floats are integers again, as DVC's schema wants)."""
    entry = {key: int(value) if key in ("size", "nfiles") else value for key, value in out.items()}
    return yaml.safe_dump({"outs": [entry]}, sort_keys=False)
