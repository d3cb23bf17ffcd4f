"""MemoryServer: the reference IM server, in the process, for tests, the demo and benchmarks.

A real implementation of both adapter protocols, not canned answers. Rules kept here:
- the server keeps one history per conversation and a per-user view of it: a one-way delete hides
  messages from one user only; a conversation delete removes it for everyone;
- every message gets a server id and a server time from the injectable clock, and a sequence
  number; cursors are opaque encodings of sequence numbers, so they stay valid while history grows;
- retention follows the plan: nothing older than the plan's days is ever returned;
- a retried send (same sender, same client ``msg_id``) is answered with the first result and is
  delivered once;
- faults are injected on purpose for tests: latency, lost answers, disconnects with and without
  reconnection, failed uploads, an unreachable server.
It depends on `message` and `adapters` only, never on the store.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from .adapters import (
    ConnectionState,
    ProgressFn,
    RemoteFile,
    SendResult,
    TransportHandler,
    check_page_size,
)
from .errors import ErrorCode, IMError
from .message import (
    ChatType,
    Conversation,
    CursorResult,
    Direction,
    DownloadStatus,
    FetchOptions,
    FileBody,
    GroupReadAck,
    ImageBody,
    Message,
    MessageStatus,
    MessageType,
    VideoBody,
    conversation_id,
)

__all__ = ["MemoryConnection", "MemoryServer", "RetentionPlan"]

DAY_MS = 86_400_000
MAX_IDS = 50
GROUP_ACK_DAYS = 3

class RetentionPlan(Enum):
    """How long the server keeps history, in days, by plan."""

    FREE = 3
    BASIC = 7
    ADVANCED = 90
    ENTERPRISE = 180  # the default; configure with MemoryServer(retention_days=...)

@dataclass(slots=True)
class _Stored:
    seq: int
    msg: Message  # as the sender sent it, with server id and time
    hidden_for: set[str] = field(default_factory=set)

@dataclass(slots=True)
class _Conv:
    key: str
    chat_type: ChatType
    members: frozenset[str]
    messages: list[_Stored] = field(default_factory=list)

@dataclass(slots=True)
class Faults:
    """Faults to inject. Counters go down by one each time they fire."""

    latency: float = 0.0  # seconds before every answer
    lost_answers: int = 0  # sends that never get an answer
    failed_uploads: int = 0
    unreachable: bool = False  # reconnect() fails

def _encode_cursor(kind: str, *parts: object) -> str:
    raw = ":".join([kind, *map(str, parts)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")

def _decode_cursor(cursor: str, kind: str) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        got, *parts = raw.split(":")
        if got != kind:
            raise ValueError(got)
        return parts
    except (ValueError, UnicodeDecodeError) as exc:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"cursor {cursor!r} was not made by this server for {kind}; pass None to "
                      "start again") from exc


class MemoryServer:
    """The reference server. ``clock`` returns milliseconds (default: the wall clock)."""

    def __init__(self, plan: RetentionPlan = RetentionPlan.FREE, retention_days: int | None = None,
                 clock: Callable[[], int] | None = None) -> None:
        self.plan = plan
        self.retention_days = retention_days if retention_days is not None else plan.value
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.faults = Faults()
        self._convs: dict[str, _Conv] = {}
        self._groups: dict[str, tuple[ChatType, frozenset[str]]] = {}
        self._seq = itertools.count(1)
        self._last_time = 0
        self._sent: dict[tuple[str, str], SendResult] = {}
        self._by_server_id: dict[str, tuple[_Conv, _Stored]] = {}
        self._connections: dict[str, MemoryConnection] = {}
        self._offline: dict[str, list[Message]] = {}
        self._files: dict[str, bytes] = {}
        self._group_acks: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------------------ set-up

    def connect(self, user_id: str) -> MemoryConnection:
        """The user's connection: a `SyncAdapter` and a `Transport` in one object."""
        conn = self._connections.get(user_id)
        if conn is None:
            conn = self._connections[user_id] = MemoryConnection(self, user_id)
        return conn

    def create_group(self, group_id: str, members: Sequence[str]) -> None:
        self._create(group_id, ChatType.GROUP_CHAT, members)

    def create_chat_room(self, room_id: str, members: Sequence[str]) -> None:
        self._create(room_id, ChatType.CHAT_ROOM, members)

    def _create(self, gid: str, chat_type: ChatType, members: Sequence[str]) -> None:
        if gid in self._groups:
            raise IMError(ErrorCode.INVALID_PARAM, f"{gid!r} exists already")
        self._groups[gid] = (chat_type, frozenset(members))

    def join(self, gid: str, user_id: str) -> None:
        chat_type, members = self._groups[gid]
        self._groups[gid] = (chat_type, members | {user_id})

    # ------------------------------------------------------------------------ fault control

    def disconnect(self, user_id: str, *, reconnect: bool = True) -> None:
        """Drop a user's connection: RECONNECTING (it can come back) or DISCONNECTED."""
        self.connect(user_id)._set_state(
            ConnectionState.RECONNECTING if reconnect else ConnectionState.DISCONNECTED)

    def restore(self, user_id: str) -> None:
        """End a disconnect: the user's connection is CONNECTED again."""
        self.connect(user_id)._set_state(ConnectionState.CONNECTED)

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds``."""
        self.faults.latency = seconds

    def lose_answers(self, count: int = 1) -> None:
        """The next ``count`` sends reach the server but their answers never come back."""
        self.faults.lost_answers = count

    def fail_uploads(self, count: int = 1) -> None:
        """The next ``count`` uploads fail with FILE_UPLOAD_FAILED."""
        self.faults.failed_uploads = count

    def set_reachable(self, reachable: bool) -> None:
        """Whether reconnecting can succeed."""
        self.faults.unreachable = not reachable

    # ----------------------------------------------------------------------------- history

    def _conv_key(self, user: str, conv_id: str, chat_type: ChatType) -> str:
        if chat_type == ChatType.CHAT:
            a, b = sorted((user, conv_id))
            return f"c:{a}:{b}"
        return f"g:{conv_id}"

    def _members(self, user: str, conv_id: str, chat_type: ChatType) -> frozenset[str]:
        if chat_type == ChatType.CHAT:
            return frozenset((user, conv_id))
        group = self._groups.get(conv_id)
        if group is None or group[0] != chat_type:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no {chat_type.name} {conv_id!r} on the server")
        if user not in group[1]:
            raise IMError(ErrorCode.INVALID_PARAM, f"{user!r} is not a member of {conv_id!r}")
        return group[1]

    def _cutoff(self) -> int:
        return self.clock() - self.retention_days * DAY_MS

    def _visible(self, user: str, s: _Stored) -> bool:
        return user not in s.hidden_for and (s.msg.server_time or 0) >= self._cutoff()

    def view(self, msg: Message, user: str) -> Message:
        """A message as ``user`` sees it."""
        m = copy.deepcopy(msg)
        mine = m.sender == user
        m.direction = Direction.SEND if mine else Direction.RECEIVE
        m.conv_id = conversation_id(m.chat_type, m.to, m.sender, user)
        m.status = MessageStatus.SUCCESS
        m.is_read = None if not mine else True
        m.local_time = m.server_time or m.local_time
        return m

    def post(self, message: Message, *, deliver: bool = True) -> Message:
        """Put a message on the server as its sender would send it (tests and tools); returns the
        stamped copy. ``message.sender`` must be set. ``deliver=False`` only adds it to history
        (as if it had been delivered long ago)."""
        if not message.sender:
            raise IMError(ErrorCode.INVALID_PARAM, "post() needs a message with a sender")
        return self._accept(message.sender, message, deliver=deliver)[1]

    def _accept(self, sender: str, message: Message, *,
                deliver: bool = True) -> tuple[SendResult, Message]:
        key = (sender, message.msg_id)
        if key in self._sent:
            res = self._sent[key]
            return res, self._by_server_id[res.msg_id][1].msg
        members = self._members(sender, message.to, message.chat_type)
        m = copy.deepcopy(message)
        seq = next(self._seq)
        m.sender = sender
        m.msg_id = f"S{seq:012d}"
        # Strictly increasing stamps: no two messages share a server time, so every client
        # orders history exactly as the server does, whatever order it fetched it in.
        self._last_time = max(self.clock(), self._last_time + 1)
        m.server_time = self._last_time
        m.status = MessageStatus.SUCCESS
        m.is_read = None
        m.is_delivered = m.is_read_acked = False
        m.group_ack_count = 0
        if isinstance(m.body, FileBody):  # the sender's local paths mean nothing to others
            m.body.local_path = ""
            m.body.download_status = DownloadStatus.PENDING
            if isinstance(m.body, ImageBody | VideoBody):
                m.body.thumbnail_path = ""
                m.body.thumbnail_status = DownloadStatus.PENDING
        ckey = self._conv_key(sender, message.to, message.chat_type)
        conv = self._convs.get(ckey)
        if conv is None:
            conv = self._convs[ckey] = _Conv(ckey, message.chat_type, members)
        stored = _Stored(seq, m)
        if m.type != MessageType.CMD:
            conv.messages.append(stored)
        self._by_server_id[m.msg_id] = (conv, stored)
        res = SendResult(m.msg_id, m.server_time)
        self._sent[key] = res
        for member in members - {sender} if deliver else ():
            self._deliver(member, [self.view(m, member)])
        return res, m

    def _deliver(self, user: str, messages: list[Message]) -> None:
        conn = self._connections.get(user)
        if conn is None or conn.state != ConnectionState.CONNECTED or conn.handler is None:
            self._offline.setdefault(user, []).extend(messages)
            return
        conn.handler.on_messages(messages)

    def _notify(self, user: str | None, fn: Callable[[TransportHandler], None]) -> None:
        conn = self._connections.get(user or "")
        if conn is not None and conn.handler is not None and conn.state == ConnectionState.CONNECTED:
            fn(conn.handler)

    def _conversation_of(self, user: str, conv_id: str, chat_type: ChatType) -> _Conv | None:
        return self._convs.get(self._conv_key(user, conv_id, chat_type))

    def history(self, user: str, conv_id: str, chat_type: ChatType, cursor: str | None,
                limit: int, options: FetchOptions) -> CursorResult[Message]:
        check_page_size(limit)
        conv = self._conversation_of(user, conv_id, chat_type)
        if chat_type != ChatType.CHAT:
            self._members(user, conv_id, chat_type)
        if conv is None:
            return CursorResult([], None)
        up = options.direction != Direction.DOWN
        bound = int(_decode_cursor(cursor, "h")[0]) if cursor else None
        types = set(options.types) if options.types else None

        def keep(s: _Stored) -> bool:
            m = s.msg
            t = m.server_time or 0
            return (self._visible(user, s)
                    and (bound is None or (s.seq < bound if up else s.seq > bound))
                    and (types is None or m.type in types)
                    and (options.sender is None or m.sender == options.sender)
                    and (options.start_time is None or t >= options.start_time)
                    and (options.end_time is None or t <= options.end_time))

        seq_order = reversed(conv.messages) if up else iter(conv.messages)
        page: list[_Stored] = []
        more = False
        for s in seq_order:
            if keep(s):
                if len(page) == limit:
                    more = True
                    break
                page.append(s)
        next_cursor = _encode_cursor("h", page[-1].seq) if more and page else None
        if up:
            page.reverse()
        return CursorResult([self.view(s.msg, user) for s in page], next_cursor)

    def conversations(self, user: str, cursor: str | None, limit: int
                      ) -> CursorResult[Conversation]:
        check_page_size(limit)
        rows = []
        for conv in self._convs.values():
            if user not in conv.members:
                continue
            last = next((s for s in reversed(conv.messages) if self._visible(user, s)), None)
            if last is None:
                continue
            v = self.view(last.msg, user)
            rows.append((last.seq, Conversation(v.conv_id, conv.chat_type, 0, v, v.timestamp)))
        rows.sort(key=lambda r: -r[0])
        if cursor:
            bound = int(_decode_cursor(cursor, "c")[0])
            rows = [r for r in rows if r[0] < bound]
        page = rows[:limit]
        more = len(rows) > limit
        return CursorResult([c for _, c in page],
                            _encode_cursor("c", page[-1][0]) if more else None)

    def remove(self, user: str, conv_id: str, chat_type: ChatType,
               msg_ids: Sequence[str] | None, before: int | None) -> None:
        if (msg_ids is None) == (before is None):
            raise IMError(ErrorCode.INVALID_PARAM, "give either msg_ids or before, not both")
        if msg_ids is not None and not 1 <= len(msg_ids) <= MAX_IDS:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"delete 1 to {MAX_IDS} messages per call, not {len(msg_ids)}")
        conv = self._conversation_of(user, conv_id, chat_type)
        if conv is None or user not in conv.members:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{user!r} has no conversation {conv_id!r} on the server")
        ids = set(msg_ids or ())
        for s in conv.messages:
            if (before is not None and (s.msg.server_time or 0) < before) or s.msg.msg_id in ids:
                s.hidden_for.add(user)

    def delete(self, user: str, conv_id: str, chat_type: ChatType, delete_messages: bool) -> None:
        conv = self._conversation_of(user, conv_id, chat_type)
        if conv is None or user not in conv.members:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{user!r} has no conversation {conv_id!r} on the server")
        if delete_messages:
            del self._convs[conv.key]
            for s in conv.messages:
                self._by_server_id.pop(s.msg.msg_id, None)
        else:
            for s in conv.messages:
                s.hidden_for.add(user)

    # ----------------------------------------------------------------------------- receipts

    def group_ack(self, user: str, msg_id: str) -> GroupReadAck:
        found = self._by_server_id.get(msg_id)
        if found is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {msg_id!r} on the server")
        conv, stored = found
        m = stored.msg
        if conv.chat_type != ChatType.GROUP_CHAT or not m.need_group_ack:
            raise IMError(ErrorCode.INVALID_PARAM,
                          "group read receipts are for group messages sent with need_group_ack")
        if user not in conv.members:
            raise IMError(ErrorCode.INVALID_PARAM, f"{user!r} is not a member of {m.to!r}")
        if (m.server_time or 0) < self.clock() - GROUP_ACK_DAYS * DAY_MS:
            raise IMError(ErrorCode.MESSAGE_EXPIRED,
                          f"group read receipts are taken for {GROUP_ACK_DAYS} days only")
        readers = self._group_acks.setdefault(msg_id, {})
        first = user not in readers
        readers.setdefault(user, self.clock())
        ack = GroupReadAck(msg_id, m.to, user, readers[user], f"A{msg_id}:{user}")
        if first and user != m.sender:
            self._notify(m.sender, lambda h: h.on_group_read_acks([ack]))
        return ack

    def group_acks(self, msg_id: str, cursor: str | None, limit: int) -> CursorResult[GroupReadAck]:
        check_page_size(limit)
        found = self._by_server_id.get(msg_id)
        if found is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {msg_id!r} on the server")
        start = int(_decode_cursor(cursor, "a")[0]) if cursor else 0
        readers = list(self._group_acks.get(msg_id, {}).items())
        page = readers[start:start + limit]
        more = start + limit < len(readers)
        conv_id = found[1].msg.to
        return CursorResult([GroupReadAck(msg_id, conv_id, r, t, f"A{msg_id}:{r}") for r, t in page],
                            _encode_cursor("a", start + limit) if more else None)

    # -------------------------------------------------------------------------------- files

    def put_file(self, name: str, data: bytes) -> str:
        url = f"memory://files/{len(self._files) + 1}/{name}"
        self._files[url] = data
        return url

class MemoryConnection:
    """One user's connection to a `MemoryServer`: implements `SyncAdapter` and `Transport`."""

    def __init__(self, server: MemoryServer, user_id: str) -> None:
        self.server = server
        self.user_id = user_id
        self.state = ConnectionState.CONNECTED
        self.handler: TransportHandler | None = None

    def _set_state(self, state: ConnectionState) -> None:
        if state == self.state:
            return
        self.state = state
        if self.handler is not None:
            self.handler.on_connection_state_changed(state)
        if state == ConnectionState.CONNECTED:
            pending = self.server._offline.pop(self.user_id, [])
            if pending and self.handler is not None:
                self.handler.on_messages(pending)

    async def _wire(self) -> None:
        """One network round trip: the injected latency, and the connection must be up."""
        if self.server.faults.latency:
            await asyncio.sleep(self.server.faults.latency)
        else:
            await asyncio.sleep(0)

    def _require_connection(self) -> None:
        if self.state != ConnectionState.CONNECTED:
            raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                          f"the connection of {self.user_id!r} is {self.state.name.lower()}")

    # -- SyncAdapter ----------------------------------------------------------------------

    async def fetch_conversations(self, cursor: str | None, limit: int
                                  ) -> CursorResult[Conversation]:
        await self._wire()
        return self.server.conversations(self.user_id, cursor, limit)

    async def fetch_history(self, conv_id: str, chat_type: ChatType, cursor: str | None,
                            limit: int, options: FetchOptions) -> CursorResult[Message]:
        await self._wire()
        return self.server.history(self.user_id, conv_id, ChatType(chat_type), cursor, limit,
                                   options)

    async def remove_messages(self, conv_id: str, chat_type: ChatType,
                              msg_ids: Sequence[str] | None, before: int | None) -> None:
        await self._wire()
        self.server.remove(self.user_id, conv_id, ChatType(chat_type),
                           list(msg_ids) if msg_ids is not None else None, before)

    async def delete_conversation(self, conv_id: str, chat_type: ChatType,
                                  delete_messages: bool) -> None:
        await self._wire()
        self.server.delete(self.user_id, conv_id, ChatType(chat_type), delete_messages)

    # -- Transport ------------------------------------------------------------------------

    def attach(self, handler: TransportHandler) -> None:
        self.handler = handler
        pending = self.server._offline.pop(self.user_id, [])
        if pending and self.state == ConnectionState.CONNECTED:
            handler.on_messages(pending)

    async def send(self, message: Message) -> SendResult:
        self._require_connection()
        await self._wire()
        self._require_connection()
        faults = self.server.faults
        if faults.lost_answers > 0:
            faults.lost_answers -= 1
            self.server._accept(self.user_id, message)  # it arrived; the answer never comes back
            await asyncio.Event().wait()
        return self.server._accept(self.user_id, message)[0]

    async def reconnect(self) -> None:
        await self._wire()
        if self.server.faults.unreachable:
            self._set_state(ConnectionState.DISCONNECTED)
            raise IMError(ErrorCode.SERVER_NOT_REACHABLE, "the server cannot be reached")
        self._set_state(ConnectionState.CONNECTED)

    async def send_delivery_ack(self, message: Message) -> None:
        self._require_connection()
        await self._wire()
        self.server._notify(message.sender, lambda h: h.on_delivery_acks([message.msg_id]))

    async def send_read_ack(self, message: Message) -> None:
        self._require_connection()
        await self._wire()
        self.server._notify(message.sender, lambda h: h.on_read_acks([message.msg_id]))

    async def send_conversation_ack(self, conv_id: str, chat_type: ChatType) -> None:
        self._require_connection()
        await self._wire()
        if ChatType(chat_type) == ChatType.CHAT:
            reader = self.user_id
            self.server._notify(conv_id, lambda h: h.on_conversation_read(reader, reader))

    async def send_group_read_ack(self, message: Message) -> None:
        self._require_connection()
        await self._wire()
        self.server.group_ack(self.user_id, message.msg_id)

    async def fetch_group_read_acks(self, msg_id: str, cursor: str | None, limit: int
                                    ) -> CursorResult[GroupReadAck]:
        await self._wire()
        return self.server.group_acks(msg_id, cursor, limit)

    async def upload(self, path: str, *, progress: ProgressFn | None = None) -> RemoteFile:
        self._require_connection()
        await self._wire()
        faults = self.server.faults
        if faults.failed_uploads > 0:
            faults.failed_uploads -= 1
            raise IMError(ErrorCode.FILE_UPLOAD_FAILED, f"the server refused {path!r}; try again")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise IMError(ErrorCode.FILE_NOT_FOUND, f"cannot read {path!r}: {exc}") from exc
        chunk = 256 * 1024
        for done in range(0, len(data), chunk):
            if progress:
                progress(min(done + chunk, len(data)), len(data))
            await asyncio.sleep(0)
        if progress and not data:
            progress(0, 0)
        url = self.server.put_file(os.path.basename(path), data)
        return RemoteFile(url=url, secret=base64.b32encode(os.urandom(5)).decode(),
                          thumbnail_url=url)

    async def download(self, url: str, dest: str, *, progress: ProgressFn | None = None) -> None:
        self._require_connection()
        await self._wire()
        data = self.server._files.get(url)
        if data is None:
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED, f"the server has no file at {url!r}")
        tmp = dest + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
        if progress:
            progress(len(data), len(data))
