"""A sample set drawn in pieces (``sample --start``) and merged equals the one drawn whole, with
and without curation; bad pieces are refused by name (issue 4, item 5)."""

from __future__ import annotations

import numpy as np
import pytest

from autophagy.config import ConfigError
from autophagy.data.dataset import open_dataset
from autophagy.stages import prepare, sample, train


@pytest.fixture
def toy_model(tmp_path, tiny_cfg):
    cfg = tiny_cfg("toy")
    root = tmp_path
    prepare.run(cfg, root / "data")
    train.run(cfg, root / "data" / "train", root / "model", generation=0, seed=0)
    return cfg, root


def draw(cfg, root, name, n, start=0, **overrides):
    import dataclasses

    if overrides:
        cfg = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, **overrides))
    sample.run(cfg, root / "model", root / name, n, seed=0, generation=1, real_dir=root / "data" / "train", start=start)
    return root / name


@pytest.mark.parametrize("curation_k", [1, 3])
def test_pieces_merge_to_the_whole_draw(toy_model, curation_k):
    cfg, root = toy_model
    options = dict(curation_k=curation_k, curation_reward="toy-nearest-real", batch_size=7)
    whole = draw(cfg, root, f"whole-{curation_k}", 30, **options)
    parts = [draw(cfg, root, f"p{curation_k}-{a}", b - a, start=a, **options) for a, b in ((12, 30), (0, 5), (5, 12))]
    merged = sample.merge(parts, root / f"merged-{curation_k}")
    assert merged == {"sample_count": 30, "pieces": 3}
    # Equal up to float rounding: the pieces go through the network in differently shaped batches.
    np.testing.assert_allclose(
        open_dataset(root / f"merged-{curation_k}").load(), open_dataset(whole).load(), rtol=1e-5, atol=1e-5
    )


def test_bad_pieces_are_refused(toy_model):
    cfg, root = toy_model
    first, third = draw(cfg, root, "a", 4), draw(cfg, root, "c", 4, start=8)
    with pytest.raises(ConfigError, match="starts at row 8, which leaves rows 4..7 missing"):
        sample.merge([first, third], root / "gap")
    with pytest.raises(ConfigError, match="starts at row 2, which overlaps"):
        sample.merge([first, draw(cfg, root, "b", 4, start=2)], root / "overlap")
    with pytest.raises(ConfigError, match="comes from another draw"):
        sample.merge([first, draw(cfg, root, "hot", 4, start=4, temperature=1.5)], root / "mixed")
    with pytest.raises(ConfigError, match="not a sample set drawn by `autophagy sample`"):
        sample.merge([root / "data" / "train"], root / "real")
    assert not (root / "gap").exists() and not (root / "overlap").exists()
