"""The Kubeflow pipelines of one experiment: four kinds of KFP run, each small enough for the backend.

Argo keeps a workflow's spec and the status of every node it ran in one object capped at 1 MiB, and
hands each DAG's spec to its driver pod as one argument; an experiment of any size therefore runs
as many small KFP runs (``autophagy.pipelines.runs`` plans them, ``autophagy.pipelines.submit``
starts them one after the other and passes artifacts on):

``data``        ``prepare-data``, ``feature-extractor``, ``handoff``               once per experiment
``generation-0``  imports the data; ``[gen-0-mix]``, ``gen-0-train``, ``gen-0-sample``,
                ``gen-0-evaluate``, ``handoff``                                     once per seed
``chain``       imports the data and generation ``first - 1`` of one (lambda, seed) chain;
                ``[gen-g-pool]``, ``gen-g-mix``, ``gen-g-train``, ``gen-g-sample``, ``gen-g-evaluate``
                for g in a window ``first .. last`` (unrolled), ``handoff``          per chain and window
``collect``     imports up to 32 run-layout fragments; ``collect-fragments``, ``handoff``  when there are more
``report``      imports every chain's run-layout fragment (or the collected ones); ``report``, ``handoff``

A generation's tasks carry their chain in the KFP UI: ``gen-5-train · λ=0.5 · seed 0`` (a window's
package is compiled per chain; display names are not part of KFP's cache key).

What each generation runs and from which inputs is :func:`autophagy.plan.generation_plan`; how
many samples it draws (:func:`autophagy.plan.samples_to_draw`) arrives as the parameter
``n_samples``. Every pipeline takes the options of each step as one JSON parameter per step
(``options_train`` ...; :mod:`autophagy.step_config`), so the config is passed once and a task's
cache key covers only what its step reads; where to log (experiment name, tracking switches, the
chains, the config key of the MLflow parent run) is an environment variable of the pods, outside
the cache keys. Pipeline names do not include the experiment: KFP looks up its cache per pipeline
name, so a task with the same inputs is reused across experiments and windows.

``handoff`` (never cached) records the URIs of what the next run needs on the MLflow parent run;
``dsl.importer`` (``reimport=False``) brings them into the next run as the same artifacts, so
their downstream tasks keep their cache keys.
"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations as types.
import json
from collections.abc import Callable
from typing import Any

from autophagy.components.dvc_remote import REMOTE_ENV
from autophagy.pipelines.cluster import ClusterConfig
from autophagy.pipelines.data_source import give_prepare_its_data

from autophagy import plan
from autophagy.config import ExperimentConfig
from autophagy.layout import SCRATCH_ENV
from autophagy.step_config import BOOKKEEPING_ENV, bookkeeping, to_json
from autophagy.tracking import CONFIG_KEY_ENV, config_key

#: The steps whose outputs go to the DVC remote (``cluster.dvc_remote``): the real data sets, every
#: training set, model and sample set.
PUSHING_STEPS = ("prepare", "mix", "train", "sample")
#: KFP pipeline names, one per kind of run (the scope of KFP's cache).
PIPELINE_NAMES = {
    "data": "autophagy-data",
    "generation-0": "autophagy-generation-0",
    "chain": "autophagy-chain",
    "collect": "autophagy-collect",
    "report": "autophagy-report",
}


class _Builder:
    """Makes configured tasks of one experiment's pipelines."""

    def __init__(self, cfg: ExperimentConfig, cluster: ClusterConfig, image: str, label: str = ""):
        from autophagy.components.ops import build_components

        self.cfg, self.cluster, self.label = cfg, cluster, label
        self.ops = build_components(image)
        self.env = {BOOKKEEPING_ENV: to_json(bookkeeping(cfg)), CONFIG_KEY_ENV: config_key(cfg)}

    def task(self, step: str, generation: int | None, /, **arguments: Any) -> Any:
        """A configured task of ``step``; ``generation`` None: an experiment-level task, named for its step."""
        if step == "train":
            arguments["gpus"] = self.cluster.gpus_per_train
        task = self.ops[step](**arguments)
        return configure(task, task_name(step, generation, self.label), step, self.cluster, self.env)

    def pointers(self, mix: Any, train: Any, sample: Any) -> dict[str, Any]:
        """The DVC pointers an evaluate task writes (with ``cluster.dvc_remote``; without one, none
        are wired: each wired value costs every generation status bytes)."""
        if self.cluster.dvc_remote is None:
            return {}
        tasks = {"train_set_dvc": mix, "model_dvc": train, "samples_dvc": sample}
        return {name: task.outputs["Output"] for name, task in tasks.items() if task is not None}

    def models(self, generation: int, current: Any, generation0: Any) -> dict[str, Any]:
        """The checkpoints an evaluate task reads (:func:`autophagy.plan.evaluation_models`: text
        families only; the others get none, so that no model is downloaded into their evaluate pods)."""
        given = {"current": ("model", current), "generation0": ("model_gen0", generation0)}
        return {given[role][0]: given[role][1] for role in plan.evaluation_models(self.cfg, generation)}

    def handoff(self, key: Any, **outputs: Any) -> Any:
        """The run's last task: records ``outputs``' URIs under ``key`` for the next run (never cached)."""
        from kfp import dsl

        return self.task("handoff", None, key=key, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **outputs)

    def real_inputs(self, real_train_uri: Any, real_test_uri: Any, extractor_uri: Any) -> tuple[Any, Any, Any]:
        """Importers of what the data run handed off: the real train and test sets and the extractor."""
        return (
            self.importer("real-train", real_train_uri, "dataset"),
            self.importer("real-test", real_test_uri, "dataset"),
            self.importer("extractor", extractor_uri, "artifact"),
        )

    def importer(self, name: str, uri: Any, kind: str) -> Any:
        from kfp import dsl

        artifact_class = {"dataset": dsl.Dataset, "model": dsl.Model, "artifact": dsl.Artifact}[kind]
        task = dsl.importer(artifact_uri=uri, artifact_class=artifact_class, reimport=False)
        task.set_display_name(f"import-{name}")
        return task.output


