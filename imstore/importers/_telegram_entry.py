"""Telegram Desktop JSON exports, one entry at a time: an entry of a chat's ``messages`` list
becomes a `Message` here and nowhere else (`converted`); `telegram` streams the file, finds the
chats and who is "me", and hands each entry over.

Rules kept here:
- every field of an entry maps to the message or is kept raw in ``ext["raw"]``;
- reactions and pins cannot be written before their message: they go to
  ``info.state["relations"]`` (`After`) and `save_titles` applies them after the import;
- a Telegram user's id is its number, the ``user`` prefix dropped (`user_key`).

Mapping (export field -> imstore):

- chat ``id``, ``type`` -> conversation ``tg:<peer>`` (personal, bot: CHAT with the peer;
  ``tg:saved:<id>`` GROUP_CHAT for saved messages), ``tg:group:<id>`` / ``tg:channel:<id>`` (GROUP_CHAT)
- chat ``name`` -> conversation ``ext["title"]``
- ``personal_information.user_id`` -> "me"; a new store's owner ``tg:<user_id>``
- ``id`` -> ``msg_id`` = hash of chat id and message id; ``ext["tg_id"]``
- ``date_unixtime`` / ``date`` -> time (ms); ``date`` alone is local: read in ``--tz``
- ``edited_unixtime`` / ``edited`` -> edit time (``edited_at``, ``ext["edited"]``)
- ``from``, ``actor`` -> ``ext["sender_name"]``
- ``from_id``, ``actor_id`` -> sender ``tg:<number>`` (``user`` prefix dropped), or the owner
- ``text`` / ``text_entities`` -> TEXT body (entity parts joined; search sees this plain text);
  when a part is formatted (bold, italic, underline, strikethrough, code, pre, blockquote,
  spoiler, link, text_link) the HTML form in ``TextBody.formatted``; on media the body's
  ``caption`` (``ext["caption"]`` on a location or contact)
- ``reply_to_message_id`` -> ``reply_to``: the stored ``msg_id`` of the target; with a
  ``reply_to_peer_id`` of another chat (not a reply in this conversation) ``ext["reply_to"]``
- ``reactions`` (``[{type, count, emoji | document_id, recent: [{from, from_id, date}]}]``) ->
  reactions, applied once the messages are stored: key the emoji (``custom_emoji:<document_id>``,
  else the type), each ``recent`` entry a sender at its date; the rest of ``count`` (all of it in
  exports before 2024, which name nobody) anonymous senders ``tg:anonymous:<n>`` at the
  message's time, so counts are right
- ``forwarded_from``, ``saved_from``, ``via_bot``, ``author`` -> ``ext`` under the same names
- ``photo``, ``width``, ``height`` -> IMAGE
- ``file`` + ``media_type`` voice_message / audio_file -> VOICE (``duration_seconds``)
- ``file`` + video_file / animation / video_message -> VIDEO (``thumbnail``)
- other ``file`` (``mime_type``) -> FILE
- ``media_type`` sticker (``sticker_emoji``) -> IMAGE named by its emoji, ``ext["sticker"]``
- ``location_information``, ``place_name``, ``address`` -> LOCATION
- ``poll`` -> TEXT (the question, one answer a line: searchable), the poll in ``ext["poll"]``
- ``contact_information``, ``dice``, games, invoices, anything else without text -> CUSTOM
  ``telegram.<kind>`` with the fields as params
- service ``action`` (``phone_call`` with ``duration_seconds``/``discard_reason``, ``pin_message``
  with ``message_id``, ``create_group``...) -> CUSTOM ``telegram.<action>`` with every field; a
  pin's target in ``ext["pinned"]`` (stored ``msg_id``), and the target pinned
  (`MessageStore.apply_message_pin`) by the actor at the service message's time
- any other field -> ``ext["raw"]``
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..message import ChatType, Message, MessageType
from ._common import (
    Identity,
    Skipped,
    attachment_message,
    custom,
    inside,
    mark_edited,
    stable_id,
)

if TYPE_CHECKING:
    from .telegram import Chat

__all__ = ["After", "converted", "user_key"]


def user_key(value: Any) -> str:
    s = str(value)
    return s[4:] if s.startswith("user") and s[4:].lstrip("-").isdigit() else s


def _text(value: Any) -> str | None:
    if value is None:
        return ""
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


def _time(m: dict[str, Any], unix: str, iso: str, zone: Any) -> int | None:
    if m.get(unix) is not None:
        try:
            return int(m[unix]) * 1000
        except (TypeError, ValueError):
            pass
    if m.get(iso) is None:
        return None
    try:
        dt = datetime.fromisoformat(str(m[iso]))
    except ValueError:
        return None
    if dt.tzinfo is None:
        # Telegram Desktop writes local times of the exporting machine; date_unixtime (since
        # 2021) is exact. Without it, read the time in --tz (default: this machine's zone).
        dt = dt.replace(tzinfo=zone) if zone is not None else dt.astimezone()
    return int(dt.timestamp() * 1000)


# Fields consumed by the mapping (everything else goes to ext["raw"]).
_USED = frozenset((
    "id", "type", "date", "date_unixtime", "edited", "edited_unixtime", "from", "from_id",
    "actor", "actor_id", "text", "text_entities", "reply_to_message_id", "reply_to_peer_id",
    "forwarded_from", "saved_from", "via_bot", "author", "photo", "width", "height", "file",
    "thumbnail", "media_type", "mime_type", "duration_seconds", "sticker_emoji",
    "location_information", "place_name", "address", "poll", "contact_information",
))
_EXT_NAMES = ("forwarded_from", "saved_from", "via_bot", "author")
_MEDIA = {"voice_message": MessageType.VOICE, "audio_file": MessageType.VOICE,
          "video_file": MessageType.VIDEO, "animation": MessageType.VIDEO,
          "video_message": MessageType.VIDEO, None: MessageType.FILE}


def converted(*args: Any) -> list[Message]:
    msg = _convert(*args)
    return [] if msg is None else [msg]


@dataclass
class After:
    """Where a message's reactions and a service message's pin go, to be applied once the
    messages are stored (``ExportInfo.state["relations"]``, as `jsonl.restore_relations` reads
    them); ``owner`` is the store's owner, the sender of "my" reactions and pins."""

    relations: list[tuple[str, dict[str, Any]]]
    owner: str


