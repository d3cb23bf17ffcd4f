"""The whoosh boundary: the index schema, the tokenizer adapter, writing and querying segments.

The only module that imports whoosh. Rules kept here:
- the analysis is `text.tokens` over `text.fold`, nothing else: what the index holds and what a
  query asks for come from the same rules;
- a keyword is never parsed as whoosh syntax; this module turns literal words into term, prefix
  and phrase queries that propose candidates, and `text.matches` (the caller's) judges them;
- the index is a cache of SQLite: documents are keyed by the message row id and can always be
  rebuilt; one searcher is kept open between commits.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from whoosh import index as windex
from whoosh import query as wq
from whoosh.analysis import Token, Tokenizer
from whoosh.codec import whoosh3
from whoosh.fields import ID, NUMERIC, TEXT, Schema
from whoosh.filedb.filestore import RamStorage
from whoosh.matching import IntersectionMatcher, Matcher
from whoosh.sorting import FieldFacet

from .text import TOKEN_RE, fold, tokens

__all__ = ["Doc", "SearchIndex"]

log = logging.getLogger("imstore.search")

def _cached_reader(self: Any, fieldname: str, column: Any) -> Any:
    # whoosh3 looks for a missing length column on disk once per posting (a stat() call each) and
    # never remembers that it is missing: indexing spent most of its time there. Remember it.
    try:
        return self._readers[fieldname]
    except KeyError:
        reader = self.column_reader(fieldname, column) if self.has_column(fieldname) else None
        self._readers[fieldname] = reader
        return reader


whoosh3.W3PerDocReader._cached_reader = _cached_reader

# A sorted search collects every matching id. whoosh's intersection does that by building a set of
# each side's ids, so "word AND conversation" read every posting of a large conversation. Walking
# the intersection with skip_to (the base matcher's way) reads only blocks that can match.
IntersectionMatcher.all_ids = Matcher.all_ids

class ImTokenizer(Tokenizer):  # type: ignore[misc]
    """whoosh tokenizer over `tokens`; text is folded here, so no filter follows it."""

    def __call__(self, value: str, positions: bool = False, chars: bool = False,
                 keeporiginal: bool = False, removestops: bool = True, start_pos: int = 0,
                 start_char: int = 0, tokenize: bool = True, mode: str = "",
                 **kwargs: Any) -> Iterator[Token]:
        t = Token(positions, chars, removestops=removestops, mode=mode, **kwargs)
        if not tokenize:
            t.original = t.text = value
            t.boost = 1.0
            if positions:
                t.pos = start_pos
            yield t
            return
        for pos, term, _ in tokens(fold(value)):
            t.text = term
            t.boost = 1.0
            t.stopped = False
            if keeporiginal:
                t.original = term
            if positions:
                t.pos = start_pos + pos
            if chars:
                t.startchar = t.endchar = start_char
            yield t


def _schema() -> Schema:
    analyzer = ImTokenizer()
    return Schema(
        id=ID(unique=True, stored=True),
        sort=NUMERIC(bits=64, sortable=True, signed=True, shift_step=32),
        conv=ID(),
        content=TEXT(analyzer=analyzer, phrase=True),
        ext=TEXT(analyzer=analyzer, phrase=True),
    )


@dataclass(slots=True)
class Doc:
    """What the index keeps of one message."""

    rowid: int
    sort_time: int
    conv_id: str
    sender: str
    type: int
    content: str
    ext: str


def _word_query(field: str, word: str) -> wq.Query | None:
    parts: list[wq.Query] = []
    for m in TOKEN_RE.finditer(word):
        chunk = m.group(1)
        if not chunk:
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


def _part_df(reader: Any, field: str, part: str, cjk: bool, enough: float) -> int:
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


_MERGE_DOCS = 100_000


def _merge_bounded(writer: Any, segments: list[Any]) -> list[Any]:
    """whoosh merge policy: merge the smallest segments, at most 100k documents at a time.
    (whoosh's MERGE_SMALL merged most of a million-message index at once, and a merge's memory
    grows with its size: 900 MB of RSS at the end of a 1M import.)"""
    from whoosh.reading import SegmentReader

    group: list[Any] = []
    total = 0
    for seg in sorted(segments, key=lambda s: s.doc_count_all()):
        count = seg.doc_count_all()
        if total + count > _MERGE_DOCS:
            break
        group.append(seg)
        total += count
    if len(group) < 2:
        return list(segments)
    for seg in group:
        reader = SegmentReader(writer.storage, writer.schema, seg)
        writer.add_reader(reader)
        reader.close()
    return [s for s in segments if s not in group]


class SearchIndex:
    """A whoosh index of message documents, in a directory or in memory (``directory=None``)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.rebuilt = False
        schema = _schema()
        if directory is None:
            self._ix = RamStorage().create_index(schema)
            self.rebuilt = True
        else:
            self._ix = self._open_dir(directory, schema)
        self._searcher = self._ix.searcher()

    def _open_dir(self, directory: str, schema: Schema) -> Any:
        # whoosh leaves the files of a damaged index open; they are closed (collected) here,
        # without the ResourceWarning that is whoosh's, not the caller's, to fix.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                if windex.exists_in(directory):
                    ix = windex.open_dir(directory)
                    if set(ix.schema.names()) == set(schema.names()):
                        with ix.searcher() as s:
                            s.doc_count()
                        return ix
                    log.warning("search index at %s has an old schema; rebuilding it", directory)
                else:
                    log.info("no search index at %s; building it from the database", directory)
            except Exception as exc:  # whoosh raises many unrelated types for a damaged index
                log.warning("search index at %s is damaged (%s); rebuilding it from the "
                            "database", directory, repr(exc))  # repr: keep no frames alive
            gc.collect()
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
        self.rebuilt = True
        return windex.create_in(directory, schema)

    def close(self) -> None:
        self._searcher.close()
        self._ix.close()

    def reset(self) -> None:
        """Start again from an empty index (before a rebuild)."""
        self._searcher.close()
        self._ix.close()
        schema = _schema()
        if self.directory is None:
            self._ix = RamStorage().create_index(schema)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)
            os.makedirs(self.directory, exist_ok=True)
            self._ix = windex.create_in(self.directory, schema)
        self._searcher = self._ix.searcher()

    def doc_count(self) -> int:
        return int(self._searcher.doc_count())

    def apply(self, upserts: Sequence[Doc], deletes: Iterable[int], *, new: Sequence[Doc] = (),
              merge: bool = True) -> None:
        """One commit: remove ``deletes``, replace ``upserts``, add ``new`` (documents whose row
        ids the index cannot hold yet, so no look-up for an older copy is needed)."""
        big = len(upserts) + len(new) >= 20000 and self.directory is not None \
            and (os.cpu_count() or 1) > 1
        # Two processes pay off for large batches only, and only with large hand-offs (whoosh's
        # default of 100 documents per batch made two processes slower than one).
        writer = self._writer(procs=2, multisegment=True, batchsize=2000) if big else self._writer()
        try:
            for rid in deletes:
                writer.delete_by_term("id", str(rid))
            for d in upserts:
                writer.delete_by_term("id", str(d.rowid))
            for d in itertools.chain(upserts, new):
                writer.add_document(id=str(d.rowid), sort=d.sort_time, conv=d.conv_id,
                                    content=d.content, ext=d.ext)
        except BaseException:
            writer.cancel()
            raise
        if merge:
            writer.commit(mergetype=_merge_bounded)
        else:
            writer.commit(merge=False)
        self._refresh()

    def merge_if_fragmented(self, segments: int = 24) -> None:
        """Merge (boundedly) once the index has more than ``segments`` segments."""
        if len(self._ix._segments()) > segments:
            self.merge()

    def merge(self) -> None:
        """Merge small segments (after a series of commits made with ``merge=False``)."""
        self._writer().commit(mergetype=_merge_bounded)
        self._refresh()

    def _writer(self, **kw: Any) -> Any:
        # compound=False: a searcher reads a compound segment by copying each part into memory,
        # so it held the whole index in RAM; separate files are read as needed.
        return self._ix.writer(limitmb=64, compound=False, **kw)

    def _refresh(self) -> None:
        # Searcher.refresh() reuses segment readers and so misses deletions and updates in
        # segments it already had (whoosh-reloaded 2.7.5): open a new one after each commit.
        self._searcher.close()
        self._searcher = self._ix.searcher()

    def is_common(self, words: Sequence[str], fields: Sequence[str], limit: int,
                  rows: int) -> bool:
        """Whether ``limit`` hits are expected within ``rows`` messages read in time order, from
        the share of documents that may match every word (estimated from document
        frequencies; an overestimate, never an underestimate)."""
        reader = self._searcher.reader()
        n = max(self._searcher.doc_count(), 1)
        enough = n * limit / rows  # documents a word must be in for the answer to be yes
        for w in words:
            best = 0
            for f in fields:
                word_df = n
                for m in TOKEN_RE.finditer(w):
                    word_df = min(word_df, _part_df(reader, f, m.group(1) or m.group(2),
                                                    bool(m.group(1)), enough))
                best = max(best, word_df)
            if best < enough:
                return False
        return True

    def candidates(self, words: Sequence[str], fields: Sequence[str], *, conv_id: str | None,
                   start_time: int | None, end_time: int | None, newest_first: bool,
                   limit: int, skip: int = 0) -> tuple[list[int], bool]:
        """Row ids of documents that may match, in time order; and whether more may follow.
        Sender and type filters are the caller's (on the stored rows)."""
        per_word = []
        for w in words:
            alts = [q for q in (_word_query(f, w) for f in fields) if q is not None]
            if not alts:
                return [], False
            per_word.append(alts[0] if len(alts) == 1 else wq.Or(alts))
        filters: list[wq.Query] = []
        if conv_id is not None:
            filters.append(wq.Term("conv", conv_id))
        if start_time is not None or end_time is not None:
            filters.append(wq.NumericRange("sort", start_time, end_time))
        q = wq.And(per_word + filters) if len(per_word) + len(filters) > 1 else per_word[0]
        results = self._searcher.search(q, limit=skip + limit,
                                        sortedby=FieldFacet("sort", reverse=newest_first))
        hits = [int(hit["id"]) for hit in results[skip:skip + limit]]
        return hits, results.scored_length() == skip + limit and len(results) > skip + limit
