"""The search outbox and its indexer, as one object (Seshat's ``Writer``).

Rules kept here:
- every message change enqueues its index work in table ``search_outbox`` inside the write
  transaction that changes the message (`enqueue`, `enqueue_deletes`);
- the outbox is applied to the index in batches, one index commit each, and an entry leaves the
  outbox only after that commit (`apply`); what a crash left is applied on open (`replay`), and
  while replaying every entry replaces its document, since the crash may have left it indexed;
- one flush policy (`settle`): single writes leave their work queued for the next search (which
  applies the outbox first, so it is exact) or the next batch; a batch of received or history
  messages is applied at once; a bulk import hands the index large batches and leaves the rest to
  its end (`finish_bulk`);
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

import fcntl
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..codec import decode_body, decode_ext
from ..errors import ErrorCode, IMError
from ..message import MessageType
from ..text import content_text, ext_text
from ._connection import Connection, chunks, marks

if TYPE_CHECKING:
    from ..search import Doc, SearchIndex

__all__ = ["IndexStatus", "SearchWriter"]

log = logging.getLogger("imstore.store")

_OP_INDEX, _OP_DELETE, _OP_ADD = 1, 2, 3  # ADD: a row id the index has never held
_INDEX_BATCH = 50_000  # outbox entries per index commit, at most
_BULK_BATCH = 20_000  # a bulk import applies the outbox once this much is pending
LOCK_FILE = "search.lock"  # in the store directory; held by the process that indexes


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


class SearchWriter:
    """Feeds the keyword index from the outbox. ``index`` is None for a store opened with
    ``search=False``: then writes enqueue nothing and the store is marked stale, so that the next
    open with search rebuilds the index."""

    def __init__(self, conn: Connection, index: SearchIndex | None,
                 directory: str | None = None) -> None:
        self._conn = conn
        self.index = index
        self._directory = directory
        self._lock_fd: int | None = None
        self._replaying = True  # until `replay` has run: every entry replaces its document
        self._high = 0  # row ids above this were never handed to the index
        self._rate: tuple[int, float] = (0, 0.0)  # entries applied, seconds spent (recent)

    @classmethod
    def open(cls, conn: Connection, directory: str | None, *, search: bool) -> SearchWriter:
        """The writer of a store just opened: the index loaded (or rebuilt), the outbox replayed
        (when this process holds the indexer lock; else the index opened for reading)."""
        if not search:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('index_stale', '1')")
            return cls(conn, None)
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
        damaged or stale) and the outbox replayed."""
        from ..search import SearchIndex

        assert self._directory is not None
        old = self.index
        try:
            index = SearchIndex(os.path.join(self._directory, "search"))
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        self.index = index
        if old is not None:
            old.close()
        conn = self._conn
        stale = conn.one("SELECT 1 FROM meta WHERE key = 'index_stale'") is not None
        if index.rebuilt or stale:
            if stale and not index.rebuilt:
                log.info("the store was used without search; rebuilding its index")
                index.reset()
            with conn.tx() as db:
                self._enqueue_everything(db, _OP_INDEX)
                db.execute_sql("DELETE FROM meta WHERE key = 'index_stale'")
        self.replay()

    def owns(self) -> bool:
        """Whether this process is the indexer: it holds the lock, or takes it now (the holder
        went away). A store in memory is always its own indexer."""
        if self.index is None:
            return False
        if self._directory is None or self._lock_fd is not None:
            return True
        with self._conn.lock:
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

    def _max_rowid(self) -> int:
        return int(self._conn.one("SELECT coalesce(max(id), 0) FROM message")[0])

    @property
    def enabled(self) -> bool:
        return self.index is not None

    # ---------------------------------------------------------------- in the write transaction

    def enqueue(self, rowids: Sequence[int]) -> None:
        """Index (or re-index) these rows once the transaction commits."""
        if self.index is None or not rowids:
            return
        op = _OP_ADD if min(rowids) > self._high else _OP_INDEX
        self._conn.run_many("INSERT INTO search_outbox (rowid, op) VALUES (?, ?)",
                            [(r, op) for r in rowids])
        self._high = max(self._high, max(rowids))

    def enqueue_deletes(self, where: str, params: Sequence[Any]) -> None:
        """Remove the documents of the message rows matching ``where`` (before they are deleted)."""
        if self.index is not None:
            self._conn.run(f"INSERT INTO search_outbox (rowid, op) SELECT id, {_OP_DELETE} "
                           f"FROM message WHERE {where}", params)

    def _enqueue_everything(self, db: Any, op: int) -> int:
        db.execute_sql("DELETE FROM search_outbox")
        db.execute_sql(f"INSERT INTO search_outbox (rowid, op) SELECT id, {op} FROM message "
                       "ORDER BY id")
        return int(db.execute_sql("SELECT count(*) FROM search_outbox").fetchone()[0])

    # ------------------------------------------------------------------------------ applying

    def replay(self) -> None:
        """Apply what an earlier process left in the outbox (on open)."""
        self._replaying = True
        try:
            self.apply()
        finally:
            self._replaying = False
        self._high = self._max_rowid()

    def settle(self, *, bulk: bool = False) -> None:
        """The flush policy, after a write: apply now, or (``bulk``) once enough is pending."""
        if self.index is None:
            return
        if not bulk:
            self.apply()
        elif self.pending() >= _BULK_BATCH:
            self.finish_bulk()

    def finish_bulk(self) -> None:
        """Apply everything pending in large batches, then merge segments if too many."""
        if self.index is None or not self.owns():
            return
        with self._conn.lock:
            self.apply(merge=False)
            with self._conn.guard():
                self.index.merge_if_fragmented()

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

    def apply(self, merge: bool = True, progress: Callable[[int], None] | None = None) -> None:
        """Apply the outbox to the index, a batch (one index commit) at a time. ``merge=False``
        leaves segment merging to a later commit; ``progress`` hears how many were applied.
        A process that is not the indexer leaves the outbox to the one that is."""
        if self.index is None or not self.owns():
            return
        applied = 0
        conn = self._conn
        with conn.lock, conn.guard():
            while True:
                rows = conn.run("SELECT id, rowid, op FROM search_outbox ORDER BY id LIMIT ?",
                                (_INDEX_BATCH,)).fetchall()
                if not rows:
                    return
                ops: dict[int, int] = {}
                for _, rid, op in rows:
                    # a row id seen before in this batch (deleted, then used again by
                    # another process) may still have a document: replace it
                    ops[rid] = _OP_INDEX if op == _OP_ADD and rid in ops else op
                started = time.perf_counter()
                self._apply_batch(ops, merge)
                with conn.db.atomic():
                    conn.run("DELETE FROM search_outbox WHERE id <= ?", (rows[-1][0],))
                done, spent = self._rate
                if done > 200_000:  # keep the speed recent
                    done, spent = done // 2, spent / 2
                self._rate = (done + len(rows), spent + time.perf_counter() - started)
                applied += len(rows)
                if progress:
                    progress(applied)
                if len(rows) < _INDEX_BATCH:
                    return

    def _apply_batch(self, ops: dict[int, int], merge: bool) -> None:
        assert self.index is not None
        docs = self._docs([rid for rid, op in ops.items() if op != _OP_DELETE])
        found = {d.rowid for d in docs}
        deletes = [rid for rid, op in ops.items() if op == _OP_DELETE or rid not in found]
        replace_all = self._replaying  # a crash may have left these documents indexed already
        new = [d for d in docs if ops[d.rowid] == _OP_ADD and not replace_all]
        upserts = [d for d in docs if ops[d.rowid] == _OP_INDEX or replace_all]
        self.index.apply(upserts, deletes, new=new, merge=merge)

    def _docs(self, rowids: Sequence[int]) -> list[Doc]:
        from ..search import Doc

        docs = []
        for part in chunks(rowids):
            for rid, sort, conv, sender, mtype, body, ext in self._conn.run(
                    "SELECT id, sort_time, conv_id, sender, type, body, ext FROM message "
                    f"WHERE id IN ({marks(len(part))}) AND recalled_at IS NULL",
                    tuple(part)).fetchall():
                try:
                    t = MessageType(mtype)
                    content = content_text(t, decode_body(t, body))
                    extt = ext_text(decode_ext(ext))
                except (IMError, ValueError):
                    log.warning("message row %s has a corrupt payload; not indexed", rid)
                    continue
                docs.append(Doc(rid, sort, conv, sender, mtype, content, extt))
        return docs

    # ---------------------------------------------------------------------------- rebuilding

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Make the index again from SQLite; returns how many messages it indexed. Every message
        is first queued in the outbox, then the index starts empty and the outbox is applied, so
        an interrupted rebuild finishes when the store is next opened."""
        if self.index is None:
            raise IMError(ErrorCode.SERVICE_NOT_ENABLED, "this store was opened with search=False")
        if not self.owns():
            raise IMError(ErrorCode.DATABASE_ERROR,
                          "another process is indexing this store; rebuild the index there or "
                          "once it has closed the store")
        with self._conn.lock:
            with self._conn.tx() as db:
                done = self._enqueue_everything(db, _OP_ADD)
            with self._conn.guard():
                self.index.reset()
            self.apply(merge=False, progress=progress)
            with self._conn.guard():
                self.index.merge_if_fragmented()
        return done

    def recover(self, exc: Exception) -> None:
        """After `search.SearchIndexError`: a damaged index starts again empty and every message
        is queued for it (the next apply rebuilds it); a failed write (a full disk) keeps its
        work in the outbox for the next apply."""
        damaged = getattr(exc, "damaged", True)
        log.warning("search index %s (%s)", "damaged; rebuilding it" if damaged else
                    "write failed; will retry", exc)
        if not damaged or self.index is None or not self.owns():
            return
        with self._conn.lock:
            try:
                self.index.reset()
            except Exception as again:
                log.warning("could not reset the search index (%r)", again)
                return
            with self._conn.tx() as db:
                self._enqueue_everything(db, _OP_ADD)

    def doc_count(self) -> int:
        return 0 if self.index is None else int(self.index.doc_count())

    def close(self) -> None:
        """Apply pending work (when this process is the indexer), close the index, and let go
        of the indexer lock."""
        try:
            if self._lock_fd is not None or self._directory is None:
                self.apply()
        finally:
            try:
                if self.index is not None:
                    self.index.close()
            finally:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None

