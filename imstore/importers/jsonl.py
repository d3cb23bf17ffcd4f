"""imstore JSON lines: what ``imstore export`` writes and ``imstore import`` reads back, losslessly.

One JSON object a line, of these records:
- ``{"record": "store", "owner": ..., "version": 1}`` first: whose store it was (a new store
  imported from it takes that owner);
- ``{"record": "conversation", ...}`` before a conversation's messages: every field of
  `Conversation` that is not derived from its messages (the unread count and last message are);
- a message: every field of `Message` (a line without ``record``; exports of older versions
  are messages only, and still read); a thread's replies follow the page holding its root;
- ``{"record": "reactions", "msg_id", "reactions": {key: [sender, ...]}}`` after a message that
  has any, and ``{"record": "pins", "conv_id", "msg_ids"}`` (newest pin first) after a
  conversation's messages: put back once the messages are in.

Rules kept here:
- every field is written: the records are derived from the dataclass fields, and a field whose
  JSON form is not its value is listed once in `_MESSAGE_CODECS` / `_CONVERSATION_CODECS` (a
  new field is one line there, or nothing when it is plain JSON); a test compares a store with
  its export -> import copy field by field;
- enums by name; bytes (in ``ext`` or bodies) as ``{"$bytes": base64}``; unknown body fields
  are kept; keys a reader does not know are ignored (so `messages --json` lines read back too);
- a malformed line is an `IMError` naming the file and the line.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from typing import IO, Any

from ..codec import body_from_dict, body_to_dict
from ..errors import ErrorCode, IMError
from ..message import ChatType, Conversation, Direction, Message, MessageStatus, MessageType

__all__ = ["FORMAT_VERSION", "conversation_record", "dumps", "export_store", "from_dict",
           "is_record", "loads", "read_jsonl", "read_lines", "restore_conversation",
           "restore_relations", "to_dict", "write_jsonl"]

FORMAT_VERSION = 1
ConversationRecord = dict[str, Any]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return base64.b64decode(value["$bytes"], validate=True)
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def _by_name(enum: type[IntEnum]) -> Codec:
    return (lambda v: enum(v).name), (lambda v: enum[v])


_PLAIN: Codec = (_plain, _unplain)
# (to JSON, from JSON) of each field whose JSON form is not its value; the body is written by
# its type (`body_to_dict`) and read back once the type is known.
_MESSAGE_CODECS: dict[str, Codec] = {
    "chat_type": _by_name(ChatType), "type": _by_name(MessageType),
    "direction": _by_name(Direction), "status": _by_name(MessageStatus), "ext": _PLAIN,
}
_MESSAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Message))
_REQUIRED = ("msg_id", "conv_id", "chat_type", "type", "sender", "to", "body")

_CONVERSATION_CODECS: dict[str, Codec] = {
    "chat_type": _by_name(ChatType), "ext": _PLAIN,
    "marks": ((lambda v: sorted(v)), (lambda v: frozenset(map(str, v)))),
}
# What a conversation keeps that its messages do not say (unread counts, the last message and
# ``error`` -- an unreadable row -- are derived), and how an import puts each back: the
# conversation is first saved with its type, activity and ext, then each of these is set.
_CONVERSATION_FIELDS = ("conv_id", "chat_type", "last_activity", "ext", "title", "pinned_at",
                        "marks", "draft")
_RESTORE: dict[str, Callable[[Any, str, Any], Any]] = {
    "title": lambda store, c, v: v and store.set_conversation_title(c, v),
    "pinned_at": lambda store, c, v: v is not None and store.pin_conversation(c, timestamp=v),
    "marks": lambda store, c, v: v and store.set_conversation_marks(c, add=sorted(v)),
    "draft": lambda store, c, v: v and store.set_draft(c, v),
}


def to_dict(msg: Message) -> dict[str, Any]:
    """A message as JSON-ready data: every field."""
    out: dict[str, Any] = {}
    for name in _MESSAGE_FIELDS:
        value = getattr(msg, name)
        if name == "body":
            out[name] = _plain(body_to_dict(value))
        else:
            codec = _MESSAGE_CODECS.get(name)
            out[name] = codec[0](value) if codec else value
    return out


def from_dict(d: dict[str, Any]) -> Message:
    """The inverse of `to_dict` (fields it does not hold keep their defaults). Raises
    KeyError/ValueError/TypeError on malformed data."""
    if not isinstance(d, dict):
        raise TypeError(f"a JSON object, not {type(d).__name__}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise KeyError(", ".join(missing))
    kw: dict[str, Any] = {}
    for name in _MESSAGE_FIELDS:
        if name in d and name != "body":
            codec = _MESSAGE_CODECS.get(name)
            kw[name] = codec[1](d[name]) if codec else d[name]
    body = _unplain(d["body"])
    if not isinstance(body, dict):
        raise TypeError(f"body: a JSON object, not {type(body).__name__}")
    kw["body"] = body_from_dict(kw["type"], body)
    return Message(**kw)


def conversation_record(conv: Conversation) -> ConversationRecord:
    """A conversation as the export's ``conversation`` record."""
    out: ConversationRecord = {"record": "conversation"}
    for name in _CONVERSATION_FIELDS:
        codec = _CONVERSATION_CODECS.get(name)
        value = getattr(conv, name)
        out[name] = codec[0](value) if codec else value
    return out


