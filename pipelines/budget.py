"""How big a KFP run gets on the backend, estimated from its compiled package (no cluster needed).

The limits (:data:`LIMITS`), from the KFP 2.17 backend and Argo Workflows v4.0.5 it runs on:

* ``workflow_bytes``: the Argo Workflow the API server creates at submit. Argo refuses a workflow
  above 1 MiB (``MAX_WORKFLOW_SIZE``, packer.go) and that object later also holds the status of
  every node; autophagy keeps the submitted spec to a quarter of it.
* ``argument_bytes``: the largest single value handed to a driver pod (a DAG's component spec, a
  task spec, the runtime config). Linux refuses one argument over 128 KiB ("argument list too
  long" before KFP 2.17); autophagy keeps to half.
* ``status_bytes``: the workflow at the end of the run: its spec plus the status of every node
  the run creates (Argo keeps ``status.nodes`` in the same object; KFP's manifests do not
  offload it; etcd caps an object at ~1.5 MiB). Must stay under 1 MiB for the run's whole life.

The model of the node status, from the sources (argocompiler 2.17.0: container.go, dag.go,
importer.go): every container task of a DAG becomes a driver Pod node (inputs: the component
spec, task spec, container spec, Kubernetes config; output: the pod-spec patch, which holds the
executor input), an executor DAG node and an executor Pod node (each carrying the pod-spec patch
again), and with retries a Retry node above it; an importer is one Pod node (task and component
specs, importer spec); a DAG is a driver node (its component spec, and for the root the runtime
config) and a DAG node; a loop adds one DAG node per iteration. Each node also carries
:data:`NODE_OVERHEAD` bytes of names, ids, phase, times and the logs artifact. Parameter values
that arrive at run time are taken at their sizes in ``arguments`` (or :data:`RUNTIME_VALUE_BYTES`),
an artifact at :data:`ARTIFACT_BYTES` (URI and metadata). ``tests/kfp_backend/`` compiles every
shipped config with the backend's own compiler and checks that these estimates stay at or above
its figures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIMITS = {"workflow_bytes": 256 * 1024, "argument_bytes": 64 * 1024, "status_bytes": 1024 * 1024}
#: Names, ids, phase, times, progress, host, children and the logs artifact of one Argo node.
NODE_OVERHEAD = 900
#: The Argo templates the KFP compiler adds to every workflow, besides per-task content.
WORKFLOW_BASE = 16 * 1024
#: The two Argo DAG tasks (driver + executor) of one KFP task, besides the task spec.
TASK_OVERHEAD = 1100
#: One artifact in an executor input: URI, metadata, name and type schema.
ARTIFACT_BYTES = 1024 + 256 + 192
#: One imported artifact in an executor input without metadata. An imported Model or Dataset can
#: carry its producer's (with ``reimport=False`` the importer hands on the artifact recorded for
#: that URI, DVC pointers included): the largest-argument bound counts it as :data:`ARTIFACT_BYTES`.
IMPORTED_ARTIFACT_BYTES = 256 + 192
#: The imported artifact types that can carry their producer's metadata.
METADATA_TYPES = ("system.Model", "system.Dataset")
#: An executor input besides its values: output file locations, field names.
EXECUTOR_INPUT_OVERHEAD = 640
#: A parameter whose value is only known when the run starts (an option JSON, a URI).
RUNTIME_VALUE_BYTES = 2048
#: The pod-spec patch around the container and executor input: launcher command, env, resources.
PATCH_OVERHEAD = 1800


def _json(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


@dataclass(frozen=True)
class Estimate:
    workflow_bytes: int
    argument_bytes: int
    argument_where: str
    nodes: int
    status_bytes: int

    @property
    def fits(self) -> bool:
        return not self.violations()

    def violations(self) -> list[str]:
        values = {
            "workflow_bytes": self.workflow_bytes,
            "argument_bytes": self.argument_bytes,
            "status_bytes": self.status_bytes,
        }
        return [
            f"{name} {values[name] / 1024:.0f} KiB > {limit / 1024:.0f} KiB"
            for name, limit in LIMITS.items()
            if values[name] > limit
        ]

    def describe(self) -> str:
        text = (
            f"Workflow at submit {self.workflow_bytes / 1024:.0f} KiB, largest driver argument "
            f"{self.argument_bytes / 1024:.0f} KiB ({self.argument_where}), {self.nodes} nodes and "
            f"{self.status_bytes / 1024:.0f} KiB with their status at the end"
        )
        problems = self.violations()
        return text + (f" (over the limit: {'; '.join(problems)})" if problems else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow_bytes": self.workflow_bytes,
            "argument_bytes": self.argument_bytes,
            "argument_where": self.argument_where,
            "nodes": self.nodes,
            "status_bytes": self.status_bytes,
            "fits": self.fits,
        }


def way_out(kind: str) -> str:
    """What to change when a run of ``kind`` does not fit."""
    if kind == "report":
        return (
            " The report run imports one fragment per chain: split loop.seeds or loop.lambdas over several "
            "experiments (each gets its own report; `autophagy report` can merge their run directories)"
        )
    return " Lower cluster.window, or fewer options per task (cluster.tracking_config_map_keys, tolerations)"


def estimate_package(path: str | Path, arguments: Mapping[str, Any] | None = None, chains: int = 1) -> Estimate:
    """The estimate for the compiled package at ``path``; ``chains``: iterations of its loop (report)."""
    import yaml

    # libyaml's safe loader: the same documents as yaml.SafeLoader, ~10x faster (a package is ~1 MB of YAML).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    documents = list(yaml.load_all(Path(path).read_text(), Loader=loader))
    spec = documents[0]
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(documents) > 1 else {}
    return estimate(spec, platform, arguments or {}, chains)


def estimate(
    spec: Mapping[str, Any], platform: Mapping[str, Any], arguments: Mapping[str, Any], iterations: int = 1
) -> Estimate:
    """:class:`Estimate` of a pipeline spec (IR) and its Kubernetes platform spec."""
    components, executors = spec["components"], spec["deploymentSpec"]["executors"]
    runtime_config = _json(
        {
            "parameterValues": {
                name: arguments.get(name, "x" * RUNTIME_VALUE_BYTES)
                for name in spec["root"].get("inputDefinitions", {}).get("parameters", {})
            }
        }
    )
    component_bytes = {name: _json(c) for name, c in components.items()}
    component_bytes["root"] = _json(spec["root"])
    executor_bytes = {name: _json(e) for name, e in executors.items()}
    platform_bytes = {name: _json(p) for name, p in platform.items()}
    arguments_seen = [(runtime_config, "the runtime config")]
    arguments_seen += [(size, f"component spec {name}") for name, size in component_bytes.items()]
    arguments_seen += [(size, f"container spec {name}") for name, size in executor_bytes.items()]
    arguments_seen += [(size, f"Kubernetes config {name}") for name, size in platform_bytes.items()]

    workflow = (
        WORKFLOW_BASE
        + sum(set_of(component_bytes, components, spec))
        + sum(executor_bytes.values())
        + sum(platform_bytes.values())
        + runtime_config
    )
    nodes = 3  # the entrypoint, the root DAG's driver and the root DAG
    status = 3 * NODE_OVERHEAD + component_bytes["root"] + runtime_config

    def walk(dag: Mapping[str, Any], repeat: int) -> None:
        nonlocal workflow, nodes, status
        for _key, task in dag["tasks"].items():
            name = task["componentRef"]["name"]
            task_bytes = _json(task)
            arguments_seen.append((task_bytes, f"task spec {task['taskInfo']['name']}"))
            workflow += TASK_OVERHEAD + task_bytes
            component = components[name]
            if "dag" in component:  # a sub-DAG (driver + DAG node) or a loop (below)
                count = iterations if "parameterIterator" in task else 1
                # a loop: the iterator's driver and DAG nodes, the iterations' group node, and per
                # iteration a driver (holding the loop's spec) and a DAG node
                drivers, dags = (1 + count, 2 + 2 * count) if "parameterIterator" in task else (1, 1)
                nodes += repeat * (drivers + dags)
                status += repeat * ((drivers + dags) * NODE_OVERHEAD + drivers * (component_bytes[name] + task_bytes))
                walk(component["dag"], repeat * count)
                continue
            executor = executors[component["executorLabel"]]
            if "importer" in executor:
                nodes += repeat
                status += repeat * (NODE_OVERHEAD + task_bytes + component_bytes[name] + _json(executor))
                continue
            executor_input = _executor_input(task, component, arguments, dag["tasks"], components, iterations)
            largest = _executor_input(task, component, arguments, dag["tasks"], components, iterations, True)
            arguments_seen.append((largest, f"executor input of {task['taskInfo']['name']}"))
            patch = PATCH_OVERHEAD + executor_bytes[component["executorLabel"]] + executor_input
            kinds = 4 if "retryPolicy" in task else 3  # driver, executor DAG, executor Pod (+ Retry)
            driver_inputs = (
                component_bytes[name]
                + task_bytes
                + executor_bytes[component["executorLabel"]]
                + platform_bytes.get(component["executorLabel"], 0)
            )
            nodes += repeat * kinds
            status += repeat * (kinds * NODE_OVERHEAD + driver_inputs + kinds * patch)

    walk(spec["root"]["dag"], 1)
    argument_bytes, where = max(arguments_seen)
    return Estimate(
        workflow_bytes=workflow,
        argument_bytes=argument_bytes,
        argument_where=where,
        nodes=nodes,
        status_bytes=workflow + status,
    )


def set_of(component_bytes: Mapping[str, int], components: Mapping[str, Any], spec: Mapping[str, Any]) -> list[int]:
    """The sizes of the distinct component specs (the Argo compiler stores each distinct one once)."""
    seen: dict[str, int] = {}
    for name, component in components.items():
        seen.setdefault(json.dumps(component, sort_keys=True), component_bytes[name])
    return [*seen.values(), component_bytes["root"]]


def _executor_input(
    task: Mapping[str, Any],
    component: Mapping[str, Any],
    arguments: Mapping[str, Any],
    siblings: Mapping[str, Any],
    components: Mapping[str, Any],
    iterations: int,
    imported_metadata: bool = False,
) -> int:
    """The executor input of a task: its parameter values, artifacts (a ``dsl.Collected`` one per
    loop iteration) and output locations. ``imported_metadata``: an imported Model or Dataset
    counts with its producer's metadata (:data:`METADATA_TYPES`), the bound of the largest single
    argument; the status estimate counts imported artifacts without it (the backend's own figure
    for every shipped config, with metadata on every artifact, stays within the status limit:
    ``tests/test_pipeline_backend.py``)."""
    size = EXECUTOR_INPUT_OVERHEAD
    for name, source in task.get("inputs", {}).get("parameters", {}).items():
        if "runtimeValue" in source:
            size += _json(source["runtimeValue"]["constant"]) + len(name) + 8
        else:
            value = arguments.get(source.get("componentInputParameter", ""))
            size += (_json(value) if value is not None else RUNTIME_VALUE_BYTES) + len(name) + 8
    for source in task.get("inputs", {}).get("artifacts", {}).values():
        producer = components.get(
            siblings.get(source.get("taskOutputArtifact", {}).get("producerTask", ""), {})
            .get("componentRef", {})
            .get("name", ""),
            {},
        )
        count = iterations if "dag" in producer else 1  # dsl.Collected from a loop
        imported = _imports(producer, components)
        plain = imported and not (imported_metadata and _output_type(producer, components) in METADATA_TYPES)
        size += count * (IMPORTED_ARTIFACT_BYTES if plain else ARTIFACT_BYTES)
    outputs = component.get("outputDefinitions", {})
    size += len(outputs.get("artifacts", {})) * ARTIFACT_BYTES + len(outputs.get("parameters", {})) * 128
    return size


def _output_type(component: Mapping[str, Any], components: Mapping[str, Any]) -> str:
    """The artifact type (``system.Model``, ...) an importer component (or a loop of them) outputs."""
    if "dag" in component:
        first = next(iter(component["dag"]["tasks"].values()))
        return _output_type(components[first["componentRef"]["name"]], components)
    artifacts = component.get("outputDefinitions", {}).get("artifacts", {})
    return next((a["artifactType"]["schemaTitle"] for a in artifacts.values()), "system.Artifact")


def _imports(component: Mapping[str, Any], components: Mapping[str, Any]) -> bool:
    """Whether ``component``'s output is an importer's (directly, or collected from a loop of importers)."""
    if "dag" in component:
        return all(
            _imports(components[t["componentRef"]["name"]], components) for t in component["dag"]["tasks"].values()
        )
    return component.get("executorLabel", "").startswith("exec-importer")
