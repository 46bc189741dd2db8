"""kfp-backend-check itself: the KFP 2.17.0 API server's compile-and-validate path, run on pipelines compiled
here with the kfp SDK, and its size report.

The first use builds the Go program (.ci/build_kfp_backend.sh; minutes when the cache is cold). Where the
KFP 2.17.0 source is not on the machine (no git mirror), the tests skip, saying so.
"""

# No `from __future__ import annotations`: kfp reads the components' annotations as types.
import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl, kubernetes
from kfp_backend_check import KfpBackendUsageError, check, skip_if_unavailable

# A cold first build (module downloads, the KFP backend's dependencies compiled) took ~200 s on two cores;
# it runs in the fixture, inside the first test's time limit.
pytestmark = pytest.mark.timeout(2400)


@pytest.fixture(scope="module", autouse=True)
def backend() -> Path:
    return skip_if_unavailable()


@dsl.component(base_image="python:3.11")
def make_items(n: int) -> list:
    return list(range(n))


@dsl.component(base_image="python:3.11")
def square(x: int, data: dsl.Input[dsl.Dataset]) -> int:
    return x * x


@dsl.component(base_image="python:3.11")
def echo(msg: str) -> str:
    return msg


@dsl.pipeline(name="backend-check-small")
def small_pipeline(uri: str = "gs://bucket/data.csv", n: int = 3):
    data = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset, reimport=False)
    with dsl.ParallelFor(items=[1, 2, 3], name="squares") as x:
        sq = square(x=x, data=data.output)
        sq.set_retry(num_retries=2)
        kubernetes.add_node_selector(sq, "pool", "gpu")
    make_items(n=n)


@dsl.pipeline(name="backend-check-needs-msg")
def needs_msg_pipeline(msg: str, times: int = 2):
    echo(msg=msg)


def _compile(func, path: Path) -> Path:
    compiler.Compiler().compile(func, str(path))
    return path


