"""Pure mapping between imstore values and Matrix events: ids, conversations, message contents.

No I/O here. This module is the ONE place a Matrix event becomes a `Message` (one function per
event kind: `event_to_message` for timeline messages, `edit_to_message` for ``m.replace`` edits,
`cmd_to_message` for imstore's to-device commands). Rules kept:
- an imstore user id on the adapter's own server is the Matrix localpart, escaped reversibly when it
  is not a valid localpart; a user of another server is the full ``@user:server`` id;
- every imstore field Matrix has no key for travels under the namespaced content key ``io.imstore``
  (``ext``, the sender's local id, ``need_group_ack``, a location's building name, a body's unknown
  ``extra`` fields), so a message survives the round trip; other clients see a plain ``body`` text;
- an event this module cannot map is skipped (returns None), never half-mapped; an event that
  claims to be one it maps but carries fields of the wrong type raises `BadEventError` (the
  sync loop keeps it as a `BadEvent` and goes on with the rest of its batch);
- the server is not trusted: numbers are read only when they are JSON integers within range,
  strings only when they are strings; a recall notice takes the blank body `kinds` gives;
- rich bodies and relations are Matrix's own keys: ``formatted`` is ``formatted_body`` with
  ``format: org.matrix.custom.html``; a caption is the ``body`` of a file event whose
  ``filename`` differs (MSC2530); ``reply_to`` is ``m.in_reply_to`` and ``thread_id`` an
  ``m.thread`` relation (its ``m.in_reply_to`` fallback is no reply); an ``m.sticker`` is an
  image; a non-state event of a type imstore does not know (not ``m.room.*`` but
  ``m.room.encrypted``) is kept as a CUSTOM message naming its type, with its content (never
  dropped).
"""

from __future__ import annotations

import json
import mimetypes
import re
from dataclasses import dataclass, field
from typing import Any

from ...kinds import blank_body
from ...lifecycle import MAX_TIME, RECALLED_BY, is_mine
from ...message import (
    Body,
    ChatType,
    CmdBody,
    CustomBody,
    Direction,
    DownloadStatus,
    FileBody,
    ImageBody,
    LocationBody,
    Message,
    MessageStatus,
    MessageType,
    TextBody,
    VideoBody,
    VoiceBody,
)

NS = "io.imstore"
"""The namespace of every imstore key in Matrix contents, state and account data."""
CONV_STATE = f"{NS}.conversation"  # state event naming the imstore conversation of a room
HIDDEN = f"{NS}.hidden"  # room account data: this user's one-way deletes
CMD_EVENT = f"{NS}.cmd"  # to-device: CMD messages
RECEIPT_EVENT = f"{NS}.receipt"  # to-device: delivery receipts
CUSTOM_MSGTYPE = f"{NS}.custom"
THUMB_MARK = "#thumbnail"  # appended to an mxc URL: "the server's thumbnail of this file"
HTML = "org.matrix.custom.html"
STICKER = "m.sticker"
NOT_MESSAGES = frozenset({"m.reaction", "m.room.redaction"})  # events that change others
# What a history page leaves out, asked of the server (``not_types``): events that change others,
# room state and imstore's own. Whatever else it carries is what `event_to_message` maps, as live:
# ``m.room.message``, stickers, encrypted and unknown events (a filter cannot keep
# ``m.room.message`` and leave out the rest of ``m.room.*``: the state types are named).
_ROOM_STATE_TYPES = frozenset({
    "m.room.member", "m.room.create", "m.room.power_levels", "m.room.join_rules",
    "m.room.history_visibility", "m.room.guest_access", "m.room.name", "m.room.topic",
    "m.room.avatar", "m.room.canonical_alias", "m.room.pinned_events", "m.room.server_acl",
    "m.room.tombstone", "m.room.third_party_invite", "m.room.encryption"})
HISTORY_NOT_TYPES = [*sorted(NOT_MESSAGES | _ROOM_STATE_TYPES), f"{NS}.*"]


def messages_filter(**more: Any) -> str:
    """The ``/messages`` filter of the events live sync would store (every type but
    `HISTORY_NOT_TYPES`), with ``more`` keys (``senders``): history pages, a room's newest
    message and the event a conversation's read receipt goes on all see the same events."""
    return json.dumps({"not_types": HISTORY_NOT_TYPES, "lazy_load_members": True, **more})

