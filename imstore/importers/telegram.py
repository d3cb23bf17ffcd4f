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
  peer is the chat's id unless that id is mine (`Chat.peer`); in Saved Messages a message
  forwarded from someone else is theirs (``ext["forwarded_from"]`` kept);
- each entry becomes a message in `_telegram_entry` (one conversion point per entry).

Each entry's fields map as `_telegram_entry` says.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any

import ijson  # type: ignore[import-untyped]

from ..errors import ErrorCode, IMError
from ..message import ChatType, Message
from ._common import (
    ExportInfo,
    ImportOptions,
    Skipped,
    detect_encoding,
    encoding_error,
    one_entry,
    zone_of,
)
from ._telegram_entry import After, converted, user_key

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
class Chat:
    """A chat as the first pass saw it: its header, its message count and who wrote in it."""

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
        named = [user_key(i) for i, n in self.senders.items() if n == self.name and user_key(i) not in me]
        if own is not None and own not in me and (not named or own in named):
            return own
        others = named or [user_key(i) for i in self.senders if user_key(i) not in me and user_key(i) != own]
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
    chats: dict[str, list[Chat]] = {"": [], "chats": [], "left_chats": []}
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
                chats[_CHAT_PREFIX[prefix]].append(Chat())
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
        me.add(user_key(uid))
        name = " ".join(str(personal.get(k) or "") for k in ("first_name", "last_name")).strip()
        info.owner, info.owner_name = f"tg:{user_key(uid)}", name or None
        info.notes.append(f"me in this export: {name or uid} (personal_information)")
    elif opts.me:
        ids = {i: n for c in chats for i, n in c.senders.items()
               if ident.is_me(n, i, f"tg:{user_key(i)}")}
        names = sorted({n for c in chats for n in c.names if ident.is_me(n)})
        me.update(user_key(i) for i in ids)
        if ids:
            first = next(iter(ids))
            info.owner, info.owner_name = f"tg:{user_key(first)}", ids[first]
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
    info.state["me_names"] = {n for c in chats for i, n in c.senders.items() if user_key(i) in me and n}


def _current(chats: dict[str, list[Chat]], container: str) -> Chat:
    lst = chats[container]
    if not lst:
        lst.append(Chat())
    return lst[-1]


def _conv(chat: Chat, fallback: str, me: set[str]) -> tuple[str, ChatType, str]:
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
    chats: dict[str, list[Chat]] = info.state["chats"]
    ident = opts.identity(*info.state["me"], *info.state["me_names"])
    base = os.path.dirname(os.path.abspath(path))
    zone = zone_of(opts.tz)[0]
    after = After(info.state.setdefault("relations", []), opts.owner)
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
                    converted, m, n, chat, where, ident, base, path, skipped, zone, after))
        items.close()


def _items(path: str, opts: ImportOptions, prefix: str) -> Generator[Any, None, None]:
    r = _Reader(path, opts.encoding)
    try:
        yield from ijson.items(r, prefix, buf_size=_BUF, use_float=True)
    except ijson.JSONError as exc:  # the first pass read it whole: only a file changed since
        raise IMError(ErrorCode.INVALID_PARAM, f"{path} changed while it was imported") from exc
    finally:
        r.close()
