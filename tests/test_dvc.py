"""The DVC pipeline for real: `dvc repro` of a tiny experiment in a temporary git repository.

Checks that every generation's training set, model, samples and metrics are stage outputs
recorded in dvc.lock under stage names that say the generation, that `dvc repro` resumes where it
stopped, that a changed option or source file invalidates exactly the stages that read or run it,
that a dvc.yaml made for other options is refused, that `dvc metrics show` / `dvc exp show` read
one small summary.json and `dvc plots diff` keeps revisions apart, and that `dvc exp run -S`
changes an option. Also that the committed params.yaml and dvc.yaml are exactly what
`autophagy dvc-params` derives from configs/digits-edm.yaml, so they cannot drift.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autophagy.config import load_config
from autophagy.dvc_params import differences, params, pipeline

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
TINY = [
    "train.gen0_budget_kimg=2",
    "train.budget_kimg=1",
    "train.batch_size=64",
    "sample.n_eval=150",
    "loop.generations=2",
    "loop.lambdas=[0,inf]",
    "tracking.enabled=false",
    "evaluate.max_reference=300",
    "train.ema_halflife_kimg=0.3",
]
GENERATIONS = ["gen-000@0", "gen-001@0-0", "gen-001@inf-0", "gen-002@0-0", "gen-002@inf-0"]


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_committed_params_and_dvc_yaml_match_the_default_config():
    cfg = load_config(REPO / "configs" / "digits-edm.yaml")
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == params(cfg)
    stale = differences(yaml.safe_load((REPO / "dvc.yaml").read_text()), pipeline(cfg, REPO))
    assert not stale, f"{stale}: run autophagy dvc-params --config configs/digits-edm.yaml"


def test_dvc_plots_output_and_only_it_is_git_ignored():
    ignored = subprocess.run(["git", "check-ignore", "-q", "dvc_plots/index.html"], cwd=REPO)
    assert ignored.returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", "summary.json"], cwd=REPO).returncode == 1


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A project as a clone has it (source, .dvc, ignore files), with the tiny experiment's params."""
    root = tmp_path_factory.mktemp("dvc")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "AUTOPHAGY_CACHE_DIR": str(root / ".cache"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root)
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(["git", "init", "-q"], root, env)
    run(
        [
            str(BIN / "autophagy"),
            "dvc-params",
            "--config",
            str(REPO / "configs" / "digits-edm.yaml"),
            *sum((["-S", s] for s in TINY), []),
            "--out",
            "params.yaml",
        ],
        root,
        env,
    )
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "tiny experiment"], root, env)
    return root, env


@pytest.fixture(scope="module")
def reproduced(dvc_repo):
    """The tiny experiment run to the end and committed."""
    root, env = dvc_repo
    run([DVC, "repro"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "results"], root, env)
    return root, env


def changed_stages(root: Path, env: dict[str, str]) -> set[str]:
    return set(json.loads(run([DVC, "status", "--json"], root, env).stdout))


