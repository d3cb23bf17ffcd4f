"""MatrixAdapter: imstore's `SyncAdapter` and `Transport` over the Matrix client-server API.

Rules kept here (the mapping itself is in `_mapping`, the HTTP in `_api`):
- one access token and one device for the adapter's life: a retried send reuses the message's
  local id as the Matrix transaction id, so the homeserver answers a retry with the first event;
- the connection state is the ``/sync`` loop's: a failed or timed-out sync is RECONNECTING until
  a sync succeeds again; `close` (or a revoked token) is DISCONNECTED;
- a ``limited`` sync timeline is back-filled with ``/messages`` down to the previous sync position,
  so nothing sent while this device was away is missed; the first sync of a session delivers only
  what this user has not read (the events after its own read receipt);
- the handler hears messages before edits, recalls and receipts of the same sync batch;
- history cursors are Matrix pagination tokens, which stay valid while the room grows.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import mimetypes
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import httpx

from ...errors import ErrorCode, IMError
from ...message import (
    Body,
    ChatType,
    CmdBody,
    Conversation,
    CursorResult,
    Direction,
    FetchOptions,
    GroupReadAck,
    Message,
    MessageStatus,
    MessageType,
    now_ms,
)
from .. import (
    ConnectionState,
    ProgressFn,
    RemoteFile,
    SendResult,
    TransportHandler,
    check_page_size,
    check_remove_args,
)
from . import _mapping as mp
from ._api import Api, MatrixError, q, register_with_secret

__all__ = ["MatrixAdapter"]

log = logging.getLogger("imstore.matrix")
CS = "/_matrix/client/v3"
MEDIA = "/_matrix/client/v1/media"
THUMB_SIZE = 320
_MESSAGES_FILTER = json.dumps({"types": ["m.room.message"], "lazy_load_members": True})
_INVITES_FILTER = json.dumps({
    "presence": {"types": []}, "account_data": {"types": []},
    "room": {"timeline": {"limit": 0}, "state": {"types": []}, "ephemeral": {"types": []},
             "account_data": {"types": []}}})


def _now() -> int:
    return time.time_ns() // 1_000_000


def _enc(kind: str, *parts: object) -> str:
    raw = json.dumps([kind, *parts]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _dec(cursor: str, kind: str) -> list[Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, list) or data[0] != kind:
            raise ValueError(cursor)
        return data[1:]
    except (ValueError, TypeError, IndexError) as exc:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"cursor {cursor!r} was not made by this adapter for {kind}; pass None to "
                      "start again") from exc


class MatrixAdapter:
    """One Matrix account and device, as a `SyncAdapter` and a `Transport`.

    Create it with `MatrixAdapter.login`; hand it to `ChatClient` (it serves as both protocols);
    `close` it when done. ``user_id`` is the imstore user id (the escaped localpart, see
    docs/adapters.md); open the store with it.
    """

    def __init__(self, api: Api, http: httpx.AsyncClient, mxid: str, device_id: str, *,
                 poll_timeout: float = 30.0, timeline_limit: int = 50,
                 recall_window_ms: int = 120_000) -> None:
        self.api = api
        self._http = http
        self.mxid = mxid
        self.server_name = mxid.partition(":")[2]
        self.user_id = mp.from_mxid(mxid, self.server_name)
        self.device_id = device_id
        self.poll_timeout = poll_timeout
        self.timeline_limit = timeline_limit
        self.recall_window_ms = recall_window_ms
        self.state = ConnectionState.CONNECTED
        self.handler: TransportHandler | None = None
        self.since: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._paused = False
        self._synced = asyncio.Event()
        self._rooms: dict[str, mp.RoomInfo] = {}
        self._by_conv: dict[tuple[ChatType, str], str] = {}
        self._direct: dict[str, list[str]] = {}
        self._events: OrderedDict[str, tuple[str, str, int]] = OrderedDict()  # room, sender, ts
        self._receipts: dict[str, dict[str, tuple[str, int, int]]] = {}  # room: user: (ev, ev ts, ts)
        self._group_acked: dict[str, dict[str, int]] = {}  # room: my need_group_ack event: ts
        self._reported: set[tuple[str, str]] = set()  # (event, reader) group acks announced
        self._unread: dict[str, int] = {}
        self._latest: dict[str, int] = {}  # room: newest message time seen
        self._echo: dict[str, asyncio.Future[int]] = {}  # sent events awaiting their sync echo
        self._up_to_ok = False

    # ------------------------------------------------------------------------------ set-up

    @classmethod
    async def login(cls, homeserver_url: str, user: str, password: str, *,
                    device_id: str | None = None, poll_timeout: float = 30.0,
                    timeline_limit: int = 50, recall_window_ms: int = 120_000) -> MatrixAdapter:
        """Log in with a password. ``user`` is an imstore user id (or a full ``@user:server``);
        pass the ``device_id`` of an earlier login to keep that device (and its transaction ids).

        Raises `IMError`: NETWORK_ERROR when the homeserver cannot be reached, INVALID_PARAM
        (M_FORBIDDEN) for a wrong user or password.
        """
        http = httpx.AsyncClient(timeout=httpx.Timeout(poll_timeout + 15.0, connect=5.0))
        api = Api(homeserver_url, http)
        ident = user if user.startswith("@") else mp.escape_localpart(user)
        body: dict[str, Any] = {"type": "m.login.password",
                                "identifier": {"type": "m.id.user", "user": ident},
                                "password": password, "initial_device_display_name": "imstore"}
        if device_id:
            body["device_id"] = device_id
        try:
            answer = await api.request("POST", f"{CS}/login", body=body)
        except BaseException:
            await http.aclose()
            raise
        api.token = answer["access_token"]
        return cls(api, http, answer["user_id"], answer["device_id"], poll_timeout=poll_timeout,
                   timeline_limit=timeline_limit, recall_window_ms=recall_window_ms)

    @staticmethod
    async def register(homeserver_url: str, user: str, password: str, *,
                       shared_secret: str | None = None, admin: bool = False) -> str:
        """Create an account (for tests and the demo); returns its Matrix id. With
        ``shared_secret`` through Synapse's shared-secret admin API, else through open
        registration (``m.login.dummy``) when the server allows it."""
        async with httpx.AsyncClient(timeout=30.0) as http:
            api = Api(homeserver_url, http)
            local = mp.escape_localpart(user)
            if shared_secret is not None:
                answer = await register_with_secret(api, local, password, shared_secret,
                                                    admin=admin)
            else:  # user-interactive auth: the first answer names the session to complete
                body: dict[str, Any] = {"username": local, "password": password,
                                        "inhibit_login": True}
                try:
                    answer = await api.request("POST", f"{CS}/register", body=body)
                except MatrixError as exc:
                    if exc.status != 401 or "session" not in exc.data:
                        raise
                    body["auth"] = {"type": "m.login.dummy", "session": exc.data["session"]}
                    answer = await api.request("POST", f"{CS}/register", body=body)
            return str(answer["user_id"])

    async def close(self) -> None:
        """Stop syncing and close the HTTP client (the device stays; log in again with its id)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._http.aclose()
        self._set_state(ConnectionState.DISCONNECTED)

    async def __aenter__(self) -> MatrixAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _mx(self, user_id: str) -> str:
        return mp.to_mxid(user_id, self.server_name)

    def _im(self, mxid: str) -> str:
        return mp.from_mxid(mxid, self.server_name)

    # --------------------------------------------------------------------------- rooms

    async def create_group(self, group_id: str, members: Sequence[str]) -> str:
        """Create a private room for an imstore group (alias ``#imstore.g.<id>``), inviting
        ``members``; returns the room id. Invited adapters join on their next sync."""
        return await self._create(ChatType.GROUP_CHAT, group_id, members)

    async def create_chat_room(self, room_id: str, members: Sequence[str]) -> str:
        """Create a public room for an imstore chat room; returns the Matrix room id."""
        return await self._create(ChatType.CHAT_ROOM, room_id, members)

    async def _create(self, chat_type: ChatType, key: str, members: Sequence[str],
                      alias: str | None = None) -> str:
        mxids = sorted({self._mx(m) for m in members} | {self.mxid})
        if chat_type == ChatType.CHAT:
            alias = alias or mp.direct_alias(mxids[0], mxids[-1], self.server_name)
        else:
            alias = mp.group_alias(key, self.server_name)
        public = chat_type == ChatType.CHAT_ROOM
        body: dict[str, Any] = {
            "preset": "public_chat" if public else (
                "trusted_private_chat" if chat_type == ChatType.CHAT else "private_chat"),
            "visibility": "private",
            "room_alias_name": alias[1:].rsplit(":", 1)[0],
            "invite": [m for m in mxids if m != self.mxid],
            "is_direct": chat_type == ChatType.CHAT,
            "initial_state": [
                {"type": mp.CONV_STATE, "state_key": "",
                 "content": mp.conv_state(chat_type, key, mxids)},
                {"type": "m.room.history_visibility", "state_key": "",
                 "content": {"history_visibility": "shared"}},
            ],
        }
        if chat_type != ChatType.CHAT:
            body["name"] = key
        try:
            answer = await self.api.request("POST", f"{CS}/createRoom", body=body)
        except MatrixError as exc:
            if exc.errcode == "M_ROOM_IN_USE":
                if chat_type == ChatType.CHAT:
                    raise  # the caller resolves the alias another device just made
                raise IMError(ErrorCode.INVALID_PARAM, f"{key!r} exists already") from exc
            raise
        room_id = str(answer["room_id"])
        conv_id = key if chat_type != ChatType.CHAT else self._im(
            next((m for m in mxids if m != self.mxid), self.mxid))
        self._remember(mp.RoomInfo(room_id, conv_id, chat_type))
        if chat_type == ChatType.CHAT:
            await self._add_direct(mxids[0] if mxids[0] != self.mxid else mxids[-1], room_id)
        return room_id

    def _remember(self, info: mp.RoomInfo) -> None:
        self._rooms[info.room_id] = info
        self._by_conv[(info.chat_type, info.conv_id)] = info.room_id

    def _forget(self, room_id: str) -> None:
        info = self._rooms.pop(room_id, None)
        if info is not None:
            self._by_conv.pop((info.chat_type, info.conv_id), None)

    async def _add_direct(self, peer: str, room_id: str) -> None:
        rooms = self._direct.setdefault(peer, [])
        if room_id in rooms:
            return
        rooms.append(room_id)
        await self.api.request("PUT", f"{CS}/user/{q(self.mxid)}/account_data/m.direct",
                               body=self._direct)

    async def join(self, conv_id: str, chat_type: ChatType) -> str:
        """Join the room of a conversation this user was invited to (or a public chat room);
        returns the room id. Sends and history fetches join by themselves; tests call this to
        be sure live messages reach a new member."""
        room = await self._room_for(conv_id, ChatType(chat_type), create=False)
        if room is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no {ChatType(chat_type).name} {conv_id!r} on the server")
        return room

    async def _room_for(self, conv_id: str, chat_type: ChatType, *, create: bool) -> str | None:
        """The joined room of a conversation: cached, by alias (joining it), or created."""
        room = self._by_conv.get((chat_type, conv_id))
        if room is not None:
            return room
        if chat_type == ChatType.CHAT:
            alias = mp.direct_alias(self.mxid, self._mx(conv_id), self.server_name)
        else:
            alias = mp.group_alias(conv_id, self.server_name)
        for _ in range(3):
            try:
                found = await self.api.request("GET", f"{CS}/directory/room/{q(alias)}")
            except MatrixError as exc:
                if exc.status != 404:
                    raise
                if not create or chat_type != ChatType.CHAT:
                    return None
                try:
                    return await self._create(chat_type, conv_id, [conv_id], alias)
                except MatrixError as again:
                    if again.errcode == "M_ROOM_IN_USE":
                        continue  # the peer made it at the same moment: resolve it
                    if again.status == 404 or again.errcode == "M_NOT_FOUND":
                        raise IMError(ErrorCode.INVALID_PARAM,
                                      f"there is no user {conv_id!r} on the server") from again
                    raise
            room = str(found["room_id"])
            try:
                await self.api.request("POST", f"{CS}/join/{q(room)}", body={})
            except MatrixError as exc:
                raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                              f"{self.user_id!r} cannot join the room of {conv_id!r}: "
                              f"{exc.description}") from exc
            self._remember(mp.RoomInfo(room, conv_id, chat_type))
            if chat_type == ChatType.CHAT:
                await self._add_direct(self._mx(conv_id), room)
            return room
        return None

    async def _info(self, room_id: str, state: list[dict[str, Any]] | None = None) -> mp.RoomInfo:
        info = self._rooms.get(room_id)
        if info is not None:
            return info
        content: dict[str, Any] | None = None
        for ev in state or ():
            if ev.get("type") == mp.CONV_STATE and ev.get("state_key") == "":
                content = ev.get("content")
        if content is None:
            try:
                content = await self.api.request(
                    "GET", f"{CS}/rooms/{q(room_id)}/state/{q(mp.CONV_STATE)}/")
            except MatrixError:
                content = None
        peer = next((p for p, rooms in self._direct.items() if room_id in rooms), None)
        info = mp.room_info(room_id, content, self.mxid, self.server_name, peer)
        self._remember(info)
        return info

    # ---------------------------------------------------------------------------- the sync loop

    def attach(self, handler: TransportHandler) -> None:
        self.handler = handler
        fn = getattr(handler, "on_conversation_read", None)
        try:
            self._up_to_ok = fn is not None and "up_to" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            self._up_to_ok = False
        self._ensure_sync()

    def _ensure_sync(self) -> None:
        if self._closed or self._paused or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # started by the next async call
        self._task = loop.create_task(self._sync_loop(), name=f"matrix-sync-{self.user_id}")

    async def wait_synced(self, timeout: float = 30.0) -> None:
        """Wait until the sync loop has completed one sync since it (re)started."""
        self._ensure_sync()
        await asyncio.wait_for(self._synced.wait(), timeout)

    def pause(self) -> None:
        """Stop syncing as if the device went offline (RECONNECTING); `resume` goes on from the
        same position, back-filling what was missed."""
        self._paused = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._set_state(ConnectionState.RECONNECTING)

    def resume(self) -> None:
        self._paused = False
        self._synced = asyncio.Event()
        self._ensure_sync()

    def _set_state(self, state: ConnectionState) -> None:
        if state == self.state:
            return
        self.state = state
        self._emit("on_connection_state_changed", state)

    def _emit(self, name: str, *args: Any) -> None:
        fn = getattr(self.handler, name, None) if self.handler is not None else None
        if fn is None:
            if self.handler is not None:
                log.warning("the handler has no %s; dropped %r", name, args)
            return
        try:
            fn(*args)
        except Exception:  # the handler's bug must not stop the sync loop
            log.exception("handler %s failed", name)

    async def _join_invites(self, rooms: dict[str, Any]) -> None:
        for room_id in (rooms.get("invite") or {}):
            try:
                await self.api.request("POST", f"{CS}/join/{q(room_id)}", body={})
            except MatrixError as exc:
                log.warning("could not join %s: %s", room_id, exc)

    async def _accept_pending_invites(self) -> None:
        """Join the rooms this user was invited to since the sync loop's last answer, so a
        conversation a peer opened a moment ago is listed now rather than after the loop's next
        turn (a one-shot ``/sync`` that returns invites and nothing else; the loop's position is
        not moved, and joining twice is harmless)."""
        params = {"filter": _INVITES_FILTER, "timeout": 0, "set_presence": "offline"}
        if self.since:
            params["since"] = self.since
        answer = await self.api.request("GET", f"{CS}/sync", params=params)
        await self._join_invites(answer.get("rooms") or {})

    def _filter(self) -> str:
        return json.dumps({
            "presence": {"types": []},
            "account_data": {"types": ["m.direct"]},
            "room": {"timeline": {"limit": self.timeline_limit},
                     "state": {"lazy_load_members": True},
                     "ephemeral": {"types": ["m.receipt"]},
                     "account_data": {"types": []}},
        })

    async def _sync_loop(self) -> None:
        delay = 0.1
        filt = self._filter()
        while not self._closed:
            params = {"filter": filt, "set_presence": "offline",
                      "timeout": int(self.poll_timeout * 1000) if self.since else 0}
            if self.since:
                params["since"] = self.since
            try:
                answer = await self.api.request("GET", f"{CS}/sync", params=params,
                                                timeout=self.poll_timeout + 10.0)
                await self._process(answer, initial=self.since is None)
            except asyncio.CancelledError:
                raise
            except IMError as exc:
                if exc.code == ErrorCode.USER_NOT_LOGIN:
                    log.error("the homeserver refused the access token: %s", exc)
                    self._set_state(ConnectionState.DISCONNECTED)
                    return
                log.info("sync failed (%s); retrying in %.1f s", exc, delay)
                self._set_state(ConnectionState.RECONNECTING)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception:
                log.exception("a sync could not be processed; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.since = str(answer["next_batch"])
            delay = 0.1
            self._set_state(ConnectionState.CONNECTED)
            self._synced.set()

    async def _process(self, answer: dict[str, Any], *, initial: bool) -> None:
        for ev in (answer.get("account_data") or {}).get("events", []):
            if ev.get("type") == "m.direct" and isinstance(ev.get("content"), dict):
                self._direct = {k: list(v) for k, v in ev["content"].items()
                                if isinstance(v, list)}
        rooms = answer.get("rooms") or {}
        await self._join_invites(rooms)
        for room_id in (rooms.get("leave") or {}):
            self._forget(room_id)
        messages: list[Message] = []
        edits: list[Message] = []
        recalls: list[str] = []
        receipts: list[tuple[str, dict[str, Any]]] = []
        for room_id, room in (rooms.get("join") or {}).items():
            timeline = room.get("timeline") or {}
            events = list(timeline.get("events") or [])
            state = list((room.get("state") or {}).get("events") or []) + events
            info = await self._info(room_id, state)
            counts = room.get("unread_notifications") or {}
            self._unread[room_id] = int(counts.get("notification_count") or 0)
            eph = [e for e in (room.get("ephemeral") or {}).get("events", [])
                   if e.get("type") == "m.receipt"]
            if initial:
                for e in eph:  # learn the read positions first: they decide what is unread
                    await self._note_receipts(room_id, e.get("content") or {})
            elif timeline.get("limited") and timeline.get("prev_batch") and self.since:
                events = await self._backfill(room_id, timeline["prev_batch"], self.since) + events
            my_read = self._read_ts(room_id)
            for ev in events:
                self._see(room_id, ev)
                rid = mp.redacted_id(ev)
                if rid is not None:
                    if not initial:
                        recalls.append(rid)
                    continue
                rep = mp.replacement(ev)
                if rep is not None:
                    if not initial and ev.get("sender") != self.mxid:
                        edited = self._edited(info, rep[0], rep[1], ev)
                        if edited is not None:
                            edits.append(edited)
                    continue
                if ev.get("sender") == self.mxid:
                    continue
                msg = mp.event_to_message(ev, info, self.mxid, self.server_name)
                if msg is None:
                    continue
                if initial and my_read is not None and (msg.server_time or 0) <= my_read:
                    continue
                messages.append(msg)
            if not initial:
                receipts += [(room_id, e.get("content") or {}) for e in eph]
        for ev in (answer.get("to_device") or {}).get("events", []):
            self._to_device(ev, messages)
        if messages:
            self._emit("on_messages", messages)
        if edits:
            self._emit("on_messages_edited", edits)
        if recalls:
            self._emit("on_messages_recalled", recalls)
        for room_id, content in receipts:
            await self._note_receipts(room_id, content, announce=True)

    async def _backfill(self, room_id: str, token: str, until: str) -> list[dict[str, Any]]:
        """The events between the previous sync position and a limited timeline, oldest first."""
        got: list[dict[str, Any]] = []
        for _ in range(40):  # at most 40 pages of 100: past that the history API fills the gap
            page = await self.api.request("GET", f"{CS}/rooms/{q(room_id)}/messages", params={
                "dir": "b", "from": token, "to": until, "limit": 100})
            got.extend(page.get("chunk") or [])
            token = page.get("end") or ""
            if not token or not page.get("chunk"):
                break
        got.reverse()
        return got

    def _see(self, room_id: str, ev: dict[str, Any]) -> None:
        eid = ev.get("event_id")
        if not isinstance(eid, str):
            return
        ts = int(ev.get("origin_server_ts") or 0)
        self._events[eid] = (room_id, str(ev.get("sender", "")), ts)
        waiting = self._echo.pop(eid, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(ts)
        if ev.get("type") == "m.room.message" and ts > self._latest.get(room_id, 0):
            self._latest[room_id] = ts
        if len(self._events) > 20_000:
            self._events.popitem(last=False)
        content = ev.get("content") or {}
        ns = content.get(mp.NS) if isinstance(content, dict) else None
        if (ev.get("sender") == self.mxid and isinstance(ns, dict) and ns.get("need_group_ack")
                and mp.replacement(ev) is None):
            self._group_acked.setdefault(room_id, {})[eid] = ts

    async def _event(self, room_id: str | None, event_id: str) -> tuple[str, str, int]:
        """(room, sender, ts) of an event, from the cache or the server."""
        known = self._events.get(event_id)
        if known is not None:
            return known
        if room_id is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {event_id!r} is known here")
        try:
            ev = await self.api.request("GET", f"{CS}/rooms/{q(room_id)}/event/{q(event_id)}")
        except MatrixError as exc:
            raise IMError(ErrorCode.MESSAGE_INVALID,
                          f"no message {event_id!r} on the server") from exc
        self._see(room_id, ev)
        return self._events[event_id]

    async def _event_time(self, room_id: str, event_id: str) -> int:
        """The server time of an event this device just sent: from the sync loop's echo when it
        comes within moments (it usually has, the long-poll answers as soon as the event is
        stored), else from ``GET /event``."""
        known = self._events.get(event_id)
        if known is None and self._task is not None and not self._task.done():
            fut = self._echo.get(event_id)
            if fut is None:
                fut = self._echo[event_id] = asyncio.get_running_loop().create_future()
            try:
                return await asyncio.wait_for(asyncio.shield(fut), 0.25)
            except TimeoutError:
                pass
            finally:
                self._echo.pop(event_id, None)
        return (await self._event(room_id, event_id))[2]

    def _edited(self, info: mp.RoomInfo, original: str, new: dict[str, Any],
                ev: dict[str, Any]) -> Message | None:
        got = mp.body_from_content(new)
        if got is None:
            return None
        mtype, body = got
        known = self._events.get(original)
        sender = self._im(known[1]) if known else self._im(str(ev.get("sender", "")))
        ts = int(ev.get("origin_server_ts") or 0)
        msg = Message(msg_id=original, conv_id=info.conv_id, chat_type=info.chat_type, type=mtype,
                      sender=sender, to=info.conv_id if info.chat_type != ChatType.CHAT
                      else self.user_id, body=body, direction=Direction.RECEIVE,
                      status=MessageStatus.SUCCESS, local_time=known[2] if known else ts,
                      server_time=known[2] if known else None)
        mp.set_optional(msg, "edited_at", ts)
        return msg

    def _read_ts(self, room_id: str) -> int | None:
        mine = self._receipts.get(room_id, {}).get(self.mxid)
        return mine[1] if mine else None

    async def _note_receipts(self, room_id: str, content: dict[str, Any], *,
                             announce: bool = False) -> None:
        info = await self._info(room_id)
        for event_id, kinds in content.items():
            for kind in ("m.read", "m.read.private"):
                for reader, data in ((kinds or {}).get(kind) or {}).items():
                    try:
                        _, sender, ev_ts = await self._event(room_id, event_id)
                    except IMError:
                        continue
                    ts = int((data or {}).get("ts") or _now())
                    old = self._receipts.setdefault(room_id, {}).get(reader)
                    if old is not None and old[1] >= ev_ts:
                        continue  # read positions never go back
                    self._receipts[room_id][reader] = (event_id, ev_ts, ts)
                    if announce and reader != self.mxid:
                        self._announce_read(info, reader, event_id, sender, ev_ts, ts)

    def _announce_read(self, info: mp.RoomInfo, reader: str, event_id: str, sender: str,
                       ev_ts: int, ts: int) -> None:
        if info.chat_type == ChatType.CHAT:
            if sender == self.mxid:
                self._emit("on_read_acks", [event_id])
            if self._up_to_ok:
                self._emit("on_conversation_read", info.conv_id, self._im(reader), ev_ts)
            elif ev_ts >= self._latest.get(info.room_id, 0):
                # a handler without ``up_to`` takes it as "read everything": only say so when
                # the receipt is on the newest message known here
                self._emit("on_conversation_read", info.conv_id, self._im(reader))
            return
        acks = []
        for eid, sent in sorted(self._group_acked.get(info.room_id, {}).items(),
                                key=lambda kv: kv[1]):
            if sent <= ev_ts and (eid, reader) not in self._reported:
                self._reported.add((eid, reader))
                acks.append(GroupReadAck(eid, info.conv_id, self._im(reader), ts,
                                         f"R{eid}:{reader}"))
        if acks:
            self._emit("on_group_read_acks", acks)

    def _to_device(self, ev: dict[str, Any], messages: list[Message]) -> None:
        content = ev.get("content") or {}
        sender = str(ev.get("sender", ""))
        if ev.get("type") == mp.RECEIPT_EVENT and content.get("kind") == "delivered":
            ids = [i for i in content.get("event_ids", []) if isinstance(i, str)]
            if ids:
                self._emit("on_delivery_acks", ids)
        elif ev.get("type") == mp.CMD_EVENT:
            try:
                chat_type = ChatType[str(content.get("chat_type", "CHAT"))]
            except KeyError:
                return
            conv = self._im(sender) if chat_type == ChatType.CHAT else str(content.get("to", ""))
            ts = int(content.get("ts") or _now())
            messages.append(Message(
                msg_id=str(content.get("local_id") or f"cmd-{ts}"), conv_id=conv,
                chat_type=chat_type, type=MessageType.CMD, sender=self._im(sender),
                to=self.user_id if chat_type == ChatType.CHAT else conv,
                body=CmdBody(str(content.get("action", "")), dict(content.get("params") or {})),
                direction=Direction.RECEIVE, status=MessageStatus.SUCCESS, local_time=ts,
                server_time=ts, ext=dict(content.get("ext") or {})))

    # ------------------------------------------------------------------------------ Transport

    def _require_connection(self) -> None:
        if self._closed or self.state == ConnectionState.DISCONNECTED:
            raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                          f"the Matrix connection of {self.user_id!r} is closed; log in again")

    async def _net(self, coro: Any) -> Any:
        """Await a request; a network failure makes the state RECONNECTING and raises 510."""
        try:
            return await coro
        except IMError as exc:
            if exc.code == ErrorCode.NETWORK_ERROR:
                self._set_state(ConnectionState.RECONNECTING)
                self._ensure_sync()
                raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                              f"the homeserver cannot be reached: {exc.description}") from exc
            raise

    async def send(self, message: Message) -> SendResult:
        """PUT the message with its local id as the transaction id (a retry gets the first
        event back); returns the event id and the homeserver's timestamp."""
        self._require_connection()
        self._ensure_sync()
        chat_type = ChatType(message.chat_type)
        if message.type == MessageType.CMD:
            sent: SendResult = await self._net(self._send_cmd(message, chat_type))
            return sent
        for attempt in range(2):
            room = await self._net(self._room_for(message.to, chat_type, create=True))
            if room is None:
                raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                              f"there is no {chat_type.name} {message.to!r} on the server")
            try:
                answer = await self._net(self.api.request(
                    "PUT", f"{CS}/rooms/{q(room)}/send/m.room.message/{q(message.msg_id)}",
                    body=mp.message_content(message)))
                break
            except MatrixError as exc:
                if exc.status != 403 or attempt:
                    raise
                self._forget(room)  # left or deleted since it was cached: resolve it again
        event_id = str(answer["event_id"])
        ts = await self._net(self._event_time(room, event_id))
        if message.need_group_ack and chat_type == ChatType.GROUP_CHAT:
            self._group_acked.setdefault(room, {})[event_id] = ts
        return SendResult(event_id, ts)

    async def _send_cmd(self, message: Message, chat_type: ChatType) -> SendResult:
        assert isinstance(message.body, CmdBody)
        if chat_type == ChatType.CHAT:
            targets = [self._mx(message.to)]
        else:
            room = await self._room_for(message.to, chat_type, create=False)
            if room is None:
                raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                              f"there is no {chat_type.name} {message.to!r} on the server")
            members = await self.api.request("GET", f"{CS}/rooms/{q(room)}/joined_members")
            targets = [m for m in members.get("joined", {}) if m != self.mxid]
        ts = _now()
        content = {"action": message.body.action, "params": message.body.params,
                   "local_id": message.msg_id, "chat_type": chat_type.name, "to": message.to,
                   "ext": message.ext, "ts": ts}
        await self._to_device_send(mp.CMD_EVENT, message.msg_id, targets, content)
        return SendResult(message.msg_id, ts)

    async def _to_device_send(self, event_type: str, txn: str, targets: list[str],
                              content: dict[str, Any]) -> None:
        if not targets:
            return
        await self.api.request("PUT", f"{CS}/sendToDevice/{q(event_type)}/{q(txn)}",
                               body={"messages": {t: {"*": content} for t in targets}})

    async def reconnect(self) -> None:
        """Check the homeserver answers (``whoami``) and restart the sync loop."""
        if self._closed:
            raise IMError(ErrorCode.SERVER_NOT_REACHABLE, "this adapter is closed; log in again")
        try:
            await self.api.request("GET", f"{CS}/account/whoami", timeout=5.0)
        except IMError as exc:
            raise IMError(ErrorCode.SERVER_NOT_REACHABLE,
                          f"the homeserver cannot be reached: {exc.description}") from exc
        self._paused = False
        self._ensure_sync()
        self._set_state(ConnectionState.CONNECTED)

    async def send_delivery_ack(self, message: Message) -> None:
        """A to-device event to the sender's devices (Matrix has no delivery receipts)."""
        self._require_connection()
        if not message.sender or message.sender == self.user_id:
            return
        await self._net(self._to_device_send(
            mp.RECEIPT_EVENT, f"d{message.msg_id}", [self._mx(message.sender)],
            {"kind": "delivered", "event_ids": [message.msg_id]}))

    async def _receipt(self, room_id: str, event_id: str) -> None:
        await self._net(self.api.request("POST", f"{CS}/rooms/{q(room_id)}/read_markers", body={
            "m.fully_read": event_id, "m.read": event_id}))
        try:
            _, _, ev_ts = await self._event(room_id, event_id)
        except IMError:
            return
        mine = self._receipts.setdefault(room_id, {}).get(self.mxid)
        if mine is None or mine[1] < ev_ts:
            self._receipts[room_id][self.mxid] = (event_id, ev_ts, _now())

    async def _room_of(self, message: Message) -> str:
        known = self._events.get(message.msg_id)
        if known is not None:
            return known[0]
        room = await self._room_for(message.conv_id, ChatType(message.chat_type), create=False)
        if room is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no conversation {message.conv_id!r} on the server")
        return room

    async def send_read_ack(self, message: Message) -> None:
        """An ``m.read`` receipt on the message: in Matrix it means "read up to here"."""
        self._require_connection()
        await self._receipt(await self._room_of(message), message.msg_id)

    async def send_conversation_ack(self, conv_id: str, chat_type: ChatType,
                                    up_to: int | None = None) -> None:
        """An ``m.read`` receipt (and the ``m.fully_read`` marker) on the newest event, or on the
        newest at or before ``up_to`` (ms)."""
        self._require_connection()
        room = await self._room_for(conv_id, ChatType(chat_type), create=False)
        if room is None:
            return
        if up_to is None:
            page = await self._net(self.api.request(
                "GET", f"{CS}/rooms/{q(room)}/messages",
                params={"dir": "b", "limit": 1, "filter": _MESSAGES_FILTER}))
            chunk = page.get("chunk") or []
            if not chunk:
                return
            self._see(room, chunk[0])
            event_id = str(chunk[0]["event_id"])
        else:
            found = await self._at_time(room, up_to, "b")
            if found is None:
                return
            event_id = found
        await self._receipt(room, event_id)

    async def send_group_read_ack(self, message: Message) -> None:
        """An ``m.read`` receipt on a group message sent with ``need_group_ack``."""
        self._require_connection()
        if ChatType(message.chat_type) != ChatType.GROUP_CHAT or not message.need_group_ack:
            raise IMError(ErrorCode.INVALID_PARAM,
                          "group read receipts are for group messages sent with need_group_ack")
        await self._receipt(await self._room_of(message), message.msg_id)

    async def fetch_group_read_acks(self, msg_id: str, cursor: str | None, limit: int
                                    ) -> CursorResult[GroupReadAck]:
        """The members whose read receipt is at or after the message (emulated: Matrix keeps
        one "read up to here" position per member), in the order they read."""
        check_page_size(limit)
        known = self._events.get(msg_id)
        if known is None:  # not seen in this session: look for it in the joined rooms
            joined = await self.api.request("GET", f"{CS}/joined_rooms")
            for room in joined.get("joined_rooms", []):
                try:
                    known = await self._event(room, msg_id)
                    break
                except IMError:
                    continue
        if known is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {msg_id!r} on the server")
        room, sender, ts = known
        info = await self._info(room)
        readers = sorted(((u, r) for u, r in self._receipts.get(room, {}).items()
                          if u != sender and r[1] >= ts), key=lambda ur: ur[1][2])
        start = int(_dec(cursor, "a")[0]) if cursor else 0
        page = readers[start:start + limit]
        acks = [GroupReadAck(msg_id, info.conv_id, self._im(u), r[2], f"R{msg_id}:{u}")
                for u, r in page]
        return CursorResult(acks, _enc("a", start + limit) if start + limit < len(readers)
                            else None)

    async def recall_message(self, message: Message) -> int:
        """Redact one of this user's messages within the recall window (emulated: Matrix has no
        window); returns the redaction's server time."""
        self._require_connection()
        if message.sender not in (None, self.user_id):
            raise IMError(ErrorCode.INVALID_PARAM, "only your own messages can be recalled")
        room = await self._room_of(message)
        _, _, ts = await self._event(room, message.msg_id)
        if _now() - ts > self.recall_window_ms:
            raise IMError(ErrorCode.MESSAGE_EXPIRED,
                          f"messages can be recalled for {self.recall_window_ms // 1000} s only")
        answer = await self._net(self.api.request(
            "PUT", f"{CS}/rooms/{q(room)}/redact/{q(message.msg_id)}/{q('r' + message.msg_id)}",
            body={"reason": "recalled", f"{mp.NS}.type": MessageType(message.type).name}))
        _, _, when = await self._event(room, str(answer["event_id"]))
        return when

    async def edit_message(self, message: Message, body: Body) -> int:
        """Replace a TEXT or CUSTOM message's content with an ``m.replace`` edit; returns the
        edit's server time."""
        self._require_connection()
        mtype = MessageType(message.type)
        if mtype not in (MessageType.TEXT, MessageType.CUSTOM):
            raise IMError(ErrorCode.INVALID_PARAM, "only text and custom messages can be edited")
        if message.sender not in (None, self.user_id):
            raise IMError(ErrorCode.INVALID_PARAM, "only your own messages can be edited")
        room = await self._room_of(message)
        txn = f"e{message.msg_id}.{now_ms()}"
        answer = await self._net(self.api.request(
            "PUT", f"{CS}/rooms/{q(room)}/send/m.room.message/{q(txn)}",
            body=mp.edit_content(message.msg_id, mtype, body)))
        _, _, when = await self._event(room, str(answer["event_id"]))
        return when

    async def upload(self, path: str, *, progress: ProgressFn | None = None) -> RemoteFile:
        """Upload to the media repository; images get the server's thumbnails."""
        self._require_connection()
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise IMError(ErrorCode.FILE_NOT_FOUND, f"cannot read {path!r}: {exc}") from exc
        name = os.path.basename(path)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if progress:
            progress(0, len(data))
        try:
            answer = await self._net(self.api.request(
                "POST", "/_matrix/media/v3/upload", params={"filename": name}, content=data,
                headers={"Content-Type": ctype}))
        except IMError as exc:
            if exc.code in (ErrorCode.FILE_TOO_LARGE, ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED):
                raise
            raise IMError(ErrorCode.FILE_UPLOAD_FAILED,
                          f"the homeserver refused {name!r}: {exc.description}") from exc
        if progress:
            progress(len(data), len(data))
        url = str(answer["content_uri"])
        return RemoteFile(url=url, thumbnail_url=url + mp.THUMB_MARK
                          if ctype.startswith("image/") else None)

    async def download(self, url: str, dest: str, *, progress: ProgressFn | None = None) -> None:
        """Download an ``mxc://`` URL (authenticated media); ``#thumbnail`` asks the server for
        its thumbnail, falling back to the file when it cannot make one."""
        self._require_connection()
        thumb = url.endswith(mp.THUMB_MARK)
        mxc = url.removesuffix(mp.THUMB_MARK)
        if not mxc.startswith("mxc://"):
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED, f"{url!r} is not an mxc:// URL")
        server, _, media = mxc[6:].partition("/")
        path = f"{MEDIA}/download/{q(server)}/{q(media)}"
        resp = None
        if thumb:
            try:
                resp = await self.api.request(
                    "GET", f"{MEDIA}/thumbnail/{q(server)}/{q(media)}", raw=True,
                    params={"width": THUMB_SIZE, "height": THUMB_SIZE, "method": "scale"})
            except MatrixError:
                resp = None
        try:
            if resp is None:
                resp = await self._net(self.api.request("GET", path, raw=True))
        except IMError as exc:
            if exc.code == ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED:
                raise
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED,
                          f"cannot download {url!r}: {exc.description}") from exc
        data = resp.content
        tmp = dest + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
        if progress:
            progress(len(data), len(data))

    async def set_retention(self, conv_id: str, chat_type: ChatType, max_lifetime_ms: int) -> None:
        """The room's retention policy (``m.room.retention``): Synapse, with retention enabled,
        stops serving events older than ``max_lifetime_ms`` at once and purges them on its purge
        job. The plan-wide default is the homeserver's ``retention.default_policy``. Needs the
        power to send state in the room (the creator has it)."""
        room = await self._room_for(conv_id, ChatType(chat_type), create=False)
        if room is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{self.user_id!r} has no conversation {conv_id!r} on the server")
        await self.api.request("PUT", f"{CS}/rooms/{q(room)}/state/m.room.retention/",
                               body={"max_lifetime": int(max_lifetime_ms)})

    # ---------------------------------------------------------------------------- SyncAdapter

    async def _hidden(self, room_id: str) -> dict[str, Any]:
        try:
            got: dict[str, Any] = await self.api.request(
                "GET", f"{CS}/user/{q(self.mxid)}/rooms/{q(room_id)}/account_data/{mp.HIDDEN}")
        except MatrixError as exc:
            if exc.status == 404:
                return {}
            raise
        return got

    async def _put_hidden(self, room_id: str, data: dict[str, Any]) -> None:
        await self.api.request(
            "PUT", f"{CS}/user/{q(self.mxid)}/rooms/{q(room_id)}/account_data/{mp.HIDDEN}",
            body=data)

    @staticmethod
    def _is_hidden(msg: Message, hidden: dict[str, Any]) -> bool:
        ids = hidden.get("ids") or ()
        local = getattr(msg, "local_id", None)
        return (msg.msg_id in ids or (local is not None and local in ids)
                or (msg.server_time or 0) < int(hidden.get("before") or 0))

    async def _read_position(self, room_id: str) -> int | None:
        """The server time of the newest event this user has read in the room."""
        known = self._read_ts(room_id)
        try:
            marker = await self.api.request(
                "GET", f"{CS}/user/{q(self.mxid)}/rooms/{q(room_id)}/account_data/m.fully_read")
            _, _, ts = await self._event(room_id, str(marker["event_id"]))
        except (IMError, KeyError):
            return known
        return max(ts, known or 0)

    async def _at_time(self, room_id: str, ts: int, direction: str) -> str | None:
        try:
            found = await self.api.request(
                "GET", f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event",
                params={"ts": ts, "dir": direction})
        except MatrixError as exc:
            if exc.status == 404:
                return None
            raise
        return str(found["event_id"])

    async def fetch_history(self, conv_id: str, chat_type: ChatType, cursor: str | None,
                            limit: int, options: FetchOptions) -> CursorResult[Message]:
        check_page_size(limit)
        self._ensure_sync()
        chat_type = ChatType(chat_type)
        room = await self._room_for(conv_id, chat_type, create=False)
        if room is None:
            if chat_type == ChatType.CHAT:
                return CursorResult([], None)
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no {chat_type.name} {conv_id!r} on the server")
        info = await self._info(room)
        up = options.direction != Direction.DOWN
        token: str | None = _dec(cursor, "h")[0] if cursor else None
        if token is None:
            edge = options.end_time if up else options.start_time
            if edge is not None:
                event_id = await self._at_time(room, edge, "b" if up else "f")
                if event_id is None:
                    return CursorResult([], None)
                ctx = await self.api.request(
                    "GET", f"{CS}/rooms/{q(room)}/context/{q(event_id)}", params={"limit": 0})
                token = ctx.get("end") if up else ctx.get("start")
        hidden = await self._hidden(room)
        read_ts = await self._read_position(room)
        types = set(options.types) if options.types else None
        sender = self._mx(options.sender) if options.sender else None
        filt = {"types": ["m.room.message"], "lazy_load_members": True}
        if sender:
            filt["senders"] = [sender]
        items: list[Message] = []
        done = False
        for _ in range(20):
            params: dict[str, Any] = {"dir": "b" if up else "f", "limit": limit - len(items),
                                      "filter": json.dumps(filt)}
            if token:
                params["from"] = token
            try:
                page = await self.api.request("GET", f"{CS}/rooms/{q(room)}/messages",
                                              params=params)
            except MatrixError as exc:
                if exc.status == 403 and cursor is None and not items:
                    self._forget(room)  # this user left, or the room was deleted
                    if await self._room_for(conv_id, chat_type, create=False) is None:
                        if chat_type == ChatType.CHAT:
                            return CursorResult([], None)
                        raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                                      f"there is no {chat_type.name} {conv_id!r} on the server"
                                      ) from exc
                    return await self.fetch_history(conv_id, chat_type, cursor, limit, options)
                raise
            chunk = page.get("chunk") or []
            for ev in chunk:
                self._see(room, ev)
                msg = mp.event_to_message(ev, info, self.mxid, self.server_name, history=True,
                                           read_up_to=read_ts)
                if msg is None or self._is_hidden(msg, hidden):
                    continue
                t = msg.server_time or 0
                if up and options.start_time is not None and t < options.start_time:
                    done = True
                    break
                if not up and options.end_time is not None and t > options.end_time:
                    done = True
                    break
                if (options.end_time is not None and t > options.end_time) or (
                        options.start_time is not None and t < options.start_time):
                    continue
                if types is not None and msg.type not in types:
                    continue
                items.append(msg)
            token = page.get("end")
            if done or not token or not chunk:
                done = True
                break
            if len(items) >= limit:
                break
        if up:
            items.reverse()
        return CursorResult(items, None if done else _enc("h", token))

    async def fetch_conversations(self, cursor: str | None, limit: int
                                  ) -> CursorResult[Conversation]:
        """Joined rooms with their newest visible message, newest first (``/joined_rooms`` and
        one ``/messages`` per room; unread counts are the sync's notification counts). Pending
        invites are accepted first, so a chat a peer just opened is on the list."""
        check_page_size(limit)
        self._ensure_sync()
        await self._accept_pending_invites()
        joined = await self.api.request("GET", f"{CS}/joined_rooms")
        rows: list[tuple[int, str, Conversation]] = []
        for room in joined.get("joined_rooms", []):
            info = await self._info(room)
            hidden = await self._hidden(room)
            page = await self.api.request("GET", f"{CS}/rooms/{q(room)}/messages", params={
                "dir": "b", "limit": 20, "filter": _MESSAGES_FILTER})
            read_ts = await self._read_position(room)
            last = None
            for ev in page.get("chunk") or []:
                self._see(room, ev)
                msg = mp.event_to_message(ev, info, self.mxid, self.server_name, history=True,
                                           read_up_to=read_ts)
                if msg is not None and not self._is_hidden(msg, hidden):
                    last = msg
                    break
            if last is None or (last.server_time or 0) <= int(hidden.get("deleted_at") or 0):
                continue
            rows.append((last.server_time or 0, room, Conversation(
                info.conv_id, info.chat_type, self._unread.get(room, 0), last, last.timestamp)))
        rows.sort(key=lambda r: (-r[0], r[1]))
        if cursor:
            ts, rid = _dec(cursor, "c")
            rows = [r for r in rows if (-r[0], r[1]) > (-int(ts), str(rid))]
        page_rows = rows[:limit]
        more = len(rows) > limit
        return CursorResult([c for _, _, c in page_rows],
                            _enc("c", page_rows[-1][0], page_rows[-1][1]) if more else None)

    async def remove_messages(self, conv_id: str, chat_type: ChatType,
                              msg_ids: Sequence[str] | None, before: int | None) -> None:
        """One-way delete: kept in this user's room account data and applied by the adapter."""
        check_remove_args(msg_ids, before)
        room = await self._room_for(conv_id, ChatType(chat_type), create=False)
        if room is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{self.user_id!r} has no conversation {conv_id!r} on the server")
        hidden = await self._hidden(room)
        if msg_ids is not None:
            hidden["ids"] = sorted(set(hidden.get("ids") or ()) | set(msg_ids))
        else:
            hidden["before"] = max(int(hidden.get("before") or 0), int(before or 0))
        await self._put_hidden(room, hidden)

    async def delete_conversation(self, conv_id: str, chat_type: ChatType,
                                  delete_messages: bool) -> None:
        """With ``delete_messages``: Synapse's admin room delete (purge) — for everyone, and only
        for a server admin. Without: the conversation leaves this user's list (room account
        data) and its history stays."""
        room = await self._room_for(conv_id, ChatType(chat_type), create=False)
        if room is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{self.user_id!r} has no conversation {conv_id!r} on the server")
        if not delete_messages:
            hidden = await self._hidden(room)
            hidden["deleted_at"] = _now()
            await self._put_hidden(room, hidden)
            return
        try:
            await self.api.request("DELETE", f"/_synapse/admin/v1/rooms/{q(room)}",
                                   body={"purge": True, "block": False})
        except MatrixError as exc:
            if exc.status in (403, 404) and exc.errcode in ("M_FORBIDDEN", "M_UNRECOGNIZED"):
                raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                              "deleting a conversation for everyone needs a Synapse server "
                              "admin account") from exc
            raise
        self._forget(room)
        alias = (mp.direct_alias(self.mxid, self._mx(conv_id), self.server_name)
                 if ChatType(chat_type) == ChatType.CHAT else mp.group_alias(conv_id,
                                                                            self.server_name))
        try:  # a new conversation with the same id gets a new room
            await self.api.request("DELETE", f"{CS}/directory/room/{q(alias)}")
        except MatrixError:
            pass  # the room delete took it already
