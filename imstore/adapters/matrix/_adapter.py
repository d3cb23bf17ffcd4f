"""MatrixAdapter: imstore's `SyncAdapter` and `Transport` over the Matrix client-server API.

A facade of short methods over parts that each own one thing: `_rooms` (which room is which
conversation), `_sync` (the ``/sync`` loop, the connection state and every handler call it
makes), `_events` (events by id), `_reads` (read positions and receipts), `_history` (history
pages, the conversation list, one-way deletes), `_rich` (reactions, pins, conversation pins and
marks, and the rich `Transport` methods), `_media`, `_delivery` (batched delivery receipts).
`_mapping` turns events into messages and back; `_requests` builds every request and `_api`
sends it. Rules kept here:
- one access token and one device for the adapter's life: a retried send reuses the message's
  local id as the Matrix transaction id, so the homeserver answers a retry with the first event;
- a network failure of a call the client makes is MESSAGE_WEBSOCKET_DISCONNECTED and makes the
  state RECONNECTING (the sync loop brings it back); a closed adapter refuses every call;
- `login` raises only `IMError`, whatever the homeserver answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx

from ...errors import ErrorCode, IMError
from ...lifecycle import check_edit, check_recall, is_mine, now_ms
from ...message import (
    Body,
    ChatType,
    CmdBody,
    Conversation,
    CursorResult,
    FetchOptions,
    GroupReadAck,
    Message,
    MessageType,
)
from .. import (
    RECALL_WINDOW_MS,
    ConnectionState,
    ProgressFn,
    RemoteFile,
    SendResult,
    TransportHandler,
    check_page_size,
)
from . import _mapping as mp
from . import _requests as rq
from ._api import Api, Bounds, MatrixError, need, register_with_secret
from ._delivery import DeliveryAcks
from ._events import EventCache
from ._history import History
from ._link import Link
from ._media import Media
from ._reads import ReadPositions
from ._rich import RichRooms, RichTransport
from ._rooms import Rooms
from ._sync import SyncLoop

__all__ = ["MatrixAdapter"]

T = TypeVar("T")


class MatrixAdapter(RichTransport):
    """One Matrix account and device, as a `SyncAdapter` and a `Transport`.

    Create it with `MatrixAdapter.login`; hand it to `ChatClient` (it serves as both protocols);
    `close` it when done. ``user_id`` is the imstore user id (the escaped localpart, see
    docs/adapters.md); open the store with it.
    """

    def __init__(self, api: Api, http: httpx.AsyncClient, mxid: str, device_id: str, *,
                 poll_timeout: float = 30.0, timeline_limit: int = 50,
                 recall_window_ms: int = RECALL_WINDOW_MS) -> None:
        self.api = api
        self._http = http
        self.mxid = mxid
        self.server_name = mxid.partition(":")[2]
        self.user_id = mp.from_mxid(mxid, self.server_name)
        self.device_id = device_id
        self.recall_window_ms = recall_window_ms
        self._link = Link()
        self.rooms = Rooms(api, mxid)
        self.events = EventCache(api, mxid)
        self.reads = ReadPositions(api, self.rooms, self.events, self._link, now_ms)
        self.rich = RichRooms(api, self.rooms, self.events, now_ms)
        self.sync = SyncLoop(api, self.rooms, self.events, self.reads, self._link, self.rich,
                             poll_timeout=poll_timeout, timeline_limit=timeline_limit, now=now_ms)
        self.history = History(api, self.rooms, self.events, self.reads, self.rich, now_ms)
        self.media = Media(api)
        self.delivery_acks = DeliveryAcks(api)

    # ------------------------------------------------------------------------------ set-up

    @classmethod
    async def login(cls, homeserver_url: str, user: str, password: str, *,
                    device_id: str | None = None, poll_timeout: float = 30.0,
                    timeline_limit: int = 50, recall_window_ms: int = RECALL_WINDOW_MS,
                    bounds: Bounds | None = None,
                    http_transport: httpx.AsyncBaseTransport | None = None) -> MatrixAdapter:
        """Log in with a password. ``user`` is an imstore user id (or a full ``@user:server``);
        pass the ``device_id`` of an earlier login to keep that device (and its transaction ids).
        ``bounds`` limits what the homeserver may send (sizes, times); ``http_transport`` is the
        HTTP client hook (an ``httpx`` transport: tests pass ``httpx.MockTransport``).

        Raises `IMError` only: NETWORK_ERROR when the homeserver cannot be reached,
        INVALID_PARAM (M_FORBIDDEN) for a wrong user or password, SERVER_UNKNOWN_ERROR for an
        answer that is not a login.
        """
        http = httpx.AsyncClient(timeout=httpx.Timeout(poll_timeout + 15.0, connect=5.0),
                                 transport=http_transport)
        api = Api(homeserver_url, http, bounds=bounds)
        ident = user if user.startswith("@") else mp.escape_localpart(user)
        body: dict[str, Any] = {"type": "m.login.password",
                                "identifier": {"type": "m.id.user", "user": ident},
                                "password": password, "initial_device_display_name": "imstore"}
        if device_id:
            body["device_id"] = device_id
        try:
            answer = await api.call(rq.login(body))
            token = need(answer, "access_token", str, "POST /login")
            mxid = need(answer, "user_id", str, "POST /login")
            device = need(answer, "device_id", str, "POST /login")
            if not mxid.startswith("@") or ":" not in mxid:
                raise IMError(ErrorCode.SERVER_UNKNOWN_ERROR,
                              f"the homeserver logged in {mxid[:100]!r}, which is no Matrix id")
        except BaseException:
            await http.aclose()
            raise
        api.token = token
        return cls(api, http, mxid, device, poll_timeout=poll_timeout,
                   timeline_limit=timeline_limit, recall_window_ms=recall_window_ms)

    @staticmethod
    async def register(homeserver_url: str, user: str, password: str, *,
                       shared_secret: str | None = None, admin: bool = False,
                       http_transport: httpx.AsyncBaseTransport | None = None) -> str:
        """Create an account (for tests and the demo); returns its Matrix id. With
        ``shared_secret`` through Synapse's shared-secret admin API, else through open
        registration (``m.login.dummy``) when the server allows it."""
        async with httpx.AsyncClient(timeout=30.0, transport=http_transport) as http:
            api = Api(homeserver_url, http)
            local = mp.escape_localpart(user)
            if shared_secret is not None:
                answer = await register_with_secret(api, local, password, shared_secret,
                                                    admin=admin)
            else:  # user-interactive auth: the first answer names the session to complete
                body: dict[str, Any] = {"username": local, "password": password,
                                        "inhibit_login": True}
                try:
                    answer = await api.call(rq.register(body))
                except MatrixError as exc:
                    if exc.status != 401 or "session" not in exc.data:
                        raise
                    body["auth"] = {"type": "m.login.dummy", "session": exc.data["session"]}
                    answer = await api.call(rq.register(body))
            return str(need(answer, "user_id", str, "POST /register"))

    async def close(self) -> None:
        """Stop syncing and close the HTTP client (the device stays; log in again with its id)."""
        await self.sync.stop()
        await self._http.aclose()
        self._link.set_state(ConnectionState.DISCONNECTED)

    async def __aenter__(self) -> MatrixAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def state(self) -> ConnectionState:
        return self._link.state

    @property
    def handler(self) -> TransportHandler | None:
        return self._link.handler

    @property
    def since(self) -> str | None:
        """The sync position (``next_batch``) of the last sync handled."""
        return self.sync.since

    @property
    def bad_events(self) -> list[mp.BadEvent]:
        """The latest events the adapter could not use (kept, not applied), oldest first."""
        return list(self.sync.bad_events)

    # ------------------------------------------------------------------------------- rooms

    async def create_group(self, group_id: str, members: Sequence[str]) -> str:
        """Create a private room for an imstore group (alias ``#imstore.g.<id>``), inviting
        ``members``; returns the room id. Invited adapters join on their next sync."""
        return await self.rooms.create(ChatType.GROUP_CHAT, group_id, members)

    async def create_chat_room(self, room_id: str, members: Sequence[str]) -> str:
        """Create a public room for an imstore chat room; returns the Matrix room id."""
        return await self.rooms.create(ChatType.CHAT_ROOM, room_id, members)

    async def join(self, conv_id: str, chat_type: ChatType) -> str:
        """Join the room of a conversation this user was invited to (or a public chat room);
        returns the room id. Sends and history fetches join by themselves; tests call this to
        be sure live messages reach a new member."""
        room = await self.rooms.room_for(conv_id, ChatType(chat_type), create=False)
        if room is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no {ChatType(chat_type).name} {conv_id!r} on the server")
        return room

    async def set_retention(self, conv_id: str, chat_type: ChatType, max_lifetime_ms: int) -> None:
        """The room's retention policy (``m.room.retention``): Synapse, with retention enabled,
        stops serving events older than ``max_lifetime_ms`` at once and purges them on its purge
        job. The plan-wide default is the homeserver's ``retention.default_policy``. Needs the
        power to send state in the room (the creator has it)."""
        room = await self.rooms.existing(conv_id, ChatType(chat_type))
        await self.api.call(rq.room_state(room, "m.room.retention",
                                          {"max_lifetime": int(max_lifetime_ms)}))

    # --------------------------------------------------------------------------- the sync loop

    def keep_state(self, load: Callable[[str], dict[str, Any]],
                   save: Callable[[str, dict[str, Any]], None]) -> None:
        """Keep the sync position and the room directory between runs, under this account's
        name: ``load(name)`` gives what an earlier run kept, ``save(name, state)`` keeps it.
        `ChatClient` calls this with its store's ``adapter_state`` and ``save_adapter_state``
        before it attaches; a restarted app then goes on from where the last run stopped, and
        knows every room at once."""
        name = f"matrix {self.mxid}"
        self.sync.keep(load(name), lambda state: save(name, state))

    def attach(self, handler: TransportHandler) -> None:
        self._link.attach(handler)
        self.sync.ensure()

    async def wait_synced(self, timeout: float = 30.0) -> None:
        """Wait until the sync loop has completed one sync since it (re)started."""
        await self.sync.wait_synced(timeout)

    def pause(self) -> None:
        """Stop syncing as if the device went offline (RECONNECTING); `resume` goes on from the
        same position, back-filling what was missed."""
        self.sync.pause()

    def resume(self) -> None:
        self.sync.resume()

    async def reconnect(self) -> None:
        """Check the homeserver answers (``whoami``) and restart the sync loop."""
        if self.sync.closed:
            raise IMError(ErrorCode.SERVER_NOT_REACHABLE, "this adapter is closed; log in again")
        try:
            await self.api.call(rq.whoami(), timeout=5.0)
        except IMError as exc:
            raise IMError(ErrorCode.SERVER_NOT_REACHABLE,
                          f"the homeserver cannot be reached: {exc.description}") from exc
        self.sync.paused = False
        self.sync.ensure()
        self._link.set_state(ConnectionState.CONNECTED)

    # ------------------------------------------------------------------------------ Transport

    def _require_connection(self) -> None:
        if self.sync.closed or self.state == ConnectionState.DISCONNECTED:
            raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                          f"the Matrix connection of {self.user_id!r} is closed; log in again")

    async def _net(self, call: Awaitable[T]) -> T:
        """Await a call; a network failure makes the state RECONNECTING and raises 510."""
        try:
            return await call
        except IMError as exc:
            if exc.code == ErrorCode.NETWORK_ERROR:
                self._link.set_state(ConnectionState.RECONNECTING)
                self.sync.ensure()
                raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                              f"the homeserver cannot be reached: {exc.description}") from exc
            raise

    async def send(self, message: Message) -> SendResult:
        """PUT the message with its local id as the transaction id (a retry gets the first
        event back); returns the event id and the homeserver's timestamp."""
        self._require_connection()
        self.sync.ensure()
        chat_type = ChatType(message.chat_type)
        if message.type == MessageType.CMD:
            return await self._net(self._send_cmd(message, chat_type))
        answer: dict[str, Any] = {}
        room = ""
        for attempt in range(2):
            found = await self._net(self.rooms.room_for(message.to, chat_type, create=True))
            if found is None:
                raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                              f"there is no {chat_type.name} {message.to!r} on the server")
            room = found
            try:
                answer = await self._net(self.api.call(
                    rq.send_message(room, message.msg_id, mp.message_content(message))))
                break
            except MatrixError as exc:
                if exc.status != 403 or attempt:
                    raise
                self.rooms.forget(room)  # left or deleted since it was cached: resolve it again
        event_id = need(answer, "event_id", str, "PUT /send")
        ts = await self._net(self.events.event_time(room, event_id, syncing=self.sync.running()))
        if message.need_group_ack and chat_type == ChatType.GROUP_CHAT:
            self.events.note_group_ack(room, event_id, ts)
        return SendResult(event_id, ts)

    async def _send_cmd(self, message: Message, chat_type: ChatType) -> SendResult:
        if not isinstance(message.body, CmdBody):
            raise IMError(ErrorCode.INVALID_PARAM, "a CMD message needs a CmdBody")
        if chat_type == ChatType.CHAT:
            targets = [self.rooms.mx(message.to)]
        else:
            room = await self.rooms.room_for(message.to, chat_type, create=False)
            if room is None:
                raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                              f"there is no {chat_type.name} {message.to!r} on the server")
            joined = (await self.api.call(rq.joined_members(room))).get("joined")
            targets = [m for m in mp.as_obj(joined) if m != self.mxid]
        ts = now_ms()
        content = mp.cmd_content(message, ts)
        if targets:
            await self.api.call(rq.send_to_device(mp.CMD_EVENT, message.msg_id,
                                                  {t: content for t in targets}))
        return SendResult(message.msg_id, ts)

    async def send_delivery_ack(self, message: Message) -> None:
        """A to-device event to the sender's devices (Matrix has no delivery receipts); the
        receipts of one moment share one request."""
        self._require_connection()
        sender = message.sender
        if sender is None or is_mine(sender, self.user_id):
            return
        await self._net(self.delivery_acks.ack(self.rooms.mx(sender), message.msg_id))

    async def _room_of(self, message: Message) -> str:
        known = self.events.get(message.msg_id)
        if known is not None:
            return known[0]
        room = await self.rooms.room_for(message.conv_id, ChatType(message.chat_type),
                                         create=False)
        if room is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no conversation {message.conv_id!r} on the server")
        return room

    async def send_read_ack(self, message: Message) -> None:
        """An ``m.read`` receipt on the message: in Matrix it means "read up to here"."""
        self._require_connection()
        await self._read(await self._room_of(message), message.msg_id)

    async def _read(self, room: str, event_id: str) -> None:
        """Move this user's read position (and clear its UNREAD mark of the room)."""
        await self._net(self.reads.mark_read(room, event_id))
        await self._net(self.rich.read(room))

    async def send_conversation_ack(self, conv_id: str, chat_type: ChatType,
                                    up_to: int | None = None) -> None:
        """An ``m.read`` receipt (and the ``m.fully_read`` marker) on the newest event, or on the
        newest at or before ``up_to`` (ms)."""
        self._require_connection()
        room = await self.rooms.room_for(conv_id, ChatType(chat_type), create=False)
        if room is None:
            return
        event_id = await self._net(self.events.newest(room) if up_to is None
                                   else self.events.at_time(room, up_to, "b"))
        if event_id is not None:
            await self._read(room, event_id)

    async def send_group_read_ack(self, message: Message) -> None:
        """An ``m.read`` receipt on a group message sent with ``need_group_ack``."""
        self._require_connection()
        if ChatType(message.chat_type) != ChatType.GROUP_CHAT or not message.need_group_ack:
            raise IMError(ErrorCode.INVALID_PARAM,
                          "group read receipts are for group messages sent with need_group_ack")
        await self._read(await self._room_of(message), message.msg_id)

    async def fetch_group_read_acks(self, msg_id: str, cursor: str | None, limit: int
                                    ) -> CursorResult[GroupReadAck]:
        """The members whose read receipt is at or after the message (emulated: Matrix keeps
        one "read up to here" position per member), in the order they read."""
        check_page_size(limit)
        joined: Any = []
        if self.events.get(msg_id) is None:  # not seen in this session: look in the rooms
            joined = (await self.api.call(rq.joined_rooms())).get("joined_rooms")
        known = await self.events.find(msg_id, [r for r in joined if isinstance(r, str)]
                                       if isinstance(joined, list) else [])
        if known is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {msg_id!r} on the server")
        room, sender, ts = known
        info = await self.rooms.info(room)
        return self.reads.readers(room, msg_id, sender, ts, info.conv_id, cursor, limit)

    def _check_own(self, message: Message) -> None:
        if not is_mine(message.sender, self.user_id):
            raise IMError(ErrorCode.INVALID_PARAM, "only your own messages can be changed")

    async def recall_message(self, message: Message) -> int:
        """Redact one of this user's messages within the recall window (emulated: Matrix has no
        window); returns the redaction's server time."""
        self._require_connection()
        self._check_own(message)
        check_recall(message)
        room = await self._room_of(message)
        _, _, ts = await self.events.event(room, message.msg_id)
        if now_ms() - ts > self.recall_window_ms:
            raise IMError(ErrorCode.MESSAGE_EXPIRED,
                          f"messages can be recalled for {self.recall_window_ms // 1000} s only")
        answer = await self._net(self.api.call(rq.redact(
            room, message.msg_id, "r" + message.msg_id,
            {"reason": "recalled", f"{mp.NS}.type": MessageType(message.type).name})))
        _, _, when = await self.events.event(room, need(answer, "event_id", str, "PUT /redact"))
        return when

    async def edit_message(self, message: Message, body: Body) -> int:
        """Replace a TEXT or CUSTOM message's content with an ``m.replace`` edit; returns the
        edit's server time."""
        self._require_connection()
        self._check_own(message)
        check_edit(message, body)
        room = await self._room_of(message)
        answer = await self._net(self.api.call(rq.send_message(
            room, f"e{message.msg_id}.{now_ms()}",
            mp.edit_content(message.msg_id, MessageType(message.type), body))))
        _, _, when = await self.events.event(room, need(answer, "event_id", str, "PUT /send"))
        return when

    async def upload(self, path: str, *, progress: ProgressFn | None = None) -> RemoteFile:
        """Upload to the media repository; images get the server's thumbnails."""
        self._require_connection()
        return await self._net(self.media.upload(path, progress))

    async def download(self, url: str, dest: str, *, progress: ProgressFn | None = None) -> None:
        """Download an ``mxc://`` URL (authenticated media), streamed and bounded; ``#thumbnail``
        asks the server for its thumbnail, falling back to the file when it cannot make one."""
        self._require_connection()
        await self._net(self.media.download(url, dest, progress))

    # ---------------------------------------------------------------------------- SyncAdapter

    async def fetch_history(self, conv_id: str, chat_type: ChatType, cursor: str | None,
                            limit: int, options: FetchOptions) -> CursorResult[Message]:
        self.sync.ensure()
        return await self.history.page(conv_id, ChatType(chat_type), cursor, limit, options)

    async def fetch_conversations(self, cursor: str | None, limit: int
                                  ) -> CursorResult[Conversation]:
        """Joined rooms with their newest visible message, newest first (``/joined_rooms`` and
        one ``/messages`` per room; unread counts are the sync's notification counts). Pending
        invites are accepted first, so a chat a peer just opened is on the list."""
        check_page_size(limit)
        self.sync.ensure()
        await self.sync.accept_pending_invites()
        return await self.history.conversations(cursor, limit)

    async def remove_messages(self, conv_id: str, chat_type: ChatType,
                              msg_ids: Sequence[str] | None, before: int | None) -> None:
        """One-way delete: kept in this user's room account data and applied by the adapter."""
        await self.history.remove(conv_id, ChatType(chat_type), msg_ids, before)

    async def delete_conversation(self, conv_id: str, chat_type: ChatType,
                                  delete_messages: bool) -> None:
        """With ``delete_messages``: Synapse's admin room delete (purge) — for everyone, and only
        for a server admin. Without: the conversation leaves this user's list (room account
        data) and its history stays."""
        await self.history.delete(conv_id, ChatType(chat_type), delete_messages)