@pytest.mark.slow
def test_dvc_repro_versions_every_generation_and_resumes(dvc_repo):
    root, env = dvc_repo
    listed = [line.split()[0] for line in run([DVC, "stage", "list"], root, env).stdout.splitlines()]
    assert listed == ["prepare", "features", *GENERATIONS, "report"]
    # Stop part-way: only the chain of lambda = 0 up to generation 1.
    run([DVC, "repro", "gen-001@0-0"], root, env)
    assert (root / "runs/digits-edm/lam-0/seed-0/gen-001/metrics.json").is_file()
    assert not (root / "runs/digits-edm/lam-inf").exists()

    full = run([DVC, "repro"], root, env).stdout
    # Resumed: what was done is not run again.
    for done in ("prepare", "features", "gen-000@0", "gen-001@0-0"):
        assert f"Stage '{done}' didn't change, skipping" in full, full
    assert "Running stage 'gen-002@inf-0'" in full

    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for lam in ("0", "inf"):
        stage = lock[f"gen-002@{lam}-0"]
        outs = {o["path"] for o in stage["outs"]}
        base = f"runs/digits-edm/lam-{lam}/seed-0/gen-002"
        assert {
            f"{base}/train_set",
            f"{base}/model",
            f"{base}/samples",
            f"{base}/metrics.json",
            f"{base}/generation.json",
        } == outs - {f"{base}/samples.png"}
        assert all("md5" in o for o in stage["outs"])
        deps = {d["path"] for d in stage["deps"]}
        assert {
            f"runs/digits-edm/lam-{lam}/seed-0/gen-001",
            "runs/digits-edm/seed-0/gen-000",
            "src/autophagy/models",
        } <= deps
        assert "train.budget_kimg" in stage["params"]["params.yaml"]
    assert "train.budget_kimg" not in lock["gen-000@0"]["params"]["params.yaml"]
    manifest = json.loads((root / "runs/digits-edm/lam-inf/seed-0/gen-002/train_set/dataset.json").read_text())
    assert {s["origin"]["type"] for s in manifest["shards"]} == {"synthetic"}

    # One small metrics file, kept by git (a clone's `dvc metrics show` has it).
    metrics = json.loads(run([DVC, "metrics", "show", "--json"], root, env).stdout)
    files = next(iter(metrics.values()))["data"]
    assert list(files) == ["summary.json"]
    summary = files["summary.json"]["data"]
    assert summary["generation"] == 2 and set(summary["fd_train"]) == {"lam-0", "lam-inf"}
    assert all(0 <= v <= 1 for v in summary["recall_train"].values())
    assert subprocess.run(["git", "check-ignore", "-q", "summary.json"], cwd=root).returncode == 1

    plots = json.loads(run([DVC, "plots", "show", "--json"], root, env).stdout)["data"]
    points = plots["fd_train"][0]["content"]["data"]["values"]
    assert {p["lambda"] for p in points} == {"0", "inf"}
    assert sorted({int(p["generation"]) for p in points}) == [0, 1, 2]
    bars = plots["fd_train_last_generation"][0]["content"]["data"]["values"]
    assert sorted((b["lambda"], int(b["generation"])) for b in bars) == [("0", 2), ("inf", 2)]
    for figure in ("fd_train_vs_lambda.png", "samples_across_generations.png"):
        assert plots[f"runs/digits-edm-report/{figure}"][0]["type"] == "image"

    again = run([DVC, "repro"], root, env).stdout
    assert "Running stage" not in again


@pytest.mark.slow
def test_a_clone_shows_the_metrics_before_any_pull(reproduced, tmp_path):
    root, env = reproduced
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    metrics = json.loads(run([DVC, "metrics", "show", "--json"], clone, env).stdout)
    files = next(iter(metrics.values()))["data"]
    assert files["summary.json"]["data"] == json.loads((root / "summary.json").read_text())
    assert '"lam-inf"' in json.dumps(json.loads(run([DVC, "exp", "show", "--json"], clone, env).stdout))