_MSGTYPES = {
    MessageType.TEXT: "m.text",
    MessageType.IMAGE: "m.image",
    MessageType.VOICE: "m.audio",
    MessageType.VIDEO: "m.video",
    MessageType.FILE: "m.file",
    MessageType.LOCATION: "m.location",
    MessageType.CUSTOM: CUSTOM_MSGTYPE,
}
_TYPES = {v: k for k, v in _MSGTYPES.items()}
_TYPES.update({"m.notice": MessageType.TEXT, "m.emote": MessageType.TEXT})

# ------------------------------------------------------------------------------------- user ids

_LOCALPART_OK = re.compile(r"[a-z0-9._\-/+]")
_ESCAPED = re.compile(r"(?:=[0-9a-f]{2})+")


def escape_localpart(user_id: str) -> str:
    """A valid Matrix localpart for any imstore user id, reversible: every character outside
    ``[a-z0-9._-/+]`` (upper case and ``=`` included, and a leading ``_``, which Synapse keeps for
    bridges) becomes ``=xx`` per UTF-8 byte. ``alice`` stays ``alice``; ``Bob`` is ``=42ob``."""
    out = []
    for i, ch in enumerate(user_id):
        if _LOCALPART_OK.fullmatch(ch) and not (i == 0 and ch == "_"):
            out.append(ch)
        else:
            out.append("".join(f"={b:02x}" for b in ch.encode()))
    return "".join(out)


def unescape_localpart(localpart: str) -> str:
    return _ESCAPED.sub(lambda m: bytes.fromhex(m.group().replace("=", "")).decode(
        "utf-8", errors="replace"), localpart)


def to_mxid(user_id: str, server_name: str) -> str:
    if user_id.startswith("@") and ":" in user_id:
        return user_id
    return f"@{escape_localpart(user_id)}:{server_name}"


def from_mxid(mxid: str, server_name: str) -> str:
    local, _, server = mxid[1:].partition(":")
    if server != server_name:
        return mxid
    return unescape_localpart(local)


def group_alias(group_id: str, server_name: str) -> str:
    return f"#imstore.g.{escape_localpart(group_id)}:{server_name}"


# ---------------------------------------------------------------------------------------- rooms


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """What a room is to imstore: its conversation id as this user sees it, and its type."""

    room_id: str
    conv_id: str
    chat_type: ChatType


def conv_state(chat_type: ChatType, conv_key: str, members: list[str]) -> dict[str, Any]:
    """The content of the state event naming a room's imstore conversation."""
    return {"chat_type": ChatType(chat_type).name, "id": conv_key, "members": sorted(members)}


def room_info(room_id: str, state: dict[str, Any] | None, me: str, server_name: str,
              direct_peer: str | None = None) -> RoomInfo:
    """Map a room to a conversation: a chat with ``direct_peer`` when the user's ``m.direct``
    lists it under that peer (the only thing that makes a room a chat: its state is written by
    whoever created it), else the group or chat room its imstore state names, else a group keyed
    by the room id."""
    if direct_peer:
        return RoomInfo(room_id, from_mxid(direct_peer, server_name), ChatType.CHAT)
    if state and state.get("chat_type") in ChatType.__members__:
        chat_type = ChatType[state["chat_type"]]
        if chat_type != ChatType.CHAT:
            return RoomInfo(room_id, str(state.get("id") or room_id), chat_type)
    return RoomInfo(room_id, room_id, ChatType.GROUP_CHAT)


def direct_inviter(invite: Any, me: str) -> str | None:
    """Who invited ``me`` to a direct chat: the sender of the invite's own membership event when
    it says ``is_direct`` (the invite entry of a sync's ``rooms.invite``); None otherwise."""
    events = as_obj(as_obj(invite).get("invite_state")).get("events")
    for ev in events if isinstance(events, list) else ():
        ev = as_obj(ev)
        if (ev.get("type") == "m.room.member" and ev.get("state_key") == me
                and as_obj(ev.get("content")).get("is_direct") is True):
            sender = ev.get("sender")
            if isinstance(sender, str) and sender.startswith("@") and sender != me:
                return sender
    return None


# ------------------------------------------------------------------------------------- contents


class BadEventError(ValueError):
    """An event that claims a kind this module maps but cannot be mapped."""


@dataclass(frozen=True, slots=True)
class BadEvent:
    """An event the adapter could not use, kept with its raw ``source`` and the reason (nio's
    ``BadEvent``): reported, never silently dropped, and never a reason to drop its batch."""

    source: Any
    reason: str
    room_id: str | None = None
    where: str = field(default="timeline")


