"""Reading the index: literal words as whoosh queries, document-frequency estimates, whole
columns of a segment, and the collection of a search's hits.

Rules kept here:
- a keyword is never parsed as whoosh syntax: each word's `text.TOKEN_RE` parts become terms
  (a CJK pair, a symbol), prefixes (a Latin word's start, a lone CJK character) and phrases
  (CJK runs as overlapping pairs); they only propose candidates, `text.matches` judges;
- estimates over-count, never under-count: a word's share of documents is the sum of its
  prefix terms' document frequencies (capped), the rarest pair of a CJK run; an AND's share is
  the product of its words' shares;
- hits are collected once per search (`collect`), per segment as sets of document numbers,
  rarest word first; a prefix's documents are read straight from its posting lists.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import Any

from whoosh import query as wq
from whoosh.codec.whoosh3 import W3LeafMatcher

from ..text import TOKEN_RE

__all__ = ["collect", "column", "doc_set", "estimate", "filtered", "part_df", "share",
           "word_query"]


def column(reader: Any, fieldname: str) -> array[int]:
    """A whole ``q`` column of a segment reader, as an array indexed by document number."""
    n = reader.doc_count_all()
    out = array("q")
    perdoc = reader._perdoc
    if perdoc.has_column(fieldname):
        f, offset, length = perdoc._get_column_file(fieldname)
        try:
            out.frombytes(f.get(offset, length - length % 8))
        finally:
            f.close()
        if sys.byteorder == "little":
            out.byteswap()
    if len(out) < n:
        out.extend([0] * (n - len(out)))
    return out


def word_query(field: str, word: str) -> wq.Query | None:
    parts: list[wq.Query] = []
    for m in TOKEN_RE.finditer(word):
        chunk = m.group(1)
        if m.group(3):
            parts.append(wq.Term(field, m.group(3)))  # a symbol: a term of its own
        elif not chunk:
            parts.append(wq.Prefix(field, m.group(2)))
        elif len(chunk) == 1:
            parts.append(wq.Prefix(field, chunk))
        elif len(chunk) == 2:
            parts.append(wq.Term(field, chunk))
        else:
            parts.append(wq.Phrase(field, [chunk[i:i + 2] for i in range(len(chunk) - 1)]))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else wq.And(parts)


def part_df(reader: Any, field: str, part: str, cjk: bool, enough: float) -> int:
    """Documents that may hold one part of a word (a prefix, a CJK run); counting stops once
    it reaches ``enough`` or has looked at 40 terms."""
    if cjk and len(part) >= 2:
        return int(min(reader.doc_frequency(field, part[i:i + 2]) for i in range(len(part) - 1)))
    total = 0
    for i, term in enumerate(reader.expand_prefix(field, part)):
        total += reader.doc_frequency(field, term)
        if total >= enough or i >= 40:
            break
    return total


def doc_set(searcher: Any, reader: Any, q: wq.Query) -> set[int]:
    """The document numbers of one segment matching ``q`` (deleted ones too: the caller drops
    them). A prefix reads its terms' posting lists straight into one set (whoosh's union matcher
    walks them in Python, a heap step per posting)."""
    if isinstance(q, wq.Prefix):
        return _prefix_docs(reader, q.fieldname, q.text)
    m = q.matcher(searcher)
    return set(m.all_ids()) if m.is_active() else set()


def _prefix_docs(reader: Any, fieldname: str, prefix: str) -> set[int]:
    """Documents holding a term that starts with ``prefix``: the term table read in order from
    the prefix on, each posting list's ids read block by block (no per-term look-up, no
    weights or positions decoded)."""
    out: set[int] = set()
    terms = reader._terms
    start = prefix.encode("utf-8")
    postfile = terms._postfile
    fmt = reader.schema[fieldname].format
    for (fn, btext), ti in terms.items_from(fieldname, start):
        if fn != fieldname or not btext.startswith(start):
            break
        if ti.is_inlined():
            out.update(ti._inlined[0])
            continue
        offset, length = ti.extent()
        m = W3LeafMatcher(postfile, offset, length, fmt)
        while m.is_active():
            m._read_ids()
            out.update(m._ids)
            m._next_block()
    return out


def estimate(reader: Any, alts: list[wq.Query]) -> int:
    """About how many documents of a segment match one of ``alts``: a term's document
    frequency, a phrase's rarest pair, a prefix's terms' (summed over its first 40 terms; one
    with more counts as every document)."""
    total = 0
    for q in alts:
        if isinstance(q, wq.Term):
            total += reader.doc_frequency(q.fieldname, q.text)
        elif isinstance(q, wq.Phrase):
            total += min(reader.doc_frequency(q.fieldname, w) for w in q.words)
        elif isinstance(q, wq.Prefix):
            found = 0
            for i, term in enumerate(reader.expand_prefix(q.fieldname, q.text)):
                if i >= 40:
                    found = reader.doc_count_all()
                    break
                found += reader.doc_frequency(q.fieldname, term)
            total += found
        else:
            total += reader.doc_count_all()
    return total


def filtered(searcher: Any, alts: list[wq.Query], docs: set[int]) -> set[int]:
    """The documents of ``docs`` that match one of ``alts``, found by skipping each matcher to
    them in order (for a part far more common than ``docs``)."""
    out: set[int] = set()
    ordered = sorted(docs)
    for q in alts:
        m = q.matcher(searcher)
        for d in ordered:
            if not m.is_active():
                break
            if m.id() < d:
                m.skip_to(d)
                if not m.is_active():
                    break
            if m.id() == d:
                out.add(d)
    return out


def collect(searcher: Any, per_word: list[list[wq.Query]], start: int | None, end: int | None,
        column_of: Any) -> list[tuple[int, int]]:
    """(sort time, row id) of every live document matching, for each word, one of its
    queries, in the time range. Per segment, the words are taken rarest first (by document
    frequency; a prefix counts as common): the first one's documents are a set (a prefix's
    read straight from its terms' posting lists, never whoosh's union matcher); a later
    one is intersected as a set too, unless it is a term or phrase far more common than
    what is left (the conversation's term, say): then its matcher only skips to those
    documents (never a prefix's: whoosh walks its union of terms in Python)."""
    lo = -(1 << 63) if start is None else start
    hi = (1 << 63) - 1 if end is None else end
    out: list[tuple[int, int]] = []
    for sub, _ in searcher.leaf_searchers():
        reader = sub.reader()
        if not reader.doc_count_all():
            continue  # an empty index's reader holds no terms
        found: set[int] | None = None
        ranked = sorted((estimate(reader, alts), i) for i, alts in enumerate(per_word))
        for cost, i in ranked:
            alts = per_word[i]
            if found is not None and cost > 8 * len(found) and \
                    not any(isinstance(q, wq.Prefix) for q in alts):
                found = filtered(sub, alts, found)  # a prefix's matcher is a slow union
            else:
                docs: set[int] = set()
                for q in alts:
                    docs |= doc_set(sub, reader, q)
                found = docs if found is None else found & docs
            if not found:
                break
        if not found:
            continue
        sorts = column_of(reader, "sort")
        rowids = column_of(reader, "rowid")
        deleted = reader.is_deleted if reader.has_deletions() else None
        for d in found:
            if deleted is not None and deleted(d):
                continue
            t = sorts[d]
            if lo <= t <= hi:
                out.append((t, rowids[d]))
    return out


def share(searcher: Any, words: Sequence[str], fields: Sequence[str]) -> float:
    """The share of documents that may match every word: the product of the words' shares,
    each from document frequencies (an overestimate; prefixes counted over 40 terms)."""
    reader = searcher.reader()
    n = max(searcher.doc_count(), 1)
    out = 1.0
    for w in words:
        best = 0
        for f in fields:
            word_df = n
            for m in TOKEN_RE.finditer(w):
                word_df = min(word_df, part_df(reader, f, m.group(1) or m.group(2)
                                                or m.group(3), bool(m.group(1)), n))
            best = max(best, word_df)
        out *= min(best, n) / n
    return out
