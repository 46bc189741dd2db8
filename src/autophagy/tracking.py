"""MLflow tracking: with :mod:`autophagy.mlflow_model`, the only module that imports mlflow.

One MLflow experiment per autophagy experiment name; inside it a *parent* run per experiment
configuration and one *child* run per (lambda, seed), nested through the ``mlflow.parentRunId``
tag so that stages running in different processes (DVC stages, KFP pods) log into the same
runs. Per-generation metrics use ``step = generation``.

Runs as MLflow users read them (:func:`execution`): an ``autophagy run`` binds its run directory,
whose ``mlflow_execution.json`` holds an execution id; the parent run is keyed by config and
execution, so a second run directory (a second execution) gets new runs while a resume in the same
run directory continues its own. Every run this process logs into is RUNNING while it works and
FINISHED (FAILED on an error, KILLED on Ctrl-C) with an end time when it returns. Runs carry the
provenance tags git commit, source, user and run directory (and ``kfp.run_id`` from Kubeflow);
only curves are metrics (:data:`NOT_METRICS` become tags); sample grids are images at
``step = generation``; kept checkpoints are Logged Models of their chain's run
(:mod:`autophagy.mlflow_model`); the experiment opens on the runs view (``mlflow.experimentKind``).

The tracking URI is MLflow's standard ``MLFLOW_TRACKING_URI``; unset, the embedded
``sqlite:///mlflow.db`` in the working directory.

Every call to a tracking server has a timeout and a bounded number of retries: MLflow's own
``MLFLOW_HTTP_REQUEST_TIMEOUT``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, which get the project's :data:`HTTP_DEFAULTS` where the
user has not set them. :func:`check_tracking` asks the store one question before any work starts,
and a refused or timed-out call fails as one :class:`TrackingError` naming the URI.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import math
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from autophagy import atomic
from autophagy.config import ExperimentConfig, flatten, format_lambda, to_dict

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_RUN_ENV = "AUTOPHAGY_PARENT_RUN_ID"  # force the parent run
EXTRA_TAGS_ENV = "AUTOPHAGY_RUN_TAGS"  # JSON object of tags added to every run (e.g. the KFP run id)
CONFIG_KEY_ENV = "AUTOPHAGY_CONFIG_KEY"  # the config key of a Kubeflow task, which holds only its step's options
#: Parent-run tags ``autophagy.handoff.<key>``: where a Kubeflow run left what the next one needs (JSON).
HANDOFF_TAG_PREFIX = "autophagy.handoff."
EXECUTION_FILE = "mlflow_execution.json"  # in the run directory: {"execution": <id>}
EXECUTION_TAG = "autophagy.execution"
UNBOUND = "none"  # the execution tag of runs made outside :func:`execution` (the Kubeflow submitter's)
#: The experiment tag MLflow 3's UI reads to open an experiment on its runs view (not GenAI traces).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
#: Result keys that are bookkeeping, not curves: tags (the latest generation's value), never metrics.
NOT_METRICS = frozenset(
    {
        "generation",
        "seed",
        "parameters",
        "train_world_size",
        "n_samples",
        "evaluate_seconds",
        "resumed_from_kimg",
        "train_steps",
        "train_kimg",
        "train_seconds",
        "train_images_per_second",
    }
)


#: MLflow's HTTP settings where the user has not set them. MLflow's own defaults (120 s, 7 retries,
#: factor 2) let one call to a server that accepts and never answers block for about 20 minutes;
#: these give up after 5 tries of 30 s without an answer (about 3 minutes), and a refused
#: connection is retried 4, 8 and 16 s later (a restarting server has about 30 s to come back).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
}
_ADVICE = "Start or fix it, point MLFLOW_TRACKING_URI elsewhere, or run with tracking.enabled=false."


class TrackingError(RuntimeError):
    """The tracking server cannot be reached or refused a request."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def apply_http_defaults() -> None:
    """Set each of :data:`HTTP_DEFAULTS` that the environment does not set already."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def request_timeout() -> int:
    """Seconds one HTTP call to the tracking server may wait for an answer (``MLFLOW_HTTP_REQUEST_TIMEOUT``)."""
    apply_http_defaults()
    text = os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]
    try:
        return int(text)
    except ValueError:
        raise TrackingError(f"MLFLOW_HTTP_REQUEST_TIMEOUT must be a whole number of seconds, got {text!r}") from None


def check_reachable(uri: str, timeout: float | None = None) -> None:
    """Fail fast, with a clear message, when an HTTP tracking server does not answer ``/health``."""
    if not uri.startswith(("http://", "https://")):
        return
    timeout = request_timeout() if timeout is None else timeout
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow tracking server at {uri} answered /health with HTTP {response.status}")
    except (urllib.error.URLError, OSError) as err:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({getattr(err, 'reason', err)}). " + _ADVICE
        ) from None


def check_tracking(cfg: ExperimentConfig) -> None:
    """Before any work: with ``tracking.enabled``, the store at :func:`tracking_uri` answers an API
    call (the experiment by name) within ``MLFLOW_HTTP_REQUEST_TIMEOUT``, in one try.

    A server that answers ``/health`` but stalls its API, refuses the request or cannot be reached
    fails here as one :class:`TrackingError` naming the URI and what happened, before anything is
    prepared or trained; a rerun then starts from the same state.
    """
    if not cfg.tracking.enabled:
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri()
    timeout = request_timeout()
    check_reachable(uri, timeout)
    from mlflow import MlflowClient

    try:
        with (
            _environ(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"),
            store_lock(uri),
            _refused(uri, f"looking up experiment {cfg.name!r}"),
        ):
            MlflowClient(tracking_uri=uri).get_experiment_by_name(cfg.name)
    except TrackingError as err:
        if "timeout" in str(err).lower():
            raise TrackingError(
                f"MLflow at {uri} did not answer the API call for experiment {cfg.name!r} within "
                f"{timeout} s (MLFLOW_HTTP_REQUEST_TIMEOUT) although /health answers: the server "
                "stalls. " + _ADVICE
            ) from None
        raise


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block (MLflow reads its settings per call)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _refused(uri: str, doing: str) -> Iterator[None]:
    """Turn an MLflow error (refused, timed out, unreachable) into one :class:`TrackingError` line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TrackingError(f"MLflow at {uri}: {doing} failed: {first_line}") from None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise get-or-create against a local SQLite store between processes on this machine.

    Several ``autophagy run`` processes (one per seed, say) would otherwise race to create the
    database tables, the experiment and the parent run. The lock is ``<database>.lock`` (an
    advisory ``flock``, released if the process dies). Other stores need no lock: a tracking
    server serialises for itself, and the Kubeflow pipeline creates every run in one task first.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def execution_id(root: str | Path) -> str:
    """The execution id of the run directory ``root`` (made and stored there on first use)."""
    path = Path(root) / EXECUTION_FILE
    if path.is_file():
        try:
            return str(json.loads(path.read_text())["execution"])
        except (ValueError, KeyError, TypeError):
            raise TrackingError(
                f'{path} is damaged (expected {{"execution": <id>}}); delete it to start new '
                "MLflow runs for this run directory"
            ) from None
    Path(root).mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, {"execution": uuid.uuid4().hex})
    return execution_id(root)


