"""Change notification: after each write transaction commits, which conversations changed and
whether the total unread count changed.

Rules kept here:
- what changed is seen by SQLite itself, not told by each write path: temporary triggers on the
  ``conversation`` table (made on each SQLite connection the store writes through) call back
  into this process for every row inserted, deleted or changed in any column, and say whether
  its unread count changed outside chat rooms (the rooms `total_unread_count` leaves out);
- listeners hear one `Changes` per committed transaction of this process that changed
  something, after the commit and outside the writer lock, in the thread that wrote; a
  rolled-back transaction is never heard of; a listener's exception is logged, never raised
  into the write that caused it (writes by other processes are not heard);
- with no listener the triggers' call does nothing and nothing is read after commits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._connection import Connection
from ._rows import NOT_ROOMS

__all__ = ["ChangeFeed", "Changes"]

log = logging.getLogger("imstore.store")

_FUNC = "imstore_conversation_changed"


@dataclass(frozen=True, slots=True)
class Changes:
    """What one committed write transaction changed: the ids of the conversations whose row
    changed (unread count, last message, activity, title, pin, marks, draft, ext; created or
    deleted), and the new total unread count when it changed (else None)."""

    conversations: frozenset[str]
    total_unread: int | None


class ChangeFeed:
    """Collects the conversations a write transaction changes; tells listeners after commit.
    `Connection` calls `begin`, `committed` and `rolled_back` around each outermost write
    transaction while there is a listener."""

    def __init__(self, conn: Connection, total_unread: Callable[[], int]) -> None:
        self._conn = conn
        self._total_unread = total_unread
        self._listeners: list[Callable[[Changes], None]] = []
        self._changed: set[str] = set()
        self._total_moved = False
        self._active = False
        self._installed = threading.local()

    def _on_row(self, conv_id: Any, unread_moved: Any) -> None:
        if self._active:
            self._changed.add(str(conv_id))
            if unread_moved:
                self._total_moved = True

    # ----------------------------------------------------------------------------- listeners

    def subscribe(self, listener: Callable[[Changes], None]) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)
        if self not in self._conn.watchers:
            self._conn.watchers.append(self)

    def unsubscribe(self, listener: Callable[[Changes], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
        if not self._listeners and self in self._conn.watchers:
            self._conn.watchers.remove(self)

    # ---------------------------------------------------- called by Connection around a write

    def begin(self) -> None:
        """A write transaction starts (writer lock held): make the triggers on this thread's
        SQLite connection if it has none yet, and start collecting."""
        raw = self._conn.db.connection()
        if getattr(self._installed, "raw", None) is not raw:
            raw.create_function(_FUNC, 2, self._on_row)
            for sql in _triggers(raw):
                raw.execute(sql)
            self._installed.raw = raw
        self._changed.clear()
        self._total_moved = False
        self._active = True

    def rolled_back(self) -> None:
        self._active = False
        self._changed.clear()

    def committed(self) -> None:
        """The transaction committed (the writer lock is released): tell the listeners."""
        self._active = False
        if not self._changed:
            return
        changed = Changes(frozenset(self._changed),
                          self._total_unread() if self._total_moved else None)
        self._changed.clear()
        for listener in list(self._listeners):
            try:
                listener(changed)
            except Exception:  # the write has committed: a listener cannot undo it
                log.exception("a store change listener raised")


def _triggers(raw: Any) -> list[str]:
    """The temporary triggers of one SQLite connection (they list the table's columns, read
    from the connection itself)."""
    columns = [r[1] for r in raw.execute("PRAGMA main.table_info(conversation)").fetchall()]
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
    counted = NOT_ROOMS.replace("chat_type", "{row}.chat_type")
    return [
        "CREATE TEMP TRIGGER IF NOT EXISTS imstore_conversation_added AFTER INSERT ON "
        f"main.conversation BEGIN SELECT {_FUNC}(NEW.conv_id, NEW.unread_count != 0 AND "
        f"{counted.format(row='NEW')}); END",
        "CREATE TEMP TRIGGER IF NOT EXISTS imstore_conversation_removed AFTER DELETE ON "
        f"main.conversation BEGIN SELECT {_FUNC}(OLD.conv_id, OLD.unread_count != 0 AND "
        f"{counted.format(row='OLD')}); END",
        "DROP TRIGGER IF EXISTS temp.imstore_conversation_changed",
        "CREATE TEMP TRIGGER imstore_conversation_changed AFTER UPDATE ON main.conversation "
        f"WHEN {changed} BEGIN SELECT {_FUNC}(NEW.conv_id, "
        f"(OLD.unread_count IS NOT NEW.unread_count AND {counted.format(row='NEW')}) OR "
        f"(OLD.chat_type IS NOT NEW.chat_type)); END",
    ]
