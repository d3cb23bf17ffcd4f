"""The store's keyword search: applying the search outbox to the index, rebuilding it, and
answering `MessageStore.search_messages`.

Rules kept here:
- the outbox is applied in batches, one index commit each, and emptied only after that commit;
- a search first applies pending work (read-your-writes), then asks the index for candidates in
  time order and keeps only those whose stored text really contains every word;
- whoosh itself stays in `search` (imported lazily, so a store opened with ``search=False`` never
  loads it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgpack

from .codec import decode_body, decode_ext
from .errors import ErrorCode, IMError
from .message import Direction, Message, MessageType, SearchScope
from .rows import (
    _COLS,
    _INDEX_BATCH,
    _OP_ADD,
    _OP_DELETE,
    _OP_INDEX,
    StoreBase,
    _as_types,
    _check_direction,
    _check_limit,
    _chunks,
    _marks,
    row_to_message,
)
from .text import content_text, ext_text

__all__ = ["SearchMixin"]

log = logging.getLogger("imstore.store")


_DENSE_ROWS = 4000  # a search reads rows in time order when it expects hits within this many


_TEXT_KEYS = {int(MessageType.TEXT): ("text",), int(MessageType.LOCATION): ("address",
                                                                          "building_name"),
              int(MessageType.CUSTOM): ("event",)}


def _raw_texts(mtype: int, body: bytes, ext: bytes | None, scope: SearchScope) -> list[str]:
    """What search sees of a stored row, read straight from its payload (as `content_text` and
    `ext_text` would from the decoded message)."""
    out = []
    try:
        if scope != SearchScope.EXT:
            data = msgpack.unpackb(memoryview(body)[1:], raw=False, strict_map_key=False)
            keys = _TEXT_KEYS.get(mtype, ("display_name",))
            out.append("\n".join(str(data.get(k, "")) for k in keys))
        if scope != SearchScope.CONTENT and ext:
            out.append(ext_text(msgpack.unpackb(ext, raw=False, strict_map_key=False)))
    except Exception:  # a corrupt payload is simply not a hit here
        return []
    return out


def _row_filters(conv_id: str | None, start_time: int | None,
                 end_time: int | None) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) for a conversation and a time range."""
    where: list[str] = []
    params: list[Any] = []
    for cond, value in (("conv_id = ?", conv_id), ("sort_time >= ?", start_time),
                        ("sort_time <= ?", end_time)):
        if value is not None:
            where.append(cond)
            params.append(value)
    return where, params


def _text_matches(msg: Message, words: Sequence[str], scope: SearchScope,
                  matches: Callable[[Sequence[str], str], bool]) -> bool:
    if scope != SearchScope.EXT and matches(words, content_text(msg.type, msg.body)):
        return True
    return scope != SearchScope.CONTENT and matches(words, ext_text(msg.ext))


