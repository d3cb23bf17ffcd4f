"""The message row: its columns (written once, here), the SQL derived from them, and the one
conversion between rows and `Message` values.

Rules kept here:
- `MessageRow` is the column list of table ``message``; the schema, every SELECT, INSERT and
  UPDATE of message rows, and the conversation's copy of its last message derive from it. Adding a
  column is one line here (plus a nullable default for stores made before it);
- enum values appear in SQL by name (`UNREAD`, `SENT`, ...), built from the enums;
- rows become `Message` values in `row_to_message` and nowhere else; `message_row` is the way
  back. Hot reads keep their SQL as strings built once, at import;
- a row that cannot be read (a corrupt payload, a column of the wrong SQL type, an unknown type
  number) still becomes a value that says so, never an exception: a page or a list is never
  lost to one bad row (conversations too: `to_conversation`);
- the main timeline is the messages outside threads (`MAIN`): pages and a conversation's last
  message read only it; thread replies are read by their root (`_threads`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

from ..codec import Limits, decode_body, decode_ext, encode_local_ext
from ..errors import ErrorCode, IMError
from ..message import (
    Body,
    ChatType,
    Conversation,
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
    "LIST_ORDER",
    "MAIN",
    "MARK_SEPARATOR",
    "MESSAGE_COLUMNS",
    "NOT_ROOMS",
    "PAGE_FROM_SQL",
    "PAGE_SQL",
    "SELECT_COLUMNS",
    "SENT",
    "SUCCEEDED",
    "UNREAD",
    "UPDATE_SQL",
    "MessageRow",
    "StoredMessage",
    "decode_payload",
    "keyset_pages",
    "keyset_pages_from",
    "message_row",
    "row_to_message",
    "select_columns",
    "to_conversation",
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
    reply_to: str | None
    thread_id: str | None
    local_ext: bytes | None


MESSAGE_COLUMNS: tuple[str, ...] = MessageRow._fields
# Payload columns are read as BLOBs whatever a damaged row holds: a TEXT value that is not UTF-8
# would otherwise fail the driver's fetch of a whole page (a BLOB is read as it is).
_BLOBS = frozenset({"body", "ext", "local_ext"})


def select_columns(prefix: str = "", columns: tuple[str, ...] = MESSAGE_COLUMNS,
                   names: dict[str, str] | None = None) -> str:
    """The SELECT list of a message row (``prefix`` a table alias with its dot; ``names`` maps
    a column to the one that holds it, as the conversation's copy does)."""
    out = []
    for c in columns:
        col = prefix + (names or {}).get(c, c)
        out.append(f"CAST({col} AS BLOB)" if c in _BLOBS else col)
    return ", ".join(out)


SELECT_COLUMNS = select_columns()
# A new row's id is SQLite's to give: INSERT_SQL takes a row without it (``row[1:]``).
INSERT_SQL = (f"INSERT INTO message ({', '.join(MESSAGE_COLUMNS[1:])}) "
              f"VALUES ({','.join('?' * (len(MESSAGE_COLUMNS) - 1))})")
# What a stored message may change: never its row, ids, conversation, type, who sent it, what it
# replies to or its thread (thread counts follow inserts and deletes only).
_FIXED = frozenset({"id", "msg_id", "local_id", "conv_id", "chat_type", "type", "sender",
                    "recipient", "direction", "reply_to", "thread_id"})
UPDATABLE = tuple(c for c in MESSAGE_COLUMNS if c not in _FIXED)
UPDATE_SQL = f"UPDATE message SET {', '.join(c + ' = ?' for c in UPDATABLE)} WHERE id = ?"

# Enum values in SQL, by name.
UNREAD = f"direction = {int(Direction.RECEIVE)} AND is_read = 0"
SENT = f"direction = {int(Direction.SEND)}"
IN_PROGRESS = f"status = {int(MessageStatus.INPROGRESS)}"
SUCCEEDED = f"status = {int(MessageStatus.SUCCESS)}"
NOT_ROOMS = f"chat_type != {int(ChatType.CHAT_ROOM)}"
MAIN = "thread_id IS NULL"  # the main timeline: not a thread reply

# The conversation row keeps a copy of its last message: message column -> conversation column.
_SHARED = {"id": "last_rowid", "conv_id": "conv_id", "chat_type": "chat_type",
           "sort_time": "last_sort"}
LAST_COPY: dict[str, str] = {c: f"lm_{c}" for c in MESSAGE_COLUMNS if c not in _SHARED}



def keyset_pages(key: str) -> dict[tuple[Direction, bool], str]:
    """Keyset reads on (``key``, sort_time, id): newest first going UP, oldest first going DOWN;
    the anchored forms take (sort_time, id) after ``key``'s value."""
    base = f"SELECT {SELECT_COLUMNS} FROM message WHERE {key} = ? "
    return {
        (Direction.UP, False): base + "ORDER BY sort_time DESC, id DESC LIMIT ?",
        (Direction.UP, True): base + "AND (sort_time, id) < (?, ?) "
                                     "ORDER BY sort_time DESC, id DESC LIMIT ?",
        (Direction.DOWN, False): base + "ORDER BY sort_time ASC, id ASC LIMIT ?",
        (Direction.DOWN, True): base + "AND (sort_time, id) > (?, ?) "
                                       "ORDER BY sort_time ASC, id ASC LIMIT ?",
    }


# The anchor of a page given by its message's id (or the local id it had before the server
# renamed it), read inside the page's own statement: one round trip instead of two.
_ANCHOR_OF = ("(SELECT sort_time, id FROM message WHERE msg_id = ? UNION ALL "
              "SELECT sort_time, id FROM message WHERE local_id = ? LIMIT 1)")


def keyset_pages_from(key: str) -> dict[Direction, str]:
    """The anchored forms of `keyset_pages`, taking the anchor message's id twice (for
    ``msg_id``, then ``local_id``) after ``key``'s value. An anchor that is not stored reads
    as an empty page."""
    base = f"SELECT {SELECT_COLUMNS} FROM message WHERE {key} = ? "
    return {
        Direction.UP: base + f"AND (sort_time, id) < {_ANCHOR_OF} "
                             "ORDER BY sort_time DESC, id DESC LIMIT ?",
        Direction.DOWN: base + f"AND (sort_time, id) > {_ANCHOR_OF} "
                               "ORDER BY sort_time ASC, id ASC LIMIT ?",
    }


# A conversation's main timeline (thread replies are read by their root).
PAGE_SQL = keyset_pages(f"{MAIN} AND conv_id")
PAGE_FROM_SQL = keyset_pages_from(f"{MAIN} AND conv_id")

# Marks are kept as one TEXT column: each mark between separators ("\x1fa\x1fb\x1f"), sorted, so
# a filter is ``instr(marks, sep || mark || sep)``; NULL when there is none.
MARK_SEPARATOR = "\x1f"

# The conversation list: pinned first (newest pin first), then by activity. The ORDER BY is the
# expression index ``conversation_list`` (and ``conversation_marked`` for mark filters), so the
# first page reads as many rows as it returns.
LIST_ORDER = "ifnull(pinned_at, 0) DESC, last_activity DESC, conv_id"
_STATE = ("conv_id", "chat_type", "unread_count", "last_activity", "ext", "title", "pinned_at",
          "marks", "draft")
# The list's rows: the conversation columns of `_STATE`, then its last message as a
# `MessageRow` (read from the conversation's copy). ``{where}`` is empty or one WHERE clause.
CONVERSATION_LIST_SQL = (
    "SELECT " + ", ".join("CAST(ext AS BLOB)" if c == "ext" else c for c in _STATE) + ", "
    + select_columns(names={c: _SHARED.get(c) or LAST_COPY[c] for c in MESSAGE_COLUMNS})
    + " FROM conversation {where} ORDER BY " + LIST_ORDER
)
_N_STATE = len(_STATE)

_MTYPE = {int(t): t for t in MessageType}
_CTYPE = {int(t): t for t in ChatType}
_DIR = {int(d): d for d in Direction}
_STATUS = {int(s): s for s in MessageStatus}


# The columns a `Message` is made of, in the order `_message_reader` unpacks them (the row's
# order is MessageRow's): those stored as read, those converted, then the payload (decoded when
# first read, with the type number).
_AS_READ = ("msg_id", "conv_id", "sender", "recipient", "local_time", "server_time",
            "group_ack_count", "local_id", "edited_at", "recalled_at", "reply_to", "thread_id")
_CONVERTED = ("chat_type", "direction", "status", "is_read", "is_delivered", "is_read_acked",
              "need_group_ack")
_PAYLOAD = ("type", "body", "ext", "local_ext")


def raw_bytes(value: Any) -> bytes:
    """A stored value as the bytes it holds: a BLOB as is, TEXT as UTF-8, a number as its
    decimal digits, NULL as nothing."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b"" if value is None else str(value).encode()


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def decode_payload(type_no: Any, raw: Any, raw_ext: Any,
                   raw_local: Any) -> tuple[Body, dict[str, Any], dict[str, Any]]:
    """A row's body, ext and local_ext, decoded together: when any of them cannot be read (a
    corrupt payload, a column of the wrong SQL type, an unknown type number) the body is an
    `UndecodableBody` with the raw bytes and the reason, and ext and local_ext are empty (the
    stored type number is kept in the body's ``extra["type"]``)."""
    mtype = _MTYPE.get(type_no)
    try:
        if mtype is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"unknown message type number {type_no!r}")
        return (decode_body(mtype, raw), decode_ext(raw_ext) if raw_ext else {},
                decode_ext(raw_local, "local_ext") if raw_local else {})
    except IMError as exc:
        return UndecodableBody(raw_bytes(raw), exc.description, {"type": type_no}), {}, {}


