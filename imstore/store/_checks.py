"""Checks of the arguments every public store method is given, before anything is read or written.

Rules kept here:
- a bad argument is an `IMError` naming the argument: INVALID_PARAM for a wrong type or value,
  QUERY_PARAM_REACHES_LIMIT for a page size out of range; never a driver or Python error later;
- ids, texts, enums, directions, type filters and paths follow the codec's rules
  (`checks.check_id`, `check_ids`, `check_text`, `check_enum`, `check_direction`, `check_types`,
  `check_path`, shared with the client's checks); a time filter is any int SQLite can hold;
- a one-to-one message belongs in the store of one of its two people (`stranger_chat`);
- a conversation's marks are 1-64 printable characters, at most 32 of them (`ConversationTable`); a title at
  most `MAX_TITLE` characters, a draft `MAX_DRAFT`;
- an argument that repeats across methods (a page, a reaction, a time range, a flag) is checked
  by one function here, whichever method takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..checks import (
    check_chat_type,
    check_direction,
    check_enum,
    check_flag,
    check_id,
    check_ids,
    check_marks,
    check_path,
    check_text,
    check_types,
)
from ..checks import check_time as codec_check_time
from ..codec import encode_ext, invalid
from ..errors import ErrorCode, IMError
from ..lifecycle import INT64_MAX, INT64_MIN, ReceiptKind, is_mine
from ..message import ChatType, Direction, GroupReadAck, Message, MessageStatus
from ._gaps import Span

__all__ = [
    "MAX_DRAFT",
    "MAX_TITLE",
    "as_types",
    "check_callable",
    "check_chat_type",
    "check_direction",
    "check_flag",
    "check_group_acks",
    "check_id",
    "check_ids",
    "check_import",
    "check_limit",
    "check_list_limit",
    "check_marks",
    "check_page",
    "check_path",
    "check_range",
    "check_reaction",
    "check_receipt_kind",
    "check_short_text",
    "check_span",
    "check_stamp",
    "check_status",
    "check_text",
    "check_time",
    "check_timeout",
    "check_type_page",
    "conversation_ext",
    "invalid",
    "message_list",
    "optional",
    "stranger_chat",
]

MAX_TITLE = 1024
MAX_DRAFT = 64 * 1024

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


as_types = check_types
"""Message types as sorted ints (None stays None: no filter): the codec's `check_types`."""


def stranger_chat(msg: Any, owner: str) -> IMError | None:
    """The error for a one-to-one message between two other people (bob -> carol in alice's
    store), else None. A received one is addressed to the owner, or -- as chat exports write
    it -- to the conversation, which is its sender."""
    if not isinstance(msg, Message) or msg.chat_type != ChatType.CHAT:
        return None
    sender, to = msg.sender, msg.to
    if is_mine(sender, owner) or to in (owner, sender):
        return None
    return IMError(ErrorCode.INVALID_PARAM,
                   f"a one-to-one message from {sender!r} to {to!r} does not belong in the store "
                   f"of {owner!r}: one of the two must be its owner")


def check_short_text(value: Any, field: str, most: int) -> None:
    """None, or a str of valid Unicode of at most ``most`` characters."""
    if value is not None:
        check_text(value, field)
        if len(value) > most:
            raise invalid(field, f"at most {most} characters", value)


def optional(value: Any, field: str, check: Callable[[Any, str], Any]) -> None:
    if value is not None:
        check(value, field)


def check_timeout(timeout: Any) -> None:
    if timeout is not None and (isinstance(timeout, bool) or
                                not isinstance(timeout, int | float) or not timeout >= 0):
        raise invalid("timeout", "a number of seconds >= 0 or None", timeout)


def check_range(start_time: Any, end_time: Any) -> None:
    check_time(start_time, "start_time")
    check_time(end_time, "end_time")
    if start_time > end_time:
        raise IMError(ErrorCode.INVALID_PARAM, "start_time is after end_time")


def check_span(span: Any) -> Span:
    if not isinstance(span, Span):
        raise invalid("span", "a Span or None", span)
    check_id(span.conv_id, "span.conv_id")
    optional(span.start, "span.start", check_time)
    optional(span.end, "span.end", check_time)
    for name in ("older_cursor", "newer_cursor"):
        value = getattr(span, name)
        if value is not None:
            check_text(value, f"span.{name}")
    return span


def message_list(messages: Any) -> list[Message]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Iterable):
        raise invalid("messages", "a list of Message", messages)
    return list(messages)


def conversation_ext(ext: Any) -> bytes:
    """A conversation's ext, encoded (a dict, as a message's ext)."""
    if not isinstance(ext, dict):
        raise invalid("ext", "a dict", ext)
    return encode_ext(ext)


def check_page(conv_id: Any, limit: Any, direction: Any, field: str = "conv_id") -> Direction:
    """The arguments of a page (of a conversation or a thread): an id, a limit of 1-400, a
    `Direction`; returns the direction."""
    check_id(conv_id, field)
    check_limit(limit)
    return check_direction(direction)


def check_reaction(msg_id: Any, key: Any, sender: Any, owner: str) -> str:
    """A reaction's message id, key and sender; returns the sender (None: ``owner``)."""
    check_id(msg_id, "msg_id")
    check_id(key, "key")
    return owner if sender is None else check_id(sender, "sender")


def check_callable(value: Any, field: str) -> Any:
    if not callable(value):
        raise invalid(field, "a callable or None", value)
    return value


def check_import(messages: Any, batch_size: Any, progress: Any) -> None:
    """The arguments of a bulk import: an iterable (not a str), a positive batch size, a
    progress callable or None."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise invalid("batch_size", "a positive int", batch_size)
    optional(progress, "progress", check_callable)
    if isinstance(messages, str | bytes) or not isinstance(messages, Iterable):
        raise invalid("messages", "an iterable of Message", messages)


def check_receipt_kind(kind: Any) -> ReceiptKind:
    if type(kind) not in (int, ReceiptKind) or kind not in tuple(ReceiptKind):
        raise invalid("kind", "a ReceiptKind (DELIVERED or READ)", kind)
    return ReceiptKind(kind)


def check_group_acks(acks: Any) -> list[GroupReadAck]:
    items = list(acks) if isinstance(acks, Iterable) and not isinstance(acks, str) else None
    if items is None or not all(isinstance(a, GroupReadAck) for a in items):
        raise invalid("acks", "a list of GroupReadAck", acks)
    for a in items:
        check_id(a.msg_id, "acks[].msg_id")
        check_id(a.reader, "acks[].reader")
        check_stamp(a.timestamp, "acks[].timestamp")
    return items


def check_list_limit(limit: Any, field: str = "limit") -> int:
    """The limit of a list that is not paged (the conversation list): any positive int."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= INT64_MAX:
        raise IMError(ErrorCode.QUERY_PARAM_REACHES_LIMIT, "limit must be a positive integer")
    return limit


def check_type_page(conv_id: Any, types: Any, start_msg_id: Any, timestamp: Any, limit: Any,
                    sender: Any, direction: Any) -> tuple[list[int], Direction]:
    """The arguments of `MessageStore.messages_by_type`: returns the types (at least one) and
    the direction."""
    optional(conv_id, "conv_id", check_id)
    optional(start_msg_id, "start_msg_id", check_id)
    optional(sender, "sender", check_id)
    optional(timestamp, "timestamp", check_time)
    check_limit(limit)
    direction = check_direction(direction)
    tlist = as_types(types) or []
    if not tlist:
        raise IMError(ErrorCode.INVALID_PARAM, "give at least one message type")
    return tlist, direction
