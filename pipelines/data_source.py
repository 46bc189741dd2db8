"""Where the pipeline's pods read real data: ``data.path`` of an ``image-folder`` or ``text-folder``
source, as a pod sees it.

A pod sees neither this machine's files nor its working directory, so an ``image-folder`` source
(``configs/ffhq64-edm.yaml``: a folder or .zip of images) is read by the ``prepare-data`` task from

* a PersistentVolumeClaim, ``cluster.data_pvc`` (:class:`autophagy.pipelines.cluster.DataPvc`), mounted
  into the task: :func:`for_pods` resolves ``data.path`` inside that mount; or
* an object store, ``data.path: s3://bucket/prefix`` or ``s3://bucket/key.zip`` with ``cluster.data_s3``
  (:class:`autophagy.pipelines.cluster.DataS3`): the task gets its endpoint and the credentials of a
  Secret as the standard ``AWS_*`` variables (:func:`give_prepare_its_data`).

A ``text-folder`` source (``.txt`` files) is read from a claim the same way (not from an object
store). Without either, :func:`for_pods` refuses, naming the way out, before anything is compiled or
submitted. The other sources generate their data (digits, toy2d, gaussian, python-docs) or download
it (cifar10; hf-text, from the Hugging Face hub or the datasets cache of ``HF_HOME``) inside the pod.
"""

from __future__ import annotations

import posixpath
from typing import Any

from autophagy.pipelines.cluster import ClusterConfig
from autophagy.pipelines.errors import PipelineConfigError

from autophagy.config import ExperimentConfig, from_dict, to_dict
from autophagy.data.sources import S3_SCHEME

#: The sources whose ``data.path`` is a folder the ``prepare-data`` task reads.
FOLDER_SOURCES = ("image-folder", "text-folder")


def in_object_store(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg`` reads an ``image-folder`` source from an ``s3://`` URL."""
    return cfg.data.source == "image-folder" and str(cfg.data.path).startswith(S3_SCHEME)


def for_pods(cfg: ExperimentConfig, cluster: ClusterConfig) -> ExperimentConfig:
    """``cfg`` with ``data.path`` as the ``prepare-data`` pod reads it (unchanged for other sources)."""
    if cfg.data.source not in FOLDER_SOURCES:
        return cfg
    path = str(cfg.data.path)
    if in_object_store(cfg):
        _check_object_store(path, cluster)
        return cfg
    if "://" in path and cfg.data.source == "text-folder":
        raise PipelineConfigError(
            f"data.path {path!r}: data.source=text-folder reads a folder of .txt files on a PersistentVolumeClaim "
            "(cluster.data_pvc), not a URL (docs/kubeflow.md, 'Real data the pods read')"
        )
    if "://" in path:
        raise PipelineConfigError(
            f"data.path {path!r}: data.source=image-folder reads a folder or .zip on a PersistentVolumeClaim "
            "(cluster.data_pvc) or in an S3 object store (s3://bucket/prefix, s3://bucket/key.zip with "
            "cluster.data_s3), not this URL (docs/kubeflow.md, 'Real data the pods read')"
        )
    if cluster.data_pvc is None:
        raise PipelineConfigError(
            f"data.path {path!r} is a folder on this machine, which the pipeline's pods cannot reach: copy the files "
            "onto a PersistentVolumeClaim (ReadOnlyMany or ReadWriteMany) in the run namespace and set "
            "cluster.data_pvc: {name: <claim>, mount_path: /var/lib/autophagy/data} (-S 'cluster.data_pvc={name: "
            "<claim>}'); data.path is then read inside the mount (a relative path from the claim's root). Or "
            "upload them to an object store: data.path: s3://bucket/prefix with cluster.data_s3"
        )
    mount = posixpath.normpath(cluster.data_pvc.mount_path)
    inside = posixpath.normpath(posixpath.join(mount, path))
    if not inside.startswith(mount + "/"):
        raise PipelineConfigError(
            f"data.path {path!r} is not inside the mount of cluster.data_pvc ({cluster.data_pvc.name} at {mount}): "
            "give a path relative to the claim's root, or an absolute path under its mount_path"
        )
    values = to_dict(cfg)
    values["data"]["path"] = inside
    return from_dict(values)


def _check_object_store(path: str, cluster: ClusterConfig) -> None:
    """An ``s3://`` data.path needs ``cluster.data_s3``; the ``prepare-data`` task has one ``AWS_*``
    environment, so with ``cluster.dvc_remote`` (which that task pushes to) the two must agree."""
    store, remote = cluster.data_s3, cluster.dvc_remote
    if store is None:
        raise PipelineConfigError(
            f"data.path {path!r} is in an object store: set cluster.data_s3 so that the prepare-data task can read "
            "it, e.g. -S 'cluster.data_s3={endpoint_url: http://minio-service.kubeflow:9000, credentials_secret: "
            "<Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY>}' (no endpoint_url: AWS S3)"
        )
    if remote is None:
        return
    if (store.credentials_secret, dict(store.credentials_keys)) != (
        remote.credentials_secret,
        dict(remote.credentials_keys),
    ):
        raise PipelineConfigError(
            "cluster.data_s3 and cluster.dvc_remote name different credentials (Secret "
            f"{store.credentials_secret} {dict(store.credentials_keys)} and {remote.credentials_secret} "
            f"{dict(remote.credentials_keys)}), but the prepare-data task reads the data and pushes to the remote "
            "with one AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: give both the same credentials_secret and "
            "credentials_keys (an identity that may read the data and write the remote)"
        )
    if store.endpoint_url and not remote.endpoint_url:  # (a region of either is only a hint: S3 redirects)
        raise PipelineConfigError(
            f"cluster.data_s3.endpoint_url is {store.endpoint_url!r} but cluster.dvc_remote.endpoint_url is unset: "
            "DVC in the prepare-data task would push to the data's endpoint (AWS_ENDPOINT_URL_S3 of its "
            "environment); set cluster.dvc_remote.endpoint_url too (https://s3.<region>.amazonaws.com for AWS S3)"
        )


def give_prepare_its_data(task: Any, cfg: ExperimentConfig, cluster: ClusterConfig) -> None:
    """What the ``prepare-data`` task needs to read ``data.path``: the claim of ``cluster.data_pvc``
    mounted, or, for an ``s3://`` path, ``cluster.data_s3``'s endpoint and region as environment
    variables and its Secret's keys as ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (unless the
    task has them already, from the same Secret of ``cluster.dvc_remote``)."""
    from kfp import kubernetes

    if cluster.data_pvc is not None:
        kubernetes.mount_pvc(task, pvc_name=cluster.data_pvc.name, mount_path=cluster.data_pvc.mount_path)
    store = cluster.data_s3
    if store is None or not in_object_store(cfg):
        return
    for name, value in store.environment().items():
        task.set_env_variable(name, value)
    shared = cluster.dvc_remote is not None and cluster.dvc_remote.credentials_secret == store.credentials_secret
    if store.credentials_secret and not shared:
        kubernetes.use_secret_as_env(
            task, store.credentials_secret, {key: env for env, key in store.credentials_keys.items()}
        )