class StoredMessage(Message):
    """A `Message` read from the store: its body, ext and local_ext are decoded together from
    the row's payload when one of them is first read or set, so a page costs only what is
    looked at (as a conversation's last message does). What callers see is a `Message`: equal
    to one, the same ``repr``, copies (``copy``, ``pickle``) that are plain `Message` values,
    and every field as if decoded at once (`decode_payload` keeps the rule for a row that does
    not decode). The three values live in this class's own slots, behind properties."""

    __slots__ = ("_body", "_ext", "_local_ext", "_payload")
    _payload: tuple[Any, ...] | None  # type number, body, ext, local_ext as stored; then None

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # dataclasses.replace: decoded
        self._payload = None
        Message.__init__(self, *args, **kwargs)

    def _decode(self) -> None:
        payload = self._payload
        if payload is not None:
            self._body, self._ext, self._local_ext = decode_payload(*payload)
            self._payload = None  # last: another thread reading meanwhile decodes it again

    @property  # type: ignore[override]
    def body(self) -> Body:
        if self._payload is not None:
            self._decode()
        return self._body

    @body.setter
    def body(self, value: Body) -> None:
        if self._payload is not None:
            self._decode()
        self._body = value

    @property  # type: ignore[override]
    def ext(self) -> dict[str, Any]:
        if self._payload is not None:
            self._decode()
        return self._ext

    @ext.setter
    def ext(self, value: dict[str, Any]) -> None:
        if self._payload is not None:
            self._decode()
        self._ext = value

    @property  # type: ignore[override]
    def local_ext(self) -> dict[str, Any]:
        if self._payload is not None:
            self._decode()
        return self._local_ext

    @local_ext.setter
    def local_ext(self, value: dict[str, Any]) -> None:
        if self._payload is not None:
            self._decode()
        self._local_ext = value

    def __reduce__(self) -> tuple[Any, ...]:
        return Message, tuple(getattr(self, n) for n in _MESSAGE_ORDER)