_BOUND: list[tuple[Path, str]] = []  # the run directories :func:`execution` binds, innermost last
_TOUCHED: dict[str, set[str]] = {}  # tracking URI -> runs this process logged into under a binding


@contextlib.contextmanager
def execution(cfg: ExperimentConfig, root: str | Path, seeds: Sequence[int] | None = None) -> Iterator[None]:
    """Bind the run directory ``root``: runs are keyed by its execution id, and on leaving, each run
    this process logged into, the parent and the chains of ``seeds`` (default ``loop.seeds``: those
    this process holds) end FINISHED, FAILED (an exception) or KILLED (Ctrl-C or a signal)."""
    if os.environ.get(CONFIG_KEY_ENV) or os.environ.get(PARENT_RUN_ENV):
        yield  # a Kubeflow task logs into the runs its submission made (the submitter ends them)
        return
    root = Path(root).resolve()
    _BOUND.append((root, execution_id(root)))
    status = "FINISHED"
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        _BOUND.pop()
        if cfg.tracking.enabled and not _BOUND:
            try:
                end_runs(status, _left_running(cfg, root, cfg.loop.seeds if seeds is None else seeds))
            except TrackingError:
                if status == "FINISHED":
                    raise  # else the original error matters more than a tracking store that cannot answer


def _left_running(cfg: ExperimentConfig, root: Path, seeds: Sequence[int]) -> set[str]:
    """The RUNNING parent and chains (of ``seeds``) of the run directory ``root``: a resumed execution
    that finds a chain complete logs nothing into it, and a killed one left it RUNNING."""
    uri = tracking_uri()
    if "'" in str(root):
        return set()  # not expressible in a search filter; the runs logged into still end
    client = _Client(uri)
    experiment = client.get_experiment_by_name(cfg.name)
    if experiment is None:
        return set()
    runs = client.search_runs(
        [experiment.experiment_id],
        max_results=1000,
        filter_string=f"tags.`autophagy.run_dir` = '{root}' and attributes.status = 'RUNNING'",
    )
    return {
        run.info.run_id
        for run in runs
        if run.data.tags.get("autophagy.role") == "parent"
        or run.data.tags.get("autophagy.seed") in {str(seed) for seed in seeds}
    }


