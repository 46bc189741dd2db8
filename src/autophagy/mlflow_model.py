"""An autophagy checkpoint as an MLflow Logged Model, loaded as a pyfunc by autophagy's own reader.

A kept generation's checkpoint (``tracking.keep_checkpoints``) is logged as a Logged Model of its
chain's run: the checkpoint directory, unchanged, under ``checkpoint/`` (so the storage is the same
as logging it as run artifacts) and an ``MLmodel`` file whose pyfunc flavour names this module as
its loader. Loading therefore reads safetensors and JSON through
:func:`autophagy.models.checkpoint.load_checkpoint`; nothing in the model is a pickle or code::

    import mlflow
    model = mlflow.pyfunc.load_model("models:/<model_id>")      # or runs:/<run_id>/... via the UI
    rows = model.predict({"n": 16, "start": 0}, params={"seed": 0, "temperature": 1.0})
    # uint8 [16, H, W, C] images (image families) or float32 [16, d] vectors

``predict`` draws rows ``start .. start + n - 1`` of the seeded sample stream exactly as the sample
stage does (:meth:`autophagy.models.base.GenerativeModel.sample`: row ``i`` depends only on
``(seed, i)``); ``model_input`` may also be a bare row count.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from autophagy.tracking import Tracker

#: Where the checkpoint directory sits inside the model's artifacts.
CHECKPOINT_DIR = "checkpoint"
#: The Logged Model's ``model_type`` (the MLflow UI's "Model type" column).
MODEL_TYPE = "autophagy-checkpoint"
GENERATION_TAG = "autophagy.generation"


#: ``predict``'s params (name, MLflow type, default): the signature that lets MLflow pass them through.
PREDICT_PARAMS = (
    ("seed", "long", 0),
    ("temperature", "double", 1.0),
    ("batch_size", "long", 1024),
    ("device", "string", "auto"),
)


class CheckpointSampler:
    """The pyfunc face of a loaded checkpoint: ``predict`` draws seeded samples."""

    def __init__(self, checkpoint_dir: str | Path):
        from autophagy.models.checkpoint import load_checkpoint

        self.model = load_checkpoint(checkpoint_dir, with_train_state=False)

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> np.ndarray:
        """Rows ``[n, *item_shape]`` for ``model_input`` = ``n`` or ``{"n": n, "start": first}``;
        ``params``: ``seed`` (default 0), ``temperature`` (1.0), ``batch_size`` (1024), ``device`` (auto)."""
        request = {"n": model_input} if isinstance(model_input, (int, np.integer)) else dict(model_input)
        unknown = set(request) - {"n", "start"}
        if unknown or "n" not in request:
            raise ValueError(
                f"predict takes a row count or {{'n': rows, 'start': first row}}, got keys {sorted(request)}"
            )
        options = {name: default for name, _, default in PREDICT_PARAMS} | dict(params or {})
        return self.model.sample(
            int(request["n"]),
            int(options["seed"]),
            batch_size=int(options["batch_size"]),
            device=str(options["device"]),
            temperature=float(options["temperature"]),
            start=int(request.get("start", 0)),
        )


def _load_pyfunc(data_path: str) -> CheckpointSampler:
    """MLflow's pyfunc loader hook: ``data_path`` is the model's ``checkpoint/`` directory."""
    return CheckpointSampler(data_path)


def write_mlmodel(directory: Path, model_id: str, run_id: str) -> None:
    """Write the ``MLmodel`` file of a checkpoint model into ``directory`` (the checkpoint itself is
    uploaded beside it under :data:`CHECKPOINT_DIR`)."""
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    params = ParamSchema([ParamSpec(name, kind, default) for name, kind, default in PREDICT_PARAMS])
    model = Model(run_id=run_id, model_id=model_id, artifact_path=None, signature=ModelSignature(params=params))
    mlflow.pyfunc.add_to_model(model, loader_module=__name__, data=CHECKPOINT_DIR)
    model.save(str(directory / "MLmodel"))


def log_checkpoint(tracker: Tracker, run_id: str, checkpoint_dir: Path, generation: int) -> str:
    """Log ``checkpoint_dir`` as a Logged Model ``gen-<g>`` of ``run_id``, linked to the run at step =
    ``generation``; returns its model id. Once per run and generation: a redo after a crash finds the
    READY model, and marks FAILED a model whose upload the crash cut short."""
    from mlflow.entities import LoggedModelOutput

    client = tracker.client
    found = client.search_logged_models(
        [tracker.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND tags.`{GENERATION_TAG}` = '{generation}'",
    )
    for model in found:
        if str(model.status) == "READY":
            return model.model_id
        client.finalize_logged_model(model.model_id, "FAILED")
    run_tags = client.get_run(run_id).data.tags
    tags = {GENERATION_TAG: str(generation)}
    tags.update({key: run_tags[key] for key in ("autophagy.lambda", "autophagy.seed") if key in run_tags})
    model = client.create_logged_model(
        tracker.experiment_id,
        name=f"gen-{generation:03d}",
        source_run_id=run_id,
        tags=tags,
        params={"family": tracker.cfg.model.family},
        model_type=MODEL_TYPE,
    )
    with tempfile.TemporaryDirectory(prefix="autophagy-mlmodel-") as staging:
        write_mlmodel(Path(staging), model.model_id, run_id)
        client.log_model_artifacts(model.model_id, staging)
    client.log_model_artifacts(model.model_id, str(checkpoint_dir), CHECKPOINT_DIR)
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=generation)])
    return model.model_id
