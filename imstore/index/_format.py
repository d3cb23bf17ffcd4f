"""The index's file format: its schema, its codec, and the direct segment writer.

Rules kept here:
- the files are ordinary whoosh3 segments: stock whoosh-reloaded 2.7.5 searches and merges
  them (the pickled schema names `ImTokenizer`, so imstore must be importable); what we change
  is how they are written, never what they mean. A test builds the same documents with whoosh's
  own writer and compares postings, lengths and columns; another compares a merge
  (`_merge.merge_segments`) with writing the live documents at once;
- `write_segment` inverts documents in Python dicts and hands sorted postings to whoosh's own
  field/postings writer and column writers, bypassing ``add_document`` and its ``PostingPool``;
  where whoosh works posting by posting in Python we write the same bytes in bulk: a block of
  postings (`_PostingsWriter._write_block`), a short list's inlined term info and the term
  dictionary's entries (`write_field`, `_add_terms`);
  it writes straight into the storage, never into a temporary storage, so several writers (the
  parent and its helper process, `_helper`) can build segments in one directory at once;
- a document is keyed by its message row id, held in the ``rowid`` column; the ``key`` term
  (``rowid >> KEY_SHIFT``) finds the few documents that may hold a row id, so deletes never need
  a term per document; the sort time is the ``sort`` column, never terms;
- no global patching of whoosh: `ImCodec` (used only by our index) carries the two fixes we
  need, and pickles as a plain ``W3Codec`` so that the TOC on disk names only whoosh classes;
- a document whose fields cannot be indexed is left out and reported, never raised.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from operator import sub
from pickle import dumps
from typing import Any

from whoosh import columns
from whoosh.analysis import Token, Tokenizer
from whoosh.codec.whoosh3 import (
    STORED_COLUMN,
    WHOOSH3_HEADER_MAGIC,
    W3Codec,
    W3FieldWriter,
    W3PerDocReader,
    W3PostingsWriter,
    W3Segment,
    W3TermInfo,
)
from whoosh.fields import COLUMN, ID, TEXT, Schema
from whoosh.system import pack_ushort
from whoosh.util.numeric import byte_to_length, length_to_byte

from ..text import fold, terms, tokens

__all__ = ["KEY_SHIFT", "ROWID_COLUMN", "SORT_COLUMN", "Doc", "ImCodec", "ImTokenizer", "Tracked",
           "key_of", "schema", "write_field", "write_fixed_column", "write_lengths", "write_segment"]

log = logging.getLogger("imstore.search")

KEY_SHIFT = 6  # documents per ``key`` term: at most 64 row ids share one
ROWID_COLUMN = columns.NumericColumn("q")
SORT_COLUMN = columns.NumericColumn("q")


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


def key_of(rowid: int) -> str:
    """The ``key`` term of a row id."""
    return format(rowid >> KEY_SHIFT, "x")


class ImTokenizer(Tokenizer):  # type: ignore[misc]
    """whoosh tokenizer over `tokens`; text is folded here, so no filter follows it."""

    def __call__(self, value: str, positions: bool = False, chars: bool = False,
                 keeporiginal: bool = False, removestops: bool = True, start_pos: int = 0,
                 start_char: int = 0, tokenize: bool = True, mode: str = "",
                 **kwargs: Any) -> Any:
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


def schema() -> Schema:
    """The index schema. ``key``, ``conv``: terms; ``content``, ``ext``: text with positions
    (phrases of CJK bigrams); ``rowid``, ``sort``: per-document columns."""
    analyzer = ImTokenizer()
    return Schema(
        key=ID(),
        conv=ID(),
        content=TEXT(analyzer=analyzer, phrase=True),
        ext=TEXT(analyzer=analyzer, phrase=True),
        rowid=COLUMN(ROWID_COLUMN),
        sort=COLUMN(SORT_COLUMN),
    )


# -- the codec --------------------------------------------------------------------------------


class _PerDocReader(W3PerDocReader):  # type: ignore[misc]
    # whoosh3 looks for a missing column on disk once per call (a stat() each, once per
    # posting while a writer flushes) and never remembers that it is missing. Remember it.
    def _cached_reader(self, fieldname: str, column: Any) -> Any:
        try:
            return self._readers[fieldname]
        except KeyError:
            reader = self.column_reader(fieldname, column) if self.has_column(fieldname) else None
            self._readers[fieldname] = reader
            return reader


class _PostingsWriter(W3PostingsWriter):  # type: ignore[misc]
    """whoosh3's postings writer, plus `add_many` (a posting list at once, in block-sized
    slices) and a fix: posting lists shorter than ``inlinelimit`` are kept in the term info
    (whoosh 2.7.5 calls a misspelled ``set_inline`` there, so its own codec never inlines)."""

    _maxweight: float
    _minlength: int | None
    _maxlength: int
    _terminfo: Any

    def add_many(self, ids: list[int], weights: list[float], values: list[bytes] | None,
                 length: list[int] | None) -> None:
        limit = self._blocklimit
        n = len(ids)
        i = 0
        while i < n:
            room = limit - len(self._ids)
            if room <= 0:
                self._write_block()
                continue
            j = min(n, i + room)
            self._ids.extend(ids[i:j])
            w = weights[i:j]
            self._weights.extend(w)
            mw = max(w)
            if mw > self._maxweight:
                self._maxweight = mw
            if values is not None:
                self._values.extend(values[i:j])
            if length is not None:
                ls = length[i:j]
                lo, hi = min(ls), max(ls)
                if lo and (self._minlength is None or lo < self._minlength):
                    self._minlength = lo
                if hi > self._maxlength:
                    self._maxlength = hi
            i = j

    def _write_block(self, last: bool = False) -> None:
        """whoosh3's `_write_block`, the same bytes, with the per-posting work at C speed (the
        deltas of the ids, the weights' summary)."""
        if not self._blockcount:
            self._postfile.write(WHOOSH3_HEADER_MAGIC)
        self._terminfo.add_block(self)
        ids = self._ids
        weights = self._weights
        n = len(ids)
        if weights.count(1.0) == n:
            mini_weights: Any = None
        elif weights.count(weights[0]) == n:
            mini_weights = weights[0]
        else:
            mini_weights = tuple(weights)
        databytes = dumps((tuple(map(sub, ids, chain((0,), ids))), mini_weights,
                           self._mini_values()), 2)
        comp = self._compression
        if comp:
            databytes = zlib.compress(databytes, comp)
        infobytes = dumps((n, ids[-1], self._maxweight, comp, length_to_byte(self._minlength),
                           length_to_byte(self._maxlength)), 2)
        blocklength = len(infobytes) + len(databytes)
        postfile = self._postfile
        postfile.write_int(-blocklength if last else blocklength)
        postfile.write(infobytes)
        postfile.write(databytes)
        self._blockcount += 1
        self._new_block()

    def finish_postings(self) -> Any:
        terminfo = self._terminfo
        if not self.written() and len(self) < self._inlinelimit:
            terminfo.add_block(self)
            # an empty value is b"" per posting: whoosh's ListMatcher answers "" (a str) for a
            # posting without one, which its own writer then rejects when merging
            values = self._values or [b""] * len(self._ids)
            terminfo.set_inlined(self._ids, self._weights, values)
            self._terminfo = None
            return terminfo
        return super().finish_postings()