def end_runs(status: str = "FINISHED", also: set[str] = frozenset()) -> None:
    """Terminate every run this process logged into under :func:`execution` and the runs ``also`` (of
    the tracking URI) with ``status`` and an end time."""
    from mlflow import MlflowClient

    if also:
        _TOUCHED.setdefault(tracking_uri(), set()).update(also)
    for uri, runs in list(_TOUCHED.items()):
        client = MlflowClient(tracking_uri=uri)
        for run_id in sorted(runs):
            with _refused(uri, f"ending run {run_id}"):
                client.set_terminated(run_id, status=status)
        del _TOUCHED[uri]


def provenance() -> dict[str, str]:
    """Tags naming where a run came from: git commit, source, user, run directory."""
    tags = {
        "mlflow.source.name": " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]]) or "autophagy",
        "mlflow.source.type": "LOCAL",
        "mlflow.user": getpass.getuser(),
    }
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if _BOUND:
        tags["autophagy.run_dir"] = str(_BOUND[-1][0])
    return tags


#: Set by the Dockerfile to the commit the image was built from (its ``GIT_COMMIT`` build arg).
IMAGE_COMMIT_ENV = "AUTOPHAGY_GIT_COMMIT"


def _git_commit() -> str | None:
    """The commit of the source tree autophagy runs from; inside the image, which holds no git
    checkout, the commit it was built from (``AUTOPHAGY_GIT_COMMIT``); else None."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
        if done.returncode == 0:
            return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass  # no git (the image) or a hung one: the image's variable below
    built_from = os.environ.get(IMAGE_COMMIT_ENV, "")
    return built_from if built_from not in ("", "unknown") else None


def keeps_checkpoint(cfg: ExperimentConfig, generation: int) -> bool:
    """Whether ``tracking.keep_checkpoints`` logs the checkpoint of ``generation``: generation 0, the
    last (``loop.generations``) and every k-th; k = 1 logs all, 0 only the first and the last."""
    if not cfg.tracking.log_checkpoints:
        return False
    every = cfg.tracking.keep_checkpoints
    return generation in (0, cfg.loop.generations) or (every > 0 and generation % every == 0)


def config_key(cfg: ExperimentConfig) -> str:
    """Identifies an experiment configuration up to its lambda and seed grid (12 hex digits)."""
    data = to_dict(cfg)
    data["loop"] = {k: v for k, v in data["loop"].items() if k not in ("lambdas", "seeds")}
    data.pop("tracking", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _params(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in values.items()}


class Tracker:
    """Get-or-create the MLflow runs of one experiment and log into them."""

    def __init__(self, cfg: ExperimentConfig, uri: str | None = None):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        apply_http_defaults()
        self.cfg = cfg
        self.uri = uri or tracking_uri()
        check_reachable(self.uri)
        self.extra_tags = json.loads(os.environ.get(EXTRA_TAGS_ENV, "{}"))
        with store_lock(self.uri):  # the first process creates the tables and the experiment
            self.client = _Client(self.uri)
            experiment = self.client.get_experiment_by_name(cfg.name)
            if experiment is None:
                self.experiment_id = self.client.create_experiment(cfg.name, tags=EXPERIMENT_KIND)
                self._kind_set = True
            else:
                self.experiment_id = experiment.experiment_id
                self._kind_set = all(experiment.tags.get(k) == v for k, v in EXPERIMENT_KIND.items())
        self._parent: str | None = None

    @property
    def key(self) -> str:
        """:func:`config_key` of the config; ``AUTOPHAGY_CONFIG_KEY`` for a Kubeflow task, which holds
        only its step's options (:mod:`autophagy.step_config`)."""
        return os.environ.get(CONFIG_KEY_ENV) or config_key(self.cfg)

    # ------------------------------------------------------------------ runs

    def _find(self, tags: Mapping[str, str]) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=query, max_results=1, order_by=["attributes.start_time ASC"]
        )
        return runs[0].info.run_id if runs else None

    def parent_run(self) -> str:
        """The parent run of this configuration and execution (``AUTOPHAGY_PARENT_RUN_ID`` wins if set)."""
        if self._parent is None:
            self._parent = os.environ.get(PARENT_RUN_ENV)
        if self._parent is None:
            tags = {"autophagy.role": "parent", "autophagy.config_key": self.key}
            tags[EXECUTION_TAG] = _BOUND[-1][1] if _BOUND else UNBOUND
            with store_lock(self.uri):
                self._parent = self._find(tags) or self._create_parent(tags)
        return self._touch(self._parent)

    def _touch(self, run_id: str) -> str:
        """Under :func:`execution`: mark ``run_id`` RUNNING (again) the first time this process logs into it."""
        if _BOUND and run_id not in _TOUCHED.setdefault(self.uri, set()):
            _TOUCHED[self.uri].add(run_id)
            if self.client.get_run(run_id).info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _create_parent(self, tags: Mapping[str, str]) -> str:
        if not self._kind_set:  # an experiment made before the kind tag existed
            for key, value in EXPERIMENT_KIND.items():
                self.client.set_experiment_tag(self.experiment_id, key, value)
            self._kind_set = True
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.cfg.name}-{self.key[:6]}",
            tags={**tags, "autophagy.experiment": self.cfg.name, **provenance(), **self.extra_tags},
        )
        self.client.log_batch(run.info.run_id, params=_to_mlflow_params(flatten(self.cfg)))
        self.client.log_text(run.info.run_id, json.dumps(to_dict(self.cfg), indent=2), "config.json")
        return run.info.run_id

    def child_run(self, lam: float, seed: int) -> str:
        """The run of one (lambda, seed) chain, nested under the parent run."""
        parent = self.parent_run()
        text = format_lambda(lam)
        tags = {"mlflow.parentRunId": parent, "autophagy.lambda": text, "autophagy.seed": str(seed)}
        with store_lock(self.uri):
            run_id = self._find(tags)
            if run_id is None:
                run = self.client.create_run(
                    self.experiment_id,
                    run_name=f"lam-{text}-seed-{seed}",
                    tags={
                        **tags,
                        "autophagy.role": "chain",
                        "autophagy.experiment": self.cfg.name,
                        "autophagy.config_key": self.key,
                        **provenance(),
                        **self.extra_tags,
                    },
                )
                run_id = run.info.run_id
                params = {**flatten(self.cfg), "lambda": text, "seed": seed}
                params.pop("loop.lambdas"), params.pop("loop.seeds")
                self.client.log_batch(run_id, params=_to_mlflow_params(params))
        return self._touch(run_id)

    # ------------------------------------------------------------------ logging

    def log_generation(self, run_id: str, generation: int, metrics: Mapping[str, Any], tag: str | None = None) -> None:
        """Numeric ``metrics`` at ``step = generation`` (NaN/inf skipped, and keys the run holds at that
        step already: a step redone after a crash logs once); the bookkeeping keys (:data:`NOT_METRICS`,
        ``n_reference_*``) as tags holding the latest value instead."""
        import time

        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        numeric = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        bookkeeping = {k for k in numeric if k in NOT_METRICS or k.startswith("n_reference_")}
        held = self.client.get_run(run_id).data.metrics  # latest value per key: only those keys can hold the step
        batch = [
            Metric(key=k, value=v, timestamp=now, step=generation)
            for k, v in numeric.items()
            if k not in bookkeeping and not (k in held and self._holds(run_id, k, generation))
        ]
        tags = [RunTag(k, f"{numeric[k]:g}") for k in sorted(bookkeeping)]
        if tag:
            tags.append(RunTag("autophagy.last_step", tag))
        self.client.log_batch(run_id, metrics=batch, tags=tags)

    def _holds(self, run_id: str, key: str, step: int) -> bool:
        """Whether the run has a value of metric ``key`` at ``step``."""
        return any(m.step == step for m in self.client.get_metric_history(run_id, key))

    def log_image(self, run_id: str, path: Path, key: str, step: int) -> None:
        """The image file ``path`` as MLflow image ``key`` at ``step`` (the UI's step slider)."""
        from PIL import Image

        with Image.open(path) as image:
            self.client.log_image(run_id, image.convert("RGB"), key=key, step=step)

    def log_summary(self, run_id: str, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
        """Per-lambda rows (``lambda``, ``generation`` and metric means) as metrics ``<key>/lam_<lambda>``
        on ``run_id`` (a parent run: configurations compare in the runs table)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key=f"{key}/lam_{row['lambda']}", value=float(row[key]), timestamp=now, step=int(row["generation"]))
            for row in rows
            for key in keys
            if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])
        ]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def log_points(self, run_id: str, points: Sequence[tuple[str, float, int, int]]) -> None:
        """Metric points ``(key, value, step, timestamp in ms)`` (a training curve,
        :mod:`autophagy.train_log`), in calls of at most 1000 (MLflow's limit per batch)."""
        from mlflow.entities import Metric

        metrics = [Metric(key=key, value=value, timestamp=stamp, step=step) for key, value, step, stamp in points]
        for first in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[first : first + 1000])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None:
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def set_status(self, status: str) -> None:
        """The parent run and its chains: ``RUNNING``, or ended with ``status`` (FINISHED, FAILED,
        KILLED) and an end time (the Kubeflow submitter, whose pods log into these runs)."""
        parent = self.parent_run()
        runs = [parent] + [
            run.info.run_id
            for run in self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=1000
            )
        ]
        for run_id in runs:
            if status == "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            else:
                self.client.set_terminated(run_id, status=status)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # ------------------------------------------------------------------ Kubeflow hand-offs

    def record_handoff(self, key: str, record: Mapping[str, Any]) -> None:
        """Store ``record`` (JSON, < 8000 bytes) as the parent run's tag ``autophagy.handoff.<key>``."""
        text = json.dumps(record, sort_keys=True, separators=(",", ":"))
        if len(text) > 8000:
            raise TrackingError(f"hand-off {key} is {len(text)} bytes; MLflow tags hold at most 8000")
        self.client.set_tag(self.parent_run(), HANDOFF_TAG_PREFIX + key, text)

    def handoffs(self) -> dict[str, dict[str, Any]]:
        """Every hand-off recorded on the parent run, by key."""
        tags = self.client.get_run(self.parent_run()).data.tags
        return {
            name[len(HANDOFF_TAG_PREFIX) :]: json.loads(value)
            for name, value in tags.items()
            if name.startswith(HANDOFF_TAG_PREFIX)
        }


class _Client:
    """An ``MlflowClient`` whose every call that fails (refused, timed out, unreachable) raises one
    :class:`TrackingError` naming the URI and the call."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient

        self._client, self._uri = MlflowClient(tracking_uri=uri), uri

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with _refused(self._uri, name):
                return method(*args, **kwargs)

        return call


def _to_mlflow_params(values: Mapping[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(k, v[:6000]) for k, v in _params(values).items()]


def open_tracker(cfg: ExperimentConfig) -> Tracker | None:
    """A :class:`Tracker`, or None when ``tracking.enabled`` is false."""
    return Tracker(cfg) if cfg.tracking.enabled else None
