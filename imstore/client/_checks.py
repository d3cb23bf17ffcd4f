"""Checks of the arguments `ChatClient` is given, before any part reads, writes or calls a server.

Rules kept here:
- a bad argument is an `IMError` naming the argument, raised before anything is stored or sent:
  INVALID_PARAM for a wrong type or value, QUERY_PARAM_REACHES_LIMIT for a page size out of
  range (`adapters.check_page_size`); never a Python error from deeper down;
- the rules of values are their owners': ids, texts, times, enums, directions, type filters
  and paths the `checks` module's (`check_id`, `check_ids`, `check_text`, `check_time`,
  `check_enum`, `check_direction`, `check_types`, `check_path`); which of one's messages may be
  sent the lifecycle's (`is_mine`); settings the client's `Settings`; the rest — callbacks,
  listeners, what the transport hands over — is kept here;
- what the transport hands the client (messages, receipts, acks, states, reactions, pins) is
  checked like what an application passes: a transport's bug is refused whole, not half
  applied (a value of the right type that the store refuses, such as a reaction with an empty
  key, is the client's `Rich` part's to skip).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ..adapters import ConnectionState, SyncAdapter
from ..checks import (
    check_chat_type,
    check_direction,
    check_enum,
    check_flag,
    check_id,
    check_ids,
    check_path,
    check_text,
    check_time,
    check_types,
)
from ..codec import invalid
from ..lifecycle import is_mine
from ..message import FetchOptions, GroupReadAck, Message
from ..store import MessageStore
from ._listeners import MessageListener

__all__ = [
    "check_acks",
    "check_adapter",
    "check_callback",
    "check_chat_type",
    "check_cursor",
    "check_direction",
    "check_download_dir",
    "check_events",
    "check_flag",
    "check_id",
    "check_ids",
    "check_listener",
    "check_messages",
    "check_optional_id",
    "check_options",
    "check_outgoing",
    "check_state",
    "check_store",
    "check_time",
]

T = TypeVar("T")

# What an adapter must have: the methods of the `SyncAdapter` protocol.
_ADAPTER_METHODS = ("fetch_conversations", "fetch_history", "remove_messages",
                    "delete_conversation")


def check_store(store: Any) -> MessageStore:
    if not isinstance(store, MessageStore):
        raise invalid("store", "a MessageStore (from imstore.open)", store)
    return store


def check_adapter(adapter: Any) -> SyncAdapter:
    """Something with at least one method of `SyncAdapter` (one that lacks the others gets
    SERVICE_NOT_ENABLED from the feature that needs them)."""
    if not any(callable(getattr(adapter, m, None)) for m in _ADAPTER_METHODS):
        raise invalid("adapter", f"a SyncAdapter (with {', '.join(_ADAPTER_METHODS)})", adapter)
    return adapter  # type: ignore[no-any-return]


def check_download_dir(path: Any) -> str | None:
    """None, or a folder path (`checks.check_path`) that is a folder or does not exist yet."""
    if path is None:
        return None
    text = check_path(path, "a folder path (str or os.PathLike)", "download_dir")
    if os.path.exists(text) and not os.path.isdir(text):
        raise invalid("download_dir", "a folder (this path is a file)", path)
    return text


def check_callback(fn: Any, field: str = "progress") -> None:
    """None, or something to call."""
    if fn is not None and not callable(fn):
        raise invalid(field, "a callable or None", fn)


def check_optional_id(value: Any, field: str) -> str | None:
    return None if value is None else check_id(value, field)


def check_cursor(cursor: Any) -> str | None:
    """None (the first page) or the cursor a previous page returned."""
    if cursor is None:
        return None
    if type(cursor) is not str or not cursor or "\x00" in check_text(cursor, "cursor"):
        raise invalid("cursor", "None or the cursor of a previous page (a str)", cursor)
    return cursor


def check_options(options: Any) -> FetchOptions | None:
    """None, or `FetchOptions` whose every field has its type."""
    if options is None:
        return None
    if not isinstance(options, FetchOptions):
        raise invalid("options", "a FetchOptions or None", options)
    check_direction(options.direction, "options.direction")
    check_types(options.types, "options.types")
    for name in ("start_time", "end_time"):
        if getattr(options, name) is not None:
            check_time(getattr(options, name), f"options.{name}")
    check_optional_id(options.sender, "options.sender")
    check_flag(options.save, "options.save")
    return options


def check_outgoing(msg: Any, owner: str) -> Message:
    """A `Message` of the owner's to send (its fields are the codec's to check)."""
    if not isinstance(msg, Message):
        raise invalid("msg", "a Message (build it with Message.text(), Message.image(), ...)",
                      msg)
    if not isinstance(msg.sender, str | None) or not is_mine(msg.sender, owner):
        raise invalid("msg.sender", f"None or {owner!r} (you can only send your own messages)",
                      msg.sender)
    return msg


def _items(values: Any, field: str, cls: type, what: str) -> list[Any]:
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise invalid(field, f"a list of {what}", values)
    items = list(values)
    for i, v in enumerate(items):
        if not isinstance(v, cls):
            raise invalid(f"{field}[{i}]", f"a {cls.__name__}", v)
    return items


def check_messages(messages: Any, field: str = "messages") -> list[Message]:
    return _items(messages, field, Message, "Message objects")


def check_acks(acks: Any) -> list[GroupReadAck]:
    return _items(acks, "acks", GroupReadAck, "GroupReadAck objects")


def check_events(events: Any, cls: type[T], field: str = "events") -> list[T]:
    """A list of the rich-message values a transport hands over (`ReactionEvent`, `PinEvent`,
    `ConversationState`)."""
    return _items(events, field, cls, f"{cls.__name__} objects")


def check_state(state: Any) -> ConnectionState:
    connection_state: ConnectionState = check_enum(ConnectionState, state, "state")
    return connection_state


_HEARS = tuple(n for n in vars(MessageListener) if n.startswith("on_"))


def check_listener(listener: Any) -> MessageListener:
    """A `MessageListener`, or an object with at least one of its ``on_...`` methods."""
    if not isinstance(listener, MessageListener) and not any(
            callable(getattr(listener, n, None)) for n in _HEARS):
        raise invalid("listener", "a MessageListener (subclass it and override what you hear)",
                      listener)
    return listener  # type: ignore[no-any-return]
