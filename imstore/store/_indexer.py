"""The search outbox and its indexer, as one object (Seshat's ``Writer``).

Rules kept here:
- every message change enqueues its index work in table ``search_outbox`` inside the write
  transaction that changes the message (`enqueue`, `enqueue_deletes`);
- the outbox is applied to the index in batches, one index commit each, and an entry leaves the
  outbox only after that commit (`apply`); what a crash left is applied on open (`replay`), and
  while replaying every entry replaces its document, since the crash may have left it indexed;
- indexing runs in the background: in the process that indexes a store on disk, a thread
  (``imstore-indexer``) drains the outbox a batch at a time, so writes and imports return at
  SQLite speed. Searches never wait for it: they read the index through a reader of their own
  and scan the rows still in the outbox (`Searcher`), so they are exact the moment a write
  returns. `close` stops the thread after its current batch, without draining: the outbox
  survives and the next indexer goes on. A store in memory has no thread; there a search applies
  the outbox first (`catch_up`);
- lock order: the thread's batch lock (``_work``) before the store's writer lock, never the
  other way round; nothing that holds the writer lock waits for the thread;
- the index is a cache: `rebuild` makes it again from SQLite, crash-safe;
- a recalled message has no document (its entry applies as a delete);
- one indexer per store directory across processes: the process holding ``search.lock`` (an OS
  file lock, released by the kernel when its process dies) applies the outbox; every other
  process only reads the index and leaves its work in the outbox for the holder (a search there
  adds the pending rows, scanned in SQLite). The next process to write or search after the
  holder went takes the lock and drains the outbox. Only the holder removes outbox entries, and
  only after its index commit, so work is neither lost nor done twice.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..codec import decode_body, decode_ext
from ..errors import ErrorCode, IMError
from ..message import MessageType
from ..text import content_text, ext_text, verbatim_searchable
from ._connection import Connection, chunks, marks

if TYPE_CHECKING:
    from ..search import Doc, SearchIndex

__all__ = ["IndexStatus", "SearchWriter"]

log = logging.getLogger("imstore.store")

_OP_INDEX, _OP_DELETE, _OP_ADD = 1, 2, 3  # ADD: a row id the index has never held
_OP_MASK = 7
OP_VERBATIM = 8  # flag on an entry: `text.verbatim_searchable` held for the row when written
_INDEX_BATCH = 50_000  # outbox entries per index commit, at most (applied in the foreground)
_BULK_BATCH = 20_000  # a bulk import applies the outbox once this much is pending (no thread)
_THREAD_BATCH = 20_000  # outbox entries per commit of the background thread
_POLL = 0.5  # seconds between the thread's looks at the outbox (work of other processes)
_COALESCE = 0.05  # seconds the thread lets single writes gather before it indexes them
_YIELD_UNTIL = 100_000  # the thread leaves the core to a running import until this is pending
LOCK_FILE = "search.lock"  # in the store directory; held by the process that indexes
_STALE = "index_stale"  # meta key: the indexer must rebuild (another process asked for it)


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


def _try_lock(path: str) -> int | None:
    """An open descriptor holding an exclusive flock on ``path``, or None when another open
    file (another process) holds it. The descriptor is not inherited by spawned programs."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


_LIVE: weakref.WeakSet[SearchWriter] = weakref.WeakSet()


@atexit.register
def _stop_threads() -> None:
    """At interpreter exit, let every indexer thread finish its batch (nothing is lost either
    way: the outbox keeps what is not indexed yet)."""
    for writer in list(_LIVE):
        writer.stop_thread()


def _verbatim_row(mtype: int, body: bytes) -> bool:
    """`text.verbatim_searchable` of a stored row (False when its payload cannot be read)."""
    try:
        t = MessageType(mtype)
        return verbatim_searchable(t, decode_body(t, body))
    except (IMError, ValueError):
        return False


