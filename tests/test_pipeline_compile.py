"""The Kubeflow pipeline, compiled for real and read back from its YAML.

The test config has 2 lambdas, 2 seeds and 3 generations after generation 0. The compiled
package is two YAML documents: the pipeline spec (``root.dag.tasks``, the loop DAGs under
``components``, the containers under ``deploymentSpec.executors``) and the platform spec
(``platforms.kubernetes.deploymentSpec.executors``: what kfp-kubernetes adds per executor).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from collections import Counter

import pytest
import yaml

from autophagy.config import ConfigError, format_lambda, load_config
from autophagy.pipelines import (
    ClusterConfig,
    PipelineConfigError,
    PipelineSubmitError,
    cli_compile,
    compile_pipeline,
    expected_tasks,
    load_pipeline_config,
)

log = logging.getLogger(__name__)

IMAGE = "registry.example.com/ml/autophagy:3f2c1ab"
GPU_STEPS = {"train", "sample", "evaluate"}
STEPS_PER_GENERATION = {"mix", "train", "sample", "evaluate"}


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, ["name=sweep", "loop.lambdas=[0, 0.5]", "loop.seeds=[0, 1]", "loop.generations=3"])


@pytest.fixture(scope="module")
def compiled(cfg, tmp_path_factory):
    """(pipeline spec, platform spec, compile info) of the test config."""
    out = tmp_path_factory.mktemp("pipeline") / "pipeline.yaml"
    started = time.perf_counter()
    info = compile_pipeline(cfg, out, ClusterConfig(), image=IMAGE)
    seconds = time.perf_counter() - started
    spec, platform = yaml.safe_load_all(out.read_text())
    message = (f"compiled {len(cfg.loop.lambdas)} lambdas x {len(cfg.loop.seeds)} seeds x {cfg.loop.generations} "
               f"generations: {info['task_definitions']} task definitions, {info['task_runs']} task runs, "
               f"{info['bytes'] / 1024:.1f} KiB YAML, compiled in {seconds:.2f} s")
    log.info(message)
    print(message)
    return spec, platform, info


# ------------------------------------------------------------------------------ YAML helpers


def dags(spec):
    """``{dag name: tasks}`` for the root DAG and every nested (ParallelFor) DAG."""
    out = {"root": spec["root"]["dag"]["tasks"]}
    out.update({name: c["dag"]["tasks"] for name, c in spec["components"].items() if "dag" in c})
    return out


def parent_of(spec):
    """``{loop DAG: (enclosing DAG, key of the loop task there)}``."""
    parents = {}
    for dag, tasks in dags(spec).items():
        for key, task in tasks.items():
            ref = task["componentRef"]["name"]
            if ref in spec["components"] and "dag" in spec["components"][ref]:
                parents[ref] = (dag, key)
    return parents


def leaf_tasks(spec):
    """``{display name: (dag, key, task)}`` of every container task (loops excluded)."""
    out = {}
    for dag, tasks in dags(spec).items():
        for key, task in tasks.items():
            if "dag" in spec["components"][task["componentRef"]["name"]]:
                continue
            name = task["taskInfo"]["name"]
            assert name not in out, f"two tasks are named {name}"
            out[name] = (dag, key, task)
    return out


def display(spec, dag, key):
    return dags(spec)[dag][key]["taskInfo"]["name"]


def producer(spec, dag, task, input_name, kind="artifacts"):
    """Display name of the task that produces ``input_name`` of ``task``, through loop boundaries."""
    parents = parent_of(spec)
    source = task["inputs"][kind][input_name]
    while True:
        key = "taskOutputArtifact" if kind == "artifacts" else "taskOutputParameter"
        if key in source:
            producer_task = dags(spec)[dag][source[key]["producerTask"]]
            loop = spec["components"][producer_task["componentRef"]["name"]]
            if "dag" not in loop:
                return display(spec, dag, source[key]["producerTask"])
            # dsl.Collected: the loop task's output is selected from a task inside the loop.
            [selector] = loop["dag"]["outputs"][kind][source[key]["outputArtifactKey"]]["artifactSelectors"]
            return display(spec, producer_task["componentRef"]["name"], selector["producerSubtask"])
        inner = "componentInputArtifact" if kind == "artifacts" else "componentInputParameter"
        channel = source[inner]
        dag, loop_key = parents[dag]
        source = dags(spec)[dag][loop_key]["inputs"][kind][channel]


def executor_of(spec, task):
    return spec["components"][task["componentRef"]["name"]]["executorLabel"]


def loop_multiplicity(spec, dag, parents=None):
    """How many times a task in ``dag`` runs: the product of its enclosing loops' item counts."""
    parents, count = parents or parent_of(spec), 1
    while dag != "root":
        parent, key = parents[dag]
        count *= len(json.loads(dags(spec)[parent][key]["parameterIterator"]["items"]["raw"]))
        dag = parent
    return count


