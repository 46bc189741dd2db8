"""``autophagy pipeline submit``: run a whole experiment as a sequence of KFP runs, and wait for it.

The submitter opens the experiment's MLflow runs (the parent and one child per chain) and then
loops: it reads the hand-offs recorded on the parent run (:mod:`autophagy.pipelines.runs`),
starts every run that can start (at most ``cluster.parallelism`` at once), and waits. A run that
fails is started again, up to ``cluster.run_retries`` times: KFP's cache skips its finished
tasks, and a train task resumes from its durable scratch state. Stopped and started again, the
submitter resumes from the hand-offs, adopting runs of the same name still in flight instead of
starting them twice.

Two backends: :class:`KfpBackend` (a Kubeflow Pipelines API server) and :class:`LocalBackend`
(``kfp.local``, which runs the very same compiled packages in subprocesses of this machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from autophagy.pipelines.cluster import ClusterConfig
from autophagy.pipelines.errors import PipelineSubmitError
from autophagy.pipelines.runs import KfpRun, arguments, next_runs

from autophagy.config import ExperimentConfig

Log = Callable[[str], None]


class Backend(Protocol):
    """Where KFP runs go: start one from a compiled package, then ask how it is doing."""

    waits: bool  # whether runs proceed on their own (poll with a pause) or finish inside start()

    def start(self, package: Path, run_name: str, arguments: dict[str, Any]) -> str: ...

    def state(self, handle: str) -> tuple[str, str]: ...  # ("running" | "succeeded" | "failed", detail)


class LocalBackend:
    """``kfp.local``: each run executes inside :meth:`start` (two tasks at a time), from the compiled package."""

    waits = False

    def __init__(self, pipeline_root: str | Path):
        from kfp import local

        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
        self._results: dict[str, tuple[str, str]] = {}

    def start(self, package: Path, run_name: str, arguments: dict[str, Any]) -> str:
        from kfp import components

        pipeline = components.load_component_from_file(str(package))
        try:
            pipeline(**arguments)
            self._results[run_name] = ("succeeded", "")
        except Exception as err:  # noqa: BLE001 - kfp.local raises RuntimeError with the task's log
            self._results[run_name] = ("failed", f"{type(err).__name__}: {err}")
        return run_name

    def state(self, handle: str) -> tuple[str, str]:
        return self._results[handle]


class KfpBackend:
    """A Kubeflow Pipelines API server (``kfp.Client``), runs in the KFP experiment ``experiment``."""

    waits = True
    _DONE = {
        "SUCCEEDED": "succeeded",
        "FAILED": "failed",
        "CANCELED": "failed",
        "CANCELING": "running",
        "SKIPPED": "failed",
        "PAUSED": "running",
    }

    def __init__(
        self,
        client: Any,
        experiment: str,
        namespace: str | None,
        service_account: str | None,
        pipeline_root: str | None = None,
    ):
        self.client, self.experiment, self.namespace = client, experiment, namespace
        self.service_account, self.pipeline_root = service_account, pipeline_root

    def start(self, package: Path, run_name: str, arguments: dict[str, Any]) -> str:
        import contextlib
        import io

        in_flight = self.find_in_flight(run_name)
        if in_flight:
            return in_flight
        from autophagy.pipelines.client import describe

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # kfp prints links; the submitter logs its own
                result = self.client.create_run_from_pipeline_package(
                    str(package),
                    arguments=arguments,
                    run_name=run_name,
                    experiment_name=self.experiment,
                    namespace=self.namespace,
                    pipeline_root=self.pipeline_root,
                    service_account=self.service_account or None,
                )
        except Exception as err:  # noqa: BLE001 - kfp raises ApiException, urllib3 errors ...
            raise PipelineSubmitError(
                f"Kubeflow Pipelines refused run {run_name!r} (KFP experiment {self.experiment!r}): {describe(err)}"
            ) from None
        return result.run_id

    def find_in_flight(self, run_name: str) -> str | None:
        """The id of a pending or running run named ``run_name`` (left by an earlier submitter), if any."""
        import json

        experiment = self.client.get_experiment(experiment_name=self.experiment, namespace=self.namespace)
        flt = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": run_name}]})
        runs = self.client.list_runs(experiment_id=experiment.experiment_id, filter=flt, page_size=20).runs or []
        for run in runs:
            if str(run.state) in ("PENDING", "RUNNING"):
                return run.run_id
        return None

    def state(self, handle: str) -> tuple[str, str]:
        run = self.client.get_run(handle)
        state = str(run.state)
        detail = getattr(getattr(run, "error", None), "message", "") or ""
        return self._DONE.get(state, "running"), detail


@dataclass
class Progress:
    """What one submission did."""

    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> last error, once run_retries are spent


def run_experiment(
    cfg: ExperimentConfig,
    cluster: ClusterConfig,
    backend: Backend,
    package_for: Callable[[KfpRun], Path],
    window: int,
    log: Log = print,
    poll_seconds: float = 30.0,
) -> Progress:
    """Start and wait for every KFP run of ``cfg`` until the report is written (or nothing can start).

    ``package_for(run)``: the compiled pipeline package of a run (:func:`autophagy.pipelines.compile`).
    Raises :class:`PipelineSubmitError` naming the runs that failed ``cluster.run_retries + 1`` times.
    """
    from autophagy.tracking import Tracker

    tracker = Tracker(cfg)
    parent = tracker.parent_run()
    for lam in cfg.loop.lambdas:  # one child run per chain, before any task logs into it
        for seed in cfg.loop.seeds:
            tracker.child_run(lam, seed)
    tracker.set_status("RUNNING")  # until this submission ends (a resubmission reopens its runs)
    if cluster.dvc_remote is not None:  # for `autophagy pull`
        import json

        from autophagy.pipelines.pull import REMOTE_TAG

        tracker.set_tags(parent, {REMOTE_TAG: json.dumps(cluster.dvc_remote.settings(), sort_keys=True)})
    log(f"MLflow: experiment {cfg.name}, parent run {parent} at {tracker.uri}")
    progress, attempts = Progress(), {}
    active: dict[str, tuple[KfpRun, str]] = {}
    merged: set[str] = set()  # collect/report runs finished in this submission
    stale = False  # a chain or seed finished in this submission: earlier collect/report hand-offs are out of date
    while True:
        handoffs = tracker.handoffs()
        for run in next_runs(cfg, handoffs, window, set(active) | set(progress.failed), merged, stale):
            if cluster.parallelism and len(active) >= cluster.parallelism:
                break
            name = run.run_name(cfg.name)
            attempts[run.key] = attempts.get(run.key, 0) + 1
            handle = backend.start(package_for(run), name, arguments(cfg, run, handoffs))
            active[run.key] = (run, handle)
            progress.started.append(name)
            log(f"started {name} ({handle})" + (f", attempt {attempts[run.key]}" if attempts[run.key] > 1 else ""))
        if not active:
            break
        if backend.waits:
            time.sleep(poll_seconds)
        for key, (run, handle) in list(active.items()):
            state, detail = backend.state(handle)
            if state == "running":
                continue
            del active[key]
            name = run.run_name(cfg.name)
            if state == "succeeded" and run.key not in tracker.handoffs():
                progress.failed[key] = "it finished but recorded no hand-off"
                log(f"FAILED {name}: it finished but its handoff task recorded nothing on MLflow parent run {parent}")
            elif state == "succeeded":
                progress.finished.append(name)
                if run.kind in ("collect", "report"):
                    merged.add(run.key)
                else:
                    stale = True
                log(f"finished {name}")
            elif attempts[key] > cluster.run_retries:
                progress.failed[key] = detail
                log(f"FAILED {name} after {attempts[key]} attempts: {detail}")
            else:
                log(f"failed {name} ({detail}); starting it again (cluster.run_retries={cluster.run_retries})")
    tracker.set_status("FAILED" if progress.failed else "FINISHED")
    if any(detail == "it finished but recorded no hand-off" for detail in progress.failed.values()):
        raise PipelineSubmitError(
            f"KFP run(s) {', '.join(progress.failed)} of {cfg.name} finished without recording where their outputs are "
            f"on the MLflow parent run {parent} at {tracker.uri}: the pods must reach the same MLflow server as this "
            "command (ConfigMap autophagy-tracking, MLFLOW_TRACKING_URI) "
        )
    if progress.failed:
        raise PipelineSubmitError(
            f"{len(progress.failed)} KFP run(s) of {cfg.name} failed {cluster.run_retries + 1} times: "
            + "; ".join(f"{key}: {detail}" for key, detail in progress.failed.items())
            + ". Fix the cause and run `autophagy pipeline submit` again: it resumes from what the finished runs "
            "handed off (KFP's cache skips their tasks)."
        )
    return progress