def _conversation_fields(d: dict[str, Any]) -> ConversationRecord:
    """The fields of a ``conversation`` record, read back."""
    out: ConversationRecord = {}
    for name in _CONVERSATION_FIELDS:
        if name in d:
            codec = _CONVERSATION_CODECS.get(name)
            out[name] = codec[1](d[name]) if codec else d[name]
    if not isinstance(out.get("conv_id"), str) or "chat_type" not in out:
        raise KeyError("conv_id, chat_type")
    return out


def restore_conversation(store: Any, fields: ConversationRecord) -> None:
    """Put a conversation of an export back into ``store``, every field it kept."""
    saved = {k: fields[k] for k in ("conv_id", "chat_type", "last_activity", "ext")
             if k in fields}
    store.save_conversation(**saved)
    for name, restore in _RESTORE.items():
        if name in fields:
            restore(store, fields["conv_id"], fields[name])


def _reactions_fields(obj: dict[str, Any]) -> dict[str, Any]:
    reactions = obj["reactions"]
    if not isinstance(obj["msg_id"], str) or not isinstance(reactions, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in reactions.items()):
        raise TypeError("reactions: {key: [sender, ...]} of a msg_id")
    return {"msg_id": obj["msg_id"], "reactions": reactions}


def _pins_fields(obj: dict[str, Any]) -> dict[str, Any]:
    ids = obj["msg_ids"]
    if not isinstance(obj["conv_id"], str) or not isinstance(ids, list) or not all(
            isinstance(x, str) for x in ids):
        raise TypeError("pins: a list of msg_ids of a conv_id")
    return {"conv_id": obj["conv_id"], "msg_ids": ids}


_RELATION_READERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "reactions": _reactions_fields, "pins": _pins_fields}


def restore_relations(store: Any, kind: str, fields: dict[str, Any]) -> None:
    """Put a ``reactions`` or ``pins`` record back (after the messages are imported)."""
    if kind == "reactions":  # in their order: oldest key first, oldest sender first
        n = 0
        for key, senders in fields["reactions"].items():
            for sender in senders:
                n += 1
                store.apply_reaction(fields["msg_id"], key, sender, timestamp=_ORDER_BASE + n)
        return
    # pins: newest first; the export keeps their order, not their times
    ids = fields["msg_ids"]
    for i, msg_id in enumerate(reversed(ids)):
        store.apply_message_pin(msg_id, timestamp=_ORDER_BASE + i)


# Restored reactions and pins keep their order, not their times (the public API does not give
# them): their times count up from here.
_ORDER_BASE = 1


