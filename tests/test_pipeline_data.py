"""Real data the pipeline's pods read (issue 14, item 7): an image-folder source on a PVC.

``configs/ffhq64-edm.yaml`` reads ``data/ffhq-64x64``, a folder on the user's machine that no pod
can reach: compiling it for a cluster is refused with the way out; with ``cluster.data_pvc`` the
``prepare-data`` task mounts the claim and reads ``data.path`` inside it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from autophagy.pipelines import PipelineConfigError, cli_compile, load_pipeline_config
from autophagy.pipelines.data_source import for_pods
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
        ("s3://bucket/ffhq.zip", "data.source=image-folder reads a folder or .zip, not a URL"),
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


def test_other_sources_need_no_claim():
    cfg, cluster = load_pipeline_config(None, [])
    assert for_pods(cfg, cluster) is cfg
