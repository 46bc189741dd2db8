"""The KFP v2 components: one per step, each a one-line call into :mod:`autophagy.components.runtime`.

Containerized Python components (``base_image`` = the project image, kfp preinstalled there,
``install_kfp_package=False``). ``options`` is the JSON of the options the step reads
(:mod:`autophagy.step_config`: the task's cache key covers exactly those); data sets are
``Dataset`` artifacts (the artifact path is the dataset directory), checkpoints ``Model``
artifacts, per-generation metrics ``Metrics`` artifacts (shown in the KFP UI). ``lam`` is the
text of a lambda (``"0.5"``, ``"inf"``), ``""`` for generation 0 (shared).

Every compiled task embeds its component's source, so the bodies stay tiny and the imports
stay inside them (they run in the image, not where the pipeline is compiled). This module
must not use ``from __future__ import annotations``: KFP reads the annotations as types.
"""

from typing import Callable, Dict, List

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def prepare(options: str, train: Output[Dataset], test: Output[Dataset]):
    """Write the real train and test sets (autophagy.stages.prepare)."""
    from autophagy.components import runtime
    train.metadata.update(runtime.prepare(options, train.path, test.path))


def features(options: str, extractor: Output[Artifact]):
    """Build the feature extractor of evaluate.features (autophagy.stages.features)."""
    from autophagy.components import runtime
    extractor.metadata.update(runtime.features(options, extractor.path))


def mix(options: str, real: Input[Dataset], generation: int, seed: int, lam: str, fresh_real: bool,
        train_set: Output[Dataset], synthetic: Input[Dataset] = None, history: Input[Artifact] = None) -> str:
    """Compose a training set (autophagy.stages.mix); synthetic = the samples of generation - 1 or their
    pool; fresh_real: draw the real items from the prepared pool; history (loop.stop_on_collapse) = the
    chain so far: a collapsed chain's task only marks its output. Returns its DVC pointer (JSON, or {})."""
    import json
    from autophagy.components import runtime
    train_set.metadata.update(runtime.mix(options, real.path, synthetic.path if synthetic else None, train_set.path,
                                          generation, lam, seed, fresh_real, history.path if history else None))
    return json.dumps(train_set.metadata.get("dvc", {}))


def pool(samples: Input[Dataset], generation: int, pooled: Output[Dataset], previous: Input[Dataset] = None,
         seed: int = 0, lam: str = "", history: Input[Artifact] = None):
    """Accumulate strategies: the chain's sample sets of generations 0 .. generation - 1; history: as for mix."""
    from autophagy.components import runtime
    pooled.metadata.update(runtime.pool(previous.path if previous else None, samples.path, generation, pooled.path,
                                        seed, lam, history.path if history else None))


def train(options: str, train_set: Input[Dataset], generation: int, seed: int, lam: str, model: Output[Model],
          init: Input[Model] = None, gpus: int = 1, history: Input[Artifact] = None) -> str:
    """Train one generation (autophagy.stages.train); init = the previous generation's model; gpus > 1:
    data-parallel under torchrun in this pod (cluster.gpus_per_train); history, return: as for mix."""
    import json
    from autophagy.components import runtime
    model.metadata.update(runtime.train(options, train_set.path, model.path, generation, seed, lam,
                                        init.path if init else None, gpus, history.path if history else None))
    return json.dumps(model.metadata.get("dvc", {}))


def sample(options: str, model: Input[Model], real_train: Input[Dataset], extractor: Input[Artifact], generation: int,
           seed: int, n: int, lam: str, samples: Output[Dataset], history: Input[Artifact] = None) -> str:
    """Draw n samples of a generation (autophagy.stages.sample); history, return: as for mix."""
    import json
    from autophagy.components import runtime
    samples.metadata.update(runtime.sample(options, model.path, real_train.path, samples.path, generation, seed, n,
                                           lam, extractor.path, history.path if history else None))
    return json.dumps(samples.metadata.get("dvc", {}))


def evaluate(options: str, samples: Input[Dataset], real_train: Input[Dataset], real_test: Input[Dataset],
             extractor: Input[Artifact], generation: int, seed: int, lam: str, metrics: Output[Metrics],
             history: Output[Artifact], grid: Output[HTML], previous: Input[Artifact] = None, stoppable: bool = False,
             train_set_dvc: str = "{}", model_dvc: str = "{}", samples_dvc: str = "{}", model: Input[Model] = None,
             model_gen0: Input[Model] = None):
    """Metrics of a generation (autophagy.stages.evaluate) into history, the chain's run layout (runtime.evaluate:
    stoppable, the *_dvc pointers; model, model_gen0: this generation's and generation 0's, text families only)."""
    from autophagy.components import runtime
    pointers = {"train_set": train_set_dvc, "model": model_dvc, "samples": samples_dvc}
    models = {"current": model.path if model else None, "generation0": model_gen0.path if model_gen0 else None}
    for key, value in runtime.evaluate(options, samples.path, real_train.path, real_test.path, extractor.path,
                                       generation, seed, lam, history.path, previous.path if previous else None,
                                       grid.path, stoppable, pointers, models).items():
        metrics.log_metric(key, value)


def handoff(key: str, kfp_run_id: str, real_train: Input[Dataset] = None, real_test: Input[Dataset] = None,
            extractor: Input[Artifact] = None, model: Input[Model] = None, samples: Input[Dataset] = None,
            history: Input[Artifact] = None, pooled: Input[Dataset] = None, run_dir: Input[Artifact] = None):
    """Record the URIs of what the next KFP run of the experiment needs on the MLflow parent run."""
    from autophagy.components import runtime
    given = {"real_train": real_train, "real_test": real_test, "extractor": extractor, "model": model,
             "samples": samples, "history": history, "pooled": pooled, "run_dir": run_dir}
    runtime.handoff(key, kfp_run_id, {name: (a.uri, a.path) for name, a in given.items() if a is not None},
                    real_train.metadata.get("dvc") if real_train is not None else None)


def collect(fragments: Input[List[Artifact]], merged: Output[Artifact]):
    """Merge run-layout fragments into one."""
    from autophagy.components import runtime
    runtime.collect([f.path for f in fragments], merged.path)


def report(config: str, fragments: Input[List[Artifact]], run_dir: Output[Artifact], page: Output[Markdown],
           data_dvc: str = "{}"):
    """Tables and figures across lambdas, seeds and generations (autophagy.report), also logged to MLflow;
    data_dvc: the DVC pointers of the real data sets (with a DVC remote, the pointer tree goes to MLflow)."""
    import json
    from autophagy.components import runtime
    run_dir.metadata.update(runtime.report(config, [f.path for f in fragments], run_dir.path, page.path,
                                           json.loads(data_dvc)))


#: Every component function, by step name (the word in the task names ``gen-<g>-<step>``).
FUNCTIONS: Dict[str, Callable] = {f.__name__: f for f in (prepare, features, mix, pool, train, sample, evaluate,
                                                            handoff, collect, report)}


def build_components(image: str) -> Dict[str, Callable]:
    """The KFP components, by step name, running in ``image`` (checked: pinned, never ``latest``)."""
    from autophagy.components.image import check_image

    check_image(image)
    return {name: dsl.component(func, base_image=image, install_kfp_package=False) for name, func in FUNCTIONS.items()}
