"""Reactions: who reacted with which key to which stored message.

Rules kept here:
- one row per (message, key, sender) in ``reaction``, with the server's id of the reaction when
  known (so a removal that names only that id finds it); applying a reaction twice changes
  nothing, and removing one that is not there changes nothing;
- ``reaction_count`` (per message and key: how many senders, and when the first reacted) is
  derived state, changed by SQL arithmetic in the transaction that changes ``reaction``, and
  recounted by `verify`;
- reactions belong to a message row: a reaction to a message not stored here is not kept, and
  deleting a message deletes its reactions (``ON DELETE CASCADE``). They are not messages: they
  never count as unread and never appear in a page.

Every method that writes runs inside the caller's open write transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..message import REACTION_SENDERS, Reaction, ReactionRecord
from ._connection import Connection, chunks, marks

__all__ = ["Reactions"]

_COUNTS = ("SELECT key, count FROM reaction_count WHERE message_id = ? "
           "ORDER BY first_at, key")
_SENDERS = ("SELECT sender FROM reaction WHERE message_id = ? AND key = ? "
            "ORDER BY created_at, sender LIMIT ?")
_Query = Callable[[str, tuple[Any, ...]], list[Any]]
# every sender's reaction, for an export: oldest first, as they were applied
_RECORDS = ("SELECT m.msg_id, r.key, r.sender, r.reaction_id, r.created_at FROM message m "
            "JOIN reaction r ON r.message_id = m.id WHERE m.msg_id IN ({}) "
            "ORDER BY r.message_id, r.created_at, r.key, r.sender")
_MINE = "SELECT key FROM reaction WHERE message_id = ? AND sender = ?"
_TRUE_COUNT = ("(SELECT count(*) FROM reaction r WHERE r.message_id = reaction_count.message_id "
               "AND r.key = reaction_count.key)")


class Reactions:
    def __init__(self, conn: Connection, owner: str) -> None:
        self._conn = conn
        self._owner = owner

    def _rowid(self, msg_id: str) -> int | None:
        run = self._conn.run
        row = (run("SELECT id FROM message WHERE msg_id = ?", (msg_id,)).fetchone()
               or run("SELECT id FROM message WHERE local_id = ?", (msg_id,)).fetchone())
        return None if row is None else int(row[0])

    def _msg_id(self, rowid: int) -> str:
        return str(self._conn.run("SELECT msg_id FROM message WHERE id = ?",
                                  (rowid,)).fetchone()[0])

    # ------------------------------------------------------------------------------- writing

    def add(self, msg_id: str, key: str, sender: str, reaction_id: str | None,
            at: int) -> list[Reaction] | None:
        """Record a reaction; returns the message's reactions after, or None when nothing
        changed (already there, or no such message). A known reaction takes the server's id
        when it had none (the echo of one's own reaction)."""
        rowid = self._rowid(msg_id)
        if rowid is None:
            return None
        run = self._conn.run
        had = run("SELECT reaction_id FROM reaction WHERE message_id = ? AND key = ? AND sender = ?",
                  (rowid, key, sender)).fetchone()
        if had is not None:
            if reaction_id is not None and had[0] != reaction_id:
                run("UPDATE reaction SET reaction_id = ? WHERE message_id = ? AND key = ? "
                    "AND sender = ?", (reaction_id, rowid, key, sender))
            return None
        run("INSERT INTO reaction (message_id, key, sender, reaction_id, created_at) "
            "VALUES (?, ?, ?, ?, ?)", (rowid, key, sender, reaction_id, at))
        run("INSERT INTO reaction_count (message_id, key, count, first_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (message_id, key) DO UPDATE SET count = count + 1, "
            "first_at = min(first_at, excluded.first_at)", (rowid, key, at))
        return self._of_row(rowid)

    def remove(self, msg_id: str, key: str, sender: str) -> list[Reaction] | None:
        """Remove one sender's reaction; the message's reactions after, or None when there was
        none."""
        rowid = self._rowid(msg_id)
        if rowid is None:
            return None
        return self._remove(rowid, key, sender)

    def remove_by_id(self, reaction_id: str) -> tuple[str, list[Reaction]] | None:
        """Remove the reaction the server knows as ``reaction_id``; (its message's id, the
        message's reactions after), or None when no reaction has that id."""
        row = self._conn.run("SELECT message_id, key, sender FROM reaction WHERE reaction_id = ?",
                             (reaction_id,)).fetchone()
        if row is None:
            return None
        after = self._remove(row[0], row[1], row[2])
        assert after is not None
        return self._msg_id(row[0]), after

    def _remove(self, rowid: int, key: str, sender: str) -> list[Reaction] | None:
        run = self._conn.run
        if not run("DELETE FROM reaction WHERE message_id = ? AND key = ? AND sender = ?",
                   (rowid, key, sender)).rowcount:
            return None
        run("UPDATE reaction_count SET count = count - 1 WHERE message_id = ? AND key = ?",
            (rowid, key))
        run("DELETE FROM reaction_count WHERE message_id = ? AND key = ? AND count <= 0",
            (rowid, key))
        return self._of_row(rowid)

    # ------------------------------------------------------------------------------- reading

    def of(self, msg_id: str) -> list[Reaction]:
        """A message's reactions, the oldest key first ([] for an unknown message)."""
        q = self._conn.one
        row = (q("SELECT id FROM message WHERE msg_id = ?", (msg_id,))
               or q("SELECT id FROM message WHERE local_id = ?", (msg_id,)))
        return [] if row is None else self._of_row(int(row[0]), self._conn.query)

    def _in_tx(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return list(self._conn.run(sql, params).fetchall())

    def _of_row(self, rowid: int, query: _Query | None = None) -> list[Reaction]:
        """The reactions of message row ``rowid`` (read in the caller's transaction unless
        another ``query`` is given)."""
        q = query or self._in_tx
        counts = q(_COUNTS, (rowid,))
        if not counts:
            return []
        mine = {r[0] for r in q(_MINE, (rowid, self._owner))}
        return [Reaction(key, count, tuple(r[0] for r in q(_SENDERS, (rowid, key,
                                                                      REACTION_SENDERS))),
                         key in mine)
                for key, count in counts]

    def records(self, msg_ids: Sequence[str]) -> list[ReactionRecord]:
        """Every sender's reaction to the stored messages among ``msg_ids``, each message's
        oldest first (one query per `chunks` of ids)."""
        out: list[ReactionRecord] = []
        for part in chunks(msg_ids):
            out += [ReactionRecord(r[0], r[1], r[2], r[3], int(r[4])) for r in
                    self._conn.query(_RECORDS.format(marks(len(part))), tuple(part))]
        return out

    def reaction_id(self, msg_id: str, key: str, sender: str) -> str | None:
        """The server's id of one sender's reaction (None: unknown or not there)."""
        q = self._conn.one
        row = q("SELECT r.reaction_id FROM reaction r JOIN message m ON m.id = r.message_id "
                "WHERE (m.msg_id = ? OR m.local_id = ?) AND r.key = ? AND r.sender = ?",
                (msg_id, msg_id, key, sender))
        return None if row is None else row[0]

    # -------------------------------------------------------------------------------- verify

    def verify(self) -> int:
        """Recount ``reaction_count`` from ``reaction`` (in the caller's transaction); returns
        how many counts were wrong, missing or left over."""
        run = self._conn.run
        wrong = run(f"UPDATE reaction_count SET count = {_TRUE_COUNT} "
                    f"WHERE count != {_TRUE_COUNT}").rowcount
        wrong += run("DELETE FROM reaction_count WHERE count <= 0").rowcount
        wrong += run("INSERT INTO reaction_count (message_id, key, count, first_at) "
                     "SELECT message_id, key, count(*), min(created_at) FROM reaction r "
                     "WHERE NOT EXISTS (SELECT 1 FROM reaction_count c WHERE "
                     "c.message_id = r.message_id AND c.key = r.key) "
                     "GROUP BY message_id, key").rowcount
        return int(wrong)
