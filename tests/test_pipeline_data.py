"""Real data the pipeline's pods read (issue 14, item 7): an image-folder source on a PVC or in S3.

``configs/ffhq64-edm.yaml`` reads ``data/ffhq-64x64``, a folder on the user's machine that no pod
can reach: compiling it for a cluster is refused with the way out; with ``cluster.data_pvc`` the
``prepare-data`` task mounts the claim and reads ``data.path`` inside it; with ``data.path: s3://...``
and ``cluster.data_s3`` it gets the object store's endpoint and the credentials of a Secret.
(Reading an object store: tests/test_s3_data_source.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from autophagy.pipelines import PipelineConfigError, cli_compile, load_pipeline_config
from autophagy.pipelines.data_source import for_pods
from autophagy.pipelines.packages import compile_run
from autophagy.pipelines.runs import KfpRun, arguments

from autophagy.step_config import step_options

pytest.importorskip("kfp")

FFHQ = Path(__file__).resolve().parents[1] / "configs" / "ffhq64-edm.yaml"
IMAGE = "registry.example.com/ml/autophagy:3f2c1ab"


def test_an_image_folder_on_this_machine_is_refused_before_anything_is_compiled(tmp_path):
    with pytest.raises(PipelineConfigError) as err:
        cli_compile(FFHQ, ["loop.generations=1"], tmp_path / "p", image=IMAGE)
    text = str(err.value)
    assert "data.path 'data/ffhq-64x64' is a folder on this machine, which the pipeline's pods cannot reach" in text
    assert "cluster.data_pvc: {name: <claim>, mount_path: /var/lib/autophagy/data}" in text
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "path, message",
    [
        ("/home/me/ffhq", "is not inside the mount of cluster.data_pvc (ffhq-images at /var/lib/autophagy/data)"),
        ("../../etc", "is not inside the mount of cluster.data_pvc"),
        ("s3://bucket/ffhq.zip", "is in an object store: set cluster.data_s3 so that the prepare-data task"),
        ("gs://bucket/ffhq.zip", "or in an S3 object store (s3://bucket/prefix, s3://bucket/key.zip with"),
    ],
)
def test_a_path_the_claim_does_not_hold_is_refused(path, message):
    cfg, cluster = load_pipeline_config(FFHQ, [f"data.path={path}", "cluster.data_pvc={name: ffhq-images}"])
    with pytest.raises(PipelineConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        for_pods(cfg, cluster)


@pytest.mark.parametrize(
    "spec", ["{name: 'Bad_Name'}", "{name: ffhq, mount_path: relative/dir}", "{name: ffhq, mount_path: /}"]
)
def test_a_bad_data_pvc_is_refused(spec):
    with pytest.raises(PipelineConfigError, match=r"cluster\.data_pvc\.(name|mount_path)"):
        load_pipeline_config(FFHQ, [f"cluster.data_pvc={spec}"])


def test_the_prepare_task_mounts_the_claim_and_reads_the_folder_inside_it(tmp_path):
    overrides = ["loop.generations=1", "loop.lambdas=[0.5]", "cluster.data_pvc={name: ffhq-images, mount_path: /data}"]
    text = cli_compile(FFHQ, overrides, tmp_path / "p", image=IMAGE)
    assert text.startswith("compiled 4 packages")
    mounts = {}
    for package in (tmp_path / "p").glob("*.yaml"):
        spec, platform = yaml.safe_load_all(package.read_text())
        for label, executor in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
            for mount in executor.get("pvcMount", []):
                if mount["mountPath"] == "/data":
                    mounts[(package.stem, label)] = mount
    assert list(mounts) == [("data", "exec-prepare")]  # only the task that reads data.path
    [mount] = mounts.values()
    assert "ffhq-images" in yaml.safe_dump(mount)
    # What the submitter hands the data run: data.path as the pod sees it.
    cfg, cluster = load_pipeline_config(FFHQ, overrides)
    pod_cfg = for_pods(cfg, cluster)
    assert pod_cfg.data.path == "/data/data/ffhq-64x64" and cfg.data.path == "data/ffhq-64x64"
    options = arguments(pod_cfg, KfpRun("data", "data"), {})["options_prepare"]
    assert '"path":"/data/data/ffhq-64x64"' in options.replace(" ", "")
    assert step_options(pod_cfg, "prepare")["data"]["path"] == "/data/data/ffhq-64x64"
    absolute = for_pods(*load_pipeline_config(FFHQ, [*overrides, "data.path=/data/sets/ffhq.zip"]))
    assert absolute.data.path == "/data/sets/ffhq.zip"


def test_a_text_folder_is_read_inside_the_claim_and_never_from_a_url():
    """text-folder (.txt files) goes through the claim as image-folder does; an object store is refused."""
    text = Path(__file__).resolve().parents[1] / "configs" / "tinytext-lm.yaml"
    folder = ["data.source=text-folder", "data.path=corpus/txt"]
    cfg, cluster = load_pipeline_config(text, [*folder, "cluster.data_pvc={name: corpus, mount_path: /data}"])
    assert for_pods(cfg, cluster).data.path == "/data/corpus/txt"
    with pytest.raises(PipelineConfigError, match="is a folder on this machine, which the pipeline's pods cannot"):
        for_pods(*load_pipeline_config(text, folder))
    with pytest.raises(PipelineConfigError, match="text-folder reads a folder of .txt files on a PersistentVolume"):
        for_pods(*load_pipeline_config(text, ["data.source=text-folder", "data.path=s3://bucket/corpus"]))
    embedded, cluster = load_pipeline_config(text, [])  # python-docs: the corpus ships with Python
    assert for_pods(embedded, cluster) is embedded


def test_other_sources_need_no_claim():
    cfg, cluster = load_pipeline_config(None, [])
    assert for_pods(cfg, cluster) is cfg


# ------------------------------------------------------------------------------ an object store

MINIO = "http://minio-service.kubeflow:9000"
KFP_SECRET = (  # the credentials of the object store KFP deploys
    "credentials_secret: mlpipeline-minio-artifact, "
    "credentials_keys: {AWS_ACCESS_KEY_ID: accesskey, AWS_SECRET_ACCESS_KEY: secretkey}"
)
S3_OVERRIDES = [
    "loop.generations=1",
    "loop.lambdas=[0.5]",
    "data.path=s3://datasets/ffhq-64x64.zip",
    f"cluster.data_s3={{endpoint_url: {MINIO}, region: us-east-1, {KFP_SECRET}}}",
]


def executors(package: Path) -> tuple[dict, dict]:
    """``{executor: container}`` (importers: {}) and ``{executor: kubernetes platform config}`` of a package."""
    spec, platform = yaml.safe_load_all(package.read_text())
    containers = {label: e.get("container", {}) for label, e in spec["deploymentSpec"]["executors"].items()}
    return containers, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def secret_env(platform: dict, secret: str) -> dict[str, str]:
    """``{environment variable: key}`` that ``secret`` gives a task (its secretAsEnv entries)."""
    return {
        item["envVar"]: item["secretKey"]
        for entry in platform.get("secretAsEnv", [])
        if entry["secretName"] == secret
        for item in entry["keyToEnv"]
    }


def test_an_s3_path_compiles_and_only_prepare_data_gets_the_store_and_its_secret(tmp_path):
    text = cli_compile(FFHQ, S3_OVERRIDES, tmp_path / "p", image=IMAGE)
    assert text.startswith("compiled 4 packages")
    given = {}
    for package in sorted((tmp_path / "p").glob("*.yaml")):
        containers, platforms = executors(package)
        for label, container in containers.items():
            env = {item["name"]: item["value"] for item in container.get("env", [])}
            secrets = secret_env(platforms.get(label, {}), "mlpipeline-minio-artifact")
            if "AWS_ENDPOINT_URL_S3" in env or secrets:
                given[(package.stem, label)] = (env, secrets)
    assert list(given) == [("data", "exec-prepare")]
    assert "pvcMount" not in executors(tmp_path / "p" / "data.yaml")[1]["exec-prepare"]  # no claim needed
    [(env, secrets)] = given.values()
    assert env["AWS_ENDPOINT_URL_S3"] == MINIO and env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert secrets == {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"}
    # the pod reads data.path as written: no claim to resolve it in
    cfg, cluster = load_pipeline_config(FFHQ, S3_OVERRIDES)
    assert for_pods(cfg, cluster) is cfg
    assert step_options(cfg, "prepare")["data"]["path"] == "s3://datasets/ffhq-64x64.zip"


def test_an_s3_data_package_is_accepted_by_the_kfp_backend(tmp_path):
    from kfp_backend_check import check, skip_if_unavailable

    skip_if_unavailable()
    cfg, cluster = load_pipeline_config(FFHQ, S3_OVERRIDES)
    run = KfpRun("data", "data")
    package = compile_run(for_pods(cfg, cluster), cluster, IMAGE, run, tmp_path)
    report = check(package, arguments(cfg, run, {}), iterations=1, artifact_metadata_bytes=1024)
    assert report["valid"], report["error"]


def test_with_a_dvc_remote_on_the_same_secret_prepare_gets_the_credentials_once(tmp_path):
    remote = f"cluster.dvc_remote={{url: s3://mlpipeline/autophagy-dvc, endpoint_url: {MINIO}, {KFP_SECRET}}}"
    cfg, cluster = load_pipeline_config(FFHQ, [*S3_OVERRIDES, remote])
    package = compile_run(for_pods(cfg, cluster), cluster, IMAGE, KfpRun("data", "data"), tmp_path)
    _, platforms = executors(package)
    entries = [e for e in platforms["exec-prepare"]["secretAsEnv"] if e["secretName"] == "mlpipeline-minio-artifact"]
    assert len(entries) == 1  # one AWS_ACCESS_KEY_ID in the pod, not two
    assert secret_env(platforms["exec-prepare"], "mlpipeline-minio-artifact") == {
        "AWS_ACCESS_KEY_ID": "accesskey",
        "AWS_SECRET_ACCESS_KEY": "secretkey",
    }


@pytest.mark.parametrize(
    "remote, message",
    [
        (
            f"{{url: s3://mlpipeline/autophagy-dvc, endpoint_url: {MINIO}}}",  # the default Secret, not KFP's
            "cluster.data_s3 and cluster.dvc_remote name different credentials",
        ),
        (
            f"{{url: s3://mlpipeline/autophagy-dvc, {KFP_SECRET}}}",  # AWS S3 for DVC, the data on MinIO
            f"cluster.data_s3.endpoint_url is '{MINIO}' but cluster.dvc_remote.endpoint_url is unset",
        ),
    ],
)
def test_a_dvc_remote_that_disagrees_with_the_data_store_is_refused(remote, message):
    cfg, cluster = load_pipeline_config(FFHQ, [*S3_OVERRIDES, f"cluster.dvc_remote={remote}"])
    with pytest.raises(PipelineConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        for_pods(cfg, cluster)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{endpoint_url: minio:9000}", "cluster.data_s3.endpoint_url must be an http(s):// URL"),
        ("{credentials_secret: Bad_Name}", "cluster.data_s3.credentials_secret must be the name of a Secret"),
        ("{credentials_keys: {AWS_ACCESS_KEY_ID: accesskey}}", "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY are required"),
        (
            "{credentials_keys: {AWS_ACCESS_KEY_ID: a, AWS_SECRET_ACCESS_KEY: b, PASSWORD: c}}",
            "cluster.data_s3.credentials_keys maps environment variables",
        ),
        ("{bucket: ffhq}", "unknown option(s) cluster.data_s3.bucket; allowed: credentials_keys"),
    ],
)
def test_a_bad_data_s3_is_refused(spec, message):
    with pytest.raises(PipelineConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_pipeline_config(FFHQ, [f"cluster.data_s3={spec}"])


def test_a_store_without_a_secret_uses_the_pods_identity(tmp_path):
    # credentials_secret: null (e.g. IAM roles for service accounts): no Secret, the endpoint still given
    overrides = [*S3_OVERRIDES[:3], "cluster.data_s3={credentials_secret: null}"]
    cfg, cluster = load_pipeline_config(FFHQ, overrides)
    package = compile_run(for_pods(cfg, cluster), cluster, IMAGE, KfpRun("data", "data"), tmp_path)
    containers, platforms = executors(package)
    names = {entry["secretName"] for entry in platforms["exec-prepare"].get("secretAsEnv", [])}
    assert names == {"autophagy-tracking-credentials"}
    assert not any(item["name"].startswith("AWS_") for item in containers["exec-prepare"].get("env", []))
