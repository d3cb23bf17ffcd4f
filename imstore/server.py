"""MemoryServer: the reference IM server, in the process, for tests, the demo and benchmarks.

A real implementation of both adapter protocols, not canned answers. Rules kept here:
- the server keeps one history per conversation and a per-user view of it: a one-way delete hides
  messages from one user only; a conversation delete removes it for everyone;
- every message gets a server id and a server time from the injectable clock, and a sequence
  number; cursors are opaque encodings of sequence numbers, so they stay valid while history grows;
- retention follows the plan: nothing older than the plan's days is ever returned;
- a retried send (same sender, same client ``msg_id``) is answered with the first result and is
  delivered once; the client's id is kept and shown to the sender as ``local_id`` in history;
- a recall (within ``recall_window_ms`` of the send) blanks the message for everyone and an edit
  (TEXT and CUSTOM) replaces its body; both reach every other member, offline ones on
  reconnection, and history shows the message as it is now;
- everything for a user — messages, receipts of every kind, recalls, edits — goes through one
  event queue per user: delivered at once when the user is CONNECTED, else kept and delivered on
  reconnection, in the order it happened;
- receipts are checked: one-to-one receipts only for one-to-one messages, group receipts only from
  members other than the sender; each user's read position per conversation (moved by read
  receipts and conversation acks, never backwards) marks what history shows as read;
- faults are injected on purpose for tests: latency, lost answers, disconnects with and without
  reconnection, failed uploads, an unreachable server.
It depends on `message`, `kinds` (per-type facts: which types can be edited, the blank body of a
recall notice) and `adapters` only, never on the store.
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
from typing import Any

from .adapters import (
    ConnectionState,
    ProgressFn,
    RemoteFile,
    SendResult,
    TransportHandler,
    check_page_size,
    check_remove_args,
)
from .errors import ErrorCode, IMError
from .kinds import blank_body, kind_of
from .message import (
    Body,
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
GROUP_ACK_DAYS = 3
RECALL_WINDOW_MS = 120_000

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
    """The reference server. ``clock`` returns milliseconds (default: the wall clock);
    ``recall_window_ms`` is how long after sending a message its sender may recall it."""

    def __init__(self, plan: RetentionPlan = RetentionPlan.FREE, retention_days: int | None = None,
                 clock: Callable[[], int] | None = None,
                 recall_window_ms: int = RECALL_WINDOW_MS) -> None:
        self.plan = plan
        self.recall_window_ms = recall_window_ms
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
        # per user: handler method names and arguments not delivered yet, oldest first
        self._offline: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        self._read_pos: dict[tuple[str, str], int] = {}  # (user, conversation key) -> server time
        # (user, conversation key) -> the last sequence number when the user removed the entry
        # (delete_conversation with delete_messages=False): listed again once a newer one comes
        self._removed_entries: dict[tuple[str, str], int] = {}
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
        """Make ``user_id`` a full member of a group or room: it receives what is sent from now
        on, lists the conversation, sees all of its history (within retention), takes part in
        group read receipts and one-way deletes."""
        if gid not in self._groups:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST, f"there is no group or room {gid!r}")
        chat_type, members = self._groups[gid]
        self._groups[gid] = (chat_type, members | {user_id})
        conv = self._convs.get(self._conv_key(user_id, gid, chat_type))
        if conv is not None:
            conv.members = self._groups[gid][1]

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

    def view(self, msg: Message, user: str, *, history: bool = False) -> Message:
        """A message as ``user`` sees it. In ``history`` a received message says whether the
        user's read position is at or after it (``is_read``); live ones say nothing."""
        m = copy.deepcopy(msg)
        mine = m.sender == user
        if not mine:
            m.local_id = None  # the sender's device id means nothing to others
        m.direction = Direction.SEND if mine else Direction.RECEIVE
        m.conv_id = conversation_id(m.chat_type, m.to, m.sender, user)
        m.status = MessageStatus.SUCCESS
        if mine:
            m.is_read = True
        elif history:
            pos = self._read_pos.get((user, self._conv_key(user, m.conv_id, m.chat_type)), -1)
            m.is_read = (m.server_time or 0) <= pos
        else:
            m.is_read = None
        m.local_time = m.server_time or m.local_time
        return m

    def _move_read_position(self, user: str, conv_key: str, up_to: int) -> None:
        key = (user, conv_key)
        self._read_pos[key] = max(self._read_pos.get(key, -1), up_to)

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
        m.local_id = message.msg_id
        m.msg_id = f"S{seq:012d}"
        # Strictly increasing stamps: no two messages share a server time, so every client
        # orders history exactly as the server does, whatever order it fetched it in.
        m.server_time = self._stamp()
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
            self._emit(member, "on_messages", [self.view(m, member)])
        return res, m

    def _emit(self, user: str | None, name: str, *args: Any) -> None:
        """Call ``handler.<name>(*args)`` for ``user`` now when CONNECTED, else on reconnection."""
        if not user:
            return
        conn = self._connections.get(user)
        if conn is None or conn.state != ConnectionState.CONNECTED or conn.handler is None:
            self._offline.setdefault(user, []).append((name, args))
            return
        getattr(conn.handler, name)(*args)

    def _flush(self, user: str, handler: TransportHandler) -> None:
        """Hand a user the events kept while it was away, in order (runs of one kind batched)."""
        pending = self._offline.pop(user, [])
        i = 0
        while i < len(pending):
            name, args = pending[i]
            if len(args) == 1 and isinstance(args[0], list):
                batch = list(args[0])
                while (i + 1 < len(pending) and pending[i + 1][0] == name
                       and len(pending[i + 1][1]) == 1):
                    i += 1
                    batch += pending[i][1][0]
                args = (batch,)
            getattr(handler, name)(*args)
            i += 1

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
        return CursorResult([self.view(s.msg, user, history=True) for s in page], next_cursor)

    def conversations(self, user: str, cursor: str | None, limit: int
                      ) -> CursorResult[Conversation]:
        check_page_size(limit)
        rows = []
        for conv in self._convs.values():
            if user not in conv.members:
                continue
            last = next((s for s in reversed(conv.messages) if self._visible(user, s)), None)
            if last is None or last.seq <= self._removed_entries.get((user, conv.key), 0):
                continue
            v = self.view(last.msg, user, history=True)
            rows.append((last.seq, Conversation(v.conv_id, conv.chat_type,
                                                self._unread(user, conv), v, v.timestamp)))
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
        check_remove_args(msg_ids, before)
        conv = self._conversation_of(user, conv_id, chat_type)
        if conv is None or user not in conv.members:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{user!r} has no conversation {conv_id!r} on the server")
        ids = set(msg_ids or ())  # server ids, or the local ids of the user's own messages
        for s in conv.messages:
            if ((before is not None and (s.msg.server_time or 0) < before) or s.msg.msg_id in ids
                    or (s.msg.sender == user and s.msg.local_id in ids)):
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
        else:  # only the entry goes: the history stays, and a new message lists it again
            self._removed_entries[(user, conv.key)] = conv.messages[-1].seq if conv.messages else 0

    def _unread(self, user: str, conv: _Conv) -> int:
        """How many visible messages of others lie after the user's read position."""
        pos = self._read_pos.get((user, conv.key), -1)
        return sum(1 for s in conv.messages if s.msg.sender != user and self._visible(user, s)
                   and (s.msg.server_time or 0) > pos)

    # ------------------------------------------------------------------------- recall, edit

    def _own(self, user: str, msg_id: str) -> tuple[_Conv, Message]:
        found = self._by_server_id.get(msg_id)
        if found is None or found[1].msg.type == MessageType.CMD:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {msg_id!r} on the server")
        conv, stored = found
        if stored.msg.sender != user:
            raise IMError(ErrorCode.INVALID_PARAM, f"{user!r} can only change its own messages")
        return conv, stored.msg

    def _stamp(self) -> int:
        self._last_time = max(self.clock(), self._last_time + 1)
        return self._last_time

    def recall(self, user: str, msg_id: str) -> int:
        """``user`` recalls its message ``msg_id`` within the recall window: it becomes a recall
        notice (blank body) for everyone, who hear it now or on reconnection. Returns the time
        of the recall (the first one's, when recalled again)."""
        conv, m = self._own(user, msg_id)
        if m.recalled_at is not None:
            return m.recalled_at
        if self.clock() - (m.server_time or 0) > self.recall_window_ms:
            raise IMError(ErrorCode.MESSAGE_EXPIRED,
                          f"messages can be recalled within {self.recall_window_ms // 1000} s "
                          "of sending only")
        m.body = blank_body(m.type)
        m.recalled_at = self._stamp()
        for member in conv.members - {user}:
            self._emit(member, "on_messages_recalled", [msg_id])
        return m.recalled_at

    def edit(self, user: str, msg_id: str, body: Body) -> int:
        """``user`` replaces the body of its TEXT or CUSTOM message ``msg_id``: everyone sees the
        new body and ``edited_at`` (now or on reconnection). Returns ``edited_at``."""
        conv, m = self._own(user, msg_id)
        if not kind_of(m.type).editable or type(body) is not type(m.body):
            raise IMError(ErrorCode.INVALID_PARAM,
                          "only TEXT and CUSTOM messages can be edited, with a body of their type")
        if m.recalled_at is not None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"{msg_id!r} was recalled")
        m.body = copy.deepcopy(body)
        m.edited_at = self._stamp()
        for member in conv.members - {user}:
            self._emit(member, "on_messages_edited", [self.view(m, member)])
        return m.edited_at

    # ----------------------------------------------------------------------------- receipts

    def _received(self, user: str, msg_id: str, what: str) -> tuple[_Conv, Message]:
        """The one-to-one message ``msg_id`` that ``user`` received, for a receipt."""
        found = self._by_server_id.get(msg_id)
        if found is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {msg_id!r} on the server")
        conv, stored = found
        m = stored.msg
        if conv.chat_type != ChatType.CHAT:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{what} are for one-to-one messages; group messages take group read "
                          "receipts")
        if user not in conv.members or user == m.sender:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{user!r} did not receive {msg_id!r}: only its receiver sends {what}")
        return conv, m

    def delivery_ack(self, user: str, msg_id: str) -> None:
        """``user`` got the one-to-one message ``msg_id``: its sender hears it (now or later)."""
        _, m = self._received(user, msg_id, "delivery receipts")
        self._emit(m.sender, "on_delivery_acks", [msg_id])

    def read_ack(self, user: str, msg_id: str) -> None:
        """``user`` read the one-to-one message ``msg_id``: its read position moves there and
        the sender hears it (now or later)."""
        conv, m = self._received(user, msg_id, "read receipts")
        self._move_read_position(user, conv.key, m.server_time or 0)
        self._emit(m.sender, "on_read_acks", [msg_id])

    def conversation_ack(self, user: str, conv_id: str, chat_type: ChatType,
                         up_to: int | None) -> None:
        """``user`` read a conversation up to server time ``up_to`` (None: everything it has now):
        the read position moves; in a one-to-one chat the peer hears it, with the position."""
        members = self._members(user, conv_id, chat_type)
        conv = self._conversation_of(user, conv_id, chat_type)
        if up_to is None:
            newest = [s.msg.server_time or 0 for s in conv.messages] if conv else []
            up_to = max(newest, default=0)
        if conv is not None:
            self._move_read_position(user, conv.key, up_to)
        if chat_type == ChatType.CHAT and conv_id in members:
            self._emit(conv_id, "on_conversation_read", user, user, up_to)

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
        if user == m.sender:
            raise IMError(ErrorCode.INVALID_PARAM,
                          "the sender of a group message does not read-ack it")
        if (m.server_time or 0) < self.clock() - GROUP_ACK_DAYS * DAY_MS:
            raise IMError(ErrorCode.MESSAGE_EXPIRED,
                          f"group read receipts are taken for {GROUP_ACK_DAYS} days only")
        readers = self._group_acks.setdefault(msg_id, {})
        first = user not in readers
        readers.setdefault(user, self.clock())
        ack = GroupReadAck(msg_id, m.to, user, readers[user], f"A{msg_id}:{user}")
        self._move_read_position(user, conv.key, m.server_time or 0)
        if first:
            self._emit(m.sender, "on_group_read_acks", [ack])
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
                self.server._flush(self.user_id, self.handler)

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
        if self.state == ConnectionState.CONNECTED:
            self.server._flush(self.user_id, handler)

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
        self.server.delivery_ack(self.user_id, message.msg_id)

    async def send_read_ack(self, message: Message) -> None:
        self._require_connection()
        await self._wire()
        self.server.read_ack(self.user_id, message.msg_id)

    async def send_conversation_ack(self, conv_id: str, chat_type: ChatType,
                                    up_to: int | None = None) -> None:
        self._require_connection()
        await self._wire()
        self.server.conversation_ack(self.user_id, conv_id, ChatType(chat_type), up_to)

    async def send_group_read_ack(self, message: Message) -> None:
        self._require_connection()
        await self._wire()
        self.server.group_ack(self.user_id, message.msg_id)

    async def recall_message(self, message: Message) -> int:
        self._require_connection()
        await self._wire()
        return self.server.recall(self.user_id, message.msg_id)

    async def edit_message(self, message: Message, body: Body) -> int:
        self._require_connection()
        await self._wire()
        return self.server.edit(self.user_id, message.msg_id, body)

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
