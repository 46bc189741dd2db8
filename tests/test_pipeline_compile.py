"""The experiment's KFP runs, compiled for real and read back from their YAML.

The test config has 2 lambdas, 2 seeds and 3 generations after generation 0, in chain runs of 2
generations: packages ``data``, ``generation-0``, ``chain-gen-001-002``, ``chain-gen-003-003`` and
``report``. A package is two YAML documents: the pipeline spec (``root.dag.tasks``, the components,
the containers under ``deploymentSpec.executors``) and the platform spec (what kfp-kubernetes adds).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from autophagy.pipelines import (
    ClusterConfig,
    PipelineConfigError,
    PipelineSubmitError,
    cli_compile,
    compile_experiment,
    load_pipeline_config,
)
from autophagy.pipelines.runs import (
    FAN_IN,
    KfpRun,
    arguments,
    chain_key,
    count_runs,
    merge_tree,
    next_runs,
    seed_key,
)

from autophagy.config import ConfigError, load_config
from autophagy.step_config import BOOKKEEPING_ENV, step_options, to_json
from autophagy.tracking import CONFIG_KEY_ENV, config_key

IMAGE = "registry.example.com/ml/autophagy:3f2c1ab"
GPU_STEPS = {"train", "sample", "evaluate"}


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, ["name=sweep", "loop.lambdas=[0, 0.5]", "loop.seeds=[0, 1]", "loop.generations=3"])


@pytest.fixture(scope="module")
def compiled(cfg, tmp_path_factory):
    """``{package name: (pipeline spec, platform spec)}`` and the plan (runs.json)."""
    out = tmp_path_factory.mktemp("packages")
    info = compile_experiment(cfg, ClusterConfig(window=2).validate(), IMAGE, out)
    packages = {}
    for package in info["packages"]:
        spec, platform = yaml.safe_load_all(Path(package["path"]).read_text())
        packages[Path(package["path"]).stem] = (
            spec,
            platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"],
        )
    assert json.loads((out / "runs.json").read_text()) == json.loads(json.dumps(info))
    return packages, info


def tasks(spec) -> dict:
    """``{display name: task}`` of the root DAG and its loops (an importer's name is ``import-<what>``; a
    generation task's name without its chain's label ``· λ=... · seed ...``)."""
    out = {}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for key, task in dag["tasks"].items():
            if "dag" not in spec["components"][task["componentRef"]["name"]]:
                out[task["taskInfo"]["name"].split(" · ")[0]] = {**task, "key": key}  # without the chain's label
    return out


def step_of(task) -> str:
    """The step a task runs: its component's name (``comp-train``, ``comp-train-2`` for a variant)."""
    return re.sub(r"-\d+$", "", task["componentRef"]["name"].removeprefix("comp-"))


def source(spec, name, input_name) -> str:
    """The display name of the task whose output feeds ``input_name`` of task ``name``."""
    by_key = {t["key"]: n for n, t in tasks(spec).items()}
    ref = tasks(spec)[name]["inputs"]["artifacts"][input_name]["taskOutputArtifact"]
    return by_key[ref["producerTask"]]


def executor(spec, task) -> str:
    return spec["components"][task["componentRef"]["name"]]["executorLabel"]


# ------------------------------------------------------------------------------ structure


def test_the_experiment_is_small_runs(cfg, compiled):
    packages, info = compiled
    assert set(packages) == {"data", "generation-0", "chain-gen-001-002", "chain-gen-003-003", "report"}
    assert info["window"] == 2 and info["chains"] == 4 and info["seeds"] == 2
    assert info["runs"] == count_runs(cfg, 2) == 1 + 2 + 4 * 2 + 1
    assert all(p["fits"] for p in info["packages"])
    names = {name: set(tasks(spec)) for name, (spec, _) in packages.items()}
    assert names["data"] == {"prepare-data", "feature-extractor", "handoff"}
    imports = {"import-real-train", "import-real-test", "import-extractor"}
    assert names["generation-0"] == imports | {"gen-0-train", "gen-0-sample", "gen-0-evaluate", "handoff"}
    chain = imports | {"import-model", "import-samples", "import-history", "handoff"}
    assert names["chain-gen-001-002"] == chain | {
        f"gen-{g}-{s}" for g in (1, 2) for s in ("mix", "train", "sample", "evaluate")
    }
    assert names["chain-gen-003-003"] == chain | {f"gen-3-{s}" for s in ("mix", "train", "sample", "evaluate")}
    assert names["report"] == {"import-fragment", "report", "handoff"}
    pipeline_names = {spec["pipelineInfo"]["name"] for spec, _ in packages.values()}
    assert pipeline_names == {"autophagy-data", "autophagy-generation-0", "autophagy-chain", "autophagy-report"}


