"""The message row: its columns (written once, here), the SQL derived from them, and the one
conversion between rows and `Message` values.

Rules kept here:
- `MessageRow` is the column list of table ``message``; the schema, every SELECT, INSERT and
  UPDATE of message rows, and the conversation's copy of its last message derive from it. Adding a
  column is one line here (plus a nullable default for stores made before it);
- enum values appear in SQL by name (`UNREAD`, `SENT`, ...), built from the enums;
- rows become `Message` values in `row_to_message` and nowhere else; `message_row` is the way
  back. Hot reads keep their SQL as strings built once, at import.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, NamedTuple, Protocol

from ..codec import decode_body, decode_ext
from ..errors import ErrorCode, IMError
from ..message import (
    Body,
    ChatType,
    Direction,
    Message,
    MessageStatus,
    MessageType,
    UndecodableBody,
)

__all__ = [
    "CONVERSATION_LIST_SQL",
    "INSERT_SQL",
    "IN_PROGRESS",
    "LAST_COPY",
    "MESSAGE_COLUMNS",
    "NOT_ROOMS",
    "PAGE_SQL",
    "SELECT_COLUMNS",
    "SENT",
    "SUCCEEDED",
    "UNREAD",
    "UPDATE_SQL",
    "MessageRow",
    "message_row",
    "row_to_message",
]


class MessageRow(NamedTuple):
    """One row of table ``message``, in column order. ``id`` orders ties and joins; ``msg_id`` may
    change once, from the local id to the server's (``local_id`` keeps the old one);
    ``sort_time`` is the server time when the server stamped the message, else the local time."""

    id: int | None
    msg_id: str
    local_id: str | None
    conv_id: str
    chat_type: int
    type: int
    sender: str
    recipient: str
    direction: int
    status: int
    local_time: int
    server_time: int | None
    sort_time: int
    is_read: int
    is_delivered: int
    is_read_acked: int
    need_group_ack: int
    group_ack_count: int
    body: bytes
    ext: bytes | None
    edited_at: int | None
    recalled_at: int | None


MESSAGE_COLUMNS: tuple[str, ...] = MessageRow._fields
SELECT_COLUMNS = ", ".join(MESSAGE_COLUMNS)
# A new row's id is SQLite's to give: INSERT_SQL takes a row without it (``row[1:]``).
INSERT_SQL = (f"INSERT INTO message ({', '.join(MESSAGE_COLUMNS[1:])}) "
              f"VALUES ({','.join('?' * (len(MESSAGE_COLUMNS) - 1))})")
# What a stored message may change: never its row, ids, conversation, type or who sent it.
_FIXED = frozenset({"id", "msg_id", "local_id", "conv_id", "chat_type", "type", "sender",
                    "recipient", "direction"})
UPDATABLE = tuple(c for c in MESSAGE_COLUMNS if c not in _FIXED)
UPDATE_SQL = f"UPDATE message SET {', '.join(c + ' = ?' for c in UPDATABLE)} WHERE id = ?"

# Enum values in SQL, by name.
UNREAD = f"direction = {int(Direction.RECEIVE)} AND is_read = 0"
SENT = f"direction = {int(Direction.SEND)}"
IN_PROGRESS = f"status = {int(MessageStatus.INPROGRESS)}"
SUCCEEDED = f"status = {int(MessageStatus.SUCCESS)}"
NOT_ROOMS = f"chat_type != {int(ChatType.CHAT_ROOM)}"

# The conversation row keeps a copy of its last message: message column -> conversation column.
_SHARED = {"id": "last_rowid", "conv_id": "conv_id", "chat_type": "chat_type",
           "sort_time": "last_sort"}
LAST_COPY: dict[str, str] = {c: f"lm_{c}" for c in MESSAGE_COLUMNS if c not in _SHARED}

# Keyset reads on (conv_id, sort_time, id): newest first going UP, oldest first going DOWN.
PAGE_SQL: dict[tuple[Direction, bool], str] = {
    (Direction.UP, False): f"SELECT {SELECT_COLUMNS} FROM message WHERE conv_id = ? "
                           "ORDER BY sort_time DESC, id DESC LIMIT ?",
    (Direction.UP, True): f"SELECT {SELECT_COLUMNS} FROM message WHERE conv_id = ? "
                          "AND (sort_time, id) < (?, ?) ORDER BY sort_time DESC, id DESC LIMIT ?",
    (Direction.DOWN, False): f"SELECT {SELECT_COLUMNS} FROM message WHERE conv_id = ? "
                             "ORDER BY sort_time ASC, id ASC LIMIT ?",
    (Direction.DOWN, True): f"SELECT {SELECT_COLUMNS} FROM message WHERE conv_id = ? "
                            "AND (sort_time, id) > (?, ?) ORDER BY sort_time ASC, id ASC LIMIT ?",
}

# The conversation list: five conversation columns, then its last message as a `MessageRow`
# (read from the conversation's copy). ``{where}`` is empty or one WHERE clause.
CONVERSATION_LIST_SQL = (
    "SELECT conv_id, chat_type, unread_count, last_activity, ext, "
    + ", ".join(_SHARED.get(c) or LAST_COPY[c] for c in MESSAGE_COLUMNS)
    + " FROM conversation {where} ORDER BY last_activity DESC, conv_id"
)

_MTYPE = {int(t): t for t in MessageType}
_CTYPE = {int(t): t for t in ChatType}
_DIR = {int(d): d for d in Direction}
_STATUS = {int(s): s for s in MessageStatus}


# The columns a `Message` is made of, picked out of a row by name in one C call (the row's
# order is MessageRow's; this is only the order of the unpacking in `row_to_message`).
_DECODED = ("msg_id", "conv_id", "chat_type", "type", "sender", "recipient", "direction",
            "status", "local_time", "server_time", "is_read", "is_delivered", "is_read_acked",
            "need_group_ack", "group_ack_count", "body", "ext", "local_id", "edited_at",
            "recalled_at")
_pick = itemgetter(*(MESSAGE_COLUMNS.index(c) for c in _DECODED))


def row_to_message(row: Any) -> Message:
    """A message row (a `MessageRow`, or a driver tuple in its column order) as a `Message`.

    A row whose payload cannot be decoded still becomes a message (so that a page is never lost
    to one bad row): its body is an `UndecodableBody` with the raw bytes and the reason, its ext
    is empty, and an unknown type number reads as TEXT (the stored number is kept in the body's
    ``extra["type"]``)."""
    (msg_id, conv_id, chat_type, type_no, sender, recipient, direction, status, local_time,
     server_time, is_read, is_delivered, is_read_acked, need_group_ack, group_ack_count, raw,
     raw_ext, local_id, edited_at, recalled_at) = _pick(row)
    mtype = _MTYPE.get(type_no)
    body: Body
    try:
        if mtype is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"unknown message type number {type_no!r}")
        body = decode_body(mtype, raw)
        ext = decode_ext(raw_ext) if raw_ext else {}
    except IMError as exc:
        body, ext = UndecodableBody(bytes(raw or b""), exc.description, {"type": type_no}), {}
    return Message(
        msg_id=msg_id, conv_id=conv_id, chat_type=_CTYPE.get(chat_type, ChatType.CHAT),
        type=mtype or MessageType.TEXT, sender=sender, to=recipient,
        direction=_DIR.get(direction, Direction.RECEIVE),
        status=_STATUS.get(status, MessageStatus.FAIL), local_time=local_time,
        server_time=server_time, is_read=bool(is_read), is_delivered=bool(is_delivered),
        is_read_acked=bool(is_read_acked), need_group_ack=bool(need_group_ack),
        group_ack_count=group_ack_count, body=body, ext=ext, local_id=local_id,
        edited_at=edited_at, recalled_at=recalled_at,
    )


# How each column of a settled message's row is read from the message ``m``, its encoded
# ``body`` and ``ext`` and its ``rowid``: one expression per column, keyed by the column's name
# (the order is MessageRow's). `message_row` is compiled from it once, at import, into one
# positional tuple build: no keyword parsing and no per-row dict.
_FROM_MESSAGE: dict[str, str] = {
    "id": "rowid", "msg_id": "m.msg_id", "local_id": "m.local_id", "conv_id": "m.conv_id",
    "chat_type": "int(m.chat_type)", "type": "int(m.type)", "sender": "m.sender or ''",
    "recipient": "m.to", "direction": "int(m.direction)", "status": "int(m.status)",
    "local_time": "int(m.local_time)", "server_time": "m.server_time",
    "sort_time": "m.timestamp", "is_read": "1 if m.is_read else 0",
    "is_delivered": "1 if m.is_delivered else 0", "is_read_acked": "1 if m.is_read_acked else 0",
    "need_group_ack": "1 if m.need_group_ack else 0", "group_ack_count": "int(m.group_ack_count)",
    "body": "body", "ext": "ext or None", "edited_at": "m.edited_at",
    "recalled_at": "m.recalled_at",
}


class _RowBuilder(Protocol):
    def __call__(self, msg: Message, body: bytes, ext: bytes,
                 rowid: int | None = None) -> MessageRow: ...


def _compile_message_row() -> _RowBuilder:
    if tuple(sorted(_FROM_MESSAGE)) != tuple(sorted(MESSAGE_COLUMNS)):
        raise RuntimeError("every MessageRow column needs exactly one expression in _FROM_MESSAGE; "
                           f"differences: {set(_FROM_MESSAGE) ^ set(MESSAGE_COLUMNS)}")
    values = ", ".join(_FROM_MESSAGE[c] for c in MESSAGE_COLUMNS)
    source = (f"def message_row(m, body, ext, rowid=None):\n"
              f"    return _new(_Row, ({values},))\n")
    namespace: dict[str, Any] = {"_new": tuple.__new__, "_Row": MessageRow, "int": int}
    exec(compile(source, f"<message_row from {__name__}.MessageRow>", "exec"), namespace)
    built: _RowBuilder = namespace["message_row"]
    built.__doc__ = "The row of a settled message whose body and ext are already encoded."
    return built


message_row = _compile_message_row()