class ImCodec(W3Codec):  # type: ignore[misc]
    """The whoosh3 codec with our two fixes (see `_PerDocReader`, `_PostingsWriter`). Segments
    written with it pickle the codec as a plain ``W3Codec``: stock whoosh reads them."""

    def __init__(self, blocklimit: int = 128, compression: int = 3, inlinelimit: int = 16) -> None:
        super().__init__(blocklimit=blocklimit, compression=compression, inlinelimit=inlinelimit)

    def __reduce__(self) -> tuple[Any, ...]:
        return (W3Codec, ())

    def per_document_reader(self, storage: Any, segment: Any) -> Any:
        return _PerDocReader(storage, segment)

    def postings_writer(self, dbfile: Any, byteids: bool = False) -> Any:
        return _PostingsWriter(dbfile, blocklimit=self._blocklimit, byteids=byteids,
                               compression=self._compression, inlinelimit=self._inlinelimit)


# -- the direct segment writer ----------------------------------------------------------------

_pack_uint = struct.Struct("!I").pack


class _OnePosition(dict[int, bytes]):
    """Encoded one-position lists (most postings), made on first use."""

    def __missing__(self, pos: int) -> bytes:
        enc = self[pos] = _pack_uint(1) + dumps([pos], 2)
        return enc


_ONE = _OnePosition()


