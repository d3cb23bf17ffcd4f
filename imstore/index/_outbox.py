"""The search outbox: index work written with each message change (Seshat's outbox).

Rules kept here:
- every message change enqueues its index work in table ``search_outbox`` inside the write
  transaction that changes the message (`enqueue`, `enqueue_deletes`), so the index can never
  miss a committed change; an entry leaves the outbox only after the index commit that applied
  it (`remove_through`, called by the indexer), oldest first;
- an entry is ``(rowid, op)``: INDEX (replace the row's document), DELETE, or ADD (a row id the
  index has never held: no look-up for an older document); the op is read through `OP_MASK`
  (outboxes written by earlier versions may carry a flag bit above it, now meaningless: pending
  rows are searched through their kept texts);
- only rows this process has just inserted above every row id it has handed over before may be
  ADDs (`high`): a row another process inserted lies above this process's mark too, and may be
  indexed already; entries an earlier process may have applied before it crashed are replayed
  as INDEX (`replay_until`);
- each pending row's folded text (what scopes CONTENT and EXT see, through `text.fold`) is kept
  beside its entry in table ``search_text``, written in the same transaction (for the new rows
  of an insert or import, folded from the messages in hand: what is stored is their encoding,
  which decodes to the same values; for any other change, read back from the row as stored,
  `keep_texts`): a search scans
  that narrow table for the rows the index does not hold yet instead of decoding their payloads
  (exactness is still judged by `text.matches` on the stored message); the text leaves with the
  row's last entry. Rows pending without a text (written before this table existed, or deletes)
  are scanned from their payloads as before;
- writes queue work when this process indexes, or, with search off here, when the store has an
  index on disk that another process (or a later open) keeps; a store never indexed queues
  nothing and gets its index built whole on the first open with search.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..codec import decode_body, decode_ext
from ..errors import IMError
from ..message import Message, MessageType
from ..text import content_text, ext_text, fold
from ._format import Doc

__all__ = ["OP_ADD", "OP_DELETE", "OP_INDEX", "Folder", "Outbox", "fold_rows", "folded_texts"]

log = logging.getLogger("imstore.store")

OP_INDEX, OP_DELETE, OP_ADD = 1, 2, 3
OP_MASK = 7  # earlier versions wrote a flag (8) above the op


# a row's payload as bytes, whatever type a damaged row's column holds (it then fails to decode)
_PAYLOAD = "id, type, CAST(body AS BLOB), CAST(ext AS BLOB)"
TEXT_TABLE = ("CREATE TABLE IF NOT EXISTS search_text (id INTEGER PRIMARY KEY, content TEXT NOT "
              "NULL, ext TEXT NOT NULL)")


def _texts(mtype: MessageType, body: Any, ext: Any) -> tuple[str, str]:
    """What scopes CONTENT and EXT see of a message, folded."""
    return fold(content_text(mtype, body)), fold(ext_text(ext))


def folded_texts(mtype: int, body: bytes, ext: bytes | None) -> tuple[str, str] | None:
    """What scopes CONTENT and EXT see of a stored row, folded; None when its payload cannot
    be read (such a row is never a hit, and has no document)."""
    try:
        t = MessageType(mtype)
        return _texts(t, decode_body(t, body), decode_ext(ext))
    except (IMError, ValueError):
        return None


Folder = Callable[[Sequence[tuple[int, bytes, bytes | None]]], list[tuple[str, str] | None]]


def fold_rows(rows: Sequence[tuple[int, bytes, bytes | None]]) -> list[tuple[str, str] | None]:
    """`folded_texts` of each (type, body, ext)."""
    return [folded_texts(*r) for r in rows]


def _text_rows(rows: Sequence[Any], fold_many: Folder = fold_rows) -> list[tuple[int, str, str]]:
    texts = fold_many([(mtype, body, ext) for _, mtype, body, ext in rows])
    return [(row[0], *t) for row, t in zip(rows, texts, strict=True) if t is not None]


class Outbox:
    """The ``search_outbox`` table of one store. ``conn`` is the store's `Connection`;
    ``index_dir`` is where the store's index lives on disk (None in memory)."""

    def __init__(self, conn: Any, index_dir: str | None, *, indexing: bool) -> None:
        self._conn = conn
        self._index_dir = index_dir
        self.indexing = indexing  # this process keeps an index (search on)
        self.high = self.max_rowid()  # row ids above this were never handed to the index
        self.replay_until = 0  # entries up to this id may be applied already: replace them
        conn.execute(TEXT_TABLE)
        if indexing:
            self._backfill()

    def _backfill(self) -> None:
        """Keep the texts of pending rows that have none (queued by an imstore from before the
        table): every searchable pending row has its text, so searches need no payload."""
        missing = [r[0] for r in self._conn.query(
            f"SELECT DISTINCT rowid FROM search_outbox o WHERE (op & {OP_MASK}) != {OP_DELETE} "
            "AND NOT EXISTS (SELECT 1 FROM search_text t WHERE t.id = o.rowid)")]
        for i in range(0, len(missing), 5000):
            with self._conn.tx():
                self.keep_texts(missing[i:i + 5000])

    # ------------------------------------------------------------- in the write transaction

    def enqueue(self, rowids: Sequence[int], *, new: bool = False,
                messages: Sequence[Message] | None = None) -> None:
        """Index (or re-index) these rows once the transaction commits. ``messages``: what was
        just written at ``rowids`` (new rows, one each, in order), whose texts are folded from
        the values in hand instead of decoding the rows again."""
        if not rowids or not self.feeds():
            return
        op = OP_ADD if new and min(rowids) > self.high else OP_INDEX
        self._conn.run_many("INSERT INTO search_outbox (rowid, op) VALUES (?, ?)",
                            [(r, op) for r in rowids])
        self.high = max(self.high, max(rowids))
        if messages is None:
            self.keep_texts(rowids)
        else:  # a recalled message is never a hit: no text
            self._write_texts(rowids, [(rid, *_texts(m.type, m.body, m.ext)) for rid, m in
                                       zip(rowids, messages, strict=True)
                                       if m.recalled_at is None])

    def keep_texts(self, rowids: Sequence[int]) -> None:
        """The folded texts of these rows, beside their entries (read back in the caller's
        transaction: the row as stored is what a search judges)."""
        lo, hi = min(rowids), max(rowids)
        if hi - lo + 1 == len(rowids) == len(set(rowids)):  # new rows: one range
            rows = self._conn.run(
                f"SELECT {_PAYLOAD} FROM message WHERE id BETWEEN ? AND ? AND recalled_at IS "
                "NULL", (lo, hi)).fetchall()
        else:
            rows = []
            for i in range(0, len(rowids), 500):
                part = list(rowids[i:i + 500])
                rows += self._conn.run(
                    f"SELECT {_PAYLOAD} FROM message WHERE id IN "
                    f"({','.join('?' * len(part))}) AND recalled_at IS NULL", part).fetchall()
        self._write_texts(rowids, _text_rows(rows))

    def _write_texts(self, rowids: Sequence[int], kept: list[tuple[int, str, str]]) -> None:
        """Keep the texts ``kept`` (row id, content, ext) and drop any older text of the other
        rows among ``rowids`` (recalled or unreadable now). A kept text replaces an older one:
        a row id is used again after the newest message is deleted, and a deleted row's text
        stays until its entry leaves."""
        self._conn.run_many("INSERT OR REPLACE INTO search_text (id, content, ext) VALUES "
                            "(?, ?, ?)", kept)
        if len(kept) < len(rowids):
            have = {k[0] for k in kept}
            self._conn.run_many("DELETE FROM search_text WHERE id = ?",
                                [(r,) for r in set(rowids) if r not in have])

    def enqueue_deletes(self, where: str, params: Sequence[Any]) -> None:
        """Remove the documents of the message rows matching ``where`` (before they go)."""
        if self.feeds():
            self._conn.run(f"INSERT INTO search_outbox (rowid, op) SELECT id, {OP_DELETE} "
                           f"FROM message WHERE {where}", params)

    def feeds(self) -> bool:
        if self.indexing:
            return True
        return self._index_dir is not None and os.path.isdir(self._index_dir)

    def enqueue_everything(self, db: Any, fold_many: Folder = fold_rows) -> int:
        """Queue every message as an ADD, with its kept text (a rebuild, inside the caller's
        transaction; ``fold_many`` folds the texts of many rows, perhaps in two processes);
        returns how many."""
        db.execute_sql("DELETE FROM search_outbox")
        db.execute_sql("DELETE FROM search_text")
        self.replay_until = 0
        rows = db.execute_sql("SELECT id, type, CAST(body AS BLOB), CAST(ext AS BLOB), "
                              "recalled_at FROM message ORDER BY id")
        done = 0
        while part := rows.fetchmany(10_000):
            db.cursor().executemany("INSERT INTO search_outbox (rowid, op) VALUES (?, ?)",
                                    [(rid, OP_ADD) for rid, *_ in part])
            db.cursor().executemany(
                "INSERT INTO search_text (id, content, ext) VALUES (?, ?, ?)",
                _text_rows([(rid, t, b, e) for rid, t, b, e, r in part if r is None], fold_many))
            done += len(part)
        return done

    # ------------------------------------------------------------------- for the indexer

    def max_rowid(self) -> int:
        return int(self._conn.one("SELECT coalesce(max(id), 0) FROM message")[0])

    def last_id(self) -> int:
        return int(self._conn.one("SELECT coalesce(max(id), 0) FROM search_outbox")[0])

    def first_id(self) -> int | None:
        row = self._conn.one("SELECT min(id) FROM search_outbox")
        return None if row is None or row[0] is None else int(row[0])

    def pending(self) -> int:
        return int(self._conn.one("SELECT count(*) FROM search_outbox")[0])

    def has_pending(self) -> bool:
        return self._conn.one("SELECT 1 FROM search_outbox LIMIT 1") is not None

    def position(self) -> tuple[int | None, int]:
        """Where the outbox stands now: (its first entry id or None, its last entry id)."""
        row = self._conn.one("SELECT min(id), coalesce(max(id), 0) FROM search_outbox")
        return (None if row[0] is None else int(row[0])), int(row[1])

    def past(self, position: tuple[int | None, int]) -> bool:
        """Whether every entry the outbox held at ``position`` has left it (entries leave
        oldest first; ids start again from 1 once the outbox has been empty)."""
        first0, last0 = position
        if first0 is None:
            return True
        first = self.first_id()
        return first is None or first > last0 or first < first0

    def replay_all(self) -> None:
        """Everything in the outbox now may have been applied by a process that crashed."""
        self.replay_until = self.last_id()

    def next_batch(self, size: int) -> tuple[int, int, dict[int, int]]:
        """The oldest ``size`` entries: the id of the last one (0: none), their number, and
        the op for each
        row id (the last entry of a row wins; an ADD that may have a document already, from a
        crashed process or earlier in this batch, becomes an INDEX)."""
        rows = self._conn.query("SELECT id, rowid, op FROM search_outbox ORDER BY id LIMIT ?",
                                (size,))
        ops: dict[int, int] = {}
        for oid, rid, flagged in rows:
            op = flagged & OP_MASK
            if op == OP_ADD and (rid in ops or oid <= self.replay_until):
                op = OP_INDEX
            ops[rid] = op
        return (rows[-1][0] if rows else 0), len(rows), ops

    def remove_through(self, last: int, rowids: Sequence[int]) -> None:
        """The entries up to ``last`` (of rows ``rowids``) are in the index: they leave the
        outbox, and so do the texts of rows with no entry left (one scan of the later entries
        in the batch's row range; the texts go by ranges of row ids)."""
        with self._conn.tx():
            self._conn.run("DELETE FROM search_outbox WHERE id <= ?", (last,))
            if not rowids:
                return
            later = {r for (r,) in self._conn.run(
                "SELECT rowid FROM search_outbox WHERE rowid BETWEEN ? AND ?",
                (min(rowids), max(rowids)))}
            self._conn.run_many("DELETE FROM search_text WHERE id BETWEEN ? AND ?",
                                _ranges(sorted(set(rowids) - later)))

    def docs(self, last: int, ops: dict[int, int]) -> list[Doc]:
        """The documents of the batch ending at entry ``last``: its rows that are neither
        deleted nor recalled, from their kept folded texts (`text.fold` is idempotent, so the
        index folds them to the same terms); a row without one is decoded, and left out (and
        logged) when its payload cannot be read."""
        docs = []
        for rid, sort, conv, sender, mtype, content, extt, body, ext in self._conn.query(
                "SELECT m.id, m.sort_time, m.conv_id, m.sender, m.type, t.content, t.ext, "
                "CASE WHEN t.id IS NULL THEN CAST(m.body AS BLOB) END, "
                "CASE WHEN t.id IS NULL THEN CAST(m.ext AS BLOB) END "
                "FROM message m LEFT JOIN search_text t ON t.id = m.id WHERE m.id IN "
                f"(SELECT rowid FROM search_outbox WHERE id <= ? AND op & {OP_MASK} != "
                f"{OP_DELETE}) AND m.recalled_at IS NULL", (last,)):
            if ops.get(rid, OP_DELETE) == OP_DELETE:
                continue
            if content is None:
                texts = folded_texts(mtype, body, ext)
                if texts is None:
                    log.warning("message row %s has a corrupt payload; not indexed", rid)
                    continue
                content, extt = texts
            docs.append(Doc(rid, sort, conv, sender, mtype, content, extt))
        return docs


def _ranges(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted ids as (first, last) runs of consecutive ids."""
    out: list[tuple[int, int]] = []
    for i in ids:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out
