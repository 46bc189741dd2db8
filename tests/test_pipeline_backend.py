"""Every shipped config, as the KFP 2.17.0 API server itself would take it: each package of its runs is
compiled to the Argo Workflow and validated by the backend's own code (``tests/kfp_backend``), with the
parameters the submitter would give it, and stays inside the budget of :mod:`autophagy.pipelines.budget`:
the Workflow at submit, its largest driver argument, and the Workflow with every node's status at the end
of the run. The project's own estimate, which ``autophagy pipeline compile`` uses where there is no Go
toolchain, must never be below the backend's figures.

Besides ``configs/``: ``cifar10-edm`` with 3 seeds, 20 generations, ``accumulate`` and
``stop_on_collapse`` (the largest chain window), and 10 lambdas x 5 seeds x 50 generations.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from autophagy.pipelines import budget
from autophagy.pipelines.cluster import load_pipeline_config
from autophagy.pipelines.packages import compile_experiment
from autophagy.pipelines.runs import FAN_IN, KfpRun, arguments, chain_key, merge_tree, seed_key
from kfp_backend_check import check, skip_if_unavailable

from autophagy import plan

log = logging.getLogger(__name__)
pytestmark = pytest.mark.timeout(2400)  # a cold first build of the Go program takes minutes
ROOT = Path(__file__).resolve().parents[1]
IMAGE = "registry.example.com/ml/autophagy:3f2c1ab"
VARIANTS = {
    **{path.stem: (path, []) for path in sorted((ROOT / "configs").glob("*.yaml"))},
    "cifar10-edm-3seeds-accumulate-stop": (
        ROOT / "configs" / "cifar10-edm.yaml",
        [
            "loop.seeds=[0, 1, 2]",
            "loop.generations=20",
            "loop.strategy=accumulate",
            "loop.stop_on_collapse=true",
            "loop.collapse_ratio=2",
        ],
    ),
    "cifar10-edm-10x5x50": (
        ROOT / "configs" / "cifar10-edm.yaml",
        [
            "loop.lambdas=[0, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 2, 5, inf]",
            "loop.seeds=[0, 1, 2, 3, 4]",
            "loop.generations=50",
        ],
    ),
}


@pytest.fixture(scope="module", autouse=True)
def backend() -> Path:
    return skip_if_unavailable()


def uri(name: str) -> str:
    """A pipeline-root URI as KFP 2.17 makes them: pipeline, run id, task, salt, output."""
    return (
        f"minio://mlpipeline/v2/artifacts/autophagy-chain/4f6c1e0a-8c1b-4a4e-9d1f-0c5d6e7f8a9b/{name}/"
        f"d41d8cd98f00b204e9800998ecf8427e/{name}"
    )


def handoffs(cfg) -> dict:
    """Hand-offs as finished runs record them (what the next runs' parameters are made of)."""
    records = {
        "data": {"uris": {name: uri(name) for name in ("real_train", "real_test", "extractor")}, "real_rows": 50_000}
    }
    for seed in cfg.loop.seeds:
        records[seed_key(seed)] = {"uris": {name: uri(name) for name in ("model", "samples", "history")}}
    for lam, seed in plan.chains(cfg):
        records[chain_key(lam, seed)] = {
            "uris": {name: uri(name) for name in ("model", "samples", "history", "pooled")},
            "generation": 1,
        }
    for key, _ in merge_tree(cfg):
        records[key] = {"uris": {"history": uri("history"), "run_dir": uri("run_dir")}}
    return records


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_run_is_accepted_by_the_backend_and_fits(variant, tmp_path):
    path, overrides = VARIANTS[variant]
    cfg, cluster = load_pipeline_config(path, overrides)
    info = compile_experiment(cfg, cluster, IMAGE, tmp_path)
    records = handoffs(cfg)
    lam, seed = plan.chains(cfg)[0]
    rows = []
    for package in info["packages"]:
        kind = package["kind"]
        run = {
            "data": KfpRun("data", "data"),
            "generation-0": KfpRun("generation-0", seed_key(seed), seed=seed),
            "collect": KfpRun("collect", merge_tree(cfg)[0][0]),
            "report": KfpRun("report", "report"),
        }.get(kind) or KfpRun(
            "chain", chain_key(lam, seed), lam=lam, seed=seed, first=max(2, package["first"]), last=package["last"]
        )
        parameters = arguments(cfg, run, records)
        chains = len(parameters["fragment_uris"]) if kind in ("collect", "report") else 1
        assert chains <= FAN_IN
        # collect and report import every fragment, and an importer gives its artifact no metadata
        report = check(
            Path(package["path"]),
            parameters,
            iterations=chains,
            artifact_metadata_bytes=0 if kind in ("collect", "report") else 1024,
        )
        assert report["valid"], (package["path"], report["error"])
        limits = budget.LIMITS
        assert report["workflow_bytes"] <= limits["workflow_bytes"], package["path"]
        assert report["largest_argument"]["bytes"] <= limits["argument_bytes"], (
            package["path"],
            report["largest_argument"],
        )
        assert report["status_bytes"] <= limits["status_bytes"], package["path"]
        ours = budget.estimate_package(package["path"], parameters, chains=chains)
        assert ours.workflow_bytes >= report["workflow_bytes"], package["path"]
        assert ours.argument_bytes >= report["largest_argument"]["bytes"], package["path"]
        assert ours.status_bytes >= report["status_bytes"], package["path"]
        assert ours.nodes >= report["nodes"], package["path"]
        rows.append(
            f"{Path(package['path']).name}: workflow {report['workflow_bytes'] / 1024:.0f} KiB "
            f"(ours {ours.workflow_bytes / 1024:.0f}), argument {report['largest_argument']['bytes'] / 1024:.1f} KiB, "
            f"{report['nodes']} nodes, status {report['status_bytes'] / 1024:.0f} KiB "
            f"(ours {ours.status_bytes / 1024:.0f})"
        )
    message = f"{variant}: {info['runs']} KFP runs, {info['window']} generations per chain run\n  " + "\n  ".join(rows)
    log.info(message)
    print(message)
    (tmp_path / "backend.json").write_text(json.dumps({"variant": variant, "rows": rows}))
