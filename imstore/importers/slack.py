"""Slack workspace exports: the ``.zip`` (or the folder it unzips to) with ``users.json``, the
channel lists and one JSON file per channel and day.

Rules kept here:
- the export is read one member at a time (a listing, then one day file): memory stays bounded
  by the largest day, whatever the zip's size; the first pass parses every member (a malformed
  one is an error naming it before anything is written), the second converts;
- "me" is the user whose id, name, display name or real name is ``--me`` (or the store owner);
- every file of a message is kept (one attachment message each), every bot attachment's text is
  part of the message.

Mapping (export field -> imstore):

- ``channels.json`` / ``groups.json`` / ``mpims.json`` channel -> GROUP_CHAT ``slack:<name>``,
  ``ext["title"]`` ``#name`` (a group DM of ``mpims.json``: its other members' names)
- ``dms.json`` DM -> CHAT ``slack:<other member's id>``, titled with their name
- ``users.json`` names -> ``ext["sender_name"]``, mentions ``<@U..>`` read as ``@name``
- ``ts`` -> time (ms); ``msg_id`` ``slack:<channel id>:<ts>``
- ``user`` / ``bot_id`` (``username``) / ``comment.user`` (file comments) -> sender ``slack:<id>`` /
  ``slack:bot:<id>``, or the owner
- ``text`` (links, mentions, entities decoded) -> TEXT
- ``attachments[]`` (``pretext``, ``title``, ``text``, ``fields``, else ``fallback``) -> lines of
  the TEXT body; their other fields in ``ext["raw"]``
- ``files[]`` / ``file`` -> one IMAGE/VIDEO/VOICE/FILE message per file (the first keeps the
  message's id, the rest ``<id>:<file id>`` with ``ext["part_of"]``); the text in the first one's ``caption``
- ``edited.ts`` -> edit time (``edited_at``, ``ext["edited"]``)
- ``thread_ts`` other than ``ts`` (a thread reply) -> ``thread_id``: the root's ``msg_id`` (out of
  the main timeline, in `MessageStore.thread_messages`); a reply also sent to the channel
  (``thread_broadcast``, ``reply_broadcast``) stays in the timeline with ``reply_to`` the root
- ``reactions`` (``[{name, users, count}]``) -> reactions, applied once the messages are stored:
  key ``:name:``, each user a sender at the message's time (the export has no reaction times),
  the rest of ``count`` anonymous senders ``slack:anonymous:<n>``
- ``pinned_to`` naming the channel -> the message pinned there (at its own time: the export says
  neither when nor by whom)
- ``file_comment`` -> TEXT from the commenter, ``ext["file"]``, and a *reply*
  (``reply_to``) to the message that shared the file in this channel: a comment is someone's
  later message about the file, not the uploader's caption (the text shared with a file is
  the caption)
- ``channel_join``, ``bot_add``, other subtypes -> CUSTOM ``slack.<subtype>`` (``text``, ``user``)
- any other field (``replies``, ``reply_count``...) -> ``ext["raw"]``
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..errors import ErrorCode, IMError
from ..message import ChatType, Message
from ._archive import MAX_JSON_BYTES, folder_json_size, open_member
from ._common import (
    ExportInfo,
    Identity,
    ImportOptions,
    Skipped,
    attachment_message,
    custom,
    kind_of,
    mark_edited,
    one_entry,
)

__all__ = ["is_slack_dir", "read_slack", "scan_slack"]

_MENTION = re.compile(r"<@([UW]\w+)(?:\|([^>]+))?>")
_CHANNEL = re.compile(r"<#(C\w+)(?:\|([^>]+))?>")
_LINK = re.compile(r"<((?:https?|mailto|tel):[^|>]+)(?:\|([^>]+))?>")
_SPECIAL = re.compile(r"<!(\w+)(?:\^[^|>]*)?(?:\|([^>]+))?>")
_TEXT_SUBTYPES = {None, "bot_message", "me_message", "thread_broadcast", "reply_broadcast",
                  "file_share"}
_LISTINGS = (("channels.json", ChatType.GROUP_CHAT), ("groups.json", ChatType.GROUP_CHAT),
             ("mpims.json", ChatType.GROUP_CHAT), ("dms.json", ChatType.CHAT))
_BROADCASTS = frozenset(("thread_broadcast", "reply_broadcast"))
_USED = frozenset(("type", "subtype", "ts", "user", "text", "files", "file", "attachments",
                   "edited", "thread_ts", "bot_id", "username", "user_profile", "bot_profile",
                   "blocks", "comment", "parent_user_id"))
_ATTACHMENT_TEXT = ("pretext", "title", "text", "fields", "fallback")


def is_slack_dir(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, n))
                                       for n in ("users.json", "channels.json", "dms.json"))


class _Members:
    """The export's files, from a zip or a folder, opened one at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if os.path.isdir(path):
            names = []
            for root, _dirs, files in os.walk(path):
                for f in files:
                    names.append(os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/"))
            self.names = sorted(names)
        else:
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise IMError(ErrorCode.INVALID_PARAM, f"{path}: not a zip file ({exc})") from exc
            self.names = sorted(self.zip.namelist())

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def load(self, name: str) -> Any:
        """One JSON file of the export, parsed (at most `MAX_JSON_BYTES`)."""
        try:
            if self.zip is not None:
                with open_member(self.zip, name, self.path, MAX_JSON_BYTES) as f:
                    return json.load(f)
            folder_json_size(self.path, name)
            with open(os.path.join(self.path, name), "rb") as f:
                return json.load(f)
        except json.JSONDecodeError as exc:
            raise IMError(ErrorCode.INVALID_PARAM, f"{self.path}: {name}, line {exc.lineno}: "
                                                   f"malformed JSON ({exc.msg})") from exc
        except UnicodeDecodeError as exc:
            raise IMError(ErrorCode.FILE_INVALID, f"{self.path}: {name}: not UTF-8 JSON "
                                                  f"({exc.reason})") from exc


def _display(u: dict[str, Any]) -> str:
    p: dict[str, Any] = u["profile"] if isinstance(u.get("profile"), dict) else {}
    return str(u.get("real_name") or p.get("real_name") or p.get("display_name") or u.get("name")
               or u.get("id"))


def scan_slack(path: str, opts: ImportOptions) -> ExportInfo:
    """The first pass: users, channels, and every day file parsed once."""
    mem = _Members(path)
    try:
        names = set(mem.names)
        users: dict[str, dict[str, Any]] = {}
        if "users.json" in names:
            for u in mem.load("users.json"):
                if isinstance(u, dict) and "id" in u:
                    users[u["id"]] = u
        ident = opts.identity()
        me_id = next((uid for uid, u in users.items() if ident.is_me(
            uid, f"slack:{uid}", u.get("name"), u.get("real_name"),
            (u.get("profile") or {}).get("display_name"))), None)
        chats: list[tuple[str, ChatType, str, dict[str, Any], list[str]]] = []
        for listing, ctype in _LISTINGS:
            if listing in names:
                for ch in mem.load(listing):
                    if not isinstance(ch, dict):
                        continue
                    # DM folders are named by the DM's id, the others by the channel's name.
                    folder = str(ch.get("id") if ctype == ChatType.CHAT
                                 else ch.get("name") or ch.get("id"))
                    days = sorted(n for n in names if n.startswith(folder + "/")
                                  and n.endswith(".json"))
                    chats.append((folder, ctype, str(ch.get("id", folder)), ch, days))
        if not chats:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{path}: no channels.json, groups.json, mpims.json or dms.json; is "
                          "this a Slack export?")
        total = 0
        for _folder, _ct, _cid, _ch, days in chats:
            for day in days:
                entries = mem.load(day)
                if not isinstance(entries, list):
                    raise IMError(ErrorCode.INVALID_PARAM, f"{path}: {day}: not a list of messages")
                total += len(entries)
    finally:
        mem.close()
    info = ExportInfo("slack", total=total)
    if me_id is not None:
        info.owner, info.owner_name = f"slack:{me_id}", _display(users[me_id])
        info.notes.append(f"me in this export: {info.owner_name} ({me_id})")
    else:
        given = f"--me {', '.join(map(repr, opts.me))} is none" if opts.me else "no user"
        known = ", ".join(sorted(str(u.get("name") or uid) for uid, u in users.items())[:8])
        info.notes.append(f"{given} of this export's users ({known}): every message is "
                          "imported as received")
    names_of = {uid: _display(u) for uid, u in users.items()}
    convs = {}
    for folder, ctype, chan_id, ch, _days in chats:
        conv, title = _conv(folder, ctype, chan_id, ch, me_id, names_of)
        convs[conv] = (ctype, title)
    info.state.update(users=names_of, handles={uid: str(u.get("name") or uid)
                                               for uid, u in users.items()},
                      me_id=me_id, chats=chats, convs=convs)
    return info


