"""Merging segments: the tiered policy and the direct merge.

Rules kept here:
- segments are merged by size tiers (below 1024 documents, then each tier 8 times the one
  below): once a tier holds 8 segments they become one, at most 200k live documents at a time,
  so every document is merged about log8(N / batch) times and a search visits few segments;
- a merge writes the live documents of its segments as one new segment the way
  `_format.write_segment` writes one, reading postings block by block (whoosh's own merge
  re-sorts every posting through its pool); the result is an ordinary whoosh3 segment.
"""

from __future__ import annotations

import heapq
import math
import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from whoosh.codec.whoosh3 import STORED_COLUMN, W3Codec, W3FieldWriter, W3LeafMatcher, W3Segment
from whoosh.fields import Schema
from whoosh.reading import SegmentReader
from whoosh.util.numeric import byte_to_length

from ._format import (
    ROWID_COLUMN,
    SORT_COLUMN,
    ImCodec,
    Tracked,
    write_field,
    write_fixed_column,
    write_lengths,
)

__all__ = ["merge_segments", "merge_tiered", "no_merge"]

MERGE_FACTOR = 8  # segments of one size tier merged at once
_SMALL_DOCS = 1024  # segments below this are one tier (merging them is cheap, visiting costly)
_MERGE_DOCS = 200_000  # live documents per merge, at most


def merge_tiered(writer: Any, segments: list[Any], codec: ImCodec) -> list[Any]:
    """Merge policy, by tiers of size (below 1024 documents, then each tier 8 times the one
    below): once a tier holds 8 segments, they become one, merged directly
    (`merge_segments`), at most 200k live documents at a time. Every document is
    merged about log8(N / batch) times, and an index keeps fewer than 8 segments per tier."""
    current = list(segments)
    while True:
        tiers: dict[int, list[Any]] = {}
        for seg in current:
            live = seg.doc_count()
            if live * 2 <= _MERGE_DOCS:  # larger ones are done
                tier = 0 if live < _SMALL_DOCS else 1 + int(math.log(live / _SMALL_DOCS,
                                                                      MERGE_FACTOR))
                tiers.setdefault(tier, []).append(seg)
        full = [t for t in sorted(tiers) if len(tiers[t]) >= MERGE_FACTOR]
        if not full:
            return current
        group: list[Any] = []
        total = 0
        for seg in sorted(tiers[full[0]], key=lambda s: s.doc_count())[:MERGE_FACTOR]:
            if len(group) >= 2 and total + seg.doc_count() > _MERGE_DOCS:
                break
            group.append(seg)
            total += seg.doc_count()
        merged = merge_segments(writer.storage, writer.indexname, writer.schema, group, codec)
        current = [s for s in current if s not in group]
        if merged is not None:
            current.append(merged)


def no_merge(writer: Any, segments: list[Any]) -> list[Any]:
    return list(segments)


def _fixed_column(perdoc: Any, fieldname: str, typecode: str, doccount: int) -> list[int]:
    """A whole fixed-width column of a segment, one value per document (defaults past the
    end), read in one go."""
    out = array(typecode)
    if perdoc.has_column(fieldname):
        f, offset, length = perdoc._get_column_file(fieldname)
        try:
            out.frombytes(f.get(offset, length - length % out.itemsize))
        finally:
            f.close()
        if out.itemsize > 1 and sys.byteorder == "little":
            out.byteswap()
    values = out.tolist()[:doccount]
    values.extend([0] * (doccount - len(values)))
    return values


def _field_terms(reader: Any, fieldname: str, i: int) -> Iterator[tuple[bytes, int, Any]]:
    """(term, i, term info) of one field of a segment, in term order, read sequentially."""
    for (fn, btext), ti in reader._terms.items_from(fieldname, b""):
        if fn != fieldname:
            return
        yield btext, i, ti


def _term_postings(ti: Any, postfile: Any, fmt: Any) -> tuple[Any, Any, Any]:
    """All (ids, weights, values) of one term in one segment, block by block."""
    if ti.is_inlined():
        inlined: tuple[Any, Any, Any] = ti.inlined_postings()
        return inlined
    offset, length = ti.extent()
    m = W3LeafMatcher(postfile, offset, length, fmt)
    ids: list[int] = []
    weights: list[float] = []
    values: list[Any] = []
    while m.is_active():
        m._read_ids()
        m._read_weights()
        m._read_values()
        ids += m._ids
        weights += m._weights
        values += m._values
        m._next_block()
    return ids, weights, values