def _encode_positions(poslist: list[int]) -> bytes:
    """whoosh's `Positions.encode` (the count, then the pickled deltas)."""
    if len(poslist) == 1:
        return _ONE[poslist[0]]
    deltas = []
    base = 0
    for pos in poslist:
        deltas.append(pos - base)
        base = pos
    return _pack_uint(len(deltas)) + dumps(deltas, 2)


_DOC_SHIFT = 32  # a posting is ``docnum << 32 | position`` (a text has fewer than 2**32 terms)
_POS_MASK = (1 << _DOC_SHIFT) - 1


class _TextPostings:
    """One text field's inverted postings: term -> [docnum << 32 | first position] (ints, not
    a tuple per posting: the collector tracks every tuple, and in a large process each
    tracked object makes its full collections slower), the other positions of the few terms
    that stand more than once in a document, each document's length byte, and the field's
    total length."""

    __slots__ = ("lengths", "more", "terms", "total")

    def __init__(self, doccount: int) -> None:
        self.terms: dict[str, list[int]] = {}
        self.more: dict[tuple[str, int], list[int]] = {}  # (term, docnum) -> every position
        self.lengths = bytearray(doccount)  # length bytes, as whoosh stores them
        self.total = 0

    def add(self, docnum: int, text: str) -> None:
        if not text:
            return
        found = terms(fold(text))
        n = len(found)
        if not n:
            return
        inverted = self.terms
        get = inverted.get
        base = docnum << _DOC_SHIFT
        if len(set(found)) == n:  # every term once: the common case
            for posting, t in enumerate(found, base):
                entry = get(t)
                if entry is None:
                    inverted[t] = [posting]
                else:
                    entry.append(posting)
        else:
            local: dict[str, list[int]] = {}
            for p, t in enumerate(found):
                pl = local.get(t)
                if pl is None:
                    local[t] = [p]
                else:
                    pl.append(p)
            for t, pl in local.items():
                if len(pl) > 1:
                    self.more[t, docnum] = pl
                entry = get(t)
                if entry is None:
                    inverted[t] = [base + pl[0]]
                else:
                    entry.append(base + pl[0])
        self.lengths[docnum] = length_to_byte(n)
        self.total += n

    def repeated(self) -> dict[str, dict[int, list[int]]]:
        """term -> {docnum: positions} for the terms standing more than once in a document."""
        out: dict[str, dict[int, list[int]]] = {}
        for (t, d), pl in self.more.items():
            out.setdefault(t, {})[d] = pl
        return out


