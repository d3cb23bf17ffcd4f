"""imstore JSON lines: one message per line, lossless (what ``imstore export`` writes).

Rules kept here: every field of `Message` is written; enums by name; bytes (in ``ext`` or bodies)
as ``{"$bytes": base64}``; unknown body fields are kept, so export then import is a round trip.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ..codec import body_from_dict, body_to_dict
from ..errors import ErrorCode, IMError
from ..message import ChatType, Direction, Message, MessageStatus, MessageType

__all__ = ["dumps", "loads", "read_jsonl", "read_lines", "write_jsonl"]


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
            return base64.b64decode(value["$bytes"])
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def to_dict(msg: Message) -> dict[str, Any]:
    """A message as JSON-ready data."""
    return {
        "msg_id": msg.msg_id, "conv_id": msg.conv_id, "chat_type": msg.chat_type.name,
        "type": msg.type.name, "sender": msg.sender, "to": msg.to,
        "direction": msg.direction.name, "status": msg.status.name,
        "local_time": msg.local_time, "server_time": msg.server_time, "is_read": msg.is_read,
        "is_delivered": msg.is_delivered, "is_read_acked": msg.is_read_acked,
        "need_group_ack": msg.need_group_ack, "group_ack_count": msg.group_ack_count,
        "body": _plain(body_to_dict(msg.body)), "ext": _plain(msg.ext),
    }


def from_dict(d: dict[str, Any]) -> Message:
    """The inverse of `to_dict`. Raises KeyError/ValueError/TypeError on malformed data."""
    mtype = MessageType[d["type"]]
    return Message(
        msg_id=d["msg_id"], conv_id=d["conv_id"], chat_type=ChatType[d["chat_type"]], type=mtype,
        sender=d["sender"], to=d["to"], body=body_from_dict(mtype, _unplain(d["body"])),
        direction=Direction[d["direction"]], status=MessageStatus[d["status"]],
        local_time=int(d["local_time"]), server_time=d.get("server_time"),
        is_read=d.get("is_read"), is_delivered=bool(d.get("is_delivered")),
        is_read_acked=bool(d.get("is_read_acked")), need_group_ack=bool(d.get("need_group_ack")),
        group_ack_count=int(d.get("group_ack_count", 0)), ext=_unplain(d.get("ext") or {}),
    )


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


def read_jsonl(f: IO[str], name: str = "<jsonl>") -> Iterator[Message]:
    """Messages from JSON lines; a malformed line is an `IMError` naming the file and line."""
    return read_lines(f, name)


def read_lines(lines: Iterable[str], name: str = "<jsonl>") -> Iterator[Message]:
    """Messages from JSON lines (any iterable of lines)."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield loads(line)
        except (KeyError, ValueError, TypeError) as exc:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{name}, line {lineno}: not an imstore message ({exc!r})") from exc