def merge_segments(storage: Any, indexname: str, schema: Schema, segments: Sequence[Any],
                   codec: ImCodec) -> W3Segment | None:
    """Write the live documents of ``segments`` as one new segment (not yet in any TOC),
    reading their postings block by block and writing them as `write_segment` does; None
    when no document is live. Memory: the merged columns, and one term's postings at a time."""
    readers = [SegmentReader(storage, schema, seg) for seg in segments]
    try:
        return _merge(storage, indexname, schema, segments, readers, codec)
    finally:
        for r in readers:
            r.close()


def _merge(storage: Any, indexname: str, schema: Schema, segments: Sequence[Any],
           readers: list[Any], codec: ImCodec) -> W3Segment | None:
    docmaps: list[list[int] | None] = []  # old docnum -> new (-1: deleted); None: base + old
    bases: list[int] = []
    rowids: list[int] = []
    sorts: list[int] = []
    text_lengths: dict[str, bytearray] = {"content": bytearray(), "ext": bytearray()}
    totals = {"content": 0, "ext": 0}
    n = 0
    for seg, r in zip(segments, readers, strict=True):
        count = seg.doc_count_all()
        deleted = set(seg.deleted_docs())
        live = [d for d in range(count) if d not in deleted] if deleted else range(count)
        bases.append(n)
        if deleted:
            dm = [-1] * count
            for i, d in enumerate(live):
                dm[d] = n + i
            docmaps.append(dm)
        else:
            docmaps.append(None)
        perdoc = r._perdoc
        col = _fixed_column(perdoc, "rowid", "q", count)
        rowids += [col[d] for d in live]
        col = _fixed_column(perdoc, "sort", "q", count)
        sorts += [col[d] for d in live]
        for field, buf in text_lengths.items():
            lb = _fixed_column(perdoc, f"_{field}_len", "B", count)
            buf += bytes(lb[d] for d in live)
            totals[field] += seg._fieldlengths.get(field, 0) - sum(
                byte_to_length(lb[d]) for d in deleted)
        n += len(live)
    if not n:
        return None
    quant = [byte_to_length(b) for b in range(256)]
    segment = codec.new_segment(storage, indexname)
    tracked = Tracked(storage)

    def create(fieldname: str) -> Any:
        return tracked.create_file(W3Codec.column_filename(segment, fieldname))

    def lists(field: str) -> Iterator[tuple[str, list[int], list[float], list[bytes] | None,
                                           list[int] | None]]:
        fmt = schema[field].format
        lengths = text_lengths.get(field)
        sources = [_field_terms(r, field, i) for i, r in enumerate(readers)]
        current: bytes | None = None
        ids: list[int] = []
        weights: list[float] = []
        values: list[bytes] = []
        for btext, i, ti in heapq.merge(*sources):
            if btext != current:
                if ids:
                    yield (current.decode("utf-8"), ids, weights,  # type: ignore[union-attr]
                           values if lengths is not None else None,
                           [quant[lengths[d]] for d in ids] if lengths is not None else None)
                current, ids, weights, values = btext, [], [], []
            r = readers[i]
            sids, sw, sv = _term_postings(ti, r._terms._postfile, fmt)
            dm = docmaps[i]
            if dm is None:
                base = bases[i]
                ids += [base + d for d in sids]
                weights += sw
                if lengths is not None:
                    values += sv
            else:
                for j, d in enumerate(sids):
                    nd = dm[d]
                    if nd >= 0:
                        ids.append(nd)
                        weights.append(sw[j])
                        if lengths is not None:
                            values.append(sv[j])
        if ids:
            yield (current.decode("utf-8"), ids, weights,  # type: ignore[union-attr]
                   values if lengths is not None else None,
                   [quant[lengths[d]] for d in ids] if lengths is not None else None)

    try:
        fw = W3FieldWriter(codec, tracked, segment)
        for fieldname in sorted(schema.names()):
            if fieldname in ("content", "ext", "conv", "key"):
                write_field(fw, fieldname, schema[fieldname], lists(fieldname))
        fw.close()
        write_fixed_column(create("rowid"), ROWID_COLUMN, rowids)
        write_fixed_column(create("sort"), SORT_COLUMN, sorts)
        for fieldname, buf in text_lengths.items():
            if any(buf):
                write_lengths(create(f"_{fieldname}_len"), buf)
        f = create("_stored")
        STORED_COLUMN.writer(f).finish(n)
        f.close()
    except BaseException:
        tracked.close_all()
        raise
    segment.set_doc_count(n)
    segment._fieldlengths = {k: v for k, v in totals.items() if v > 0}
    return segment
