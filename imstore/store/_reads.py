"""Reading: messages by id, pages, type and time filters, the conversation list, unread counts.

Rules kept here:
- every paged read anchors on a message and pages on (sort time, row id) with keyset conditions,
  never OFFSET; pages come back oldest first;
- a conversation's pages, type and time filters read its main timeline (`MAIN`): thread replies
  are read by their root (`_threads`); lookups by id and search see every message;
- the conversation list is pinned conversations first (newest pin first), then by activity, in
  the order of an index; a marks filter keeps the conversations that have every mark given;
- hot reads (pages, unread counts, the conversation list) run SQL strings built once, at import;
- reads take no writer lock on disk (WAL readers run beside the writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..checks import check_id
from ..errors import ErrorCode, IMError
from ..message import ChatType, Conversation, Direction, Message
from ._connection import Connection, marks
from ._rows import (
    CONVERSATION_LIST_SQL,
    MAIN,
    MARK_SEPARATOR,
    NOT_ROOMS,
    PAGE_FROM_SQL,
    PAGE_SQL,
    SELECT_COLUMNS,
    row_to_message,
    to_conversation,
)

__all__ = ["Reads"]

_FIND = f"SELECT {SELECT_COLUMNS} FROM message WHERE msg_id = ?"
_FIND_LOCAL = f"SELECT {SELECT_COLUMNS} FROM message WHERE local_id = ?"
_UNREAD = "SELECT unread_count FROM conversation WHERE conv_id = ?"
_TOTAL_UNREAD = f"SELECT total(unread_count) FROM conversation WHERE unread_count > 0 AND {NOT_ROOMS}"
_ONE_CONVERSATION = CONVERSATION_LIST_SQL.format(where="WHERE conv_id = ?")
_ALL_CONVERSATIONS = CONVERSATION_LIST_SQL.format(where="")
_CONVERSATIONS_OF_TYPE = CONVERSATION_LIST_SQL.format(where="WHERE chat_type = ?")
_HAS_MARK = "instr(marks, ?) > 0"


class Reads:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def find_row(self, msg_id: str, cols: str = SELECT_COLUMNS) -> Any:
        """A message row by its id, or by its local id from before the server renamed it."""
        q = self._conn.one
        if cols == SELECT_COLUMNS:
            return q(_FIND, (msg_id,)) or q(_FIND_LOCAL, (msg_id,))
        return (q(f"SELECT {cols} FROM message WHERE msg_id = ?", (msg_id,))
                or q(f"SELECT {cols} FROM message WHERE local_id = ?", (msg_id,)))

    def get(self, msg_id: str) -> Message | None:
        row = self.find_row(msg_id)
        return row_to_message(row) if row else None

    def anchor(self, msg_id: str) -> tuple[int, int]:
        """The (sort_time, row id) of a stored message, the key pages are anchored on."""
        row = self.find_row(msg_id, "sort_time, id")
        if row is None:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"no stored message has id {msg_id!r}; page from a stored message")
        return row[0], row[1]

    def anchor_in(self, conv_id: str, msg_id: str | None,
                  field: str = "start_msg_id") -> tuple[int, int] | None:
        """The page key of ``msg_id`` (None: None), which must be a stored message of
        ``conv_id``."""
        if msg_id is None:
            return None
        check_id(msg_id, field)
        row = self.find_row(msg_id, "sort_time, id, conv_id")
        if row is None or row[2] != conv_id:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{field} {msg_id!r} is not a stored message of conversation "
                          f"{conv_id!r}; page from one of its messages")
        return int(row[0]), int(row[1])

    def page(self, conv_id: str, start_msg_id: str | None, limit: int,
             direction: Direction) -> list[Message]:
        if start_msg_id is None:
            rows = self._conn.query(PAGE_SQL[direction, False], (conv_id, limit))
        else:
            rows = self._conn.query(PAGE_FROM_SQL[direction],
                                    (conv_id, start_msg_id, start_msg_id, limit))
            if not rows:  # nothing before (after) the anchor, or no such anchor: say which
                self.anchor(start_msg_id)
        if direction == Direction.UP:
            rows.reverse()
        return [row_to_message(r) for r in rows]

    def count(self, conv_id: str) -> int:
        """Every stored message of the conversation, thread replies included."""
        return int(self._conn.one("SELECT count(*) FROM message WHERE conv_id = ?", (conv_id,))[0])

    def by_type(self, conv_id: str | None, types: list[int], *, start_msg_id: str | None,
                timestamp: int | None, limit: int, sender: str | None,
                direction: Direction) -> list[Message]:
        where = [f"type IN ({marks(len(types))})", MAIN]
        params: list[Any] = list(types)
        for cond, value in (("conv_id = ?", conv_id), ("sender = ?", sender)):
            if value is not None:
                where.append(cond)
                params.append(value)
        up = direction == Direction.UP
        if start_msg_id is not None:
            where.append("(sort_time, id) < (?, ?)" if up else "(sort_time, id) > (?, ?)")
            params.extend(self.anchor(start_msg_id))
        if timestamp is not None:
            where.append("sort_time < ?" if up else "sort_time > ?")
            params.append(timestamp)
        order = "DESC" if up else "ASC"
        rows = self._conn.query(f"SELECT {SELECT_COLUMNS} FROM message WHERE {' AND '.join(where)} "
                                f"ORDER BY sort_time {order}, id {order} LIMIT ?", (*params, limit))
        if up:
            rows.reverse()
        return [row_to_message(r) for r in rows]

    def between(self, conv_id: str, start_time: int, end_time: int, limit: int,
                after: tuple[int, int] | None = None) -> list[Message]:
        """The first ``limit`` messages in the time range, after the (sort_time, row id) key
        ``after`` when given."""
        keyset = "" if after is None else " AND (sort_time, id) > (?, ?)"
        rows = self._conn.query(f"SELECT {SELECT_COLUMNS} FROM message WHERE conv_id = ? AND "
                                f"{MAIN} AND sort_time BETWEEN ? AND ?{keyset} ORDER BY "
                                "sort_time, id LIMIT ?",
                                (conv_id, start_time, end_time, *(after or ()), limit))
        return [row_to_message(r) for r in rows]

    def conversations(self, chat_type: ChatType | None, limit: int | None,
                      with_marks: Sequence[str] = ()) -> list[Conversation]:
        params: tuple[Any, ...] = ()
        if with_marks:
            where = ["marks IS NOT NULL", *(_HAS_MARK for _ in with_marks)]
            params = tuple(f"{MARK_SEPARATOR}{m}{MARK_SEPARATOR}" for m in with_marks)
            if chat_type is not None:
                where.append("chat_type = ?")
                params += (int(chat_type),)
            sql = CONVERSATION_LIST_SQL.format(where="WHERE " + " AND ".join(where))
        elif chat_type is None:
            sql = _ALL_CONVERSATIONS
        else:
            sql, params = _CONVERSATIONS_OF_TYPE, (int(chat_type),)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [to_conversation(r) for r in self._conn.query(sql, params)]

    def conversation(self, conv_id: str) -> Conversation | None:
        rows = self._conn.query(_ONE_CONVERSATION, (conv_id,))
        return to_conversation(rows[0]) if rows else None

    def unread_count(self, conv_id: str) -> int:
        row = self._conn.one(_UNREAD, (conv_id,))
        return int(row[0]) if row else 0

    def total_unread_count(self) -> int:
        return int(self._conn.one(_TOTAL_UNREAD)[0])

    def stats(self) -> dict[str, int]:
        one = self._conn.one
        return {
            "conversations": one("SELECT count(*) FROM conversation")[0],
            "messages": one("SELECT count(*) FROM message")[0],
            "unread": self.total_unread_count(),
            "attachments": one("SELECT count(*) FROM attachment")[0],
            "search_pending": one("SELECT count(*) FROM search_outbox")[0],
        }