StoredMessage.__qualname__ = "Message"  # its repr is a Message's


def _message_reader(offset: int) -> Callable[[Any], Message]:
    """`row_to_message` for rows whose message columns start at ``offset``, compiled once:
    one C call picks the columns, then one slot store each (no keyword parsing, no decoding)."""
    local = {"recipient": "to", "type": "type_no"}  # column -> the name it is unpacked into
    columns = (*_AS_READ, *_CONVERTED, *_PAYLOAD)
    names = [local.get(c, c) for c in columns]
    pick = itemgetter(*(offset + MESSAGE_COLUMNS.index(c) for c in columns))
    stores = "".join(f"    m.{n} = {n}\n" for n in names[:len(_AS_READ)])
    source = (
        "def read(row):\n"
        f"    {', '.join(names)} = pick(row)\n"
        "    m = new(StoredMessage)\n"
        f"{stores}"
        "    m.chat_type = chat_types.get(chat_type, CHAT)\n"
        "    m.type = types.get(type_no, TEXT)\n"
        "    m.direction = directions.get(direction, RECEIVE)\n"
        "    m.status = statuses.get(status, FAIL)\n"
        "    m.is_read = bool(is_read)\n"
        "    m.is_delivered = bool(is_delivered)\n"
        "    m.is_read_acked = bool(is_read_acked)\n"
        "    m.need_group_ack = bool(need_group_ack)\n"
        "    m._payload = (type_no, body, ext, local_ext)\n"
        "    return m\n")
    namespace: dict[str, Any] = {
        "pick": pick, "new": object.__new__, "StoredMessage": StoredMessage,
        "chat_types": _CTYPE, "CHAT": ChatType.CHAT, "types": _MTYPE, "TEXT": MessageType.TEXT,
        "directions": _DIR, "RECEIVE": Direction.RECEIVE, "statuses": _STATUS,
        "FAIL": MessageStatus.FAIL, "bool": bool}
    exec(compile(source, f"<row_to_message at column {offset} of {__name__}>", "exec"),
         namespace)
    read: Callable[[Any], Message] = namespace["read"]
    read.__doc__ = _ROW_TO_MESSAGE_DOC
    return read


