"""WhatsApp "Export chat" files: the ``.txt`` (Android and iOS layouts, any locale's date order,
12- and 24-hour clocks, multi-line messages), the ``.zip`` WhatsApp makes "with media", or the
folder it unzips to (``_chat.txt`` and the media files).

Rules kept here:
- the conversation is named by the chat: the file name without "WhatsApp Chat with"/"WhatsApp
  Chat - " and without the copy suffixes a second export gets (" (1)"); for ``_chat.txt`` the
  name of its zip or folder. A chat with one other speaker is CHAT with them (``wa:<name>``), a
  group (more speakers, or group events) GROUP_CHAT ``wa:<chat name>``;
- a message's id is a hash of the conversation, the time as written, the sender as written, the
  text and its position among identical ones: a later export of the same chat adds only what is
  new;
- the date order (day or month first) is read from the whole file: a day above 12, else the
  order that keeps the messages in time order; ``--date-order`` decides when nothing can;
- times are the phone's local times, read in ``--tz`` (default: this machine's zone).

Mapping (export field -> imstore):

- file / zip / folder name -> conversation id and ``ext["title"]``
- header date and time -> time (ms), in ``--tz``
- sender name -> sender ``wa:<name>``, or the owner when it is ``--me``; ``ext["sender_name"]``
- text (all its lines) -> TEXT
- "<This message was edited>" -> ``ext["edited"]`` (the text without the marker)
- "This message was deleted" / "You deleted this message" -> a deleted message (recall notice,
  ``ext["deleted"]``)
- "<Media omitted>", "image omitted" ... -> CUSTOM ``whatsapp.media`` (``kind``, ``text``)
- "IMG-1.jpg (file attached)", "<attached: 1.jpg>" -> IMAGE/VIDEO/VOICE/FILE; the file beside the
  export or in the zip; following text in the body's ``caption``
- "location: https://maps...?q=LAT,LON" -> LOCATION (the line as address)
- lines without a sender (group events, encryption notice) -> CUSTOM ``whatsapp.system``

The text export writes no quoted replies, reactions or pins (a reply is its own text, without
what it quotes; none of the shared real exports has more): ``reply_to`` stays None.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, Any

from ..errors import ErrorCode, IMError
from ..message import ChatType, Message
from ._archive import MAX_LINE_CHARS, MAX_TEXT_BYTES, open_member
from ._common import (
    ExportInfo,
    ImportOptions,
    Skipped,
    attachment_message,
    custom,
    decode_lines,
    deleted_message,
    inside,
    kind_of,
    mark_edited,
    stable_id,
    zone_of,
)

__all__ = ["chat_member", "read_whatsapp", "scan_whatsapp"]

HEADER = re.compile(
    r"^[\u200e\u200f]?\[?(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4})[,.]?\s+"
    r"(?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?)(?:\s*(?P<ampm>[aApP]\.?\s?[mM]\.?))?\]?"
    r"\s*(?:[-–]\s)?(?P<rest>.*)$")
_SENDER = re.compile(r"^(?P<sender>[^:\n]{1,80}?):\s?(?P<text>.*)$", re.S)
_OMITTED = re.compile(r"^<?(?:(?P<kind>image|video|audio|sticker|document|gif|media|"
                      r"medien|contact card)\s+(?:omitted|ausgelassen)|Media omitted)>?$", re.I)
_ATTACHED = re.compile(r"^(?:<attached:\s*)?(?P<name>[^<>/\\\n]+?\.\w{2,5})(?:>|\s+\(file "
                       r"attached\))", re.I)
_LOCATION = re.compile(r"location:\s*https?://\S*?[?&]q=(?P<lat>-?\d+(?:\.\d+)?),"
                       r"(?P<lon>-?\d+(?:\.\d+)?)", re.I)
_DELETED = re.compile(r"^(?:this message was deleted|you deleted this message|"
                      r"diese nachricht wurde gelöscht|du hast diese nachricht gelöscht|"
                      r"se eliminó este mensaje|eliminaste este mensaje|"
                      r"ce message a été supprimé|vous avez supprimé ce message|"
                      r"questo messaggio è stato eliminato|hai eliminato questo messaggio|"
                      r"mensagem apagada|esta mensagem foi apagada|você apagou esta mensagem)\.?$",
                      re.I)
_EDITED = re.compile(r"\s*<(?:this message was edited|diese nachricht wurde bearbeitet|"
                     r"se editó este mensaje|ce message a été modifié|"
                     r"questo messaggio è stato modificato|esta mensagem foi editada)>\s*$", re.I)
# Events that only happen in groups ("X created group", "X added Y", "X changed the subject").
_GROUP_EVENT = re.compile(r"created (?:the )?group|\badded\b|changed the (?:subject|group)|"
                          r"changed this group|joined using|\bleft$|\bremoved\b", re.I)
_SYSTEM_TEXT = re.compile(r"end-to-end encrypted|created (?:the )?group|changed the (?:subject|"
                          r"group)|changed this group|joined using|security code|"
                          r"disappearing messages", re.I)
_PREFIXES = re.compile(r"^WhatsApp[ -]Chat (?:with|mit|con|avec|met|com|-|–)\s*", re.I)
_WITH = re.compile(r"^WhatsApp[ -]Chat (?:with|mit|con|avec|met|com) ", re.I)
_COPY_SUFFIX = re.compile(r"(?:\s*\(\d+\)|\s+copy|\s+-\s+Copy)+$", re.I)
_LRM = "\u200e\u200f\u202a\u202c"


def chat_name(name: str) -> str:
    """The chat's name from an export's file (or zip/folder) name."""
    stem = os.path.basename(name.rstrip("/\\"))
    for ext in (".txt", ".zip"):
        if stem.lower().endswith(ext):
            stem = stem[:-len(ext)]
    stem = _COPY_SUFFIX.sub("", stem.strip())
    return _COPY_SUFFIX.sub("", _PREFIXES.sub("", stem)).strip() or stem


def chat_member(z: zipfile.ZipFile) -> str | None:
    """The chat text in a WhatsApp zip: ``_chat.txt`` or the one ``.txt`` at its top."""
    txts = [n for n in z.namelist() if n.lower().endswith(".txt") and "/" not in n.rstrip("/")]
    for n in txts:
        if os.path.basename(n) == "_chat.txt":
            return n
    return txts[0] if len(txts) == 1 else None


class _Source:
    """Where the chat text and its media are: a .txt (media beside it), a zip, or a folder."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.zip_member: str | None = None
        if os.path.isdir(path):
            self.text_path = os.path.join(path, "_chat.txt")
            if not os.path.isfile(self.text_path):
                txts = [n for n in os.listdir(path) if n.lower().endswith(".txt")]
                if len(txts) != 1:
                    raise IMError(ErrorCode.INVALID_PARAM,
                                  f"{path}: no _chat.txt (or single .txt) in this folder")
                self.text_path = os.path.join(path, txts[0])
            self.media_dir: str | None = path
            inner = os.path.basename(self.text_path)
            self.name = chat_name(path if inner == "_chat.txt" else inner)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                self.zip_member = chat_member(z)
                self.sizes = {i.filename: i.file_size for i in z.infolist()}
            if self.zip_member is None:
                raise IMError(ErrorCode.INVALID_PARAM,
                              f"{path}: no _chat.txt (or single .txt) in this zip; is it a "
                              "WhatsApp export?")
            self.text_path = path
            self.media_dir = None
            inner = os.path.basename(self.zip_member)
            self.name = chat_name(path if inner == "_chat.txt" else inner)
        else:
            self.text_path = path
            self.media_dir = os.path.dirname(os.path.abspath(path))
            base = os.path.basename(path)
            self.name = chat_name(os.path.dirname(os.path.abspath(path))
                                  if base == "_chat.txt" else base)

        self.label = path if self.zip_member is None else f"{path}: {self.zip_member}"
        # "WhatsApp Chat with Bob": the name says it is a chat with one person
        self.one_to_one = any(_WITH.match(os.path.basename(n.rstrip("/\\")))
                              for n in (path, self.zip_member or "", self.text_path))

    @contextmanager
    def lines(self, encoding: str | None) -> Iterator[Iterator[str]]:
        raw: IO[bytes]
        if self.zip_member is not None:
            with zipfile.ZipFile(self.path) as z, \
                    open_member(z, self.zip_member, self.path, MAX_TEXT_BYTES) as raw:
                yield decode_lines(raw, self.label, encoding)
        else:
            with open(self.text_path, "rb") as raw:
                yield decode_lines(raw, self.label, encoding)

    def attachment(self, name: str) -> tuple[str | None, str, int]:
        """(local path, origin, size) of a file the chat mentions."""
        if self.zip_member is not None:
            return None, f"whatsapp-export:{name}", self.sizes.get(name, 0)
        assert self.media_dir is not None
        return inside(self.media_dir, name) or None, f"whatsapp-export:{name}", 0


