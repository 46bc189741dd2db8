"""Paired timing for the benchmarks: warm up, then alternate the project's run and its references
(A, B, A, B, ...), and report the medians and the median of the per-pair ratios.

The machine is shared: another process on the same cores slows whatever runs beside it. Runs
taken in blocks (all A, then all B) see different loads, and their ratio can be off by 10x; the
two runs of a pair see nearly the same load, so the ratio within a pair, and its median over the
pairs, is what stays put. Each figure comes with the load average of the minute it was taken.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """A run that times all of ``fn`` (for runs that have no set-up to leave out)."""

    def run() -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    return run


def interleaved(
    runs: Mapping[str, Callable[[], float]],
    repeat: int,
    warmup: int = 1,
    warmups: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """``{name: [seconds] * repeat}``: ``warmup`` untimed rounds (of ``warmups[name]`` where given,
    e.g. a shorter run; else of the run itself), then ``repeat`` rounds of every run in turn. Each
    ``runs[name]() -> seconds`` times itself, leaving its set-up out."""
    if repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {repeat}")
    for _ in range(warmup):
        for name, run in runs.items():
            (warmups or {}).get(name, run)()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            seconds[name].append(run())
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_speedup(
    seconds: Mapping[str, list[float]], project: str, reference: str, work: Mapping[str, float] | None = None
) -> float:
    """The median over the rounds of ``project speed / reference speed``, a speed being
    ``work[name] / seconds`` (default work 1: the same work on both sides, the ratio of times).
    Above 1 the project is faster; 1 is level."""
    ours, theirs = (work or {}).get(project, 1.0), (work or {}).get(reference, 1.0)
    pairs = zip(seconds[project], seconds[reference], strict=True)
    return statistics.median((ours / a) / (theirs / b) for a, b in pairs)


def load_average() -> float:
    """The 1-minute load average (runnable processes; above the core count the runs share cores)."""
    return round(os.getloadavg()[0], 2)
