"""Progress of the long steps (train, sample, evaluate) on stderr, with rate and ETA.

On a terminal it is a tqdm bar. Elsewhere (a pod's log, a file, a pipe) it is one plain line
every ``$AUTOPHAGY_PROGRESS_SECONDS`` seconds (default 30), with percent, count, elapsed time,
ETA and rate, plus a last line when the step ends if it ran that long or printed before; a step
shorter than the interval prints nothing. ``$AUTOPHAGY_PROGRESS``: ``auto`` (the default: a bar
on a terminal, lines otherwise), ``bar``, ``lines`` or ``0`` (nothing).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import IO

from tqdm import tqdm

from autophagy.config import ConfigError

MODE_ENV = "AUTOPHAGY_PROGRESS"
INTERVAL_ENV = "AUTOPHAGY_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0
MODES = ("auto", "bar", "lines", "0")
#: A plain line: tqdm's meter without the bar (``done``/``total``: :func:`count`).
LINE_FORMAT = "{desc}: {percentage:3.0f}% {done}/{of} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def mode(stream: IO[str] | None = None) -> str:
    """``bar``, ``lines`` or ``0`` for ``stream`` (stderr) under ``$AUTOPHAGY_PROGRESS``."""
    value = (os.environ.get(MODE_ENV) or "auto").strip().lower()
    if value not in MODES:
        raise ConfigError(f"{MODE_ENV} must be one of {', '.join(MODES)}, got {value!r}")
    if value != "auto":
        return value
    stream = sys.stderr if stream is None else stream
    return "bar" if hasattr(stream, "isatty") and stream.isatty() else "lines"


def interval() -> float:
    """Seconds between plain lines (``$AUTOPHAGY_PROGRESS_SECONDS``, default 30)."""
    text = os.environ.get(INTERVAL_ENV)
    if not text:
        return DEFAULT_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{INTERVAL_ENV} must be a number of seconds >= 0, got {text!r}")
    return seconds


class Progress:
    """Progress of one step towards ``total`` (in ``unit``), starting from ``initial`` (a resumed
    step): ``update(n)`` after each piece, ``close()`` (or a ``with`` block) at the end.
    ``enabled=False`` (a data-parallel rank other than 0) shows nothing."""

    def __init__(self, desc: str, total: int, unit: str = "it", initial: int = 0, enabled: bool = True):
        self.desc, self.total, self.unit = desc, total, unit
        self.n = self.initial = initial
        self.postfix = ""
        self.mode = mode() if enabled else "0"
        self.started = self.last_line = time.monotonic()
        self.every = interval() if self.mode == "lines" else 0.0
        self.printed_n: int | None = None
        self.bar = None
        if self.mode == "bar":
            self.bar = tqdm(
                total=total, initial=initial, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True
            )

    def update(self, n: int, postfix: str = "") -> None:
        """``n`` more units done; ``postfix`` (e.g. ``loss=0.123``) is shown after the rate."""
        self.n += n
        self.postfix = postfix
        self.total = max(self.total, self.n)  # a training ends with a whole batch, past its budget
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(n)
        elif self.mode == "lines" and time.monotonic() - self.last_line >= self.every:
            self._line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif (
            self.mode == "lines"
            and self.printed_n != self.n
            and (self.printed_n is not None or time.monotonic() - self.started >= self.every)
        ):
            self._line()
        self.mode = "0"

    def _line(self) -> None:
        now = time.monotonic()
        text = tqdm.format_meter(
            self.n,
            self.total,
            now - self.started,
            prefix=self.desc,
            unit=self.unit,
            unit_scale=True,
            postfix=self.postfix or None,
            bar_format=LINE_FORMAT,
            initial=self.initial,
            done=count(self.n),
            of=count(self.total),
        )
        print(text, file=sys.stderr, flush=True)
        self.last_line, self.printed_n = now, self.n

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count(n: int) -> str:
    """``600``, ``1.60k``, ``50.0M``: whole numbers below 1000, three digits and an SI prefix above."""
    return str(n) if n < 1000 else tqdm.format_sizeof(n)


def batches(desc: str, total: int, batch_size: int, unit: str = "it") -> Iterator[int]:
    """The first index of each batch of ``batch_size`` in ``0 .. total - 1``, with progress over
    the ``total`` items (each batch counts as done when the next is asked for)."""
    with Progress(desc, total, unit) as progress:
        for first in range(0, total, batch_size):
            yield first
            progress.update(min(batch_size, total - first))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide ``transformers``' own progress bars (its "Loading weights" bar) while loading a network:
    autophagy reports its steps' progress itself. The previous setting is restored."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