def _conv(folder: str, ctype: ChatType, chan_id: str, ch: dict[str, Any], me_id: str | None,
          names: dict[str, str]) -> tuple[str, str]:
    if ctype == ChatType.CHAT:
        members = [m for m in ch.get("members", []) if m != me_id]
        other = members[0] if len(members) == 1 else chan_id
        return f"slack:{other}", names.get(other, other)
    if ch.get("is_mpim") or folder.startswith("mpdm-"):  # a group DM: titled by its people
        others = [names.get(str(m), str(m)) for m in ch.get("members", []) if m != me_id]
        if others:
            return f"slack:{folder}", ", ".join(others)
    return f"slack:{folder}", f"#{folder}"


def read_slack(path: str, opts: ImportOptions, info: ExportInfo,
               skipped: Skipped) -> Iterator[Message]:
    """The second pass: messages, one day file at a time."""
    st = info.state
    names: dict[str, str] = st["users"]
    handles: dict[str, str] = st["handles"]
    me_id: str | None = st["me_id"]
    ident = opts.identity(*([me_id] if me_id else []))
    channels: dict[str, str] = {}

    def text_of(raw: str) -> str:
        raw = _MENTION.sub(lambda m: "@" + (m.group(2) or handles.get(m.group(1), m.group(1))),
                           raw)
        raw = _CHANNEL.sub(lambda m: "#" + (m.group(2) or channels.get(m.group(1), m.group(1))),
                           raw)
        raw = _LINK.sub(lambda m: m.group(2) or m.group(1), raw)
        raw = _SPECIAL.sub(lambda m: "@" + (m.group(2) or m.group(1)), raw)
        return raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    for folder, _ct, chan_id, _ch, _days in st["chats"]:
        channels[chan_id] = folder
    relations: list[tuple[str, dict[str, Any]]] = st.setdefault("relations", [])
    mem = _Members(path)
    try:
        for folder, ctype, chan_id, ch, days in st["chats"]:
            conv, _title = _conv(folder, ctype, chan_id, ch, me_id, names)
            where = _Where(conv, ctype, chan_id, opts.owner, relations)
            for day in days:
                for e in mem.load(day):
                    yield from one_entry("slack", skipped, partial(
                        _convert, e, where, ident, names, text_of, skipped))
    finally:
        mem.close()


