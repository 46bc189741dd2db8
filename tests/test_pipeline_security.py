"""Every task pod of the pipeline runs non-root and locked down, and the image is pinned by digest.

* The compiled packages (kfp 2.17.3 + kfp-kubernetes 2.17.3) carry, for every container task, the
  security context of ``cluster.run_as_user``/``run_as_group`` with runAsNonRoot (kfp-kubernetes
  ``set_security_context``); before, the compiled pipeline had none.
* What the KFP 2.17.0 backend makes of them (``tests/kfp_backend``: the API server's own compiler;
  the container driver's pod-spec-patch built as its driver builds it): the executor template's
  main container gets allowPrivilegeEscalation false, capabilities drop ALL and seccomp
  RuntimeDefault from the compiler, and the pod-spec-patch of every task adds runAsUser/runAsGroup
  10001 and runAsNonRoot. ``tests/test_k8s_apiserver.py`` submits the resulting pod to a real API
  server's Pod Security admission (``restricted``).
* ``cluster.image_digest`` pins a reference given by tag (``repo:tag@sha256:...``) in every task;
  ``cluster.image`` may be given by digest; conflicting digests and bad values are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from autophagy.pipelines.cluster import cluster_from_dict, load_pipeline_config
from autophagy.pipelines.errors import PipelineConfigError
from autophagy.pipelines.packages import compile_experiment

IMAGE = "registry.example.com/ml/autophagy:3f2c1ab"
DIGEST = "sha256:" + "0123456789abcdef" * 4
EXPECTED = {"runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True}  # protojson writes int64 as a string


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict:
    cfg, cluster = load_pipeline_config(None, [f"cluster.image_digest={DIGEST}"])
    return {
        "cfg": cfg,
        "info": compile_experiment(cfg, cluster, cluster.pinned_image(IMAGE), tmp_path_factory.mktemp("packages")),
    }


def _spec_and_platform(path: str) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(Path(path).read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_task_of_every_package_has_the_security_context(packages):
    checked = 0
    for package in packages["info"]["packages"]:
        spec, executors = _spec_and_platform(package["path"])
        containers = {name for name, executor in spec["deploymentSpec"]["executors"].items() if "container" in executor}
        assert containers, package["path"]
        for name in containers:
            assert executors[name]["securityContext"] == EXPECTED, (package["path"], name)
            checked += 1
    assert checked >= 10


def test_every_task_runs_the_image_by_digest(packages):
    for package in packages["info"]["packages"]:
        spec, _ = _spec_and_platform(package["path"])
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e}
        assert images == {f"{IMAGE}@{DIGEST}"}, package["path"]


def test_security_context_and_digest_options_are_checked():
    cluster = cluster_from_dict({"run_as_user": 2000, "run_as_group": 3000})
    assert (cluster.run_as_user, cluster.run_as_group) == (2000, 3000)
    assert cluster_from_dict({}).run_as_user == 10001 and cluster_from_dict({}).image_digest is None
    for raw, message in (
        ({"run_as_user": 0}, "cluster.run_as_user must be a non-root id (an integer >= 1), got 0"),
        ({"run_as_group": 0}, "cluster.run_as_group must be a non-root id (an integer >= 1), got 0"),
        (
            {"image_digest": "sha256:abc"},
            "cluster.image_digest must look like sha256:<64 lowercase hex digits>, got 'sha256:abc'",
        ),
        ({"image_digest": "md5:" + "0" * 32}, "cluster.image_digest must look like sha256:"),
        (
            {"image": f"{IMAGE}@sha256:{'f' * 64}", "image_digest": DIGEST},
            f"image '{IMAGE}@sha256:{'f' * 64}' names digest sha256:{'f' * 64}, but cluster.image_digest is {DIGEST}; "
            "keep one of them",
        ),
    ):
        with pytest.raises(PipelineConfigError, match=re.escape(message)):
            cluster_from_dict(raw)


def test_pinned_image():
    by_digest = f"registry.example.com/ml/autophagy@{DIGEST}"
    assert cluster_from_dict({}).pinned_image(IMAGE) == IMAGE  # no digest known: the tag as given
    pinned = cluster_from_dict({"image_digest": DIGEST})
    assert pinned.pinned_image(IMAGE) == f"{IMAGE}@{DIGEST}"
    assert pinned.pinned_image(by_digest) == by_digest
    assert pinned.pinned_image(f"{IMAGE}@{DIGEST}") == f"{IMAGE}@{DIGEST}"
    assert cluster_from_dict({"image": by_digest}).image == by_digest  # cluster.image by digest alone


def test_pipeline_compile_cli_pins_the_image(tmp_path, autophagy_exe):
    import subprocess

    out = tmp_path / "packages"
    done = subprocess.run(
        [
            autophagy_exe,
            "pipeline",
            "compile",
            "-o",
            str(out),
            "--image",
            IMAGE,
            "-S",
            f"cluster.image_digest={DIGEST}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"image {IMAGE}@{DIGEST}" in done.stdout
    assert json.loads((out / "runs.json").read_text())["image"] == f"{IMAGE}@{DIGEST}"
    refused = subprocess.run(
        [
            autophagy_exe,
            "pipeline",
            "compile",
            "-o",
            str(tmp_path / "x"),
            "--image",
            f"{IMAGE}@sha256:{'f' * 64}",
            "-S",
            f"cluster.image_digest={DIGEST}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode != 0
    assert "but cluster.image_digest is" in refused.stderr and "Traceback" not in refused.stderr


def executor_pods(package: dict, cfg, tmp_path: Path) -> list[dict]:
    """The task pods the KFP 2.17.0 backend would make of a package: each executor template of the
    Workflow its compiler produced, with the pod-spec-patch the container driver computes for each
    task merged into the main container (Argo applies it as a strategic merge patch)."""
    from autophagy.pipelines.runs import KfpRun, arguments, chain_key, seed_key
    from kfp_backend_check import check
    from test_pipeline_backend import handoffs

    from autophagy import plan

    lam, seed = plan.chains(cfg)[0]
    kind = package["kind"]
    run = {
        "data": KfpRun("data", "data"),
        "generation-0": KfpRun("generation-0", seed_key(seed), seed=seed),
        "report": KfpRun("report", "report"),
    }.get(kind) or KfpRun(
        "chain", chain_key(lam, seed), lam=lam, seed=seed, first=max(2, package["first"]), last=package["last"]
    )
    workflow_path, nodes_path = tmp_path / "workflow.json", tmp_path / "nodes.json"
    report = check(
        Path(package["path"]), arguments(cfg, run, handoffs(cfg)), workflow_out=workflow_path, status_out=nodes_path
    )
    assert report["valid"], report["error"]
    templates = {t["name"]: t for t in json.loads(workflow_path.read_text())["spec"]["templates"]}
    pods = []
    for node in json.loads(nodes_path.read_text()).values():
        patch = next(
            (p["value"] for p in (node.get("outputs") or {}).get("parameters", []) if p["name"] == "pod-spec-patch"),
            None,
        )
        if node["templateName"] != "system-container-driver" or patch is None:
            continue
        executor = next(
            t for t in templates.values() if t.get("podSpecPatch") and t["name"].endswith("system-container-impl")
        )
        (patched,) = json.loads(patch)["containers"]
        main = {
            **executor["container"],
            "name": patched["name"],
            "image": patched["image"],  # Argo names it main
            "securityContext": {
                **executor["container"].get("securityContext", {}),
                **patched.get("securityContext", {}),
            },
        }
        pods.append(
            {
                "name": node["displayName"],
                "securityContext": executor.get("securityContext", {}),
                "initContainers": executor.get("initContainers", []),
                "containers": [main],
                "volumes": executor.get("volumes", []),
            }
        )
    return pods


@pytest.mark.parametrize("kind", ["data", "generation-0", "chain", "report"])
def test_the_backend_makes_every_task_pod_non_root_and_locked_down(packages, kind, tmp_path):
    from kfp_backend_check import skip_if_unavailable

    skip_if_unavailable()
    (package, *_) = [p for p in packages["info"]["packages"] if p["kind"] == kind]
    spec, _ = _spec_and_platform(package["path"])
    pods = executor_pods(package, packages["cfg"], tmp_path)
    tasks = [
        t
        for c in spec["components"].values()
        for t in c.get("dag", {}).get("tasks", {}).values()
        if spec["deploymentSpec"]["executors"]
        .get(spec["components"][t["componentRef"]["name"]].get("executorLabel", ""), {})
        .get("container")
    ]
    tasks += [
        t
        for t in spec["root"]["dag"]["tasks"].values()
        if spec["deploymentSpec"]["executors"]
        .get(spec["components"][t["componentRef"]["name"]].get("executorLabel", ""), {})
        .get("container")
    ]
    assert len(pods) == len(tasks) > 0
    for pod in pods:
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, pod["name"]
        (main,) = pod["containers"]
        assert main["image"] == f"{IMAGE}@{DIGEST}"
        for container in (*pod["initContainers"], main):
            sc = container["securityContext"]
            where = f"{pod['name']}/{container['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["runAsNonRoot"] is True, where
            assert sc.get("privileged") in (None, False), where
        assert (main["securityContext"]["runAsUser"], main["securityContext"]["runAsGroup"]) == (10001, 10001)