# ------------------------------------------------------------------------------ structure


def test_task_counts_per_generation_and_per_lambda(cfg, compiled):
    spec, _, info = compiled
    tasks = leaf_tasks(spec)
    G = cfg.loop.generations
    # One definition per gen-<g>-<step>: the loops are not unrolled, the generations are.
    by_generation: dict[int, set[str]] = {}
    for name in tasks:
        _, g, step = name.split("-", 2)
        by_generation.setdefault(int(g), set()).add(step)
    assert by_generation[0] == {"tracking", "prepare", "features", "train", "sample", "evaluate"}
    for g in range(1, G):
        assert by_generation[g] == STEPS_PER_GENERATION, g
    assert by_generation[G] == STEPS_PER_GENERATION | {"collect", "report"}
    assert len(tasks) == info["task_definitions"] == 6 + 4 * G + 2

    # The loops: seeds outside, lambdas (items as dicts) inside, parallelism from the cluster config.
    loops = {task["taskInfo"]["name"]: task for d in dags(spec).values() for task in d.values() if "parameterIterator" in task}
    assert json.loads(loops["seeds"]["parameterIterator"]["items"]["raw"]) == [0, 1]
    assert json.loads(loops["lambdas"]["parameterIterator"]["items"]["raw"]) == [
        {"lam": format_lambda(lam)} for lam in cfg.loop.lambdas]
    # Runs per pipeline run: every gen >= 1 step once per (lambda, seed), gen 0 once per seed.
    runs = Counter({name: loop_multiplicity(spec, dag) for name, (dag, _, _) in tasks.items()})
    assert runs == Counter(expected_tasks(cfg))
    assert runs["gen-0-train"] == runs["gen-0-sample"] == 2  # shared by both lambdas of a seed
    for g in range(1, G + 1):
        for step in STEPS_PER_GENERATION:
            assert runs[f"gen-{g}-{step}"] == 2 * 2  # per lambda, per seed
    assert runs["gen-3-collect"] == 2 and runs["gen-3-report"] == runs["gen-0-prepare"] == 1
    assert sum(runs.values()) == info["task_runs"] == 3 + 2 * (3 + 2 * 4 * G + 1) + 1
    # Where each task lives.
    assert {name for name, (dag, _, _) in tasks.items() if dag == "root"} == {
        "gen-0-tracking", "gen-0-prepare", "gen-0-features", f"gen-{G}-report"}
    seed_dag = next(dag for dag, (parent, _) in parent_of(spec).items() if parent == "root")
    assert {name for name, (dag, _, _) in tasks.items() if dag == seed_dag} == {
        "gen-0-train", "gen-0-sample", "gen-0-evaluate", f"gen-{G}-collect"}


