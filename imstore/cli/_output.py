"""What the commands print, and the times they read.

Rules kept here:
- for people: names next to ids, times in the local zone with the zone shown (UTC with
  ``--utc``), one line a message; for scripts (``--json``): one JSON document, or one object a
  line for message streams, each message as the export writes it;
- times given on the command line are read in the same zone they are shown in;
- a file written with ``-o`` appears whole or not at all (written beside it, then renamed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

from ..errors import ErrorCode, IMError
from ..message import Conversation, Direction, Message, MessageType
from ..store import MessageStore

__all__ = ["emit", "output_file", "print_json", "print_messages", "summary", "time_arg",
           "title_of", "titles", "when", "who"]


def _zone_of(args: argparse.Namespace) -> Any:
    return UTC if getattr(args, "utc", False) else None


def when(ms: int | None, args: argparse.Namespace) -> str:
    """A time for people: local (or UTC) with the zone shown."""
    if ms is None:
        return "-"
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    dt = dt if _zone_of(args) is UTC else dt.astimezone()
    return dt.strftime("%Y-%m-%d %H:%M ") + (dt.tzname() or "")


def summary(msg: Message) -> str:
    """One line of a message for people."""
    from ..text import content_text

    ext = msg.ext if isinstance(msg.ext, dict) else {}
    if ext.get("deleted") or getattr(msg, "recalled_at", None):
        return "[deleted]"
    text = content_text(msg.type, msg.body).replace("\n", " ")
    params = getattr(msg.body, "params", None)
    if msg.type == MessageType.CUSTOM and isinstance(params, dict) and params:
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if k != "action")
        text += f" ({shown[:80]}{'...' if len(shown) > 80 else ''})" if shown else ""
    label = "" if msg.type == MessageType.TEXT else f"[{msg.type.name.lower()}] "
    if ext.get("caption"):
        text += " -- " + str(ext["caption"]).replace("\n", " ")
    marks = "".join(f" [{m}]" for m, on in (("edited", ext.get("edited")),) if on)
    reply = ("[thread] " if msg.thread_id else "") + (
        "[reply] " if msg.reply_to or ext.get("reply_to") else "")
    return f"{reply}{label}{text}{marks}"


def who(msg: Message) -> str:
    """The sender for people: the name the export gave, the id, "me"."""
    ext = msg.ext if isinstance(msg.ext, dict) else {}
    if ext.get("system"):
        return "(system)"
    name = ext.get("sender_name")
    if msg.direction == Direction.SEND:
        return f"{name} (me)" if name else "me"
    return f"{name} ({msg.sender})" if name and name != msg.sender else str(msg.sender)


def title_of(conv: Conversation | None) -> str:
    if conv is None:
        return ""
    if conv.title:  # schema 3; a store made before keeps it in ext until migrated
        return conv.title
    return str(conv.ext.get("title") or "") if isinstance(conv.ext, dict) else ""


def titles(store: MessageStore, conv_ids: Sequence[str]) -> dict[str, str]:
    return {c: title_of(store.conversation(c)) for c in dict.fromkeys(conv_ids)}


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=1, default=str))


def emit(args: argparse.Namespace, data: Any, lines: Sequence[str]) -> None:
    """``data`` as JSON with ``--json``, else ``lines`` for people."""
    if args.json:
        print_json(data)
    else:
        for line in lines:
            print(line)


def print_messages(args: argparse.Namespace, msgs: list[Message], titles: dict[str, str], *,
                   conv_column: bool) -> None:
    if args.json:
        from ..importers.jsonl import to_dict

        for m in msgs:
            d = to_dict(m)
            d["title"] = titles.get(m.conv_id, "")
            print(json.dumps(d, ensure_ascii=False, default=str))
        return
    if not msgs:
        print("(no messages)")
        return
    for m in msgs:
        conv = ""
        if conv_column:
            t = titles.get(m.conv_id)
            conv = f"  {m.conv_id}" + (f" ({t})" if t and t != m.conv_id else "")
        print(f"{m.msg_id}  {when(m.timestamp, args)}{conv}  {who(m)}: {summary(m)}")


def time_arg(value: str | None, option: str, args: argparse.Namespace, *,
             end_of_day: bool = False) -> int | None:
    """An option's time in ms: ms since the epoch, a date (with ``end_of_day``: the last ms of
    that day), or an ISO date-time; dates and times without a zone are local (UTC with --utc)."""
    if value is None:
        return None
    v = value.strip()
    if v.isdigit():
        return int(v)
    zone = _zone_of(args)
    try:
        if len(v) == 10:
            d = date.fromisoformat(v)
            start = datetime(d.year, d.month, d.day, tzinfo=zone)
            if zone is None:
                start = start.astimezone()
            if end_of_day:
                nxt = datetime.combine(d + timedelta(days=1), datetime.min.time(), tzinfo=zone)
                return int((nxt if zone else nxt.astimezone()).timestamp() * 1000) - 1
            return int(start.timestamp() * 1000)
        dt = datetime.fromisoformat(v)
    except ValueError as exc:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"{option} {value!r} is not a date: use YYYY-MM-DD, an ISO date-time "
                      "(2021-03-22T17:16) or milliseconds since the epoch") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone) if zone else dt.astimezone()
    return int(dt.timestamp() * 1000)


@contextlib.contextmanager
def output_file(path: str | None) -> Iterator[IO[str]]:
    """Standard output, or a file that appears whole (written beside it, then renamed)."""
    if not path or path == "-":
        yield sys.stdout
        return
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".part",
                                   dir=folder)
    except FileNotFoundError as exc:
        raise IMError(ErrorCode.FILE_NOT_FOUND, f"cannot write {path}: no folder {folder}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
