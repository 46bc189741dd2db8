"""The self-consuming loop as one Kubeflow pipeline (KFP v2), unrolled at compile time.

Structure (``G = loop.generations``; every task is named ``gen-<g>-<step>``)::

    gen-0-tracking    MLflow parent run + one child run per (lambda, seed), before any task that logs
    gen-0-prepare     real train/test sets                      } once per experiment
    gen-0-features    the feature extractor of the metrics      }
    ParallelFor seed in loop.seeds  (parallelism = cluster.seed_parallelism)
        [gen-0-mix] -> gen-0-train -> gen-0-sample -> gen-0-evaluate      once per seed, shared by every lambda
        ParallelFor {"lam": ...} in loop.lambdas  (parallelism = cluster.parallelism)
            for g in 1..G (unrolled):
                [gen-g-pool] -> gen-g-mix -> gen-g-train (init: model g-1) -> gen-g-sample -> gen-g-evaluate
        gen-G-collect     the run-layout fragments of the seed's chains (dsl.Collected)
    gen-G-report      report over every lambda, seed and generation (dsl.Collected), logged to MLflow

This is the recursion of :func:`autophagy.loop.run_experiment`, step for step: generation 0
trains on D_real and draws ``samples_per_generation`` samples, which every lambda's
generation 1 mixes; generation g fine-tunes the model of g-1 on its mix; each evaluation gets
the collapse verdict of :mod:`autophagy.collapse`. Every ``loop.strategy`` runs:

* ``replace`` / ``fully-synthetic``: the mix takes the real set and the samples of g-1;
* ``accumulate`` / ``accumulate-subsample``: ``gen-g-pool`` adds the samples of g-1 to the pool of
  g-1 (a new artifact per generation: artifacts are immutable), and the mix takes the pool;
* ``fresh-real``: the prepared training set is the pool; every mix draws its generation's n real
  items from it (``gen-0-mix`` draws generation 0's), with the local loop's seeds.

``loop.stop_on_collapse``: the graph is fixed at compile time, so from generation 2 on every task
of a chain also takes the chain's history (``gen-(g-1)-evaluate``'s fragment) and, once it
holds a collapsed generation, only marks its output stopped (see
:mod:`autophagy.components.runtime`); the chain's run layout ends where the local loop's does.
The price: generation g waits for the evaluation of g - 1, and the stopped tasks' pods still
start (seconds each, instead of a generation's training and sampling).

Why seeds -> lambdas are nested loops, not one flat lambda x seed loop: generation 0 is made
once per seed and consumed by every lambda of that seed. An output made inside one
``ParallelFor`` reaches another only through ``dsl.Collected``, and KFP 2.17.3 refuses to
compile a ``Collected`` consumed inside another ``ParallelFor``; an outer-loop output consumed
by an inner loop is the supported form. Fan-in is one level at a time (a ``Collected`` of a
``Collected`` fails under ``kfp.local``), hence ``collect`` per seed, then ``report``.
"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations as types.
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from autophagy.config import ExperimentConfig, format_lambda

from autophagy.pipelines.cluster import ClusterConfig


def pipeline_name(cfg: ExperimentConfig) -> str:
    """``autophagy-<experiment>``, in the lower-case DNS form KFP expects."""
    return re.sub(r"[^a-z0-9-]+", "-", f"autophagy-{cfg.name}".lower()).strip("-")[:128]


def expected_tasks(cfg: ExperimentConfig) -> dict[str, int]:
    """How many times each ``gen-<g>-<step>`` task runs in one pipeline run."""
    seeds, lams, generations = len(cfg.loop.seeds), len(cfg.loop.lambdas), cfg.loop.generations
    counts: Counter[str] = Counter({"gen-0-tracking": 1, "gen-0-prepare": 1, "gen-0-features": 1})
    for step in generation_steps(cfg, 0):
        counts[f"gen-0-{step}"] = seeds
    for g in range(1, generations + 1):
        for step in generation_steps(cfg, g):
            counts[f"gen-{g}-{step}"] = seeds * lams
    if generations > 0:
        counts[f"gen-{generations}-collect"] = seeds
    counts[f"gen-{generations}-report"] = 1
    return dict(counts)


def generation_steps(cfg: ExperimentConfig, generation: int) -> tuple[str, ...]:
    """The steps of one generation of one chain under ``cfg.loop.strategy``."""
    strategy = cfg.loop.strategy
    if generation == 0:
        return (("mix",) if strategy == "fresh-real" else ()) + ("train", "sample", "evaluate")
    return (("pool",) if strategy.startswith("accumulate") else ()) + ("mix", "train", "sample", "evaluate")


def takes_history(cfg: ExperimentConfig, generation: int) -> bool:
    """Whether generation ``generation``'s pool/mix/train/sample tasks take the chain's history:
    with ``loop.stop_on_collapse``, from generation 2 on (generation 0 is never collapsed)."""
    return cfg.loop.stop_on_collapse and generation >= 2


def _configure(task: Any, generation: int, step: str, cluster: ClusterConfig) -> Any:
    """Name, caching, retries, resources, scheduling and tracking env of one task."""
    from kfp import kubernetes

    task.set_display_name(f"gen-{generation}-{step}")
    # The tracking task is never cached: it is cheap, re-tags the MLflow runs with this KFP run's
    # id and checks the server answers. Its output (the parent run id, found by the config's
    # tags) is the same from run to run, so it does not defeat the caching of later tasks.
    task.set_caching_options(cluster.caching and step != "tracking")
    if cluster.retries > 0:
        task.set_retry(num_retries=cluster.retries, backoff_duration=cluster.backoff_duration,
                       backoff_factor=cluster.backoff_factor, backoff_max_duration=cluster.backoff_max_duration)
    resources = cluster.resources_of(step)
    if resources.cpu_request:
        task.set_cpu_request(resources.cpu_request)
    if resources.cpu_limit:
        task.set_cpu_limit(resources.cpu_limit)
    if resources.memory_request:
        task.set_memory_request(resources.memory_request)
    if resources.memory_limit:
        task.set_memory_limit(resources.memory_limit)
    if step in cluster.gpu_steps:
        task.set_accelerator_type(cluster.accelerator_type).set_accelerator_limit(cluster.accelerator_limit_of(step))
        if step == "train" and cluster.gpus_per_train > 1:
            # NCCL between the processes of one pod goes through /dev/shm, 64 MiB by default in a container.
            kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                       size_limit=cluster.shm_size)
        for key, value in cluster.node_selector.items():
            kubernetes.add_node_selector(task, key, value)
        for toleration in cluster.tolerations:
            kubernetes.add_toleration(task, key=toleration.key, operator=toleration.operator, value=toleration.value,
                                      effect=toleration.effect, toleration_seconds=toleration.toleration_seconds)
    if cluster.tracking_config_map and cluster.tracking_config_map_keys:
        kubernetes.use_config_map_as_env(task, cluster.tracking_config_map,
                                         {key: key for key in cluster.tracking_config_map_keys})
    if cluster.tracking_secret and cluster.tracking_secret_keys:
        kubernetes.use_secret_as_env(task, cluster.tracking_secret, {key: key for key in cluster.tracking_secret_keys})
    for key, value in {**cluster.pod_labels, "autophagy.io/step": step, "autophagy.io/generation": str(generation)}.items():
        kubernetes.add_pod_label(task, key, value)
    if cluster.timeout_seconds:
        kubernetes.set_timeout(task, cluster.timeout_seconds)
    if cluster.image_pull_policy:
        kubernetes.set_image_pull_policy(task, cluster.image_pull_policy)
    if cluster.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(cluster.image_pull_secrets))
    # The ServiceAccount cannot be set per task with kfp-kubernetes 2.17.3; it is set for the
    # whole run at submit time (pipelines.submit: service_account=cluster.service_account).
    return task


def build_pipeline(cfg: ExperimentConfig, cluster: ClusterConfig | None = None, image: str | None = None) -> Callable:
    """The KFP pipeline function of ``cfg`` (no parameters: everything is fixed at compile time).

    Its output is the report task's run directory: ``<experiment>/`` in the ``runs/<experiment>``
    layout of the local loop (every generation's ``metrics.json`` and sample grid,
    ``config.json``, ``report/``).

    ``image``: the project image for every component (default: ``cluster.image``, then
    ``$AUTOPHAGY_IMAGE``, then :data:`autophagy.components.image.DEFAULT_IMAGE`).
    """
    from kfp import dsl

    from autophagy.components.image import resolve_image
    from autophagy.components.ops import build_components
    from autophagy.components.runtime import config_to_json

    cluster = (cluster or ClusterConfig()).validate()
    ops = build_components(resolve_image(image or cluster.image))
    config = config_to_json(cfg)
    seeds = list(cfg.loop.seeds)
    lam_items = [{"lam": format_lambda(lam)} for lam in cfg.loop.lambdas]
    generations = cfg.loop.generations

    def task(step: str, gen: int, /, **arguments: Any) -> Any:
        if step == "train":  # > 1: data-parallel under torchrun in the pod (autophagy.components.runtime.train)
            arguments["gpus"] = cluster.gpus_per_train
        return _configure(ops[step](**arguments), gen, step, cluster)

    @dsl.pipeline(name=pipeline_name(cfg),
                  description=f"autophagy self-consuming loop '{cfg.name}': lambdas {[i['lam'] for i in lam_items]}, "
                              f"seeds {seeds}, {generations} generations after generation 0")
    def autophagy_pipeline() -> dsl.Artifact:
        tracking = task("tracking", 0, config=config, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        prepare = task("prepare", 0, config=config)
        features = task("features", 0, config=config)
        real_train, real_test = prepare.outputs["train"], prepare.outputs["test"]
        extractor = features.outputs["extractor"]

        with dsl.ParallelFor(items=seeds, parallelism=cluster.seed_parallelism, name="seeds") as seed:
            train_set = real_train
            if "mix" in generation_steps(cfg, 0):  # fresh-real: generation 0's own draw from the pool
                train_set = task("mix", 0, config=config, real=real_train, generation=0, seed=seed,
                                 lam="").outputs["train_set"]
            train = task("train", 0, config=config, train_set=train_set, generation=0, seed=seed,
                         lam="").after(tracking)
            sample = task("sample", 0, config=config, model=train.outputs["model"], real_train=real_train,
                          extractor=extractor, generation=0, seed=seed, lam="")
            evaluate = task("evaluate", 0, config=config, samples=sample.outputs["samples"], real_train=real_train,
                            real_test=real_test, extractor=extractor, generation=0, seed=seed,
                            lam="").after(tracking)
            seed_fragment = evaluate.outputs["history"]
            if generations > 0:
                with dsl.ParallelFor(items=lam_items, parallelism=cluster.parallelism, name="lambdas") as item:
                    model, samples, history = train.outputs["model"], sample.outputs["samples"], evaluate.outputs["history"]
                    pooled = None
                    for g in range(1, generations + 1):
                        stop = {"history": history} if takes_history(cfg, g) else {}
                        synthetic = samples
                        if "pool" in generation_steps(cfg, g):
                            previous = {} if pooled is None else {"previous": pooled}
                            pooled = task("pool", g, samples=samples, generation=g, seed=seed, lam=item.lam,
                                          **previous, **stop).outputs["pooled"]
                            synthetic = pooled
                        mix = task("mix", g, config=config, real=real_train, synthetic=synthetic, generation=g,
                                   seed=seed, lam=item.lam, **stop)
                        train_g = task("train", g, config=config, train_set=mix.outputs["train_set"], init=model,
                                       generation=g, seed=seed, lam=item.lam, **stop).after(tracking)
                        sample_g = task("sample", g, config=config, model=train_g.outputs["model"],
                                        real_train=real_train, extractor=extractor, generation=g, seed=seed,
                                        lam=item.lam, **stop)
                        evaluate_g = task("evaluate", g, config=config, samples=sample_g.outputs["samples"],
                                          real_train=real_train, real_test=real_test, extractor=extractor,
                                          generation=g, seed=seed, lam=item.lam,
                                          previous=history).after(tracking)
                        model, samples, history = (train_g.outputs["model"], sample_g.outputs["samples"],
                                                   evaluate_g.outputs["history"])
                collect = task("collect", generations, fragments=dsl.Collected(history))
                seed_fragment = collect.outputs["merged"]
        report = task("report", generations, config=config,
                      fragments=dsl.Collected(seed_fragment)).after(tracking)
        return report.outputs["run_dir"]  # the run directory: every generation's metrics.json + report/

    return autophagy_pipeline


def compile_pipeline(cfg: ExperimentConfig, out_path: str | Path, cluster: ClusterConfig | None = None,
                     image: str | None = None) -> dict[str, Any]:
    """Compile ``cfg``'s pipeline to ``out_path`` (YAML); returns what was written and how big it is."""
    from kfp import compiler

    from autophagy.components.image import resolve_image

    cluster = (cluster or ClusterConfig()).validate()
    image = resolve_image(image or cluster.image)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    compiler.Compiler().compile(build_pipeline(cfg, cluster, image), package_path=str(out_path))
    seconds = time.perf_counter() - started
    counts = expected_tasks(cfg)
    return {
        "path": str(out_path),
        "bytes": out_path.stat().st_size,
        "compile_seconds": seconds,
        "image": image,
        "pipeline_name": pipeline_name(cfg),
        "task_definitions": len(counts),  # one definition per gen-<g>-<step> name
        "task_runs": sum(counts.values()),
        "task_runs_by_name": counts,
    }