@dataclass
class _Where:
    """One channel being read: its conversation, and what its messages leave for after the
    import (reactions and pins, in ``info.state["relations"]``; `save_titles` applies them)."""

    conv: str
    ctype: ChatType
    chan_id: str
    owner: str  # the store's owner: the sender of my reactions
    relations: list[tuple[str, dict[str, Any]]]
    file_messages: dict[str, str] = field(default_factory=dict)  # file id -> msg_id shared in it

    def sender(self, uid: str, ident: Identity) -> str:
        """The imstore id of a Slack user in this channel (the owner when it is me)."""
        if ident.is_me(uid, f"slack:{uid}"):
            return self.owner
        return self.conv if self.ctype == ChatType.CHAT else f"slack:{uid}"


def _relations(e: dict[str, Any], msg_id: str, ts: int, where: _Where, ident: Identity) -> bool:
    """Queue a message's ``reactions`` (``[{name, users, count}]``: key ``:name:``, each user a
    sender at the message's time -- the export has no reaction times --, the rest of ``count``
    anonymous senders ``slack:anonymous:<n>``) and its pin (``pinned_to`` naming this channel);
    False when ``reactions`` is not that shape (then it stays in ``ext["raw"]``)."""
    if isinstance(e.get("pinned_to"), list) and where.chan_id in e["pinned_to"]:
        where.relations.append(("pins", {"conv_id": where.conv, "pins": [(msg_id, ts, None)]}))
    value = e.get("reactions")
    if value is None:
        return True
    rows: list[tuple[str, str, None, int]] = []
    for r in value if isinstance(value, list) else [None]:
        users = r.get("users") if isinstance(r, dict) else None
        if not (isinstance(r, dict) and isinstance(r.get("name"), str) and r["name"]
                and isinstance(users, list)):
            return False
        rows += [(f":{r['name']}:", where.sender(str(u), ident), None, ts) for u in users]
        rows += [(f":{r['name']}:", f"slack:anonymous:{i}", None, ts)
                 for i in range(1, int(r.get("count") or 0) - len(users) + 1)]
    if rows:
        where.relations.append(("reactions", {"msg_id": msg_id, "reactions": rows}))
    return True


def _attachment_lines(atts: Any, text_of: Callable[[str], str]) -> tuple[list[str], list[Any]]:
    """The readable lines of bot/unfurl attachments, and what is left of them."""
    lines: list[str] = []
    rest: list[Any] = []
    for a in atts if isinstance(atts, list) else []:
        if not isinstance(a, dict):
            continue
        mine = [text_of(str(a[k])) for k in ("pretext", "title", "text") if a.get(k)]
        for f in a.get("fields") or []:
            if isinstance(f, dict):
                mine.append(f"{f.get('title', '')}: {text_of(str(f.get('value', '')))}".strip(": "))
        if not mine and a.get("fallback"):
            mine.append(text_of(str(a["fallback"])))
        lines += mine
        left = {k: v for k, v in a.items() if k not in _ATTACHMENT_TEXT}
        if left:
            rest.append(left)
    return lines, rest


