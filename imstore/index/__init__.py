"""The keyword index of a store: the only package that imports whoosh.

Its parts, each owning one rule (each module opens with the rules it keeps):

- `_format`: the file format (schema, codec) and the direct segment writer;
- `_merge`: the tiered merge policy and the direct merge;
- `_helper`: the helper process that writes segments, both ends of its pipe;
- `_whoosh`: `SearchIndex`, the whoosh boundary (opening, writing, reading, `SearchIndexError`).
"""

from ._format import Doc, ImCodec, ImTokenizer, key_of, schema, write_segment
from ._merge import merge_segments
from ._whoosh import SearchIndex, SearchIndexError

__all__ = ["Doc", "ImCodec", "ImTokenizer", "SearchIndex", "SearchIndexError", "key_of",
           "merge_segments", "schema", "write_segment"]
