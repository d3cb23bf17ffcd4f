"""Pausing Python's cyclic garbage collector for the index's bulk work (Mercurial's ``nogc``).

Rules kept here:
- bulk indexing (a batch of thousands of documents: reading them, inverting them, writing a
  segment, folding a rebuild's texts) makes hundreds of thousands of containers that live
  until the batch ends and hold no cycles. Each time enough of them survive, Python runs a
  full collection, which walks every object of the process: in a process that holds much
  (an app with its messages in memory), those collections were 15 % of a rebuild
  (docs/benchmarks.md). The collector is paused for such a batch, never for a single write;
- the pause is process-wide and nests across threads: the first to pause remembers whether
  the collector was on, the last to resume turns it back on only then (an app that turned it
  off keeps it off). Reference counting frees memory as usual meanwhile; only cyclic garbage
  waits, for the length of a batch (about a second).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the body with the cyclic garbage collector off (see the module's rules)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
