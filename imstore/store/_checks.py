"""Checks of the arguments every public store method is given, before anything is read or written.

Rules kept here:
- a bad argument is an `IMError` naming the argument: INVALID_PARAM for a wrong type or value,
  QUERY_PARAM_REACHES_LIMIT for a page size out of range; never a driver or Python error later;
- ids and texts follow the codec's rules (`codec.check_id`, `codec.check_text`); a time filter
  is any int SQLite can hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..codec import check_id, check_text, invalid
from ..codec import check_time as codec_check_time
from ..errors import ErrorCode, IMError
from ..lifecycle import INT64_MAX, INT64_MIN
from ..message import ChatType, Direction, MessageStatus, MessageType

__all__ = ["as_types", "check_chat_type", "check_direction", "check_id", "check_ids",
           "check_limit", "check_stamp", "check_status", "check_text", "check_time", "invalid"]

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
