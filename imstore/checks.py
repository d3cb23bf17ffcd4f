"""Argument checks: every value that enters the store or the client through a public method,
checked where it enters (h11's events).

Rules kept here:
- a bad value is an `IMError(INVALID_PARAM)` naming the field and what it must be (`invalid`),
  raised before anything is encoded or written; nothing here raises anything else;
- text is a str UTF-8 can encode (no lone surrogate: SQLite and msgpack cannot store one); an id
  is a non-empty str of at most `MAX_ID_CHARS`; a mark is 1 to `MAX_MARK_CHARS` printable
  characters; a time is an int of milliseconds within the lifecycle's bounds; an enum is its
  member or its int value, never a bool;
- the fields of a message and its size limits are `codec`'s (`validate_message`), which uses
  these checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import invalid
from .lifecycle import MAX_TIME
from .message import ChatType, Direction, MessageType

__all__ = ["MAX_ID_CHARS", "MAX_MARKS", "MAX_MARK_CHARS", "check_chat_type", "check_direction",
           "check_enum", "check_flag", "check_id", "check_ids", "check_marks", "check_path",
           "check_recalled_by", "check_text", "check_time", "check_types", "encodable"]

MAX_ID_CHARS = 256  # ids longer than this are refused
MAX_MARK_CHARS = 64  # the longest conversation mark
MAX_MARKS = 32  # the most marks a conversation has (the store's and the reference server's)


def encodable(text: str) -> bool:
    """Whether UTF-8 can encode ``text`` (it holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: SQLite and msgpack cannot store it
        return False
    return True


def check_text(value: Any, field: str) -> str:
    """A str that UTF-8 can encode (no lone surrogates)."""
    if not isinstance(value, str) or not encodable(value):
        raise invalid(field, "a str of valid Unicode", value)
    return value


def check_id(value: Any, field: str) -> str:
    """A message, conversation or user id: a non-empty str of at most `MAX_ID_CHARS`."""
    if type(value) is not str or not 0 < len(value) <= MAX_ID_CHARS or not encodable(value):
        raise invalid(field, f"a non-empty str of at most {MAX_ID_CHARS} characters", value)
    return value


def check_marks(value: Any, field: str) -> tuple[str, ...]:
    """One conversation mark or several (a str, or an iterable of str): each 1 to
    `MAX_MARK_CHARS` printable characters of valid Unicode (no control characters: the store
    keeps marks between U+001F separators)."""
    items = [value] if isinstance(value, str) else value
    if isinstance(items, bytes | Mapping) or not isinstance(items, Iterable):
        raise invalid(field, "a mark (str) or a list of marks", value)
    out = []
    for mark in items:
        if not isinstance(mark, str) or not 0 < len(mark) <= MAX_MARK_CHARS \
                or not mark.isprintable():
            raise invalid(field, f"marks of 1 to {MAX_MARK_CHARS} printable characters", mark)
        out.append(check_text(mark, field))
    return tuple(out)


def check_ids(values: Any, field: str) -> list[str]:
    """A list (or other iterable, not a str nor a mapping) of ids."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise invalid(field, "a list of ids", values)
    return [check_id(v, f"{field}[{i}]") for i, v in enumerate(values)]


def check_recalled_by(value: Any, field: str = "recalled_by") -> dict[str, str] | None:
    """Who recalled which messages: a mapping of message ids to user ids, or None."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise invalid(field, "a mapping of message ids to user ids, or None", value)
    return {check_id(k, f"{field} key"): check_id(v, f"{field}[{k!r}]") for k, v in value.items()}


def check_direction(direction: Any, field: str = "direction") -> Direction:
    """A reading direction: `Direction.UP` or `Direction.DOWN`."""
    if isinstance(direction, bool) or direction not in (Direction.UP, Direction.DOWN):
        raise invalid(field, "Direction.UP or Direction.DOWN", direction)
    return Direction(direction)


def check_types(types: Any, field: str = "types") -> list[int] | None:
    """A filter of message types (a `MessageType` or an iterable of them) as sorted ints;
    None stays None (no filter)."""
    if types is None:
        return None
    if isinstance(types, int):
        seq: list[Any] = [types]
    elif isinstance(types, str | bytes) or not isinstance(types, Iterable):
        raise invalid(field, "a MessageType or a list of them", types)
    else:
        seq = list(types)
    return sorted({int(check_enum(MessageType, t, field)) for t in seq})


def check_path(path: Any, what: str, field: str = "path") -> str:
    """A file-system path as a str the file system and SQLite take: a str or os.PathLike,
    non-empty, without NUL, of valid Unicode (no lone surrogate)."""
    if not isinstance(path, str | os.PathLike):
        raise invalid(field, what, path)
    p = os.fspath(path)
    if not isinstance(p, str) or not p or "\x00" in p:
        raise invalid(field, what + " (a non-empty str without NUL)", path)
    if not encodable(p):  # a lone surrogate (SQLite takes UTF-8 paths)
        raise invalid(field, what + " of valid Unicode", path)
    return p


def check_time(value: Any, field: str, *, lo: int = 0, hi: int = MAX_TIME) -> int:
    """A time in ms: an int (not a bool) within ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise invalid(field, f"an int of milliseconds from {lo} to {hi}", value)
    return value


_ENUM_VALUES: dict[type, frozenset[Any]] = {}


def check_enum(enum: type[Any], value: Any, field: str) -> Any:
    """A member of ``enum`` (an int enum): the member, or its int value (not a bool)."""
    if type(value) is enum:
        return value
    values = _ENUM_VALUES.get(enum)
    if values is None:
        values = _ENUM_VALUES[enum] = frozenset(m.value for m in enum)
    if isinstance(value, bool) or not isinstance(value, int) or value not in values:
        raise invalid(field, f"a {enum.__name__}", value)
    return enum(value)


def check_chat_type(value: Any, field: str = "chat_type") -> ChatType:
    """A `ChatType` (or its int value)."""
    chat_type: ChatType = check_enum(ChatType, value, field)
    return chat_type


def check_flag(value: Any, field: str) -> bool:
    """True or False (not 0/1, not None)."""
    if type(value) is not bool:
        raise invalid(field, "True or False", value)
    return value
