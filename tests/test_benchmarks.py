"""The benchmark scripts run (on CPU, at toy sizes) and their FLOP accounting adds up. They are
measurements, not timed tests: nothing here asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _bench(tmp_path, script: str, *arguments: str, timeout: int = 600):
    """Run ``benchmarks/<script>`` with ``arguments`` in ``tmp_path``; its ``--json`` result."""
    out = tmp_path / f"{Path(script).stem}.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *arguments, "--json", str(out)],
        check=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    return json.loads(out.read_text())


@pytest.mark.slow
def test_gpu_check_runs_one_generation_and_counts_flops(tmp_path):
    steps = 4
    result = _bench(
        tmp_path,
        "gpu_check.py",
        *("--config", str(ROOT / "configs" / "digits-edm-unet.yaml"), "--device", "cpu"),
        *("--train-kimg", "0.25", "--plain-kimg", "0.25", "--samples", "64"),
        *("-S", "evaluate.features=raw", "-S", f"model.num_steps={steps}"),
    )
    assert result["data"] == "digits" and result["parameters"] > 100_000
    for step in ("train", "sample", "evaluate"):
        assert result[step]["images_per_s"] > 0 and result[step]["seconds"] > 0
    assert result["train"]["plain_images_per_s"] > 0 and result["train"]["speedup_over_plain"] > 0
    # A training step is a forward and a backward pass (~3 forwards); Heun sampling is 2 * steps - 1 forwards.
    forward = result["train"]["flops_per_image"] / 3
    assert result["sample"]["flops_per_image"] == pytest.approx((2 * steps - 1) * forward, rel=0.15)
    assert 0 <= result["evaluate"]["recall_train"] <= 1


@pytest.mark.slow
def test_bench_default_pairs_each_figure_with_its_reference(tmp_path):
    result = _bench(tmp_path, "bench_default.py", "--repeat", "2", "--images", "512", "--samples", "64")
    for key in ("trainer_over_plain_speedup", "mlp_over_unet_speedup", "sampler_over_plain_speedup"):
        assert result[key] > 0, key
    for key in (
        "train_mlp_trainer",
        "train_mlp_plain_loop",
        "train_unet_tiny_trainer",
        "sample_mlp",
        "sample_mlp_plain_loop",
    ):
        assert result[f"{key}_images_per_s"] > 0, key
    assert result["repeat"] == 2 and len(result["load_average_1min"]) == 2


@pytest.mark.slow
def test_bench_otcfm_pairing_measures_the_stall(tmp_path):
    result = _bench(tmp_path, "bench_otcfm_pairing.py", "--kimg", "0.768", "--repeat", "1", "--pair-calls", "3")
    assert result["steps_per_fit"] == 3 and set(result["step_ms"]) == {"overlapped", "synchronous", "independent"}
    assert result["overlapped_over_synchronous_speedup"] > 0 and result["independent_over_synchronous_speedup"] > 0
    assert result["pairing_ms"] > 0 and result["pairing_share_of_synchronous_step"] > 0


def test_bench_causal_lm_times_sampling_and_training_against_transformers(tmp_path):
    result = _bench(
        tmp_path,
        "bench_causal_lm.py",
        "--n",
        "8",
        "--rows",
        "128",
        "--kimg",
        "0.128",
        "--repeat",
        "1",
        "-S",
        "model.n_embd=32",
        "-S",
        "model.n_layer=1",
        "-S",
        "data.vocab_size=300",
    )
    assert result["config"] == "tinytext-lm.yaml" and result["network"] == "1x4x32, vocab 300"
    assert result["sample_tokens_per_s"] > 0 and result["generate_tokens_per_s"] > 0 and result["sampling_ratio"] > 0
    assert result["train_rows_per_s"] > 0 and result["plain_train_rows_per_s"] > 0 and result["training_ratio"] > 0


def _bench_families(tmp_path, *arguments: str) -> dict:
    return _bench(tmp_path, "bench_families.py", *arguments, "--repeat", "1", timeout=900)


@pytest.mark.slow
def test_bench_families_measures_training_sampling_and_evaluation_beside_references(tmp_path):
    result = _bench_families(tmp_path, "--families", "ddpm", "--kimg", "0.064", "--samples", "16", "--eval-n", "16")
    assert result["presets"] == "tiny" and set(result) >= {"ddpm"} and "edm" not in result
    ddpm = result["ddpm"]
    assert set(ddpm["trainer_images_per_s_by_variant"]) == {"fp32", "bf16", "bf16+cl"}
    assert ddpm["train_images_per_s"] > 0 and ddpm["plain_train_images_per_s"] > 0 and ddpm["sample_images_per_s"] > 0
    # Paired figures: the median of per-round ratios of interleaved project and reference runs.
    assert ddpm["trainer_over_plain"] > 0 and set(ddpm["trainer_over_plain_by_variant"]) == {"fp32", "bf16", "bf16+cl"}
    assert all(ratio > 0 for ratio in ddpm["trainer_over_plain_by_variant"].values())
    assert {len(times) for times in ddpm["train_seconds"].values()} == {1}  # --repeat 1: one round of each
    assert ddpm["plain_sample_images_per_s"] > 0 and ddpm["sampler_over_plain"] > 0
    assert ddpm["plain_reference_largest_difference"] < 1e-3  # the plain loop computes what the sampler does
    assert len(result["load_average_1min"]) == 2
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
    rows = {row["config"]: row for row in _bench(tmp_path, "bench_kfp_compile.py", "--repeat", "1")}
    assert set(rows) == {path.stem for path in (ROOT / "configs").glob("*.yaml")}
    for row in rows.values():
        assert row["seconds"] > 0 and row["window"] >= 1 and row["largest_status_kib"] <= 1024
    assert rows["digits-edm"]["runs"] == 1 + 1 + 4 * 1 + 1  # data, generation 0, one window per chain, report


def test_bench_metrics_compares_the_evaluation_and_fd_with_their_references_at_equal_values(tmp_path):
    result = _bench(
        tmp_path,
        "bench_metrics.py",
        *("--samples", "300", "--train", "300", "--test", "100", "--dim", "32", "--repeat", "1"),
    )
    evaluation, frechet = result["evaluation"], result["frechet"]
    assert evaluation["speedup_cold"] > 0 and evaluation["speedup_warm"] > 0
    assert set(frechet["speedup"]) == {"autophagy", "autophagy float64 products"}
    assert all(speedup > 0 for speedup in frechet["speedup"].values())
    reference = evaluation["values"]["reference"]
    for path in ("cold", "warm"):
        for key, value in evaluation["values"][path].items():
            # FD: float32 products (the CPU default) against the reference's float64 np.cov
            assert value == pytest.approx(reference[key], rel=1e-6 if key.startswith("fd_") else 0), (path, key)
    assert all(diff < 1e-6 for diff in frechet["rel_diff_vs_cleanfid"].values())
    assert 0 < frechet["rel_diff_float32_vs_float64_products"] < 1e-6


def test_bench_sampling_pairs_every_family_with_its_plain_loop(tmp_path):
    config = str(ROOT / "configs" / "digits-edm.yaml")
    arguments = ("--config", config, "--n", "16", "--repeat", "1", "--ancestral-steps", "4")
    rows = {row["family"]: row for row in _bench(tmp_path, "bench_sampling.py", *arguments)}
    assert set(rows) == {"edm", "ddpm", "ddpm-ancestral", "otcfm"}
    for row in rows.values():
        assert row["n"] == 16 and row["plain images/s"] > 0 and row["project images/s"] > 0
        assert row["project / plain"] > 0 and row["project fp32 / plain"] > 0


def test_bench_dataset_open_hashes_less_with_the_cache(tmp_path):
    result = _bench(tmp_path, "bench_dataset_open.py", "--repeat", "1", "--scale", "0.01", "--dir", str(tmp_path))
    # cached: the real training set is hashed once, not in the mix, the train step and the evaluation
    assert 0 < result["cached_mb_hashed"] < result["reference_mb_hashed"]
    assert result["cached_seconds"] > 0 and result["paired_speedup"] > 0


@pytest.mark.slow
def test_bench_startup_measures_the_import_share_with_and_without_the_stage_server(tmp_path):
    """One generation of one λ at toy budgets (5 stages), each mode once and once under
    ``-X importtime``: the same metrics both ways, and less of the run spent importing with the
    server (its imports once, not once per stage)."""
    small = ["loop.generations=1", "loop.lambdas=[inf]", "train.budget_kimg=1", "train.gen0_budget_kimg=1"]
    result = _bench(tmp_path, "bench_startup.py", "--repeat", "1", *(x for s in small for x in ("-S", s)), timeout=900)
    assert result["metrics_identical"] and result["metrics_files"] == 2
    off, on = result["startup"]["off"], result["startup"]["on"]
    assert on["import_seconds"] < off["import_seconds"] and on["share"] < off["share"]
    assert off["processes"] >= 5 and result["speedup"] > 0


def test_bench_noise_times_every_noise_method(tmp_path):
    result = _bench(tmp_path, "bench_noise.py", "--repeat", "1", "--workloads", "digits 3x8x8", "--threads", "1")
    (row,) = result["results"]
    assert row["rows"] == 256 and row["device"] == "cpu"
    for method in ("per-row generators", "philox", "philox fused", "torch.randn"):
        assert row[f"{method} images_per_s"] > 0, method
    assert row["fused_over_philox"] == pytest.approx(row["philox fused images_per_s"] / row["philox images_per_s"])