def _split_date(date: str) -> list[int]:
    return [int(p) for p in re.split(r"[./-]", date)]


def _entries(src: _Source, encoding: str | None) -> Iterator[tuple[int, Any, str]]:
    """(line number, header match, full text after the header) of every message."""
    with src.lines(encoding) as lines:
        current: tuple[int, Any, str] | None = None
        for lineno, raw in enumerate(lines, 1):
            line = raw.rstrip("\n").rstrip("\r")
            if lineno == 1:
                line = line.lstrip("\ufeff")
            m = HEADER.match(line)
            if m:
                if current is not None:
                    yield current
                current = (lineno, m, m.group("rest"))
            elif current is not None:
                if len(current[2]) + len(line) > MAX_LINE_CHARS:  # a message, not a book
                    raise IMError(ErrorCode.FILE_INVALID,
                                  f"{src.label}, line {lineno}: a message longer than "
                                  f"{MAX_LINE_CHARS:,} characters; not a chat export")
                current = (current[0], current[1], current[2] + "\n" + line)
            elif line.strip():
                raise IMError(ErrorCode.INVALID_PARAM,
                              f"{src.label}, line {lineno}: no WhatsApp message header (like "
                              "'01/02/21, 10:15 - Name: text'); is this a WhatsApp chat export?")
        if current is not None:
            yield current


