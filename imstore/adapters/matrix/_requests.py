"""Request builders for the Matrix client-server API: each returns a `Request` and does no I/O.

Rules kept here:
- a `Request` is ``(method, path, body)``: the path already carries its query string and every
  variable path segment is quoted (room ids, event ids, aliases and txn ids contain ``!$#:``);
- ``body`` is the JSON body (None for none); raw uploads travel beside it (see `Api.call`);
- the filters the adapter sends are built here, so the exact wire form of every call is in one
  module and tested without a server.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

__all__ = ["CS", "MEDIA", "Request", "q"]

CS = "/_matrix/client/v3"
MEDIA = "/_matrix/client/v1/media"
THUMB_SIZE = 320
INVITES_FILTER = json.dumps({
    "presence": {"types": []}, "account_data": {"types": []},
    "room": {"timeline": {"limit": 0}, "state": {"types": []}, "ephemeral": {"types": []},
             "account_data": {"types": []}}})


ROOM_STATE_DATA = ("m.tag", "m.marked_unread", "com.famedly.marked_unread")
"""Room account data that is this user's state of a conversation (its pin and marks)."""


class Request(NamedTuple):
    method: str
    path: str
    body: Any = None


def q(part: str) -> str:
    """Quote one path segment."""
    return quote(part, safe="")


def _query(path: str, params: dict[str, Any]) -> str:
    clean = {k: v for k, v in params.items() if v is not None}
    return f"{path}?{urlencode(clean)}" if clean else path


# ----------------------------------------------------------------------------------- session

def login(body: dict[str, Any]) -> Request:
    return Request("POST", f"{CS}/login", body)


def register(body: dict[str, Any]) -> Request:
    return Request("POST", f"{CS}/register", body)


def whoami() -> Request:
    return Request("GET", f"{CS}/account/whoami")


def sync_filter(timeline_limit: int) -> str:
    """The live sync's filter: joined rooms' timelines, receipts, ``m.direct``; no presence."""
    return json.dumps({
        "presence": {"types": []},
        "account_data": {"types": ["m.direct"]},
        "room": {"timeline": {"limit": timeline_limit},
                 "state": {"lazy_load_members": True},
                 "ephemeral": {"types": ["m.receipt"]},
                 "account_data": {"types": ["m.fully_read", *ROOM_STATE_DATA]}},
    })


def list_filter(messages: int, state_types: list[str], account_types: list[str],
                not_messages: list[str]) -> str:
    """The conversation list's one ``/sync``: every joined room with its newest ``messages``
    timeline events but those of the types ``not_messages``, the state and room account data of
    the types given, its notification counts and read receipts, and ``m.direct``; no
    presence."""
    return json.dumps({
        "presence": {"types": []},
        "account_data": {"types": ["m.direct"]},
        "room": {"timeline": {"limit": messages, "not_types": not_messages,
                              "lazy_load_members": True},
                 "state": {"types": state_types, "lazy_load_members": True},
                 "ephemeral": {"types": ["m.receipt"]},
                 "account_data": {"types": account_types}},
    })


def fresh_timeout(now_ms: int) -> int:
    """The ``timeout`` of an initial ``/sync`` (no ``since``) that must not be answered from
    Synapse's two-minute response cache: the timeout is part of the cache's key, and an initial
    sync never waits, so a value that changes every millisecond costs nothing."""
    return 1 + now_ms % 86_400_000


def sync(filter_: str, since: str | None, timeout_ms: int) -> Request:
    return Request("GET", _query(f"{CS}/sync", {
        "filter": filter_, "set_presence": "offline", "timeout": timeout_ms, "since": since}))


# ------------------------------------------------------------------------------------- rooms

def create_room(body: dict[str, Any]) -> Request:
    return Request("POST", f"{CS}/createRoom", body)


def resolve_alias(alias: str) -> Request:
    return Request("GET", f"{CS}/directory/room/{q(alias)}")


def delete_alias(alias: str) -> Request:
    return Request("DELETE", f"{CS}/directory/room/{q(alias)}")


def join(room_id: str) -> Request:
    return Request("POST", f"{CS}/join/{q(room_id)}", {})


def joined_rooms() -> Request:
    return Request("GET", f"{CS}/joined_rooms")


def joined_members(room_id: str) -> Request:
    return Request("GET", f"{CS}/rooms/{q(room_id)}/joined_members")


def room_state(room_id: str, event_type: str, body: Any = None) -> Request:
    """GET (or, with a body, PUT) a room's state event of ``event_type`` with an empty key."""
    return Request("GET" if body is None else "PUT",
                   f"{CS}/rooms/{q(room_id)}/state/{q(event_type)}/", body)


