"""imstore JSON lines: what ``imstore export`` writes and ``imstore import`` reads back, losslessly.

One JSON object a line, of these records:
- ``{"record": "store", "owner": ..., "version": 1}`` first: whose store it was (a new store
  imported from it takes that owner);
- ``{"record": "conversation", ...}`` before a conversation's messages: every field of
  `Conversation` that is not derived from its messages (the unread count and last message are);
- a message: every field of `Message` (a line without ``record``; exports of older versions
  are messages only, and still read); a thread's replies follow the page holding its root;
- ``{"record": "reactions", "msg_id", "reactions": [{"key", "sender", "at", "id"}, ...]}`` after
  a message that has any (every sender, oldest first, with the time and the server's id of each
  reaction), and ``{"record": "pins", "conv_id", "pins": [{"msg_id", "at", "by"}, ...]}`` (newest
  pin first) after a conversation's messages: put back once the messages are in. Version 1 wrote
  ``{key: [sender, ...]}`` and ``msg_ids`` (order, no times); both still read.
- a message whose stored body cannot be decoded is left out and counted (`ExportResult`).

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
from dataclasses import dataclass
from enum import IntEnum
from typing import IO, Any

from ..codec import body_from_dict, body_to_dict
from ..errors import ErrorCode, IMError
from ..message import (
    ChatType,
    Conversation,
    Direction,
    Message,
    MessageStatus,
    MessageType,
    UndecodableBody,
)

__all__ = ["FORMAT_VERSION", "ExportResult", "conversation_record", "dumps", "export_store",
           "from_dict", "is_record", "loads", "read_jsonl", "read_lines", "restore_conversation",
           "restore_relations", "to_dict", "write_jsonl"]

FORMAT_VERSION = 2  # 2: reactions and pins with their times, ids and pinners
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
    """A ``reactions`` record: ``[{key, sender, at, id}, ...]``, or a format-1 export's
    ``{key: [sender, ...]}`` (order only: times count up from `_ORDER_BASE`)."""
    reactions, msg_id = obj["reactions"], obj["msg_id"]
    if not isinstance(msg_id, str):
        raise TypeError("reactions: of a msg_id")
    if isinstance(reactions, dict):
        if not all(isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
                   for k, v in reactions.items()):
            raise TypeError("reactions: {key: [sender, ...]} of a msg_id")
        rows = [(k, x, None, None) for k, v in reactions.items() for x in v]
    elif isinstance(reactions, list) and all(isinstance(r, dict) for r in reactions):
        rows = [(r["key"], r["sender"], r.get("id"), r.get("at")) for r in reactions]
        if not all(isinstance(k, str) and isinstance(x, str) and (i is None or isinstance(i, str))
                   and (t is None or isinstance(t, int)) for k, x, i, t in rows):
            raise TypeError("reactions: [{key, sender, at, id}, ...]")
    else:
        raise TypeError("reactions: a list of {key, sender, at, id}")
    return {"msg_id": msg_id, "reactions": rows}


def _pins_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A ``pins`` record: ``[{msg_id, at, by}, ...]``, or a format-1 export's ``msg_ids``
    (newest first, order only)."""
    if not isinstance(obj["conv_id"], str):
        raise TypeError("pins: of a conv_id")
    if "pins" in obj:
        pins = obj["pins"]
        if not isinstance(pins, list) or not all(isinstance(p, dict) for p in pins):
            raise TypeError("pins: a list of {msg_id, at, by}")
        rows = [(p["msg_id"], p.get("at"), p.get("by")) for p in pins]
    else:
        ids = obj["msg_ids"]
        if not isinstance(ids, list):
            raise TypeError("pins: a list of msg_ids of a conv_id")
        rows = [(i, None, None) for i in ids]
    if not all(isinstance(i, str) and (t is None or isinstance(t, int))
               and (b is None or isinstance(b, str)) for i, t, b in rows):
        raise TypeError("pins: {msg_id: str, at: ms, by: str}")
    return {"conv_id": obj["conv_id"], "pins": rows}


_RELATION_READERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "reactions": _reactions_fields, "pins": _pins_fields}


