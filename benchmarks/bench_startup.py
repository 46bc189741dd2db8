"""Start-up of a ``dvc repro``: the stage processes' imports, with and without the stage server
(issue 15, item 8).

    .venv/bin/python benchmarks/bench_startup.py [--repeat 2] [-S key=value ...] [--json out.json]

Each run is a fresh copy of this checkout (``git clone`` of HEAD, so commit first) where ``dvc
repro`` runs the default experiment (``-S`` overrides are applied with ``autophagy dvc-params``).
The runs' stage servers live in a private ``XDG_RUNTIME_DIR`` (a user's own servers are left
alone), and those of earlier runs are stopped first, so an ``on`` run includes its server's own
start. Runs:

* ``off``: ``AUTOPHAGY_STAGE_SERVER=0``, every stage its own process importing torch, mlflow and
  ``torch._dynamo`` (the project before the stage server);
* ``on``: the stage server (:mod:`autophagy.stage_server`, the default under DVC).

``--repeat`` rounds alternate them (``paired.py``): wall seconds, their medians and the median of
the per-round ratios off / on (above 1: the server is faster). Then one run of each with
``PYTHONPROFILEIMPORTTIME=1``: the **start-up share** is the seconds every process of the run
spent importing (top-level imports, as ``-X importtime`` reports them, summed over the stage
processes, their children and the server) divided by that run's wall time. ``-X importtime``
itself slows imports by ~10 %, so the share is a slight overestimate, the same for both runs.
The results (stages' metrics) of the two modes are compared too: they must be identical apart
from the timing fields.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from paired import interleaved, load_average, median  # benchmarks/ is on sys.path

from autophagy.stage_server import server_directory

REPO = Path(__file__).resolve().parents[1]
HEADER = "import time: self [us]"
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| \S")  # a top-level import


def stop_servers() -> None:
    """SIGTERM the benchmark's stage servers (their ``.lock`` files hold their pids)."""
    for lock in server_directory().glob("*.lock"):
        pid = lock.read_text().strip()
        if pid.isdigit():
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
    time.sleep(1.0)


def repro(workdir: Path, mode: str, overrides: list[str], env_extra: dict[str, str] | None = None) -> dict:
    """A fresh clone in ``workdir``, ``dvc repro`` in it with the server ``mode``; wall seconds,
    the captured output and the metrics files."""
    shutil.rmtree(workdir, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "AUTOPHAGY_PROGRESS": "0"}
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "AUTOPHAGY_STAGE_SERVER": mode}
    if overrides:
        args = [str(bin_dir / "autophagy"), "dvc-params", "--config", "params.yaml"]
        subprocess.run([*args, *(x for o in overrides for x in ("-S", o))], cwd=workdir, env=env, check=True)
    stop_servers()
    started = time.perf_counter()
    done = subprocess.run([str(bin_dir / "dvc"), "repro"], cwd=workdir, env=env | (env_extra or {}),
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"dvc repro ({mode}) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    metrics = {
        str(path.relative_to(workdir)): {k: v for k, v in json.loads(path.read_text()).items() if "seconds" not in k}
        for path in sorted(workdir.glob("runs/**/metrics.json"))
    }
    return {"seconds": seconds, "stderr": done.stderr, "metrics": metrics}


def import_seconds(*texts: str) -> list[float]:
    """Per process (a ``-X importtime`` header starts one), the seconds of its top-level imports."""
    processes: list[float] = []
    for text in texts:
        for line in text.splitlines():
            if line.startswith(HEADER):
                processes.append(0.0)
                continue
            match = IMPORT_LINE.match(line)
            if match and processes:  # a child's lazy imports follow its client's (no header of its own)
                processes[-1] += int(match.group(1)) / 1e6
    return processes


def server_logs() -> str:
    return "\n".join(log.read_text() for log in server_directory().glob("*.log"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("-S", "--set", action="append", default=[], help="params override key=value")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="ap-bench-")  # short: a socket path's limit
    results: dict[str, dict] = {}

    def run(mode: str) -> float:
        results[mode] = repro(root / mode, mode, args.set)
        print(f"  {mode:3s} {results[mode]['seconds']:7.1f} s  (load {load_average()})", flush=True)
        return results[mode]["seconds"]

    seconds = interleaved({"off": lambda: run("0"), "on": lambda: run("auto")}, args.repeat, warmup=0)
    if results["0"]["metrics"] != results["auto"]["metrics"]:
        raise RuntimeError("the two modes' metrics differ")
    shares = {}
    for mode in ("0", "auto"):
        for log in server_directory().glob("*.log"):
            log.unlink()  # the server's import log of this run only
        done = repro(root / f"{mode}-importtime", mode, args.set, {"PYTHONPROFILEIMPORTTIME": "1"})
        per_process = import_seconds(done["stderr"], server_logs() if mode == "auto" else "")
        shares[mode] = {
            "repro_seconds": done["seconds"],
            "processes": len(per_process),
            "import_seconds": sum(per_process),
            "share": sum(per_process) / done["seconds"],
        }
        print(f"  importtime {mode}: {json.dumps(shares[mode])}", flush=True)
    stop_servers()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(os.environ["XDG_RUNTIME_DIR"], ignore_errors=True)
    result = {
        "seconds": seconds,
        "median_seconds": {mode: median(s) for mode, s in seconds.items()},
        "speedup": median([off / on for off, on in zip(seconds["off"], seconds["on"], strict=True)]),
        "startup": {"off": shares["0"], "on": shares["auto"]},
        "metrics_identical": True,
        "metrics_files": len(results["0"]["metrics"]),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