def _who(ident: Identity, conv: str, ctype: ChatType, name: Any, raw_from: Any,
         owner: str) -> str:
    """The imstore id of someone a message names (a reactor, a pinner): the owner when it is me
    (in a personal chat: whoever is not the peer), else ``tg:<id>`` (``tg:<name>`` without one)."""
    key = user_key(raw_from) if raw_from is not None else None
    if ctype == ChatType.CHAT:
        mine = key != conv[3:] if key is not None else ident.is_me(name)
    else:
        mine = ident.is_me(key, raw_from, name, f"tg:{key}")
    return owner if mine else conv if ctype == ChatType.CHAT else f"tg:{key or name}"


def _reactions(value: Any, ts: int, who: Callable[[Any, Any], str], zone: Any
               ) -> list[tuple[str, str, None, int]] | None:
    """The export's ``reactions`` (``[{type, count, emoji | document_id, recent: [{from,
    from_id, date}]}]``) as (key, sender, None, time) rows; None when they are not that shape.
    A reaction the export counts without naming who (``count`` past ``recent``, or no
    ``recent`` at all, as exports before 2024 write it) gets an anonymous sender
    ``tg:anonymous:<n>``, so that the count is right."""
    if not isinstance(value, list):
        return None
    rows: list[tuple[str, str, None, int]] = []
    for r in value:
        if not isinstance(r, dict):
            return None
        key = (r.get("emoji") or (f"custom_emoji:{r['document_id']}" if r.get("document_id")
                                  else None) or r.get("type"))
        recent: list[Any] = r["recent"] if isinstance(r.get("recent"), list) else []
        if not isinstance(key, str) or not key or not all(isinstance(x, dict) for x in recent):
            return None
        named = [(who(x.get("from"), x.get("from_id")), _time(x, "date_unixtime", "date", zone))
                 for x in recent]
        rows += [(key, sender, None, at if at is not None else ts) for sender, at in named]
        rows += [(key, f"tg:anonymous:{i}", None, ts)
                 for i in range(1, int(r.get("count") or 0) - len(named) + 1)]
    return rows


# Telegram's text parts -> HTML (Matrix's ``org.matrix.custom.html`` subset); parts of other
# types (mention, hashtag, phone...) are plain text.
_TAGS = {"bold": "b", "italic": "i", "underline": "u", "strikethrough": "s", "code": "code",
         "pre": "pre", "blockquote": "blockquote", "spoiler": "span data-mx-spoiler"}


