"""Long work on stderr: progress bars, and Ctrl-C while the work runs.

Rules kept here:
- the library reports progress through callbacks; this module alone draws it: a tqdm bar (total,
  rate, time left) on a terminal (80 x 24 when the terminal reports no size), else a
  plain counter line every ``$IMSTORE_PROGRESS_EVERY`` seconds (default 2; none at all for work
  that ends sooner);
- the first Ctrl-C during an import asks for a clean stop after the current message (the batches
  written so far stay); a second one stops at once.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["Progress", "Stop"]


class Progress:
    """Progress of long work on stderr: call it with the count done so far; `close` at the end."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total = label, total or None
        self.every = _seconds(os.environ.get("IMSTORE_PROGRESS_EVERY", ""), 2.0)
        self.done = 0
        self.bar: Any = None
        self.started = self.last = time.monotonic()
        self.printed = False
        self.seconds_left: float | None = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:  # installed without the cli extra: the plain counter
                return
            # A terminal that reports no size (some CI consoles, serial lines) gets a fixed one:
            # tqdm would draw nothing at all in 0 columns or 0 rows.
            width, height = _size()
            self.bar = tqdm(total=self.total, desc=label, unit=" msg", unit_scale=True,
                            file=sys.stderr, leave=False, dynamic_ncols=width > 0 and height > 0,
                            ncols=width or FALLBACK_SIZE[0], nrows=height or FALLBACK_SIZE[1])

    def __call__(self, done: int) -> None:
        self.done = done
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.printed = True
            of = f"/{self.total:,}" if self.total else ""
            rate = done / max(now - self.started, 1e-6)
            left = f", about {self.seconds_left:,.0f} s left" if self.seconds_left else ""
            print(f"{self.label}: {done:,}{of} ({rate:,.0f}/s{left})", file=sys.stderr,
                  flush=True)

    def estimate(self, seconds_left: float | None) -> None:
        """The worker's own estimate of the time left (work that reports its count in large
        steps shows this meanwhile)."""
        self.seconds_left = seconds_left
        if self.bar is not None and seconds_left is not None:
            self.bar.set_postfix_str(f"about {seconds_left:,.0f} s left", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


FALLBACK_SIZE = (80, 24)


def _size() -> tuple[int, int]:
    """(columns, rows) of the terminal stderr is on, 0 for what it does not say."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return 0, 0
    return size.columns, size.lines


def _seconds(value: str, default: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        return default
    return seconds if seconds >= 0 else default


class Stop:
    """Ctrl-C during an import: true once a clean stop was asked for (see the module's rules)."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stop]:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, self.previous)
