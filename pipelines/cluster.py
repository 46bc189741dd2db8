"""Cluster options of the Kubeflow pipeline: the ``cluster:`` section of an experiment YAML.

KFP v2 fixes images, resources, accelerators, node selectors, tolerations, retries and
parallelism when a pipeline is *compiled*, so they are compile-time options, kept apart from
the experiment (:class:`autophagy.config.ExperimentConfig` describes the science and rejects
unknown keys; :func:`load_pipeline_config` takes ``cluster:`` out before handing it the rest).
The defaults match the manifests in ``k8s/`` (ConfigMap ``autophagy-tracking``, Secret
``autophagy-tracking-credentials``, ServiceAccount ``autophagy-pipeline``, the pod label the
MLflow NetworkPolicy admits, the GPU pool of ``k8s/components/gpu-scheduling``)::

    cluster:
      image: registry.example.com/ml/autophagy:3f2c1ab   # else $AUTOPHAGY_IMAGE, else the release tag
      image_digest: sha256:<64 hex>   # the pushed image's digest: tasks pull repo:tag@sha256:..., never a moved tag
      run_as_user: 10001        # every task's container: this uid/gid, non-root, no privilege escalation,
      run_as_group: 10001       #   all capabilities dropped, seccomp RuntimeDefault
      accelerator_type: nvidia.com/gpu
      accelerator_limit: 1
      gpus_per_train: 1         # > 1: data-parallel train under torchrun on that many GPUs of one pod
      node_selector: {nvidia.com/gpu.present: "true"}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      gpu_steps: [train, sample, evaluate]
      run_retries: 3            # resubmissions of a failed KFP run (cached tasks skipped, train resumed)
      retries: 0                # Argo retries of a failed pod within a run
      parallelism: 8            # KFP runs in flight at once (0: no limit)
      window: null              # generations per chain run (null: as many as fit the backend's limits)
      data_pvc: {name: ffhq, mount_path: /var/lib/autophagy/data}  # image-folder data on a PVC (prepare-data mounts)
      data_s3: {endpoint_url: http://minio-service.kubeflow:9000}  # or in an object store (data.path: s3://...)
      dvc_remote:               # push every generation's data sets and models here (autophagy pull fetches them)
        url: s3://mlpipeline/autophagy-dvc
        endpoint_url: http://minio-service.kubeflow:9000
      gpu_resources: {cpu_request: "4", memory_request: 16G, memory_limit: 32G}

Overrides use the same ``-S`` syntax: ``-S cluster.retries=5 -S cluster.parallelism=2``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autophagy.pipelines.errors import PipelineConfigError

from autophagy.config import ConfigError, ExperimentConfig, apply_override, build_section, from_dict, read_yaml_mapping
from autophagy.config.coerce import parsed_by, yaml_boolean_as_text

#: Every step of the pipeline, the word in the task names ``gen-<g>-<step>``.
STEPS = ("prepare", "features", "mix", "pool", "train", "sample", "evaluate", "handoff", "collect", "report")
#: The ConfigMap keys of ``autophagy-tracking`` (k8s/components/pipeline-access) passed as env.
TRACKING_CONFIG_MAP_KEYS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_DISABLE_TELEMETRY",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "DVC_NO_ANALYTICS",
)
TRACKING_SECRET_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")

_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")  # kfp's own checks (PipelineTask.set_cpu_*)
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")  # PipelineTask.set_memory_*
_DURATION = re.compile(r"^[0-9]+s$")  # set_retry backoff durations
#: The time allowed for one attempt of a task without ``timeout_seconds`` when deriving the retry
#: window: a GPU generation can take days; Argo needs a finite window to give retry pods a deadline.
UNBOUNDED_ATTEMPT_SECONDS = 14 * 24 * 3600
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: The uid/gid of the image's unprivileged user (Dockerfile: useradd --uid 10001), which k8s/ runs as too.
IMAGE_UID = 10001


@dataclass(frozen=True)
class Resources:
    """CPU/memory requests and limits of a task's container (Kubernetes quantities)."""

    cpu_request: str | None = "1"
    cpu_limit: str | None = "2"
    memory_request: str | None = "4G"
    memory_limit: str | None = "8G"

    def validate(self, where: str) -> None:
        for name in ("cpu_request", "cpu_limit"):
            value = getattr(self, name)
            if value is not None and not _CPU.match(value):
                raise PipelineConfigError(f"{where}.{name} must be a CPU quantity like 2, 0.5 or 500m, got {value!r}")
        for name in ("memory_request", "memory_limit"):
            value = getattr(self, name)
            if value is not None and not _MEMORY.match(value):
                raise PipelineConfigError(
                    f"{where}.{name} must be a memory quantity like 512M, 8G or 16Gi, got {value!r}"
                )