def _speaker(rest: str, chat: str) -> tuple[str | None, str]:
    """(sender name or None for a system line, text)."""
    sm = _SENDER.match(rest)
    if sm is None:
        return None, rest
    name, text = sm.group("sender").strip().strip(_LRM), sm.group("text")
    # iOS writes group events and the encryption notice as if the chat (or a person) said them.
    if text.startswith("\u200e") and _SYSTEM_TEXT.search(text):
        return None, rest
    if name == chat and _SYSTEM_TEXT.search(text):
        return None, rest
    return name, text


_ORDERS = ("dmy", "mdy", "ymd")


def scan_whatsapp(path: str, opts: ImportOptions) -> ExportInfo:
    """The first pass: check every header, decide the date order, the speakers and the chat
    type."""
    if opts.date_order is not None and opts.date_order not in _ORDERS:
        raise IMError(ErrorCode.INVALID_PARAM, f"--date-order must be one of {', '.join(_ORDERS)}")
    zone, zone_note = zone_of(opts.tz)
    src = _Source(path)
    first_gt12 = second_gt12 = year_first = False
    dates: list[tuple[int, int, int, int, int]] = []  # (a, b, c, minutes, line)
    days: dict[tuple[int, int, int], int] = {}  # every date written, and its first line
    speakers: dict[str, int] = {}
    group_events = 0
    total = 0
    dotted = twelve_hour = False
    for lineno, m, rest in _entries(src, opts.encoding):
        total += 1
        parts = re.split(r"[./-]", m.group("date"))
        dotted = dotted or "." in m.group("date")
        twelve_hour = twelve_hour or bool(m.group("ampm"))
        a, b, c = (int(p) for p in parts)
        if len(parts[0]) == 4 or a > 31:
            year_first = True
        elif a > 12:
            first_gt12 = True
        elif b > 12:
            second_gt12 = True
        h, mi = _hm(m.group("time"), m.group("ampm"))
        days.setdefault((a, b, c), lineno)
        if len(dates) < 200_000:
            dates.append((a, b, c, h * 60 + mi, lineno))
        name, text = _speaker(rest, src.name)
        if name is None:
            group_events += bool(_GROUP_EVENT.search(text))
        else:
            speakers[name] = speakers.get(name, 0) + 1
    if total == 0:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"{src.label}, line 1: no WhatsApp message header (like '01/02/21, 10:15 - "
                      "Name: text') found; is this a WhatsApp chat export?")
    info = ExportInfo("whatsapp", total=total)
    if year_first:
        order = "ymd"
    elif first_gt12 and second_gt12:
        raise IMError(ErrorCode.INVALID_PARAM, f"{src.label}: some dates have a day above 12 first, "
                                               "others second; the file mixes date orders")
    elif first_gt12 or second_gt12:
        order = "dmy" if first_gt12 else "mdy"
    elif opts.date_order is not None:
        order = opts.date_order
    else:
        fits = [o for o in ("dmy", "mdy") if _in_order(dates, o)]
        if len(fits) == 1:
            order, why = fits[0], "the only order that keeps the messages in time order"
        elif dotted:
            order, why = "dmy", "no date can tell; dates with dots are day-first"
        elif twelve_hour:
            order, why = "mdy", "no date can tell; a 12-hour clock is the US layout"
        else:
            order, why = "dmy", "no date can tell; the most common layout"
        info.notes.append(f"dates read as {_ORDER_NAMES[order]} ({why}); pass --date-order to "
                          "change")
    if opts.date_order is not None and opts.date_order != order:
        raise IMError(ErrorCode.INVALID_PARAM, f"{src.label}: --date-order {opts.date_order} does "
                                               f"not fit the dates (they are {_ORDER_NAMES[order]})")
    for (a, b, c), lineno in days.items():
        y, mo, d = {"ymd": (a, b, c), "mdy": (c, a, b), "dmy": (c, b, a)}[order]
        _ms((y + 2000 if y < 100 else y, mo, d, 0, 0, 0), None, f"{src.label}, line {lineno}")
    ident = opts.identity()
    mine = [s for s in speakers if ident.is_me(s, f"wa:{s}")]
    others = [s for s in speakers if s not in mine]
    me = mine[0] if mine else None
    if not mine and len(others) == 2 and src.name in others:
        # "WhatsApp Chat with Bob" with two speakers: the one who is not Bob made the export.
        me = next(s for s in others if s != src.name)
        others = [src.name]
        info.notes.append(f"me in this chat: {me!r} (the other speaker of {src.name!r}); pass "
                          "--me to say otherwise")
    elif not mine and len(others) == 2 and not group_events:
        given = f"--me {', '.join(map(repr, opts.me))} is none of the speakers" if opts.me \
            else "who are you in this chat?"
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"{src.label}: {given}; pass --me NAME (one of {others[0]!r}, "
                      f"{others[1]!r})")
    elif not mine and others:
        info.notes.append("none of the speakers is you (--me): every message is imported as "
                          "received")
    if not others and src.one_to_one and not group_events:
        others = [src.name]  # only you wrote in the chat with them
    if len(others) == 1 and not group_events:
        ctype, conv = ChatType.CHAT, f"wa:{others[0]}"
    else:
        ctype, conv = ChatType.GROUP_CHAT, f"wa:{src.name}"
    info.owner = f"wa:{me}" if me else None
    info.owner_name = me
    info.notes.append(f"times read in {zone_note}")
    info.state.update(src=src, order=order, zone=zone, me=me, ctype=ctype, conv=conv,
                      title=src.name if ctype == ChatType.GROUP_CHAT else others[0])
    return info