def test_a_chain_window_continues_from_what_the_last_one_handed_off(compiled):
    spec, _ = compiled[0]["chain-gen-001-002"]
    assert source(spec, "gen-1-mix", "synthetic") == "import-samples"
    assert source(spec, "gen-1-mix", "real") == "import-real-train"
    assert source(spec, "gen-1-train", "init") == "import-model"
    assert source(spec, "gen-1-evaluate", "previous") == "import-history"
    assert source(spec, "gen-2-mix", "synthetic") == "gen-1-sample"
    assert source(spec, "gen-2-train", "init") == "gen-1-train"
    assert source(spec, "gen-2-train", "train_set") == "gen-2-mix"
    assert source(spec, "gen-2-sample", "model") == "gen-2-train"
    assert source(spec, "gen-2-evaluate", "samples") == "gen-2-sample"
    assert source(spec, "gen-2-evaluate", "previous") == "gen-1-evaluate"
    assert source(spec, "handoff", "model") == "gen-2-train"
    assert source(spec, "handoff", "samples") == "gen-2-sample"
    assert source(spec, "handoff", "history") == "gen-2-evaluate"
    importers = {n: t for n, t in tasks(spec).items() if n.startswith("import-")}
    assert {t["inputs"]["parameters"]["uri"]["componentInputParameter"] for t in importers.values()} == {
        "real_train_uri",
        "real_test_uri",
        "extractor_uri",
        "model_uri",
        "samples_uri",
        "history_uri",
    }
    for label, e in spec["deploymentSpec"]["executors"].items():
        if "importer" in e:
            assert e["importer"]["reimport"] is False if "reimport" in e["importer"] else True, label


def test_the_config_is_passed_once_and_each_task_gets_only_its_steps_options(cfg, compiled):
    packages, _ = compiled
    for name, (spec, _) in packages.items():
        parameters = spec["root"]["inputDefinitions"]["parameters"]
        for task_name, task in tasks(spec).items():
            for input_name, value in task["inputs"].get("parameters", {}).items():
                constant = value.get("runtimeValue", {}).get("constant")
                assert not (isinstance(constant, str) and len(constant) > 64), (name, task_name, input_name)
            step = step_of(task)
            if "options" in task["inputs"].get("parameters", {}):
                assert task["inputs"]["parameters"]["options"] == {"componentInputParameter": f"options_{step}"}
                assert f"options_{step}" in parameters
    # Where to log is in the pods' environment, the same in every task, outside the cache keys.
    spec, _ = packages["chain-gen-001-002"]
    for label, e in spec["deploymentSpec"]["executors"].items():
        if "container" in e:
            env = {v["name"]: v["value"] for v in e["container"].get("env", [])}
            assert json.loads(env[BOOKKEEPING_ENV])["name"] == "sweep" and env[CONFIG_KEY_ENV] == config_key(cfg), label


def _cache_key_material(spec, task_name, run_arguments):
    """What KFP 2.17's driver hashes into a task's cache key (cacheutils.GenerateCacheKey): input parameter
    values, input artifacts (by producer: importers by URI), the output specs, command + args, image."""
    task = tasks(spec)[task_name]
    by_key = {t["key"]: t for t in tasks(spec).values()}
    params = {}
    for name, value in task["inputs"].get("parameters", {}).items():
        params[name] = (
            value["runtimeValue"]["constant"]
            if "runtimeValue" in value
            else run_arguments[value["componentInputParameter"]]
        )
    artifacts = {}
    for name, value in task["inputs"].get("artifacts", {}).items():
        producer = by_key[value["taskOutputArtifact"]["producerTask"]]
        artifacts[name] = (
            run_arguments[producer["inputs"]["parameters"]["uri"]["componentInputParameter"]]
            if producer["taskInfo"]["name"].startswith("import-")
            else _cache_key_material(spec, producer["taskInfo"]["name"].split(" · ")[0], run_arguments)
        )
    component = spec["components"][task["componentRef"]["name"]]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    return json.dumps(
        [
            params,
            artifacts,
            component.get("outputDefinitions"),
            container["command"],
            container["args"],
            container["image"],
        ],
        sort_keys=True,
        default=str,
    )


def test_changing_evaluate_k_keeps_every_cache_key_but_the_evaluations(cfg, tmp_path):
    """KFP's cache key of a task covers its inputs; changing ``evaluate.k`` must not retrain anything."""
    changed = load_config(
        None, ["name=sweep", "loop.lambdas=[0, 0.5]", "loop.seeds=[0, 1]", "loop.generations=3", "evaluate.k=5"]
    )
    handoffs = {
        "data": {"uris": {"real_train": "u1", "real_test": "u2", "extractor": "u3"}, "real_rows": 1497},
        seed_key(0): {"uris": {"model": "m", "samples": "s", "history": "h"}},
    }
    run = KfpRun("chain", chain_key(0.5, 0), lam=0.5, seed=0, first=1, last=2)
    material = []
    for c, folder in ((cfg, "a"), (changed, "b")):
        info = compile_experiment(c, ClusterConfig(window=2).validate(), IMAGE, tmp_path / folder)
        path = next(p["path"] for p in info["packages"] if p["kind"] == "chain" and p["first"] == 1)
        spec, _ = yaml.safe_load_all(Path(path).read_text())
        material.append((spec, arguments(c, run, handoffs)))
    (spec_a, args_a), (spec_b, args_b) = material
    for name in tasks(spec_a):
        if name.startswith("import-") or name == "handoff":
            continue
        same = _cache_key_material(spec_a, name, args_a) == _cache_key_material(spec_b, name, args_b)
        assert same is (not name.endswith("-evaluate")), name
    assert (
        args_a["options_train"] == args_b["options_train"] and args_a["options_evaluate"] != args_b["options_evaluate"]
    )


