"""Long work on stderr: progress bars, and Ctrl-C while the work runs.

Rules kept here:
- the library reports progress through callbacks; this module alone draws it: a tqdm bar (total,
  rate, time left) on a terminal, else a plain counter line every ``$IMSTORE_PROGRESS_EVERY``
  seconds (default 2; none at all for work that ends sooner);
- the first Ctrl-C during an import asks for a clean stop after the current message (the batches
  written so far stay); a second one stops at once.
"""

from __future__ import annotations

import contextlib
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
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:  # installed without the cli extra: the plain counter
                return
            self.bar = tqdm(total=self.total, desc=label, unit=" msg", unit_scale=True,
                            file=sys.stderr, dynamic_ncols=True, leave=False)

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
            print(f"{self.label}: {done:,}{of} ({rate:,.0f}/s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
