"""Answering keyword searches (`MessageStore.search_messages`).

Rules kept here:
- a search never waits for the indexer: rows whose index work is still pending (in the outbox,
  for this process's indexer thread or another process's) are scanned in SQLite (their kept
  folded text, table ``search_text``) and added, so
  results are exact and read-your-writes in every process (a store in memory, which has no
  thread, applies the outbox first); then it asks the index for
  candidates in time order and keeps only those whose stored text really contains every word
  (`text.matches` is the judge, the index only proposes);
- words the index cannot hold (emoji, symbols) are found by a scan of the stored payloads;
- the index's hits are collected once per search, in (time, row id) order, and paged through;
  one common word is answered by reading rows in time order instead, which finds ``limit`` hits
  sooner (several words go to the index: words common alone may seldom meet);
- pages are keyset pages on (sort time, row id), as `Reads.page`: a page anchored on a message
  holds the ``limit`` matches just before (or after) it, ties at one time included, so paging
  never loses messages that share a timestamp; the time bounds are filters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ..index import SearchIndexError
from ..kinds import searchable_text
from ..message import Message, MessageType, SearchScope
from ..text import (
    content_text,
    ext_text,
    indexable,
    matches,
    needles,
)
from ._connection import Connection, chunks, marks
from ._indexer import SearchWriter
from ._rows import MESSAGE_COLUMNS, SELECT_COLUMNS, row_to_message

__all__ = ["SCOPE_COLUMNS", "SCOPE_FIELDS", "TEXT_COLUMNS", "Query", "Searcher", "raw_texts"]

_MTYPE = {int(t): t for t in MessageType}
_DENSE_ROWS = 4000  # a search reads rows in time order when it expects hits within this many
SCOPE_FIELDS = {SearchScope.CONTENT: ("content",), SearchScope.EXT: ("ext",),
           SearchScope.ALL: ("content", "ext")}
SCOPE_COLUMNS = {SearchScope.CONTENT: ("body",), SearchScope.EXT: ("ext",),
            SearchScope.ALL: ("body", "ext")}
_SORT = MESSAGE_COLUMNS.index("sort_time")
TEXT_COLUMNS = {SearchScope.CONTENT: ("content",), SearchScope.EXT: ("ext",),
                 SearchScope.ALL: ("content", "ext")}


@dataclass(frozen=True, slots=True)
class Query:
    """A checked search: folded words and filters."""

    words: list[str]
    scope: SearchScope
    conv_id: str | None
    senders: list[str] | None
    types: list[int] | None
    start_time: int | None
    end_time: int | None
    newest_first: bool
    limit: int
    anchor: tuple[int, int] | None = None  # (sort_time, row id) of the page's start message

    def keeps(self, m: Message) -> bool:
        return ((self.senders is None or (m.sender or "") in self.senders)
                and (self.types is None or m.type in self.types))

    def add_people_and_types(self, where: list[str], params: list[Any]) -> None:
        """Add the sender and type conditions (and their parameters) to ``where``/``params``."""
        if self.senders is not None:
            where.append(f"sender IN ({marks(len(self.senders))})")
            params += self.senders
        if self.types is not None:
            where.append(f"type IN ({marks(len(self.types))})")
            params += self.types

    def row_filters(self, *, people_and_types: bool = False) -> tuple[list[str], list[Any]]:
        """SQL conditions (and their parameters) for the conversation, the time range and the
        page's anchor; with ``people_and_types``, the sender and type filters too (scans that
        leave them to `Searcher`'s own check do without)."""
        where: list[str] = ["recalled_at IS NULL"]
        params: list[Any] = []
        for cond, value in (("conv_id = ?", self.conv_id), ("sort_time >= ?", self.start_time),
                            ("sort_time <= ?", self.end_time)):
            if value is not None:
                where.append(cond)
                params.append(value)
        if self.anchor is not None:
            where.append(f"(sort_time, id) {'<' if self.newest_first else '>'} (?, ?)")
            params.extend(self.anchor)
        if people_and_types:
            self.add_people_and_types(where, params)
        return where, params

    def index_window(self) -> tuple[int | None, int | None]:
        """The time range to ask the index for: the filters, narrowed to the anchor's side
        (its own time included: ties are told apart by row id afterwards)."""
        lo, hi = self.start_time, self.end_time
        if self.anchor is not None:
            t = self.anchor[0]
            if self.newest_first:
                hi = t if hi is None else min(hi, t)
            else:
                lo = t if lo is None else max(lo, t)
        return lo, hi

    def before_anchor(self, key: tuple[int, int]) -> bool:
        """Whether a row's (sort_time, id) lies on the page's side of the anchor."""
        if self.anchor is None:
            return True
        return key < self.anchor if self.newest_first else key > self.anchor