#: Experiment-level tasks, as the KFP UI names them.
EXPERIMENT_TASK_NAMES = {
    "prepare": "prepare-data",
    "features": "feature-extractor",
    "handoff": "handoff",
    "collect": "collect-fragments",
    "report": "report",
}


def task_name(step: str, generation: int | None, label: str = "") -> str:
    """The KFP UI name of a task: ``gen-5-train · λ=0.5 · seed 0`` for a generation's task (``label``:
    its chain), the step's own name (:data:`EXPERIMENT_TASK_NAMES`) for an experiment-level one."""
    if generation is None:
        return EXPERIMENT_TASK_NAMES[step]
    return f"gen-{generation}-{step}" + (f" · {label}" if label else "")


def configure(task: Any, display_name: str, step: str, cluster: ClusterConfig, env: dict[str, str]) -> Any:
    """Name, caching, retries, resources, scheduling, env, durable scratch and security context of one task."""
    from kfp import kubernetes

    task.set_display_name(display_name)
    # handoff is never cached: it records this run's URIs (cheap, and a cached one would record nothing).
    task.set_caching_options(cluster.caching and step != "handoff")
    if cluster.retries > 0:
        task.set_retry(
            num_retries=cluster.retries,
            backoff_duration=cluster.backoff_duration,
            backoff_factor=float(cluster.backoff_factor),
            backoff_max_duration=f"{cluster.retry_window_seconds}s",
        )
    resources = cluster.resources_of(step)
    for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        if getattr(resources, name):
            getattr(task, f"set_{name}")(getattr(resources, name))
    if step in cluster.gpu_steps:
        task.set_accelerator_type(cluster.accelerator_type).set_accelerator_limit(cluster.accelerator_limit_of(step))
        if step == "train" and cluster.gpus_per_train > 1:
            # NCCL between the processes of one pod goes through /dev/shm, 64 MiB by default in a container.
            kubernetes.empty_dir_mount(
                task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=cluster.shm_size
            )
        for key, value in cluster.node_selector.items():
            kubernetes.add_node_selector(task, key, value)
        for toleration in cluster.tolerations:
            kubernetes.add_toleration(
                task,
                key=toleration.key,
                operator=toleration.operator,
                value=toleration.value,
                effect=toleration.effect,
                toleration_seconds=toleration.toleration_seconds,
            )
    if cluster.dvc_remote is not None and step in PUSHING_STEPS:
        task.set_env_variable(REMOTE_ENV, json.dumps(cluster.dvc_remote.settings(), sort_keys=True))
        if cluster.dvc_remote.credentials_secret:
            kubernetes.use_secret_as_env(
                task,
                cluster.dvc_remote.credentials_secret,
                {key: env for env, key in cluster.dvc_remote.credentials_keys.items()},
            )
    if step == "train" and cluster.scratch_pvc:
        kubernetes.mount_pvc(task, pvc_name=cluster.scratch_pvc, mount_path=cluster.scratch_mount_path)
        task.set_env_variable(SCRATCH_ENV, cluster.scratch_mount_path)
    for name, value in env.items():
        task.set_env_variable(name, value)
    if cluster.tracking_config_map and cluster.tracking_config_map_keys:
        kubernetes.use_config_map_as_env(
            task, cluster.tracking_config_map, {key: key for key in cluster.tracking_config_map_keys}
        )
    if cluster.tracking_secret and cluster.tracking_secret_keys:
        kubernetes.use_secret_as_env(task, cluster.tracking_secret, {key: key for key in cluster.tracking_secret_keys})
    for key, value in {**cluster.pod_labels, "autophagy.io/step": step}.items():
        kubernetes.add_pod_label(task, key, value)
    # Non-root identity of the task's container; the KFP 2.17 backend's compiler adds
    # allowPrivilegeEscalation: false, capabilities drop ALL and seccomp RuntimeDefault to it.
    kubernetes.set_security_context(
        task, run_as_user=cluster.run_as_user, run_as_group=cluster.run_as_group, run_as_non_root=True
    )
    if cluster.timeout_seconds:
        kubernetes.set_timeout(task, cluster.timeout_seconds)
    if cluster.image_pull_policy:
        kubernetes.set_image_pull_policy(task, cluster.image_pull_policy)
    if cluster.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(cluster.image_pull_secrets))
    # The ServiceAccount cannot be set per task with kfp-kubernetes 2.17.3; it is set for the
    # whole run at submit time (service_account=cluster.service_account).
    return task