_ORDER_NAMES = {"dmy": "day/month/year", "mdy": "month/day/year", "ymd": "year/month/day"}


def _in_order(dates: list[tuple[int, int, int, int, int]], order: str) -> bool:
    prev = None
    for a, b, c, minutes, _ in dates:
        key = (c, a, b, minutes) if order == "mdy" else (c, b, a, minutes)
        if (order == "mdy" and a > 12) or (order == "dmy" and b > 12):
            return False
        if prev is not None and key < prev:
            return False
        prev = key
    return True


def _hm(time_: str, ampm: str | None) -> tuple[int, int]:
    hms = [int(p) for p in re.split(r"[:.]", time_)]
    h = hms[0]
    if ampm:
        pm = ampm.strip().lower().startswith("p")
        h = h % 12 + (12 if pm else 0)
    return h, hms[1]


def _wallclock(m: Any, order: str) -> tuple[int, ...]:
    parts = _split_date(m.group("date"))
    y, mo, d = {"ymd": (parts[0], parts[1], parts[2]), "mdy": (parts[2], parts[0], parts[1]),
                "dmy": (parts[2], parts[1], parts[0])}[order]
    if y < 100:
        y += 2000
    hms = [int(p) for p in re.split(r"[:.]", m.group("time"))]
    h, mi = _hm(m.group("time"), m.group("ampm"))
    return y, mo, d, h, mi, hms[2] if len(hms) > 2 else 0