def _formatted(parts: Any) -> str:
    """A text's HTML form, from the export's parts (``text`` as a list, or ``text_entities``);
    "" when nothing in it is formatted."""
    if not isinstance(parts, list) or not any(
            isinstance(p, dict) and (p.get("type") in _TAGS or p.get("type") in ("link",
                                                                             "text_link"))
            for p in parts):
        return ""
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(html.escape(p, quote=False).replace("\n", "<br>"))
            continue
        kind = p.get("type")
        text = html.escape(str(p.get("text", "")), quote=False)
        if kind != "pre":  # a line break is <br> in HTML, except in preformatted text
            text = text.replace("\n", "<br>")
        if kind in _TAGS:
            tag = _TAGS[kind]
            out.append(f"<{tag}>{text}</{tag.split()[0]}>")
        elif kind in ("link", "text_link"):
            href = html.escape(str(p.get("href") or p.get("text", "")))
            out.append(f'<a href="{href}">{text}</a>')
        else:
            out.append(text)
    return "".join(out)


def _convert(m: Any, n: int, chat: Chat, where: tuple[str, ChatType, str], ident: Identity,
             base: str, path: str, skipped: Skipped, zone: Any, after: After) -> Message | None:
    if not isinstance(m, dict):
        skipped("telegram: an entry of the messages list is not an object")
        return None
    kind = m.get("type")
    if kind not in ("message", "service"):
        skipped(f"telegram: unknown message type {kind!r}")
        return None
    ts = _time(m, "date_unixtime", "date", zone)
    if ts is None:
        skipped("telegram: message without a readable date")
        return None
    conv, ctype, _title = where
    chat_key = chat.key or os.path.basename(path)
    name = m.get("from") if m.get("from") is not None else m.get("actor")
    raw_from = m.get("from_id", m.get("actor_id"))
    sender_key = user_key(raw_from) if raw_from is not None else None
    if ctype == ChatType.CHAT:
        peer = conv[3:]  # "tg:<peer>"
        if sender_key is not None:
            mine = sender_key != peer or ident.is_me(sender_key, raw_from)
        else:
            mine = ident.is_me(name)
        sender = None if mine else conv
    else:
        forwarded = m.get("forwarded_from")
        saved = chat.type == "saved_messages"
        if saved and forwarded is not None and not ident.is_me(forwarded):
            # Forwarded into Saved Messages: the author is who wrote it first.
            mine, sender_key, name = False, str(forwarded), str(forwarded)
        elif saved and sender_key is None and name is None:
            mine = True  # a note without an author: its owner's
        else:
            mine = ident.is_me(sender_key, raw_from, name, f"tg:{sender_key}")
        sender = None if mine else f"tg:{sender_key if sender_key is not None else name}"
    to = conv
    msg_key = m.get("id", f"n{n}")
    kw: dict[str, Any] = dict(chat_type=ctype, sender=sender, timestamp=ts,
                              msg_id=stable_id("tg", chat_key, msg_key))
    ext: dict[str, Any] = {}
    if name:
        ext["sender_name"] = str(name)
    if "id" in m:
        ext["tg_id"] = m["id"]
    for key in _EXT_NAMES:
        if m.get(key) is not None:
            ext[key] = str(m[key])
    if m.get("reply_to_message_id") is not None:
        target_chat = user_key(m["reply_to_peer_id"]) if m.get("reply_to_peer_id") else chat_key
        target = stable_id("tg", target_chat, m["reply_to_message_id"])
        if target_chat == chat_key:
            kw["reply_to"] = target
        else:  # a reply to a message of another chat: not a reply here (same conversation)
            ext["reply_to"] = target

    def who(who_name: Any, who_from: Any) -> str:
        return _who(ident, conv, ctype, who_name, who_from, after.owner)
    text = _text(m.get("text", ""))
    if (text is None or text == "") and m.get("text_entities"):
        text = _text(m.get("text_entities"))
    if text is None:
        skipped("telegram: text is neither a string nor a list of text parts")
        return None
    if kind == "service":
        service_used = {"id", "type", "date", "date_unixtime", "from", "from_id", "actor", "actor_id",
                "text_entities"}
        params = {k: v for k, v in m.items() if k not in service_used and v not in (None, "")}
        if m.get("action") == "pin_message" and m.get("message_id") is not None:
            ext["pinned"] = stable_id("tg", chat_key, m["message_id"])
            after.relations.append(("pins", {"conv_id": conv, "pins": [
                (ext["pinned"], ts, who(name, raw_from))]}))
        return _edited(custom(to, f"telegram.{m.get('action', 'service')}", params, ext=ext,
                              **kw), m, zone)
    raw = {k: v for k, v in m.items() if k not in _USED}
    reactions = _reactions(raw.get("reactions"), ts, who, zone)
    if reactions is not None:
        del raw["reactions"]
        if reactions:
            after.relations.append(("reactions", {"msg_id": kw["msg_id"],
                                                  "reactions": reactions}))
    if raw:
        ext["raw"] = raw
    media = m.get("media_type")

    def origin(rel: str) -> tuple[str, str]:
        return inside(base, rel), f"telegram-export:{rel}"

    if text and (media or "photo" in m or "file" in m or "poll" in m
                 or "location_information" in m or "contact_information" in m):
        ext["caption"] = text
    msg: Message | None = None
    if "photo" in m:
        p, o = origin(str(m["photo"]))
        msg = attachment_message(to, MessageType.IMAGE, path=p, origin=o,
                                 display_name=os.path.basename(str(m["photo"])),
                                 width=m.get("width"), height=m.get("height"), ext=ext, **kw)
    elif media == "sticker":  # an image named by its emoji, which search finds
        rel = str(m.get("file", ""))
        p, o = origin(rel)
        ext["sticker"] = {k: m[k] for k in ("sticker_emoji", "thumbnail") if m.get(k)}
        msg = attachment_message(to, MessageType.IMAGE, path=p, origin=o,
                                 display_name=str(m.get("sticker_emoji") or "")
                                 or os.path.basename(rel) or "sticker",
                                 width=m.get("width"), height=m.get("height"), ext=ext, **kw)
    elif "file" in m or media:
        rel = str(m.get("file", ""))
        p, o = origin(rel)
        dur = int(m.get("duration_seconds", 0) or 0) * 1000
        mtype = _MEDIA.get(media)
        if mtype is None:
            msg = custom(to, "telegram.media", {"media_type": media, "file": rel,
                                                "mime_type": m.get("mime_type"),
                                                "duration_seconds": m.get("duration_seconds")},
                         ext=ext, **kw)
        else:
            thumb = inside(base, str(m["thumbnail"])) if m.get("thumbnail") else None
            if m.get("mime_type"):
                ext["mime_type"] = m["mime_type"]
            if mtype == MessageType.FILE and dur:
                ext["duration_seconds"] = m["duration_seconds"]
            msg = attachment_message(to, mtype, path=p, origin=o,
                                     display_name=os.path.basename(rel) or "file",
                                     width=m.get("width"), height=m.get("height"),
                                     duration_ms=dur, thumbnail=thumb, ext=ext, **kw)
    elif isinstance(m.get("location_information"), dict):
        loc = m["location_information"]
        try:
            lat, lon = float(loc.get("latitude", 0)), float(loc.get("longitude", 0))
        except (TypeError, ValueError):
            lat = lon = 0.0
        msg = Message.location(to, lat, lon, address=str(m.get("address") or ""),
                               building_name=str(m.get("place_name") or ""), ext=ext, **kw)
    elif isinstance(m.get("poll"), dict) and _poll_text(m["poll"]):
        # The question and the answers are what search should find: the message's text; the
        # poll itself (votes, closed) in ext["poll"].
        ext["poll"] = m["poll"]
        msg = Message.text(to, _poll_text(m["poll"]), ext=ext, **kw)
    elif isinstance(m.get("poll"), dict):
        msg = custom(to, "telegram.poll", m["poll"], ext=ext, **kw)
    elif isinstance(m.get("contact_information"), dict):
        msg = custom(to, "telegram.contact", m["contact_information"], ext=ext, **kw)
    elif text:
        parts = m.get("text_entities") or m.get("text")
        msg = Message.text(to, text, formatted=_formatted(parts), ext=ext, **kw)
    elif raw:
        # Something Telegram added that has no text (a dice, a game, an invoice...): kept whole.
        ext.pop("raw")
        event = "dice" if "dice" in raw else next(iter(raw))
        msg = custom(to, f"telegram.{event}", raw, ext=ext, **kw)
    else:
        skipped("telegram: empty message")
        return None
    return _edited(msg, m, zone)


def _poll_text(poll: dict[str, Any]) -> str:
    """A poll as text: its question, then one answer a line."""
    answers = poll.get("answers")
    lines = [str(poll.get("question") or "")]
    if isinstance(answers, list):
        lines += [f"- {a['text']}" for a in answers if isinstance(a, dict) and a.get("text")]
    return "\n".join(lines).strip()


def _edited(msg: Message, m: dict[str, Any], zone: Any) -> Message:
    if m.get("edited") is not None or m.get("edited_unixtime") is not None:
        mark_edited(msg, _time(m, "edited_unixtime", "edited", zone))
    return msg