def test_the_kfp_ui_names_each_generation_task_and_run_by_its_chain_and_experiment_tasks_by_their_job(cfg, tmp_path):
    """A window's package is compiled per chain: its generation tasks read ``gen-2-train · λ=0.5 · seed 1``
    in the KFP UI, and only the names differ from another chain's package (display names are not in
    KFP's cache key, so a chain still finds what another experiment's identical chain cached)."""
    from autophagy.pipelines.packages import compile_run

    cluster = ClusterConfig(window=2).validate()
    handoffs = {
        "data": {"uris": {"real_train": "u1", "real_test": "u2", "extractor": "u3"}, "real_rows": 1497},
        seed_key(1): {"uris": {"model": "m", "samples": "s", "history": "h"}},
    }
    specs = {}
    for lam in (0.5, float("inf")):
        run = KfpRun("chain", chain_key(lam, 1), lam=lam, seed=1, first=1, last=2)
        spec, _ = yaml.safe_load_all(compile_run(cfg, cluster, IMAGE, run, tmp_path / str(lam)).read_text())
        specs[lam] = (spec, arguments(cfg, run, handoffs))
    names = {t["taskInfo"]["name"] for t in tasks(specs[0.5][0]).values()}
    assert {
        "gen-1-mix · λ=0.5 · seed 1",
        "gen-2-train · λ=0.5 · seed 1",
        "gen-2-evaluate · λ=0.5 · seed 1",
        "handoff",
        "import-model",
    } <= names
    assert "gen-2-train · λ=inf · seed 1" in {t["taskInfo"]["name"] for t in tasks(specs[float("inf")][0]).values()}
    for name in tasks(specs[0.5][0]):
        if not name.startswith("import-") and name != "handoff":  # same inputs would give the same cache keys
            (a, args), (b, _) = specs[0.5], specs[float("inf")]
            assert _cache_key_material(a, name, args) == _cache_key_material(b, name, args), name
    generation0, _ = yaml.safe_load_all(
        compile_run(cfg, cluster, IMAGE, KfpRun("generation-0", seed_key(1), seed=1), tmp_path / "g0").read_text()
    )
    assert "gen-0-train · seed 1" in {t["taskInfo"]["name"] for t in tasks(generation0).values()}
    # Experiment-level tasks are named for their job, never gen-<g>-<step>.
    for kind, expected in (
        ("data", {"prepare-data", "feature-extractor", "handoff"}),
        ("report", {"import-fragment", "report", "handoff"}),
    ):
        spec, _ = yaml.safe_load_all(compile_run(cfg, cluster, IMAGE, KfpRun(kind, kind), tmp_path / kind).read_text())
        assert set(tasks(spec)) == expected
    big = load_config(None, ["loop.lambdas=[0, 0.5]", "loop.generations=3", f"loop.seeds={list(range(40))}"])
    merge = compile_run(big, cluster, IMAGE, KfpRun("collect", "collect-1-0"), tmp_path / "collect")
    spec, _ = yaml.safe_load_all(merge.read_text())
    assert set(tasks(spec)) == {"import-fragment", "collect-fragments", "handoff"}
    # Run names: the experiment, then the chain.
    assert (
        KfpRun("chain", "k", lam=0.5, seed=1, first=3, last=4).run_name("sweep") == "sweep · λ=0.5 · seed 1 · gen 3-4"
    )
    assert KfpRun("generation-0", "seed-1", seed=1).run_name("sweep") == "sweep · seed 1 · gen 0"
    assert KfpRun("report", "report").run_name("sweep") == "sweep · report"
    assert len(KfpRun("chain", "k", lam=0.5, seed=1, first=3, last=4).run_name("x" * 300)) == 128


def test_caching_everywhere_but_the_handoff_and_no_pod_retries_by_default(compiled):
    packages, _ = compiled
    for _name, (spec, _) in packages.items():
        for task_name, task in tasks(spec).items():
            if task_name.startswith("import-"):
                continue
            assert task.get("cachingOptions", {}).get("enableCache", False) is (task_name != "handoff"), task_name
            assert "retryPolicy" not in task, task_name


def test_pod_retries_get_a_window_every_attempt_fits_in(tmp_path, cfg):
    cluster = ClusterConfig(
        retries=2, backoff_duration="60s", backoff_factor=3, timeout_seconds=7200, window=2
    ).validate()
    assert cluster.retry_window_seconds == 3 * 7200 + 60 + 180
    info = compile_experiment(cfg, cluster, IMAGE, tmp_path)
    spec, _ = yaml.safe_load_all(Path(info["packages"][2]["path"]).read_text())
    for task_name, task in tasks(spec).items():
        if not task_name.startswith("import-"):
            assert task["retryPolicy"] == {
                "maxRetryCount": 2,
                "backoffDuration": "60s",
                "backoffFactor": 3.0,
                "backoffMaxDuration": f"{3 * 7200 + 240}s",
            }, task_name
    unbounded = ClusterConfig(retries=1).validate()
    assert unbounded.retry_window_seconds == 2 * 14 * 24 * 3600 + 60  # without a timeout: two weeks per attempt
    with pytest.raises(PipelineConfigError, match="backoff_factor must be an integer"):
        load_pipeline_config(None, ["cluster.backoff_factor=1.5"])