class Tracked:
    """The storage a new segment is written to, remembering every file it creates, so that a
    failed write (a full disk) closes and removes them all: a retry leaves nothing behind."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self._files: list[tuple[str, Any]] = []

    def create_file(self, name: str, **kwargs: Any) -> Any:
        f = self._storage.create_file(name, **kwargs)
        self._files.append((name, f))
        return f

    def close_all(self) -> None:
        for name, f in self._files:
            for step in (f.close, lambda n=name: self._storage.delete_file(n)):
                try:
                    step()
                except Exception:
                    pass


def _check_doc(d: Doc) -> tuple[int, int, str, str, str]:
    rowid, sort = int(d.rowid), int(d.sort_time)
    if not -(1 << 63) <= sort < 1 << 63 or not 0 <= rowid < 1 << 63:
        raise ValueError("row id or sort time out of range")
    conv = d.conv_id
    if not isinstance(conv, str):
        raise TypeError("conversation id is not a string")
    conv.encode("utf-8")  # a lone surrogate cannot be a term
    content = d.content if isinstance(d.content, str) else ""
    ext = d.ext if isinstance(d.ext, str) else ""
    return rowid, sort, conv, content, ext


def write_segment(storage: Any, indexname: str, schema: Schema, docs: Iterable[Doc],
                  codec: ImCodec) -> tuple[W3Segment | None, list[int]]:
    """Write ``docs`` as one new segment in ``storage`` (not yet in any TOC); returns the
    segment (None when no document could be written) and the row ids left out because they
    could not be indexed."""
    good: list[tuple[int, int, str, str, str]] = []
    skipped: list[int] = []
    for d in docs:
        try:
            good.append(_check_doc(d))
        except (TypeError, ValueError, OverflowError) as exc:
            rid = d.rowid if isinstance(d.rowid, int) else -1
            log.warning("message row %s cannot be indexed (%s); left out", rid, exc)
            skipped.append(rid)
    if not good:
        return None, skipped
    n = len(good)
    content, ext = _TextPostings(n), _TextPostings(n)
    conv: dict[str, list[int]] = {}
    key: dict[str, list[int]] = {}
    rowids: list[int] = []
    sorts: list[int] = []
    for docnum, (rowid, sort, cid, ctext, etext) in enumerate(good):
        content.add(docnum, ctext)
        ext.add(docnum, etext)
        c = conv.get(cid)
        if c is None:
            conv[cid] = [docnum]
        else:
            c.append(docnum)
        k = key_of(rowid)
        kl = key.get(k)
        if kl is None:
            key[k] = [docnum]
        else:
            kl.append(docnum)
        rowids.append(rowid)
        sorts.append(sort)

    segment = codec.new_segment(storage, indexname)
    tracked = Tracked(storage)

    def create(fieldname: str) -> Any:
        return tracked.create_file(W3Codec.column_filename(segment, fieldname))

    try:
        fw = W3FieldWriter(codec, tracked, segment)
        for fieldname in sorted(schema.names()):
            fieldobj = schema[fieldname]
            if fieldname in ("content", "ext"):
                tp = content if fieldname == "content" else ext
                if tp.terms:
                    _write_text_field(fw, fieldname, fieldobj, tp)
            elif fieldname in ("conv", "key"):
                _write_id_field(fw, fieldname, fieldobj, conv if fieldname == "conv" else key)
        fw.close()
        write_fixed_column(create("rowid"), ROWID_COLUMN, rowids)
        write_fixed_column(create("sort"), SORT_COLUMN, sorts)
        for fieldname, tp in (("content", content), ("ext", ext)):
            if tp.total:
                write_lengths(create(f"_{fieldname}_len"), tp.lengths)
        f = create("_stored")
        STORED_COLUMN.writer(f).finish(n)
        f.close()
    except BaseException:
        tracked.close_all()  # the segment is in no TOC: its files go at the next commit
        raise
    segment.set_doc_count(n)
    segment._fieldlengths = {name: tp.total for name, tp in (("content", content), ("ext", ext))
                             if tp.total}
    return segment, skipped


def _write_text_field(fw: Any, fieldname: str, fieldobj: Any, tp: _TextPostings) -> None:
    lengths = tp.lengths
    quant = [byte_to_length(b) for b in range(256)]
    one = _ONE
    enc = _encode_positions
    repeated = tp.repeated()
    shift, mask = _DOC_SHIFT, _POS_MASK

    def lists() -> Iterator[tuple[str, list[int], list[float], list[bytes], list[int]]]:
        for term in sorted(tp.terms):
            postings = tp.terms[term]
            ids = [p >> shift for p in postings]
            ls = [quant[lengths[d]] for d in ids]
            more = repeated.get(term)
            if more is None:  # once in each document: the common case, no test per posting
                yield term, ids, [1.0] * len(ids), [one[p & mask] for p in postings], ls
            else:
                pls = [more.get(d) for d in ids]
                yield (term, ids, [1.0 if pl is None else float(len(pl)) for pl in pls],
                       [one[p & mask] if pl is None else enc(pl)
                        for p, pl in zip(postings, pls, strict=True)], ls)

    write_field(fw, fieldname, fieldobj, lists())


def _write_id_field(fw: Any, fieldname: str, fieldobj: Any, terms: dict[str, list[int]]) -> None:
    if terms:
        write_field(fw, fieldname, fieldobj,
                     ((t, terms[t], [1.0] * len(terms[t]), None, None) for t in sorted(terms)))


def write_field(fw: Any, fieldname: str, fieldobj: Any,
                 lists: Iterable[tuple[str, list[int], list[float], list[bytes] | None,
                                       list[int] | None]]) -> None:
    """Write one field's posting lists, in term order. A short list goes straight into its
    term info (the bytes `W3TermInfo.to_bytes` makes of an inlined list), and the term
    dictionary takes those in bulk (`_add_terms`); a longer list goes through whoosh's field and
    postings writers."""
    fw.start_field(fieldname, fieldobj)
    pw = fw._postwriter
    tindex = fw._tindex
    prefix = pack_ushort(fw._fieldid)
    inline = pw._inlinelimit
    pack = _TERMINFO.pack
    l2b = length_to_byte
    pending: list[tuple[bytes, bytes]] = []
    for term, ids, weights, values, lengths in lists:
        btext = term.encode("utf-8")
        n = len(ids)
        if n < inline:
            minlength = maxlength = 0
            if lengths is not None:
                minlength = min(lengths)
                maxlength = max(lengths)
            info = pack(True, sum(weights), n, l2b(minlength) if minlength else 0,
                        l2b(maxlength), max(weights), ids[0], ids[-1])
            pending.append((prefix + btext, info + dumps(
                (tuple(ids), tuple(weights), tuple(values) if values is not None else (b"",) * n),
                2)))
        else:
            if pending:
                _add_terms(tindex, pending)
                pending = []
            fw.start_term(btext)
            pw.add_many(ids, weights, values, lengths)
            fw.finish_term()
    if pending:
        _add_terms(tindex, pending)
    fw.finish_field()


_TERMINFO = W3TermInfo._struct  # flags, weight, doc freq, min/max length byte, max weight, ids
_ENTRY = struct.Struct("!ii")  # an entry of whoosh's hash file: key and value lengths


def _add_terms(tindex: Any, items: list[tuple[bytes, bytes]]) -> None:
    """What `OrderedHashWriter.add` does for each (key, value) of ``items`` (in key order),
    with one write to the file: the entries' positions are counted, not asked of the file."""
    dbfile = tindex.dbfile
    pos = dbfile.tell()
    last = tindex.lastkey
    hashfn = tindex.hashfn
    buckets = tindex.buckets
    index = tindex.index
    pack = _ENTRY.pack
    chunks = []
    for key, value in items:
        if key <= last:
            raise ValueError(f"keys must increase: {last!r}..{key!r}")
        last = key
        index.append(pos)
        h = hashfn(key)
        buckets[h & 255].append((h, pos))
        entry = pack(len(key), len(value)) + key + value
        chunks.append(entry)
        pos += len(entry)
    dbfile.write(b"".join(chunks))
    tindex.lastkey = last


def write_fixed_column(f: Any, column: Any, values: list[int]) -> None:
    # What NumericColumn's writer writes value by value: big-endian values, trailing defaults
    # left out (its reader answers the default past the end).
    default = column.default_value()
    end = len(values)
    while end and values[end - 1] == default:
        end -= 1
    f.write(struct.pack(f"!{end}{column._typecode}", *values[:end]))
    f.close()


def write_lengths(f: Any, lengths: bytearray) -> None:
    end = len(lengths)
    while end and not lengths[end - 1]:
        end -= 1
    f.write(bytes(lengths[:end]))
    f.close()