def is_record(obj: Any) -> bool:
    """Whether a parsed JSON line is one of this format's records."""
    return isinstance(obj, dict) and ("msg_id" in obj or obj.get("record") in _RECORDS)


_RECORDS = ("store", "conversation", "reactions", "pins")


def dumps(msg: Message) -> str:
    return json.dumps(to_dict(msg), ensure_ascii=False, separators=(",", ":"))


def loads(line: str) -> Message:
    return from_dict(json.loads(line))


def write_jsonl(messages: Any, out: IO[str]) -> int:
    n = 0
    for m in messages:
        out.write(dumps(m) + "\n")
        n += 1
    return n


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def export_store(store: Any, out: IO[str], conv_ids: Iterable[str],
                 progress: Callable[[int], None] | None = None, page: int = 400) -> int:
    """Write the store's header, then each conversation's record and messages (oldest first, in
    pages); returns how many messages were written."""
    out.write(_line({"record": "store", "owner": store.user_id, "version": FORMAT_VERSION}))
    n = 0
    for conv_id in conv_ids:
        conv = store.conversation(conv_id)
        if conv is None:
            continue
        out.write(_line(conversation_record(conv)))
        msgs = store.messages(conv_id, limit=page, direction=Direction.DOWN)
        while msgs:
            for m in msgs:
                n += _write_message(store, m, out)
                for reply in _thread(store, m.msg_id, page):  # outside the main timeline
                    n += _write_message(store, reply, out)
            if progress is not None:
                progress(n)
            msgs = store.messages(conv_id, start_msg_id=msgs[-1].msg_id, limit=page,
                                  direction=Direction.DOWN)
        pins = [m.msg_id for m in store.pinned_messages(conv_id)]
        if pins:
            out.write(_line({"record": "pins", "conv_id": conv_id, "msg_ids": pins}))
    return n


def _write_message(store: Any, msg: Message, out: IO[str]) -> int:
    """A message's line, then its reactions' record when it has any."""
    out.write(dumps(msg) + "\n")
    reactions = store.reactions(msg.msg_id)
    if reactions:
        out.write(_line({"record": "reactions", "msg_id": msg.msg_id,
                         "reactions": {r.key: list(r.senders) for r in reactions}}))
    return 1


def _thread(store: Any, root: str, page: int) -> Iterator[Message]:
    """The replies of the thread rooted at ``root``, oldest first."""
    msgs = store.thread_messages(root, limit=page, direction=Direction.DOWN)
    while msgs:
        yield from msgs
        msgs = store.thread_messages(root, start_msg_id=msgs[-1].msg_id, limit=page,
                                     direction=Direction.DOWN)


def read_jsonl(f: IO[str], name: str = "<jsonl>") -> Iterator[Message]:
    """Messages from JSON lines; a malformed line is an `IMError` naming the file and line."""
    return read_lines(f, name)


def read_lines(lines: Iterable[str], name: str = "<jsonl>",
               on_record: Callable[[str, dict[str, Any]], None] | None = None) -> Iterator[Message]:
    """Messages from JSON lines (any iterable of lines); the store and conversation records go
    to ``on_record(kind, fields)``."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            kind = obj.get("record") if isinstance(obj, dict) else None
            if kind is None:
                yield from_dict(obj)
            elif kind == "conversation":
                fields = _conversation_fields(obj)
                if on_record is not None:
                    on_record(kind, fields)
            elif kind == "store":
                if not isinstance(obj.get("owner"), str) or not obj["owner"]:
                    raise KeyError("owner")
                if on_record is not None:
                    on_record(kind, {"owner": obj["owner"]})
            elif kind in ("reactions", "pins"):
                fields = _RELATION_READERS[kind](obj)
                if on_record is not None:
                    on_record(kind, fields)
            else:
                raise ValueError(f"unknown record {kind!r}")
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{name}, line {lineno}: not an imstore record ({exc!r})") from exc