def data_pipeline(cfg: ExperimentConfig, cluster: ClusterConfig, image: str) -> Callable:
    """The run that prepares the real data sets and the feature extractor of the metrics."""
    from kfp import dsl

    b = _Builder(cfg, cluster, image)

    @dsl.pipeline(name=PIPELINE_NAMES["data"], description="autophagy: real train/test sets and the feature extractor")
    def autophagy_data(handoff_key: str, options_prepare: str, options_features: str):
        prepare = b.task("prepare", None, options=options_prepare)
        give_prepare_its_data(prepare, cfg, cluster)  # image-folder data on a claim or in an object store
        features = b.task("features", None, options=options_features)
        b.handoff(
            handoff_key,
            real_train=prepare.outputs["train"],
            real_test=prepare.outputs["test"],
            extractor=features.outputs["extractor"],
        )

    return autophagy_data


def generation0_pipeline(cfg: ExperimentConfig, cluster: ClusterConfig, image: str, label: str = "") -> Callable:
    """The run of one seed's generation 0, shared by every lambda of that seed (``label``: ``seed 0``,
    after each task's name in the KFP UI)."""
    from kfp import dsl

    b = _Builder(cfg, cluster, image, label)
    step = plan.generation_plan(cfg, None, 0, 0)

    @dsl.pipeline(name=PIPELINE_NAMES["generation-0"], description="autophagy: generation 0 of one seed")
    def autophagy_generation_0(
        handoff_key: str,
        options_mix: str,
        options_train: str,
        options_sample: str,
        options_evaluate: str,
        seed: int,
        n_samples: int,
        real_train_uri: str,
        real_test_uri: str,
        extractor_uri: str,
    ):
        real_train, real_test, extractor = b.real_inputs(real_train_uri, real_test_uri, extractor_uri)
        train_set, mix = real_train, None
        if "mix" in step.steps:  # fresh-real: generation 0 trains on its own draw from the pool
            mix = b.task(
                "mix", 0, options=options_mix, real=real_train, generation=0, seed=seed, lam="", fresh_real=True
            )
            train_set = mix.outputs["train_set"]
        train = b.task("train", 0, options=options_train, train_set=train_set, generation=0, seed=seed, lam="")
        sample = b.task(
            "sample",
            0,
            options=options_sample,
            model=train.outputs["model"],
            real_train=real_train,
            extractor=extractor,
            generation=0,
            seed=seed,
            n=n_samples,
            lam="",
        )
        evaluate = b.task(
            "evaluate",
            0,
            options=options_evaluate,
            samples=sample.outputs["samples"],
            real_train=real_train,
            real_test=real_test,
            extractor=extractor,
            generation=0,
            seed=seed,
            lam="",
            **b.pointers(mix, train, sample),
            **b.models(0, train.outputs["model"], train.outputs["model"]),
        )
        b.handoff(
            handoff_key,
            model=train.outputs["model"],
            samples=sample.outputs["samples"],
            history=evaluate.outputs["history"],
        )

    return autophagy_generation_0


