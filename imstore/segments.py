"""Where indexes written before `imstore.index` find their tokenizer.

whoosh pickles an index's schema into its TOC file, naming the tokenizer's class by module:
indexes written before the index became a package name ``imstore.segments.ImTokenizer``. This
module keeps that name importable, so those indexes open as they are instead of being rebuilt.
Everything else of the index lives in `imstore.index`.
"""

from .index import ImTokenizer

__all__ = ["ImTokenizer"]
