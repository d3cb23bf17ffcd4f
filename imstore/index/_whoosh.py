"""The whoosh boundary: the index (opening, writing, merging) and querying it.

Rules kept here:
- the analysis is `text.tokens` over `text.fold`, nothing else: what the index holds and what a
  query asks for come from the same rules;
- a keyword is never parsed as whoosh syntax: literal words become term, prefix and phrase
  queries (`_hits`) that propose candidates, and `text.matches` (the caller's) judges them;
- the index is a cache of SQLite: documents are keyed by the message row id and can always be
  rebuilt; one searcher is kept open and reopened when the index changes on disk;
- every failure of whoosh, zlib, struct or the file system while opening, searching or writing
  leaves as one exception, `SearchIndexError` (``damaged`` tells a broken index, to rebuild,
  from a failed write such as a full disk, to retry); a failed write releases the writer lock;
- nothing of whoosh is patched: our fixes live in `_format.ImCodec`, a storage subclass for
  memory indexes (whoosh's RamStorage puts its temporary files in a fixed folder,
  ``$TMPDIR/MAIN.tmp``, shared by every process on the machine), and our own hit collection
  (whoosh's intersection collects every id of both sides into sets);
- writes build whole segments directly (`_format.write_segment`), half of them in the helper
  process (`_helper`) when a batch is large and there is a second core; segments are merged by
  size tiers (`_merge.merge_tiered`): a search visits every segment, so they stay few;
- the index of an encrypted store is sealed (``sealing``, `_sealed`): every file it writes, the
  helper's too, is encrypted; its FORMAT says so, so that an index of the other kind is rebuilt,
  and a file that does not decrypt is damage like any other.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import shutil
import warnings
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

from whoosh import query as wq
from whoosh.codec.whoosh3 import W3Codec
from whoosh.filedb.filestore import FileStorage, RamStorage
from whoosh.filedb.structfile import StructFile
from whoosh.index import TOC, FileIndex
from whoosh.writing import SegmentWriter

from ..errors import ErrorCode, IMError
from ._format import Doc, ImCodec, key_of, schema, write_segment
from ._helper import INDEXNAME as _INDEXNAME
from ._helper import Split
from ._hits import collect, column, share, word_query
from ._merge import MERGE_FACTOR, merge_tiered, no_merge
from ._outbox import fold_rows
from ._sealed import Sealing

__all__ = ["SearchIndex", "SearchIndexError"]

log = logging.getLogger("imstore.search")

_CODEC = ImCodec()
_SEGMENT_DOCS = 50_000  # documents per directly written segment, at most
# What the documents of an index hold (tokens, fields); another value means: rebuild it.
_FORMAT = ("imstore index 3: key term, rowid and sort columns, symbol terms, traditional "
           "folded to simplified\n")
_SEALED = "sealed: every file AES-256-GCM under the store's index key\n"
_FORMAT_FILE = "FORMAT"


class SearchIndexError(IMError):
    """The search index could not be opened, read or written.

    ``damaged`` is True when its files are broken (rebuild it from the database and answer by
    scanning meanwhile), False when a write failed for a passing reason such as a full disk
    (the files are intact; keep the work and retry later). The original error is ``__cause__``.
    """

    def __init__(self, description: str, *, damaged: bool) -> None:
        super().__init__(ErrorCode.DATABASE_ERROR, description)
        self.damaged = damaged

    def __reduce__(self) -> Any:
        return (_rebuild_error, (self.description, self.damaged))


def _rebuild_error(description: str, damaged: bool) -> SearchIndexError:
    return SearchIndexError(description, damaged=damaged)


_PASSING = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EMFILE, errno.ENFILE,
            errno.EROFS, errno.EACCES, errno.EPERM}


def _error(action: str, exc: BaseException) -> SearchIndexError:
    passing = (isinstance(exc, OSError) and exc.errno in _PASSING) or isinstance(exc, MemoryError)
    err = SearchIndexError(f"the search index could not be {action}: {exc!r}", damaged=not passing)
    err.__cause__ = exc
    return err


def _fresh_dir(directory: str) -> None:
    """An empty directory at ``directory``, whatever stood there (an old index, a file, a
    link): the index is a cache. An IMError says what to do when it cannot be made."""
    try:
        if os.path.islink(directory) or os.path.isfile(directory):
            os.unlink(directory)
        else:
            shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise IMError(ErrorCode.DATABASE_ERROR,
                      f"the search index cannot be made at {directory} ({exc.strerror}); "
                      "remove what is there or check the directory's permissions") from exc


# -- storage and index classes used only by our index -----------------------------------------


class _MemoryStorage(RamStorage):  # type: ignore[misc]
    """RamStorage whose temporary storage is memory too, private to this index."""

    def temp_storage(self, name: str | None = None) -> Any:
        return RamStorage()


class _DiskStorage(FileStorage):  # type: ignore[misc]
    """FileStorage that maps term files (``.trm``) into memory: a term look-up is a binary
    search of some 16 probes, each a seek and a read on a plain file (a prefix query paid about
    1 ms per segment for them). Segment files are written once and never changed in place."""

    def open_file(self, name: str, **kwargs: Any) -> Any:
        if name.endswith(".trm"):
            with open(self._fpath(name), "rb") as f:
                try:
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except (ValueError, OSError):  # empty, or mapping unsupported
                    mapped = None
            if mapped is not None:
                return StructFile(mapped, name=name, **kwargs)
        return super().open_file(name, **kwargs)


class _Index(FileIndex):  # type: ignore[misc]
    """FileIndex whose segments are read with our codec (on disk they name ``W3Codec``)."""

    def _read_toc(self) -> Any:
        toc = super()._read_toc()
        for seg in toc.segments:
            if type(seg._codec) is W3Codec:
                seg._codec = _CODEC
        return toc


class _Writer(SegmentWriter):  # type: ignore[misc]
    """whoosh's writer, plus segments written directly (`add_segment`), committed with it."""

    def __init__(self, ix: Any) -> None:
        # compound=False: a searcher reads a compound segment by copying each part into memory
        super().__init__(ix, codec=_CODEC, compound=False, limitmb=64)
        self._ready: list[Any] = []

    def add_segment(self, segment: Any) -> None:
        self._ready.append(segment)

    def commit(self, mergetype: Any = None, optimize: Any = None, merge: Any = None) -> None:
        self._check_state()
        final = self._merge_segments(mergetype, optimize, merge)
        if self._added:
            final.append(self._finalize_segment())
        else:
            self._close_segment()
        final.extend(self._ready)
        self._commit_toc(final)
        self._finish()


