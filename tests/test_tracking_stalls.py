"""A tracking server that answers ``/health`` but stalls its API (issue 12, item 4).

The server here is a real loopback HTTP server: it answers ``/health`` (and the API paths a test
names) and holds every other request open without a byte of answer, as a wedged MLflow did.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import PRESETS

from autophagy.tracking import HTTP_DEFAULTS, Tracker, TrackingError, check_tracking

GET_BY_NAME = "/api/2.0/mlflow/experiments/get-by-name"


class StallingServer:
    """Loopback HTTP: ``/health`` and the paths of ``answers`` answer 200 (JSON); every other
    request is accepted, read and never answered until the server stops."""

    def __init__(self, answers: Mapping[str, Any] | None = None):
        self.answers = dict(answers or {})
        self.requests: list[str] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                path = self.path.split("?")[0]
                outer.requests.append(path)
                if path == "/health":
                    self._answer(b"OK", "text/plain")
                elif path in outer.answers:
                    self._answer(json.dumps(outer.answers[path]).encode(), "application/json")
                else:
                    outer.release.wait()  # accept and hold: no status line, no headers, nothing

            def _answer(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stalling_server():
    server = StallingServer()
    yield server
    server.close()


@pytest.fixture
def no_http_settings(monkeypatch):
    """The user has set none of MLflow's HTTP settings: the project's defaults apply."""
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)


def _overrides(preset: str) -> list[str]:
    return [arg for option in PRESETS[preset] for arg in ("-S", option)]


def test_run_fails_before_any_work_when_the_api_stalls(tmp_path, autophagy_exe, stalling_server, no_http_settings):
    """Before: `autophagy run` trained generation 0, then hung in the first MLflow call (MLflow's
    120 s x 8 tries). Now: one line within the 30 s timeout, nothing prepared or trained."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": stalling_server.uri}
    root = tmp_path / "runs"
    started = time.monotonic()
    done = subprocess.run(
        [autophagy_exe, "run", "--root", str(root), *_overrides("gaussian"), "-S", "tracking.enabled=true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-3000:]
    assert elapsed < 60, f"took {elapsed:.0f} s"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"autophagy: error: MLflow at {stalling_server.uri} did not answer")
    assert "within 30 s (MLFLOW_HTTP_REQUEST_TIMEOUT)" in lines[0] and "stalls" in lines[0]
    assert GET_BY_NAME in stalling_server.requests  # the check asked the API, not only /health
    assert not root.exists(), sorted(str(p) for p in root.rglob("*"))  # no data, no generation, no model


def test_check_tracking_refuses_an_unreachable_server(tiny_cfg, monkeypatch):
    """A server that does not listen at all: one line naming the URI, at once."""
    server = StallingServer()
    uri = server.uri
    server.close()  # the port is closed now: connections are refused
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"cannot reach the MLflow tracking server at {uri}"):
        check_tracking(tiny_cfg("gaussian", "tracking.enabled=true"))
    assert time.monotonic() - started < 10


def test_check_tracking_is_skipped_when_tracking_is_off(tiny_cfg, stalling_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stalling_server.uri)
    check_tracking(tiny_cfg("gaussian"))  # tracking.enabled=false: no call at all
    assert stalling_server.requests == []


def test_check_tracking_creates_nothing_on_a_healthy_store(tiny_cfg, tracking_uri):
    """The embedded SQLite store answers the same question; the check leaves no experiment behind."""
    cfg = tiny_cfg("gaussian", "tracking.enabled=true")
    check_tracking(cfg)
    from mlflow import MlflowClient

    assert MlflowClient(tracking_uri).get_experiment_by_name(cfg.name) is None


def test_project_defaults_apply_only_where_the_user_set_nothing(tiny_cfg, no_http_settings, monkeypatch):
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")  # the user's own choice wins
    Tracker(tiny_cfg("gaussian", "tracking.enabled=true"))
    assert (
        MLFLOW_HTTP_REQUEST_TIMEOUT.get(),
        MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(),
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
    ) == (30, 9, 2)


def test_a_stall_mid_run_ends_in_one_tracking_error(tiny_cfg, monkeypatch):
    """The server answers the experiment lookup, then stalls the run search: the call gives up
    after MLFLOW_HTTP_REQUEST_TIMEOUT x (retries + 1) with a TrackingError naming the URI (before:
    MLflow's own exception, printed by the CLI as a traceback)."""
    experiment = {
        "experiment_id": "1",
        "name": "tiny-gaussian",
        "artifact_location": "mlflow-artifacts:/1",
        "lifecycle_stage": "active",
    }
    server = StallingServer({GET_BY_NAME: {"experiment": experiment}})
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        tracker = Tracker(tiny_cfg("gaussian", "tracking.enabled=true"))
        started = time.monotonic()
        with pytest.raises(TrackingError, match=f"MLflow at {server.uri}: search_runs failed: .*timeout"):
            tracker.child_run(0.5, 0)
        assert time.monotonic() - started < 15
        assert server.requests.count("/api/2.0/mlflow/runs/search") == 2  # one try and one retry
    finally:
        server.close()


def test_a_training_whose_tracking_failed_is_reused_on_the_rerun(tmp_path, tiny_cfg, tracking_uri, monkeypatch):
    """Generation 0 trains, then its tracking stalls and the run fails. Started again (the server
    fixed), the run publishes the kept checkpoint again, the same files, instead of training again."""
    from autophagy import loop

    experiment = {
        "experiment_id": "1",
        "name": "tiny-gaussian",
        "artifact_location": "mlflow-artifacts:/1",
        "lifecycle_stage": "active",
    }
    server = StallingServer({GET_BY_NAME: {"experiment": experiment}})
    cfg = tiny_cfg("gaussian", "tracking.enabled=true", "loop.lambdas=[1]")
    root = tmp_path / "runs" / cfg.name
    model = root / "seed-0" / "gen-000" / "model"
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(TrackingError, match=f"MLflow at {server.uri}: search_runs failed"):
            loop.run_experiment(cfg, root, log=lambda line: None)
    finally:
        server.close()
    trained = {path.name: path.stat().st_ino for path in model.iterdir()}
    assert "config.json" in trained and not (root / "seed-0" / "gen-000" / "metrics.json").exists()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    loop.run_experiment(cfg, root, log=lambda line: None)
    assert {path.name: path.stat().st_ino for path in model.iterdir()} == trained  # the same files: not trained again
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.name).experiment_id], filter_string="tags.`autophagy.role` = 'chain'"
    )
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "fd_train")] == [0, 1]