def test_dependency_chain(cfg, compiled):
    spec, _, _ = compiled
    tasks = leaf_tasks(spec)

    def source(name, input_name, kind="artifacts"):
        dag, _, task = tasks[name]
        return producer(spec, dag, task, input_name, kind)

    assert source("gen-0-train", "train_set") == "gen-0-prepare"
    assert source("gen-0-sample", "model") == "gen-0-train"
    assert source("gen-0-evaluate", "samples") == "gen-0-sample"
    assert source("gen-0-evaluate", "extractor") == "gen-0-features"
    assert source("gen-2-sample", "extractor") == "gen-0-features"  # curation rewards may need it
    # Generation 1 of every lambda mixes the one shared generation-0 sample set of its seed and
    # fine-tunes the shared generation-0 model.
    assert source("gen-1-mix", "synthetic") == "gen-0-sample"
    assert source("gen-1-train", "init") == "gen-0-train"
    assert source("gen-1-evaluate", "previous") == "gen-0-evaluate"
    for g in range(1, cfg.loop.generations + 1):
        assert source(f"gen-{g}-mix", "real") == "gen-0-prepare"
        assert source(f"gen-{g}-train", "train_set") == f"gen-{g}-mix"
        assert source(f"gen-{g}-sample", "model") == f"gen-{g}-train"
        assert source(f"gen-{g}-evaluate", "samples") == f"gen-{g}-sample"
        if g >= 2:
            assert source(f"gen-{g}-mix", "synthetic") == f"gen-{g - 1}-sample"
            assert source(f"gen-{g}-train", "init") == f"gen-{g - 1}-train"
            assert source(f"gen-{g}-evaluate", "previous") == f"gen-{g - 1}-evaluate"
        # lam comes from the lambda loop item, seed from the seed loop item.
        _, _, mix = tasks[f"gen-{g}-mix"]
        assert mix["inputs"]["parameters"]["lam"]["parameterExpressionSelector"] == 'parseJson(string_value)["lam"]'
    G = cfg.loop.generations
    assert source(f"gen-{G}-collect", "fragments") == f"gen-{G}-evaluate"  # Collected over the lambdas
    assert source(f"gen-{G}-report", "fragments") == f"gen-{G}-collect"  # Collected over the seeds
    # dependentTasks inside the lambda loop spell out the same chain.
    dag, key, task = tasks["gen-2-train"]
    deps = {display(spec, dag, k) for k in task["dependentTasks"]}
    assert deps == {"gen-2-mix", "gen-1-train"}
    dag, key, task = tasks["gen-2-mix"]
    assert {display(spec, dag, k) for k in task["dependentTasks"]} == {"gen-1-sample"}
    # Nothing that logs to MLflow starts before the tracking task made the runs.
    root = {t["taskInfo"]["name"]: t for t in dags(spec)["root"].values()}
    assert "tracking" in root["seeds"]["dependentTasks"]
    assert "tracking" in root[f"gen-{G}-report"]["dependentTasks"]
    assert spec["components"][root[f"gen-{G}-report"]["componentRef"]["name"]]["inputDefinitions"]["artifacts"][
        "fragments"]["isArtifactList"] is True  # dsl.Collected over the seeds


def test_caching_and_retries_on_every_task(compiled):
    spec, _, _ = compiled
    for name, (_, _, task) in leaf_tasks(spec).items():
        expected = name != "gen-0-tracking"  # never cached: it re-tags the MLflow runs with the KFP run id
        assert task.get("cachingOptions", {}).get("enableCache", False) is expected, name
        assert task["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "60s", "backoffFactor": 2.0,
                                       "backoffMaxDuration": "3600s"}, name


