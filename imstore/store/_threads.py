"""Threads: the replies of each thread root, and each conversation's threads.

Rules kept here:
- a thread reply is a message whose ``thread_id`` names its root; it is outside its
  conversation's main timeline (pages, the last message) and read here, by its root, with the
  same keyset paging as `Reads.page`; a root need not be stored (replies can arrive first);
- ``thread`` (per root: conversation, reply count, newest reply) is derived state kept by the
  schema's triggers on every insert and delete of a reply, so no write path can forget it;
  `verify` recounts it from the message rows.
"""

from __future__ import annotations

from ..message import Direction, Message, ThreadSummary
from ._connection import Connection
from ._reads import Reads
from ._rows import keyset_pages, row_to_message, select_columns

__all__ = ["Threads"]

_PAGE_SQL = keyset_pages("thread_id")
_M_COLUMNS = select_columns("m.")
# newest thread first; its newest reply read in the same statement
_THREADS = (f"SELECT t.root, t.reply_count, {_M_COLUMNS} FROM thread t "
            "LEFT JOIN message m ON m.id = t.last_rowid WHERE t.conv_id = ? "
            "ORDER BY t.last_sort DESC, t.last_rowid DESC LIMIT ?")
# what ``thread`` must hold, from the message rows
_TRUE = ("SELECT thread_id AS root, min(conv_id) AS conv, count(*) AS n, "
         "(SELECT id FROM message r WHERE r.thread_id = m.thread_id "
         " ORDER BY sort_time DESC, id DESC LIMIT 1) AS last FROM message m "
         "WHERE thread_id IS NOT NULL GROUP BY thread_id")


class Threads:
    def __init__(self, conn: Connection, reads: Reads) -> None:
        self._conn = conn
        self._reads = reads

    def page(self, root: str, start_msg_id: str | None, limit: int,
             direction: Direction) -> list[Message]:
        """Replies of a thread, oldest first (UP: the newest ``limit``, or those just before
        ``start_msg_id``; DOWN the other way)."""
        if start_msg_id is None:
            rows = self._conn.query(_PAGE_SQL[direction, False], (root, limit))
        else:
            sort, rowid = self._reads.anchor(start_msg_id)
            rows = self._conn.query(_PAGE_SQL[direction, True], (root, sort, rowid, limit))
        if direction == Direction.UP:
            rows.reverse()
        return [row_to_message(r) for r in rows]

    def of_conversation(self, conv_id: str, limit: int) -> list[ThreadSummary]:
        """A conversation's threads, the one with the newest reply first."""
        return [ThreadSummary(r[0], int(r[1]), row_to_message(r[2:]) if r[2] is not None else None)
                for r in self._conn.query(_THREADS, (conv_id, limit))]

    def verify(self) -> int:
        """Rebuild ``thread`` when it disagrees with the message rows (in the caller's
        transaction); returns how many threads were wrong, missing or left over."""
        run = self._conn.run
        true = {r[0]: (r[1], r[2], r[3]) for r in run(_TRUE).fetchall()}
        kept = {r[0]: (r[1], r[2], r[3]) for r in run(
            "SELECT root, conv_id, reply_count, last_rowid FROM thread").fetchall()}
        wrong = sum(1 for k in true.keys() | kept.keys() if true.get(k) != kept.get(k))
        if wrong:
            run("DELETE FROM thread")
            run("INSERT INTO thread (root, conv_id, reply_count, last_rowid, last_sort) "
                "SELECT t.root, t.conv, t.n, t.last, (SELECT sort_time FROM message WHERE "
                f"id = t.last) FROM ({_TRUE}) AS t")
        return wrong
