"""Hits per conversation (`MessageStore.search_counts`), and the keywords of a search.

Rules kept here:
- a keyword argument is one string (its white-space separated words must all match, as ever) or
  a list of 1 to 5 such strings; ``match="all"`` wants every keyword, ``"any"`` at least one
  (`keyword_groups` turns both into groups of words: a message matches when every word of one
  group stands in it);
- counts are exact: every candidate (the index's hits, the rows still pending, or for words the
  index cannot hold the rows whose payload holds their bytes) is judged by `text.matches` on its
  stored text, newest first, as a search judges, except the index's hits for words it finds
  exactly (`text.found_exactly`: one token) while no row waits for the index;
  recalled messages never count, and the sender and type filters are SQL's, on every row;
- counting stops once ``max_hits`` matches are counted: the counts are then lower bounds and
  every entry says ``capped`` (show "10,000+"); ``newest`` is each conversation's newest match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..checks import check_text
from ..codec import invalid
from ..errors import ErrorCode, IMError
from ..index import SearchIndexError
from ..message import Message
from ..text import found_exactly, indexable, keyword_words, matches, needles
from ._connection import Connection, chunks, marks
from ._indexer import SearchWriter
from ._query import SCOPE_COLUMNS, SCOPE_FIELDS, TEXT_COLUMNS, Query, raw_texts
from ._rows import SELECT_COLUMNS, row_to_message

__all__ = ["MAX_KEYWORDS", "ConversationHits", "Counter", "keyword_groups"]

MAX_KEYWORDS = 5


@dataclass(frozen=True, slots=True)
class ConversationHits:
    """Matches of a search in one conversation: ``count`` (a lower bound when ``capped``) and
    the ``newest`` matching message."""

    conv_id: str
    count: int
    newest: Message
    capped: bool


def keyword_groups(keyword: Any, match: Any) -> list[list[str]]:
    """The folded word groups of a search's keyword(s) (see the module rules); raises
    IMError(INVALID_PARAM) for anything else."""
    if match not in ("all", "any"):
        raise invalid("match", '"all" or "any"', match)
    if isinstance(keyword, str):
        keywords = [keyword]
    elif isinstance(keyword, Sequence) and not isinstance(keyword, bytes | bytearray):
        keywords = list(keyword)
        if not 1 <= len(keywords) <= MAX_KEYWORDS:
            raise IMError(ErrorCode.INVALID_PARAM, f"give 1 to {MAX_KEYWORDS} keywords, not "
                          f"{len(keywords)}")
    else:
        raise invalid("keyword", "a string or a list of strings", keyword)
    groups = []
    for k in keywords:
        if not isinstance(k, str) or not k.strip():
            raise IMError(ErrorCode.INVALID_PARAM, "a search keyword is empty; type some text")
        groups.append(keyword_words(check_text(k, "keyword")))
    if match == "all":
        return [[w for g in groups for w in g]]
    return groups


class Counter:
    def __init__(self, conn: Connection, indexer: SearchWriter) -> None:
        self._conn = conn
        self._indexer = indexer

    def counts(self, queries: Sequence[Query], max_hits: int) -> list[ConversationHits]:
        """Matches per conversation of any of ``queries`` (one per word group), newest
        conversation first."""
        self._indexer.before_search()
        with self._conn.lock:
            keys: set[tuple[int, int]] = set()
            sure: set[int] = set()  # row ids that match without reading them
            for q in queries:
                found, exact = self._candidates(q)
                keys |= found
                if exact:
                    sure.update(rid for _, rid in found)
            return self._judge(sorted(keys, reverse=True), sure, queries, max_hits)

    def _candidates(self, q: Query) -> tuple[set[tuple[int, int]], bool]:
        """(sort time, row id) of every row that may match ``q``, and whether each of them
        does: the index answered, nothing waits for it (no row differs from its document), and
        the index finds each word exactly (`text.found_exactly`) in the one text `matches`
        reads (one word, or a scope of one field)."""
        index = self._indexer.reader
        if index is None or not index.available or not all(indexable(w) for w in q.words):
            return self._scanned(q), False
        pending = self._indexer.has_pending()
        fields = SCOPE_FIELDS[q.scope]
        try:
            with self._conn.guard():
                hits = index.hits(q.words, fields, conv_id=q.conv_id,
                                  start_time=q.start_time, end_time=q.end_time)
        except SearchIndexError:
            return self._scanned(q), False  # a damaged index: the search that meets it says so
        if pending:
            return self._pending(q) | set(hits), False
        exact = all(found_exactly(w) for w in q.words) and (len(q.words) == 1 or len(fields) == 1)
        return set(hits), exact

    def _pending(self, q: Query) -> set[tuple[int, int]]:
        """Rows not in the index yet whose kept folded text holds every word."""
        cols = TEXT_COLUMNS[q.scope]
        cond = " AND ".join("(" + " OR ".join(f"instr({c}, ?) > 0" for c in cols) + ")"
                            for _ in q.words)
        where, params = q.row_filters(people_and_types=True)
        return set(self._conn.query(
            f"SELECT sort_time, id FROM message WHERE id IN (SELECT id FROM search_text WHERE "
            f"{cond}) AND {' AND '.join(where)}", (*[w for w in q.words for _ in cols], *params)))

    def _scanned(self, q: Query) -> set[tuple[int, int]]:
        """Rows that may match, read from SQLite: those holding each word's `text.needles`
        (symbols: their bytes) in their payloads, every row when a word has none."""
        where, params = q.row_filters(people_and_types=True)
        cols = SCOPE_COLUMNS[q.scope]
        for w in q.words:
            for needle in (needles(w) if indexable(w) else [w]):
                where.append("(" + " OR ".join(f"instr({c}, ?) > 0" for c in cols) + ")")
                params += [needle.encode("utf-8")] * len(cols)
        return set(self._conn.query(f"SELECT sort_time, id FROM message WHERE "
                                    f"{' AND '.join(where)}", params))

    def _judge(self, keys: list[tuple[int, int]], sure: set[int], queries: Sequence[Query],
               max_hits: int) -> list[ConversationHits]:
        q0 = queries[0]
        where, params = q0.row_filters(people_and_types=True)
        counts: dict[str, list[int]] = {}  # conv_id -> [count, row id, time of the newest]
        total = 0
        capped = False
        for part in chunks([rid for _, rid in keys]):
            rows: dict[int, Any] = {}
            for ids, payload in (([r for r in part if r in sure], "NULL, NULL"),
                                 ([r for r in part if r not in sure], "body, ext")):
                if ids:  # the rows that match for sure are read without their payloads
                    rows.update((r[0], r) for r in self._conn.query(
                        f"SELECT id, conv_id, type, {payload}, sort_time FROM message WHERE id "
                        f"IN ({marks(len(ids))}) AND {' AND '.join(where)}", (*ids, *params)))
            for rid in part:
                r = rows.get(rid)
                if r is None:
                    continue
                if rid not in sure and not _holds(r, queries):
                    continue
                c = counts.setdefault(r[1], [0, rid, r[5]])
                c[0] += 1
                total += 1
                if total >= max_hits:
                    capped = True
                    break
            if capped:
                break
        newest = {r[0]: row_to_message(r) for part in chunks([c[1] for c in counts.values()])
                  for r in self._conn.query(f"SELECT {SELECT_COLUMNS} FROM message WHERE id IN "
                                            f"({marks(len(part))})", tuple(part))}
        order = sorted(counts.items(), key=lambda kv: (kv[1][2], kv[1][1]), reverse=True)
        return [ConversationHits(conv, c[0], newest[c[1]], capped) for conv, c in order]


def _holds(row: Any, queries: Sequence[Query]) -> bool:
    """Whether a message row (id, conv_id, type, body, ext, ...) matches any of ``queries``."""
    texts = raw_texts(row[2], row[3], row[4], queries[0].scope)
    return any(any(matches(q.words, t) for t in texts) for q in queries)
