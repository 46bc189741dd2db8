"""How long ``autophagy pipeline compile`` takes for every shipped config, and what it plans.

Compiling sizes the chain runs to the backend (several compiles while searching the window), so it
is timed end to end: the median of ``--repeat`` runs of :func:`autophagy.pipelines.compile_experiment`
per config, with the window found, the number of KFP runs and the largest estimated status of a run.

    .venv/bin/python benchmarks/bench_kfp_compile.py --repeat 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from autophagy.pipelines import compile_experiment, load_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "registry.example.com/ml/autophagy:bench"


def measure(config: Path, repeat: int) -> dict:
    cfg, cluster = load_pipeline_config(config)
    seconds, info = [], None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            info = compile_experiment(cfg, cluster, IMAGE, out)
            seconds.append(time.perf_counter() - started)
    return {
        "config": config.stem,
        "seconds": statistics.median(seconds),
        "window": info["window"],
        "runs": info["runs"],
        "packages": len(info["packages"]),
        "largest_status_kib": max(p["status_bytes"] for p in info["packages"]) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = [measure(path, args.repeat) for path in sorted((ROOT / "configs").glob("*.yaml"))]
    print("| config | compile (median) | packages | window | KFP runs | largest run at the end (estimate) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['config']} | {r['seconds']:.2f} s | {r['packages']} | {r['window']} | {r['runs']} | "
            f"{r['largest_status_kib']:.0f} KiB |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
