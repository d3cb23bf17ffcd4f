"""Pinned messages: per conversation, the messages pinned there, newest pin first.

Rules kept here:
- a pin belongs to a stored message row (a pin of a message not stored here is not kept) and
  goes with it (``ON DELETE CASCADE``); pinning twice keeps the first pin, unpinning what is not
  pinned changes nothing;
- a pin is in the message's conversation.

Every method that writes runs inside the caller's open write transaction.
"""

from __future__ import annotations

from ..message import Message, PinRecord
from ._connection import Connection
from ._rows import row_to_message, select_columns

__all__ = ["Pins"]

_M_COLUMNS = select_columns("m.")
_PINNED = (f"SELECT {_M_COLUMNS} FROM pinned_message p JOIN message m ON m.id = p.message_id "
           "WHERE p.conv_id = ? ORDER BY p.pinned_at DESC, p.message_id DESC")
_RECORDS = ("SELECT m.msg_id, p.pinned_at, p.pinned_by FROM pinned_message p "
            "JOIN message m ON m.id = p.message_id WHERE p.conv_id = ? "
            "ORDER BY p.pinned_at DESC, p.message_id DESC")


class Pins:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def apply(self, msg_id: str, pinned: bool, by: str | None, at: int) -> str | None:
        """Pin or unpin a stored message; returns its conversation when that changed anything,
        else None."""
        run = self._conn.run
        row = (run("SELECT id, conv_id FROM message WHERE msg_id = ?", (msg_id,)).fetchone()
               or run("SELECT id, conv_id FROM message WHERE local_id = ?", (msg_id,)).fetchone())
        if row is None:
            return None
        rowid, conv_id = row
        if pinned:
            n = run("INSERT OR IGNORE INTO pinned_message (message_id, conv_id, pinned_at, "
                    "pinned_by) VALUES (?, ?, ?, ?)", (rowid, conv_id, at, by)).rowcount
        else:
            n = run("DELETE FROM pinned_message WHERE message_id = ?", (rowid,)).rowcount
        return str(conv_id) if n else None

    def of(self, conv_id: str) -> list[Message]:
        return [row_to_message(r) for r in self._conn.query(_PINNED, (conv_id,))]

    def records(self, conv_id: str) -> list[PinRecord]:
        """The pins of a conversation as kept (time, by whom), the newest pin first."""
        return [PinRecord(str(r[0]), int(r[1]), r[2])
                for r in self._conn.query(_RECORDS, (conv_id,))]