def _after_fork_in_child() -> None:
    for writer in list(_LIVE):
        writer.forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SearchWriter:
    """Feeds the keyword index from the outbox. ``index`` is None for a store opened with
    ``search=False``: then this process never indexes, but its writes still queue their index
    work when the store has an index (`_feeds`). ``index`` is the index this process writes (or,
    when another process indexes the store, reads); searches use `reader`."""

    def __init__(self, conn: Connection, index: SearchIndex | None,
                 directory: str | None = None) -> None:
        self._conn = conn
        self.index = index
        self._directory = directory
        self._lock_fd: int | None = None
        self._replay_until = 0  # outbox ids up to this may be indexed already: replace them
        self._high = 0  # row ids above this were never handed to the index
        self._rate: tuple[int, float] = (0, 0.0)  # entries applied, seconds spent (recent)
        self._reader: SearchIndex | None = None  # the searches' own reader (with a thread)
        self._work = threading.Lock()  # one batch at a time on the index this process writes
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = False
        self._damage: Exception | None = None  # a search met a damaged index: rebuild it
        self._batch_done = threading.Condition()
        self._imports = 0  # imports running in this process (the thread yields to them)
        self._imports_lock = threading.Lock()
        self._waiting = 0  # callers of `wait`: the thread does not yield to imports then
        self._draining = False  # the thread is applying or merging: a `wait` waits for that too
        self._closed = False

    @classmethod
    def open(cls, conn: Connection, directory: str | None, *, search: bool) -> SearchWriter:
        """The writer of a store just opened: the index loaded (or rebuilt), the outbox handed to
        the indexer thread (when this process holds the indexer lock; else the index opened for
        reading)."""
        if not search:  # no index here; the outbox is still fed when the store has one
            writer = cls(conn, None, directory)
            writer._high = writer._max_rowid()
            return writer
        from ..search import SearchIndex

        if directory is None:
            writer = cls(conn, SearchIndex(None))
            writer.replay()
            return writer
        writer = cls(conn, None, directory)
        fd = _try_lock(os.path.join(directory, LOCK_FILE))
        if fd is None:
            writer.index = SearchIndex(os.path.join(directory, "search"), readonly=True)
            writer._high = writer._max_rowid()
        else:
            writer._start(fd)
        return writer

    def _start(self, fd: int) -> None:
        """Become the indexer of this store: the index opened for writing (rebuilt when missing,
        damaged or stale), a reader for searches, and the thread started on the outbox (what an
        earlier process left there is replayed first)."""
        from ..search import SearchIndex

        assert self._directory is not None
        old = self.index
        path = os.path.join(self._directory, "search")
        try:
            index = SearchIndex(path)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        self.index = index
        for stale in (old, self._reader):
            if stale is not None:
                stale.close()
        self._reader = None
        if index.rebuilt:
            self._start_over(reset=False)
        elif not self._rebuild_if_marked():
            self._replay_until = self._last_outbox_id()
        self._high = self._max_rowid()
        self._reader = SearchIndex(path, readonly=True)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"imstore-indexer {path}",
                                        daemon=True)
        _LIVE.add(self)
        self._thread.start()

    def owns(self) -> bool:
        """Whether this process is the indexer: it holds the lock, or takes it now (the holder
        went away). A store in memory is always its own indexer."""
        if self.index is None or self._closed or self._conn.closed:
            return False
        if self._directory is None or self._lock_fd is not None:
            return True
        with self._conn.lock:
            if self._closed or self._conn.closed:
                return False
            if self._lock_fd is not None:
                return True
            fd = _try_lock(os.path.join(self._directory, LOCK_FILE))
            if fd is None:
                if not self.index.available:  # the indexer may have made it readable since
                    from ..search import SearchIndex

                    old = self.index
                    self.index = SearchIndex(os.path.join(self._directory, "search"),
                                             readonly=True)
                    old.close()
                return False
            log.info("taking over indexing of %s", self._directory)
            self._start(fd)
            return True

    @property
    def reader(self) -> SearchIndex | None:
        """The index searches read: the thread's writes reach it at each commit."""
        return self._reader if self._reader is not None else self.index

    def reopen_reader(self) -> None:
        """Open the searches' reader again (after it met an error that may have been a race with
        a merge that removed files it had not opened yet)."""
        reader = self.reader
        if reader is not None:
            reader.reopen()

    def _max_rowid(self) -> int:
        return int(self._conn.one("SELECT coalesce(max(id), 0) FROM message")[0])

    def _last_outbox_id(self) -> int:
        return int(self._conn.one("SELECT coalesce(max(id), 0) FROM search_outbox")[0])

    @property
    def enabled(self) -> bool:
        return self.index is not None

    @property
    def background(self) -> bool:
        """Whether a thread of this process indexes (else searches apply the outbox first)."""
        return self._thread is not None and self._thread.is_alive()

    # ---------------------------------------------------------------- in the write transaction

    def enqueue(self, rowids: Sequence[int], verbatim: Sequence[bool] | None = None, *,
                new: bool = False) -> None:
        """Index (or re-index) these rows once the transaction commits. ``verbatim`` tells, per
        row, that `text.verbatim_searchable` holds for it: a search pre-filters such pending
        rows in SQL."""
        if not rowids or not self._feeds():
            return
        # only rows just inserted may skip the look-up for an older document: a row another
        # process inserted lies above this process's _high too, and may be indexed already
        op = _OP_ADD if new and min(rowids) > self._high else _OP_INDEX
        flags = verbatim if verbatim is not None else [False] * len(rowids)
        self._conn.run_many("INSERT INTO search_outbox (rowid, op) VALUES (?, ?)",
                            [(r, op | OP_VERBATIM if a else op)
                             for r, a in zip(rowids, flags, strict=True)])
        self._high = max(self._high, max(rowids))

    def enqueue_deletes(self, where: str, params: Sequence[Any]) -> None:
        """Remove the documents of the message rows matching ``where`` (before they are deleted)."""
        if self._feeds():
            self._conn.run(f"INSERT INTO search_outbox (rowid, op) SELECT id, {_OP_DELETE} "
                           f"FROM message WHERE {where}", params)

    def _feeds(self) -> bool:
        """Whether writes queue index work: with search on, or (search off in this process)
        when the store has an index, which another process or a later open keeps up to date.
        A store never indexed gets its index built whole on the first open with search."""
        if self.index is not None:
            return True
        return self._directory is not None and os.path.isdir(
            os.path.join(self._directory, "search"))

    def _enqueue_everything(self, db: Any, op: int) -> int:
        """Queue every message (a rebuild), flagged as writes flag them."""
        db.execute_sql("DELETE FROM search_outbox")
        self._replay_until = 0
        rows = db.execute_sql("SELECT id, type, CAST(body AS BLOB) FROM message ORDER BY id")
        done = 0
        while part := rows.fetchmany(5000):
            db.cursor().executemany("INSERT INTO search_outbox (rowid, op) VALUES (?, ?)",
                                    [(rid, op | OP_VERBATIM if _verbatim_row(t, b) else op)
                                     for rid, t, b in part])
            done += len(part)
        return done

    # ------------------------------------------------------------------------------ policy

    def replay(self) -> None:
        """Apply what an earlier process left in the outbox (a store without a thread)."""
        self._replay_until = self._last_outbox_id()
        self.apply()
        self._high = self._max_rowid()

    def settle(self, *, bulk: bool = False) -> None:
        """The flush policy, after a write: with a thread, wake it; without, apply now, or
        (``bulk``) once enough is pending."""
        if self.index is None:
            return
        if self.background:
            self._wake.set()
        elif not bulk:
            self.apply()
        elif self.pending() >= _BULK_BATCH:
            self.finish_bulk()

    def begin_bulk(self) -> None:
        """An import starts: the thread leaves the core to it (until much is pending), which
        makes the import return sooner and the index catch up sooner too (measured: indexing
        while importing thrashes the interpreter lock)."""
        with self._imports_lock:
            self._imports += 1

    def end_bulk(self) -> None:
        """The import has ended (or failed): the thread may index again."""
        with self._imports_lock:
            self._imports = max(self._imports - 1, 0)
        self._wake.set()

    def finish_bulk(self) -> None:
        """After a bulk import: wake the thread, or (without one) apply everything pending in
        large batches, then merge segments if too many."""
        if self.index is None or not self.owns():
            return
        if self.background:
            self._wake.set()
            return
        with self._conn.lock:
            self.apply(merge=False)
            with self._conn.guard():
                self.index.merge_if_fragmented()

    def catch_up(self) -> None:
        """Before a search: without a thread, apply the outbox (with one, the search scans
        what is pending instead of waiting)."""
        if not self.background:
            self.apply()

    def wait(self, progress: Callable[[int], None] | None = None,
             timeout: float | None = None) -> bool:
        """Wait until nothing is pending (this process indexing it, or another that does);
        returns whether that happened within ``timeout`` seconds. ``progress`` hears how many
        entries were indexed since the wait began. Must not be called with the writer lock
        held (the thread needs it to finish a batch)."""
        if self.index is None:
            return True
        with self._imports_lock:
            self._waiting += 1
        try:
            return self._wait(progress, timeout)
        finally:
            with self._imports_lock:
                self._waiting -= 1

    def _wait(self, progress: Callable[[int], None] | None, timeout: float | None) -> bool:
        start = self.pending()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.owns():
                if self._damage is not None:  # a search met damage: the rebuild is queued now
                    self._rebuild_after_damage()
                self._rebuild_if_marked()
                if not self.background:
                    self.apply()
            left = self.pending()
            if progress:
                progress(max(start - left, 0))
            if not left and not (self._draining and self.background):
                return True  # indexed, and merged: the index is as it will stay
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._wake.set()
            with self._batch_done:
                self._batch_done.wait(0.2)

    def pending(self) -> int:
        return int(self._conn.one("SELECT count(*) FROM search_outbox")[0])

    def status(self) -> IndexStatus:
        pending = self.pending() if self.index is not None else 0
        done, spent = self._rate
        speed = done / spent if spent > 0 else 0.0
        indexer = self.index is not None and (self._directory is None or
                                              self._lock_fd is not None)
        left = pending / speed if speed > 0 and indexer else (0.0 if not pending else None)
        return IndexStatus(pending, speed, left, indexer)

    def has_pending(self) -> bool:
        return self._conn.one("SELECT 1 FROM search_outbox LIMIT 1") is not None

    # ------------------------------------------------------------------------------ applying

    def apply(self, merge: bool = True, progress: Callable[[int], None] | None = None) -> None:
        """Apply the outbox to the index, a batch (one index commit) at a time. ``merge=False``
        leaves segment merging to a later commit; ``progress`` hears how many were applied.
        A process that is not the indexer leaves the outbox to the one that is."""
        if self.index is None or not self.owns():
            return
        if self.background:  # owns() may just have started the thread: never wait for _work
            self._wake.set()  # here, the caller may hold the writer lock (a search)
            return
        applied = 0
        while True:
            with self._exclusive():
                n = self._apply_one(_INDEX_BATCH, merge)
            applied += n
            if progress and n:
                progress(applied)
            if n < _INDEX_BATCH:
                return

    def _exclusive(self) -> AbstractContextManager[Any]:
        """The index this process writes, for one step: ``_work``, taken after the writer lock
        when there is no thread (a search holding the writer lock applies the outbox then)."""
        if self.background:
            return self._work
        stack = ExitStack()
        stack.enter_context(self._conn.lock)
        stack.enter_context(self._work)
        return stack

    def _apply_one(self, batch: int, merge: bool) -> int:
        """One batch of the outbox, applied in one index commit, then removed from the outbox;
        returns how many entries it held. The caller holds ``_work``."""
        conn = self._conn
        with conn.guard():
            rows = conn.query("SELECT id, rowid, op FROM search_outbox ORDER BY id LIMIT ?",
                              (batch,))
            if not rows:
                return 0
            ops: dict[int, int] = {}
            for oid, rid, flagged in rows:
                op = flagged & _OP_MASK
                # an entry an earlier process may have indexed before it crashed, and a row id
                # seen before in this batch (deleted, then used again by another process), may
                # have a document already: replace it
                if op == _OP_ADD and (rid in ops or oid <= self._replay_until):
                    op = _OP_INDEX
                ops[rid] = op
            started = time.perf_counter()
            self._apply_batch(ops, merge)
            with conn.tx():
                conn.run("DELETE FROM search_outbox WHERE id <= ?", (rows[-1][0],))
        done, spent = self._rate
        if done > 200_000:  # keep the speed recent
            done, spent = done // 2, spent / 2
        self._rate = (done + len(rows), spent + time.perf_counter() - started)
        return len(rows)

    def _apply_batch(self, ops: dict[int, int], merge: bool) -> None:
        assert self.index is not None
        docs = self._docs([rid for rid, op in ops.items() if op != _OP_DELETE])
        found = {d.rowid for d in docs}
        deletes = [rid for rid, op in ops.items() if op == _OP_DELETE or rid not in found]
        new = [d for d in docs if ops[d.rowid] == _OP_ADD]
        upserts = [d for d in docs if ops[d.rowid] == _OP_INDEX]
        self.index.apply(upserts, deletes, new=new, merge=merge)

    def _docs(self, rowids: Sequence[int]) -> list[Doc]:
        from ..search import Doc

        docs = []
        for part in chunks(rowids):
            for rid, sort, conv, sender, mtype, body, ext in self._conn.query(
                    "SELECT id, sort_time, conv_id, sender, type, CAST(body AS BLOB), "
                    "CAST(ext AS BLOB) FROM message "
                    f"WHERE id IN ({marks(len(part))}) AND recalled_at IS NULL", tuple(part)):
                try:
                    t = MessageType(mtype)
                    content = content_text(t, decode_body(t, body))
                    extt = ext_text(decode_ext(ext))
                except (IMError, ValueError):
                    log.warning("message row %s has a corrupt payload; not indexed", rid)
                    continue
                docs.append(Doc(rid, sort, conv, sender, mtype, content, extt))
        return docs

    # ------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        from ..search import SearchIndexError

        backoff = 0.0
        try:
            while not self._stop:
                woken = self._wake.wait(max(_POLL, backoff))
                self._wake.clear()
                if self._stop:
                    break
                if woken:
                    time.sleep(_COALESCE)  # let a burst of single writes gather
                try:
                    self._drain()
                    backoff = 0.0
                except SearchIndexError as exc:
                    self.recover(exc)
                    backoff = 0.0 if exc.damaged else min(max(backoff * 2, 0.5), 5.0)
                except IMError as exc:
                    if self._conn.closed:
                        break
                    log.warning("the search indexer will retry: %s", exc)
                    backoff = min(max(backoff * 2, 0.5), 5.0)
                except Exception:
                    log.exception("the search indexer failed; it will retry")
                    backoff = min(max(backoff * 2, 0.5), 5.0)
                finally:
                    with self._batch_done:
                        self._batch_done.notify_all()
        finally:
            try:
                self._conn.db.close()  # this thread's SQLite connection
            except Exception:
                pass
            with self._batch_done:
                self._batch_done.notify_all()

    def _drain(self) -> None:
        """Apply the outbox a batch at a time until it is empty (or the store closes)."""
        assert self.index is not None
        if self._damage is not None:
            self._rebuild_after_damage()
        self._rebuild_if_marked()
        if self._imports and not self._waiting and self.pending() < _YIELD_UNTIL:
            return  # the import's end (or a `wait`) wakes the thread
        self._draining = True
        try:
            self._drain_all()
        finally:
            self._draining = False

    def _drain_all(self) -> None:
        assert self.index is not None
        fragmented = False
        while not self._stop:
            # A backlog (an import, a rebuild) goes in large commits without merging, merged
            # once at the end; while an import runs, the helper process writes every segment
            # (the interpreter is the importer's).
            bulk = self.pending() >= 2 * _THREAD_BATCH
            batch = _INDEX_BATCH if bulk else _THREAD_BATCH
            with self._work:
                self.index.offload = bool(self._imports)
                n = self._apply_one(batch, merge=not bulk)
            fragmented = fragmented or bulk
            with self._batch_done:
                self._batch_done.notify_all()
            if n < batch:
                break
        if fragmented and not self._stop:
            with self._work, self._conn.guard():
                self.index.merge_if_fragmented()

    def forget_after_fork(self) -> None:
        """In a child made by ``fork``: the parent stays the indexer (the lock belongs to the
        open file both share, and its thread did not come along); this copy searches like any
        other process and takes over only once the parent has gone."""
        self._work = threading.Lock()
        self._batch_done = threading.Condition()
        self._imports_lock = threading.Lock()
        self._imports = self._waiting = 0
        self._wake = threading.Event()
        self._thread = None
        if self.index is not None:
            self.index.forget_helper()  # the parent's helper process: never ours to stop
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the parent's descriptor keeps the lock
            self._lock_fd = None

    def stop_thread(self) -> None:
        """Stop the thread after its current batch; the outbox keeps the rest."""
        self._stop = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ---------------------------------------------------------------------------- rebuilding

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Make the index again from SQLite; returns how many messages it indexed. Every message
        is first queued in the outbox, then the index starts empty and the outbox is applied, so
        an interrupted rebuild finishes when the store is next opened. Searches stay exact
        meanwhile (they scan what is not indexed yet)."""
        if self.index is None:
            raise IMError(ErrorCode.SERVICE_NOT_ENABLED, "this store was opened with search=False")
        if not self.owns():
            return self._rebuild_elsewhere(progress)
        with self._exclusive():
            done = self._start_over()
        self.wait(progress)
        if not self.background:
            with self._exclusive(), self._conn.guard():
                self.index.merge_if_fragmented()
        return done

    def _rebuild_elsewhere(self, progress: Callable[[int], None] | None) -> int:
        """Ask the process that indexes the store to rebuild its index (a mark in SQLite that
        its thread looks for), and wait until it has. Should that process go away meanwhile,
        this one takes over and rebuilds (`owns`)."""
        self._conn.execute(f"INSERT OR REPLACE INTO meta (key, value) VALUES ('{_STALE}', '1')")
        total = int(self._conn.one("SELECT count(*) FROM message")[0])
        while self._marked() and not self.owns():
            time.sleep(_COALESCE)
        self.wait(progress)
        return total

    def recover(self, exc: Exception) -> None:
        """After `search.SearchIndexError`: a damaged index starts again empty and every message
        is queued for it (the thread rebuilds it; without one, the next apply does); a failed
        write (a full disk) keeps its work in the outbox for the next apply."""
        damaged = getattr(exc, "damaged", True)
        log.warning("search index %s (%s)", "damaged; rebuilding it" if damaged else
                    "write failed; will retry", exc)
        if not damaged or self.index is None or not self.owns():
            return
        self._damage = exc
        if self.background and threading.current_thread() is not self._thread:
            self._wake.set()  # the caller may hold the writer lock: the thread rebuilds
            return
        self._rebuild_after_damage()

    def _marked(self) -> bool:
        return self._conn.one(f"SELECT 1 FROM meta WHERE key = '{_STALE}'") is not None

    def _rebuild_if_marked(self) -> bool:
        """Start the index again when the store says it must be: another process asked for a
        rebuild (`rebuild`), or an older version wrote the store with search off."""
        if self.index is None or not self._marked():
            return False
        with self._exclusive():
            log.info("the search index is marked stale; rebuilding it")
            self._start_over()
        return True

    def _start_over(self, *, reset: bool = True) -> int:
        """Every message queued for the index (and the rebuild mark cleared) in one
        transaction, then the index emptied; returns how many were queued. The one way a
        rebuild starts. In this order no search ever misses a message (it is in the index, the
        outbox, or both), and a crash before the reset leaves entries the next indexer replays
        over the old documents. The caller holds `_exclusive`."""
        assert self.index is not None
        with self._conn.tx() as db:
            done = self._enqueue_everything(db, _OP_ADD)
            db.execute_sql(f"DELETE FROM meta WHERE key = '{_STALE}'")
        if reset:
            with self._conn.guard():
                self.index.reset()
        return done

    def _rebuild_after_damage(self) -> None:
        assert self.index is not None
        with self._exclusive():
            if self._damage is None:
                return
            try:
                self._start_over()
            except Exception as again:  # whoosh or the file system: the next write retries
                log.warning("could not reset the search index (%r)", again)
            self._damage = None  # only now: a `wait` must not see neither damage nor work

    def doc_count(self) -> int:
        if self.index is None:
            return 0
        with self._exclusive():
            return int(self.index.doc_count())

    def close(self) -> None:
        """Stop the thread after its current batch (the outbox keeps what is not indexed; the
        next indexer goes on), close the index, and let go of the indexer lock."""
        self._closed = True
        try:
            self.stop_thread()
        finally:
            try:
                for index in (self._reader, self.index):
                    if index is not None:
                        index.close()
            finally:
                _LIVE.discard(self)
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None
