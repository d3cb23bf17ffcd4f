"""The store's name for its index owner: `imstore.index.Indexer` (the outbox, the indexer
thread, the lease and the rebuild live in the `imstore.index` package; this module only gives
the store's parts one place to import it from)."""

from ..index import Indexer as SearchWriter
from ..index import IndexPolicy, IndexStatus

__all__ = ["IndexPolicy", "IndexStatus", "SearchWriter"]