def as_int(value: Any, default: int = 0) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and -MAX_TIME <= value <= MAX_TIME:
        return value
    return default


def events_of(section: Any, key: str = "events") -> list[Any]:
    """``section[key]`` when it is a list (an answer's event list), else nothing."""
    got = as_obj(section).get(key)
    return got if isinstance(got, list) else []


def _size(value: Any) -> int | None:
    got = as_int(value, -1)
    return got if got >= 0 else None


def as_str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def as_obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _info(body: FileBody) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if body.size:
        info["size"] = body.size
    mimetype = mimetypes.guess_type(body.display_name or "")[0]
    if mimetype:
        info["mimetype"] = mimetype
    return info


def body_content(mtype: MessageType, body: Body) -> dict[str, Any]:
    """The ``m.room.message`` content of a body (without imstore's namespaced extras)."""
    ns: dict[str, Any] = {}
    content: dict[str, Any] = {"msgtype": _MSGTYPES[mtype]}
    if isinstance(body, TextBody):
        content["body"] = body.text
        if body.formatted:
            content["format"] = HTML
            content["formatted_body"] = body.formatted
    elif isinstance(body, FileBody):
        content["filename"] = body.display_name or "file"
        content["body"] = body.caption or content["filename"]
        if body.caption == content["filename"]:
            ns["caption"] = True  # MSC2530 cannot tell a caption equal to the file name
        content["url"] = body.remote_url.split("#", 1)[0]
        info = _info(body)
        if isinstance(body, ImageBody | VideoBody):
            if body.width is not None:
                info["w"] = body.width
            if body.height is not None:
                info["h"] = body.height
        if isinstance(body, VoiceBody | VideoBody):
            info["duration"] = body.duration_ms
        if isinstance(body, VideoBody) and body.thumbnail_url and not body.thumbnail_url.endswith(
                THUMB_MARK):
            info["thumbnail_url"] = body.thumbnail_url
            thumb_type = mimetypes.guess_type(body.thumbnail_path or "")[0]
            if thumb_type:
                info["thumbnail_info"] = {"mimetype": thumb_type}
        if body.secret:
            ns["secret"] = body.secret
        content["info"] = info
    elif isinstance(body, LocationBody):
        content["body"] = body.address or f"{body.latitude},{body.longitude}"
        content["geo_uri"] = f"geo:{body.latitude!r},{body.longitude!r}"
        ns["address"] = body.address
        ns["building_name"] = body.building_name
    elif isinstance(body, CustomBody):
        content["body"] = f"[{body.event}]"
        ns["event"] = body.event
        ns["params"] = dict(body.params)
    else:
        raise ValueError(f"no Matrix content for {type(body).__name__}")
    if body.extra:
        ns["extra"] = body.extra
    if ns:
        content[NS] = ns
    return content


def message_content(msg: Message) -> dict[str, Any]:
    """The content of the ``m.room.message`` event that carries ``msg``."""
    content = body_content(msg.type, msg.body)
    relation = relates_to(msg.reply_to, msg.thread_id)
    if relation:
        content["m.relates_to"] = relation
    ns = content.setdefault(NS, {})
    ns["local_id"] = msg.msg_id
    if msg.ext:
        ns["ext"] = msg.ext
    if msg.need_group_ack:
        ns["need_group_ack"] = True
    return content


def relates_to(reply_to: str | None, thread_id: str | None) -> dict[str, Any]:
    """The ``m.relates_to`` of a reply (``m.in_reply_to``) and of a thread reply (``m.thread``,
    with the reply fallback other clients expect: the quoted message, else the root)."""
    if thread_id:
        return {"rel_type": "m.thread", "event_id": thread_id,
                "is_falling_back": not reply_to,
                "m.in_reply_to": {"event_id": reply_to or thread_id}}
    return {"m.in_reply_to": {"event_id": reply_to}} if reply_to else {}