def _drop_unreferenced(ix: Any, storage: Any, segments: Sequence[Any]) -> None:
    """After a failed commit: remove the files of the segments it wrote that no TOC names
    (a full disk must not fill up with the leftovers of each retry)."""
    try:
        live = {seg.segment_id() for seg in ix._segments()}
        names = list(storage.list())
    except Exception:
        return  # the next successful commit cleans them (whoosh removes unnamed files)
    for seg in segments:
        prefix = seg.segment_id()
        if prefix in live:
            continue
        for name in names:
            if name.startswith(prefix + ".") or name.startswith(prefix + "_"):
                try:
                    storage.delete_file(name)
                except Exception:
                    pass


def _abandon(writer: Any) -> None:
    """Cancel a writer whatever state it is in (a full disk can fail the cancel too): close
    its files, drop its temporary storage, and make sure its lock is released."""
    try:
        if not writer.is_closed:
            writer.cancel()
    except Exception:
        pdw, fw = writer.perdocwriter, writer.fieldwriter
        for f in (getattr(getattr(pdw, "_cols", None), "_temp", None),
                  getattr(pdw, "_vpostfile", None), getattr(getattr(fw, "_tindex", None),
                                                            "dbfile", None),
                  getattr(fw, "_postfile", None)):
            try:
                if f is not None:
                    f.close()
            except Exception:
                pass
        searcher = writer._searcher
        closers = [writer.pool.cleanup, writer._tempstorage.destroy]
        if searcher is not None:
            closers.append(searcher._orig_close)
        for cleanup in closers:
            try:
                cleanup()
            except Exception:
                pass
    lock = getattr(writer, "writelock", None)
    if lock is not None and getattr(lock, "fd", None) is not None:
        try:
            lock.release()
        except Exception:
            pass


# -- the index ---------------------------------------------------------------------------------


