"""The keyword index of a store: the only package that imports whoosh.

Its parts, each owning one rule (each module opens with the rules it keeps):

- `_format`: the file format (schema, codec) and the direct segment writer;
- `_merge`: the tiered merge policy and the direct merge;
- `_helper`: the helper process that writes segments (and folds a rebuild's texts), both ends
  of its pipe;
- `_collector`: the garbage collector paused for bulk batches;
- `_whoosh`: `SearchIndex`, the whoosh boundary (opening, writing, reading, `SearchIndexError`);
- `_outbox`: the ``search_outbox`` table, written in each write transaction;
- `_lease`: which process indexes a store directory (``search.lock``);
- `_rebuild`: starting the index over, here or asked of the indexing process;
- `_indexer`: `Indexer`, what the store calls: enqueue, settle, wait, rebuild, take-over,
  pause, status — with the lock rule every caller follows; `IndexStatus`;
- `_worker`: `Worker`, the one owner of the writing index (a thread taking commands through a
  queue; in memory, one caller at a time); `IndexPolicy`.

The store (`imstore.store`) uses `Indexer`, `IndexPolicy`, `IndexStatus` and `SearchIndexError`;
tests and benchmarks may use `SearchIndex` and the format names directly.
"""

from ._format import Doc, ImCodec, ImTokenizer, key_of, schema, write_segment
from ._indexer import Indexer, IndexStatus
from ._lease import LOCK_FILE, try_lock
from ._merge import merge_segments
from ._whoosh import SearchIndex, SearchIndexError
from ._worker import IndexPolicy

__all__ = ["LOCK_FILE", "Doc", "ImCodec", "ImTokenizer", "IndexPolicy",
           "IndexStatus", "Indexer", "SearchIndex", "SearchIndexError", "key_of",
           "merge_segments", "schema", "try_lock", "write_segment"]