def relations(content: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(reply_to, thread_id)`` of a message content; a thread's reply fallback is no reply."""
    rel = as_obj(content.get("m.relates_to"))
    quoted = as_obj(rel.get("m.in_reply_to")).get("event_id")
    reply = quoted if isinstance(quoted, str) and quoted else None
    root = rel.get("event_id")
    if rel.get("rel_type") == "m.thread" and isinstance(root, str) and root:
        return (None if rel.get("is_falling_back") is True else reply), root
    return reply, None


def edit_content(original_event_id: str, mtype: MessageType, body: Body) -> dict[str, Any]:
    """An ``m.replace`` edit of ``original_event_id`` carrying ``body``."""
    new = body_content(mtype, body)
    fallback = dict(new)
    fallback["body"] = "* " + str(new.get("body", ""))
    fallback["m.new_content"] = new
    fallback["m.relates_to"] = {"rel_type": "m.replace", "event_id": original_event_id}
    return fallback


def _geo(uri: str) -> tuple[float, float]:
    try:
        lat, lon = uri.removeprefix("geo:").split(";", 1)[0].split(",")[:2]
        got = float(lat), float(lon)
    except ValueError:
        return 0.0, 0.0
    if not (-90.0 <= got[0] <= 90.0 and -180.0 <= got[1] <= 180.0):
        return 0.0, 0.0  # NaN and the impossible fail here too
    return got


def body_from_content(content: dict[str, Any]) -> tuple[MessageType, Body] | None:
    """The imstore type and body of an ``m.room.message`` content; None when not a message."""
    msgtype = content.get("msgtype")
    mtype = _TYPES.get(msgtype) if isinstance(msgtype, str) else None
    if mtype is None:
        if isinstance(content.get("body"), str):  # an unknown msgtype: keep its text
            return MessageType.TEXT, TextBody(content["body"])
        return None
    ns = as_obj(content.get(NS))
    extra = dict(as_obj(ns.get("extra")))
    text = as_str(content.get("body"))
    info = as_obj(content.get("info"))
    body: Body
    if mtype == MessageType.TEXT:
        html = content.get("formatted_body") if content.get("format") == HTML else None
        body = TextBody(text, as_str(html), extra=extra)
    elif mtype == MessageType.LOCATION:
        lat, lon = _geo(as_str(content.get("geo_uri")))
        body = LocationBody(lat, lon, as_str(ns.get("address"), text),
                            as_str(ns.get("building_name")), extra=extra)
    elif mtype == MessageType.CUSTOM:
        params = as_obj(ns.get("params"))
        body = CustomBody(as_str(ns.get("event"), text),
                          {str(k): str(v) for k, v in params.items()}, extra=extra)
    else:
        url = as_str(content.get("url"))
        filename = as_str(content.get("filename"))
        caption = text if filename and (text != filename or ns.get("caption") is True) else ""
        common: dict[str, Any] = {
            "display_name": filename or text or "file", "caption": caption,
            "remote_url": url, "secret": as_str(ns.get("secret")),
            "size": _size(info.get("size")) or 0, "download_status": DownloadStatus.PENDING,
            "extra": extra}
        if mtype == MessageType.IMAGE:
            body = ImageBody(**common, width=_size(info.get("w")), height=_size(info.get("h")),
                             thumbnail_url=as_str(info.get("thumbnail_url")) or (
                                 url + THUMB_MARK if url else ""))
        elif mtype == MessageType.VOICE:
            body = VoiceBody(**common, duration_ms=_size(info.get("duration")) or 0)
        elif mtype == MessageType.VIDEO:
            body = VideoBody(**common, duration_ms=_size(info.get("duration")) or 0,
                             width=_size(info.get("w")), height=_size(info.get("h")),
                             thumbnail_url=as_str(info.get("thumbnail_url")))
        else:
            body = FileBody(**common)
    return mtype, body


def replacement(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``(original event id, new content)`` when ``event`` is an ``m.replace`` edit."""
    content = as_obj(event.get("content"))
    rel = content.get("m.relates_to")
    if isinstance(rel, dict) and rel.get("rel_type") == "m.replace":
        new = content.get("m.new_content")
        if isinstance(new, dict) and isinstance(rel.get("event_id"), str):
            return rel["event_id"], new
    return None


def redacted_id(event: dict[str, Any]) -> str | None:
    """The event an ``m.room.redaction`` removes (room v11 keeps it in the content)."""
    if event.get("type") != "m.room.redaction":
        return None
    rid = event.get("redacts") or as_obj(event.get("content")).get("redacts")
    return rid if isinstance(rid, str) else None


def _envelope(event: dict[str, Any]) -> tuple[str, str, int]:
    """(event id, sender, server time) of a timeline event, checked."""
    eid, sender = event.get("event_id"), event.get("sender")
    if not isinstance(eid, str) or not eid:
        raise BadEventError("the event has no event_id string")
    if not isinstance(sender, str) or not sender.startswith("@"):
        raise BadEventError(f"the event {eid[:80]} has no sender user id")
    ts = as_int(event.get("origin_server_ts"), -1)
    if ts < 0:
        raise BadEventError(f"the event {eid[:80]} has no origin_server_ts integer")
    return eid, sender, ts


def _recipient(room: RoomInfo, mine: bool, me: str, server_name: str) -> str:
    """``to`` of a message in ``room``: the peer's own id for a received one-to-one message."""
    if room.chat_type == ChatType.CHAT and not mine:
        return from_mxid(me, server_name)
    return room.conv_id


def event_to_message(event: dict[str, Any], room: RoomInfo, me: str, server_name: str, *,
                     history: bool = False, read_up_to: int | None = None) -> Message | None:
    """The imstore message of a timeline event as ``me`` sees it; None for anything else
    (state, edits, redactions, reactions). Applies a bundled edit and marks a redacted event as a
    recall notice. A received ``history`` message is read when it is at or before
    ``read_up_to`` (the user's read position); a live one leaves ``is_read`` unsaid.
    Raises `BadEventError` for an ``m.room.message`` it cannot trust."""
    kind = event.get("type")
    if not isinstance(kind, str) or replacement(event) is not None or "state_key" in event:
        return None
    if kind != "m.room.message" and (kind in NOT_MESSAGES or kind.startswith(NS) or (
            kind.startswith("m.room.") and kind != "m.room.encrypted")):
        return None  # changes of other events, and room state (even without its state_key)
    eid, sender_mxid, ts = _envelope(event)
    raw = event.get("content")
    if raw is not None and not isinstance(raw, dict):
        raise BadEventError(f"the content of {eid[:80]} is not an object")
    content = as_obj(raw)
    unsigned = as_obj(event.get("unsigned"))
    ns = as_obj(content.get(NS))
    recalled = unsigned.get("redacted_because")
    mapped: tuple[MessageType, Body] | None
    if recalled is not None or not content:
        # a redacted event keeps no content: the redaction names the type it had
        prior = as_obj(as_obj(recalled).get("content")).get(f"{NS}.type")
        mtype = (MessageType[prior] if isinstance(prior, str) and prior in MessageType.__members__
                 and prior != "CMD" else MessageType.TEXT)
        mapped = (mtype, blank_body(mtype))
    elif kind == STICKER:
        got = body_from_content({**content, "msgtype": "m.image"})
        mapped = got if got is None else (got[0], _as_sticker(got[1], content))
    elif kind != "m.room.message":
        mapped = MessageType.CUSTOM, foreign_body(kind, content)
    else:
        mapped = body_from_content(content)
    if mapped is None:
        return None
    mtype, body = mapped
    edited_at = None
    edit = as_obj(as_obj(unsigned.get("m.relations")).get("m.replace")) if recalled is None else {}
    new = as_obj(edit.get("content")).get("m.new_content")
    if isinstance(new, dict) and takes_change(edit.get("sender"), sender_mxid):
        got = body_from_content(new)
        if got is not None and got[0] == mtype:
            body = got[1]
            edited_at = as_int(edit.get("origin_server_ts"), ts)
    mine = is_mine(sender_mxid, me)
    reply_to, thread_id = relations(content)
    local_id = ns.get("local_id")
    ext = dict(as_obj(ns.get("ext")))
    redacter = as_obj(recalled).get("sender")
    if recalled is not None and isinstance(redacter, str) and redacter != sender_mxid:
        ext[RECALLED_BY] = from_mxid(redacter, server_name)  # a moderator's redaction
    return Message(
        msg_id=eid, conv_id=room.conv_id, chat_type=room.chat_type, type=mtype,
        sender=from_mxid(sender_mxid, server_name), to=_recipient(room, mine, me, server_name),
        body=body, direction=Direction.SEND if mine else Direction.RECEIVE,
        status=MessageStatus.SUCCESS, local_time=ts, server_time=ts,
        is_read=(read_up_to is not None and ts <= read_up_to) if history and not mine else None,
        need_group_ack=ns.get("need_group_ack") is True and room.chat_type == ChatType.GROUP_CHAT,
        ext=ext, local_id=local_id if mine and isinstance(local_id, str) else None,
        edited_at=edited_at, reply_to=reply_to, thread_id=thread_id,
        recalled_at=as_int(as_obj(recalled).get("origin_server_ts"), ts) if recalled is not None
        else None)


def _as_sticker(body: Body, content: dict[str, Any]) -> Body:
    """A sticker is an image whose ``body`` is its description, not a caption."""
    if isinstance(body, ImageBody):
        body.caption = ""
        body.display_name = as_str(content.get("filename")) or as_str(content.get("body")) \
            or "sticker"
        body.extra.setdefault("matrix_type", STICKER)
    return body


def foreign_body(kind: str, content: dict[str, Any]) -> CustomBody:
    """A CUSTOM body keeping an event imstore does not know: its type is the ``event``, its
    top-level content the ``params`` (strings as they are, anything else as JSON)."""
    params = {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
              for k, v in content.items()}
    return CustomBody(kind, params, extra={"matrix_type": kind})


def takes_change(actor: Any, sender: Any) -> bool:
    """Whether an edit (or a redaction without a moderator's power) by ``actor`` applies to a
    message ``sender`` sent: only the sender changes a message (the Matrix spec: an
    ``m.replace`` from anyone else is ignored). Both are Matrix ids; an unknown one never
    matches."""
    return isinstance(actor, str) and bool(actor) and actor == sender


def edit_to_message(event: dict[str, Any], room: RoomInfo, me: str, server_name: str,
                    original: tuple[str, int] | None) -> Message | None:
    """The edited message an ``m.replace`` event announces (its server ``msg_id``, new body and
    ``edited_at``), as ``me`` sees it; ``original`` is the (sender, server time) of the edited
    event. None when ``event`` is no edit, carries no message content, or when the original is
    unknown or was sent by someone else than the editor (`takes_change`)."""
    rep = replacement(event)
    if rep is None:
        return None
    _, editor, ts = _envelope(event)
    if original is None or not takes_change(editor, original[0]):
        return None
    got = body_from_content(rep[1])
    if got is None:
        return None
    mtype, body = got
    sender = original[0]
    mine = is_mine(sender, me)
    return Message(
        msg_id=rep[0], conv_id=room.conv_id, chat_type=room.chat_type, type=mtype,
        sender=from_mxid(sender, server_name), to=_recipient(room, mine, me, server_name),
        body=body, direction=Direction.SEND if mine else Direction.RECEIVE,
        status=MessageStatus.SUCCESS, local_time=original[1], server_time=original[1],
        edited_at=ts)


def cmd_content(msg: Message, ts: int) -> dict[str, Any]:
    """The to-device content that carries a CMD message."""
    assert isinstance(msg.body, CmdBody)
    return {"action": msg.body.action, "params": msg.body.params, "local_id": msg.msg_id,
            "chat_type": ChatType(msg.chat_type).name, "to": msg.to, "ext": msg.ext, "ts": ts}


def cmd_to_message(event: dict[str, Any], me: str, server_name: str, now: int) -> Message:
    """The CMD message a to-device ``io.imstore.cmd`` event carries (received by ``me``).
    Raises `BadEventError` when it cannot be one."""
    content, sender = event.get("content"), event.get("sender")
    if not isinstance(content, dict) or not isinstance(sender, str) or not sender.startswith("@"):
        raise BadEventError("a command without an object content or a sender user id")
    name = content.get("chat_type", "CHAT")
    if not isinstance(name, str) or name not in ChatType.__members__:
        raise BadEventError(f"a command for an unknown chat type {str(name)[:40]!r}")
    chat_type = ChatType[name]
    peer = from_mxid(sender, server_name)
    conv = peer if chat_type == ChatType.CHAT else as_str(content.get("to"))
    if not conv:
        raise BadEventError("a group command names no group")
    ts = as_int(content.get("ts")) or now
    params, ext = as_obj(content.get("params")), as_obj(content.get("ext"))
    return Message(
        msg_id=as_str(content.get("local_id")) or f"cmd-{ts}", conv_id=conv, chat_type=chat_type,
        type=MessageType.CMD, sender=peer,
        to=from_mxid(me, server_name) if chat_type == ChatType.CHAT else conv,
        body=CmdBody(as_str(content.get("action")), dict(params)), direction=Direction.RECEIVE,
        status=MessageStatus.SUCCESS, local_time=ts, server_time=ts, ext=dict(ext))