def test_gpu_only_on_gpu_steps_and_resources_everywhere(compiled):
    spec, k8s = compiled[0]["chain-gen-001-002"]
    seen = set()
    for name, task in tasks(spec).items():
        if name.startswith("import-"):
            continue
        step = step_of(task)
        label = executor(spec, task)
        resources = spec["deploymentSpec"]["executors"][label]["container"]["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert resources.get(key), (name, key)
        kube = k8s[label]
        if step in GPU_STEPS:
            seen.add(step)
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu", name
            assert kube["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}, name
            assert kube["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        else:
            assert "accelerator" not in resources and "nodeSelector" not in kube, name
        # train keeps its resumable state on the durable scratch volume; nothing else mounts it
        mounts = kube.get("pvcMount", [])
        assert (
            mounts
            == [
                {
                    "constant": "autophagy-scratch",
                    "mountPath": "/var/lib/autophagy/scratch",
                    "pvcNameParameter": {"runtimeValue": {"constant": "autophagy-scratch"}},
                }
            ]
        ) is (step == "train")
    assert seen == GPU_STEPS


def test_tracking_env_labels_and_pinned_image_on_every_executor(compiled):
    for _name, (spec, k8s) in compiled[0].items():
        for label, e in spec["deploymentSpec"]["executors"].items():
            if "importer" in e:
                continue
            kube = k8s[label]
            [config_map] = kube["configMapAsEnv"]
            assert config_map["configMapName"] == "autophagy-tracking"
            [secret] = kube["secretAsEnv"]
            assert secret["secretName"] == "autophagy-tracking-credentials"
            assert kube["podMetadata"]["labels"]["autophagy.io/role"] == "pipeline"
            container = e["container"]
            assert container["image"] == IMAGE
            body = container["command"][-1]
            assert "from autophagy.components import runtime" in body and "pip install" not in " ".join(
                container["command"]
            )
            assert len(body[body.index("\ndef ") :].strip().splitlines()) <= 14, label


def test_data_parallel_train_requests_n_gpus_and_runs_torchrun(cfg, tmp_path):
    from autophagy.distributed import torchrun_train_command

    info = compile_experiment(cfg, ClusterConfig(gpus_per_train=4, window=2).validate(), IMAGE, tmp_path)
    spec, platform = yaml.safe_load_all(Path(info["packages"][2]["path"]).read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    trains = [(n, t) for n, t in tasks(spec).items() if n.startswith("gen-") and n.endswith("-train")]
    assert len(trains) == 2
    for name, task in trains:
        resources = spec["deploymentSpec"]["executors"][executor(spec, task)]["container"]["resources"]
        assert resources["accelerator"]["resourceCount"] == "4", name
        assert task["inputs"]["parameters"]["gpus"]["runtimeValue"]["constant"] == 4, name
        assert {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "8Gi"} in k8s[
            executor(spec, task)
        ]["emptyDirMounts"]
    command = torchrun_train_command("o.json", "data", "model", 2, 0, "0.5", "prev", 4, "result.json")
    assert command[0] == sys.executable
    assert command[1:8] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "autophagy.cli",
        "train",
    ]
    assert command[command.index("--step-options") + 1] == "o.json" and command[command.index("--init") + 1] == "prev"
    with pytest.raises(PipelineConfigError, match="cluster.gpus_per_train must be an integer >= 1"):
        ClusterConfig(gpus_per_train=0).validate()


def test_accumulate_hands_the_pool_on_from_window_to_window(tmp_path):
    cfg = load_config(None, ["loop.strategy=accumulate", "loop.generations=3", "loop.lambdas=[0.5, inf]"])
    info = compile_experiment(cfg, ClusterConfig(window=2).validate(), IMAGE, tmp_path)
    first, second = (
        yaml.safe_load_all(Path(p["path"]).read_text()).__next__() for p in info["packages"] if p["kind"] == "chain"
    )
    assert "previous" not in tasks(first)["gen-1-pool"]["inputs"]["artifacts"]
    assert source(first, "gen-1-pool", "samples") == "import-samples"
    assert source(first, "gen-2-pool", "previous") == "gen-1-pool"
    assert source(first, "gen-2-mix", "synthetic") == "gen-2-pool"
    assert source(first, "handoff", "pooled") == "gen-2-pool"
    assert source(second, "gen-3-pool", "previous") == "import-pool"
    assert source(second, "gen-3-pool", "samples") == "import-samples"


def test_fresh_real_draws_generation_zero_in_its_own_mix(tmp_path):
    cfg = load_config(None, ["loop.strategy=fresh-real", "data.n_train=500", "loop.generations=2"])
    info = compile_experiment(cfg, ClusterConfig().validate(), IMAGE, tmp_path)
    spec, _ = yaml.safe_load_all(Path(info["packages"][1]["path"]).read_text())
    assert source(spec, "gen-0-train", "train_set") == "gen-0-mix"
    assert source(spec, "gen-0-mix", "real") == "import-real-train"
    assert tasks(spec)["gen-0-mix"]["inputs"]["parameters"]["fresh_real"]["runtimeValue"]["constant"] is True


def test_stop_on_collapse_gives_stoppable_generations_the_chains_history(tmp_path):
    cfg = load_config(None, ["loop.generations=4", "loop.collapse_ratio=2", "loop.stop_on_collapse=true"])
    info = compile_experiment(cfg, ClusterConfig(window=2).validate(), IMAGE, tmp_path)
    first, second = (
        yaml.safe_load_all(Path(p["path"]).read_text()).__next__() for p in info["packages"] if p["kind"] == "chain"
    )
    for step in ("mix", "train", "sample"):
        assert "history" not in tasks(first)[f"gen-1-{step}"]["inputs"]["artifacts"], step  # never collapsed before
        assert source(first, f"gen-2-{step}", "history") == "gen-1-evaluate"
        assert source(second, f"gen-3-{step}", "history") == "import-history"
        assert source(second, f"gen-4-{step}", "history") == "gen-3-evaluate"
    assert tasks(first)["gen-1-evaluate"]["inputs"]["parameters"]["stoppable"]["runtimeValue"]["constant"] is False
    assert tasks(first)["gen-2-evaluate"]["inputs"]["parameters"]["stoppable"]["runtimeValue"]["constant"] is True


def test_no_generations_runs_generation_zero_and_reports(tmp_path):
    cfg = load_config(None, ["loop.generations=0", "loop.seeds=[0, 1]"])
    info = compile_experiment(cfg, ClusterConfig().validate(), IMAGE, tmp_path)
    assert [p["kind"] for p in info["packages"]] == ["data", "generation-0", "report"]
    assert info["runs"] == 1 + 2 + 1


# ------------------------------------------------------------------------------ what runs when


def _records(cfg, chains_at: dict | None = None, extra: dict | None = None) -> dict:
    records = {"data": {"uris": {"real_train": "t", "real_test": "v", "extractor": "e"}, "real_rows": 100}}
    records.update({seed_key(s): {"uris": {"model": "m", "samples": "s", "history": "h"}} for s in cfg.loop.seeds})
    for (lam, seed), (generation, collapsed) in (chains_at or {}).items():
        records[chain_key(lam, seed)] = {
            "uris": {"model": "m", "samples": "s", "history": f"h-{lam}-{seed}"},
            "generation": generation,
            "collapsed_at": collapsed,
        }
    return {**records, **(extra or {})}


def test_next_runs_follows_the_hand_offs(cfg):
    assert next_runs(cfg, {}, 2, set()) == [KfpRun("data", "data")]
    assert next_runs(cfg, {}, 2, {"data"}) == []
    after_data = next_runs(cfg, {"data": _records(cfg)["data"]}, 2, set())
    assert after_data == [KfpRun("generation-0", "seed-0", seed=0), KfpRun("generation-0", "seed-1", seed=1)]
    first_windows = next_runs(cfg, _records(cfg), 2, set())
    assert [(r.key, r.first, r.last) for r in first_windows] == [
        ("lam-0-seed-0", 1, 2),
        ("lam-0.5-seed-0", 1, 2),
        ("lam-0-seed-1", 1, 2),
        ("lam-0.5-seed-1", 1, 2),
    ]
    at = {(0.0, 0): (2, None), (0.5, 0): (3, None), (0.0, 1): (1, None), (0.5, 1): (3, None)}
    resumed = next_runs(cfg, _records(cfg, at), 2, {"lam-0-seed-1"})
    assert [(r.key, r.first, r.last) for r in resumed] == [("lam-0-seed-0", 3, 3)]  # the one in flight is not doubled
    done = {key: (3, None) for key in at}
    assert next_runs(cfg, _records(cfg, done), 2, set()) == [KfpRun("report", "report")]
    reported = _records(cfg, done, {"report": {"uris": {"run_dir": "r"}}})
    assert next_runs(cfg, reported, 2, set()) == []  # nothing new: the report stands
    assert next_runs(cfg, reported, 2, set(), stale=True) == [KfpRun("report", "report")]  # a chain moved on
    args = arguments(cfg, KfpRun("report", "report"), _records(cfg, done))
    assert args["fragment_uris"] == ["h-0.0-0", "h-0.5-0", "h-0.0-1", "h-0.5-1"]


def test_a_collapsed_chain_stops_only_with_stop_on_collapse(cfg):
    collapsed = {(0.0, 0): (3, None), (0.5, 0): (1, 1), (0.0, 1): (3, None), (0.5, 1): (3, None)}
    assert [r.key for r in next_runs(cfg, _records(cfg, collapsed), 2, set())] == ["lam-0.5-seed-0"]
    stopping = load_config(
        None,
        [
            "name=sweep",
            "loop.lambdas=[0, 0.5]",
            "loop.seeds=[0, 1]",
            "loop.generations=3",
            "loop.collapse_ratio=2",
            "loop.stop_on_collapse=true",
        ],
    )
    assert next_runs(stopping, _records(stopping, collapsed), 2, set()) == [KfpRun("report", "report")]


def test_more_chains_than_one_run_may_import_are_collected_first():
    cfg = load_config(None, [f"loop.seeds={list(range(20))}", "loop.generations=1"])  # 4 lambdas x 20 seeds
    tree = merge_tree(cfg)
    assert [key for key, _ in tree] == ["collect-1-0", "collect-1-1", "collect-1-2", "report"]
    assert [len(inputs) for _, inputs in tree] == [FAN_IN, FAN_IN, 80 - 2 * FAN_IN, 3]
    done = {(lam, seed): (1, None) for lam in cfg.loop.lambdas for seed in cfg.loop.seeds}
    first = next_runs(cfg, _records(cfg, done), 5, set())
    assert [r.key for r in first] == ["collect-1-0", "collect-1-1", "collect-1-2"]
    collected = {key: {"uris": {"history": key}} for key, _ in tree[:3]}
    assert next_runs(
        cfg, _records(cfg, done, collected), 5, set(), merged={"collect-1-0", "collect-1-1"}, stale=True
    ) == [KfpRun("collect", "collect-1-2")]
    report = next_runs(cfg, _records(cfg, done, collected), 5, set(), merged={k for k, _ in tree[:3]}, stale=True)
    assert report == [KfpRun("report", "report")]
    assert arguments(cfg, report[0], _records(cfg, done, collected))["fragment_uris"] == [k for k, _ in tree[:3]]


# ------------------------------------------------------------------------------ options


def test_cluster_section_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "gpu-sweep",
                "loop": {"lambdas": [0, "inf"], "generations": 1},
                "cluster": {
                    "image": "registry.example.com/autophagy@sha256:" + "a" * 64,
                    "accelerator_type": "nvidia.com/mig-1g.10gb",
                    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4", "gpu": True},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
                    ],
                    "gpu_steps": ["train"],
                    "step_resources": {"report": {"cpu_request": "500m", "memory_limit": "2Gi"}},
                    "scratch_pvc": None,
                },
            }
        )
    )
    cfg, cluster = load_pipeline_config(path, ["cluster.run_retries=5", "cluster.parallelism=2", "train.lr=0.01"])
    assert cfg.name == "gpu-sweep" and cfg.train.lr == 0.01
    assert cluster.run_retries == 5 and cluster.parallelism == 2 and cluster.gpu_steps == ("train",)
    assert cluster.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4", "gpu": "true"}
    assert cluster.resources_of("report").cpu_request == "500m"
    info = compile_experiment(cfg, cluster, cluster.image, tmp_path / "out")
    spec, platform = yaml.safe_load_all(Path(info["packages"][2]["path"]).read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, task in tasks(spec).items():
        if name.startswith("import-"):
            continue
        container = spec["deploymentSpec"]["executors"][executor(spec, task)]["container"]
        assert container["image"] == cluster.image
        has_gpu = "accelerator" in container["resources"]
        assert has_gpu == name.endswith("-train"), name
        assert "pvcMount" not in k8s[executor(spec, task)], name  # scratch_pvc: null
        if has_gpu:
            assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/mig-1g.10gb"
            assert len(k8s[executor(spec, task)]["tolerations"]) == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("cluster.run_retries=-1", "cluster.run_retries must be an integer >= 0"),
        ("cluster.gpu_steps=[train, paint]", "unknown step 'paint'"),
        ("cluster.colour=blue", "unknown option(s) cluster.colour"),
        ("cluster.image=ghcr.io/autophagy/autophagy:latest", "never use 'latest'"),
        ("cluster.image=ghcr.io/autophagy/autophagy", "has no tag or digest"),
        ("cluster.cpu_resources.memory_limit=lots", "cluster.cpu_resources.memory_limit must be a memory quantity"),
        ("cluster.tolerations=[{key: a, operator: Sometimes}]", "operator must be Exists or Equal"),
        ("cluster.backoff_duration=1m", "whole seconds like 60s"),
        ("cluster.backoff_factor=1.5", "backoff_factor"),
        ("cluster.window=0", "cluster.window must be an integer >= 1"),
        ("cluster.scratch_mount_path=scratch", "must be an absolute path"),
        ("loop.lambdas=[-1]", "lambda is the ratio"),
    ],
)
def test_invalid_options_name_the_option(override, message):
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(None, [override])
    assert message in str(err.value)