class SearchIndex:
    """A whoosh index of message documents, in a directory or in memory (``directory=None``).

    ``workers``: processes that write segments (1: this one only; default: 2 when the machine
    has a second core and the index is on disk). ``sealing``: the key (and cache) of an
    encrypted store's index: every file on disk is sealed.
    """

    def __init__(self, directory: str | None, *, workers: int | None = None,
                 readonly: bool = False, sealing: Sealing | None = None) -> None:
        self.directory = directory
        self._sealing = sealing if directory is not None else None
        self._format = _FORMAT if self._sealing is None else _FORMAT + _SEALED
        self.rebuilt = False
        # ``readonly``: another process indexes this directory; this object only reads it and
        # never creates, resets or writes it. ``available`` is False when there was nothing
        # readable (missing or damaged): searches then read the rows instead.
        self.readonly = readonly
        self.available = True
        self.skipped = 0  # documents left out because they could not be indexed
        # ``offload``: the helper writes every segment of a large batch (the caller is a
        # background thread, and the interpreter lock is the importer's)
        self.offload = False
        self._schema = schema()
        if workers is None:
            workers = 2 if (os.cpu_count() or 1) > 1 else 1
        self._split = Split(workers if directory is not None else 1)
        self._columns: dict[tuple[str, str], array[int]] = {}
        if directory is None:
            self._storage: Any = _MemoryStorage()
            self._ix = self._create()
            self.rebuilt = True
        else:
            self._storage = self._disk_storage()
            self._ix = self._open_dir()
        self._generation = self._ix.latest_generation()
        self._searcher = self._ix.searcher()

    def _disk_storage(self) -> Any:
        assert self.directory is not None
        if self._sealing is not None:
            return self._sealing.storage(self.directory)
        return _DiskStorage(self.directory)

    def _create(self, generation: int = 0) -> Any:
        # A reset index goes on from a higher generation than the one it replaces: a reader
        # (another process) that compares generations then never takes it for the old one.
        TOC(self._schema, [], generation).write(self._storage, _INDEXNAME)
        if self.directory is not None:
            with open(os.path.join(self.directory, _FORMAT_FILE), "w", encoding="ascii") as f:
                f.write(self._format)
        return _Index(self._storage, self._schema, _INDEXNAME)

    def _format_ok(self) -> bool:
        assert self.directory is not None
        try:
            with open(os.path.join(self.directory, _FORMAT_FILE), encoding="ascii") as f:
                return f.read() == self._format
        except (OSError, ValueError):
            return False

    def _open_dir(self) -> Any:
        directory = self.directory
        assert directory is not None
        # whoosh leaves the files of a damaged index open; they are closed (collected) here,
        # without the ResourceWarning that is whoosh's, not the caller's, to fix.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                if os.path.isdir(directory) and \
                        TOC._latest_generation(self._storage, _INDEXNAME) >= 0:
                    stored = TOC.read(self._storage, _INDEXNAME)  # its own schema, unpickled
                    if set(stored.schema.names()) == set(self._schema.names()) and \
                            self._format_ok():
                        ix = _Index(self._storage, self._schema, _INDEXNAME)
                        with ix.searcher() as s:
                            for sub, _ in s.leaf_searchers():
                                sub.reader().doc_count()
                        return ix
                    log.warning("search index at %s has an older format; rebuilding it",
                                directory)
                else:
                    log.info("no search index at %s; building it from the database", directory)
            except Exception as exc:  # whoosh raises many unrelated types for a damaged index
                log.warning("search index at %s is damaged (%s); rebuilding it from the "
                            "database", directory, repr(exc))  # repr: keep no frames alive
        if self.readonly:  # the indexing process repairs it; meanwhile an empty stand-in
            self.available = False
            self._storage = _MemoryStorage()
            TOC.create(self._storage, self._schema, _INDEXNAME)
            return _Index(self._storage, self._schema, _INDEXNAME)
        try:  # the new index goes on from a generation the old one never had (see `_create`)
            generation = TOC._latest_generation(self._storage, _INDEXNAME) + 1
        except Exception:
            generation = 0
        _fresh_dir(directory)
        self.rebuilt = True
        return self._create(max(generation, 0))

    def close(self) -> None:
        self._split.close()
        try:
            self._searcher.close()
        except Exception:  # closing a damaged index must not fail
            pass
        self._columns.clear()

    def forget_helper(self) -> None:
        """Drop the helper process without stopping it (in a forked child: it is the
        parent's)."""
        self._split.forget()

    def reset(self) -> None:
        """Start again from an empty index (before a rebuild)."""
        try:
            self._searcher.close()
        except Exception:
            pass
        self._columns.clear()
        try:
            generation = max(self._generation, self._ix.latest_generation()) + 1
        except Exception:  # a damaged index
            generation = self._generation + 1
        if self.directory is None:
            self._storage = _MemoryStorage()
        else:
            _fresh_dir(self.directory)
            self._storage = self._disk_storage()
        self._ix = self._create(generation)
        self._generation = self._ix.latest_generation()
        self._searcher = self._ix.searcher()

    def doc_count(self) -> int:
        try:
            self._fresh()
            return int(self._searcher.doc_count())
        except Exception as exc:
            raise _error("read", exc) from exc

    def row_ids(self) -> list[int]:
        """The row id of every live document, read from disk (not from the column cache), so
        a damaged row-id column shows."""
        try:
            self._fresh()
            out: list[int] = []
            for sub, _ in self._searcher.leaf_searchers():
                reader = sub.reader()
                n = reader.doc_count_all()
                if not n:
                    continue  # an empty index's reader has no columns
                col = column(reader, "rowid")
                if reader.has_deletions():
                    out += [col[d] for d in range(n) if not reader.is_deleted(d)]
                else:
                    out += col[:n].tolist()
            return out
        except Exception as exc:
            raise _error("read", exc) from exc

    def segment_count(self) -> int:
        try:
            return len(self._ix._segments())
        except Exception as exc:
            raise _error("read", exc) from exc

    # -- writing --------------------------------------------------------------------------

    def apply(self, upserts: Sequence[Doc], deletes: Iterable[int], *, new: Sequence[Doc] = (),
              merge: bool = True) -> list[int]:
        """One commit: remove ``deletes``, replace ``upserts``, add ``new`` (documents whose row
        ids the index cannot hold yet, so no look-up for an older copy is needed). Returns the
        row ids left out because they could not be indexed (logged). Raises
        `SearchIndexError`; the index is then as it was and its lock released."""
        try:
            writer = _Writer(self._ix)
        except Exception as exc:
            raise _error("opened for writing", exc) from exc
        skipped: list[int] = []
        try:
            self._delete_rows(writer, [*deletes, *(d.rowid for d in upserts)])
            docs = [*upserts, *new]
            for i in range(0, len(docs), _SEGMENT_DOCS):
                for seg, left in self._build(docs[i:i + _SEGMENT_DOCS]):
                    skipped += left
                    if seg is not None:
                        writer.add_segment(seg)
            writer.commit(mergetype=self._merge_policy if merge else no_merge)
        except BaseException as exc:
            _abandon(writer)
            _drop_unreferenced(self._ix, self._storage, [*writer._ready, writer.newsegment])
            if isinstance(exc, Exception):
                raise _error("written", exc) from exc
            raise
        self.skipped += len(skipped)
        self._refresh()
        return skipped

    @staticmethod
    def _merge_policy(writer: Any, segments: list[Any]) -> list[Any]:
        return merge_tiered(writer, segments, _CODEC)

    def _delete_rows(self, writer: Any, rowids: Sequence[int]) -> None:
        if not rowids or not writer.segments:
            return
        want = set(rowids)
        keys = sorted({key_of(r).encode() for r in want})
        searcher = writer.searcher()
        for sub, offset in searcher.leaf_searchers():
            reader = sub.reader()
            col: array[int] | None = None
            for k in keys:
                if ("key", k) not in reader:
                    continue
                if col is None:
                    col = self._column_of(reader, "rowid")
                m = reader.postings("key", k)
                while m.is_active():
                    d = m.id()
                    if col[d] in want:
                        writer.delete_document(offset + d)
                    m.next()

    def _build(self, docs: Sequence[Doc]) -> list[tuple[Any, list[int]]]:
        """Segments for ``docs``: half of them written by the helper when that pays off (all of
        them when ``offload`` is set: this process has other work for its interpreter)."""
        def here(part: Sequence[Doc]) -> list[tuple[Any, list[int]]]:
            return [write_segment(self._storage, _INDEXNAME, self._schema, part, _CODEC)]

        directory = self.directory
        if directory is None or not self._split.shares(len(docs)):
            return here(docs)
        key = None if self._sealing is None else self._sealing.key
        return self._split.run(docs, 0 if self.offload else len(docs) // 2, here,
                               lambda helper, part: helper.send(directory, part, key),
                               lambda helper: [helper.receive()])

    def fold_rows(self, rows: Sequence[tuple[int, bytes, bytes | None]]
                  ) -> list[tuple[str, str] | None]:
        """`_outbox.fold_rows`, half of the rows folded by the helper when that pays off (a
        rebuild folds every stored message)."""
        if self.directory is None or not self._split.shares(len(rows)):
            return fold_rows(rows)
        return self._split.run(rows, len(rows) // 2, fold_rows,
                               lambda helper, part: helper.send_texts(part),
                               lambda helper: helper.receive_texts())

    def merge_if_fragmented(self, segments: int = MERGE_FACTOR) -> None:
        """Merge (by the tiered policy) once the index has at least ``segments`` segments:
        every segment a search has to visit costs it time."""
        if self.segment_count() >= segments:
            self.merge()

    def merge(self) -> None:
        """Merge segments down to a few (after a series of commits made with ``merge=False``)."""
        try:
            writer = _Writer(self._ix)
        except Exception as exc:
            raise _error("opened for writing", exc) from exc
        try:
            writer.commit(mergetype=self._merge_policy)
        except BaseException as exc:
            _abandon(writer)
            _drop_unreferenced(self._ix, self._storage, [writer.newsegment])
            if isinstance(exc, Exception):
                raise _error("merged", exc) from exc
            raise
        self._refresh()

    # -- reading --------------------------------------------------------------------------

    def _refresh(self) -> None:
        # Searcher.refresh() reuses segment readers and so misses deletions in segments it
        # already had (whoosh-reloaded 2.7.5): open a new one.
        old = self._searcher
        self._searcher = self._ix.searcher()
        self._generation = self._ix.latest_generation()
        live = {s.segment_id() for s in self._ix._segments()}
        for k in [k for k in self._columns if k[0] not in live]:
            del self._columns[k]
        try:
            old.close()
        except Exception:
            pass

    def reopen(self) -> None:
        """Open the searcher again at the latest generation (after an error while reading)."""
        try:
            self._refresh()
        except Exception as exc:
            log.info("could not reopen the search index (%r)", exc)

    def _fresh(self) -> None:
        """Reopen the searcher when another writer (process) committed since."""
        if self.directory is not None and self._ix.latest_generation() != self._generation:
            self._refresh()

    def _column_of(self, reader: Any, fieldname: str) -> array[int]:
        seg = reader.segment()
        key = (seg.segment_id(), fieldname)
        col = self._columns.get(key)
        if col is None or len(col) != reader.doc_count_all():
            col = self._columns[key] = column(reader, fieldname)
        return col

    def is_common(self, words: Sequence[str], fields: Sequence[str], limit: int,
                  rows: int) -> bool:
        """Whether ``limit`` hits are expected within ``rows`` messages read in time order
        (`_hits.share`: the product of the words' shares of documents)."""
        try:
            self._fresh()
            return share(self._searcher, words, fields) * rows >= limit
        except Exception as exc:
            raise _error("read", exc) from exc

    def hits(self, words: Sequence[str], fields: Sequence[str], *, conv_id: str | None,
             start_time: int | None, end_time: int | None) -> list[tuple[int, int]]:
        """(sort time, row id) of every document that may match every word, in that order,
        collected once (a search pages through the list). Sender and type filters are the
        caller's (on the stored rows)."""
        per_word = []
        for w in words:
            alts = [q for q in (word_query(f, w) for f in fields) if q is not None]
            if not alts:
                return []
            per_word.append(alts)
        if conv_id is not None:
            try:
                conv_id.encode("utf-8")
            except UnicodeEncodeError:
                return []  # no document holds it (`write_segment` leaves them out)
            per_word.append([wq.Term("conv", conv_id)])
        try:
            self._fresh()
            hits = collect(self._searcher, per_word, start_time, end_time, self._column_of)
        except Exception as exc:
            raise _error("searched", exc) from exc
        hits.sort()
        return hits