def admin_delete_room(room_id: str) -> Request:
    return Request("DELETE", f"/_synapse/admin/v1/rooms/{q(room_id)}",
                   {"purge": True, "block": False})


def account_data(mxid: str, event_type: str, body: Any = None) -> Request:
    """GET (or, with a body, PUT) the user's global account data of ``event_type``."""
    return Request("GET" if body is None else "PUT",
                   f"{CS}/user/{q(mxid)}/account_data/{q(event_type)}", body)


def room_account_data(mxid: str, room_id: str, event_type: str, body: Any = None) -> Request:
    """GET (or, with a body, PUT) the user's account data of ``event_type`` in a room."""
    return Request("GET" if body is None else "PUT",
                   f"{CS}/user/{q(mxid)}/rooms/{q(room_id)}/account_data/{q(event_type)}", body)


# ------------------------------------------------------------------------------------ events

def messages(room_id: str, direction: str, limit: int, *, from_: str | None = None,
             to: str | None = None, filter_: str | None = None) -> Request:
    return Request("GET", _query(f"{CS}/rooms/{q(room_id)}/messages", {
        "dir": direction, "limit": limit, "from": from_, "to": to, "filter": filter_}))


def event(room_id: str, event_id: str) -> Request:
    return Request("GET", f"{CS}/rooms/{q(room_id)}/event/{q(event_id)}")


def context(room_id: str, event_id: str) -> Request:
    return Request("GET", _query(f"{CS}/rooms/{q(room_id)}/context/{q(event_id)}", {"limit": 0}))


def timestamp_to_event(room_id: str, ts: int, direction: str) -> Request:
    return Request("GET", _query(f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event",
                                 {"ts": ts, "dir": direction}))


def send_message(room_id: str, txn: str, content: dict[str, Any]) -> Request:
    return Request("PUT", f"{CS}/rooms/{q(room_id)}/send/m.room.message/{q(txn)}", content)


def send_event(room_id: str, event_type: str, txn: str, content: dict[str, Any]) -> Request:
    return Request("PUT", f"{CS}/rooms/{q(room_id)}/send/{q(event_type)}/{q(txn)}", content)


def relations(room_id: str, event_id: str, rel_type: str, event_type: str) -> Request:
    """The events relating to ``event_id`` by ``rel_type`` (newest first)."""
    return Request("GET", _query(f"/_matrix/client/v1/rooms/{q(room_id)}/relations/"
                                 f"{q(event_id)}/{q(rel_type)}/{q(event_type)}", {"limit": 100}))


def tags(mxid: str, room_id: str) -> Request:
    return Request("GET", f"{CS}/user/{q(mxid)}/rooms/{q(room_id)}/tags")


def tag(mxid: str, room_id: str, name: str, content: dict[str, Any] | None) -> Request:
    """PUT a room tag with its ``content``, or (None) DELETE it."""
    path = f"{CS}/user/{q(mxid)}/rooms/{q(room_id)}/tags/{q(name)}"
    return Request("DELETE", path) if content is None else Request("PUT", path, content)


def redact(room_id: str, event_id: str, txn: str, body: dict[str, Any]) -> Request:
    return Request("PUT", f"{CS}/rooms/{q(room_id)}/redact/{q(event_id)}/{q(txn)}", body)


def send_to_device(event_type: str, txn: str, contents: dict[str, dict[str, Any]]) -> Request:
    """To-device events of ``event_type``: to every device of each user, that user's content."""
    return Request("PUT", f"{CS}/sendToDevice/{q(event_type)}/{q(txn)}",
                   {"messages": {user: {"*": content} for user, content in contents.items()}})


def read_markers(room_id: str, event_id: str) -> Request:
    return Request("POST", f"{CS}/rooms/{q(room_id)}/read_markers",
                   {"m.fully_read": event_id, "m.read": event_id})


# ------------------------------------------------------------------------------------- media

def upload(filename: str) -> Request:
    """The upload's path; the file's bytes go as the raw content."""
    return Request("POST", _query("/_matrix/media/v3/upload", {"filename": filename}))


def split_mxc(mxc: str) -> tuple[str, str] | None:
    """(server, media id) of an ``mxc://server/id`` URL; None when it is not one."""
    if not mxc.startswith("mxc://"):
        return None
    server, _, media = mxc[6:].partition("/")
    if not server or not media or "/" in media:
        return None
    return server, media


def download(server: str, media: str) -> Request:
    return Request("GET", f"{MEDIA}/download/{q(server)}/{q(media)}")


def thumbnail(server: str, media: str) -> Request:
    return Request("GET", _query(f"{MEDIA}/thumbnail/{q(server)}/{q(media)}", {
        "width": THUMB_SIZE, "height": THUMB_SIZE, "method": "scale"}))