def test_a_window_that_cannot_fit_is_refused_with_the_numbers(tmp_path):
    cfg, cluster = load_pipeline_config(None, ["loop.generations=12", "cluster.window=12"])
    with pytest.raises(PipelineConfigError) as err:
        compile_experiment(cfg, cluster, IMAGE, tmp_path)
    text = str(err.value)
    assert "the chain run of digits-edm does not fit a KFP run" in text and "status_bytes" in text
    assert "KiB > 1024 KiB" in text and "Lower cluster.window" in text


def test_cli_compile_writes_every_package_and_names_the_image(monkeypatch, tmp_path):
    from autophagy.components.image import DEFAULT_IMAGE, resolve_image
    from autophagy.pipelines import cli_submit

    monkeypatch.delenv("AUTOPHAGY_IMAGE", raising=False)
    assert resolve_image(require_published=False) == DEFAULT_IMAGE and not DEFAULT_IMAGE.endswith(":latest")
    # No --image, no cluster.image, no $AUTOPHAGY_IMAGE: the default tag is published nowhere, so refuse
    # (with the commands that make an image) instead of writing packages whose every pod cannot pull.
    for attempt in (
        lambda: cli_compile(None, ["loop.generations=1"], tmp_path / "p"),
        lambda: cli_submit("http://127.0.0.1:9", None, ["loop.generations=1"], timeout=1),
    ):
        with pytest.raises(PipelineConfigError) as err:
            attempt()
        text = str(err.value)
        assert f"the default {DEFAULT_IMAGE} is published by no registry" in text
        assert "docker build -t REGISTRY/autophagy:$TAG" in text and "docker push REGISTRY/autophagy:$TAG" in text
        assert ".ci/build_image.sh" in text and "--image REGISTRY/autophagy:$TAG" in text
    assert not (tmp_path / "p").exists()
    monkeypatch.setenv("AUTOPHAGY_IMAGE", "autophagy:latest")
    with pytest.raises(PipelineConfigError, match="--image: .*latest"):
        cli_compile(None, [], tmp_path / "p")
    text = cli_compile(None, ["loop.generations=1"], tmp_path / "p", image="registry.example.com/autophagy:0123abc")
    assert (
        text.startswith(f"compiled 4 packages into {tmp_path / 'p'}")
        and "registry.example.com/autophagy:0123abc" in text
    )
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "chain-gen-001-001.yaml",
        "data.yaml",
        "generation-0.yaml",
        "report.yaml",
        "runs.json",
    ]


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_config_compiles_to_runs_that_fit(path, tmp_path):
    cfg, cluster = load_pipeline_config(path)
    info = compile_experiment(cfg, cluster, IMAGE, tmp_path)
    assert all(p["fits"] for p in info["packages"]) and info["window"] >= 1
    covered = [g for p in info["packages"] if p["kind"] == "chain" for g in range(p["first"], p["last"] + 1)]
    assert covered == list(range(1, cfg.loop.generations + 1))