def chain_pipeline(
    cfg: ExperimentConfig, cluster: ClusterConfig, image: str, first: int, last: int, label: str = ""
) -> Callable:
    """The run of generations ``first .. last`` of one (lambda, seed) chain (the same graph for every
    chain: lambda, seed and what generation ``first - 1`` left are parameters; ``label``, e.g.
    ``λ=0.5 · seed 0``, names the chain after each generation task's name in the KFP UI)."""
    from kfp import dsl

    b = _Builder(cfg, cluster, image, label)
    # How a generation is wired does not depend on its chain: plan it for the first chain.
    steps = [plan.generation_plan(cfg, cfg.loop.lambdas[0], cfg.loop.seeds[0], g) for g in range(first, last + 1)]
    takes_pool = steps[0].pooled and first > 1

    @dsl.pipeline(
        name=PIPELINE_NAMES["chain"], description=f"autophagy: generations {first}..{last} of one (lambda, seed) chain"
    )
    def autophagy_chain(
        handoff_key: str,
        options_mix: str,
        options_train: str,
        options_sample: str,
        options_evaluate: str,
        lam: str,
        seed: int,
        n_samples: int,
        real_train_uri: str,
        real_test_uri: str,
        extractor_uri: str,
        model_uri: str,
        samples_uri: str,
        history_uri: str,
        pooled_uri: str = "",
        gen0_model_uri: str = "",
    ):
        real_train, real_test, extractor = b.real_inputs(real_train_uri, real_test_uri, extractor_uri)
        model = b.importer("model", model_uri, "model")
        samples = b.importer("samples", samples_uri, "dataset")
        history = b.importer("history", history_uri, "artifact")
        pooled = b.importer("pool", pooled_uri, "dataset") if takes_pool else None
        model_gen0 = b.importer("model-gen0", gen0_model_uri, "model") if plan.evaluation_models(cfg, first) else None
        for step in steps:
            g = step.generation
            chain = {"generation": g, "seed": seed, "lam": lam}
            stop = {"history": history} if step.stoppable else {}
            synthetic = samples
            if step.pooled:
                previous = {} if pooled is None else {"previous": pooled}
                pooled = b.task("pool", g, samples=samples, **previous, **chain, **stop).outputs["pooled"]
                synthetic = pooled
            mix = b.task(
                "mix",
                g,
                options=options_mix,
                real=real_train,
                synthetic=synthetic,
                fresh_real=step.fresh_real,
                **chain,
                **stop,
            )
            init = {"init": model} if step.init_from is not None else {}
            train = b.task(
                "train", g, options=options_train, train_set=mix.outputs["train_set"], **init, **chain, **stop
            )
            sample = b.task(
                "sample",
                g,
                options=options_sample,
                model=train.outputs["model"],
                real_train=real_train,
                extractor=extractor,
                n=n_samples,
                **chain,
                **stop,
            )
            evaluate = b.task(
                "evaluate",
                g,
                options=options_evaluate,
                samples=sample.outputs["samples"],
                real_train=real_train,
                real_test=real_test,
                extractor=extractor,
                previous=history,
                stoppable=step.stoppable,
                **b.pointers(mix, train, sample),
                **b.models(g, train.outputs["model"], model_gen0),
                **chain,
            )
            model, samples, history = train.outputs["model"], sample.outputs["samples"], evaluate.outputs["history"]
        kept = {"pooled": pooled} if pooled is not None else {}
        b.handoff(
            handoff_key,
            model=model,
            samples=samples,
            history=history,
            **kept,
        )

    return autophagy_chain


def collect_pipeline(cfg: ExperimentConfig, cluster: ClusterConfig, image: str) -> Callable:
    """A run that merges run-layout fragments into one (when there are more than one run may import)."""
    from kfp import dsl

    b = _Builder(cfg, cluster, image)

    @dsl.pipeline(name=PIPELINE_NAMES["collect"], description="autophagy: merge chains' run-layout fragments")
    def autophagy_collect(handoff_key: str, fragment_uris: list[str]):
        with dsl.ParallelFor(items=fragment_uris, name="fragments") as uri:
            fragment = b.importer("fragment", uri, "artifact")
        collect = b.task("collect", None, fragments=dsl.Collected(fragment))
        b.handoff(
            handoff_key,
            history=collect.outputs["merged"],
        )

    return autophagy_collect


def report_pipeline(cfg: ExperimentConfig, cluster: ClusterConfig, image: str) -> Callable:
    """The run that merges every chain's run-layout fragment into ``runs/<experiment>`` and reports."""
    from kfp import dsl

    b = _Builder(cfg, cluster, image)

    @dsl.pipeline(name=PIPELINE_NAMES["report"], description="autophagy: report over every lambda, seed and generation")
    def autophagy_report(handoff_key: str, config: str, fragment_uris: list[str], data_dvc: str = "{}"):
        with dsl.ParallelFor(items=fragment_uris, name="fragments") as uri:
            fragment = b.importer("fragment", uri, "artifact")
        report = b.task("report", None, config=config, fragments=dsl.Collected(fragment), data_dvc=data_dvc)
        b.handoff(
            handoff_key,
            run_dir=report.outputs["run_dir"],
        )

    return autophagy_report
