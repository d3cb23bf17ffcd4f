"""Pure mapping between imstore values and Matrix events: ids, conversations, message contents.

No I/O here. Rules kept:
- an imstore user id on the adapter's own server is the Matrix localpart, escaped reversibly when it
  is not a valid localpart; a user of another server is the full ``@user:server`` id;
- every imstore field Matrix has no key for travels under the namespaced content key ``io.imstore``
  (``ext``, the sender's local id, ``need_group_ack``, a location's building name, a body's unknown
  ``extra`` fields), so a message survives the round trip; other clients see a plain ``body`` text;
- an event this module cannot map is skipped (returns None), never half-mapped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...message import (
    Body,
    ChatType,
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


def direct_alias(a_mxid: str, b_mxid: str, server_name: str) -> str:
    """One alias per pair of users, whichever of them asks; a ``.`` inside an id is escaped so
    the separator is unambiguous (``a.b`` + ``c`` and ``a`` + ``b.c`` differ)."""
    x, y = sorted(escape_localpart(m).replace(".", "=2e") for m in (a_mxid, b_mxid))
    return f"#imstore.dm.{x}.{y}:{server_name}"


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
    """Map a room to a conversation from its imstore state (or, for rooms other clients made,
    from ``m.direct``; anything else is a group keyed by the room id)."""
    if state and state.get("chat_type") in ChatType.__members__:
        chat_type = ChatType[state["chat_type"]]
        if chat_type == ChatType.CHAT:
            others = [m for m in state.get("members", []) if m != me]
            peer = others[0] if others else me
            return RoomInfo(room_id, from_mxid(peer, server_name), chat_type)
        return RoomInfo(room_id, str(state.get("id") or room_id), chat_type)
    if direct_peer:
        return RoomInfo(room_id, from_mxid(direct_peer, server_name), ChatType.CHAT)
    return RoomInfo(room_id, room_id, ChatType.GROUP_CHAT)


# ------------------------------------------------------------------------------------- contents


def _info_size(body: FileBody) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if body.size:
        info["size"] = body.size
    return info


def body_content(mtype: MessageType, body: Body) -> dict[str, Any]:
    """The ``m.room.message`` content of a body (without imstore's namespaced extras)."""
    ns: dict[str, Any] = {}
    content: dict[str, Any] = {"msgtype": _MSGTYPES[mtype]}
    if isinstance(body, TextBody):
        content["body"] = body.text
    elif isinstance(body, FileBody):
        content["body"] = body.display_name or "file"
        content["filename"] = body.display_name or "file"
        content["url"] = body.remote_url.split("#", 1)[0]
        info = _info_size(body)
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
    ns = content.setdefault(NS, {})
    ns["local_id"] = msg.msg_id
    if msg.ext:
        ns["ext"] = msg.ext
    if msg.need_group_ack:
        ns["need_group_ack"] = True
    return content


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
        return float(lat), float(lon)
    except ValueError:
        return 0.0, 0.0


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def body_from_content(content: dict[str, Any]) -> tuple[MessageType, Body] | None:
    """The imstore type and body of an ``m.room.message`` content; None when not a message."""
    msgtype = content.get("msgtype")
    mtype = _TYPES.get(msgtype) if isinstance(msgtype, str) else None
    if mtype is None:
        if isinstance(content.get("body"), str):  # an unknown msgtype: keep its text
            return MessageType.TEXT, TextBody(content["body"])
        return None
    ns = _obj(content.get(NS))
    extra = _obj(ns.get("extra"))
    text = str(content.get("body") or "")
    info = _obj(content.get("info"))
    body: Body
    if mtype == MessageType.TEXT:
        body = TextBody(text, extra=dict(extra))
    elif mtype == MessageType.LOCATION:
        lat, lon = _geo(str(content.get("geo_uri", "")))
        body = LocationBody(lat, lon, str(ns.get("address", text)), str(ns.get("building_name", "")),
                            extra=dict(extra))
    elif mtype == MessageType.CUSTOM:
        params = _obj(ns.get("params"))
        body = CustomBody(str(ns.get("event", text)), {str(k): str(v) for k, v in params.items()},
                          extra=dict(extra))
    else:
        url = str(content.get("url", ""))
        common: dict[str, Any] = {
            "display_name": str(content.get("filename") or text or "file"),
            "remote_url": url, "secret": str(ns.get("secret", "")),
            "size": int(info.get("size") or 0), "download_status": DownloadStatus.PENDING,
            "extra": dict(extra)}
        if mtype == MessageType.IMAGE:
            body = ImageBody(**common, width=info.get("w"), height=info.get("h"),
                             thumbnail_url=str(info.get("thumbnail_url") or (
                                 url + THUMB_MARK if url else "")))
        elif mtype == MessageType.VOICE:
            body = VoiceBody(**common, duration_ms=int(info.get("duration") or 0))
        elif mtype == MessageType.VIDEO:
            body = VideoBody(**common, duration_ms=int(info.get("duration") or 0),
                             width=info.get("w"), height=info.get("h"),
                             thumbnail_url=str(info.get("thumbnail_url") or ""))
        else:
            body = FileBody(**common)
    return mtype, body


def blank_body(mtype: MessageType) -> Body:
    """The body of a recall notice (the contract's blank body of each type)."""
    if mtype == MessageType.TEXT:
        return TextBody("")
    if mtype == MessageType.LOCATION:
        return LocationBody(0.0, 0.0)
    if mtype == MessageType.CUSTOM:
        return CustomBody("")
    cls: type[FileBody] = {MessageType.IMAGE: ImageBody, MessageType.VOICE: VoiceBody,
                           MessageType.VIDEO: VideoBody}.get(mtype, FileBody)
    return cls()


_OPTIONAL = frozenset(Message.__dataclass_fields__)


def set_optional(msg: Message, name: str, value: Any) -> None:
    """Set a Message field that newer imstore versions have (local_id, edited_at, recalled_at)."""
    if name in _OPTIONAL:
        setattr(msg, name, value)


def replacement(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``(original event id, new content)`` when ``event`` is an ``m.replace`` edit."""
    content = event.get("content") or {}
    rel = content.get("m.relates_to") if isinstance(content, dict) else None
    if isinstance(rel, dict) and rel.get("rel_type") == "m.replace":
        new = content.get("m.new_content")
        if isinstance(new, dict) and isinstance(rel.get("event_id"), str):
            return rel["event_id"], new
    return None


def redacted_id(event: dict[str, Any]) -> str | None:
    """The event an ``m.room.redaction`` removes (room v11 keeps it in the content)."""
    if event.get("type") != "m.room.redaction":
        return None
    rid = event.get("redacts") or (event.get("content") or {}).get("redacts")
    return rid if isinstance(rid, str) else None


def event_to_message(event: dict[str, Any], room: RoomInfo, me: str, server_name: str, *,
                     history: bool = False, read_up_to: int | None = None) -> Message | None:
    """The imstore message of a timeline event as ``me`` sees it; None for anything else
    (state, edits, redactions, reactions). Applies a bundled edit and marks a redacted event as a
    recall notice. A received ``history`` message is read when it is at or before
    ``read_up_to`` (the user's read position); a live one leaves ``is_read`` unsaid."""
    if event.get("type") != "m.room.message" or replacement(event) is not None:
        return None
    content = event.get("content") or {}
    unsigned = event.get("unsigned") or {}
    sender_mxid = str(event.get("sender", ""))
    ts = int(event.get("origin_server_ts") or 0)
    ns = _obj(content.get(NS))
    recalled = unsigned.get("redacted_because")
    if recalled is not None or not content:
        # a redacted event keeps no content: the redaction names the type it had
        why = recalled.get("content") if isinstance(recalled, dict) else None
        prior = why.get(f"{NS}.type") if isinstance(why, dict) else None
        mtype = (MessageType[prior] if isinstance(prior, str) and prior in MessageType.__members__
                 else MessageType.TEXT)
        mapped: tuple[MessageType, Body] | None = (mtype, blank_body(mtype))
    else:
        mapped = body_from_content(content)
    if mapped is None:
        return None
    mtype, body = mapped
    edited_at = None
    edit = ((unsigned.get("m.relations") or {}).get("m.replace")
            if recalled is None else None)
    if isinstance(edit, dict):
        new = (edit.get("content") or {}).get("m.new_content")
        if isinstance(new, dict):
            got = body_from_content(new)
            if got is not None and got[0] == mtype:
                body = got[1]
                edited_at = int(edit.get("origin_server_ts") or ts)
    sender = from_mxid(sender_mxid, server_name)
    mine = sender_mxid == me
    to = (from_mxid(me, server_name) if room.chat_type == ChatType.CHAT and not mine
          else room.conv_id)
    msg = Message(
        msg_id=str(event.get("event_id")), conv_id=room.conv_id, chat_type=room.chat_type,
        type=mtype, sender=sender, to=to, body=body,
        direction=Direction.SEND if mine else Direction.RECEIVE,
        status=MessageStatus.SUCCESS, local_time=ts, server_time=ts,
        is_read=(read_up_to is not None and ts <= read_up_to) if history and not mine else None,
        need_group_ack=bool(ns.get("need_group_ack")) and room.chat_type == ChatType.GROUP_CHAT,
        ext=dict(ns["ext"]) if isinstance(ns.get("ext"), dict) else {})
    if mine and isinstance(ns.get("local_id"), str):
        set_optional(msg, "local_id", ns["local_id"])
    if edited_at is not None:
        set_optional(msg, "edited_at", edited_at)
    if recalled is not None:
        set_optional(msg, "recalled_at", int((recalled or {}).get("origin_server_ts") or ts))
    return msg