class SearchMixin(StoreBase):
    """Keyword search for `MessageStore`."""

    def _flush_index(self, merge: bool = True,
                     progress: Callable[[int], None] | None = None) -> None:
        """Apply the search outbox to the index, a batch (one index commit) at a time.
        ``merge=False`` leaves segment merging to a later commit (bulk imports); ``progress``
        hears how many entries have been applied."""
        if self._index is None:
            return
        applied = 0
        with self._lock, self._guard():
            while True:
                rows = self._db.execute_sql("SELECT id, rowid, op FROM search_outbox ORDER BY id "
                                            "LIMIT ?", (_INDEX_BATCH,)).fetchall()
                if not rows:
                    return
                ops = {rid: op for _, rid, op in rows}
                replay = self._index_high == 1 << 62  # while opening: a crash may have left twins
                docs = self._docs([rid for rid, op in ops.items() if op != _OP_DELETE])
                found = {d.rowid for d in docs}
                deletes = [rid for rid, op in ops.items() if op == _OP_DELETE or rid not in found]
                new = [d for d in docs if ops[d.rowid] == _OP_ADD and not replay]
                upserts = [d for d in docs if ops[d.rowid] == _OP_INDEX or replay]
                self._index.apply(upserts, deletes, new=new, merge=merge)
                with self._db.atomic():
                    self._db.execute_sql("DELETE FROM search_outbox WHERE id <= ?", (rows[-1][0],))
                applied += len(rows)
                if progress:
                    progress(applied)
                if len(rows) < _INDEX_BATCH:
                    return

    def _docs(self, rowids: Sequence[int]) -> list[Any]:
        from .search import Doc

        docs = []
        for part in _chunks(rowids):
            for rid, sort, conv, sender, mtype, body, ext in self._db.execute_sql(
                    "SELECT id, sort_time, conv_id, sender, type, body, ext FROM message "
                    f"WHERE id IN ({_marks(len(part))})", tuple(part)).fetchall():
                try:
                    t = MessageType(mtype)
                    content = content_text(t, decode_body(t, body))
                    extt = ext_text(decode_ext(ext))
                except (IMError, ValueError):
                    log.warning("message row %s has a corrupt payload; not indexed", rid)
                    continue
                docs.append(Doc(rid, sort, conv, sender, mtype, content, extt))
        return docs

    def rebuild_search_index(self, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild the keyword index from the database; returns how many messages it indexed.
        ``progress`` is called with the number indexed so far. Crash-safe: every message is
        first queued in the search outbox, then the index starts empty and the outbox is
        applied, so an interrupted rebuild finishes when the store is next opened."""
        if self._index is None:
            raise IMError(ErrorCode.SERVICE_NOT_ENABLED, "this store was opened with search=False")
        with self._lock:
            with self._tx() as db:
                db.execute_sql("DELETE FROM search_outbox")
                db.execute_sql(f"INSERT INTO search_outbox (rowid, op) SELECT id, {_OP_ADD} "
                               "FROM message ORDER BY id")
                done = int(db.execute_sql("SELECT count(*) FROM search_outbox").fetchone()[0])
            with self._guard():
                self._index.reset()
            self._flush_index(merge=False, progress=progress)
            with self._guard():
                self._index.merge_if_fragmented()
        return done

    def search_messages(self, keyword: str, *, conv_id: str | None = None,
                        sender: str | Sequence[str] | None = None,
                        types: MessageType | Iterable[MessageType] | None = None,
                        start_time: int | None = None, end_time: int | None = None,
                        scope: SearchScope = SearchScope.CONTENT, limit: int = 20,
                        direction: Direction = Direction.UP) -> list[Message]:
        """Messages containing ``keyword``, oldest first.

        The keyword is literal text (never query syntax); its white-space separated words must all
        match, each at the start of a word or, for Chinese, Japanese and Korean, anywhere. UP
        returns the newest ``limit`` matches, DOWN the oldest. Raises `IMError`: INVALID_PARAM for
        an empty keyword, QUERY_PARAM_REACHES_LIMIT for a limit outside 1-400.
        """
        from .text import indexable, keyword_words, matches

        if not isinstance(keyword, str) or not keyword.strip():
            raise IMError(ErrorCode.INVALID_PARAM, "the search keyword is empty; type some text")
        _check_limit(limit)
        direction = _check_direction(direction)
        scope = SearchScope(scope)
        if self._index is None:
            raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                          "this store was opened with search=False; open it with search=True")
        words = keyword_words(keyword)
        fields = {SearchScope.CONTENT: ("content",), SearchScope.EXT: ("ext",),
                  SearchScope.ALL: ("content", "ext")}[scope]
        senders = [sender] if isinstance(sender, str) else (list(sender) if sender else None)
        tlist = _as_types(types)
        out: list[Message] = []
        newest_first = direction == Direction.UP

        def keep(m: Message) -> bool:
            return (senders is None or m.sender in senders) and (tlist is None or m.type in tlist)

        with self._lock:
            self._flush_index()
            skip, window = 0, limit * 2 + 10
            scan = not all(indexable(w) for w in words)  # emoji, symbols: not in the index
            if not scan and self._index.is_common(words, fields, limit, _DENSE_ROWS):
                # Common words: reading rows in time order finds `limit` hits sooner than
                # sorting every index hit by time would.
                dense = self._dense(words, scope, conv_id, start_time, end_time, newest_first,
                                    limit, senders, tlist, matches)
                if dense is not None:
                    dense.sort(key=lambda m: (m.timestamp, m.local_time))
                    return dense
            while len(out) < limit:
                with self._guard():
                    if scan:
                        ids, more = self._scan(words, scope, conv_id, start_time, end_time,
                                               newest_first, window, skip)
                    else:
                        ids, more = self._index.candidates(
                            words, fields, conv_id=conv_id, start_time=start_time,
                            end_time=end_time, newest_first=newest_first, limit=window, skip=skip)
                out.extend(m for m in self._verified(ids, words, scope, matches) if keep(m))
                if not more:
                    break
                skip += window
                window *= 2
        out = out[:limit]
        out.sort(key=lambda m: (m.timestamp, m.local_time))
        return out

    def _dense(self, words: list[str], scope: SearchScope, conv_id: str | None,
               start_time: int | None, end_time: int | None, newest_first: bool, limit: int,
               senders: list[str] | None, tlist: list[int] | None,
               matches: Callable[[Sequence[str], str], bool]) -> list[Message] | None:
        """The newest (or oldest) ``limit`` matches by reading rows in time order, or None when
        that took more than its budget of rows (the words were not as common as estimated).
        Rows are matched on their raw payload; only hits become `Message`s."""
        where, params = _row_filters(conv_id, start_time, end_time)
        if senders is not None:
            where.append(f"sender IN ({_marks(len(senders))})")
            params += senders
        if tlist is not None:
            where.append(f"type IN ({_marks(len(tlist))})")
            params += tlist
        order, cmp = ("DESC", "<") if newest_first else ("ASC", ">")
        hits: list[int] = []
        scanned = 0
        after: tuple[int, int] | None = None
        while len(hits) < limit:
            if scanned >= _DENSE_ROWS * 3 // 2:
                return None
            cond = where + ([f"(sort_time, id) {cmp} (?, ?)"] if after else [])
            rows = self._q(f"SELECT id, sort_time, type, body, ext FROM message "
                           f"{'WHERE ' + ' AND '.join(cond) if cond else ''} "
                           f"ORDER BY sort_time {order}, id {order} LIMIT 500",
                           (*params, *(after or ())))
            for rid, _sort, mtype, body, ext in rows:
                if any(matches(words, t) for t in _raw_texts(mtype, body, ext, scope)):
                    hits.append(rid)
                    if len(hits) == limit:
                        break
            scanned += len(rows)
            if len(rows) < 500:
                break
            after = (rows[-1][1], rows[-1][0])
        return self._verified(hits, words, scope, matches)

    def _scan(self, words: list[str], scope: SearchScope, conv_id: str | None,
              start_time: int | None, end_time: int | None, newest_first: bool, limit: int,
              skip: int) -> tuple[list[int], bool]:
        """Candidates for words the index cannot hold (emoji, symbols): rows whose stored
        payload contains their bytes, in time order. A table scan, for these rare queries."""
        where, params = _row_filters(conv_id, start_time, end_time)
        cols = {SearchScope.CONTENT: ("body",), SearchScope.EXT: ("ext",),
                SearchScope.ALL: ("body", "ext")}[scope]
        for w in words:
            where.append("(" + " OR ".join(f"instr({c}, ?) > 0" for c in cols) + ")")
            params += [w.encode("utf-8")] * len(cols)
        order = "DESC" if newest_first else "ASC"
        rows = self._q(f"SELECT id FROM message WHERE {' AND '.join(where)} "
                       f"ORDER BY sort_time {order}, id {order} LIMIT ? OFFSET ?",
                       (*params, limit + 1, skip))
        return [r[0] for r in rows[:limit]], len(rows) > limit

    def _verified(self, ids: list[int], words: list[str], scope: SearchScope,
                  matches: Callable[[Sequence[str], str], bool]) -> list[Message]:
        rows: dict[int, Any] = {}
        for part in _chunks(ids):
            for r in self._q(f"SELECT {_COLS} FROM message WHERE id IN ({_marks(len(part))})",
                             tuple(part)):
                rows[r[0]] = r
        out = []
        for rid in dict.fromkeys(ids):
            r = rows.get(rid)
            if r is None:
                continue
            msg = row_to_message(r)
            if _text_matches(msg, words, scope, matches):
                out.append(msg)
        return out

