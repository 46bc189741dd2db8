"""The Kubeflow pipeline of autophagy, installed as ``autophagy.pipelines``.

``cluster``   :class:`ClusterConfig` (the ``cluster:`` section of an experiment YAML) and
              :func:`load_pipeline_config`
``pipeline``  :func:`build_pipeline` / :func:`compile_pipeline`: the loop unrolled into KFP tasks
``client``    :func:`submit`: compile and start a run through ``kfp.Client``
``errors``    :class:`PipelineError` and its subclasses (``ValueError``)

:func:`cli_compile` and :func:`cli_submit` are what ``autophagy pipeline compile|submit`` call;
they return the text to print. Importing this package imports neither kfp nor torch: the
modules that need kfp are imported when a function needs them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

from autophagy.pipelines.errors import PipelineConfigError, PipelineError, PipelineSubmitError

_LAZY = {
    "ClusterConfig": "cluster", "Resources": "cluster", "Toleration": "cluster", "load_pipeline_config": "cluster",
    "cluster_from_dict": "cluster",
    "build_pipeline": "pipeline", "compile_pipeline": "pipeline", "expected_tasks": "pipeline",
    "pipeline_name": "pipeline",
    "submit": "client", "check_reachable": "client", "make_client": "client",
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
        raise PipelineError(f"autophagy pipeline needs the KFP SDK ({err}): pip install 'autophagy[pipeline]'") from None


def cli_compile(config_path: str | Path | None, overrides: Sequence[str], out: str | Path,
                image: str | None = None) -> str:
    """``autophagy pipeline compile``: compile the config's pipeline to ``out``; returns the summary line."""
    from autophagy.components.image import ImageError
    from autophagy.pipelines.cluster import load_pipeline_config
    from autophagy.pipelines.pipeline import compile_pipeline

    cfg, cluster = load_pipeline_config(config_path, overrides)
    _require_kfp()
    try:
        info = compile_pipeline(cfg, out, cluster, image=image)
    except ImageError as err:
        raise _image_error(err) from None
    return (f"compiled {info['path']} ({info['bytes'] / 1024:.1f} KiB, {info['compile_seconds']:.2f} s): pipeline "
            f"{info['pipeline_name']}, {info['task_definitions']} task definitions, {info['task_runs']} task runs "
            f"({len(cfg.loop.lambdas)} lambdas x {len(cfg.loop.seeds)} seeds x {cfg.loop.generations} generations "
            f"after generation 0), image {info['image']}" + _notes(cfg))


def _notes(cfg: Any) -> str:
    if cfg.loop.stop_on_collapse:
        return ("\nnote: loop.stop_on_collapse: generation g of a chain waits for the evaluation of g - 1; once a chain "
                "collapses, its later tasks only mark their outputs stopped (their pods still start)")
    return ""


def cli_submit(host: str | None, config_path: str | Path | None, overrides: Sequence[str],
               experiment: str | None = None, run_name: str | None = None, image: str | None = None,
               namespace: str | None = None, token_path: str | None = None, timeout: float = 10.0) -> str:
    """``autophagy pipeline submit``: compile and start a run on the KFP API at ``host``; returns the summary."""
    from autophagy.components.image import ImageError
    from autophagy.pipelines.cluster import load_pipeline_config
    from autophagy.pipelines.client import submit

    cfg, cluster = load_pipeline_config(config_path, overrides)
    _require_kfp()
    try:
        run = submit(host, cfg, cluster, experiment=experiment, run_name=run_name, image=image, namespace=namespace,
                     token_path=token_path, timeout=timeout)
    except ImageError as err:
        raise _image_error(err) from None
    return (f"submitted run {run['run_name']} ({run['run_id']}) to {run['host']}, KFP experiment {run['experiment']}, "
            f"service account {run['service_account'] or '(namespace default)'}, image {run['image']}\n{run['url']}"
            + _notes(cfg))


__all__ = ["PipelineError", "PipelineConfigError", "PipelineSubmitError", "cli_compile", "cli_submit", *_LAZY]
