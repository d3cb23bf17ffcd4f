"""MemoryServer: the reference IM server's facade over its parts.

Rules kept here (each part keeps its own: `_state` the directory, `_history` what each user sees,
`_receipts` receipts, `_delivery` the per-user queues):
- every message gets a server id, a strictly increasing server time from the injectable clock,
  and a sequence number;
- a retried send (same sender, same client ``msg_id``) is answered with the first result and is
  delivered once; the client's id is kept and shown to the sender as ``local_id`` in history;
- a recall (within ``recall_window_ms`` of the send) blanks the message for everyone and an edit
  (the types `kinds` marks editable) replaces its body; both reach every other member, offline
  ones on reconnection, and history shows the message as it is now;
- a user may be connected from several devices (`connect` with a ``device_id``): each receives
  what the others send, edit, recall and read (`_delivery` keeps the queues);
- a conversation deleted for everyone reaches no member afterwards: what was kept for its
  members' devices and not delivered yet is taken back;
- the retention is the plan's days; only the ENTERPRISE plan takes other days (its custom
  ``retention_days``), and days are a positive whole number;
- reactions, message pins and each user's conversation pins and marks are `_rich`'s; history
  pages and the conversation list carry them;
- faults are injected on purpose for tests: latency, lost answers, disconnects with and without
  reconnection, failed uploads, an unreachable server.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence

from ...errors import ErrorCode, IMError
from ...kinds import blank_body, kind_of
from ...lifecycle import check_edit, check_recall, is_mine, now_ms
from ...message import (
    Body,
    ChatType,
    Conversation,
    CursorResult,
    DownloadStatus,
    FetchOptions,
    FileBody,
    GroupReadAck,
    ImageBody,
    Message,
    MessageStatus,
    VideoBody,
)
from .. import RECALL_WINDOW_MS, ConnectionState, SendResult
from ._connection import MemoryConnection
from ._delivery import Delivery
from ._history import History
from ._receipts import Receipts
from ._rich import Rich, resolve_relations
from ._state import Conv, Directory, Faults, RetentionPlan, Stored

__all__ = ["MemoryServer"]


class MemoryServer:
    """The reference server. ``clock`` returns milliseconds (default: the wall clock);
    ``recall_window_ms`` is how long after sending a message its sender may recall it."""

    def __init__(self, plan: RetentionPlan = RetentionPlan.FREE, retention_days: int | None = None,
                 clock: Callable[[], int] | None = None,
                 recall_window_ms: int = RECALL_WINDOW_MS) -> None:
        if not isinstance(plan, RetentionPlan):
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"plan must be a RetentionPlan ({', '.join(RetentionPlan.__members__)}), "
                          f"not {plan!r}")
        if retention_days is not None:
            _check_days(retention_days)
            if plan != RetentionPlan.ENTERPRISE and retention_days != plan.value:
                raise IMError(ErrorCode.INVALID_PARAM,
                              f"the {plan.name} plan keeps {plan.value} days, not "
                              f"{retention_days}: custom retention_days is for "
                              "RetentionPlan.ENTERPRISE")
        self.plan = plan
        self.recall_window_ms = recall_window_ms
        self.clock = clock or now_ms
        self.faults = Faults()
        self.directory = Directory()
        self.delivery = Delivery()
        self._history = History(self.directory, lambda: self.clock(),
                                retention_days if retention_days is not None else plan.value)
        self.receipts = Receipts(self.directory, self._history, self.delivery,
                                 lambda: self.clock())
        self._seq = itertools.count(1)
        self._last_time = 0
        self.rich = Rich(self.directory, self._history, self.delivery, self._stamp)
        self._sent: dict[tuple[str, str], SendResult] = {}
        self._files: dict[str, bytes] = {}

    @property
    def retention_days(self) -> int:
        return self._history.retention_days

    @retention_days.setter
    def retention_days(self, days: int) -> None:
        self._history.retention_days = _check_days(days)

    # ------------------------------------------------------------------------------ set-up

    def connect(self, user_id: str, device_id: str | None = None) -> MemoryConnection:
        """The connection of one of the user's devices (None: its default device), a
        `SyncAdapter` and a `Transport` in one object; the same object for the same device."""
        conn = self.delivery.devices(user_id).get(device_id)
        if conn is None:
            conn = MemoryConnection(self, user_id, device_id)
            self.delivery.add(user_id, device_id, conn)
        return conn

    def _devices(self, user_id: str) -> list[MemoryConnection]:
        return list(self.delivery.devices(user_id).values()) or [self.connect(user_id)]

    def create_group(self, group_id: str, members: Sequence[str]) -> None:
        self.directory.create(group_id, ChatType.GROUP_CHAT, members)

    def create_chat_room(self, room_id: str, members: Sequence[str]) -> None:
        self.directory.create(room_id, ChatType.CHAT_ROOM, members)

    def join(self, gid: str, user_id: str) -> None:
        """Make ``user_id`` a full member of a group or room: it receives what is sent from now
        on, lists the conversation, sees all of its history (within retention), takes part in
        group read receipts and one-way deletes."""
        self.directory.join(gid, user_id)

    # ------------------------------------------------------------------------ fault control

    def disconnect(self, user_id: str, *, reconnect: bool = True) -> None:
        """Drop the connections of all the user's devices: RECONNECTING (they can come back) or
        DISCONNECTED."""
        for conn in self._devices(user_id):
            conn._set_state(
                ConnectionState.RECONNECTING if reconnect else ConnectionState.DISCONNECTED)

    def restore(self, user_id: str) -> None:
        """End a disconnect: the connections of all the user's devices are CONNECTED again."""
        for conn in self._devices(user_id):
            conn._set_state(ConnectionState.CONNECTED)

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

    # ----------------------------------------------------------------------------- messages

    def _stamp(self) -> int:
        self._last_time = max(self.clock(), self._last_time + 1)
        return self._last_time

    def post(self, message: Message, *, deliver: bool = True) -> Message:
        """Put a message on the server as its sender would send it (tests and tools); returns the
        stamped copy. ``message.sender`` must be set. ``deliver=False`` only adds it to history
        (as if it had been delivered long ago)."""
        if not message.sender:
            raise IMError(ErrorCode.INVALID_PARAM, "post() needs a message with a sender")
        return self.accept(message.sender, message, deliver=deliver)[1]

    def accept(self, sender: str, message: Message, *, deliver: bool = True,
               by: MemoryConnection | None = None) -> tuple[SendResult, Message]:
        """Take ``sender``'s message: stamp, store and deliver it once, whatever the retries, to
        the other members and (when a device ``by`` sent it) to the sender's other devices."""
        key = (sender, message.msg_id)
        if key in self._sent:
            res = self._sent[key]
            return res, self.directory.stored(res.msg_id)[1].msg
        members = self.directory.members(sender, message.to, message.chat_type)
        m = copy.deepcopy(message)
        seq = next(self._seq)
        m.sender = sender
        m.local_id = message.msg_id
        m.msg_id = f"S{seq:012d}"
        resolve_relations(m, sender, self._sent)
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
        ckey = self.directory.conv_key(sender, message.to, message.chat_type)
        conv = self.directory.convs.get(ckey)
        if conv is None:
            conv = self.directory.convs[ckey] = Conv(ckey, message.chat_type, members)
        stored = Stored(seq, m)
        if kind_of(m.type).stored:
            conv.messages.append(stored)
        self.directory.by_server_id[m.msg_id] = (conv, stored)
        res = SendResult(m.msg_id, m.server_time)
        self._sent[key] = res
        for member in members - {sender} if deliver else ():
            self.delivery.emit(member, "on_messages", [self.view(m, member)])
        if deliver and by is not None and kind_of(m.type).stored:
            self.delivery.emit(sender, "on_messages", [self.view(m, sender)], skip=by)
        return res, m

    def view(self, msg: Message, user: str, *, history: bool = False) -> Message:
        """A message as ``user`` sees it (see `History.view`)."""
        return self._history.view(msg, user, history=history)

    def _own(self, user: str, msg_id: str) -> tuple[Conv, Message]:
        """``user``'s stored message ``msg_id``, which the lifecycle lets it change."""
        found = self.directory.by_server_id.get(msg_id)
        if found is None or not kind_of(found[1].msg.type).stored:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {msg_id!r} on the server")
        conv, stored = found
        if not is_mine(stored.msg.sender, user):
            raise IMError(ErrorCode.INVALID_PARAM, f"{user!r} can only change its own messages")
        check_recall(self.view(stored.msg, user))
        return conv, stored.msg

    def recall(self, user: str, msg_id: str, by: MemoryConnection | None = None) -> int:
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
            self.delivery.emit(member, "on_messages_recalled", [msg_id])
        self.delivery.emit(user, "on_messages_recalled", [msg_id], skip=by)
        return m.recalled_at

    def edit(self, user: str, msg_id: str, body: Body,
             by: MemoryConnection | None = None) -> int:
        """``user`` replaces the body of its TEXT or CUSTOM message ``msg_id``: everyone sees the
        new body and ``edited_at`` (now or on reconnection). Returns ``edited_at``."""
        conv, m = self._own(user, msg_id)
        check_edit(self.view(m, user), body)
        m.body = copy.deepcopy(body)
        m.edited_at = self._stamp()
        for member in conv.members - {user}:
            self.delivery.emit(member, "on_messages_edited", [self.view(m, member)])
        self.delivery.emit(user, "on_messages_edited", [self.view(m, user)], skip=by)
        return m.edited_at

    # ------------------------------------------------------------------ history and receipts

    def history(self, user: str, conv_id: str, chat_type: ChatType, cursor: str | None,
                limit: int, options: FetchOptions) -> CursorResult[Message]:
        """A page of ``user``'s view of a conversation (see `History.page`)."""
        return self.rich.page(user, conv_id, chat_type,
                              self._history.page(user, conv_id, chat_type, cursor, limit, options))

    def conversations(self, user: str, cursor: str | None, limit: int
                      ) -> CursorResult[Conversation]:
        return self.rich.conversations(user, self._history.conversations(user, cursor, limit))

    def remove(self, user: str, conv_id: str, chat_type: ChatType,
               msg_ids: Sequence[str] | None, before: int | None) -> None:
        self._history.remove(user, conv_id, chat_type, msg_ids, before)

    def delete(self, user: str, conv_id: str, chat_type: ChatType, delete_messages: bool) -> None:
        conv = self.directory.users_conversation(user, conv_id, chat_type)
        ids = {sid for sid, (c, _) in self.directory.by_server_id.items() if c is conv}
        self._history.delete(user, conv_id, chat_type, delete_messages)
        if delete_messages:  # nothing of it reaches anyone afterwards, offline devices included
            def concerns(member: str, item: object) -> bool:
                return (getattr(item, "msg_id", item) in ids
                        or getattr(item, "local_id", None) in ids)

            def conversation(member: str) -> str | None:
                if member not in conv.members:
                    return None
                if conv.chat_type == ChatType.CHAT:
                    return next(iter(conv.members - {member}), member)
                return conv.key.partition(":")[2]

            self.delivery.purge(concerns, conversation)
            self.rich.forget(conv.key)

    def delivery_ack(self, user: str, msg_id: str) -> None:
        """``user`` got the one-to-one message ``msg_id``: its sender hears it (now or later)."""
        self.receipts.delivery_ack(user, msg_id)

    def read_ack(self, user: str, msg_id: str, by: MemoryConnection | None = None) -> None:
        """``user`` read the one-to-one message ``msg_id``: its read position moves there and
        the sender (and the user's other devices) hear it (now or later)."""
        self.receipts.read_ack(user, msg_id, by)
        self.rich.read_message(user, msg_id, by)

    def conversation_ack(self, user: str, conv_id: str, chat_type: ChatType,
                         up_to: int | None, by: MemoryConnection | None = None) -> None:
        """``user`` read a conversation up to server time ``up_to`` (None: everything it has now):
        the read position moves; in a one-to-one chat the peer hears it, with the position, and
        the user's other devices hear it in every conversation."""
        self.receipts.conversation_ack(user, conv_id, chat_type, up_to, by)
        self.rich.read(user, conv_id, chat_type, by)

    def group_ack(self, user: str, msg_id: str, by: MemoryConnection | None = None
                  ) -> GroupReadAck:
        ack = self.receipts.group_ack(user, msg_id, by)
        self.rich.read_message(user, msg_id, by)
        return ack

    def group_acks(self, msg_id: str, cursor: str | None, limit: int) -> CursorResult[GroupReadAck]:
        return self.receipts.readers(msg_id, cursor, limit)

    # -------------------------------------------------------------------------------- files

    def put_file(self, name: str, data: bytes) -> str:
        url = f"memory://files/{len(self._files) + 1}/{name}"
        self._files[url] = data
        return url

    def get_file(self, url: str) -> bytes | None:
        return self._files.get(url)


def _check_days(days: object) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"retention_days must be a whole number of days, 1 or more, not {days!r}")
    return days
