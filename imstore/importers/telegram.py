"""Telegram Desktop JSON exports: one chat (``result.json`` of a chat) or a whole account
(``chats.list[]`` and ``left_chats.list[]``, with ``personal_information``), read with ijson.

Rules kept here:
- the file is streamed twice with ijson's event parser, never loaded whole: the first pass reads
  every chat's header (``name``, ``type``, ``id``), ``personal_information`` and the message
  count, wherever those keys stand (exports with sorted keys put ``messages`` first), and checks
  the JSON; the second pass builds one message object at a time;
- "me" is ``personal_information.user_id`` when the export has it, else ``--me`` (a name or an
  id as the export writes it; by name in exports without ``from_id``), else the Saved Messages
  chat's id (`_who_is_me`); in a personal or bot chat whoever is not the peer is me, and the
  peer is the chat's id unless that id is mine (`_Chat.peer`); in Saved Messages a message
  forwarded from someone else is theirs (``ext["forwarded_from"]`` kept);
- every field of an entry maps to the message or is kept raw in ``ext["raw"]``;
- reactions and pins cannot be written before their message: they go to
  ``info.state["relations"]`` and `save_titles` applies them after the import.

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
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import IO, Any

import ijson  # type: ignore[import-untyped]

from ..errors import ErrorCode, IMError
from ..message import ChatType, Message, MessageType
from ._common import (
    ExportInfo,
    Identity,
    ImportOptions,
    Skipped,
    attachment_message,
    custom,
    detect_encoding,
    encoding_error,
    inside,
    mark_edited,
    one_entry,
    stable_id,
    zone_of,
)

__all__ = ["read_telegram", "scan_telegram"]

_CHAT_TYPES = {"personal_chat": ChatType.CHAT, "bot_chat": ChatType.CHAT,
               "saved_messages": ChatType.GROUP_CHAT}
# Where chats stand: a one-chat export is the root object; an account export has two lists.
_CHAT_PREFIX = {"": "", "chats.list.item": "chats", "left_chats.list.item": "left_chats"}
_ITEM_PREFIX = {f"{p}.messages.item" if p else "messages.item": c for p, c in _CHAT_PREFIX.items()}
_UNIX_PREFIX = frozenset(f"{p}.date_unixtime" for p in _ITEM_PREFIX)
_LIST_PREFIX = {p[:-5]: c for p, c in _ITEM_PREFIX.items()}
_HEAD_KEYS = {f"{p}.{k}" if p else k: (c, k) for p, c in _CHAT_PREFIX.items()
              for k in ("name", "type", "id")}
_SCALARS = frozenset(("string", "number", "boolean", "null"))
_BUF = 1 << 16


_MAX_SENDERS = 64  # per chat, what the first pass remembers of who wrote in it


@dataclass
class _Chat:
    name: str | None = None
    type: str | None = None
    id: Any = None
    count: int = 0
    senders: dict[str, str] = field(default_factory=dict)  # from_id -> name (the first few)
    names: set[str] = field(default_factory=set)  # sender names without a from_id

    @property
    def key(self) -> str:
        return str(self.id if self.id is not None else self.name if self.name is not None else "")

    def saw(self, name: Any, from_id: Any) -> None:
        """A message of this chat was written by ``name`` / ``from_id`` (either may be None)."""
        if from_id is not None:
            if len(self.senders) < _MAX_SENDERS:
                self.senders.setdefault(str(from_id), str(name) if name is not None else "")
        elif name is not None and len(self.names) < _MAX_SENDERS:
            self.names.add(str(name))

    def peer(self, me: set[str]) -> str | None:
        """The other person of a personal or bot chat: the chat's id -- unless that is the
        owner's own id (bot chats), then the sender whose name is the chat's, or who is not me."""
        own = str(self.id) if self.id is not None else None
        named = [_uid(i) for i, n in self.senders.items() if n == self.name and _uid(i) not in me]
        if own is not None and own not in me and (not named or own in named):
            return own
        others = named or [_uid(i) for i in self.senders if _uid(i) not in me and _uid(i) != own]
        return others[0] if others else own


class _Reader:
    """The file as UTF-8 bytes for ijson, counting lines for error messages."""

    def __init__(self, path: str, encoding: str | None) -> None:
        self.path = path
        self.f = open(path, "rb")  # noqa: SIM115 - closed in close()
        head = self.f.read(4)
        self.encoding = encoding or detect_encoding(head)
        self.f.seek(0)
        self.text: IO[str] | None = None
        if self.encoding == "utf-8-sig":
            self.f.seek(3)
        elif self.encoding != "utf-8":
            import io
            self.text = io.TextIOWrapper(self.f, encoding=self.encoding, errors="strict")
        self.lines = 1

    def read(self, n: int) -> bytes:
        if self.text is not None:
            try:
                data = self.text.read(n).encode("utf-8")
            except UnicodeDecodeError as exc:
                raise encoding_error(self.path, self.lines, exc, self.encoding) from exc
        else:
            data = self.f.read(n)
        self.lines += data.count(b"\n")
        return data

    def close(self) -> None:
        self.f.close()


def _events(path: str, opts: ImportOptions) -> Iterator[tuple[str, str, Any]]:
    r = _Reader(path, opts.encoding)
    try:
        yield from ijson.parse(r, buf_size=_BUF, use_float=True)
    except ijson.JSONError as exc:
        text = str(exc)
        if "UTF8" in text or "UTF-8" in text:
            raise encoding_error(path, r.lines, None, "UTF-8") from exc
        first = text.strip().splitlines()[0] if text.strip() else "malformed JSON"
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"{path}, line {r.lines}: {first}; is this a Telegram Desktop JSON "
                      "export?") from exc
    finally:
        r.close()


def scan_telegram(path: str, opts: ImportOptions) -> ExportInfo:
    """The first pass: check the whole file, read every chat's header, who wrote in it and who
    "me" is."""
    chats: dict[str, list[_Chat]] = {"": [], "chats": [], "left_chats": []}
    personal: dict[str, Any] = {}
    builder: Any = None
    root_seen = False
    lists = 0
    exact = 0  # messages with date_unixtime
    sender: list[Any] = [None, None]  # the current message's from, from_id
    zone_note = zone_of(opts.tz)[1]
    for prefix, event, value in _events(path, opts):
        if builder is not None:
            if prefix == "personal_information" and event == "end_map":
                personal = builder.value if isinstance(builder.value, dict) else {}
                builder = None
            else:
                builder.event(event, value)
            continue
        if event == "start_map":
            if prefix == "":
                root_seen = True
            if prefix in _CHAT_PREFIX and prefix:
                chats[_CHAT_PREFIX[prefix]].append(_Chat())
            elif prefix in _ITEM_PREFIX:
                _current(chats, _ITEM_PREFIX[prefix]).count += 1
                sender = [None, None]
            elif prefix == "personal_information":
                builder = ijson.ObjectBuilder()
                builder.event(event, value)
            continue
        if event == "end_map" and prefix in _ITEM_PREFIX:
            _current(chats, _ITEM_PREFIX[prefix]).saw(*sender)
            continue
        if event == "start_array":
            if prefix in _LIST_PREFIX:
                lists += 1
                _current(chats, _LIST_PREFIX[prefix])
            elif prefix in _ITEM_PREFIX:  # a list where a message should be: counted, skipped
                _current(chats, _ITEM_PREFIX[prefix]).count += 1
            continue
        if event in _SCALARS:
            head = _HEAD_KEYS.get(prefix)
            if prefix in _UNIX_PREFIX:
                exact += 1
            elif head is not None:
                setattr(_current(chats, head[0]), head[1], value)
            elif prefix.endswith(".from") and prefix[:-5] in _ITEM_PREFIX:
                sender[0] = value
            elif prefix.endswith(".from_id") and prefix[:-8] in _ITEM_PREFIX:
                sender[1] = value
            elif prefix in _ITEM_PREFIX:
                _current(chats, _ITEM_PREFIX[prefix]).count += 1
    if not root_seen or not lists:
        raise IMError(ErrorCode.INVALID_PARAM, f'{path}, line 1: no "messages" list found; is this '
                                               "a Telegram Desktop JSON export?")
    info = ExportInfo("telegram", total=sum(c.count for cs in chats.values() for c in cs))
    info.state["chats"] = chats
    if exact < info.total:
        info.notes.append(f"{info.total - exact} message(s) have only a local date: read in "
                          f"{zone_note}")
    _who_is_me(info, personal, opts)
    return info


def _who_is_me(info: ExportInfo, personal: dict[str, Any], opts: ImportOptions) -> None:
    """Decide who "me" is (the ids in ``state["me"]``, the new store's owner): the account's
    ``personal_information``; else the senders ``--me`` names (by id, or by name in exports
    without ``from_id``); else the Saved Messages chat, whose id is its owner's."""
    chats = [c for cs in info.state["chats"].values() for c in cs]
    ident = opts.identity()
    uid = personal.get("user_id")
    me: set[str] = set()
    if uid is not None:
        me.add(_uid(uid))
        name = " ".join(str(personal.get(k) or "") for k in ("first_name", "last_name")).strip()
        info.owner, info.owner_name = f"tg:{_uid(uid)}", name or None
        info.notes.append(f"me in this export: {name or uid} (personal_information)")
    elif opts.me:
        ids = {i: n for c in chats for i, n in c.senders.items()
               if ident.is_me(n, i, f"tg:{_uid(i)}")}
        names = sorted({n for c in chats for n in c.names if ident.is_me(n)})
        me.update(_uid(i) for i in ids)
        if ids:
            first = next(iter(ids))
            info.owner, info.owner_name = f"tg:{_uid(first)}", ids[first]
        elif names:
            info.owner, info.owner_name = f"tg:{names[0]}", names[0]
        if ids or names:
            info.notes.append(f"me in this export: {info.owner_name} (--me)")
        else:
            info.notes.append(f"--me {', '.join(map(repr, opts.me))} wrote nothing in this "
                              "export")
    saved = [c for c in chats if c.type == "saved_messages" and c.id is not None]
    if info.owner is None and saved:
        own = str(saved[0].id)
        me.add(own)
        info.owner, info.owner_name = f"tg:{own}", saved[0].senders.get(own)
        info.notes.append(f"me in this export: {info.owner_name or own} (the Saved Messages "
                          "chat is its owner's)")
    me.update(str(c.id) for c in saved)
    info.state["me"] = me
    info.state["me_names"] = {n for c in chats for i, n in c.senders.items() if _uid(i) in me and n}


def _current(chats: dict[str, list[_Chat]], container: str) -> _Chat:
    lst = chats[container]
    if not lst:
        lst.append(_Chat())
    return lst[-1]


def _uid(value: Any) -> str:
    s = str(value)
    return s[4:] if s.startswith("user") and s[4:].lstrip("-").isdigit() else s


def _conv(chat: _Chat, fallback: str, me: set[str]) -> tuple[str, ChatType, str]:
    """(conversation id, chat type, title) of a chat."""
    kind = str(chat.type or "")
    key = chat.key or fallback
    ctype = _CHAT_TYPES.get(kind, ChatType.GROUP_CHAT)
    if kind == "saved_messages":  # several authors: me, and those I forwarded from
        return f"tg:saved:{key}", ctype, chat.name or "Saved Messages"
    if ctype == ChatType.CHAT:
        key = chat.peer(me) or key
    # Telegram numbers users, groups and channels separately: keep the spaces apart.
    space = "" if ctype == ChatType.CHAT else "channel:" if "channel" in kind else "group:"
    return f"tg:{space}{key}", ctype, chat.name or key


def conversations(info: ExportInfo, path: str) -> dict[str, tuple[ChatType, str]]:
    out = {}
    for cs in info.state["chats"].values():
        for chat in cs:
            conv, ctype, title = _conv(chat, os.path.basename(path), info.state["me"])
            out[conv] = (ctype, title)
    return out


def read_telegram(path: str, opts: ImportOptions, info: ExportInfo,
                  skipped: Skipped) -> Iterator[Message]:
    """The second pass: messages, one object at a time, built by ijson's C backend -- one read of
    the file per list of chats the export has (a chat export has one, an account export two)."""
    chats: dict[str, list[_Chat]] = info.state["chats"]
    ident = opts.identity(*info.state["me"], *info.state["me_names"])
    base = os.path.dirname(os.path.abspath(path))
    zone = zone_of(opts.tz)[0]
    after = _After(info.state.setdefault("relations", []), opts.owner)
    for prefix, container in _ITEM_PREFIX.items():
        todo = [c for c in chats[container]]
        if not any(c.count for c in todo):
            continue
        items = _items(path, opts, prefix)
        for chat in todo:
            where = _conv(chat, os.path.basename(path), info.state["me"])
            for n in range(1, chat.count + 1):
                m = next(items)
                if not isinstance(m, dict):
                    skipped("telegram: an entry of the messages list is not an object")
                    continue
                yield from one_entry("telegram", skipped, partial(
                    _converted, m, n, chat, where, ident, base, path, skipped, zone, after))
        items.close()


def _items(path: str, opts: ImportOptions, prefix: str) -> Generator[Any, None, None]:
    r = _Reader(path, opts.encoding)
    try:
        yield from ijson.items(r, prefix, buf_size=_BUF, use_float=True)
    except ijson.JSONError as exc:  # the first pass read it whole: only a file changed since
        raise IMError(ErrorCode.INVALID_PARAM, f"{path} changed while it was imported") from exc
    finally:
        r.close()


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


def _converted(*args: Any) -> list[Message]:
    msg = _convert(*args)
    return [] if msg is None else [msg]


@dataclass
class _After:
    """Where a message's reactions and a service message's pin go, to be applied once the
    messages are stored (``ExportInfo.state["relations"]``, as `jsonl.restore_relations` reads
    them); ``owner`` is the store's owner, the sender of "my" reactions and pins."""

    relations: list[tuple[str, dict[str, Any]]]
    owner: str


def _who(ident: Identity, conv: str, ctype: ChatType, name: Any, raw_from: Any,
         owner: str) -> str:
    """The imstore id of someone a message names (a reactor, a pinner): the owner when it is me
    (in a personal chat: whoever is not the peer), else ``tg:<id>`` (``tg:<name>`` without one)."""
    key = _uid(raw_from) if raw_from is not None else None
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


def _convert(m: Any, n: int, chat: _Chat, where: tuple[str, ChatType, str], ident: Identity,
             base: str, path: str, skipped: Skipped, zone: Any, after: _After) -> Message | None:
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
    sender_key = _uid(raw_from) if raw_from is not None else None
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
        target_chat = _uid(m["reply_to_peer_id"]) if m.get("reply_to_peer_id") else chat_key
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