_ROW_TO_MESSAGE_DOC = """A message row (a `MessageRow`, or a driver tuple in its column order) as a
    `Message` (a `StoredMessage`: its payload decodes when first read).

    A row that cannot be read in full still becomes a message (so that a page is never lost to
    one bad row): its body is an `UndecodableBody` with the raw bytes and the reason, its ext and
    local_ext are empty, and an unknown type number reads as TEXT (the stored number is kept in
    the body's ``extra["type"]``). The reason covers a corrupt payload and a body stored as TEXT
    or INTEGER instead of a BLOB (read as the bytes it holds, see `select_columns`)."""
row_to_message = _message_reader(0)
_last_message = _message_reader(_N_STATE)  # the conversation list's copy, after its state


# Every field of `Message`, each filled by `_message_reader` (the columns it reads, ``to`` from
# ``recipient``) or by the payload; its copies are built positionally in this order.
_MESSAGE_ORDER = tuple(Message.__dataclass_fields__)
if {"to" if c == "recipient" else c for c in (*_AS_READ, *_CONVERTED, *_PAYLOAD)} != set(
        _MESSAGE_ORDER):
    raise RuntimeError("_message_reader fills every field of Message: update _AS_READ, "
                       f"_CONVERTED or _PAYLOAD for the fields {_MESSAGE_ORDER}")


_NO_MARKS: frozenset[str] = frozenset()


@lru_cache(maxsize=1024)  # a store has few distinct sets of marks
def _split_marks(text: str) -> frozenset[str]:
    return frozenset(m for m in text.split(MARK_SEPARATOR) if m)


def _marks(text: Any) -> frozenset[str]:
    if not text or type(text) is not str:
        return _NO_MARKS
    return _split_marks(text)


def to_conversation(r: Any) -> Conversation:
    """A conversation-list row as a `Conversation` whose last message decodes when first read.

    A row that cannot be read in full (an unknown chat type number, an ext that is not a msgpack
    map, a column of the wrong SQL type) still becomes a conversation: what could be read, with
    ``error`` saying what could not (an unknown type reads as CHAT)."""
    conv_id, chat_type, unread, activity, raw_ext, title, pinned_at, marks, draft = r[:_N_STATE]
    last = r if r[_N_STATE] is not None else None  # its message columns: `_last_message`
    ctype = _CTYPE.get(chat_type)
    if ctype is not None and not raw_ext and type(unread) is int:
        # the usual row: nothing to decode
        return Conversation.lazy(conv_id, ctype, unread, activity, {}, last, _last_message,
                                 title, pinned_at, _marks(marks) if marks else _NO_MARKS, draft)
    errors = []
    if ctype is None:
        errors.append(f"unknown chat type number {chat_type!r}")
    ext: dict[str, Any] = {}
    if raw_ext:
        try:
            ext = decode_ext(raw_ext)
        except IMError as exc:
            errors.append(exc.description)
    if type(unread) is not int or type(activity) is not int:
        errors.append("unread_count or last_activity is not an integer")
    return Conversation.lazy(
        conv_id if type(conv_id) is str else str(conv_id), ctype or ChatType.CHAT,
        _int(unread) or 0, _int(activity) or 0, ext, last, _last_message,
        title if type(title) is str else None, _int(pinned_at), _marks(marks),
        draft if type(draft) is str else None, "; ".join(errors) or None)


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
    "recalled_at": "m.recalled_at", "reply_to": "m.reply_to", "thread_id": "m.thread_id",
    # checked by `codec.validate_message` (own limit); encoded here, where rows are made
    "local_ext": "_local(m.local_ext, _LIMITS) if m.local_ext else None",
}


_NO_LIMIT = Limits(max_local_ext_bytes=2**62)  # the limit was checked where the message entered


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
    namespace: dict[str, Any] = {"_new": tuple.__new__, "_Row": MessageRow, "int": int,
                                 "_local": encode_local_ext, "_LIMITS": _NO_LIMIT}
    exec(compile(source, f"<message_row from {__name__}.MessageRow>", "exec"), namespace)
    built: _RowBuilder = namespace["message_row"]
    built.__doc__ = "The row of a settled message whose body and ext are already encoded."
    return built


message_row = _compile_message_row()