def _ms(wall: tuple[int, ...], zone: Any, where: str) -> int:
    try:
        y, mo, d, h, mi, s = wall
        dt = datetime(y, mo, d, h, mi, s, tzinfo=zone)
    except ValueError as exc:
        raise IMError(ErrorCode.INVALID_PARAM, f"{where}: impossible date or time "
                                               f"{wall[0]:04}-{wall[1]:02}-{wall[2]:02} "
                                               f"{wall[3]:02}:{wall[4]:02} ({exc})") from exc
    return int(dt.timestamp() * 1000)  # a naive datetime is this machine's local time


def read_whatsapp(path: str, opts: ImportOptions, info: ExportInfo,
                  skipped: Skipped) -> Iterator[Message]:
    """The second pass: messages, streamed."""
    st = info.state
    src: _Source = st["src"]
    ctype: ChatType = st["ctype"]
    conv: str = st["conv"]
    me: str | None = st["me"]
    seen: dict[tuple[Any, ...], int] = {}
    for lineno, m, rest in _entries(src, opts.encoding):
        where = f"{src.label}, line {lineno}"
        wall = _wallclock(m, st["order"])
        ts = _ms(wall, st["zone"], where)
        name, text = _speaker(rest, src.name)
        key = (wall, name or "", text)
        seen[key] = seen.get(key, 0) + 1
        mine = name is not None and name == me
        sender = None if mine else conv if ctype == ChatType.CHAT else f"wa:{name or 'system'}"
        if ctype == ChatType.CHAT and name is None:
            sender = conv
        kw: dict[str, Any] = dict(chat_type=ctype, sender=sender, timestamp=ts,
                                  msg_id=stable_id("wa", conv, *key, seen[key]))
        ext: dict[str, Any] = {"sender_name": name} if name else {"system": True}
        if name is None:
            yield custom(conv, "whatsapp.system", {"text": text}, ext=ext, **kw)
            continue
        body = text.strip().strip(_LRM).strip()
        edited = False
        em = _EDITED.search(body)
        if em:
            # iOS puts a left-to-right mark before the marker: it goes with it
            body, edited = body[:em.start()].rstrip().rstrip(_LRM).rstrip(), True
            text = body
        if not body:
            skipped("whatsapp: empty message")
            continue
        msg: Message
        if _DELETED.match(body):
            msg = deleted_message(conv, ts, body, ext=ext, **kw)
        elif (om := _OMITTED.match(body)) is not None:
            msg = custom(conv, "whatsapp.media", {"kind": (om.group("kind") or "media").lower(),
                                                  "text": body}, ext=ext, **kw)
        elif (am := _ATTACHED.match(body)) is not None:
            fname = am.group("name").strip()
            caption = body[am.end():].strip()
            if caption:
                ext["caption"] = caption
            local, origin, size = src.attachment(fname)
            msg = attachment_message(conv, kind_of(fname), path=local, origin=origin,
                                     display_name=fname, size=size, ext=ext, **kw)
        elif (lm := _LOCATION.search(body)) is not None:
            msg = Message.location(conv, float(lm.group("lat")), float(lm.group("lon")),
                                   address=body, ext=ext, **kw)
        else:
            msg = Message.text(conv, text, ext=ext, **kw)
        yield mark_edited(msg, None) if edited else msg
