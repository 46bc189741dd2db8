"""``autophagy pull``: a Kubeflow run's results into a DVC checkout, the way DVC users work.

With ``cluster.dvc_remote`` every generation's training set, model and samples, and the real data
sets, were pushed from the pods to the DVC remote, and the report run logged the run layout's
pointer tree (``<name>.dvc`` pointers, ``metrics.json``, grids, the report, a ``dvc.yaml``
declaring the metrics) to the experiment's MLflow parent run. :func:`pull` downloads that tree to
``runs/<experiment>/`` of a checkout, adds the remote (``autophagy``), and ``dvc pull``\\ s the
parts asked for. Afterwards ``dvc status``, ``dvc diff`` and ``dvc metrics show`` work on the
cluster run's results; ``git add runs/<experiment>`` versions them like any DVC-tracked data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autophagy.pipelines.errors import PipelineError

#: The parent-run tag that holds the remote's settings (set by ``autophagy pipeline submit``).
REMOTE_TAG = "autophagy.dvc.remote"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def find_parent_run(client: Any, run: str) -> Any:
    """The MLflow parent run named by ``run``: its id, or an experiment name (its latest parent run
    that holds a pointer tree)."""
    from autophagy.components.runtime import LAYOUT_ARTIFACT

    if _RUN_ID.match(run):
        return client.get_run(run)
    experiment = client.get_experiment_by_name(run)
    if experiment is None:
        raise PipelineError(
            f"--run {run}: no MLflow run with that id and no experiment of that name at {client.tracking_uri}"
        )
    for candidate in client.search_runs(
        [experiment.experiment_id], "tags.`autophagy.role` = 'parent'", order_by=["attributes.start_time DESC"]
    ):
        if any(a.path == LAYOUT_ARTIFACT for a in client.list_artifacts(candidate.info.run_id)):
            return candidate
    raise PipelineError(
        f"experiment {run}: no parent run holds a pointer tree (was it run on Kubeflow with "
        "cluster.dvc_remote, and did its report run finish?)"
    )


def pull(
    run: str,
    root: str | Path = ".",
    targets: Sequence[str] = (),
    endpoint_url: str | None = None,
    data: bool = True,
    log=print,
) -> dict[str, Any]:
    """Write the pointer tree of ``run`` to ``<root>/runs/<experiment>`` and ``dvc pull`` ``targets``
    (paths below that folder: a generation, ``lam-0.5/seed-0/gen-007/train_set``, ...; none: all).
    ``endpoint_url`` replaces the remote's in-cluster endpoint (e.g. a port-forward)."""
    from autophagy.components import dvc_remote
    from autophagy.components.runtime import LAYOUT_ARTIFACT
    from mlflow import MlflowClient

    from autophagy.tracking import tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = Path(root).resolve()
    if not (root / ".dvc").is_dir():
        raise PipelineError(f"{root} is not a DVC repository (no .dvc/): run `dvc init` there first")
    client = MlflowClient(tracking_uri())
    parent = find_parent_run(client, run)
    tags = parent.data.tags
    if REMOTE_TAG not in tags:
        raise PipelineError(
            f"MLflow run {parent.info.run_id} has no {REMOTE_TAG} tag: it was not run with cluster.dvc_remote"
        )
    remote = {**json.loads(tags[REMOTE_TAG]), **({"endpoint_url": endpoint_url} if endpoint_url else {})}
    experiment = tags["autophagy.experiment"]
    destination = root / "runs" / experiment
    with tempfile.TemporaryDirectory(prefix="autophagy-pull-") as tmp:
        downloaded = Path(client.download_artifacts(parent.info.run_id, LAYOUT_ARTIFACT, tmp))
        shutil.copytree(downloaded, destination, dirs_exist_ok=True)
    try:
        dvc_remote.configure(root, remote, default=False)
    except dvc_remote.RemoteError as err:
        raise PipelineError(str(err)) from None
    pointers = _pointers(destination, targets)
    log(
        f"{experiment}: {len(list(destination.rglob('*.dvc')))} pointers and "
        f"{len(list(destination.rglob('metrics.json')))} metrics files in {destination}; remote "
        f"{dvc_remote.REMOTE_NAME} = {dvc_remote.describe(remote)}"
    )
    if data and pointers:
        command = [
            sys.executable,
            "-m",
            "dvc",
            "pull",
            "-r",
            dvc_remote.REMOTE_NAME,
            *[str(p.relative_to(root)) for p in pointers],
        ]
        done = subprocess.run(
            command, cwd=root, env={**os.environ, "DVC_NO_ANALYTICS": "1"}, text=True, capture_output=True
        )
        if done.returncode != 0:
            raise PipelineError(
                f"dvc pull from {dvc_remote.describe(remote)} failed:\n{(done.stderr + done.stdout).strip()}"
            )
        log(done.stdout.strip())
    return {
        "run_id": parent.info.run_id,
        "experiment": experiment,
        "destination": str(destination),
        "pulled": [str(p.relative_to(root)) for p in pointers] if data else [],
    }


def _pointers(destination: Path, targets: Sequence[str]) -> list[Path]:
    """The ``.dvc`` files named by ``targets`` (a folder: every pointer below it)."""
    if not targets:
        return sorted(destination.rglob("*.dvc"))
    found: list[Path] = []
    for target in targets:
        path = destination / target
        if path.is_dir():
            found += sorted(path.rglob("*.dvc"))
        elif path.with_name(path.name + ".dvc").is_file():
            found.append(path.with_name(path.name + ".dvc"))
        elif path.suffix == ".dvc" and path.is_file():
            found.append(path)
        else:
            raise PipelineError(
                f"{target}: no such part of {destination.name} (a folder below it, or a data set "
                "like lam-0.5/seed-0/gen-007/train_set)"
            )
    return found
