"""Collapse detection: the verdict's arithmetic, and its effect on a loop (metrics, early stop, report)."""

from __future__ import annotations

import json
import math

import pytest

from autophagy import collapse, loop, report
from autophagy.config import ConfigError, LoopConfig, load_config


def test_worsening_direction_per_metric():
    assert collapse.worsening("fd_train", 6.0, 3.0) == 2.0
    assert collapse.worsening("swd_test", 1.0, 2.0) == 0.5
    assert collapse.worsening("recall_train", 0.2, 0.8) == 4.0
    assert collapse.worsening("precision_train", 0.9, 0.45) == 0.5
    assert collapse.worsening("recall_train", 0.0, 0.5) == math.inf


def test_assess_is_sticky_and_off_by_default():
    on = LoopConfig(collapse_metric="fd_train", collapse_ratio=2.0)
    assert collapse.assess(LoopConfig(), {"fd_train": 100.0}, {"fd_train": 1.0}, None) == {}
    assert collapse.assess(on, {"fd_train": 1.9}, {"fd_train": 1.0}, None) == {
        "collapse_factor": 1.9,
        "collapsed": False,
    }
    assert collapse.assess(on, {"fd_train": 2.0}, {"fd_train": 1.0}, None)["collapsed"] is True
    assert collapse.assess(on, {"fd_train": 1.0}, {"fd_train": 1.0}, {"collapsed": True})["collapsed"] is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("loop.collapse_ratio=0.5", "loop.collapse_ratio"),
        ("loop.collapse_ratio=inf", "loop.collapse_ratio"),
        ("loop.collapse_metric=loss", "loop.collapse_metric"),
    ],
)
def test_bad_collapse_options(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_loop_marks_collapse_and_stops_the_chain(tmp_path):
    cfg = load_config(
        None,
        [
            "name=gauss",
            "data.source=gaussian",
            "data.dim=2",
            "data.n_train=20",
            "data.n_test=200",
            "model.family=gaussian",
            "evaluate.features=raw",
            "sample.n_eval=20",
            "loop.lambdas=[0,inf]",
            "loop.seeds=[0,1,2]",
            "loop.generations=6",
            "loop.collapse_metric=swd_train",
            "loop.collapse_ratio=1.0001",
            "loop.stop_on_collapse=true",
            "tracking.enabled=false",
        ],
    )
    layout = loop.run_experiment(cfg, tmp_path / "gauss", log=lambda _: None)
    collapsed_chains = 0
    for lam in ("0", "inf"):
        for seed in (0, 1, 2):
            base = json.loads((layout.root / f"seed-{seed}/gen-000/metrics.json").read_text())
            chain = sorted((layout.root / f"lam-{lam}/seed-{seed}").glob("gen-*/metrics.json"))
            verdicts = [json.loads(p.read_text()) for p in chain]
            for _g, m in enumerate(verdicts, start=1):
                assert m["collapse_factor"] == pytest.approx(m["swd_train"] / base["swd_train"])
                assert m["collapsed"] == (m["collapse_factor"] >= 1.0001)
            if any(m["collapsed"] for m in verdicts):
                collapsed_chains += 1
                assert verdicts[-1]["collapsed"] and not any(m["collapsed"] for m in verdicts[:-1])  # stopped at once
            else:
                assert len(verdicts) == 6
    assert collapsed_chains > 0  # with a threshold this tight some chain is worse than generation 0
    text = report.write_report(layout.root)["markdown"]
    assert "collapsed in" in open(text).read()
