"""Compile an experiment's KFP runs to pipeline packages, sized to the backend's limits.

``autophagy pipeline compile`` writes one package per kind of run (``data.yaml``,
``generation-0.yaml``, ``chain-gen-<first>-<last>.yaml`` for each window, ``collect.yaml`` when the
chains are more than one run may import, ``report.yaml``) and
``runs.json``, the plan: the window size, how many runs the experiment takes, and each
package's size against :mod:`autophagy.pipelines.budget`. The window is the largest number of
generations per chain run whose package stays inside the budget (or ``cluster.window``); a
config that cannot fit at all is refused with the numbers and the way out.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autophagy.pipelines import budget
from autophagy.pipelines.cluster import ClusterConfig
from autophagy.pipelines.errors import PipelineConfigError
from autophagy.pipelines.runs import FAN_IN, KfpRun, count_runs, merge_tree

from autophagy import atomic, plan
from autophagy.config import ExperimentConfig, to_dict


def package_name(run: KfpRun) -> str:
    return f"chain-gen-{run.first:03d}-{run.last:03d}.yaml" if run.kind == "chain" else f"{run.kind}.yaml"


def pipeline_function(cfg: ExperimentConfig, cluster: ClusterConfig, image: str, run: KfpRun) -> Callable:
    from autophagy.pipelines import pipeline

    if run.kind == "data":
        return pipeline.data_pipeline(cfg, cluster, image)
    if run.kind == "generation-0":
        return pipeline.generation0_pipeline(cfg, cluster, image, run.label())
    if run.kind == "chain":
        return pipeline.chain_pipeline(cfg, cluster, image, run.first, run.last, run.label())
    if run.kind == "collect":
        return pipeline.collect_pipeline(cfg, cluster, image)
    return pipeline.report_pipeline(cfg, cluster, image)


class _StackWithoutSource:
    """``inspect`` as kfp's ``pipeline_task`` module sees it while a pipeline is built: the same module,
    but ``stack()`` reads no source lines (``context=0``).

    Every task setter (``set_cpu_limit``, ``set_env_variable``, ...) calls ``inspect.stack()`` only to
    name itself in an error message. With source context that looks up the module of every frame,
    a scan of ``sys.modules``: in a process that has imported torch and MLflow (~8,000 modules) each
    call takes ~0.1 s, and one paper-scale experiment's packages take minutes instead of seconds.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)

    @staticmethod
    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        return inspect.stack(0)[1:]  # from the caller's frame, as inspect.stack() is


@contextmanager
def _fast_task_setters() -> Iterator[None]:
    from kfp.dsl import pipeline_task

    saved = pipeline_task.inspect
    pipeline_task.inspect = _StackWithoutSource()
    try:
        yield
    finally:
        pipeline_task.inspect = saved


def compile_run(cfg: ExperimentConfig, cluster: ClusterConfig, image: str, run: KfpRun, out_dir: str | Path) -> Path:
    """Compile the package of ``run`` into ``out_dir`` (atomically); returns its path."""
    from kfp import compiler

    path = Path(out_dir) / package_name(run)
    with atomic.temp_path(path) as tmp, _fast_task_setters():
        compiler.Compiler().compile(
            pipeline_function(cfg, cluster, image, run), package_path=str(tmp.with_suffix(".yaml"))
        )
        tmp.with_suffix(".yaml").replace(tmp)
    return path


def sizing_chain(cfg: ExperimentConfig) -> tuple[float, int]:
    """The (lambda, seed) chain with the longest label: its tasks' display names are the longest, so its
    packages bound every chain's size (a chain's package differs from another's only in its labels)."""
    return max(plan.chains(cfg), key=lambda chain: len(KfpRun("chain", "", lam=chain[0], seed=chain[1]).label()))


def representative_runs(cfg: ExperimentConfig, window: int) -> list[KfpRun]:
    """One run of each package an experiment needs (chain windows as :func:`runs.next_runs` cuts them),
    labelled as the chain of :func:`sizing_chain`."""
    lam, seed = sizing_chain(cfg)
    runs = [KfpRun("data", "data"), KfpRun("generation-0", "seed", seed=seed)]
    first = 1
    while first <= cfg.loop.generations:
        last = min(first + window - 1, cfg.loop.generations)
        runs.append(KfpRun("chain", "chain", lam=lam, seed=seed, first=first, last=last))
        first = last + 1
    if len(merge_tree(cfg)) > 1:
        runs.append(KfpRun("collect", "collect"))
    return runs + [KfpRun("report", "report")]