def _spec_tasks(spec: dict) -> int:
    """KFP tasks in the pipeline spec: the root DAG's and every sub-DAG's."""
    count = len(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        count += len(comp.get("dag", {}).get("tasks", {}))
    return count


def test_small_pipeline_validates_and_numbers_add_up(tmp_path):
    pipeline = _compile(small_pipeline, tmp_path / "small.yaml")
    spec, platform = yaml.safe_load_all(pipeline.read_text())
    assert "kubernetes" in platform["platforms"]  # the node selector travels in the platform spec

    report = check(
        pipeline,
        {"uri": "s3://bucket/other.csv"},
        workflow_out=tmp_path / "wf.json",
        status_out=tmp_path / "nodes.json",
    )
    assert report["exit_code"] == 0 and report["valid"], report.get("error")
    assert report["kfp_version"] == "2.17.0" and report["argo_version"] == "v4.0.5"

    wf_bytes = report["workflow_bytes"]
    assert wf_bytes == len((tmp_path / "wf.json").read_bytes()) > 0
    workflow = json.loads((tmp_path / "wf.json").read_text())
    assert workflow["kind"] == "Workflow" and workflow["metadata"]["namespace"] == "kubeflow"
    # RunWorkflow's own touches: the run id label and {{workflow.uid}} replaced by the run id.
    assert workflow["metadata"]["labels"]["pipeline/runid"] in json.dumps(workflow["spec"])
    assert "{{workflow.uid}}" not in json.dumps(workflow)
    assert report["templates"] == len(workflow["spec"]["templates"])
    assert report["workflow_parameters"] == len(workflow["spec"]["arguments"]["parameters"])
    assert 0 < report["workflow_parameter_bytes"] < wf_bytes
    assert sum(report["by_template_bytes"].values()) < wf_bytes
    assert set(report["by_template_bytes"]) == {t["name"] for t in workflow["spec"]["templates"]}
    # set_retry gives the retry flavour of the executor templates.
    assert "retry-system-container-impl" in report["by_template_bytes"]

    assert 0 < report["largest_argument"]["bytes"] <= wf_bytes
    assert report["largest_argument"]["where"]

    # Node count, from the model: entrypoint DAG, root-driver, root DAG; in root: the importer (1 Pod),
    # make-items (driver + executor DAG + Pod), the loop's iterator DAG with its iteration-driver and
    # TaskGroup; per iteration (3, from the raw item list): the iteration DAG, iteration-item-driver,
    # the loop body DAG, square-driver, the executor DAG and its Retry node + Pod.
    assert report["loops"] == [
        {"where": report["loops"][0]["where"], "iterations": 3, "source": "parameterIterator raw list"}
    ]
    assert report["nodes"] == 3 + 1 + 3 + 3 + 3 * 7 == 31
    assert report["nodes"] >= _spec_tasks(spec)
    assert report["nodes"] >= report["dag_tasks"]
    # Pods: root-driver, iteration-driver, importer, make-items' driver and executor, and per iteration
    # iteration-item-driver, square-driver and square's executor.
    assert report["pod_nodes"] == 2 + 1 + 2 + 3 * 3
    assert report["nodes_by_template"]["retry-system-container-impl"] == 2 * 3  # Retry node + Pod, each

    nodes = json.loads((tmp_path / "nodes.json").read_text())
    assert len(nodes) == report["nodes"]
    sizes = [len(json.dumps(n, separators=(",", ":"))) for n in nodes.values()]
    assert report["status_bytes"] == pytest.approx(sum(sizes), rel=0.02)
    assert report["bytes_per_node"]["max"] == report["largest_node"]["bytes"] <= report["status_bytes"]
    assert report["bytes_per_node"]["mean"] == pytest.approx(report["status_bytes"] / report["nodes"], abs=0.1)
    # The pod-spec-patch estimate carries the task's node selector and its loop item.
    drivers = [
        n
        for n in nodes.values()
        if n["templateName"] == "system-container-driver" and n["displayName"] == "square-driver"
    ]
    assert len(drivers) == 3
    patches = [
        json.loads(p["value"]) for n in drivers for p in n["outputs"]["parameters"] if p["name"] == "pod-spec-patch"
    ]
    assert all(p["nodeSelector"] == {"pool": "gpu"} for p in patches)
    executor_inputs = [
        json.loads(p["containers"][0]["command"][p["containers"][0]["command"].index("--executor_input") + 1])
        for p in patches
    ]
    assert sorted(ei["inputs"]["parameterValues"]["x"] for ei in executor_inputs) == [1, 2, 3]
    uri = executor_inputs[0]["inputs"]["artifacts"]["data"]["artifacts"][0]["uri"]
    assert len(uri) == report["assumptions"]["artifact_uri_bytes"] == 256


def test_bigger_runtime_values_give_a_bigger_status_estimate(tmp_path):
    pipeline = _compile(small_pipeline, tmp_path / "small.yaml")
    small = check(pipeline, artifact_uri_bytes=256, artifact_metadata_bytes=1024)
    big = check(pipeline, artifact_uri_bytes=4096, artifact_metadata_bytes=8192)
    assert small["workflow_bytes"] == big["workflow_bytes"]  # the Workflow itself does not change
    assert big["status_bytes"] > small["status_bytes"] + 3 * 3 * (4096 - 256 + 8192 - 1024)


def test_refused_specs_carry_the_backends_own_error(tmp_path):
    pipeline = _compile(small_pipeline, tmp_path / "small.yaml")
    text = pipeline.read_text()

    wrong_schema = tmp_path / "schema.yaml"
    wrong_schema.write_text(text.replace("schemaVersion: 2.1.0", "schemaVersion: 2.0.0"))
    report = check(wrong_schema)
    assert report["exit_code"] == 1 and not report["valid"]
    assert report["stage"] == "template"
    assert "KFP only supports schema version 2.1.0, but the pipeline spec has version 2.0.0" in report["error"]
    assert report["workflow_bytes"] == 0

    # A task that references a component the spec does not define: argocompiler.Compile refuses it.
    missing = tmp_path / "missing.yaml"
    spec, platform = yaml.safe_load_all(text)
    spec["root"]["dag"]["tasks"]["make-items"]["componentRef"]["name"] = "comp-not-there"
    missing.write_text(yaml.safe_dump(spec) + "---\n" + yaml.safe_dump(platform))
    report = check(missing)
    assert report["exit_code"] == 1 and report["stage"] == "run_workflow"
    assert 'cannot find component ref name="comp-not-there"' in report["error"]

    # A component name Argo's validation refuses as a template name (>128 characters): compiled, then
    # refused by ExecutionSpec.Validate - the Workflow exists, so its size is still reported.
    long_name = "comp-for-loop-" + "a" * 130
    too_long = tmp_path / "long.yaml"
    too_long.write_text(text.replace("comp-for-loop-2", long_name))
    report = check(too_long)
    assert report["exit_code"] == 1 and report["stage"] == "validate"
    assert "Failed to validate workflow" in report["error"] and "must be no more than 128 characters" in report["error"]
    assert report["workflow_bytes"] > 0


def test_missing_required_parameter_is_refused_like_validate_pipeline_job_inputs(tmp_path):
    pipeline = _compile(needs_msg_pipeline, tmp_path / "needs.yaml")

    report = check(pipeline)
    assert report["exit_code"] == 1 and report["stage"] == "run_workflow"
    assert "parameter msg is not optional, yet has neither default value nor user provided value" in report["error"]

    report = check(pipeline, {"msg": 3})
    assert report["exit_code"] == 1
    assert "input parameter msg requires type string" in report["error"]

    report = check(pipeline, {"msg": "hello", "surplus": 1})
    assert report["exit_code"] == 1
    assert "parameter(s) provided are not required by pipeline: surplus" in report["error"]

    report = check(pipeline, {"msg": "hello"}, workflow_out=tmp_path / "wf.json")
    assert report["exit_code"] == 0 and report["valid"], report.get("error")
    # The run's parameter, and the default of the other one, reach the root driver's runtime config.
    workflow = json.loads((tmp_path / "wf.json").read_text())
    entry = next(t for t in workflow["spec"]["templates"] if t["name"] == "entrypoint")
    driver = next(t for t in entry["dag"]["tasks"] if t["name"] == "root-driver")
    runtime_config = json.loads(
        next(p["value"] for p in driver["arguments"]["parameters"] if p["name"] == "runtime-config")
    )
    assert runtime_config["parameterValues"] == {"msg": "hello", "times": 2}


def test_usage_errors_raise(tmp_path):
    with pytest.raises(KfpBackendUsageError):
        check(tmp_path / "does-not-exist.yaml")
    pipeline = _compile(needs_msg_pipeline, tmp_path / "needs.yaml")
    with pytest.raises(KfpBackendUsageError):
        check(pipeline, iterations=-1)
