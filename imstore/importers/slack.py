"""Slack workspace exports (``.zip``): channels (public, private, group DMs, DMs), users, one
JSON file per channel and day, bot messages and file shares.

Channels become GROUP_CHAT ``slack:<name>``, DMs CHAT with the other member. Mentions
(``<@U123>``) and links (``<url|label>``) read as text. File shares become attachments
(IMAGE/VIDEO/VOICE/FILE by MIME type) with the share's text in ``ext["comment"]``; bot messages
are TEXT from ``slack:bot:<id>``; joins, leaves, topic changes and other events become CUSTOM
``slack.<subtype>``.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ErrorCode, IMError
from ..message import ChatType, Message
from ._common import attachment_message, custom, kind_of

__all__ = ["read_slack"]

_MENTION = re.compile(r"<@(U\w+)(?:\|([^>]+))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]+))?>")
_SPECIAL = re.compile(r"<!(\w+)(?:\|([^>]+))?>")
_TEXT_SUBTYPES = {None, "bot_message", "me_message", "thread_broadcast", "reply_broadcast"}


def _load(z: zipfile.ZipFile, name: str, path: str) -> Any:
    try:
        with z.open(name) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise IMError(ErrorCode.INVALID_PARAM, f"{path}: {name}, line {exc.lineno}: malformed "
                                               f"JSON ({exc.msg})") from exc


def read_slack(path: str, *, owner: str, skipped: Callable[[str], None]) -> Iterator[Message]:
    """Messages of a Slack export zip, streamed one day file at a time."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise IMError(ErrorCode.INVALID_PARAM, f"{path}: not a zip file ({exc})") from exc
    with z:
        names = set(z.namelist())
        users: dict[str, str] = {}
        if "users.json" in names:
            for u in _load(z, "users.json", path):
                users[u["id"]] = u.get("name") or u.get("real_name") or u["id"]
        owner_id = next((uid for uid, n in users.items() if owner in (uid, n)), owner)
        chats: list[tuple[str, ChatType, str, dict[str, Any]]] = []
        for listing, ctype in (("channels.json", ChatType.GROUP_CHAT),
                               ("groups.json", ChatType.GROUP_CHAT),
                               ("mpims.json", ChatType.GROUP_CHAT), ("dms.json", ChatType.CHAT)):
            if listing in names:
                for ch in _load(z, listing, path):
                    folder = ch.get("name") or ch.get("id")
                    chats.append((folder, ctype, ch.get("id", folder), ch))
        if not chats:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{path}: no channels.json, groups.json, mpims.json or dms.json; is "
                          "this a Slack export?")

        def name_of(uid: str) -> str:
            return users.get(uid, uid)

        def text_of(raw: str) -> str:
            raw = _MENTION.sub(lambda m: "@" + (m.group(2) or name_of(m.group(1))), raw)
            raw = _LINK.sub(lambda m: m.group(2) or m.group(1), raw)
            raw = _SPECIAL.sub(lambda m: "@" + (m.group(2) or m.group(1)), raw)
            return raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

        for folder, ctype, chan_id, ch in chats:
            if ctype == ChatType.CHAT:
                members = [m for m in ch.get("members", []) if m != owner_id]
                conv = f"slack:{members[0]}" if members else f"slack:{chan_id}"
            else:
                conv = f"slack:{folder}"
            days = sorted(n for n in names if n.startswith(folder + "/") and n.endswith(".json"))
            for day in days:
                entries = _load(z, day, path)
                if not isinstance(entries, list):
                    raise IMError(ErrorCode.INVALID_PARAM, f"{path}: {day}: not a list of messages")
                for e in entries:
                    msg = _convert(e, conv, ctype, chan_id, owner_id, name_of, text_of, skipped)
                    if msg is not None:
                        yield msg


def _convert(e: Any, conv: str, ctype: ChatType, chan_id: str, owner_id: str,
             name_of: Callable[[str], str], text_of: Callable[[str], str],
             skipped: Callable[[str], None]) -> Message | None:
    if not isinstance(e, dict) or "ts" not in e:
        skipped("slack: entry without a timestamp")
        return None
    try:
        ts = int(float(e["ts"]) * 1000)
    except (TypeError, ValueError):
        skipped("slack: unreadable timestamp")
        return None
    sub = e.get("subtype")
    uid = e.get("user") or (f"bot:{e['bot_id']}" if e.get("bot_id") else "unknown")
    mine = uid == owner_id
    if ctype == ChatType.CHAT:
        sender = None if mine else conv
        to = conv if mine else owner_id
    else:
        sender = None if mine else f"slack:{uid}"
        to = conv
    ext: dict[str, Any] = {"slack_from": e.get("username") or name_of(str(uid))}
    if e.get("thread_ts") and e.get("thread_ts") != e.get("ts"):
        ext["thread_ts"] = e["thread_ts"]
    kw: dict[str, Any] = dict(chat_type=ctype, sender=sender, timestamp=ts,
                              msg_id=f"slack:{chan_id}:{e['ts']}")
    text = text_of(str(e.get("text") or ""))
    f = e.get("file") if isinstance(e.get("file"), dict) else None
    if f is None and isinstance(e.get("files"), list) and e["files"]:
        f = e["files"][0]
    if sub == "file_share" or (f is not None and sub is None):
        if f is None:
            skipped("slack: file share without file details")
            return None
        if text:
            ext["comment"] = text
        name = str(f.get("name") or f.get("title") or "file")
        url = str(f.get("url_private") or f.get("permalink") or f"slack-file:{f.get('id')}")
        return attachment_message(to, kind_of(name, f.get("mimetype")), path=None,
                                  origin=url.split("?")[0], display_name=name,
                                  size=int(f.get("size") or 0), width=f.get("original_w"),
                                  height=f.get("original_h"), ext=ext, **kw)
    if sub in _TEXT_SUBTYPES:
        if not text and e.get("attachments"):
            text = "\n".join(text_of(str(a.get("pretext") or a.get("fallback") or a.get("text") or ""))
                             for a in e["attachments"] if isinstance(a, dict)).strip()
        if not text:
            skipped("slack: empty message")
            return None
        return Message.text(to, text, ext=ext, **kw)
    return custom(to, f"slack.{sub}", {"text": text, "user": name_of(str(uid))}, ext=ext, **kw)
