"""How a message row is read and written: the SQL the hot paths share, row conversion, argument
checks, and `StoreBase`, the plumbing of transactions and queries under `MessageStore`.

Rules kept here:
- rows become `Message` values in `row_to_message` and nowhere else;
- a write holds the store's writer lock and one SQLite transaction (`StoreBase._tx`); a driver
  error leaves as `IMError(DATABASE_ERROR)` with the original as ``__cause__``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import peewee as pw

from .codec import decode_body, decode_ext
from .errors import ErrorCode, IMError
from .message import (
    ChatType,
    Direction,
    Message,
    MessageStatus,
    MessageType,
)

RECEIPT_DELIVERED = 1
RECEIPT_READ = 2
_OP_INDEX, _OP_DELETE, _OP_ADD = 1, 2, 3  # ADD: a row id the index has never held
_CHUNK = 500  # ids per IN (...) list
_IMPORT, _HISTORY, _RECEIVED = 1, 2, 3  # how _import_batch treats a message's read flag
_INDEX_BATCH = 50_000  # outbox entries per index commit, at most
_IMPORT_INDEX_BATCH = 20_000  # an import applies the outbox once this much is pending

_COLS = ("id, msg_id, conv_id, chat_type, type, sender, recipient, direction, status, local_time, "
         "server_time, is_read, is_delivered, is_read_acked, need_group_ack, group_ack_count, body, ext")
_INSERT = ("INSERT INTO message (msg_id, conv_id, chat_type, type, sender, recipient, direction, "
           "status, local_time, server_time, sort_time, is_read, is_delivered, is_read_acked, "
           "need_group_ack, group_ack_count, body, ext) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
# Keyset reads on (conv_id, sort_time, id): newest first going UP, oldest first going DOWN.
_PAGE = {
    (Direction.UP, False): f"SELECT {_COLS} FROM message WHERE conv_id = ? "
                           "ORDER BY sort_time DESC, id DESC LIMIT ?",
    (Direction.UP, True): f"SELECT {_COLS} FROM message WHERE conv_id = ? AND (sort_time, id) < (?, ?) "
                          "ORDER BY sort_time DESC, id DESC LIMIT ?",
    (Direction.DOWN, False): f"SELECT {_COLS} FROM message WHERE conv_id = ? "
                             "ORDER BY sort_time ASC, id ASC LIMIT ?",
    (Direction.DOWN, True): f"SELECT {_COLS} FROM message WHERE conv_id = ? AND (sort_time, id) > (?, ?) "
                            "ORDER BY sort_time ASC, id ASC LIMIT ?",
}
# The conversation list reads the copy of each last message (columns in _COLS order).
_CONV_LIST = ("SELECT conv_id, chat_type, unread_count, last_activity, ext, last_rowid, lm_msg_id, "
              "conv_id, chat_type, lm_type, lm_sender, lm_recipient, lm_direction, lm_status, "
              "lm_local_time, lm_server_time, lm_is_read, lm_is_delivered, lm_is_read_acked, "
              "lm_need_group_ack, lm_group_ack_count, lm_body, lm_ext FROM conversation {where} "
              "ORDER BY last_activity DESC, conv_id")


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _marks(n: int) -> str:
    return ",".join("?" * n)


_MTYPE = {int(t): t for t in MessageType}
_CTYPE = {int(t): t for t in ChatType}
_DIR = {int(d): d for d in Direction}
_STATUS = {int(s): s for s in MessageStatus}


def row_to_message(row: Sequence[Any]) -> Message:
    """A message row (columns as in ``_COLS``) as a `Message`."""
    mtype = _MTYPE.get(row[4]) or MessageType(row[4])
    return Message(
        msg_id=row[1], conv_id=row[2], chat_type=_CTYPE[row[3]], type=mtype, sender=row[5],
        to=row[6], direction=_DIR[row[7]], status=_STATUS[row[8]], local_time=row[9],
        server_time=row[10], is_read=bool(row[11]), is_delivered=bool(row[12]),
        is_read_acked=bool(row[13]), need_group_ack=bool(row[14]), group_ack_count=row[15],
        body=decode_body(mtype, row[16]), ext=decode_ext(row[17]) if row[17] else {},
    )


def _check_limit(limit: int, hi: int = 400) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= hi:
        raise IMError(ErrorCode.QUERY_PARAM_REACHES_LIMIT,
                      f"limit must be an integer from 1 to {hi}, not {limit!r}")
    return limit


def _check_direction(direction: Direction) -> Direction:
    if direction not in (Direction.UP, Direction.DOWN):
        raise IMError(ErrorCode.INVALID_PARAM, "direction must be Direction.UP or Direction.DOWN")
    return Direction(direction)


def _as_types(types: MessageType | Iterable[MessageType] | None) -> list[int] | None:
    if types is None:
        return None
    seq = [types] if isinstance(types, int) else list(types)
    try:
        return sorted({int(MessageType(t)) for t in seq})
    except (ValueError, TypeError) as exc:
        raise IMError(ErrorCode.INVALID_PARAM, f"unknown message type in {types!r}") from exc


class StoreBase:
    """Transactions and queries on the store's database (see `MessageStore`)."""

    _db: pw.SqliteDatabase
    _lock: threading.RLock
    _rlock: Any
    _closed: bool
    _index: Any
    _index_high: int

    @contextmanager
    def _guard(self) -> Iterator[None]:
        if self._closed:
            raise IMError(ErrorCode.DATABASE_ERROR, "the store is closed; open it again")
        try:
            yield
        except IMError:
            raise
        except (pw.DatabaseError, pw.InterfaceError, sqlite3.Error) as exc:
            raise IMError(ErrorCode.DATABASE_ERROR, f"database error: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[pw.SqliteDatabase]:
        """One write transaction, with the writer lock held."""
        with self._lock, self._guard(), self._db.atomic():
            yield self._db

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._rlock, self._guard():
            return list(self._db.execute_sql(sql, params).fetchall())

    def _sql(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction; returns the changed row count."""
        with self._tx() as db:
            return int(db.execute_sql(sql, params).rowcount)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._q(sql, params)
        return rows[0] if rows else None

    def _find_row(self, msg_id: str, cols: str = _COLS) -> Any:
        """A message row by its id, or by its local id from before the server renamed it."""
        row = self._one(f"SELECT {cols} FROM message WHERE msg_id = ?", (msg_id,))
        if row is None:
            row = self._one(f"SELECT {cols} FROM message WHERE local_id = ?", (msg_id,))
        return row

