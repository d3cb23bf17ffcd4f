"""Telegram Desktop JSON exports: one chat (``result.json`` of a chat) or a whole account
(``chats.list[]``), streamed message by message.

Mapping: text (plain or entity arrays) → TEXT; photo → IMAGE; video_file, animation,
video_message → VIDEO; voice_message, audio_file → VOICE; other files → FILE; locations →
LOCATION; stickers, polls, contacts and service messages → CUSTOM with the original fields;
anything else is skipped and counted. Captions, forwards, replies and the sender's display name
go to ``ext``. Personal chats become CHAT with the peer, the rest GROUP_CHAT.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from ..errors import ErrorCode, IMError
from ..message import ChatType, Message, MessageType
from ._common import attachment_message, custom, stable_id

__all__ = ["read_telegram"]

_CHUNK = 1 << 20
_HEADER_KEY = re.compile(r'"(name|type|id)"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')
_CHAT_TYPES = {"personal_chat": ChatType.CHAT, "bot_chat": ChatType.CHAT,
               "saved_messages": ChatType.CHAT}
_WS = " \t\r\n,"


class _Stream:
    """Reads JSON values out of a large file without loading it whole."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.f = open(path, encoding="utf-8-sig")  # noqa: SIM115 - closed in close()
        self.buf = ""
        self.base = 0  # file offset of buf[0] in characters
        self.lines = 1  # line number of buf[0]
        self.eof = False
        self.dec = json.JSONDecoder()

    def close(self) -> None:
        self.f.close()

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(_CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def drop(self, n: int) -> None:
        self.lines += self.buf.count("\n", 0, n)
        self.base += n
        self.buf = self.buf[n:]

    def where(self, i: int = 0) -> str:
        line = self.lines + self.buf.count("\n", 0, i)
        return f"{self.path}, line {line}"

    def fail(self, what: str, i: int = 0) -> IMError:
        return IMError(ErrorCode.INVALID_PARAM,
                       f"{self.where(i)}: {what}; is this a Telegram Desktop JSON export?")

    def find_messages(self) -> str | None:
        """Advance to just after the next ``"messages": [``; returns the text before it."""
        pat = re.compile(r'"messages"\s*:\s*\[')
        while True:
            m = pat.search(self.buf)
            if m:
                before = self.buf[:m.start()]
                self.drop(m.end())
                return before
            if not self.more():
                return None

    def next_item(self) -> Any:
        """The next value of the current array, or StopIteration's sentinel at ``]``."""
        while True:
            i = 0
            while i < len(self.buf) and self.buf[i] in _WS:
                i += 1
            if i == len(self.buf):
                if not self.more():
                    raise self.fail("the file ends inside the messages list", i)
                continue
            if self.buf[i] == "]":
                self.drop(i + 1)
                return _END
            try:
                value, end = self.dec.raw_decode(self.buf, i)
            except json.JSONDecodeError as exc:
                if self.more():
                    continue
                raise self.fail(f"malformed JSON ({exc.msg})", exc.pos) from exc
            self.drop(end)
            return value


_END = object()


def _header(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in _HEADER_KEY.findall(text):
        out[key] = json.loads(raw)
    return out


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for p in value:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                return None
        return "".join(parts)
    return None


def _time(m: dict[str, Any]) -> int | None:
    if "date_unixtime" in m:
        try:
            return int(m["date_unixtime"]) * 1000
        except (TypeError, ValueError):
            return None
    try:
        dt = datetime.fromisoformat(str(m["date"]))
    except (KeyError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _uid(value: Any) -> str:
    s = str(value)
    return s[4:] if s.startswith("user") and s[4:].isdigit() else s


def read_telegram(path: str, *, owner: str,
                  skipped: Callable[[str], None]) -> Iterator[Message]:
    """Messages of a Telegram Desktop export, streamed. Raises `IMError` (naming the file and
    line) for a file that is not one."""
    base = os.path.dirname(os.path.abspath(path))
    s = _Stream(path)
    try:
        first = True
        while True:
            before = s.find_messages()
            if before is None:
                if first:
                    raise s.fail('no "messages" list found')
                return
            first = False
            head = _header(before)
            chat_key = str(head.get("id", head.get("name", os.path.basename(path))))
            ctype = _CHAT_TYPES.get(str(head.get("type", "")), ChatType.GROUP_CHAT)
            if "type" not in head and "id" not in head:
                ctype = ChatType.GROUP_CHAT
            kind = str(head.get("type", ""))
            # Telegram numbers users, groups and channels separately: keep the spaces apart.
            space = ("" if ctype == ChatType.CHAT and kind != "saved_messages"
                     else "saved:" if kind == "saved_messages"
                     else "channel:" if "channel" in kind else "group:")
            conv = f"tg:{space}{chat_key}"
            saved = kind == "saved_messages"
            n = 0
            while True:
                item = s.next_item()
                if item is _END:
                    break
                n += 1
                if not isinstance(item, dict):
                    skipped("telegram: an entry of the messages list is not an object")
                    continue
                msg = _convert(item, n, conv, chat_key, ctype, owner if not saved else None, base,
                               skipped)
                if msg is not None:
                    yield msg
    finally:
        s.close()


def _convert(m: dict[str, Any], n: int, conv: str, chat_key: str, ctype: ChatType,
             owner: str | None, base: str, skipped: Callable[[str], None]) -> Message | None:
    """One export entry as a message; ``owner=None``: every message is the owner's (saved
    messages)."""
    kind = m.get("type")
    if kind not in ("message", "service"):
        skipped(f"telegram: unknown message type {kind!r}")
        return None
    ts = _time(m)
    if ts is None:
        skipped("telegram: message without a readable date")
        return None
    name = m.get("from") or m.get("actor") or ""
    raw_from = m.get("from_id", m.get("actor_id"))
    sender_key = _uid(raw_from) if raw_from is not None else str(name)
    if ctype == ChatType.CHAT:
        mine = owner is None or sender_key != chat_key or name == owner
        sender = None if mine else conv
        to = conv if mine else (owner or conv)
    else:
        mine = name == owner or sender_key == owner
        sender = None if mine else f"tg:{sender_key}"
        to = conv
    kw: dict[str, Any] = dict(chat_type=ctype, sender=sender, timestamp=ts,
                              msg_id=stable_id("tg", chat_key, m.get("id", f"n{n}")))
    ext: dict[str, Any] = {"tg_from": str(name)} if name else {}
    for key in ("forwarded_from", "reply_to_message_id", "via_bot", "saved_from"):
        if key in m and m[key] is not None:
            ext[key] = str(m[key])
    text = _text(m.get("text", ""))
    if text is None:
        skipped("telegram: text is neither a string nor a list of text parts")
        return None
    if kind == "service":
        params = {k: m.get(k) for k in ("action", "actor", "title", "members", "text")}
        return custom(to, f"telegram.{m.get('action', 'service')}", params, ext=ext, **kw)
    media = m.get("media_type")

    def origin(rel: str) -> tuple[str, str]:
        return os.path.join(base, rel), f"telegram-export:{rel}"

    if text and (media or "photo" in m or "file" in m):
        ext["caption"] = text
    if "photo" in m:
        p, o = origin(str(m["photo"]))
        return attachment_message(to, MessageType.IMAGE, path=p, origin=o,
                                  display_name=os.path.basename(str(m["photo"])),
                                  width=m.get("width"), height=m.get("height"), ext=ext, **kw)
    if media == "sticker":
        return custom(to, "telegram.sticker", {"emoji": m.get("sticker_emoji", ""),
                                               "file": m.get("file", "")}, ext=ext, **kw)
    if "file" in m or media:
        rel = str(m.get("file", ""))
        p, o = origin(rel)
        dur = int(m.get("duration_seconds", 0) or 0) * 1000
        mtype = {"voice_message": MessageType.VOICE, "audio_file": MessageType.VOICE,
                 "video_file": MessageType.VIDEO, "animation": MessageType.VIDEO,
                 "video_message": MessageType.VIDEO, None: MessageType.FILE}.get(media)
        if mtype is None:
            return custom(to, "telegram.media", {"media_type": media, "file": rel,
                                                 "mime_type": m.get("mime_type")}, ext=ext, **kw)
        thumb = os.path.join(base, str(m["thumbnail"])) if m.get("thumbnail") else None
        return attachment_message(to, mtype, path=p, origin=o,
                                  display_name=os.path.basename(rel) or "file",
                                  width=m.get("width"), height=m.get("height"), duration_ms=dur,
                                  thumbnail=thumb, ext=ext, **kw)
    loc = m.get("location_information")
    if isinstance(loc, dict):
        return Message.location(to, loc.get("latitude", 0), loc.get("longitude", 0),
                                address=str(m.get("address", "")),
                                building_name=str(m.get("place_name", "")), ext=ext, **kw)
    if isinstance(m.get("poll"), dict):
        poll = m["poll"]
        return custom(to, "telegram.poll", {"question": poll.get("question", ""),
                                            "answers": poll.get("answers", [])}, ext=ext, **kw)
    if isinstance(m.get("contact_information"), dict):
        return custom(to, "telegram.contact", m["contact_information"], ext=ext, **kw)
    if not text:
        skipped("telegram: empty message")
        return None
    return Message.text(to, text, ext=ext, **kw)