@pytest.mark.slow
def test_an_option_change_invalidates_the_stages_that_read_it(reproduced):
    root, env = reproduced
    original = (root / "params.yaml").read_text()

    def changed_after(section: str, key: str, value) -> set[str]:
        data = yaml.safe_load(original)
        data[section][key] = value
        (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        try:
            return changed_stages(root, env)
        finally:
            (root / "params.yaml").write_text(original)

    assert changed_stages(root, env) == set()
    later = set(GENERATIONS) - {"gen-000@0"}
    assert changed_after("train", "budget_kimg", 1.5) == later  # used from generation 1 on
    assert changed_after("train", "gen0_budget_kimg", 2.5) == {"gen-000@0"}
    assert changed_after("loop", "correction_strength", 0.25) == later  # the mix of generations >= 1
    assert changed_after("loop", "collapse_ratio", 3.0) == set(GENERATIONS)  # every evaluation's verdict
    assert changed_after("loop", "strategy", "accumulate") == {"prepare", *GENERATIONS}
    assert changed_after("tracking", "log_samples", False) == set()  # where results are logged


@pytest.mark.slow
def test_a_source_change_invalidates_the_stages_that_run_it(reproduced):
    root, env = reproduced

    def changed_after_editing(relative: str) -> set[str]:
        path = root / "src" / "autophagy" / relative
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        try:
            return changed_stages(root, env)
        finally:
            path.write_text(original)

    assert changed_after_editing("models/edm.py") == set(GENERATIONS)  # a sampler: every generation
    assert changed_after_editing("report.py") == {"report"}
    assert changed_after_editing("data/sources.py") == {"prepare", "features", "report", *GENERATIONS}
    assert changed_after_editing("cli.py") == set()  # argument parsing only
    # Running the code writes bytecode caches into the source directories: they are not source.
    run([sys.executable, "-m", "compileall", "-q", "src"], root, env)
    assert changed_stages(root, env) == set()


@pytest.mark.slow
def test_a_dvc_yaml_made_for_other_options_is_refused(reproduced):
    root, env = reproduced
    original = (root / "params.yaml").read_text()
    data = yaml.safe_load(original)
    data["loop"]["generations"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        result = subprocess.run([DVC, "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode != 0
        assert (
            "stage gen-003 is missing): run `autophagy dvc-params --config params.yaml` to rewrite both"
            in result.stdout + result.stderr
        )
        assert "Traceback" not in result.stdout + result.stderr
    finally:
        (root / "params.yaml").write_text(original)


@pytest.mark.slow
def test_dvc_exp_run_changes_an_option_and_exp_show_compares_one_summary(reproduced):
    root, env = reproduced
    run([DVC, "exp", "run", "-S", "loop.lambdas=['0']", "-S", "train.budget_kimg=0.5"], root, env)
    shown = json.loads(run([DVC, "exp", "show", "--json"], root, env).stdout)
    assert '"budget_kimg": 0.5' in json.dumps(shown)
    config = json.loads((root / "runs/digits-edm/lam-0/seed-0/gen-002/model/config.json").read_text())
    assert config["budget_kimg"] == 0.5

    # The table's metric columns are the summary's: one per (headline metric, lambda).
    table = list(csv.reader(io.StringIO(run([DVC, "exp", "show", "--csv"], root, env).stdout)))
    header = table[0]
    assert not [column for column in header if "metrics.json" in column]
    summary = json.loads((root / "summary.json").read_text())
    expected = ["generation"] + [
        f"{key}.{lam}" for key, per_lambda in summary.items() if key != "generation" for lam in per_lambda
    ]
    assert expected[1:] and set(expected) <= set(header)
    print(f"dvc exp show --csv: {len(header)} columns")

    # `dvc plots diff` of two revisions: every line of the lambda_lines template has one point per
    # generation (Vega-Lite draws a line per value of the nominal fields the mark encodes).
    plot = json.loads(run([DVC, "plots", "diff", "HEAD", "--json"], root, env).stdout)["data"]["fd_train"][0]
    encoding = plot["content"]["encoding"]
    grouping = [
        spec["field"]
        for channel, spec in encoding.items()
        if channel in ("color", "detail", "strokeDash", "shape") and spec.get("type") == "nominal"
    ]
    lines: dict[tuple, list[str]] = {}
    for point in plot["content"]["data"]["values"]:
        lines.setdefault(tuple(point[f] for f in grouping), []).append(point["generation"])
    assert {point["rev"] for point in plot["content"]["data"]["values"]} == {"HEAD", "workspace"}
    assert all(len(g) == len(set(g)) for g in lines.values()), lines  # no line goes back and forth
    assert {key for key, g in lines.items() if len(g) == 3} >= {("0", "HEAD", "HEAD"), ("0", "workspace", "workspace")}
