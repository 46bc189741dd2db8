"""The Kubeflow pipeline of autophagy, installed as ``autophagy.pipelines``.

``cluster``   :class:`ClusterConfig` (the ``cluster:`` section of an experiment YAML) and
              :func:`load_pipeline_config`
``data_source`` ``data.path`` as the pods read it (an image folder on ``cluster.data_pvc`` or in ``cluster.data_s3``)
``pipeline``  the four kinds of KFP run of an experiment (data, generation 0, chain window, report)
``runs``      which runs an experiment takes, what each is given, what can start next (pure)
``budget``    the size of a run on the backend, estimated from its package, against the limits
``packages``  :func:`compile_experiment`: every package, the window size, ``runs.json``
``submit``    :func:`run_experiment`: start the runs in order and wait (KFP API or ``kfp.local``)
``client``    the ``kfp.Client`` with the SDK's authentication, and a reachability check
``errors``    :class:`PipelineError` and its subclasses (``ValueError``)

:func:`cli_compile` and :func:`cli_submit` are what ``autophagy pipeline compile|submit`` call;
they return the text to print. Importing this package imports neither kfp nor torch: the
modules that need kfp are imported when a function needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autophagy.pipelines.errors import PipelineConfigError, PipelineError, PipelineSubmitError

_LAZY = {
    "ClusterConfig": "cluster",
    "Resources": "cluster",
    "Toleration": "cluster",
    "load_pipeline_config": "cluster",
    "cluster_from_dict": "cluster",
    "compile_experiment": "packages",
    "compile_run": "packages",
    "choose_window": "packages",
    "next_runs": "runs",
    "arguments": "runs",
    "KfpRun": "runs",
    "run_experiment": "submit",
    "KfpBackend": "submit",
    "LocalBackend": "submit",
    "check_reachable": "client",
    "make_client": "client",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"autophagy.pipelines.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _image_error(err: Exception) -> PipelineConfigError:
    return PipelineConfigError(f"--image: {err}")


def _require_kfp() -> None:
    try:
        import kfp  # noqa: F401
        import kfp.kubernetes  # noqa: F401
    except ImportError as err:
        raise PipelineError(
            f"autophagy pipeline needs the KFP SDK ({err}): pip install 'autophagy[pipeline]'"
        ) from None


def cli_compile(
    config_path: str | Path | None, overrides: Sequence[str], out: str | Path, image: str | None = None
) -> str:
    """``autophagy pipeline compile``: every package of the config's runs into the folder ``out``; the summary."""
    from autophagy.components.image import ImageError, resolve_image
    from autophagy.pipelines.cluster import load_pipeline_config
    from autophagy.pipelines.data_source import for_pods
    from autophagy.pipelines.packages import compile_experiment

    cfg, cluster = load_pipeline_config(config_path, overrides)
    cfg = for_pods(cfg, cluster)
    _require_kfp()
    try:
        info = compile_experiment(cfg, cluster, cluster.pinned_image(resolve_image(image or cluster.image)), out)
    except ImageError as err:
        raise _image_error(err) from None
    lines = [
        f"compiled {len(info['packages'])} packages into {out} in {info['compile_seconds']:.1f} s: "
        f"{info['runs']} KFP runs for {len(cfg.loop.lambdas)} lambdas x {len(cfg.loop.seeds)} seeds x "
        f"{cfg.loop.generations} generations, at most {info['window']} generations per chain run; image {info['image']}"
    ]
    for package in info["packages"]:
        lines.append(
            f"  {Path(package['path']).name}: Workflow ~{package['workflow_bytes'] / 1024:.0f} KiB at submit, "
            f"largest argument ~{package['argument_bytes'] / 1024:.0f} KiB, {package['nodes']} nodes, "
            f"~{package['status_bytes'] / 1024:.0f} KiB at the end"
        )
    return "\n".join(lines)


