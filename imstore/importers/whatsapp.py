"""WhatsApp "Export chat" text files (Android and iOS layouts, any locale's date order, 12- and
24-hour clocks, multi-line messages, media placeholders, attached files, system lines).

Pass one (`_scan`) reads the headers to learn the date order and who speaks; pass two yields
messages. A chat with one other speaker is CHAT with them, otherwise GROUP_CHAT named after the
file. Media placeholders ("<Media omitted>", "image omitted") become CUSTOM ``whatsapp.media``;
attached files that lie beside the export become attachments; system lines become CUSTOM
``whatsapp.system``. Times are local times of the exporting phone, stored as if they were UTC.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import ErrorCode, IMError
from ..message import ChatType, Message
from ._common import attachment_message, custom, kind_of, stable_id

__all__ = ["read_whatsapp"]

_HEADER = re.compile(
    r"^[\u200e\u200f]?\[?(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4})[,.]?\s+"
    r"(?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?)(?:\s*(?P<ampm>[aApP]\.?\s?[mM]\.?))?\]?"
    r"\s*(?:[-–]\s)?(?P<rest>.*)$")
_SENDER = re.compile(r"^(?P<sender>[^:\n]{1,80}?):\s?(?P<text>.*)$", re.S)
_OMITTED = re.compile(r"^<?(?:(?P<kind>image|video|audio|sticker|document|gif|media|"
                      r"medien|contact card)\s+(?:omitted|ausgelassen)|Media omitted)>?$", re.I)
_ATTACHED = re.compile(r"^[\u200e]?(?:<attached:\s*)?(?P<name>[^<>/\\]+?\.\w{2,5})(?:>|\s+\(file "
                       r"attached\))", re.I)
_LOCATION = re.compile(r"location:\s*https?://\S*?[?&]q=(?P<lat>-?\d+(?:\.\d+)?),(?P<lon>-?\d+(?:\.\d+)?)",
                       re.I)


@dataclass
class _Scan:
    order: str = "dmy"
    senders: dict[str, int] = field(default_factory=dict)
    headers: int = 0


def _split_date(date: str) -> list[str]:
    return re.split(r"[./-]", date)


def _scan(path: str) -> _Scan:
    first_gt12 = second_gt12 = year_first = False
    scan = _Scan()
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            m = _HEADER.match(line.rstrip("\n"))
            if not m:
                continue
            a, b, _c = _split_date(m.group("date"))
            scan.headers += 1
            if len(a) == 4:
                year_first = True
            elif int(a) > 12:
                first_gt12 = True
            elif int(b) > 12:
                second_gt12 = True
            sm = _SENDER.match(m.group("rest"))
            if sm:
                name = sm.group("sender").strip()
                scan.senders[name] = scan.senders.get(name, 0) + 1
    if scan.headers == 0:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"{path}, line 1: no WhatsApp message header (like '01/02/21, 10:15 - Name: "
                      "text') found; is this a WhatsApp chat export?")
    scan.order = "ymd" if year_first else ("mdy" if second_gt12 and not first_gt12 else "dmy")
    return scan


def _when(date: str, time_: str, ampm: str | None, order: str, where: str) -> int:
    parts = [int(p) for p in _split_date(date)]
    y, mo, d = {"ymd": (parts[0], parts[1], parts[2]), "mdy": (parts[2], parts[0], parts[1]),
                "dmy": (parts[2], parts[1], parts[0])}[order]
    if y < 100:
        y += 2000
    hms = [int(p) for p in re.split(r"[:.]", time_)]
    h, mi, sec = hms[0], hms[1], hms[2] if len(hms) > 2 else 0
    if ampm:
        pm = ampm.strip().lower().startswith("p")
        h = h % 12 + (12 if pm else 0)
    try:
        return int(datetime(y, mo, d, h, mi, sec, tzinfo=UTC).timestamp() * 1000)
    except ValueError as exc:
        raise IMError(ErrorCode.INVALID_PARAM, f"{where}: impossible date or time {date} {time_} "
                                               f"({exc})") from exc


def _chat_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    m = re.match(r"WhatsApp Chat (?:with|mit|con|avec) (.+)", stem, re.I)
    return m.group(1) if m else stem


def read_whatsapp(path: str, *, owner: str, skipped: Callable[[str], None]) -> Iterator[Message]:
    """Messages of a WhatsApp text export, streamed."""
    scan = _scan(path)
    base = os.path.dirname(os.path.abspath(path))
    others = [s for s in scan.senders if s != owner]
    if len(others) == 1:
        chat_type, conv = ChatType.CHAT, f"wa:{others[0]}"
    else:
        chat_type, conv = ChatType.GROUP_CHAT, f"wa:{_chat_name(path)}"
    seen: dict[tuple[int, str, str], int] = {}

    def build(ts: int, rest: str, where: str) -> Message | None:
        sm = _SENDER.match(rest)
        if sm is None:  # a system line ("X created group", "You were added")
            sender_name, text = None, rest
        else:
            sender_name, text = sm.group("sender").strip(), sm.group("text")
        key = (ts, sender_name or "", text)
        seen[key] = seen.get(key, 0) + 1
        mine = sender_name == owner
        if chat_type == ChatType.CHAT:
            sender = None if mine else conv
            to = conv if mine else owner
        else:
            sender = None if mine else f"wa:{sender_name or 'system'}"
            to = conv
        kw: dict[str, Any] = dict(chat_type=chat_type, sender=sender, timestamp=ts,
                                  msg_id=stable_id("wa", conv, *key, seen[key]))
        ext = {"wa_from": sender_name} if sender_name else {}
        if sender_name is None:
            return custom(to, "whatsapp.system", {"text": text}, ext=ext, **kw)
        body = text.strip()
        if not body:
            skipped("whatsapp: empty message")
            return None
        om = _OMITTED.match(body)
        if om:
            return custom(to, "whatsapp.media", {"kind": (om.group("kind") or "media").lower(),
                                                 "text": body}, ext=ext, **kw)
        am = _ATTACHED.match(body)
        if am:
            name = am.group("name").strip()
            caption = body[am.end():].strip()
            if caption:
                ext["caption"] = caption
            return attachment_message(to, kind_of(name), path=os.path.join(base, name),
                                      origin=f"whatsapp-export:{name}", display_name=name,
                                      ext=ext, **kw)
        lm = _LOCATION.search(body)
        if lm:
            return Message.location(to, float(lm.group("lat")), float(lm.group("lon")),
                                    address=body, ext=ext, **kw)
        return Message.text(to, text, ext=ext, **kw)

    with open(path, encoding="utf-8-sig", errors="replace") as f:
        current: tuple[int, str, str] | None = None
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\n").rstrip("\r")
            m = _HEADER.match(line)
            if m:
                if current is not None:
                    msg = build(*current)
                    if msg is not None:
                        yield msg
                where = f"{path}, line {lineno}"
                ts = _when(m.group("date"), m.group("time"), m.group("ampm"), scan.order, where)
                current = (ts, m.group("rest"), where)
            elif current is not None:
                current = (current[0], current[1] + "\n" + line, current[2])
            elif line.strip():
                raise IMError(ErrorCode.INVALID_PARAM,
                              f"{path}, line {lineno}: text before the first message header")
        if current is not None:
            msg = build(*current)
            if msg is not None:
                yield msg