def _convert(e: Any, where: _Where, ident: Identity, names: dict[str, str],
             text_of: Callable[[str], str], skipped: Skipped) -> Iterator[Message]:
    conv, ctype, chan_id = where.conv, where.ctype, where.chan_id
    if not isinstance(e, dict) or "ts" not in e:
        skipped("slack: entry without a timestamp")
        return
    try:
        ts = int(float(e["ts"]) * 1000)
    except (TypeError, ValueError):
        skipped("slack: unreadable timestamp")
        return
    sub = e.get("subtype")
    comment: dict[str, Any] | None = e["comment"] if isinstance(e.get("comment"), dict) else None
    uid = str(e.get("user") or (comment or {}).get("user") or
              (f"bot:{e['bot_id']}" if e.get("bot_id") else "unknown"))
    mine = ident.is_me(uid, f"slack:{uid}")
    sender = None if mine else conv if ctype == ChatType.CHAT else f"slack:{uid}"
    profile: dict[str, Any] = e["user_profile"] if isinstance(e.get("user_profile"), dict) else {}
    bot: dict[str, Any] = e["bot_profile"] if isinstance(e.get("bot_profile"), dict) else {}
    ext: dict[str, Any] = {"sender_name": str(e.get("username") or profile.get("real_name")
                                              or bot.get("name") or names.get(uid, uid))}
    main_id = f"slack:{chan_id}:{e['ts']}"
    kw: dict[str, Any] = dict(chat_type=ctype, sender=sender, timestamp=ts)
    if e.get("thread_ts") and e.get("thread_ts") != e.get("ts"):
        root = f"slack:{chan_id}:{e['thread_ts']}"
        # a reply "also sent to the channel" stays in the timeline, quoting its root
        kw["reply_to" if sub in _BROADCASTS else "thread_id"] = root
    text = text_of(str(e.get("text") or ""))
    lines, rest_atts = _attachment_lines(e.get("attachments"), text_of)
    raw = {k: v for k, v in e.items() if k not in _USED}
    if _relations(e, main_id, ts, where, ident):
        raw.pop("reactions", None)
    raw.pop("pinned_to", None)
    if rest_atts:
        raw["attachments"] = rest_atts
    if raw:
        ext["raw"] = raw
    edited: dict[str, Any] | None = e["edited"] if isinstance(e.get("edited"), dict) else None
    edited_at = None
    if edited is not None:
        try:
            edited_at = int(float(edited.get("ts") or "") * 1000)
        except (TypeError, ValueError):
            edited_at = None

    def done(msg: Message) -> Message:
        return mark_edited(msg, edited_at) if edited is not None else msg

    files = [f for f in (e.get("files") or []) if isinstance(f, dict)]
    if isinstance(e.get("file"), dict) and sub != "file_comment":
        files.insert(0, e["file"])
    if sub == "file_comment":
        f: dict[str, Any] = e["file"] if isinstance(e.get("file"), dict) else {}
        ext["file"] = str(f.get("name") or f.get("title") or "")
        if f.get("id"):
            ext["file_id"] = f["id"]
            if str(f["id"]) in where.file_messages and "thread_id" not in kw:
                kw["reply_to"] = where.file_messages[str(f["id"])]
        body = text_of(str((comment or {}).get("comment") or "")) or text
        if not body:
            skipped("slack: empty file comment")
            return
        yield done(Message.text(conv, body, ext=ext, msg_id=main_id, **kw))
        return
    if files:
        body_text = "\n".join([text, *lines]).strip()
        for i, f in enumerate(files):
            fext = dict(ext)
            if i == 0 and body_text:
                fext["caption"] = body_text
            if i > 0:
                fext["part_of"] = main_id
            name = str(f.get("name") or f.get("title") or "file")
            if f.get("title") and f.get("title") != name:
                fext["file_title"] = f["title"]
            if f.get("id"):
                fext["file_id"] = f["id"]
            url = str(f.get("url_private") or f.get("permalink") or f"slack-file:{f.get('id')}")
            msg_id = main_id if i == 0 else f"{main_id}:{f.get('id') or i}"
            if f.get("id"):
                where.file_messages.setdefault(str(f["id"]), msg_id)
            yield done(attachment_message(conv, kind_of(name, f.get("mimetype")), path=None,
                                          origin=url.split("?")[0], display_name=name,
                                          size=int(f.get("size") or 0), width=f.get("original_w"),
                                          height=f.get("original_h"), msg_id=msg_id, ext=fext,
                                          **kw))
        return
    if sub in _TEXT_SUBTYPES:
        body_text = "\n".join(x for x in [text, *lines] if x).strip()
        if not body_text:
            skipped("slack: empty message")
            return
        yield done(Message.text(conv, body_text, ext=ext, msg_id=main_id, **kw))
        return
    yield done(custom(conv, f"slack.{sub}", {"text": text, "user": names.get(uid, uid)},
                      ext=ext, msg_id=main_id, **kw))
