"""The benchmark scripts run (on CPU, at toy sizes) and their FLOP accounting adds up. They are
measurements, not timed tests: nothing here asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_gpu_check_runs_one_generation_and_counts_flops(tmp_path):
    out = tmp_path / "gpu_check.json"
    steps = 4
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--config",
                    str(ROOT / "configs" / "digits-edm-unet.yaml"), "--device", "cpu", "--train-kimg", "0.25",
                    "--plain-kimg", "0.25", "--samples", "64", "-S", "evaluate.features=raw",
                    "-S", f"model.num_steps={steps}", "--json", str(out)], check=True, timeout=600, cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["data"] == "digits" and result["parameters"] > 100_000
    for step in ("train", "sample", "evaluate"):
        assert result[step]["images_per_s"] > 0 and result[step]["seconds"] > 0
    assert result["train"]["plain_images_per_s"] > 0 and result["train"]["speedup_over_plain"] > 0
    # A training step is a forward and a backward pass (~3 forwards); Heun sampling is 2 * steps - 1 forwards.
    forward = result["train"]["flops_per_image"] / 3
    assert result["sample"]["flops_per_image"] == pytest.approx((2 * steps - 1) * forward, rel=0.15)
    assert 0 <= result["evaluate"]["recall_train"] <= 1
