"""The indexer: the one owner of a store's keyword index (Seshat's ``Writer``).

Rules kept here:
- **one owner.** In the process that indexes a store on disk, one thread (``imstore-indexer``)
  alone writes the index. Callers never touch it: they send commands through a queue —
  APPLY (wake up: work is queued), FLUSH (drain and merge, then mark the ticket served),
  REBUILD (start the index over), RECOVER (a search met a damaged index), CLOSE — and wait
  for what they need on ``Worker.progress``. A store in memory has no thread: there the calling
  thread runs the same steps itself, one at a time;
- **the lock rule.** Locks are taken in this order, never the other way round, whether or not
  the thread is alive:
    0. ``Indexer._lock``: becoming the indexer (taking over), pausing, closing;
    1. ``Worker.owner``: held for one step on the writing index (a batch, a merge, a start over,
       becoming the indexer, closing) by whoever runs it — the thread, or in memory the caller
       — and by `pause` for an instant to change the pause count;
    2. the store's writer lock (``Connection.lock``): taken inside a step for each SQLite
       statement; in memory, held for the whole step (there the index reader is the writer);
    3. ``Worker.progress`` (a condition): the served ticket, the ticket counter, the import count;
       held for no I/O.
  Nobody holding the writer lock calls into the indexer except `enqueue` and `enqueue_deletes`
  (inside the write transaction; they take no indexer lock). Searches ask for take-over and
  catch-up (`before_search`) before they take the writer lock;
- the outbox (`_outbox`), the cross-process lease (`_lease`) and the rebuild (`_rebuild`) are
  parts: an entry leaves the outbox only after the index commit that applied it; one process
  per store directory indexes it (it holds the lease), the others read and leave their work
  queued, and the next one to write or search after the holder went takes over;
- `close` stops the thread after its current batch, without draining: the outbox survives and
  the next indexer goes on. A forked child is a reader (its parent keeps indexing); at
  interpreter exit every thread finishes its batch;
- `pause` holds back applying the outbox (the thread finishes its batch first); commands other
  than applying still run. `IndexPolicy` sets the batch sizes and waits (tests use small ones).

This module is the callers' side; the owner's side (the steps, the thread, the commands) is
`_worker.Worker`, which exists only in the process that indexes the store.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .._crypto import index_key
from ..errors import ErrorCode, IMError
from ..message import Message
from ._lease import Lease
from ._outbox import Outbox
from ._rebuild import Rebuild
from ._sealed import Sealing
from ._whoosh import SearchIndex, SearchIndexError
from ._worker import APPLY, FLUSH, REBUILD, RECOVER, Command, IndexPolicy, Worker

__all__ = ["IndexPolicy", "IndexStatus", "Indexer"]

log = logging.getLogger("imstore.store")


@dataclass(frozen=True, slots=True)
class IndexStatus:
    """How far the search index is behind the database (`MessageStore.index_status`).

    ``pending``: outbox entries (message changes) not in the index yet; ``docs_per_second``:
    this process's recent indexing speed (0.0 before it has indexed anything); ``seconds_left``:
    ``pending / docs_per_second``, or None when no speed is known yet (or this process is not
    the indexer); ``indexer``: whether this process is the one indexing the store."""

    pending: int
    docs_per_second: float
    seconds_left: float | None
    indexer: bool


_LIVE: weakref.WeakSet[Indexer] = weakref.WeakSet()


@atexit.register
def _stop_threads() -> None:
    """At interpreter exit, let every indexer thread finish its batch (nothing is lost either
    way: the outbox keeps what is not indexed yet)."""
    for indexer in list(_LIVE):
        indexer.stop_thread()


def _after_fork_in_child() -> None:
    for indexer in list(_LIVE):
        indexer.forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Indexer:
    """Feeds a store's keyword index from its outbox. Build it with `Indexer.open`."""

    def __init__(self, conn: Any, directory: str | None, *, search: bool,
                 policy: IndexPolicy | None = None) -> None:
        self._conn = conn
        self._directory = directory
        self.policy = policy or IndexPolicy()
        self._index_dir = None if directory is None else os.path.join(directory, "search")
        store_key = getattr(conn, "store_key", None)  # an encrypted store's: seal the index
        self._sealing = None if store_key is None or directory is None else Sealing(
            index_key(store_key))
        self.outbox = Outbox(conn, self._index_dir, indexing=search)
        self._rebuild = Rebuild(conn, self.outbox)
        self._lease = None if directory is None else Lease(directory)
        self._lock = threading.Lock()
        self._worker: Worker | None = None  # in the process that indexes the store only
        self._reader: SearchIndex | None = None  # what searches read
        self._pauses = 0  # under _lock
        self._closed = False

    @classmethod
    def open(cls, conn: Any, directory: str | None, *, search: bool,
             policy: IndexPolicy | None = None) -> Indexer:
        """The indexer of a store just opened: with search on, the index loaded (or rebuilt)
        and, when this process gets the lease, the thread started on the outbox (what an
        earlier process left there is replayed first); else the index opened for reading."""
        indexer = cls(conn, directory, search=search, policy=policy)
        if not search:
            return indexer
        if directory is None:
            writer = indexer._reader = SearchIndex(None)
            indexer._worker = Worker(conn, indexer.outbox, indexer._rebuild, indexer.policy,
                                     writer, threaded=False)
            _LIVE.add(indexer)  # a fork gets fresh locks
            indexer.outbox.replay_all()
            indexer._worker.drain(force=True)
            return indexer
        with indexer._lock:
            assert indexer._lease is not None and indexer._index_dir is not None
            if indexer._lease.take():
                indexer._become_indexer()
            else:
                indexer._reader = SearchIndex(indexer._index_dir, readonly=True,
                                              sealing=indexer._sealing)
        return indexer

    # ------------------------------------------------------------------ what callers see

    @property
    def enabled(self) -> bool:
        return self.outbox.indexing

    @property
    def reader(self) -> SearchIndex | None:
        """The index searches read (the thread's commits reach it)."""
        return self._reader

    def enqueue(self, rowids: Sequence[int], *, new: bool = False,
                messages: Sequence[Message] | None = None) -> None:
        self.outbox.enqueue(rowids, new=new, messages=messages)

    def enqueue_deletes(self, where: str, params: Sequence[Any]) -> None:
        self.outbox.enqueue_deletes(where, params)

    def pending(self) -> int:
        return self.outbox.pending()

    def has_pending(self) -> bool:
        return self.outbox.has_pending()

    def status(self) -> IndexStatus:
        pending = self.pending() if self.enabled else 0
        worker = self._worker
        done, spent = worker.rate if worker is not None else (0, 0.0)
        speed = done / spent if spent > 0 else 0.0
        left = pending / speed if speed > 0 and worker else (0.0 if not pending else None)
        return IndexStatus(pending, speed, left, worker is not None)

    def doc_count(self) -> int:
        reader = self._reader
        return 0 if reader is None else reader.doc_count()

    def drift(self, undecodable: int = 0) -> int:
        """How far the index's documents are from the searchable rows (neither recalled nor
        among the ``undecodable`` ones, which have none): row ids missing, extra or doubled.
        Compares the row ids themselves, so a damaged row-id column shows. Call it with
        nothing pending (`wait` first)."""
        reader = self._reader
        if reader is None:
            return 0
        ids = reader.row_ids()
        held = set(ids)
        stored = {r[0] for r in self._conn.query("SELECT id FROM message WHERE recalled_at IS "
                                                 "NULL")}
        missing = max(len(stored - held) - undecodable, 0)
        return missing + len(held - stored) + len(ids) - len(held)

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Hold back applying the outbox until the block ends (the current batch finishes
        first). Searches stay exact meanwhile: they scan what is pending."""
        self._pause_by(1)
        try:
            yield
        finally:
            self._pause_by(-1)
            self._wake()

    def _pause_by(self, delta: int) -> None:
        with self._lock:
            self._pauses += delta
            worker = self._worker
            if worker is not None:
                with worker.owner:
                    worker.paused = self._pauses

    # ------------------------------------------------------------------------- ownership

    def owns(self) -> bool:
        """Whether this process is the indexer: it holds the lease, or takes it now (the holder
        went away). A store in memory is always its own indexer."""
        if not self.enabled or self._closed or self._conn.closed:
            return False
        if self._worker is not None:
            return True
        with self._lock:
            if self._closed or self._conn.closed:
                return False
            if self._worker is not None:
                return True
            assert self._lease is not None and self._index_dir is not None
            if not self._lease.take():
                reader = self._reader
                if reader is not None and not reader.available:  # made readable since?
                    self._swap_reader(SearchIndex(self._index_dir, readonly=True,
                                                  sealing=self._sealing))
                return False
            log.info("taking over indexing of %s", self._directory)
            self._become_indexer()
            return True

    def _become_indexer(self) -> None:
        """With the lease and ``_lock`` held: open the index for writing (rebuilt when
        missing, damaged or asked for), a reader for searches, and start the thread."""
        assert self._lease is not None and self._index_dir is not None
        try:
            writer = SearchIndex(self._index_dir, sealing=self._sealing)
        except BaseException:
            self._lease.release()
            raise
        if writer.rebuilt:
            self._rebuild.start_over(writer, reset=False)
        elif self._rebuild.asked():
            log.info("the search index is marked stale; rebuilding it")
            self._rebuild.start_over(writer)
        else:
            self.outbox.replay_all()
        self.outbox.high = self.outbox.max_rowid()
        self._swap_reader(SearchIndex(self._index_dir, readonly=True,
                                                  sealing=self._sealing))
        worker = Worker(self._conn, self.outbox, self._rebuild, self.policy, writer,
                        threaded=True)
        worker.paused = self._pauses
        self._worker = worker
        _LIVE.add(self)
        worker.start(f"imstore-indexer {self._index_dir}")

    def _swap_reader(self, reader: SearchIndex) -> None:
        with self._conn.lock:  # no search is reading the old one
            old, self._reader = self._reader, reader
        if old is not None:
            old.close()

    # ---------------------------------------------------------------------- the commands

    def _wake(self) -> None:
        worker = self._worker
        if worker is None or self._closed:
            return
        if worker.threaded:
            worker.post(APPLY)
        else:
            worker.drain(force=False)

    def before_search(self) -> None:
        """Before a search (the writer lock not held): take over indexing if its holder went
        away; in memory, apply the outbox first (with a thread, the search scans what is
        pending instead of waiting)."""
        if self.owns():
            worker = self._worker
            if worker is not None and not worker.threaded:
                worker.drain(force=True)

    def settle(self, *, bulk: bool = False) -> None:
        """After a write: wake the thread; in memory, apply now, or (``bulk``) once enough is
        pending."""
        if not self.owns() or self._worker is None:
            return
        if self._worker.threaded:
            self._worker.post(APPLY)
        elif not bulk or self.pending() >= self.policy.bulk_apply:
            self._worker.drain(force=True)

    def begin_bulk(self) -> None:
        """An import starts: the thread leaves the core to it until much is pending (indexing
        while importing thrashes the interpreter lock: both would end later)."""
        if self._worker is not None:
            self._worker.importing(+1)

    def end_bulk(self) -> None:
        if self._worker is not None:
            self._worker.importing(-1)
            self._wake()

    def finish_bulk(self) -> None:
        """After an import: wake the thread, or in memory apply everything and merge."""
        self.settle()

    def recover(self, exc: SearchIndexError) -> None:
        """After a search met `SearchIndexError`: a damaged index starts over (every message
        queued for it); a failed write (a full disk) keeps its work queued for a retry."""
        log.warning("search index %s (%s)", "damaged; rebuilding it" if exc.damaged else
                    "write failed; will retry", exc)
        if not exc.damaged or not self.owns() or self._worker is None:
            return
        if self._worker.threaded:
            self._worker.post(RECOVER)
        else:
            self._worker.start_over()

    def reopen_reader(self) -> None:
        """Open the searches' reader again (it may have met a merge that removed files it had
        not opened yet)."""
        if self._reader is not None:
            self._reader.reopen()

    def wait(self, progress: Callable[[int], None] | None = None,
             timeout: float | None = None, *, start: int | None = None) -> bool:
        """Wait until every change queued before the call is in the index (applied and merged,
        by this process's thread or by the process that indexes the store); returns whether
        that happened within ``timeout`` seconds. ``progress`` hears how many entries were
        indexed since ``start`` pending (default: what is pending now). Writes made after the
        call do not hold it up. Must not be called with the writer lock held."""
        if not self.enabled:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        position = self.outbox.position()
        start = self.pending() if start is None else start
        cmd: Command | None = None
        while True:
            worker = self._worker if self.owns() else None
            if worker is not None and not worker.threaded:
                worker.drain(force=True)
            elif worker is not None and cmd is None:
                cmd = worker.post(FLUSH)
            if progress:
                progress(max(start - self.pending(), 0))
            if cmd is not None and worker is not None:
                if worker.served(cmd):
                    return True
            elif self.outbox.past(position):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if worker is not None:
                worker.idle_wait(0.2)
            else:
                time.sleep(min(0.2, self.policy.poll))

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Make the index again from SQLite; returns how many messages it indexed. Every
        message is first queued in the outbox, then the index starts empty and the outbox is
        applied, so an interrupted rebuild finishes when the store is next opened. Searches
        stay exact meanwhile (they scan what is not indexed yet)."""
        if not self.enabled:
            raise IMError(ErrorCode.SERVICE_NOT_ENABLED, "this store was opened with search=False")
        if not self.owns() or self._worker is None:
            return self._rebuild_elsewhere(progress)
        worker = self._worker
        if worker.threaded:
            cmd = worker.post(REBUILD)
            while not cmd.done.wait(0.2):
                if self._closed:
                    raise IMError(ErrorCode.DATABASE_ERROR, "the store was closed during the "
                                  "rebuild; the next open finishes it")
            if isinstance(cmd.result, BaseException):
                raise cmd.result
            done = int(cmd.result)
        else:
            done = worker.start_over()
        self.wait(progress, start=done)
        return done

    def _rebuild_elsewhere(self, progress: Callable[[int], None] | None) -> int:
        """Ask the process that indexes the store to rebuild (a mark in SQLite its thread looks
        for) and wait until it has served the request and applied what it queued — not for
        later writes. Should that process go away meanwhile, this one takes over."""
        self._rebuild.ask()
        total = int(self._conn.one("SELECT count(*) FROM message")[0])
        while self._rebuild.asked() and not self.owns():
            time.sleep(self.policy.coalesce)
        self.wait(progress, start=total)
        return total

    # ------------------------------------------------------------------------- the end

    def forget_after_fork(self) -> None:
        """In a child made by ``fork``: the parent stays the indexer (the lease belongs to the
        open file both share, and its thread did not come along); this copy searches like any
        other process and takes over only once the parent has gone."""
        self._lock = threading.Lock()
        worker = self._worker
        if worker is not None:
            worker.after_fork()
            if worker.threaded:
                worker.writer.forget_helper()  # the parent's helper process: never ours
                self._worker = None  # the parent's to write (and to close)
        if self._lease is not None:
            self._lease.forget()

    def stop_thread(self) -> None:
        """Stop the thread after its current batch; the outbox keeps the rest."""
        if self._worker is not None:
            self._worker.stop()

    def close(self) -> None:
        """Stop the thread after its current batch (the outbox keeps what is not indexed; the
        next indexer goes on), close the index, and let go of the lease."""
        self._closed = True
        try:
            self.stop_thread()
        finally:
            with self._lock:
                worker = self._worker
                try:
                    indexes = [self._reader] + ([worker.writer] if worker is not None else [])
                    for index in {id(i): i for i in indexes if i is not None}.values():
                        if worker is not None:
                            with worker.owner:
                                index.close()
                        else:
                            index.close()
                finally:
                    _LIVE.discard(self)
                    if self._lease is not None:
                        self._lease.release()