def choose_window(cfg: ExperimentConfig, cluster: ClusterConfig, image: str, scratch: Path) -> int:
    """``cluster.window``, else the most generations per chain run whose package fits :mod:`budget`."""
    if cfg.loop.generations == 0:
        return 1
    if cluster.window is not None:
        return min(cluster.window, cfg.loop.generations)
    fits = 0
    size = 1
    while size <= cfg.loop.generations:  # grow by doubling, then settle between the last fit and the first miss
        if _chain_fits(cfg, cluster, image, size, scratch):
            fits, size = size, size * 2
        else:
            break
    if fits == 0:
        raise PipelineConfigError(_refusal(cfg, cluster, image, scratch))
    low, high = fits, min(size, cfg.loop.generations + 1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _chain_fits(cfg, cluster, image, middle, scratch) else (low, middle)
    return min(low, cfg.loop.generations)


#: The size of an artifact URI in a run's parameters (a KFP pipeline-root URI: bucket, pipeline, run id,
#: task, salt, output name).
URI_BYTES = 256


def typical_arguments(cfg: ExperimentConfig) -> dict[str, Any]:
    """Parameters of the size a run of ``cfg`` gets: its step options exactly, URIs at :data:`URI_BYTES`."""
    from autophagy.step_config import STEP_OPTIONS, step_options, to_json

    values: dict[str, Any] = {f"options_{step}": to_json(step_options(cfg, step)) for step in STEP_OPTIONS}
    values.update(
        {
            name: "u" * URI_BYTES
            for name in (
                "real_train_uri",
                "real_test_uri",
                "extractor_uri",
                "model_uri",
                "samples_uri",
                "history_uri",
                "pooled_uri",
                "gen0_model_uri",
            )
        }
    )
    values.update({"handoff_key": "lam-0.123456-seed-12345", "lam": "0.123456", "seed": 12345, "n_samples": 1_000_000})
    return values


def _estimate(cfg: ExperimentConfig, path: Path, kind: str) -> budget.Estimate:
    arguments = typical_arguments(cfg)
    fragments = 1
    if kind in ("collect", "report"):
        fragments = len(dict(merge_tree(cfg))["report"]) if kind == "report" else FAN_IN
        arguments["fragment_uris"] = ["u" * URI_BYTES] * fragments
        arguments["config"] = json.dumps(to_dict(cfg), sort_keys=True)
    return budget.estimate_package(path, arguments, chains=fragments)


def _chain_fits(cfg, cluster, image, size: int, scratch: Path) -> bool:
    lam, seed = sizing_chain(cfg)
    run = KfpRun("chain", "chain", lam=lam, seed=seed, first=1, last=size)
    return _estimate(cfg, compile_run(cfg, cluster, image, run, scratch), "chain").fits


def _refusal(cfg, cluster, image, scratch: Path) -> str:
    lam, seed = sizing_chain(cfg)
    run = KfpRun("chain", "chain", lam=lam, seed=seed, first=1, last=1)
    estimate = _estimate(cfg, compile_run(cfg, cluster, image, run, scratch), "chain")
    return (
        f"one generation of one chain does not fit a KFP run: {estimate.describe()}. The way out: fewer options "
        "per task (cluster.tracking_config_map_keys, node_selector, tolerations) or a backend with larger limits"
    )


def compile_experiment(
    cfg: ExperimentConfig, cluster: ClusterConfig, image: str, out_dir: str | Path
) -> dict[str, Any]:
    """Every package of ``cfg`` and ``runs.json`` into ``out_dir``; returns the plan (also in runs.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scratch = out_dir / ".sizing"
    scratch.mkdir(exist_ok=True)
    try:
        window = choose_window(cfg, cluster, image, scratch)
    finally:
        for path in scratch.iterdir():
            path.unlink()
        scratch.rmdir()
    packages = []
    for run in representative_runs(cfg, window):
        path = compile_run(cfg, cluster, image, run, out_dir)
        estimate = _estimate(cfg, path, run.kind)
        if not estimate.fits:
            raise PipelineConfigError(
                f"the {run.kind} run of {cfg.name} does not fit a KFP run: {estimate.describe()}."
                + budget.way_out(run.kind)
            )
        packages.append(
            {
                "kind": run.kind,
                "path": str(path),
                "bytes": path.stat().st_size,
                **estimate.as_dict(),
                **({"first": run.first, "last": run.last} if run.kind == "chain" else {}),
            }
        )
    info = {
        "experiment": cfg.name,
        "image": image,
        "window": window,
        "runs": count_runs(cfg, window),
        "chains": len(plan.chains(cfg)),
        "seeds": len(cfg.loop.seeds),
        "generations": cfg.loop.generations,
        "budget": budget.LIMITS,
        "packages": packages,
        "compile_seconds": time.perf_counter() - started,
    }
    atomic.write_json(out_dir / "runs.json", info)
    return info