@dataclass(frozen=True)
class Toleration:
    """A toleration of the GPU steps (kfp.kubernetes.add_toleration)."""

    key: str | None = "nvidia.com/gpu"
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = "NoSchedule"
    toleration_seconds: int | None = None

    def validate(self, where: str) -> None:
        if self.operator not in ("Exists", "Equal"):
            raise PipelineConfigError(f"{where}.operator must be Exists or Equal, got {self.operator!r}")
        if self.operator == "Exists" and self.value:
            raise PipelineConfigError(f"{where}: operator Exists takes no value, got value={self.value!r}")
        if self.effect is not None and self.effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise PipelineConfigError(
                f"{where}.effect must be NoSchedule, PreferNoSchedule or NoExecute, got {self.effect!r}"
            )


@dataclass(frozen=True)
class DvcRemote:
    """The DVC remote every generation's data sets and models are pushed to from the pods
    (content-addressed: a file stored once however many data sets hold it), e.g. the object store
    KFP deploys or the bucket of k8s/overlays/s3. Credentials come from ``credentials_secret``
    (as ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), never from the config."""

    url: str = ""  # s3://bucket/prefix (any DVC remote URL; a local path for tests)
    endpoint_url: str | None = None  # S3-compatible servers: http://minio-service.kubeflow:9000
    region: str | None = None
    # How `autophagy pipeline submit` and `autophagy pull` reach it when endpoint_url is an in-cluster
    # address (e.g. a port-forward: http://localhost:9000); submit checks the remote there first.
    submitter_endpoint_url: str | None = None
    credentials_secret: str | None = "autophagy-dvc-credentials"
    # environment variable -> key of credentials_secret; for the object store KFP deploys:
    # credentials_secret: mlpipeline-minio-artifact, {AWS_ACCESS_KEY_ID: accesskey, AWS_SECRET_ACCESS_KEY: secretkey}
    credentials_keys: Mapping[str, str] = field(
        default_factory=lambda: {
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
        metadata=parsed_by(yaml_boolean_as_text),
    )

    def validate(self) -> None:
        if not self.url:
            raise PipelineConfigError("cluster.dvc_remote.url is required (e.g. s3://bucket/autophagy-dvc)")
        for name in ("endpoint_url", "submitter_endpoint_url"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("http://", "https://")):
                raise PipelineConfigError(f"cluster.dvc_remote.{name} must be an http(s):// URL, got {value!r}")

    def from_submitter(self) -> dict[str, str]:
        """:meth:`settings` as the submitter reaches the remote."""
        return {
            **self.settings(),
            **({"endpoint_url": self.submitter_endpoint_url} if self.submitter_endpoint_url else {}),
        }

    def settings(self) -> dict[str, str]:
        """What a pod (and ``autophagy pull``) needs to reach it: the URL, endpoint and region."""
        return {
            key: value
            for key, value in (("url", self.url), ("endpoint_url", self.endpoint_url), ("region", self.region))
            if value
        }


@dataclass(frozen=True)
class DataPvc:
    """A PersistentVolumeClaim holding real data the pods cannot reach otherwise (an image folder or
    .zip, ``data.source: image-folder``), mounted into the ``prepare-data`` task (which only reads it) at
    ``mount_path``; a relative ``data.path`` is resolved inside it (``data/ffhq-64x64`` ->
    ``/var/lib/autophagy/data/data/ffhq-64x64``), an absolute one must lie under ``mount_path``."""

    name: str = ""
    mount_path: str = "/var/lib/autophagy/data"

    def validate(self) -> None:
        if not _DNS_SUBDOMAIN.match(self.name) or len(self.name) > 253:
            raise PipelineConfigError(
                f"cluster.data_pvc.name must be the name of a PersistentVolumeClaim "
                f"(lowercase letters, digits, '-', '.'), got {self.name!r}"
            )
        if not self.mount_path.startswith("/") or self.mount_path.rstrip("/") in ("", "/tmp"):
            raise PipelineConfigError(
                f"cluster.data_pvc.mount_path must be an absolute path other than / and /tmp, got {self.mount_path!r}"
            )


#: The credentials a pod may take from a Secret as environment variables (botocore reads them).
S3_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class DataS3:
    """The object store an ``image-folder`` source is read from when ``data.path`` is an ``s3://`` URL
    (``s3://bucket/prefix`` of PNG/JPEG objects, or ``s3://bucket/key.zip``; autophagy.data.sources).
    The ``prepare-data`` task, the only one that reads it, gets ``endpoint_url`` as ``AWS_ENDPOINT_URL_S3``,
    ``region`` as ``AWS_DEFAULT_REGION`` and the credentials from ``credentials_secret``, never from the
    config: the conventions of :class:`DvcRemote`, whose default Secret it shares (one object store
    usually holds both; with ``cluster.dvc_remote`` set the two must name the same Secret and keys)."""

    endpoint_url: str | None = None  # S3-compatible servers, as the pods reach them: http://minio-service.kubeflow:9000
    region: str | None = None
    # None: no Secret, the pod's own identity (e.g. IAM roles for service accounts on EKS)
    credentials_secret: str | None = "autophagy-dvc-credentials"
    # environment variable -> key of credentials_secret; for the object store KFP deploys:
    # credentials_secret: mlpipeline-minio-artifact, {AWS_ACCESS_KEY_ID: accesskey, AWS_SECRET_ACCESS_KEY: secretkey}
    credentials_keys: Mapping[str, str] = field(
        default_factory=lambda: {
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
        metadata=parsed_by(yaml_boolean_as_text),
    )

    def validate(self) -> None:
        if self.endpoint_url is not None and not self.endpoint_url.startswith(("http://", "https://")):
            raise PipelineConfigError(
                f"cluster.data_s3.endpoint_url must be an http(s):// URL, got {self.endpoint_url!r}"
            )
        if self.credentials_secret is None:
            return
        if not _DNS_SUBDOMAIN.match(self.credentials_secret) or len(self.credentials_secret) > 253:
            raise PipelineConfigError(
                "cluster.data_s3.credentials_secret must be the name of a Secret (lowercase letters, digits, "
                f"'-', '.') or null, got {self.credentials_secret!r}"
            )
        unknown = sorted(set(self.credentials_keys) - set(S3_CREDENTIAL_VARIABLES))
        missing = [name for name in S3_CREDENTIAL_VARIABLES[:2] if not self.credentials_keys.get(name)]
        if unknown or missing:
            raise PipelineConfigError(
                f"cluster.data_s3.credentials_keys maps environment variables to keys of the Secret "
                f"{self.credentials_secret}: {', '.join(S3_CREDENTIAL_VARIABLES[:2])} are required, "
                f"{S3_CREDENTIAL_VARIABLES[2]} may be added; got {dict(self.credentials_keys)}"
            )

    def environment(self) -> dict[str, str]:
        """The variables botocore reads for the endpoint and region (the credentials come from the Secret)."""
        values = {"AWS_ENDPOINT_URL_S3": self.endpoint_url, "AWS_DEFAULT_REGION": self.region}
        return {name: value for name, value in values.items() if value}


def _default_node_selector() -> dict[str, str]:
    return {"nvidia.com/gpu.present": "true"}


def _default_pod_labels() -> dict[str, str]:
    return {"autophagy.io/role": "pipeline"}


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how the pipeline's tasks run on Kubernetes (compile-time settings)."""

    image: str | None = None  # None: $AUTOPHAGY_IMAGE, else autophagy.components.image.DEFAULT_IMAGE
    # The digest of the image the tasks run (the one `docker push` printed): a reference given by
    # tag is pinned to it (repo:tag@sha256:...), so a tag moved in the registry cannot change what runs.
    image_digest: str | None = None
    # The identity of every task's container (kfp-kubernetes set_security_context; KFP 2.17's
    # compiler adds allowPrivilegeEscalation: false, capabilities drop ALL, seccomp RuntimeDefault).
    run_as_user: int = IMAGE_UID
    run_as_group: int = IMAGE_UID
    gpu_steps: tuple[str, ...] = ("train", "sample", "evaluate")
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = 1
    # Data-parallel training: > 1 gives the train task that many GPUs and runs it under
    # torchrun --nproc_per_node=gpus_per_train in its pod (train.batch_size is the global batch).
    gpus_per_train: int = 1
    shm_size: str = "8Gi"  # /dev/shm (memory-backed emptyDir) of a train pod with gpus_per_train > 1, for NCCL
    # GPU steps only; label values, so an unquoted YAML `true` is the text "true"
    node_selector: Mapping[str, str] = field(
        default_factory=_default_node_selector, metadata=parsed_by(yaml_boolean_as_text)
    )
    tolerations: tuple[Toleration, ...] = (Toleration(),)  # GPU steps only
    cpu_resources: Resources = Resources()
    gpu_resources: Resources = Resources(cpu_request="4", cpu_limit="8", memory_request="16G", memory_limit="32G")
    step_resources: Mapping[str, Resources] = field(default_factory=dict)  # per-step overrides
    # A failed task is retried by resubmitting its KFP run (run_retries): Argo does not retry a pod
    # lost with its node (preemption, eviction: phase Error, which KFP's retry policy leaves alone),
    # KFP's cache skips the run's finished tasks and train resumes from its durable scratch state.
    # Argo's own retries of a failed pod (retries > 0) cost a Retry node and another copy of the
    # pod-spec patch per task in the run's status, about a quarter of its budget (docs/kubeflow.md).
    # Argo counts backoff_max_duration from the first attempt and makes it every retry pod's
    # deadline, so it is derived (retry_window_seconds); the backoff factor is an integer (Argo
    # parses it as one, at retry time).
    run_retries: int = 3
    retries: int = 0
    backoff_duration: str = "60s"
    backoff_factor: int = 2
    parallelism: int = 8  # KFP runs in flight at once (chains, seeds); 0: no limit
    window: int | None = None  # generations per chain run; None: as many as fit the backend (pipelines.budget)
    caching: bool = True
    timeout_seconds: int | None = None  # per task attempt (kfp.kubernetes.set_timeout); None: no limit
    # The PVC (ReadWriteMany; k8s/components/pipeline-access) where train keeps its resumable state,
    # so that a retried pod on another node continues the generation; None: state in the pod only.
    scratch_pvc: str | None = "autophagy-scratch"
    scratch_mount_path: str = "/var/lib/autophagy/scratch"
    # Every generation's data sets and models pushed to a DVC remote (docs/kubeflow.md); None: not versioned.
    dvc_remote: DvcRemote | None = None
    # Real data on a PVC, mounted into the prepare-data task (data.source: image-folder); None: data.path
    # must be something the pods reach without it (docs/kubeflow.md, "Real data the pods read").
    data_pvc: DataPvc | None = None
    # Real data in an object store (data.path: s3://...), read by the prepare-data task with these
    # endpoint and credentials; None: an s3:// data.path is refused (docs/kubeflow.md, same section).
    data_s3: DataS3 | None = None
    tracking_config_map: str = "autophagy-tracking"
    tracking_config_map_keys: tuple[str, ...] = TRACKING_CONFIG_MAP_KEYS
    tracking_secret: str = "autophagy-tracking-credentials"
    tracking_secret_keys: tuple[str, ...] = TRACKING_SECRET_KEYS
    pod_labels: Mapping[str, str] = field(default_factory=_default_pod_labels, metadata=parsed_by(yaml_boolean_as_text))
    service_account: str | None = "autophagy-pipeline"  # set per run at submit time (see pipelines.submit)
    image_pull_policy: str | None = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()

    def validate(self) -> ClusterConfig:
        from autophagy.components.image import ImageError, check_image

        if self.image is not None:
            try:
                check_image(self.image)
            except ImageError as err:
                raise PipelineConfigError(f"cluster.image: {err}") from None
        for step in self.gpu_steps:
            if step not in STEPS:
                raise PipelineConfigError(f"cluster.gpu_steps: unknown step {step!r}; steps are {', '.join(STEPS)}")
        for step in self.step_resources:
            if step not in STEPS:
                raise PipelineConfigError(
                    f"cluster.step_resources: unknown step {step!r}; steps are {', '.join(STEPS)}"
                )
        if self.gpu_steps and (not self.accelerator_type or self.accelerator_limit < 1):
            raise PipelineConfigError(
                "cluster.accelerator_type must be set and cluster.accelerator_limit >= 1 "
                f"when cluster.gpu_steps is not empty, got {self.accelerator_type!r}, {self.accelerator_limit}"
            )
        if self.gpus_per_train < 1:
            raise PipelineConfigError(f"cluster.gpus_per_train must be an integer >= 1, got {self.gpus_per_train}")
        if self.gpus_per_train > 1 and "train" not in self.gpu_steps:
            raise PipelineConfigError(
                f"cluster.gpus_per_train={self.gpus_per_train} needs train in cluster.gpu_steps "
                f"(got {list(self.gpu_steps)})"
            )
        if not _MEMORY.match(self.shm_size):
            raise PipelineConfigError(
                f"cluster.shm_size must be a memory quantity like 512M, 8G or 16Gi, got {self.shm_size!r}"
            )
        self.cpu_resources.validate("cluster.cpu_resources")
        self.gpu_resources.validate("cluster.gpu_resources")
        for step, resources in self.step_resources.items():
            resources.validate(f"cluster.step_resources.{step}")
        for i, toleration in enumerate(self.tolerations):
            toleration.validate(f"cluster.tolerations[{i}]")
        for name in ("retries", "run_retries", "parallelism"):
            if getattr(self, name) < 0:
                raise PipelineConfigError(f"cluster.{name} must be an integer >= 0, got {getattr(self, name)}")
        if not _DURATION.match(self.backoff_duration):
            raise PipelineConfigError(
                f"cluster.backoff_duration must be whole seconds like 60s, got {self.backoff_duration!r}"
            )
        if isinstance(self.backoff_factor, bool) or not isinstance(self.backoff_factor, int) or self.backoff_factor < 1:
            raise PipelineConfigError(
                f"cluster.backoff_factor must be an integer >= 1 (Argo reads it as an integer), "
                f"got {self.backoff_factor!r}"
            )
        if self.window is not None and self.window < 1:
            raise PipelineConfigError(f"cluster.window must be an integer >= 1 or null, got {self.window}")
        if self.dvc_remote is not None:
            self.dvc_remote.validate()
        if self.data_pvc is not None:
            self.data_pvc.validate()
        if self.data_s3 is not None:
            self.data_s3.validate()
        if self.scratch_pvc is not None and not self.scratch_mount_path.startswith("/"):
            raise PipelineConfigError(
                f"cluster.scratch_mount_path must be an absolute path, got {self.scratch_mount_path!r}"
            )
        if self.timeout_seconds is not None and self.timeout_seconds < 1:
            raise PipelineConfigError(f"cluster.timeout_seconds must be >= 1 or null, got {self.timeout_seconds}")
        for key, value in {**self.node_selector, **self.pod_labels}.items():
            if not isinstance(value, str) or not _LABEL_VALUE.match(value) or len(value) > 63:
                raise PipelineConfigError(
                    f"cluster: label value of {key!r} must be a valid Kubernetes label value "
                    f"(at most 63 characters: letters, digits, '-', '_', '.'), got {value!r}"
                )
        if self.image_pull_policy not in (None, "Always", "IfNotPresent", "Never"):
            raise PipelineConfigError(
                f"cluster.image_pull_policy must be Always, IfNotPresent or Never, got {self.image_pull_policy!r}"
            )
        if self.image_digest is not None and not _IMAGE_DIGEST.match(self.image_digest):
            raise PipelineConfigError(
                f"cluster.image_digest must look like sha256:<64 lowercase hex digits>, got {self.image_digest!r}"
            )
        for name in ("run_as_user", "run_as_group"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PipelineConfigError(f"cluster.{name} must be a non-root id (an integer >= 1), got {value!r}")
        if self.image is not None:
            self.pinned_image(self.image)
        return self

    def pinned_image(self, ref: str) -> str:
        """``ref`` pinned by :attr:`image_digest` when one is set: ``repo:tag`` becomes
        ``repo:tag@sha256:...`` (the kubelet pulls by the digest; the tag stays for people). A
        reference that carries a digest already keeps it; a different one is refused."""
        if self.image_digest is None:
            return ref
        name, at, digest = ref.partition("@")
        if not at:
            return f"{ref}@{self.image_digest}"
        if digest != self.image_digest:
            raise PipelineConfigError(
                f"image {ref!r} names digest {digest}, but cluster.image_digest is "
                f"{self.image_digest}; keep one of them"
            )
        return ref

    def accelerator_limit_of(self, step: str) -> int:
        """GPUs of a GPU step's pod: ``gpus_per_train`` for a data-parallel train, else ``accelerator_limit``."""
        if step == "train" and self.gpus_per_train > 1:
            return self.gpus_per_train
        return self.accelerator_limit

    @property
    def retry_window_seconds(self) -> int:
        """Argo's ``backoff.maxDuration`` for a task: long enough for every configured attempt to run
        to completion (each attempt ``timeout_seconds``, or :data:`UNBOUNDED_ATTEMPT_SECONDS` without a
        timeout) plus the backoff waits between them. Argo counts it from the first attempt's start
        and gives every retry pod that deadline (argo-workflows v4.0.5, ``processNodeRetries``)."""
        attempt = self.timeout_seconds or UNBOUNDED_ATTEMPT_SECONDS
        base = int(self.backoff_duration[:-1])
        waits = sum(base * self.backoff_factor**i for i in range(self.retries))
        return (self.retries + 1) * attempt + waits

    def resources_of(self, step: str) -> Resources:
        if step in self.step_resources:
            return self.step_resources[step]
        return self.gpu_resources if step in self.gpu_steps else self.cpu_resources


# ------------------------------------------------------------------------------ loading


def cluster_from_dict(raw: Mapping[str, Any] | None) -> ClusterConfig:
    """Build and validate a :class:`ClusterConfig` from plain data (the ``cluster:`` mapping)."""
    try:
        cluster = build_section(ClusterConfig, raw or {}, "cluster")
    except ConfigError as err:
        raise PipelineConfigError(str(err)) from None
    return cluster.validate()


def load_pipeline_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> tuple[ExperimentConfig, ClusterConfig]:
    """Load an experiment YAML with an optional ``cluster:`` section; apply ``-S`` overrides.

    ``cluster.*`` overrides go to the cluster options, every other one to the experiment, exactly
    as :func:`autophagy.config.load_config` applies them. ``path`` None: the embedded defaults.
    """
    raw = read_yaml_mapping(path)
    cluster_raw = raw.pop("cluster", None) or {}
    if not isinstance(cluster_raw, dict):
        raise PipelineConfigError(f"cluster must be a mapping, got {cluster_raw!r}")
    experiment_overrides = []
    for item in overrides:
        if item.strip().startswith("cluster."):
            apply_override(cluster_raw, item.strip()[len("cluster.") :])
        else:
            experiment_overrides.append(item)
    for item in experiment_overrides:
        apply_override(raw, item)
    raw.pop("dvc", None)  # as load_config: params.yaml's derived DVC chain is not part of the experiment
    return from_dict(raw), cluster_from_dict(cluster_raw)
