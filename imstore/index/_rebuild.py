"""Rebuilding the index from SQLite, here or asked of the process that indexes.

Rules kept here:
- the one way a rebuild starts (`start_over`): every message queued in the outbox and the
  rebuild mark cleared in one transaction, then the index emptied. In this order no search
  ever misses a message (it is in the index, the outbox, or both), and a crash before the reset
  leaves entries the next indexer replays over the old documents;
- a process that is not the indexer asks for a rebuild with a mark in ``meta``
  (``index_stale``, `ask`); the indexer looks for it (`asked`) at open and at every idle poll,
  and clears it in the transaction that queues the rebuild, so the asker knows when its rebuild
  was served and waits only for the entries queued then, not for later writes;
- the texts of every message are folded half here, half in the index's helper process
  (`SearchIndex.fold_rows`), with the garbage collector paused (`_collector`).
"""

from __future__ import annotations

from typing import Any

from ._collector import collector_paused
from ._outbox import Outbox

__all__ = ["Rebuild"]

_STALE = "index_stale"  # meta key: the indexer must rebuild (another process asked for it)


class Rebuild:
    def __init__(self, conn: Any, outbox: Outbox) -> None:
        self._conn = conn
        self._outbox = outbox

    def asked(self) -> bool:
        return self._conn.one(f"SELECT 1 FROM meta WHERE key = '{_STALE}'") is not None

    def ask(self) -> None:
        self._conn.execute(f"INSERT OR REPLACE INTO meta (key, value) VALUES ('{_STALE}', '1')")

    def start_over(self, index: Any, *, reset: bool = True) -> int:
        """Queue every message and clear the mark (one transaction), then empty ``index``
        (unless it is new); returns how many messages were queued."""
        with self._conn.tx() as db, collector_paused():
            done = self._outbox.enqueue_everything(db, index.fold_rows)
            db.execute_sql(f"DELETE FROM meta WHERE key = '{_STALE}'")
        if reset:
            with self._conn.guard():
                index.reset()
        return done