def restore_relations(store: Any, kind: str, fields: dict[str, Any],
                      skipped: Callable[[str], None] | None = None) -> None:
    """Put a ``reactions`` or ``pins`` record back (after the messages are imported), with the
    times, ids and pinners it kept. One the store refuses (a key or time out of its limits) is
    left out, its reason told to ``skipped`` (without one: raised)."""
    def one(apply: Callable[..., Any], *args: Any, **kw: Any) -> None:
        try:
            apply(*args, **kw)
        except IMError as exc:
            if skipped is None:
                raise
            skipped(f"{kind}: {str(exc.description).split(', not ')[0]}")

    if kind == "reactions":  # in their order: oldest first
        for n, (key, sender, rid, at) in enumerate(fields["reactions"], 1):
            one(store.apply_reaction, fields["msg_id"], key, sender, reaction_id=rid,
                timestamp=_ORDER_BASE + n if at is None else at)
        return
    for i, (msg_id, at, by) in enumerate(reversed(fields["pins"])):  # oldest pin first
        one(store.apply_message_pin, msg_id, pinned_by=by,
            timestamp=_ORDER_BASE + i if at is None else at)


# A format-1 export kept the order of reactions and pins, not their times: restored, their times
# count up from here.
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


@dataclass
class ExportResult:
    """What `export_store` wrote: messages, and the messages left out because their stored
    body cannot be decoded (`UndecodableBody`: there is nothing to write that reads back)."""

    written: int = 0
    undecodable: int = 0


def export_store(store: Any, out: IO[str], conv_ids: Iterable[str],
                 progress: Callable[[int], None] | None = None, page: int = 400) -> ExportResult:
    """Write the store's header, then each conversation's record and messages (oldest first, in
    pages; a thread's replies after the page holding its root, the replies of a root not stored
    here after the conversation's messages), then its pins. Reactions are read per page."""
    out.write(_line({"record": "store", "owner": store.user_id, "version": FORMAT_VERSION}))
    result = ExportResult()
    for conv_id in conv_ids:
        conv = store.conversation(conv_id)
        if conv is None:
            continue
        out.write(_line(conversation_record(conv)))
        roots = _thread_roots(store, conv_id, page)
        msgs = store.messages(conv_id, limit=page, direction=Direction.DOWN)
        while msgs:
            _write_page(store, msgs, out, result)
            for m in msgs:
                if roots is None or m.msg_id in roots:
                    _write_thread(store, m.msg_id, page, out, result)
                    if roots is not None:
                        roots.discard(m.msg_id)
            if progress is not None:
                progress(result.written + result.undecodable)
            msgs = store.messages(conv_id, start_msg_id=msgs[-1].msg_id, limit=page,
                                  direction=Direction.DOWN)
        for root in sorted(roots or ()):  # threads whose root is not stored here
            _write_thread(store, root, page, out, result)
        pins = store.pin_records(conv_id)
        if pins:
            out.write(_line({"record": "pins", "conv_id": conv_id, "pins": [
                {"msg_id": p.msg_id, "at": p.pinned_at, "by": p.pinned_by} for p in pins]}))
    return result


def _thread_roots(store: Any, conv_id: str, page: int) -> set[str] | None:
    """The roots of a conversation's threads, or None when it has more than a page of them
    (then every message is asked for its replies)."""
    threads = store.threads(conv_id, limit=page)
    return None if len(threads) >= page else {t.root for t in threads}


def _write_page(store: Any, msgs: list[Message], out: IO[str], result: ExportResult) -> None:
    """Each message's line, followed by its reactions' record when it has any (one query for
    the page's reactions)."""
    reactions: dict[str, list[dict[str, Any]]] = {}
    for r in store.reaction_records([m.msg_id for m in msgs]):
        reactions.setdefault(r.msg_id, []).append(
            {"key": r.key, "sender": r.sender, "at": r.timestamp, "id": r.reaction_id})
    for m in msgs:
        if isinstance(m.body, UndecodableBody):
            result.undecodable += 1
            continue
        out.write(dumps(m) + "\n")
        result.written += 1
        if m.msg_id in reactions:
            out.write(_line({"record": "reactions", "msg_id": m.msg_id,
                             "reactions": reactions[m.msg_id]}))


def _write_thread(store: Any, root: str, page: int, out: IO[str], result: ExportResult) -> None:
    """The replies of the thread rooted at ``root``, oldest first."""
    msgs = store.thread_messages(root, limit=page, direction=Direction.DOWN)
    while msgs:
        _write_page(store, msgs, out, result)
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