def cli_submit(
    host: str | None,
    config_path: str | Path | None,
    overrides: Sequence[str],
    experiment: str | None = None,
    image: str | None = None,
    namespace: str | None = None,
    token_path: str | None = None,
    timeout: float = 10.0,
    local_root: str | Path | None = None,
    poll_seconds: float = 30.0,
    log=print,
    existing_token: str | None = None,
    cookies: str | None = None,
    cookie_file: str | Path | None = None,
) -> str:
    """``autophagy pipeline submit``: run the experiment as KFP runs on the API at ``host`` (or under
    ``kfp.local`` in ``local_root``), waiting until its report exists; returns the summary.
    ``existing_token``, ``cookies``/``cookie_file``, ``token_path``: how to log in
    (:mod:`autophagy.pipelines.client`)."""
    import os
    import tempfile

    from autophagy.components.image import ImageError, resolve_image
    from autophagy.pipelines.client import HOST_ENV, check_reachable, make_client, read_cookie_file
    from autophagy.pipelines.cluster import load_pipeline_config
    from autophagy.pipelines.data_source import for_pods
    from autophagy.pipelines.packages import choose_window, compile_run
    from autophagy.pipelines.submit import KfpBackend, LocalBackend, run_experiment

    cfg, cluster = load_pipeline_config(config_path, overrides)
    _require_kfp()
    try:
        # kfp.local runs the tasks on this machine: no image is pulled, the default reference will do.
        image = cluster.pinned_image(resolve_image(image or cluster.image, require_published=local_root is None))
    except ImageError as err:
        raise _image_error(err) from None
    with tempfile.TemporaryDirectory(prefix="autophagy-packages-") as packages:
        if local_root is not None:
            backend = LocalBackend(local_root)
            where = f"kfp.local in {local_root}"
        else:
            cfg = for_pods(cfg, cluster)  # kfp.local reads data.path here; pods need it on a claim
            host = (host or os.environ.get(HOST_ENV) or "").strip()
            if not host:
                raise PipelineSubmitError(
                    f"no Kubeflow Pipelines host: pass --host URL or set ${HOST_ENV} (or --local DIR)"
                )
            if cookie_file is not None:
                cookies = cookies or read_cookie_file(cookie_file)
            check_reachable(host, timeout)
            client = make_client(host, namespace, existing_token=existing_token, token_path=token_path, cookies=cookies)
            backend = KfpBackend(client, experiment or cfg.name, namespace, cluster.service_account)
            where = host
        if cluster.dvc_remote is not None:  # before anything runs: one line naming the remote
            from autophagy.components import dvc_remote

            remote = cluster.dvc_remote.from_submitter()
            log(f"checking the DVC remote {dvc_remote.describe(remote)}")
            try:
                dvc_remote.check(remote)
            except dvc_remote.RemoteError as err:
                raise PipelineSubmitError(
                    f"{err} (the remote of cluster.dvc_remote; from this machine "
                    "cluster.dvc_remote.submitter_endpoint_url reaches an in-cluster "
                    "endpoint, e.g. through kubectl port-forward)"
                ) from None
        window = choose_window(cfg, cluster, image, Path(packages))
        compiled: dict[str, Path] = {}

        def package_for(run):  # per chain (its tasks' names carry its lambda and seed), compiled once
            from autophagy.pipelines.packages import package_name

            name = f"{run.key}/{package_name(run)}"
            if name not in compiled:
                (Path(packages) / run.key).mkdir(exist_ok=True)
                compiled[name] = compile_run(cfg, cluster, image, run, Path(packages) / run.key)
            return compiled[name]

        log(f"{cfg.name}: at most {window} generations per chain run, on {where}")
        progress = run_experiment(cfg, cluster, backend, package_for, window, log=log, poll_seconds=poll_seconds)
    return (
        f"{cfg.name}: {len(progress.finished)} KFP runs finished ({len(progress.started)} started) on {where}; "
        "the report is on the MLflow parent run (artifact report/)"
    )


__all__ = ["PipelineError", "PipelineConfigError", "PipelineSubmitError", "cli_compile", "cli_submit", *_LAZY]
