"""dvc.yaml as autophagy.dvc_params renders it, without running DVC (tests/test_dvc.py runs it).

Checks that each generation stage depends on the option keys its steps read for that generation
(train.budget_kimg is not an input of generation 0 while train.gen0_budget_kimg is set, and the
options that were missing: loop.correction*, loop.collapse_*, loop.strategy for prepare), that
the keys said not to be read really change no trained weight, that outputs and deps follow the
plan (fresh-real, accumulate), that code deps follow imports, that the plot template keeps
revisions apart, and that a stale dvc.yaml is refused under DVC.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from autophagy import dvc_params, dvc_summary
from autophagy.code_deps import SourceError, code_deps
from autophagy.config import FAMILIES, ConfigError, load_config
from autophagy.metric_keys import METRICS

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = [
    "tracking.enabled=false",
    "train.gen0_budget_kimg=0.2",
    "train.budget_kimg=0.1",
    "train.batch_size=32",
    "model.model_channels=32",
    "data.n_train=200",
    "train.ema_halflife_kimg=0.05",
]


def stages(cfg, project: Path = REPO) -> dict:
    return dvc_params.pipeline(cfg, project)["stages"]


def test_generation_zero_does_not_depend_on_the_fine_tuning_options():
    cfg = load_config(REPO / "configs" / "digits-edm.yaml")
    assert cfg.train.gen0_budget_kimg is not None
    gen0, gen1, gen3 = (stages(cfg)[f"gen-00{g}"]["params"] for g in (0, 1, 3))
    assert "train.gen0_budget_kimg" in gen0 and "train.init_checkpoint" in gen0
    for key in ("train.budget_kimg", "train.init", "train.carry_optimizer", "train.carry_ema", "train.finetune_from"):
        assert key not in gen0 and key in gen1 and key in gen3
    assert "train.gen0_budget_kimg" not in gen1 and "train.init_checkpoint" not in gen1
    # while gen0_budget_kimg is unset, generation 0 trains for train.budget_kimg
    unset = stages(load_config(REPO / "configs" / "digits-edm.yaml", ["train.gen0_budget_kimg=null"]))
    assert "train.budget_kimg" in unset["gen-000"]["params"]


def test_stages_depend_on_the_options_their_steps_read_and_no_others():
    cfg = load_config(REPO / "configs" / "digits-edm.yaml")
    s = stages(cfg)
    assert "loop.strategy" in s["prepare"]["params"]  # the fresh-real pool
    for g in ("gen-000", "gen-001", "gen-004"):
        assert {"loop.collapse_metric", "loop.collapse_ratio", "evaluate.k", "sample.n_eval"} <= set(s[g]["params"])
        # where results are logged, and options DVC never applies, are not inputs
        assert not {"tracking.enabled", "loop.seeds", "loop.stop_on_collapse", "name"} & set(s[g]["params"])
    for g in ("gen-001", "gen-004"):  # the mix of generations >= 1
        assert {"loop.correction", "loop.correction_strength", "data.n_train"} <= set(s[g]["params"])
    assert "loop.correction" not in s["gen-000"]["params"]  # generation 0 mixes nothing
    assert "loop.lambdas" in s["gen-000"]["params"]  # it samples for the largest lambda
    assert "loop.lambdas" not in s["gen-001"]["params"]  # a chain's own lambda is in its stage name
    # keys, not whole sections
    assert all("." in key for stage in s.values() for key in stage.get("params", []))


def test_the_options_a_generation_does_not_depend_on_change_none_of_its_weights(tmp_path):
    """Train generation 0 with every ONLY_LATER option changed, and generation 1 with every
    ONLY_GENERATION_0 option changed: the weights are the same (only config.json's record differs)."""
    from safetensors.numpy import load_file

    from autophagy.stages import prepare, train

    def weights(directory: Path) -> str:
        digest = hashlib.sha256()
        for name in ("model.safetensors", "ema.safetensors"):
            tensors = load_file(str(directory / name))
            for key in sorted(tensors):
                digest.update(key.encode() + tensors[key].tobytes())
        return digest.hexdigest()

    base = load_config(None, TINY_TRAIN)
    prepare.run(base, tmp_path / "data")
    later = [
        "train.budget_kimg=0.3",
        "train.init=scratch",
        "train.carry_optimizer=false",
        "train.carry_ema=false",
        "train.finetune_from=ema",
    ]
    assert {o.partition("=")[0] for o in later} == set(dvc_params.ONLY_LATER)
    for name, extra in (("a", []), ("b", later)):
        train.run(load_config(None, TINY_TRAIN + extra), tmp_path / "data" / "train", tmp_path / f"gen0-{name}", 0, 0)
    assert weights(tmp_path / "gen0-a") == weights(tmp_path / "gen0-b")
    first = ["train.gen0_budget_kimg=0.4", "train.init_checkpoint=/nonexistent/checkpoint.pkl"]
    assert {o.partition("=")[0] for o in first} == set(dvc_params.ONLY_GENERATION_0)
    for name, extra in (("a", []), ("b", first)):
        train.run(
            load_config(None, TINY_TRAIN + extra),
            tmp_path / "data" / "train",
            tmp_path / f"gen1-{name}",
            1,
            0,
            lam=0.5,
            init=tmp_path / "gen0-a",
        )
    assert weights(tmp_path / "gen1-a") == weights(tmp_path / "gen1-b")
    # ... while an option generation 0 does read changes them (the comparison can fail)
    train.run(
        load_config(None, TINY_TRAIN + ["train.gen0_budget_kimg=0.4"]),
        tmp_path / "data" / "train",
        tmp_path / "gen0-c",
        0,
        0,
    )
    assert weights(tmp_path / "gen0-c") != weights(tmp_path / "gen0-a")


def test_outputs_and_deps_follow_the_plan():
    replace = stages(load_config(None, ["loop.generations=3"]))
    outs = [Path(p).name for p in replace["gen-000"]["outs"]]
    assert outs == ["model", "samples", "samples.png", "metrics.json", "generation.json"]
    assert [Path(p).name for p in replace["gen-002"]["outs"]] == ["train_set", *outs]
    assert replace["gen-003"]["outs"][0] == "runs/${name}/lam-${item.lam}/seed-${item.seed}/gen-003/train_set"
    chain = [d for d in replace["gen-003"]["deps"] if d.startswith("runs/")]
    # the real data, the extractor, generation 0 (collapse baseline) and the previous generation
    assert chain == [
        "runs/${name}/data",
        "runs/${name}/features",
        "runs/${name}/seed-${item.seed}/gen-000",
        "runs/${name}/lam-${item.lam}/seed-${item.seed}/gen-002",
    ]
    fresh = stages(load_config(None, ["loop.generations=2", "loop.strategy=fresh-real", "data.n_train=500"]))
    assert [Path(p).name for p in fresh["gen-000"]["outs"]][:2] == ["real_set", "model"]
    assert [Path(p).name for p in fresh["gen-001"]["outs"]][:2] == ["real_set", "train_set"]
    assert {"data.n_train", "loop.correction"} <= set(fresh["gen-000"]["params"])  # its mix draws from the pool
    accumulate = stages(load_config(None, ["loop.generations=3", "loop.strategy=accumulate"]))
    assert [d for d in accumulate["gen-003"]["deps"] if "/gen-" in d] == [
        "runs/${name}/seed-${item.seed}/gen-000",
        "runs/${name}/lam-${item.lam}/seed-${item.seed}/gen-001",
        "runs/${name}/lam-${item.lam}/seed-${item.seed}/gen-002",
    ]


def test_stage_names_say_the_generation():
    s = stages(load_config(None, ["loop.generations=12"]))
    assert list(s) == ["prepare", "features", *(f"gen-{g:03d}" for g in range(13)), "report"]
    assert s["gen-000"]["matrix"] == {"seed": "${loop.seeds}"}
    assert s["gen-012"]["matrix"] == {"lam": "${loop.lambdas}", "seed": "${loop.seeds}"}
    assert s["gen-012"]["cmd"].endswith("--lam ${item.lam} --seed ${item.seed} --generation 12")


def test_code_deps_follow_the_imports_of_each_stage():
    s = stages(load_config(None))
    generation = set(s["gen-003"]["deps"])
    assert {
        "src/autophagy/models",
        "src/autophagy/metrics",
        "src/autophagy/data",
        "src/autophagy/stages",
        "src/autophagy/loop.py",
        "src/autophagy/plan.py",
        "src/autophagy/step_config.py",
    } <= generation
    assert "src/autophagy/report.py" not in generation and "src/autophagy/cli.py" not in generation
    prepare = set(s["prepare"]["deps"])
    assert "src/autophagy/data" in prepare and "src/autophagy/models" not in prepare
    assert {"src/autophagy/report.py", "src/autophagy/dvc_summary.py"} <= set(s["report"]["deps"])
    assert "src/autophagy/models" not in s["report"]["deps"]
    # modules imported by name at run time (the registries) lie in directories the stage depends on
    named = [f.model for f in FAMILIES.values() if isinstance(f.model, str)]
    named += [m.compute for m in METRICS.values() if isinstance(m.compute, str)]
    assert named
    for target in named:
        parts = target.partition(":")[0].split(".")
        assert len(parts) > 2 and f"src/{parts[0]}/{parts[1]}" in generation, target
    # a project without the source tree (an installed autophagy) has no code deps
    assert all(
        not d.startswith("src/")
        for d in dvc_params.pipeline(load_config(None), Path("/nonexistent"))["stages"]["gen-003"]["deps"]
    )


def test_code_deps_of_a_toy_package(tmp_path):
    pkg = tmp_path / "src" / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "entry.py").write_text("from toy import helper\nfrom . import other\n\ndef f():\n    import toy.sub.lazy\n")
    (pkg / "helper.py").write_text("import json\n")
    (pkg / "other.py").write_text("from .sub import thing\n")
    (pkg / "unused.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "thing.py").write_text("")
    (pkg / "sub" / "lazy.py").write_text("")
    assert code_deps(tmp_path, "src", ["toy.entry"]) == [
        "src/toy/__init__.py",
        "src/toy/entry.py",
        "src/toy/helper.py",
        "src/toy/other.py",
        "src/toy/sub",
    ]
    assert code_deps(tmp_path, "src", ["toy.helper"]) == ["src/toy/__init__.py", "src/toy/helper.py"]
    with pytest.raises(SourceError, match="toy.missing"):
        code_deps(tmp_path, "src", ["toy.missing"])


def test_a_stale_dvc_yaml_is_refused_under_dvc(tmp_path, monkeypatch):
    cfg = load_config(None, ["loop.generations=2"])
    dvc_params.write(cfg, tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["loop"]["generations"] = 3  # what `dvc exp run -S loop.generations=3` does
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    dvc_params.check_stage(Path("params.yaml"))  # outside DVC: no check
    monkeypatch.setenv("DVC_STAGE", "report")
    with pytest.raises(ConfigError, match=r"stage gen-003 is missing.*autophagy dvc-params --config params.yaml"):
        dvc_params.check_stage(Path("params.yaml"))
    params["loop"]["generations"] = 2
    assert cfg.train.gen0_budget_kimg is None
    params["train"]["gen0_budget_kimg"] = 5.0  # generation 0 no longer reads train.budget_kimg
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="stage gen-000 differs in params"):
        dvc_params.check_stage(Path("params.yaml"))
    params["loop"]["lambdas"] = ["0", "2"]  # lambdas and seeds are matrix values: no rewrite needed
    params["train"]["gen0_budget_kimg"] = cfg.train.gen0_budget_kimg
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    dvc_params.check_stage(Path("params.yaml"))


def test_summary_holds_the_last_generation_per_lambda_mean_over_seeds(tmp_path):
    def metrics(path: Path, generation: int, fd: float) -> None:
        path.mkdir(parents=True)
        (path / "metrics.json").write_text(
            json.dumps({"generation": generation, "fd_train": fd, "recall_train": 0.5, "n_samples": 100})
        )

    for seed in (0, 1):
        metrics(tmp_path / f"seed-{seed}" / "gen-000", 0, 1.0)
        for g in (1, 2):
            metrics(tmp_path / "lam-0.5" / f"seed-{seed}" / f"gen-00{g}", g, 10.0 * g + seed)
            metrics(tmp_path / "lam-inf" / f"seed-{seed}" / f"gen-00{g}", g, 100.0 * g + seed)
    out = tmp_path / "summary.json"
    dvc_summary.write(tmp_path, out)
    assert json.loads(out.read_text()) == {
        "generation": 2,
        "fd_train": {"lam-0.5": 20.5, "lam-inf": 200.5},
        "recall_train": {"lam-0.5": 0.5, "lam-inf": 0.5},
    }


def test_the_lambda_lines_template_draws_one_line_per_lambda_and_revision():
    """Vega-Lite draws one line per value of the nominal fields a line mark encodes; with two
    revisions in one plot (`dvc plots diff`) each line must still have one point per generation."""
    template = json.loads((REPO / ".dvc" / "plots" / "lambda_lines.json").read_text())
    assert template["mark"]["type"] == "line"
    encoding = template["encoding"]
    grouping = [
        spec["field"]
        for channel, spec in encoding.items()
        if channel in ("color", "detail", "strokeDash", "shape") and spec.get("type") == "nominal"
    ]
    points = [
        {"rev": rev, "lambda": lam, "generation": str(g), "fd_train": str(g)}
        for rev in ("HEAD", "workspace")
        for lam in ("0", "inf")
        for g in range(3)
    ]
    lines: dict[tuple, list[str]] = {}
    for p in points:
        lines.setdefault(tuple(p[f] for f in grouping), []).append(p["generation"])
    assert len(lines) == 4 and all(sorted(x) == ["0", "1", "2"] for x in lines.values())
