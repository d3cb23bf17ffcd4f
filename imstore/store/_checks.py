"""Checks of the arguments every public store method is given, before anything is read or written.

Rules kept here:
- a bad argument is an `IMError` naming the argument: INVALID_PARAM for a wrong type or value,
  QUERY_PARAM_REACHES_LIMIT for a page size out of range; never a driver or Python error later;
- ids and texts follow the codec's rules (`codec.check_id`, `codec.check_text`); a time filter
  is any int SQLite can hold;
- a one-to-one message belongs in the store of one of its two people (`stranger_chat`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ..codec import check_id, check_text, invalid
from ..codec import check_time as codec_check_time
from ..errors import ErrorCode, IMError
from ..lifecycle import INT64_MAX, INT64_MIN
from ..message import ChatType, Direction, Message, MessageStatus, MessageType

__all__ = ["as_types", "check_chat_type", "check_direction", "check_id", "check_ids",
           "check_limit", "check_path", "check_stamp", "check_status", "check_text", "check_time",
           "invalid", "stranger_chat"]

def check_time(value: Any, field: str, *, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    """A time filter in ms: any int SQLite can hold, unless narrowed."""
    return codec_check_time(value, field, lo=lo, hi=hi)


def check_stamp(value: Any, field: str) -> int:
    """A time a message or a receipt carries: 0..`lifecycle.MAX_TIME`."""
    return codec_check_time(value, field)


def check_ids(values: Any, field: str) -> list[str]:
    """A list (or other iterable, not a str) of ids."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise invalid(field, "a list of ids", values)
    return [check_id(v, f"{field}[{i}]") for i, v in enumerate(values)]


def check_limit(limit: Any, hi: int = 400) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= hi:
        raise IMError(ErrorCode.QUERY_PARAM_REACHES_LIMIT,
                      f"limit must be an integer from 1 to {hi}, not {limit!r}")
    return limit


def check_direction(direction: Any) -> Direction:
    if isinstance(direction, bool) or direction not in (Direction.UP, Direction.DOWN):
        raise invalid("direction", "Direction.UP or Direction.DOWN", direction)
    return Direction(direction)


def _enum(enum: type[Any], value: Any, field: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, f"a {enum.__name__}", value)
    try:
        return enum(value)
    except ValueError as exc:
        raise invalid(field, f"a {enum.__name__}", value) from exc


def check_status(value: Any, field: str = "status") -> MessageStatus:
    status: MessageStatus = _enum(MessageStatus, value, field)
    return status


def check_chat_type(value: Any, field: str = "chat_type") -> ChatType:
    chat_type: ChatType = _enum(ChatType, value, field)
    return chat_type


def as_types(types: Any) -> list[int] | None:
    """Message types as sorted ints (None stays None: no filter)."""
    if types is None:
        return None
    if isinstance(types, int):
        seq: list[Any] = [types]
    elif isinstance(types, str | bytes) or not isinstance(types, Iterable):
        raise invalid("types", "a MessageType or a list of them", types)
    else:
        seq = list(types)
    return sorted({int(_enum(MessageType, t, "types")) for t in seq})


def stranger_chat(msg: Any, owner: str) -> IMError | None:
    """The error for a one-to-one message between two other people (bob -> carol in alice's
    store), else None. A received one is addressed to the owner, or -- as chat exports write
    it -- to the conversation, which is its sender."""
    if not isinstance(msg, Message) or msg.chat_type != ChatType.CHAT:
        return None
    sender, to = msg.sender, msg.to
    if sender is None or sender == owner or to in (owner, sender):
        return None
    return IMError(ErrorCode.INVALID_PARAM,
                   f"a one-to-one message from {sender!r} to {to!r} does not belong in the store "
                   f"of {owner!r}: one of the two must be its owner")


def check_path(path: Any, what: str) -> str:
    """A store's directory as a str the file system and SQLite take (no NUL, no lone
    surrogate)."""
    if not isinstance(path, str | os.PathLike):
        raise invalid("path", what, path)
    p = os.fspath(path)
    if not isinstance(p, str) or not p or "\x00" in p:
        raise invalid("path", what + " (a non-empty str without NUL)", path)
    try:
        p.encode("utf-8")
    except UnicodeError as exc:  # a lone surrogate (SQLite takes UTF-8 paths)
        raise invalid("path", what + " of valid Unicode", path) from exc
    return p