# ------------------------------------------------------------------------------ submit, imports


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_submit_to_an_unreachable_host_fails_fast_and_names_it():
    from autophagy.pipelines import cli_submit

    host = f"http://127.0.0.1:{_closed_port()}"
    started = time.perf_counter()
    with pytest.raises(PipelineSubmitError, match=f"cannot reach the Kubeflow Pipelines API at {host}"):
        cli_submit(host, None, ["loop.generations=1"], image=IMAGE, timeout=3)
    assert time.perf_counter() - started < 10
    with pytest.raises(PipelineSubmitError, match="http:// or https://"):
        cli_submit("ml-pipeline.kubeflow:8888", None, [], image=IMAGE)
    with pytest.raises(ConfigError, match="unknown option"):
        cli_submit(host, None, ["loop.colour=red"])


def test_the_library_never_imports_kfp():
    """The library runs without kfp; planning a Kubeflow experiment needs neither kfp nor torch."""
    planning = (
        "import sys; import autophagy.plan, autophagy.step_config, autophagy.pipelines, autophagy.pipelines.runs, "
        "autophagy.pipelines.budget, autophagy.pipelines.errors; "
        "bad = sorted(m for m in sys.modules if m in ('kfp', 'torch') or m.startswith('kfp.')); assert not bad, bad"
    )
    library = (
        "import sys; import autophagy, autophagy.cli, autophagy.loop, autophagy.report, autophagy.tracking, "
        "autophagy.components, autophagy.components.runtime, autophagy.components.image; "
        "bad = sorted(m for m in sys.modules if m == 'kfp' or m.startswith('kfp.')); assert not bad, bad"
    )
    for code in (planning, library):
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class _FakeKFP:
    """Just enough of the KFP v2beta1 REST API for kfp.Client: experiments, runs, and every run SUCCEEDED.

    A stand-in: no KFP API server runs here. The runs it accepts execute nothing, so they record no
    hand-off, which the submitter must notice."""

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
                if self.path.startswith("/apis/v2beta1/runs/"):
                    return self._reply({"run_id": "run-1", "state": "SUCCEEDED"})
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self._reply({"experiments": [{"experiment_id": "exp-1", "display_name": "autophagy-tests"}]})
                return self._reply({})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                fake.requests.append(("POST", self.path, dict(self.headers), body))
                if self.path == "/apis/v2beta1/experiments":
                    return self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
                return self._reply(
                    {
                        "run_id": "run-1",
                        "display_name": body.get("display_name"),
                        "experiment_id": body.get("experiment_id"),
                    }
                )

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_submit_sends_the_first_run_with_its_parameters_and_notices_a_missing_hand_off(tmp_path, monkeypatch):
    """The requests kfp.Client makes, checked on a stand-in API: the data run with its parameters, the
    service account and the bearer token; then, since nothing ran, the submitter stops and says why."""
    from autophagy.pipelines import cli_submit

    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    fake = _FakeKFP()
    try:
        with pytest.raises(PipelineSubmitError, match="finished without recording where their outputs are"):
            cli_submit(
                fake.host,
                None,
                ["name=tiny", "loop.lambdas=[0, inf]", "loop.generations=1"],
                experiment="autophagy-tests",
                image=IMAGE,
                token_path=str(token),
                poll_seconds=0.01,
                log=lambda _: None,
            )
    finally:
        fake.close()
    [run] = [body for method, path, _, body in fake.requests if method == "POST" and path == "/apis/v2beta1/runs"]
    assert run["display_name"] == "tiny · data" and run["service_account"] == "autophagy-pipeline"
    spec = run["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "autophagy-data"
    parameters = run["runtime_config"]["parameters"]
    cfg = load_config(None, ["name=tiny", "loop.lambdas=[0, inf]", "loop.generations=1"])
    assert parameters["options_prepare"] == to_json(step_options(cfg, "prepare"))
    assert parameters["handoff_key"] == "data"
    posted = [headers for method, _, headers, _ in fake.requests if method == "POST"]
    assert posted and all(h.get("authorization", h.get("Authorization")) == "Bearer s3cr3t-token" for h in posted)


@pytest.mark.parametrize("how", ["--cookie-file", "--cookies", "$KF_PIPELINES_TOKEN", "--existing-token"])
def test_submit_logs_in_to_a_dex_protected_kubeflow_with_a_session_cookie_or_a_token(
    how, tmp_path, monkeypatch, capsys
):
    """Multi-user Kubeflow behind Dex: `autophagy pipeline submit` passes the session cookie (or a bearer
    token) the user gives to kfp.Client, and every request of the KFP API carries it (a stand-in API
    on a loopback port records the headers)."""
    from autophagy.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    for name in ("KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_TOKEN", "KF_PIPELINES_COOKIES"):
        monkeypatch.delenv(name, raising=False)
    cookie = "authservice_session=MTc2NDYxOTk0N3xOd3dBTkZK"
    login = {"--cookies": ["--cookies", cookie], "--existing-token": ["--existing-token", "dex-id-token"]}.get(how, [])
    if how == "--cookie-file":
        (tmp_path / "cookies").write_text(cookie + "\n")
        login = ["--cookie-file", str(tmp_path / "cookies")]
    if how == "$KF_PIPELINES_TOKEN":
        monkeypatch.setenv("KF_PIPELINES_TOKEN", "dex-id-token")
    fake = _FakeKFP()
    try:
        rc = main(
            [
                "pipeline",
                "submit",
                "--host",
                fake.host,
                "--image",
                IMAGE,
                "--experiment",
                "autophagy-tests",
                "--poll-seconds",
                "0.01",
                *login,
                "-S",
                "name=tiny",
                "-S",
                "loop.lambdas=[0]",
                "-S",
                "loop.generations=1",
            ]
        )
    finally:
        fake.close()
    assert rc != 0 and "finished without recording where their outputs are" in capsys.readouterr().err
    api = [
        {k.lower(): v for k, v in headers.items()}
        for method, path, headers, _ in fake.requests
        if not path.startswith("/apis/v2beta1/healthz")
    ]
    assert any(True for _ in api) and [r for r in fake.requests if r[0] == "POST" and r[1] == "/apis/v2beta1/runs"]
    if how.endswith("TOKEN") or how == "--existing-token":
        assert all(h.get("authorization") == "Bearer dex-id-token" for h in api), api
    else:
        assert all(h.get("cookie") == cookie for h in api), api


def test_a_cookie_file_that_cannot_be_read_is_named(tmp_path):
    from autophagy.pipelines import cli_submit

    with pytest.raises(
        PipelineSubmitError, match=f"cannot read the cookie file {tmp_path / 'nope'} \\(--cookie-file\\)"
    ):
        cli_submit("http://127.0.0.1:9", None, [], image=IMAGE, timeout=0.5, cookie_file=tmp_path / "nope")


def test_a_dvc_remote_reaches_only_the_tasks_that_push(cfg, tmp_path):
    remote = {"url": "s3://mlpipeline/autophagy-dvc", "endpoint_url": "http://minio-service.kubeflow:9000"}
    from autophagy.pipelines import cluster_from_dict

    cluster = cluster_from_dict(
        {
            "window": 2,
            "dvc_remote": {
                **remote,
                "credentials_secret": "dvc-creds",
                "credentials_keys": {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"},
            },
        }
    )
    info = compile_experiment(cfg, cluster, IMAGE, tmp_path)
    pushing = set()
    for package in info["packages"]:
        spec, platform = yaml.safe_load_all(Path(package["path"]).read_text())
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for name, task in tasks(spec).items():
            if name.startswith("import-"):
                continue
            label = executor(spec, task)
            env = {
                v["name"]: v["value"] for v in spec["deploymentSpec"]["executors"][label]["container"].get("env", [])
            }
            secrets = {s["secretName"]: s["keyToEnv"] for s in k8s[label].get("secretAsEnv", [])}
            if "AUTOPHAGY_DVC_REMOTE" in env:
                pushing.add(step_of(task))
                assert json.loads(env["AUTOPHAGY_DVC_REMOTE"]) == remote
                assert secrets["dvc-creds"] == [
                    {"secretKey": "accesskey", "envVar": "AWS_ACCESS_KEY_ID"},
                    {"secretKey": "secretkey", "envVar": "AWS_SECRET_ACCESS_KEY"},
                ], name
            else:
                assert "dvc-creds" not in secrets, name
    assert pushing == {"prepare", "mix", "train", "sample"}
    with pytest.raises(PipelineConfigError, match="cluster.dvc_remote.url is required"):
        load_pipeline_config(None, ["cluster.dvc_remote={endpoint_url: http://x:9000}"])


def test_task_setters_skip_source_lookups_only_while_compiling_and_still_name_themselves():
    """kfp's task setters call inspect.stack() to name themselves in an error; while autophagy
    compiles, that stack reads no source (the cost grows with sys.modules), and errors are unchanged."""
    import inspect

    from autophagy.pipelines.packages import _fast_task_setters
    from kfp import dsl
    from kfp.dsl import pipeline_task

    with _fast_task_setters():
        assert pipeline_task.inspect is not inspect
        assert all(frame.code_context is None for frame in pipeline_task.inspect.stack())
        assert pipeline_task.inspect.getmodule(inspect) is inspect  # everything else is the real module

        def importer_with_a_cpu_limit():
            task = dsl.importer(artifact_uri="gs://bucket/x", artifact_class=dsl.Dataset)
            task.set_cpu_limit("1")

        with pytest.raises(ValueError, match="^set_cpu_limit can only be used on single-step components"):
            dsl.pipeline(name="setter-on-an-importer")(importer_with_a_cpu_limit)  # built when decorated
    assert pipeline_task.inspect is inspect
