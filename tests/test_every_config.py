"""Every ``configs/*.yaml`` goes through ``autophagy run`` end to end at a tiny size (issue 14 item 5).

The shrinking overrides keep each config's model family, network kind, loop strategy and data
shape and cut budgets, widths, samples, lambdas, seeds and generations (1 generation after
generation 0, one lambda). Data and features that need a download cannot run offline:

* ``cifar10-*``: ``data.source=cifar10`` becomes an ``image-folder`` of 32x32 RGB PNGs written
  here (CIFAR-10's shape), read at 16x16; ``evaluate.features=inception`` becomes ``raw``.
* ``ffhq64-edm``: its ``image-folder`` source is kept; the folder (64x64 RGB PNGs) is written here
  and read at 16x16.
* Every config trains generation 0 from scratch (``train.init_checkpoint=null``): the pretrained
  starts are downloads.
* ``digits-*``, ``gaussian-theory``, ``toy2d-flow``, ``tinytext-lm``: the data source runs unchanged (offline).
* ``wikitext2-opt125m``, ``tinystories-gpt2``: their Hugging Face data sets and pretrained networks
  are downloads: the embedded ``python-docs`` corpus, a byte-level BPE and a tiny GPT from scratch,
  keeping the loop strategy and the training protocol (``init: scratch``).

A config added to ``configs/`` without an entry in :data:`SHRINK` fails this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from small_configs import SMALL_TEXT, SMALL_TRAIN

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

COMMON = ["loop.generations=1", "loop.seeds=[0]", "tracking.enabled=false", "train.device=cpu"]
SMALL_UNET = [
    "model.model_channels=16",
    "model.channel_mult=[1,2]",
    "model.num_blocks=1",
    "data.n_train=48",
    "data.n_test=32",
    "sample.n_eval=32",
    "sample.batch_size=32",
    "evaluate.features=raw",
    "evaluate.grid_size=16",
    *SMALL_TRAIN,
]
FROM_SCRATCH_TEXT = [
    "data.source=python-docs",
    "data.tokenizer=bpe",
    "model.pretrained=''",
    "train.precision=fp32",
    "evaluate.embedding_batch_size=32",
    "evaluate.nll_batch_size=32",
    *SMALL_TEXT,
]
IMAGE_FOLDER = "{images}"  # replaced by the folder of generated PNGs of the config's resolution
#: the generated folder: 96 files, half held out, so the 32-item test split fits; read at 16x16 (data.resolution),
#: since the raw-pixel Frechet distance of 32x32x3 = 3072 features (two 3072x3072 eigh) takes minutes on a CPU
GENERATED = [f"data.path={IMAGE_FOLDER}", "data.test_fraction=0.5", "data.resolution=16"]

#: config name -> (overrides, the resolution of the generated image folder or None when the data runs unchanged)
SHRINK: dict[str, tuple[list[str], int | None]] = {
    "cifar10-ddpm": (
        [*SMALL_UNET, "model.num_steps=2", "loop.lambdas=[0.5]", "data.source=image-folder", *GENERATED],
        32,
    ),
    "cifar10-edm": (
        [*SMALL_UNET, "model.num_steps=2", "loop.lambdas=[0.5]", "data.source=image-folder", *GENERATED],
        32,
    ),
    "cifar10-otcfm": (
        [
            *SMALL_UNET,
            "model.head_channels=16",
            "model.sampler=euler",
            "model.num_steps=2",
            "loop.lambdas=[0.5]",
            "data.source=image-folder",
            *GENERATED,
        ],
        32,
    ),
    "ffhq64-edm": ([*SMALL_UNET, "model.num_steps=2", "loop.lambdas=[0.5]", *GENERATED], 64),
    "digits-edm": (
        [
            "model.model_channels=32",
            "model.num_blocks=1",
            "model.num_steps=2",
            "data.n_train=64",
            "data.n_test=32",
            "sample.n_eval=32",
            "loop.lambdas=[0.5]",
            *SMALL_TRAIN,
        ],
        None,
    ),
    "digits-edm-unet": ([*SMALL_UNET, "evaluate.features=digits-net", "model.num_steps=2", "loop.lambdas=[inf]"], None),
    "gaussian-theory": (["loop.lambdas=[0.5]"], None),
    "tinytext-lm": (["loop.lambdas=[0.5]", *SMALL_TEXT], None),
    # the Hugging Face data and pretrained networks are downloads: the embedded corpus, a BPE and a tiny GPT instead
    "tinystories-gpt2": (["loop.lambdas=[1]", *FROM_SCRATCH_TEXT], None),
    "wikitext2-opt125m": (["loop.lambdas=[inf]", *FROM_SCRATCH_TEXT], None),
    "toy2d-flow": (
        [
            "data.n_train=64",
            "data.n_test=64",
            "sample.n_eval=64",
            "model.transforms=1",
            "model.hidden_features=[8]",
            "loop.lambdas=[1]",
            *SMALL_TRAIN,
        ],
        None,
    ),
}


def _image_folder(path: Path, resolution: int, count: int = 96) -> Path:
    """``count`` random RGB PNGs of ``resolution`` x ``resolution``: the shape of CIFAR-10 or FFHQ-64, offline."""
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(resolution, resolution, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path / f"{i:03d}.png")
    return path


def test_every_config_has_a_shrink_entry():
    assert {c.stem for c in CONFIGS} == set(SHRINK), "add the new config to SHRINK"


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_runs_end_to_end(config, tmp_path):
    overrides, resolution = SHRINK[config.stem]
    if resolution is not None:
        folder = _image_folder(tmp_path / "images", resolution)
        overrides = [o.replace(IMAGE_FOLDER, str(folder)) for o in overrides]
    args = [sys.executable, "-m", "autophagy.cli", "run", "--config", str(config), "--root", str(tmp_path / "runs")]
    for override in [*COMMON, *overrides]:
        args += ["-S", override]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    name = config.stem
    root = tmp_path / "runs" / name
    report = root / "report"
    assert (report / "summary.json").is_file() or list(report.glob("*.md")), f"no report in {report}"
    metrics = sorted(root.rglob("metrics.json"))
    assert len(metrics) == 2, metrics  # generation 0 and generation 1 of the one chain
    for path in metrics:
        values = json.loads(path.read_text())
        fd = [v for k, v in _flat(values).items() if k.startswith("fd_") or k.startswith("swd_")]
        assert fd and all(np.isfinite(fd)), (path, values)


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out
