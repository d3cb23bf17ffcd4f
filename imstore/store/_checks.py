"""Checks of the arguments every public store method is given, before anything is read or written.

Rules kept here:
- a bad argument is an `IMError` naming the argument: INVALID_PARAM for a wrong type or value,
  QUERY_PARAM_REACHES_LIMIT for a page size out of range; never a driver or Python error later;
- ids, texts, enums, directions, type filters and paths follow the codec's rules
  (`codec.check_id`, `check_ids`, `check_text`, `check_enum`, `check_direction`, `check_types`,
  `check_path`, shared with the client's checks); a time filter is any int SQLite can hold;
- a one-to-one message belongs in the store of one of its two people (`stranger_chat`).
"""

from __future__ import annotations

from typing import Any

from ..codec import (
    check_direction,
    check_enum,
    check_id,
    check_ids,
    check_path,
    check_text,
    check_types,
    invalid,
)
from ..codec import check_time as codec_check_time
from ..errors import ErrorCode, IMError
from ..lifecycle import INT64_MAX, INT64_MIN
from ..message import ChatType, Message, MessageStatus

__all__ = ["as_types", "check_chat_type", "check_direction", "check_id", "check_ids",
           "check_limit", "check_path", "check_stamp", "check_status", "check_text", "check_time",
           "invalid", "stranger_chat"]

def check_time(value: Any, field: str, *, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    """A time filter in ms: any int SQLite can hold, unless narrowed."""
    return codec_check_time(value, field, lo=lo, hi=hi)


def check_stamp(value: Any, field: str) -> int:
    """A time a message or a receipt carries: 0..`lifecycle.MAX_TIME`."""
    return codec_check_time(value, field)


def check_limit(limit: Any, hi: int = 400) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= hi:
        raise IMError(ErrorCode.QUERY_PARAM_REACHES_LIMIT,
                      f"limit must be an integer from 1 to {hi}, not {limit!r}")
    return limit


def check_status(value: Any, field: str = "status") -> MessageStatus:
    status: MessageStatus = check_enum(MessageStatus, value, field)
    return status


def check_chat_type(value: Any, field: str = "chat_type") -> ChatType:
    chat_type: ChatType = check_enum(ChatType, value, field)
    return chat_type


as_types = check_types
"""Message types as sorted ints (None stays None: no filter): the codec's `check_types`."""


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
