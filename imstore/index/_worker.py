"""The owner's side of the indexer: the one thread (or, in memory, the one caller at a time)
that writes a store's index, and the commands it takes.

Rules kept here (the lock rule itself is written once, in `_indexer`):
- only `Worker` touches the writing index, one step at a time under ``owner`` (a batch, a
  merge, a start over); with a thread, only the thread runs steps;
- commands arrive through ``queue`` — APPLY (work is queued), FLUSH (drain and merge, then
  mark the ticket served), REBUILD (start over and answer how many were queued), RECOVER (a
  search met a damaged index), CLOSE; a round takes every queued command, starts the index
  over once if any asked for it (or another process marked it stale), then drains once;
- a ticket is served only by a drain that completed after the ticket was taken: a waiter that
  sees ``served >= ticket`` knows everything queued before its command is in the index, merged;
- an entry leaves the outbox only after the commit that applied it (`Outbox.remove_through`);
- a batch of many entries runs with the garbage collector paused (`_collector`); a single
  write never does;
- a failed write (a full disk) keeps its work queued and backs off (0.5 s doubling to 30 s),
  leaving no partial segment files behind; a damaged index starts over at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorCode, IMError
from ._collector import collector_paused
from ._outbox import OP_ADD, OP_DELETE, OP_INDEX, Outbox
from ._rebuild import Rebuild
from ._whoosh import SearchIndex, SearchIndexError

__all__ = ["APPLY", "CLOSE", "FLUSH", "REBUILD", "RECOVER", "Command", "IndexPolicy", "Worker"]

log = logging.getLogger("imstore.store")

APPLY, FLUSH, REBUILD, RECOVER, CLOSE = "apply", "flush", "rebuild", "recover", "close"
_MAX_BACKOFF = 30.0  # seconds between retries of a failing write (a full disk), at most
_BULK = 1000  # a batch of this many entries runs with the collector paused (`_collector`)


@dataclass(frozen=True, slots=True)
class IndexPolicy:
    """How the indexer batches its work. The defaults are measured (docs/benchmarks.md).

    ``batch``: outbox entries per index commit of a backlog (merged once at its end);
    ``live_batch``: entries per commit of ordinary writes (merged as they go);
    ``bulk_apply``: without a thread (in memory), an import applies once this much is pending;
    ``poll``: seconds between the thread's looks at the outbox (work of other processes, a
    rebuild asked for); ``coalesce``: seconds single writes may gather before a batch;
    ``yield_until``: the thread leaves the core to a running import until this much is pending.
    """

    batch: int = 50_000
    live_batch: int = 20_000
    bulk_apply: int = 20_000
    poll: float = 0.5
    coalesce: float = 0.05
    yield_until: int = 100_000

    def __post_init__(self) -> None:
        for name in ("batch", "live_batch", "bulk_apply", "yield_until"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise IMError(ErrorCode.INVALID_PARAM,
                              f"IndexPolicy.{name} must be a whole number >= 1, not {value!r}")
        for name, least in (("poll", 0.01), ("coalesce", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not least <= value <= 60:
                raise IMError(ErrorCode.INVALID_PARAM, f"IndexPolicy.{name} must be {least} to "
                              f"60 seconds, not {value!r}")


@dataclass(slots=True)
class Command:
    kind: str
    ticket: int
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None


class Worker:
    """The writer of one store's index. ``threaded``: a thread runs the steps (a store on
    disk); else each caller runs them itself, holding the writer lock too (in memory, where
    searches read the very index being written)."""

    def __init__(self, conn: Any, outbox: Outbox, rebuild: Rebuild, policy: IndexPolicy,
                 writer: SearchIndex, *, threaded: bool) -> None:
        self._conn = conn
        self._outbox = outbox
        self._rebuild = rebuild
        self.policy = policy
        self.writer = writer
        self.threaded = threaded
        self.owner = threading.Lock()
        self.progress = threading.Condition()
        self._tickets = 0  # last ticket handed out (under progress)
        self._served = 0  # tickets up to this were followed by a complete drain (progress)
        self._imports = 0  # imports running in this process (under progress)
        self._taken = 0  # highest ticket the thread has taken (the thread's own)
        self.paused = 0  # under owner
        self._queue: queue.Queue[Command] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rate: tuple[int, float] = (0, 0.0)  # entries applied, seconds spent (recent)

    # ---------------------------------------------------------------------- for callers

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def post(self, kind: str) -> Command:
        with self.progress:
            self._tickets += 1
            cmd = Command(kind, self._tickets)
        self._queue.put(cmd)
        return cmd

    def served(self, cmd: Command) -> bool:
        with self.progress:
            return self._served >= cmd.ticket

    def idle_wait(self, seconds: float) -> None:
        with self.progress:
            self.progress.wait(seconds)

    def importing(self, delta: int) -> None:
        with self.progress:
            self._imports = max(self._imports + delta, 0)

    def stop(self) -> None:
        """Stop the thread after its current step; the outbox keeps the rest."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            self._queue.put(Command(CLOSE, 0))
            if thread is not threading.current_thread():
                thread.join()

    # -------------------------------------------------------------------------- steps

    @contextmanager
    def step(self) -> Iterator[None]:
        """One step on the writing index: ``owner``, then (in memory) the writer lock."""
        with self.owner, (nullcontext() if self.threaded else self._conn.lock):
            yield

    def start_over(self) -> int:
        with self.step():
            return self._rebuild.start_over(self.writer)

    def drain(self, force: bool) -> bool:
        """Apply the outbox a batch at a time until it is empty, then merge if a backlog left
        many segments. Returns whether it drained completely (not paused, stopped, or leaving
        the core to an import: ``force`` overrides that)."""
        with self.progress:
            importing = self._imports
        if importing and not force and self._outbox.pending() < self.policy.yield_until:
            return False  # the import's end (or a flush) wakes the thread
        fragmented = False
        while True:
            with self.step():
                if self.paused or self._stop.is_set():
                    return False
                bulk = self._outbox.pending() >= 2 * self.policy.live_batch
                size = self.policy.batch if bulk else self.policy.live_batch
                self.writer.offload = bool(importing) and self.threaded
                n = self._apply_one(size, merge=not bulk)
            fragmented = fragmented or bulk
            with self.progress:
                self.progress.notify_all()
            if n < size:
                break
        if fragmented:
            with self.step(), self._conn.guard():
                self.writer.merge_if_fragmented()
        return True

    def _apply_one(self, size: int, merge: bool) -> int:
        """One batch of the outbox in one index commit, then out of the outbox; returns how
        many entries it held."""
        with self._conn.guard():
            last, count, ops = self._outbox.next_batch(size)
            if not count:
                return 0
            started = time.perf_counter()
            with collector_paused() if count >= _BULK else nullcontext():
                docs = self._outbox.docs(last, ops)
                found = {d.rowid for d in docs}
                deletes = [rid for rid, op in ops.items() if op == OP_DELETE or rid not in found]
                new = [d for d in docs if ops[d.rowid] == OP_ADD]
                upserts = [d for d in docs if ops[d.rowid] == OP_INDEX]
                self.writer.apply(upserts, deletes, new=new, merge=merge)
                del docs, new, upserts
            self._outbox.remove_through(last, list(ops))
        done, spent = self.rate
        if done > 200_000:  # keep the speed recent
            done, spent = done // 2, spent / 2
        self.rate = (done + count, spent + time.perf_counter() - started)
        return count

    # ------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        backoff = 0.0
        try:
            while not self._stop.is_set():
                try:
                    cmds = [self._queue.get(timeout=max(self.policy.poll, backoff))]
                    time.sleep(self.policy.coalesce)  # let a burst of single writes gather
                except queue.Empty:
                    cmds = []  # an idle look: other processes' work, a rebuild asked for
                while True:
                    try:
                        cmds.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if self._stop.is_set() or any(c.kind == CLOSE for c in cmds):
                    break
                backoff = self._round(cmds, backoff)
        finally:
            try:
                self._conn.db.close()  # this thread's SQLite connection
            except Exception:
                pass
            with self.progress:
                self.progress.notify_all()

    def _round(self, cmds: list[Command], backoff: float) -> float:
        """Run one round of commands; returns the back-off before the next try (0 after
        success)."""
        self._taken = max([self._taken, *(c.ticket for c in cmds)])
        starts = [c for c in cmds if c.kind in (REBUILD, RECOVER)]
        try:
            if starts or self._rebuild.asked():
                log.info("the search index starts over (%s)", "asked here" if starts else
                         "marked stale by another process")
                done = self.start_over()
                for cmd in starts:
                    cmd.result = done
                    cmd.done.set()
            if self.drain(force=any(c.kind == FLUSH for c in cmds)):
                with self.progress:
                    self._served = self._taken
            return 0.0
        except SearchIndexError as exc:
            if exc.damaged:
                log.warning("search index damaged; rebuilding it (%s)", exc)
                self._retry_start_over()
                return 0.0
            log.warning("search index write failed; will retry (%s)", exc)
        except IMError as exc:
            if self._conn.closed:
                self._stop.set()
                return 0.0
            log.warning("the search indexer will retry: %s", exc)
        except Exception:
            log.exception("the search indexer failed; it will retry")
        finally:
            for cmd in starts:
                if not cmd.done.is_set():
                    cmd.result = IMError(ErrorCode.DATABASE_ERROR, "the rebuild could not "
                                         "start; it is retried at the next open")
                    cmd.done.set()
            with self.progress:
                self.progress.notify_all()
        return min(max(backoff * 2, 0.5), _MAX_BACKOFF)

    def _retry_start_over(self) -> None:
        try:
            self.start_over()
        except Exception as again:  # whoosh or the file system: the next round retries
            log.warning("could not reset the search index (%r)", again)

    def after_fork(self) -> None:
        """In a forked child: fresh locks and queue (a parent's thread may have held them)."""
        self.owner = threading.Lock()
        self.progress = threading.Condition()
        self._queue = queue.Queue()
        self._stop = threading.Event()
        self._imports = self.paused = 0
        self._thread = None