def test_gpu_only_on_gpu_steps_and_resources_everywhere(compiled):
    spec, platform, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    seen_gpu = set()
    for name, (_, _, task) in leaf_tasks(spec).items():
        step = name.split("-", 2)[2]
        label = executor_of(spec, task)
        resources = executors[label]["container"]["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert resources.get(key), (name, key)
        kube = k8s[label]
        if step in GPU_STEPS:
            seen_gpu.add(step)
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu", name
            assert resources["accelerator"]["resourceCount"] == "1", name
            assert kube["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}, name
            assert kube["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], name
            assert resources["resourceMemoryLimit"] == "32G", name
        else:
            assert "accelerator" not in resources, name
            assert "nodeSelector" not in kube and "tolerations" not in kube, name
            assert resources["resourceMemoryLimit"] == "8G", name
    assert seen_gpu == GPU_STEPS


def test_tracking_env_labels_and_pinned_image_on_every_executor(compiled):
    spec, platform, _ = compiled
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    labels = {executor_of(spec, task) for _, _, task in leaf_tasks(spec).values()}
    assert set(k8s) == labels == set(spec["deploymentSpec"]["executors"])
    for label in labels:
        kube = k8s[label]
        [config_map] = kube["configMapAsEnv"]
        assert config_map["configMapName"] == "autophagy-tracking" and config_map["optional"] is False
        assert {e["configMapKey"]: e["envVar"] for e in config_map["keyToEnv"]}["MLFLOW_TRACKING_URI"] == "MLFLOW_TRACKING_URI"
        [secret] = kube["secretAsEnv"]
        assert secret["secretName"] == "autophagy-tracking-credentials"
        assert {e["secretKey"] for e in secret["keyToEnv"]} == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
        assert kube["podMetadata"]["labels"]["autophagy.io/role"] == "pipeline"
        container = spec["deploymentSpec"]["executors"][label]["container"]
        assert container["image"] == IMAGE and not container["image"].endswith(":latest")
        # The component source is embedded; the body is a call into the installed package.
        assert "from autophagy.components import runtime" in container["command"][-1]
        assert "install_kfp_package" not in container["command"][-1] and "pip install" not in " ".join(container["command"])


def test_component_bodies_are_thin(compiled):
    """Each task embeds its component's source: keep them a few lines (and the YAML small)."""
    spec, _, info = compiled
    for label, executor in spec["deploymentSpec"]["executors"].items():
        source = executor["container"]["command"][-1]
        body = source[source.index("\ndef "):]
        assert len(body.strip().splitlines()) <= 12, label
    assert info["bytes"] < 200_000


# ------------------------------------------------------------------------------ options


def test_cluster_section_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "gpu-sweep",
        "loop": {"lambdas": [0, "inf"], "generations": 1},
        "cluster": {
            "image": "registry.example.com/autophagy@sha256:" + "a" * 64,
            "accelerator_type": "nvidia.com/mig-1g.10gb",
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4", "gpu": True},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                            {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
            "gpu_steps": ["train"],
            "step_resources": {"report": {"cpu_request": "500m", "memory_limit": "2Gi"}},
        },
    }))
    cfg, cluster = load_pipeline_config(path, ["cluster.retries=5", "cluster.parallelism=2", "train.lr=0.01"])
    assert cfg.name == "gpu-sweep" and cfg.train.lr == 0.01
    assert cluster.retries == 5 and cluster.parallelism == 2 and cluster.gpu_steps == ("train",)
    assert cluster.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4", "gpu": "true"}
    assert cluster.tolerations[1].value == "true"
    assert cluster.resources_of("report").cpu_request == "500m"
    assert cluster.resources_of("train") == cluster.gpu_resources
    assert cluster.resources_of("sample") == cluster.cpu_resources

    out = tmp_path / "p.yaml"
    compile_pipeline(cfg, out, cluster)
    spec, platform = yaml.safe_load_all(out.read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, (_, _, task) in leaf_tasks(spec).items():
        container = spec["deploymentSpec"]["executors"][executor_of(spec, task)]["container"]
        assert container["image"] == cluster.image
        assert task["retryPolicy"]["maxRetryCount"] == 5
        has_gpu = "accelerator" in container["resources"]
        assert has_gpu == name.endswith("-train"), name
        if has_gpu:
            assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/mig-1g.10gb"
            assert len(k8s[executor_of(spec, task)]["tolerations"]) == 2
    loops = {t["taskInfo"]["name"]: t for d in dags(spec).values() for t in d.values() if "parameterIterator" in t}
    assert loops["lambdas"]["iteratorPolicy"]["parallelismLimit"] == 2


@pytest.mark.parametrize("override, message", [
    ("cluster.retries=-1", "cluster.retries must be an integer >= 0"),
    ("cluster.gpu_steps=[train, paint]", "unknown step 'paint'"),
    ("cluster.colour=blue", "unknown option(s) cluster.colour"),
    ("cluster.image=ghcr.io/autophagy/autophagy:latest", "never use 'latest'"),
    ("cluster.image=ghcr.io/autophagy/autophagy", "has no tag or digest"),
    ("cluster.cpu_resources.memory_limit=lots", "cluster.cpu_resources.memory_limit must be a memory quantity"),
    ("cluster.tolerations=[{key: a, operator: Sometimes}]", "operator must be Exists or Equal"),
    ("cluster.backoff_duration=1m", "whole seconds like 60s"),
    ("loop.lambdas=[-1]", "lambda is the ratio"),
])
def test_invalid_options_name_the_option(override, message):
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(None, [override])
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_data_parallel_train_requests_n_gpus_and_runs_torchrun(cfg, compiled, tmp_path):
    """cluster.gpus_per_train=N: every train task asks for N GPUs, gets a memory-backed /dev/shm (NCCL) and
    passes gpus=N to its component, whose runtime starts ``torchrun --nproc_per_node=N``; other steps keep
    accelerator_limit. The default (1) trains in the component's own process."""
    from autophagy.components import runtime

    out = tmp_path / "pipeline.yaml"
    compile_pipeline(cfg, out, ClusterConfig(gpus_per_train=4), image=IMAGE)
    spec, platform = yaml.safe_load_all(out.read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    default_tasks = leaf_tasks(compiled[0])
    trains = 0
    for name, (_, _, task) in leaf_tasks(spec).items():
        step = name.split("-", 2)[2]
        resources = spec["deploymentSpec"]["executors"][executor_of(spec, task)]["container"]
        mounts = k8s[executor_of(spec, task)].get("emptyDirMounts")
        if step == "train":
            trains += 1
            assert resources["resources"]["accelerator"]["resourceCount"] == "4", name
            assert task["inputs"]["parameters"]["gpus"]["runtimeValue"]["constant"] == 4, name
            assert mounts == [{"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "8Gi"}]
            assert "init.path if init else None, gpus," in resources["command"][-1]  # the body hands N to the runtime
            assert default_tasks[name][2]["inputs"]["parameters"]["gpus"]["runtimeValue"]["constant"] == 1, name
        else:
            assert "gpus" not in task["inputs"].get("parameters", {}) and not mounts, name
            if step in GPU_STEPS:
                assert resources["resources"]["accelerator"]["resourceCount"] == "1", name
    assert trains == 1 + cfg.loop.generations  # every train task definition, generation 0's included
    command = runtime.torchrun_train_command("c.yaml", "data", "model", 2, 0, "0.5", "prev", 4, "result.json")
    assert command[0] == sys.executable
    assert command[1:8] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "autophagy.cli",
                            "train"]
    assert command[command.index("--lam") + 1] == "0.5" and command[command.index("--init") + 1] == "prev"
    assert command[command.index("--result") + 1] == "result.json"
    with pytest.raises(PipelineConfigError, match="cluster.gpus_per_train must be an integer >= 1"):
        ClusterConfig(gpus_per_train=0).validate()
    with pytest.raises(PipelineConfigError, match="cluster.gpus_per_train=2 needs train in cluster.gpu_steps"):
        ClusterConfig(gpus_per_train=2, gpu_steps=("sample",)).validate()


def test_image_reference_is_pinned(monkeypatch, cfg, tmp_path):
    from autophagy.components.image import DEFAULT_IMAGE, ImageError, resolve_image

    monkeypatch.delenv("AUTOPHAGY_IMAGE", raising=False)
    assert resolve_image() == DEFAULT_IMAGE and not DEFAULT_IMAGE.endswith(":latest")
    monkeypatch.setenv("AUTOPHAGY_IMAGE", "registry.example.com/autophagy:0123abc")
    assert resolve_image() == "registry.example.com/autophagy:0123abc"
    assert resolve_image("localhost:5000/autophagy:dev") == "localhost:5000/autophagy:dev"  # a port is not a tag
    for bad in ("autophagy:latest", "localhost:5000/autophagy", "autophagy@sha256:abc", "auto phagy:1"):
        with pytest.raises(ImageError):
            resolve_image(bad)
    monkeypatch.setenv("AUTOPHAGY_IMAGE", "autophagy:latest")
    with pytest.raises(PipelineConfigError, match="--image: .*latest"):
        cli_compile(None, [], tmp_path / "p.yaml")
    text = cli_compile(None, ["loop.generations=1"], tmp_path / "p.yaml", image="registry.example.com/autophagy:0123abc")
    assert text.startswith(f"compiled {tmp_path / 'p.yaml'}") and "registry.example.com/autophagy:0123abc" in text
    assert (tmp_path / "p.yaml").stat().st_size > 10_000


def test_accumulate_strategies_chain_a_pool_into_every_mix(tmp_path):
    for strategy in ("accumulate", "accumulate-subsample"):
        cfg = load_config(None, [f"loop.strategy={strategy}", "loop.generations=3", "loop.lambdas=[0.5, inf]"])
        info = compile_pipeline(cfg, tmp_path / "p.yaml", image=IMAGE)
        spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
        tasks = leaf_tasks(spec)
        assert {n for n in tasks if n.endswith("-pool")} == {"gen-1-pool", "gen-2-pool", "gen-3-pool"}
        assert info["task_definitions"] == len(tasks) == 6 + 5 * 3 + 2
        assert info["task_runs"] == sum(expected_tasks(cfg).values()) == 3 + 1 * (3 + 2 * 5 * 3 + 1) + 1
        for g in (1, 2, 3):
            dag, _, mix = tasks[f"gen-{g}-mix"]
            assert producer(spec, dag, mix, "synthetic") == f"gen-{g}-pool"
            dag, _, pool = tasks[f"gen-{g}-pool"]
            assert producer(spec, dag, pool, "samples") == f"gen-{g - 1}-sample"
            if g == 1:
                assert "previous" not in pool["inputs"]["artifacts"]
            else:
                assert producer(spec, dag, pool, "previous") == f"gen-{g - 1}-pool"


def test_fresh_real_draws_generation_zero_in_its_own_mix(tmp_path):
    cfg = load_config(None, ["loop.strategy=fresh-real", "data.n_train=500", "loop.generations=2"])
    info = compile_pipeline(cfg, tmp_path / "p.yaml", image=IMAGE)
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    tasks = leaf_tasks(spec)
    dag, _, train0 = tasks["gen-0-train"]
    assert producer(spec, dag, train0, "train_set") == "gen-0-mix"
    dag, _, mix0 = tasks["gen-0-mix"]
    assert producer(spec, dag, mix0, "real") == "gen-0-prepare" and "synthetic" not in mix0["inputs"]["artifacts"]
    dag, _, mix2 = tasks["gen-2-mix"]
    assert producer(spec, dag, mix2, "real") == "gen-0-prepare" and producer(spec, dag, mix2, "synthetic") == "gen-1-sample"
    assert info["task_runs"] == sum(expected_tasks(cfg).values()) and expected_tasks(cfg)["gen-0-mix"] == 1


@pytest.mark.parametrize("strategy", ["replace", "accumulate"])
def test_stop_on_collapse_gives_every_later_task_the_chains_history(tmp_path, strategy):
    overrides = [f"loop.strategy={strategy}", "loop.generations=3", "loop.collapse_ratio=2"]
    text = cli_compile(None, [*overrides, "loop.stop_on_collapse=true"], tmp_path / "p.yaml", image=IMAGE)
    assert "once a chain collapses, its later tasks only mark their outputs stopped" in text
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    tasks = leaf_tasks(spec)
    steps = ("pool", "mix", "train", "sample") if strategy == "accumulate" else ("mix", "train", "sample")
    for step in steps:
        assert "history" not in tasks[f"gen-1-{step}"][2]["inputs"]["artifacts"], step  # generation 0 never collapses
        for g in (2, 3):
            dag, _, task = tasks[f"gen-{g}-{step}"]
            assert producer(spec, dag, task, "history") == f"gen-{g - 1}-evaluate", (step, g)
    for g in (2, 3):
        dag, _, evaluate = tasks[f"gen-{g}-evaluate"]
        assert producer(spec, dag, evaluate, "previous") == f"gen-{g - 1}-evaluate"
    # Without the option nothing waits for an evaluation but the next evaluation.
    plain = cli_compile(None, overrides, tmp_path / "plain.yaml", image=IMAGE)
    assert "note: loop.stop_on_collapse" not in plain
    spec, _ = yaml.safe_load_all((tmp_path / "plain.yaml").read_text())
    assert all("history" not in task["inputs"].get("artifacts", {}) for _, _, task in leaf_tasks(spec).values())


def test_no_generations_still_compiles(tmp_path):
    cfg = load_config(None, ["loop.generations=0"])
    info = compile_pipeline(cfg, tmp_path / "p.yaml", image=IMAGE)
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    assert set(leaf_tasks(spec)) == {"gen-0-tracking", "gen-0-prepare", "gen-0-features", "gen-0-train",
                                     "gen-0-sample", "gen-0-evaluate", "gen-0-report"}
    assert info["task_runs"] == sum(expected_tasks(cfg).values())


# ------------------------------------------------------------------------------ submit, imports


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_submit_to_an_unreachable_host_fails_fast_and_names_it(cfg):
    from autophagy.pipelines import submit

    host = f"http://127.0.0.1:{_closed_port()}"
    started = time.perf_counter()
    with pytest.raises(PipelineSubmitError, match=f"cannot reach the Kubeflow Pipelines API at {host}"):
        submit(host, cfg, image=IMAGE, timeout=3)
    assert time.perf_counter() - started < 10
    with pytest.raises(PipelineSubmitError, match="http:// or https://"):
        submit("ml-pipeline.kubeflow:8888", cfg, image=IMAGE)


def test_cli_submit_reports_config_errors_before_contacting_the_host():
    from autophagy.pipelines import cli_submit

    with pytest.raises(ConfigError, match="unknown option"):
        cli_submit(f"http://127.0.0.1:{_closed_port()}", None, ["loop.colour=red"])
    with pytest.raises(PipelineSubmitError, match="cannot reach"):
        cli_submit(f"http://127.0.0.1:{_closed_port()}", None, ["loop.generations=1"], image=IMAGE, timeout=2)


def test_the_library_never_imports_kfp():
    code = ("import sys; import autophagy, autophagy.cli, autophagy.loop, autophagy.report, autophagy.tracking, "
            "autophagy.components, autophagy.components.runtime, autophagy.components.image, autophagy.pipelines, "
            "autophagy.pipelines.errors; "
            "bad = sorted(m for m in sys.modules if m == 'kfp' or m.startswith('kfp.')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class _FakeKFP:
    """Just enough of the KFP v2beta1 REST API for kfp.Client to create an experiment and a run."""

    def __init__(self):
        import http.server
        import threading

        self.requests: list[tuple[str, str, dict, dict]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake.requests.append(("GET", self.path, dict(self.headers), {}))
                if self.path.startswith("/apis/v2beta1/healthz"):
                    return self._reply({"multi_user": False})
                return self._reply({})  # experiments list: none yet

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                fake.requests.append(("POST", self.path, dict(self.headers), body))
                if self.path == "/apis/v2beta1/experiments":
                    return self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
                return self._reply({"run_id": "run-1", "display_name": body.get("display_name"),
                                    "experiment_id": body.get("experiment_id")})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_submit_sends_the_compiled_run_with_service_account_and_token(tmp_path, monkeypatch):
    """The request kfp.Client makes, checked on a stand-in API (a real KFP server is not available here)."""
    from autophagy.pipelines import cli_submit

    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    fake = _FakeKFP()
    try:
        text = cli_submit(fake.host, None, ["name=tiny", "loop.lambdas=[0, inf]", "loop.generations=1"],
                          experiment="autophagy-tests", run_name="first", image=IMAGE, token_path=str(token))
    finally:
        fake.close()
    assert text.startswith(f"submitted run first (run-1) to {fake.host}, KFP experiment autophagy-tests")
    assert text.endswith(f"{fake.host}/#/runs/details/run-1")
    [run] = [body for method, path, _, body in fake.requests if method == "POST" and path == "/apis/v2beta1/runs"]
    assert run["display_name"] == "first" and run["experiment_id"] == "exp-1"
    assert run["service_account"] == "autophagy-pipeline"
    spec = run["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "autophagy-tiny"
    executors = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all(e["podMetadata"]["labels"]["autophagy.io/role"] == "pipeline" for e in executors.values())
    posted = [headers for method, _, headers, _ in fake.requests if method == "POST"]
    assert posted and all(h.get("authorization", h.get("Authorization")) == "Bearer s3cr3t-token" for h in posted)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_config_compiles_to_a_pipeline(path, tmp_path):
    """Every experiment of configs/ runs as a KFP pipeline: it compiles, with one task run per
    (generation, step) of every lambda and seed (two generations: the unrolled structure repeats,
    and the whole 20-generation spec takes this file's helpers minutes to walk)."""
    cfg = load_config(path, ["loop.generations=2"])
    info = compile_pipeline(cfg, tmp_path / "p.yaml", image=IMAGE)
    spec, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    parents = parent_of(spec)
    runs = Counter({name: loop_multiplicity(spec, dag, parents) for name, (dag, _, _) in leaf_tasks(spec).items()})
    assert runs == Counter(expected_tasks(cfg)) and sum(runs.values()) == info["task_runs"]
    assert runs[f"gen-{cfg.loop.generations}-evaluate"] == len(cfg.loop.lambdas) * len(cfg.loop.seeds)
