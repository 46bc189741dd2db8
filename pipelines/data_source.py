"""Where the pipeline's pods read real data: ``data.path`` of an ``image-folder`` source, as a pod sees it.

A pod sees neither this machine's files nor its working directory, so an ``image-folder`` source
(``configs/ffhq64-edm.yaml``: a folder or .zip of images) needs its files on a PersistentVolumeClaim,
``cluster.data_pvc`` (:class:`autophagy.pipelines.cluster.DataPvc`), mounted into the
``prepare-data`` task. :func:`for_pods` resolves ``data.path`` inside that mount; without a claim
it refuses, naming the way out, before anything is compiled or submitted. The other sources
generate their data (digits, toy2d, gaussian) or download it (cifar10) inside the pod.
"""

from __future__ import annotations

import posixpath

from autophagy.pipelines.cluster import ClusterConfig
from autophagy.pipelines.errors import PipelineConfigError

from autophagy.config import ExperimentConfig, from_dict, to_dict


def for_pods(cfg: ExperimentConfig, cluster: ClusterConfig) -> ExperimentConfig:
    """``cfg`` with ``data.path`` as the ``prepare-data`` pod reads it (unchanged for other sources)."""
    if cfg.data.source != "image-folder":
        return cfg
    path = str(cfg.data.path)
    if "://" in path:
        raise PipelineConfigError(
            f"data.path {path!r}: data.source=image-folder reads a folder or .zip, not a URL; copy the images "
            "onto a PersistentVolumeClaim and set cluster.data_pvc (docs/kubeflow.md, 'Real data the pods read')"
        )
    if cluster.data_pvc is None:
        raise PipelineConfigError(
            f"data.path {path!r} is a folder on this machine, which the pipeline's pods cannot reach: copy the images "
            "onto a PersistentVolumeClaim (ReadOnlyMany or ReadWriteMany) in the run namespace and set "
            "cluster.data_pvc: {name: <claim>, mount_path: /var/lib/autophagy/data} (-S 'cluster.data_pvc={name: "
            "<claim>}'); data.path is then read inside the mount (a relative path from the claim's root)"
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
