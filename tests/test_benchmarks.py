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
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--config",
            str(ROOT / "configs" / "digits-edm-unet.yaml"),
            "--device",
            "cpu",
            "--train-kimg",
            "0.25",
            "--plain-kimg",
            "0.25",
            "--samples",
            "64",
            "-S",
            "evaluate.features=raw",
            "-S",
            f"model.num_steps={steps}",
            "--json",
            str(out),
        ],
        check=True,
        timeout=600,
        cwd=tmp_path,
    )
    result = json.loads(out.read_text())
    assert result["data"] == "digits" and result["parameters"] > 100_000
    for step in ("train", "sample", "evaluate"):
        assert result[step]["images_per_s"] > 0 and result[step]["seconds"] > 0
    assert result["train"]["plain_images_per_s"] > 0 and result["train"]["speedup_over_plain"] > 0
    # A training step is a forward and a backward pass (~3 forwards); Heun sampling is 2 * steps - 1 forwards.
    forward = result["train"]["flops_per_image"] / 3
    assert result["sample"]["flops_per_image"] == pytest.approx((2 * steps - 1) * forward, rel=0.15)
    assert 0 <= result["evaluate"]["recall_train"] <= 1


def _bench_families(tmp_path, *arguments: str) -> dict:
    out = tmp_path / "families.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_families.py"),
            *arguments,
            "--repeat",
            "1",
            "--json",
            str(out),
        ],
        check=True,
        timeout=900,
        cwd=tmp_path,
    )
    return json.loads(out.read_text())


@pytest.mark.slow
def test_bench_families_measures_training_sampling_and_evaluation_beside_references(tmp_path):
    result = _bench_families(tmp_path, "--families", "ddpm", "--kimg", "0.064", "--samples", "16", "--eval-n", "16")
    assert result["presets"] == "tiny" and set(result) >= {"ddpm"} and "edm" not in result
    ddpm = result["ddpm"]
    assert set(ddpm["trainer_images_per_s_by_variant"]) == {"fp32", "bf16", "bf16+cl"}
    assert ddpm["train_images_per_s"] > 0 and ddpm["plain_train_images_per_s"] > 0 and ddpm["sample_images_per_s"] > 0
    assert ddpm["trainer_over_plain"] == pytest.approx(ddpm["train_images_per_s"] / ddpm["plain_train_images_per_s"])
    evaluation = ddpm["evaluation"]  # autophagy's evaluator and clean-fid's compute_fid on the same images
    assert evaluation["autophagy_images_per_s"] > 0 and evaluation["cleanfid_images_per_s"] > 0
    assert evaluation["fd_relative_difference"] < 1e-3, evaluation
    assert ddpm["peak_memory_mib"] > 0 and ddpm["peak_memory_kind"] == "rss"


@pytest.mark.slow
def test_bench_families_paper_presets_run_at_reduced_width(tmp_path):
    reduced = [
        "-S",
        "model.model_channels=16",
        "-S",
        "model.channel_mult=[1,2]",
        "-S",
        "model.num_blocks=1",
        "-S",
        "model.attn_resolutions=[]",
        "-S",
        "model.num_steps=2",
        "-S",
        "train.batch_size=16",
    ]
    result = _bench_families(
        tmp_path, "--paper", "--families", "edm", *reduced, "--kimg", "0.032", "--samples", "4", "--eval-n", "0"
    )
    edm = result["edm"]
    assert result["presets"] == "paper" and edm["data"] == "random uint8 stand-in"  # no CIFAR-10 here
    assert edm["parameters"] > 0 and edm["train_images_per_s"] > 0 and "evaluation" not in edm


def test_bench_kfp_compile_plans_every_config(tmp_path):
    out = tmp_path / "compile.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_kfp_compile.py"), "--repeat", "1", "--json", str(out)],
        check=True,
        timeout=600,
        cwd=tmp_path,
    )
    rows = {row["config"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {path.stem for path in (ROOT / "configs").glob("*.yaml")}
    for row in rows.values():
        assert row["seconds"] > 0 and row["window"] >= 1 and row["largest_status_kib"] <= 1024
    assert rows["digits-edm"]["runs"] == 1 + 1 + 4 * 1 + 1  # data, generation 0, one window per chain, report
