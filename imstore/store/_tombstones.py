"""Tombstones: what the user deleted on this device stays deleted when the server sends it again.

Rules kept here:
- every local delete (one message, several ids, a time range, a cleared conversation) leaves a
  tombstone in the transaction that deletes: the ids of each deleted message (its server id and
  the local id it had before sending), and for a time range or a cleared conversation a range of
  sort times of that conversation;
- a range never reaches past the newest message the conversation held when it was deleted, so a
  message that arrives later with a newer time comes in as usual ("new messages after the clear");
- merges from the server (history pages, the conversation list's last messages, live delivery)
  leave out every message a tombstone covers (`screen`); deliberate writes (`insert_message`,
  imports) lift the id tombstones of what they write, so no stored message has an id tombstone
  (verify checks that);
- tombstones only grow through deletes; they are rows, never guessed from what is missing.

Every method but `lift_ids` runs inside the caller's open write transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..lifecycle import INT64_MAX, INT64_MIN
from ._connection import Connection, chunks, marks
from ._rows import MessageRow

__all__ = ["TABLES", "Tombstones"]

TABLES = (
    "CREATE TABLE IF NOT EXISTS tombstone (msg_id TEXT PRIMARY KEY, conv_id TEXT NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS tombstone_range (id INTEGER PRIMARY KEY, conv_id TEXT NOT NULL, "
    "start_time INTEGER NOT NULL, end_time INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS tombstone_range_conv ON tombstone_range (conv_id, start_time)",
)


class Tombstones:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # ------------------------------------------------------------------------------ burying

    def bury_where(self, where: str, params: Sequence[Any]) -> None:
        """Leave id tombstones for the message rows matching ``where`` (before they are deleted)."""
        run = self._conn.run
        run(f"INSERT OR IGNORE INTO tombstone (msg_id, conv_id) SELECT msg_id, conv_id "
            f"FROM message WHERE {where}", params)
        run(f"INSERT OR IGNORE INTO tombstone (msg_id, conv_id) SELECT local_id, conv_id "
            f"FROM message WHERE ({where}) AND local_id IS NOT NULL", params)

    def bury_range(self, conv_id: str, start_time: int, end_time: int) -> None:
        """Leave a range tombstone over [start_time, end_time], cut at the conversation's newest
        stored message (nothing is buried when the range holds no stored time)."""
        newest = self._conn.run("SELECT max(sort_time) FROM message WHERE conv_id = ?",
                                (conv_id,)).fetchone()[0]
        if newest is None:
            return
        end = min(end_time, int(newest))
        if end < start_time:
            return
        run = self._conn.run
        # merge with the ranges it overlaps or touches, so a conversation keeps few of them
        rows = run("SELECT id, start_time, end_time FROM tombstone_range WHERE conv_id = ? AND "
                   "start_time <= ? AND end_time >= ?",
                   (conv_id, end + 1 if end < INT64_MAX else end,
                    start_time - 1 if start_time > INT64_MIN else start_time)).fetchall()
        lo = min([start_time, *(r[1] for r in rows)])
        hi = max([end, *(r[2] for r in rows)])
        for part in chunks([r[0] for r in rows]):
            run(f"DELETE FROM tombstone_range WHERE id IN ({marks(len(part))})", tuple(part))
        run("INSERT INTO tombstone_range (conv_id, start_time, end_time) VALUES (?, ?, ?)",
            (conv_id, lo, hi))

    def lift_ids(self, msg_ids: Iterable[str]) -> None:
        """Messages written on purpose (insert, import) are no longer deleted."""
        ids = [i for i in msg_ids if i]
        if not ids or self._conn.run("SELECT 1 FROM tombstone LIMIT 1").fetchone() is None:
            return
        for part in chunks(ids):
            self._conn.run(f"DELETE FROM tombstone WHERE msg_id IN ({marks(len(part))})",
                           tuple(part))

    # ---------------------------------------------------------------------------- screening

    def screen(self, rows: Sequence[MessageRow],
               local_ids: Mapping[str, str] | None = None) -> set[str]:
        """The msg_ids among ``rows`` that a tombstone covers (by id, local id or time range).
        ``local_ids`` maps server ids to the local ids the sender's device gave them, when the
        server said (the rows may not carry them)."""
        if not rows:
            return set()
        run = self._conn.run
        aliases = dict(local_ids or {})
        for r in rows:
            if r.local_id:
                aliases.setdefault(r.msg_id, r.local_id)
        ids = list({r.msg_id for r in rows} | {aliases[r.msg_id] for r in rows
                                                if r.msg_id in aliases})
        buried: set[str] = set()
        for part in chunks(ids):
            buried.update(x for (x,) in run(f"SELECT msg_id FROM tombstone WHERE msg_id IN "
                                            f"({marks(len(part))})", tuple(part)).fetchall())
        ranges: dict[str, list[tuple[int, int]]] = {}
        convs = list({r.conv_id for r in rows})
        for part in chunks(convs):
            for conv_id, lo, hi in run(f"SELECT conv_id, start_time, end_time FROM "
                                       f"tombstone_range WHERE conv_id IN ({marks(len(part))})",
                                       tuple(part)).fetchall():
                ranges.setdefault(conv_id, []).append((lo, hi))
        out = set()
        for r in rows:
            if r.msg_id in buried or aliases.get(r.msg_id) in buried or any(
                    lo <= r.sort_time <= hi for lo, hi in ranges.get(r.conv_id, ())):
                out.add(r.msg_id)
        return out

    # ------------------------------------------------------------------------------ reading

    def is_buried(self, msg_id: str) -> bool:
        return self._conn.one("SELECT 1 FROM tombstone WHERE msg_id = ?", (msg_id,)) is not None

    def ranges(self, conv_id: str) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in self._conn.query(
            "SELECT start_time, end_time FROM tombstone_range WHERE conv_id = ? "
            "ORDER BY start_time", (conv_id,))]

    # ------------------------------------------------------------------------------- verify

    def verify(self) -> int:
        """Drop id tombstones of messages that are stored (the message is the truth: something
        wrote it behind the store's back); returns how many were dropped."""
        return int(self._conn.run(
            "DELETE FROM tombstone WHERE msg_id IN (SELECT msg_id FROM message) OR msg_id IN "
            "(SELECT local_id FROM message WHERE local_id IS NOT NULL)").rowcount)
