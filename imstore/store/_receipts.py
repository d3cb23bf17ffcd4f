"""Receipts and the send lifecycle's end: the server's id for a sent message, delivery and read
receipts from peers, group read receipts, and receipts that arrive before their message.

Rules kept here:
- only sent messages take receipts; a receipt for a message not stored yet waits in
  ``pending_receipt`` (a group read receipt in ``group_ack``, which keeps every reader) and is
  applied when the message takes the server's id (`mark_sent`); receipts that wait longer than
  they may for a message that never comes are pruned (`prune_pending`);
- a read receipt implies delivery (`lifecycle.ReceiptKind`); the send status moves along the
  lifecycle's table (`mark_sent` is its ACCEPT event);
- every call is one write transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ErrorCode, IMError
from ..lifecycle import ReceiptKind, SendEvent, next_status, now_ms
from ..message import GroupReadAck, MessageStatus
from ._connection import Connection
from ._conversations import ConversationTable
from ._indexer import SearchWriter
from ._rows import SENT, SUCCEEDED
from ._writes import Writes

__all__ = ["RECEIPT_DELIVERED", "RECEIPT_READ", "Receipts"]

RECEIPT_DELIVERED = ReceiptKind.DELIVERED  # the names store users knew before `ReceiptKind`
RECEIPT_READ = ReceiptKind.READ
_COLUMN = {ReceiptKind.DELIVERED: "is_delivered", ReceiptKind.READ: "is_read_acked"}


class Receipts:
    def __init__(self, conn: Connection, conversations: ConversationTable,
                 indexer: SearchWriter, writes: Writes) -> None:
        self._conn = conn
        self._convs = conversations
        self._indexer = indexer
        self._writes = writes

    def _merge_twin(self, rowid: int, conv_id: str, local_id: str, server_id: str) -> None:
        """``server_id`` is taken: by the server's copy of this very message (same conversation,
        its local id ours or unknown), which then merges into ours; else the send is refused."""
        twin = self._conn.run("SELECT id, conv_id, local_id, is_delivered, is_read_acked FROM "
                              "message WHERE msg_id = ?", (server_id,)).fetchone()
        if twin is None or twin[0] == rowid:
            return
        if twin[1] != conv_id or twin[2] not in (None, local_id):
            raise IMError(ErrorCode.MESSAGE_INVALID,
                          f"server id {server_id!r} already names another stored message (in "
                          f"conversation {twin[1]!r}); the send result does not fit this store")
        self._writes.delete_where("id = ?", (twin[0],), [])
        self._conn.run("UPDATE message SET is_delivered = max(is_delivered, ?), is_read_acked = "
                       "max(is_read_acked, ?) WHERE id = ?", (twin[3], twin[4], rowid))

    def mark_sent(self, local_id: str, server_id: str, server_time: int) -> list[ReceiptKind]:
        """A send succeeded: the message takes the server's id and time (its local id still finds
        it), the replies and thread replies of its conversation that named it by its local id
        name the server's id, and receipts that arrived early are applied; returns their kinds.
        If the server's copy came in first (e.g. with history) the two become one message; a
        server id used by a message of another conversation is refused with MESSAGE_INVALID and
        nothing changes."""
        run = self._conn.run
        with self._conn.tx():
            row = self._writes.find_row(local_id, "id, conv_id, msg_id, status")
            if row is None:
                raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {local_id!r}")
            rowid, conv_id, current, status = row
            status = next_status(MessageStatus(status), SendEvent.ACCEPT)
            self._merge_twin(rowid, conv_id, current, server_id)
            run("UPDATE message SET msg_id = ?, local_id = CASE WHEN msg_id != ? THEN msg_id "
                "ELSE local_id END, server_time = ?, sort_time = ?, status = ? WHERE id = ?",
                (server_id, server_id, server_time, server_time, int(status), rowid))
            if current != server_id:  # replies named it by the local id, as peers never will
                for column in ("reply_to", "thread_id"):
                    run(f"UPDATE message SET {column} = ? WHERE {column} = ? AND conv_id = ?",
                        (server_id, current, conv_id))
            kinds = sorted(ReceiptKind(k) for (k,) in run(
                "SELECT kind FROM pending_receipt WHERE msg_id = ?", (server_id,)).fetchall()
                if k in _COLUMN)
            for kind in kinds:
                cols = ", ".join(f"{_COLUMN[k]} = 1" for k in kind.implied)
                run(f"UPDATE message SET {cols} WHERE id = ?", (rowid,))
            run("DELETE FROM pending_receipt WHERE msg_id = ?", (server_id,))
            run("UPDATE message SET group_ack_count = (SELECT count(*) FROM group_ack "
                "WHERE group_ack.msg_id = ?) WHERE id = ?", (server_id, rowid))
            self._convs.refresh_last(conv_id)
            self._indexer.enqueue([rowid])
        return kinds

    def apply(self, kind: ReceiptKind, msg_ids: Sequence[str]) -> list[str]:
        """Set a receipt (and what it implies) on sent messages; returns the ids that changed."""
        col = _COLUMN[kind]
        cols = ", ".join(f"{_COLUMN[k]} = 1" for k in kind.implied)
        changed = []
        with self._conn.tx():
            for msg_id in dict.fromkeys(msg_ids):
                row = self._writes.find_row(msg_id, f"id, {col}")
                if row is None:
                    self._conn.run("INSERT OR IGNORE INTO pending_receipt (msg_id, kind, "
                                   "received_at) VALUES (?, ?, ?)",
                                   (msg_id, int(kind), now_ms()))
                elif not row[1]:
                    self._conn.run(f"UPDATE message SET {cols} WHERE id = ?", (row[0],))
                    changed.append(msg_id)
        return changed

    def conversation_read(self, conv_id: str, up_to: int | None) -> list[str]:
        """The peer read a conversation: its sent messages that went out (SUCCESS) with a time up
        to ``up_to`` (all when None) are read-acked; returns their ids."""
        cond = "" if up_to is None else " AND sort_time <= ?"
        params: tuple[Any, ...] = (conv_id,) if up_to is None else (conv_id, up_to)
        where = f"conv_id = ? AND {SENT} AND {SUCCEEDED} AND is_read_acked = 0{cond}"
        with self._conn.tx():
            ids = [r[0] for r in self._conn.run(f"SELECT msg_id FROM message WHERE {where}",
                                                params).fetchall()]
            self._conn.run(f"UPDATE message SET is_read_acked = 1, is_delivered = 1 WHERE {where}",
                           params)
        return ids

    def add_group_acks(self, acks: Sequence[Any]) -> dict[str, int]:
        """Record group read receipts; msg_id -> distinct readers, for the stored messages whose
        count changed."""
        out: dict[str, int] = {}
        run = self._conn.run
        with self._conn.tx():
            for ack in acks:
                if run("INSERT OR IGNORE INTO group_ack (msg_id, reader, ack_time) VALUES (?, ?, ?)",
                       (ack.msg_id, ack.reader, ack.timestamp)).rowcount:
                    out[ack.msg_id] = 0
            for msg_id in out:
                run("UPDATE message SET group_ack_count = (SELECT count(*) FROM group_ack "
                    "WHERE msg_id = ?) WHERE msg_id = ?", (msg_id, msg_id))
                row = run("SELECT group_ack_count FROM message WHERE msg_id = ?",
                          (msg_id,)).fetchone()
                out[msg_id] = row[0] if row else -1
        return {k: v for k, v in out.items() if v >= 0}

    def group_acks(self, msg_id: str) -> list[GroupReadAck]:
        """The group read receipts kept for a message (by its server id), oldest first."""
        rows = self._conn.run("SELECT g.reader, g.ack_time, m.conv_id FROM group_ack g LEFT JOIN "
                              "message m ON m.msg_id = g.msg_id WHERE g.msg_id = ? "
                              "ORDER BY g.ack_time, g.reader", (msg_id,)).fetchall()
        return [GroupReadAck(msg_id, conv or "", reader, at) for reader, at, conv in rows]

    def prune_pending(self, older_than_ms: int) -> int:
        """Forget receipts that have waited more than ``older_than_ms`` for their message (or
        whose arrival time is unknown), group read receipts of messages not stored included;
        returns how many."""
        cutoff = now_ms() - older_than_ms
        with self._conn.tx():
            n = self._conn.run("DELETE FROM pending_receipt WHERE received_at IS NULL OR "
                               "received_at <= ?", (cutoff,)).rowcount
            n += self._conn.run("DELETE FROM group_ack WHERE msg_id IN (SELECT g.msg_id FROM "
                                "group_ack g LEFT JOIN message m ON m.msg_id = g.msg_id WHERE "
                                "m.id IS NULL GROUP BY g.msg_id HAVING max(g.ack_time) <= ?)",
                                (cutoff,)).rowcount
        return int(n)

    def pending_count(self) -> int:
        return int(self._conn.one("SELECT count(*) FROM pending_receipt")[0])