def raw_texts(mtype: int, body: bytes, ext: bytes | None, scope: SearchScope) -> list[str]:
    """What search sees of a stored row, read straight from its payload (as `content_text` and
    `ext_text` would from the decoded message)."""
    out = []
    try:
        if scope != SearchScope.EXT:
            data = msgpack.unpackb(memoryview(body)[1:], raw=False, strict_map_key=False)
            out.append(searchable_text(_MTYPE.get(mtype, MessageType.TEXT), data))
        if scope != SearchScope.CONTENT and ext:
            out.append(ext_text(msgpack.unpackb(ext, raw=False, strict_map_key=False)))
    except Exception:  # a corrupt payload is simply not a hit here
        return []
    return out


def _text_matches(msg: Message, words: Sequence[str], scope: SearchScope,
                  judge: Callable[[Sequence[str], str], bool]) -> bool:
    if scope != SearchScope.EXT and judge(words, content_text(msg.type, msg.body)):
        return True
    return scope != SearchScope.CONTENT and judge(words, ext_text(msg.ext))


class Searcher:
    def __init__(self, conn: Connection, indexer: SearchWriter) -> None:
        self._conn = conn
        self._indexer = indexer

    def search_any(self, queries: Sequence[Query]) -> list[Message]:
        """Messages matching any of ``queries`` (one per keyword group, the same filters and
        page): each answers its own page, and the page of their union is within theirs."""
        if len(queries) == 1:
            return self.search(queries[0])
        q0 = queries[0]
        found = {m.msg_id: m for q in queries for m in self.search(q)}
        keys: dict[tuple[int, int], Message] = {}
        ids = list(found)
        for part in chunks(ids):
            for msg_id, sort, rid in self._conn.query(
                    f"SELECT msg_id, sort_time, id FROM message WHERE msg_id IN "
                    f"({marks(len(part))})", tuple(part)):
                keys[(sort, rid)] = found[msg_id]
        page = sorted(keys, reverse=q0.newest_first)[:q0.limit]
        return [keys[k] for k in sorted(page)]

    def search(self, q: Query) -> list[Message]:
        # The indexer's lock rule: take-over and catch-up before the writer lock, and a
        # damaged index reported after it is released.
        self._indexer.before_search()
        damage: SearchIndexError | None = None
        with self._conn.lock:
            try:
                return self._search(q)
            except SearchIndexError:
                # A reader can meet a merge that removed files it had not opened yet: the same
                # search on a reader opened again tells that race from damage.
                self._indexer.reopen_reader()
            try:
                return self._search(q)
            except SearchIndexError as exc:
                # A damaged index (or a write that failed, e.g. on a full disk): this search
                # answers by reading the rows; the indexer rebuilds, or retries its work later.
                damage = exc
                found = self._read_all(q)
        assert damage is not None
        self._indexer.recover(damage)
        return found

    def _search(self, q: Query) -> list[Message]:
        fields = SCOPE_FIELDS[q.scope]
        with self._conn.lock:
            index = self._indexer.reader
            assert index is not None
            if not index.available:  # another process is (re)building it
                return self._read_all(q)
            # Rows not indexed yet are scanned first, then the index is read: a row that
            # leaves the outbox in between was committed to the index before, so it is found.
            pending = self._kept(q) if self._indexer.has_pending() else []
            scan = not all(indexable(w) for w in q.words)  # emoji, symbols: not in the index
            # Rows are read in time order only for one common word: words common alone may seldom
            # meet (an English and a Chinese one), and the index's hits, collected once, are
            # cheap to page through
            if not scan and len(q.words) == 1 and \
                    index.is_common(q.words, fields, q.limit, _DENSE_ROWS):
                dense = self._dense(q)
                if dense is not None:
                    return [m for _, m in sorted(dense, key=lambda h: h[0])]
            hits = self._gather(q, scan)
        if pending:
            seen = {key for key, _ in hits}
            hits += [h for h in pending if h[0] not in seen]
        hits.sort(key=lambda h: h[0], reverse=q.newest_first)
        return [m for _, m in sorted(hits[:q.limit], key=lambda h: h[0])]

    def _gather(self, q: Query, scan: bool) -> list[tuple[tuple[int, int], Message]]:
        """Matches in time order until ``limit`` are found and every tie at the time of the last
        one is in. The index's hits are collected once and paged through here, a widening
        window at a time (only the rows are read per window)."""
        index = self._indexer.reader
        assert index is not None
        if scan:
            return self._gather_scan(q)
        start_time, end_time = q.index_window()
        with self._conn.guard():
            keys = index.hits(q.words, SCOPE_FIELDS[q.scope], conv_id=q.conv_id,
                              start_time=start_time, end_time=end_time)
        if q.newest_first:
            keys.reverse()
        if q.anchor is not None:
            keys = [k for k in keys if q.before_anchor(k)]
        hits: list[tuple[tuple[int, int], Message]] = []
        skip, window = 0, q.limit * 2 + 10
        while skip < len(keys):
            found, _ = self._verified([rid for _, rid in keys[skip:skip + window]], q)
            hits.extend(h for h in found if q.keeps(h[1]))
            if len(hits) >= q.limit:
                return hits  # the index's order is the rows' order (a moved row is pending)
            skip += window
            window *= 2
        return hits

    def _gather_scan(self, q: Query) -> list[tuple[tuple[int, int], Message]]:
        """`_gather` for words the index cannot hold: rows found by `_scan`, a window at a
        time, until ``limit`` match and every tie at the time of the last one is in."""
        hits: list[tuple[tuple[int, int], Message]] = []
        skip, window = 0, q.limit * 2 + 10
        while True:
            with self._conn.guard():
                ids, more = self._scan(q, window, skip)
            found, last = self._verified(ids, q)
            hits.extend(h for h in found if q.keeps(h[1]))
            if not more:
                return hits
            if len(hits) >= q.limit and last is not None:
                ordered = sorted(hits, key=lambda h: h[0], reverse=q.newest_first)
                edge = ordered[q.limit - 1][0][0]
                if (last < edge) if q.newest_first else (last > edge):
                    return hits
            skip += window
            window *= 2

    def _dense(self, q: Query) -> list[tuple[tuple[int, int], Message]] | None:
        """The newest (or oldest) ``limit`` matches by reading rows in (time, row id) order, or
        None when that took more than its budget of rows (the words were not as common as
        estimated). Rows are matched on their raw payload; only hits become `Message`s."""
        where, params = q.row_filters(people_and_types=True)
        order, cmp = ("DESC", "<") if q.newest_first else ("ASC", ">")
        hits: list[int] = []
        scanned = 0
        after: tuple[int, int] | None = None
        while len(hits) < q.limit:
            if scanned >= _DENSE_ROWS * 3 // 2:
                return None
            cond = where + ([f"(sort_time, id) {cmp} (?, ?)"] if after else [])
            rows = self._conn.query("SELECT id, sort_time, type, CAST(body AS BLOB), "
                                    "CAST(ext AS BLOB) FROM message "
                                    f"{'WHERE ' + ' AND '.join(cond) if cond else ''} "
                                    f"ORDER BY sort_time {order}, id {order} LIMIT 500",
                                    (*params, *(after or ())))
            for rid, _sort, mtype, body, ext in rows:
                if any(matches(q.words, t) for t in raw_texts(mtype, body, ext, q.scope)):
                    hits.append(rid)
                    if len(hits) == q.limit:
                        break
            scanned += len(rows)
            if len(rows) < 500:
                break
            after = (rows[-1][1], rows[-1][0])
        return self._verified(hits, q)[0]

    def _read_all(self, q: Query) -> list[Message]:
        """Every match, without the index: rows in time order (those holding each word's
        `text.needles`, when it has some), judged by `text.matches` on their payloads."""
        return [m for _, m in sorted(self._read_hits(q), key=lambda h: h[0])]

    def _read_hits(self, q: Query) -> list[tuple[tuple[int, int], Message]]:
        """`_read_all`'s matches with their (sort_time, id) keys."""
        where, params = q.row_filters()
        cols = SCOPE_COLUMNS[q.scope]
        for w in q.words:
            for needle in needles(w):
                where.append("(" + " OR ".join(f"instr({c}, ?) > 0" for c in cols) + ")")
                params += [needle.encode("utf-8")] * len(cols)
        q.add_people_and_types(where, params)
        order = "DESC" if q.newest_first else "ASC"
        hits: list[int] = []
        with self._conn.guard():
            for rid, mtype, body, ext in self._conn.run(
                    "SELECT id, type, CAST(body AS BLOB), CAST(ext AS BLOB) FROM message "
                    f"WHERE {' AND '.join(where)} "
                    f"ORDER BY sort_time {order}, id {order}", params):
                if any(matches(q.words, t) for t in raw_texts(mtype, body, ext, q.scope)):
                    hits.append(rid)
                    if len(hits) == q.limit:
                        break
            found, _ = self._verified(hits, q)
        return found

    def _kept(self, q: Query) -> list[tuple[tuple[int, int], Message]]:
        """Matches among the rows not in the index yet: every searchable pending row keeps its
        folded text (`Outbox`), where each word must stand (SQL ``instr``, no payload decoded);
        then `text.matches` judges the stored message, a window at a time until ``limit``."""
        cols = TEXT_COLUMNS[q.scope]
        cond = " AND ".join("(" + " OR ".join(f"instr({c}, ?) > 0" for c in cols) + ")"
                            for _ in q.words)
        where, params = q.row_filters(people_and_types=True)
        order = "DESC" if q.newest_first else "ASC"
        ids = [r[0] for r in self._conn.query(
            f"SELECT id FROM message WHERE id IN (SELECT id FROM search_text WHERE {cond}) AND "
            f"{' AND '.join(where)} ORDER BY sort_time {order}, id {order}",
            (*[w for w in q.words for _ in cols], *params))]
        hits: list[tuple[tuple[int, int], Message]] = []
        window = q.limit * 2 + 10
        for i in range(0, len(ids), window):
            hits += self._verified(ids[i:i + window], q)[0]
            if len(hits) >= q.limit:
                break
        return hits

    def _scan(self, q: Query, limit: int, skip: int) -> tuple[list[int], bool]:
        """Candidates for words the index cannot hold (emoji, symbols): rows whose stored
        payload contains their bytes, in time order. A table scan, for these rare queries."""
        where, params = q.row_filters()
        cols = SCOPE_COLUMNS[q.scope]
        for w in q.words:
            where.append("(" + " OR ".join(f"instr({c}, ?) > 0" for c in cols) + ")")
            params += [w.encode("utf-8")] * len(cols)
        order = "DESC" if q.newest_first else "ASC"
        rows = self._conn.query(f"SELECT id FROM message WHERE {' AND '.join(where)} "
                                f"ORDER BY sort_time {order}, id {order} LIMIT ? OFFSET ?",
                                (*params, limit + 1, skip))
        return [r[0] for r in rows[:limit]], len(rows) > limit

    def _verified(self, ids: list[int], q: Query
                  ) -> tuple[list[tuple[tuple[int, int], Message]], int | None]:
        """The candidates that really match, on the page's side of its anchor, with their
        (sort_time, id) keys; and the sort time of the last candidate row (None: none)."""
        rows: dict[int, Any] = {}
        for part in chunks(ids):
            for r in self._conn.query(f"SELECT {SELECT_COLUMNS} FROM message WHERE id IN "
                                      f"({marks(len(part))})", tuple(part)):
                rows[r[0]] = r
        out = []
        last: int | None = None
        for rid in dict.fromkeys(ids):
            r = rows.get(rid)
            if r is None:
                continue
            key = (r[_SORT], r[0])
            last = key[0]
            if not q.before_anchor(key):
                continue
            msg = row_to_message(r)
            if msg.recalled_at is None and _text_matches(msg, q.words, q.scope, matches):
                out.append((key, msg))
        return out, last
