"""The life of a message, in one place: its send status, its downloads, its receipts, who may do
what to it, and the clock and time bounds it is stamped with (h11's ``_state.py`` is the model).

Rule 1: every rule below lives here and only here. The store, the client, the servers and the
adapters call these tables and functions; they never restate them.

Rules kept here:
- the send status moves only along `SEND_TRANSITIONS` ``(status, event) -> status``: a send (or
  resend) leaves CREATE or FAIL for INPROGRESS; the server's answer (or its history showing the
  message) makes any status SUCCESS; a failed step, or a store opened with a send in flight, makes
  INPROGRESS FAIL; a copy stored without being sent from here (history, another device, an
  app's own insert) is SUCCESS from CREATE, and an import also from INPROGRESS. Every other move
  is refused with `IMError(INVALID_PARAM)` before anything changes (`send_move`, `next_status`);
- an attachment's (or thumbnail's) download status moves only along `DOWNLOAD_TRANSITIONS`: a
  download may start from any status (again after a failure, or after a crash left it
  DOWNLOADING), and ends SUCCEEDED or FAILED; a file this device already has (the sender's own
  upload) is SUCCEEDED;
- receipts are a `ReceiptKind`; a read receipt implies delivery (`ReceiptKind.implied`);
- a message is *mine* when its sender is the store's owner (None: the owner) (`is_mine`); a
  stored message is mine when its direction is SEND;
- a recall notice of a message recalled by someone other than its sender (a moderator) names
  who did in its ``ext`` under `RECALLED_BY`, whether the recall arrived live or with history;
- only my sent messages that the server has (SUCCESS) may be recalled or edited; only kinds that
  are ``editable`` in `kinds.KINDS`, with a body of their own type, and not after a recall; only
  my messages that are CREATE or FAIL may be resent (`check_recall`, `check_edit`,
  `check_resend`);
- one-to-one receipts are for one-to-one messages: delivery receipts go out for received ones,
  read receipts per message go out for received ones and are refused for one's own
  (`sends_delivery_ack`, `check_read_ack`, `check_read_ack_here`, `sends_read_ack`), and
  receipts that come in are applied to one-to-one messages (or kept for messages not stored
  yet) (`takes_receipt`); group read receipts are for group messages sent with
  ``need_group_ack``, never sent by their sender and never counted from the owner
  (`check_group_read_ack`, `counts_group_ack`);
- times are milliseconds since the epoch (`now_ms`); a time a message carries (local, server,
  recall, edit, receipt) is an int in ``0..MAX_TIME`` (2^53: exact in a double, so every client
  reads it); a time filter or ordering key is any int64 (``INT64_MIN..INT64_MAX``), what SQLite
  holds; a day is `DAY_MS`; receipts waiting for a message that never comes are kept for the
  shortest retention plan (`PENDING_RECEIPT_TTL_MS`).
"""

from __future__ import annotations

import time
from enum import Enum, IntEnum
from typing import TypeVar

from .errors import ErrorCode, IMError
from .kinds import kind_of
from .message import Body, ChatType, Direction, DownloadStatus, Message, MessageStatus

__all__ = [
    "DAY_MS",
    "DOWNLOAD_TRANSITIONS",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_TIME",
    "PENDING_RECEIPT_TTL_MS",
    "RECALLED_BY",
    "SEND_TRANSITIONS",
    "SHORTEST_RETENTION_DAYS",
    "DownloadEvent",
    "ReceiptKind",
    "SendEvent",
    "awaits_send",
    "check_edit",
    "check_group_read_ack",
    "check_read_ack",
    "check_read_ack_here",
    "check_recall",
    "check_resend",
    "counts_group_ack",
    "download_move",
    "is_mine",
    "next_status",
    "now_ms",
    "send_move",
    "sends_delivery_ack",
    "sends_read_ack",
    "settled_status",
    "status_after",
    "takes_receipt",
]

RECALLED_BY = "io.imstore.recalled_by"
"""The ``ext`` key of a recall notice naming who recalled it, when not its sender."""

# ------------------------------------------------------------------------------------- time

MAX_TIME = 2**53
"""The largest time (ms) a message may carry: exact in a double, so every client reads it."""
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""Time filters and ordering keys: any int SQLite can hold."""
DAY_MS = 86_400_000
SHORTEST_RETENTION_DAYS = 3
"""The shortest history retention of any server plan (the free plan keeps three days)."""
PENDING_RECEIPT_TTL_MS = SHORTEST_RETENTION_DAYS * DAY_MS
"""Receipts for messages a store does not have are kept this long, waiting for their message;
older ones are pruned when the connection comes back."""


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------------------ send status


class SendEvent(Enum):
    """What moves a message's send status."""

    SEND = "send"  # the send (or a resend) leaves this device
    ACCEPT = "accept"  # the server has it: its answer to the send, or its history shows it
    FAIL = "fail"  # a step of the send failed
    INTERRUPT = "interrupt"  # the store opened with the send in flight: it did not go out
    STORE = "store"  # stored as a copy, not sent from here (history, another device, the app)
    IMPORT = "import"  # brought in by an importer from another client's export


_S = MessageStatus
SEND_TRANSITIONS: dict[tuple[MessageStatus, SendEvent], MessageStatus] = {
    (_S.CREATE, SendEvent.SEND): _S.INPROGRESS,
    (_S.FAIL, SendEvent.SEND): _S.INPROGRESS,
    (_S.CREATE, SendEvent.ACCEPT): _S.SUCCESS,
    (_S.INPROGRESS, SendEvent.ACCEPT): _S.SUCCESS,
    (_S.FAIL, SendEvent.ACCEPT): _S.SUCCESS,
    (_S.SUCCESS, SendEvent.ACCEPT): _S.SUCCESS,
    (_S.INPROGRESS, SendEvent.FAIL): _S.FAIL,
    (_S.INPROGRESS, SendEvent.INTERRUPT): _S.FAIL,
    (_S.CREATE, SendEvent.STORE): _S.SUCCESS,
    (_S.CREATE, SendEvent.IMPORT): _S.SUCCESS,
    (_S.INPROGRESS, SendEvent.IMPORT): _S.SUCCESS,
}
"""Every legal move of the send status; anything else is refused."""


_State = TypeVar("_State", MessageStatus, DownloadStatus)
_Event = TypeVar("_Event", SendEvent, "DownloadEvent")


def _follow(table: dict[tuple[_State, _Event], _State], state: _State, event: _Event,
            what: str) -> _State:
    """One move of a lifecycle table; INVALID_PARAM naming it when the table has none."""
    try:
        return table[state, event]
    except KeyError:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"{what} that is {state.name} cannot take the event {event.name}") from None


def next_status(status: MessageStatus, event: SendEvent) -> MessageStatus:
    """The status ``event`` moves ``status`` to; INVALID_PARAM when it may not."""
    return _follow(SEND_TRANSITIONS, MessageStatus(status), event, "a message")


def status_after(event: SendEvent) -> dict[MessageStatus, MessageStatus]:
    """Every move ``event`` makes: from -> to (what a bulk SQL update applies)."""
    return {s: to for (s, e), to in SEND_TRANSITIONS.items() if e is event}


def send_move(status: MessageStatus, to: MessageStatus) -> SendEvent:
    """The event that moves ``status`` to ``to``; INVALID_PARAM naming the legal targets when
    there is none (`MessageStore.set_status` changes nothing then)."""
    status, to = MessageStatus(status), MessageStatus(to)
    for (s, event), target in SEND_TRANSITIONS.items():
        if s is status and target is to:
            return event
    legal = sorted({t.name for (s, _), t in SEND_TRANSITIONS.items() if s is status})
    raise IMError(ErrorCode.INVALID_PARAM,
                  f"a {status.name} message cannot become {to.name}; from {status.name} it may "
                  f"become {', '.join(legal) or 'nothing else'}")


_SETTLE = {imported: status_after(SendEvent.IMPORT if imported else SendEvent.STORE)
           for imported in (False, True)}


def settled_status(status: MessageStatus, *, imported: bool) -> MessageStatus:
    """The status a message is stored with when it is inserted: what it was given, moved by
    STORE (or IMPORT) when the table has that move. (On every insert: one dict lookup.)"""
    return _SETTLE[imported].get(status, status)


# -------------------------------------------------------------------------- download status


class DownloadEvent(Enum):
    """What moves the download status of an attachment or a thumbnail."""

    START = "start"
    DONE = "done"
    FAIL = "fail"
    HAVE = "have"  # the file is on this device already (the sender's own upload)


_D = DownloadStatus
DOWNLOAD_TRANSITIONS: dict[tuple[DownloadStatus, DownloadEvent], DownloadStatus] = {
    **{(s, DownloadEvent.START): _D.DOWNLOADING for s in _D},
    **{(s, DownloadEvent.HAVE): _D.SUCCEEDED for s in _D},
    (_D.DOWNLOADING, DownloadEvent.DONE): _D.SUCCEEDED,
    (_D.DOWNLOADING, DownloadEvent.FAIL): _D.FAILED,
}
"""Every legal move of a download status; anything else is refused."""


def download_move(status: DownloadStatus, event: DownloadEvent) -> DownloadStatus:
    """The download status ``event`` moves ``status`` to; INVALID_PARAM when it may not."""
    return _follow(DOWNLOAD_TRANSITIONS, DownloadStatus(status), event, "a download")


# --------------------------------------------------------------------------------- receipts


class ReceiptKind(IntEnum):
    """A one-to-one receipt a peer sends for a message."""

    DELIVERED = 1
    READ = 2

    @property
    def implied(self) -> tuple[ReceiptKind, ...]:
        """The receipts this one means: a read message was delivered."""
        if self is ReceiptKind.READ:
            return (ReceiptKind.DELIVERED, ReceiptKind.READ)
        return (self,)


# ------------------------------------------------------------------------------ who may what


def is_mine(sender: str | None, owner: str | None) -> bool:
    """Whether a message (or receipt) from ``sender`` is the owner's own: None is the owner."""
    return sender is None or sender == owner


def _sent_by_me(msg: Message) -> bool:
    return msg.direction == Direction.SEND


def check_recall(msg: Message) -> None:
    """Only my sent messages that the server has (SUCCESS) may be recalled or edited."""
    if not _sent_by_me(msg) or msg.status != MessageStatus.SUCCESS:
        raise IMError(ErrorCode.INVALID_PARAM,
                      "only your own messages that the server has (SUCCESS) can be changed")


def check_edit(msg: Message, body: Body) -> None:
    """What `check_recall` asks, and: an editable kind, a body of its type, not recalled."""
    check_recall(msg)
    if not kind_of(msg.type).editable or type(body) is not type(msg.body):
        raise IMError(ErrorCode.INVALID_PARAM,
                      "only TEXT and CUSTOM messages can be edited, with a body of their type")
    if msg.recalled_at is not None:
        raise IMError(ErrorCode.MESSAGE_INVALID, f"{msg.msg_id!r} was recalled")


def awaits_send(status: MessageStatus) -> bool:
    """No send is under way for a message with this status and the server has not accepted it:
    a send may leave it (CREATE, FAIL)."""
    return (MessageStatus(status), SendEvent.SEND) in SEND_TRANSITIONS


def check_resend(msg: Message) -> None:
    """Only my messages that a send may leave (CREATE, FAIL) may be sent again."""
    if not _sent_by_me(msg) or not awaits_send(msg.status):
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"only failed messages of your own can be resent; this one is "
                      f"{MessageStatus(msg.status).name}")


def sends_delivery_ack(msg: Message) -> bool:
    """A delivery receipt goes out for a received one-to-one message."""
    return msg.direction == Direction.RECEIVE and msg.chat_type == ChatType.CHAT


def check_read_ack(msg: Message) -> None:
    """Read receipts per message are for one-to-one messages."""
    if msg.chat_type != ChatType.CHAT:
        raise IMError(ErrorCode.INVALID_PARAM,
                      "read receipts per message are for one-to-one chats; use "
                      "ack_group_message_read or store.mark_message_read for groups")


def check_read_ack_here(msg: Message) -> None:
    """What `check_read_ack` asks of a message in the owner's store, and: one received, not
    one's own (its sender has read it: there is nothing to acknowledge)."""
    check_read_ack(msg)
    if _sent_by_me(msg):
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"{msg.msg_id!r} is your own message: read receipts are for messages you "
                      "received (the peer's receipt for it comes in on_messages_read)")


def sends_read_ack(msg: Message) -> bool:
    """A read receipt goes out for a received message only (one's own is just marked read)."""
    return msg.direction == Direction.RECEIVE


def takes_receipt(msg: Message | None) -> bool:
    """A one-to-one receipt that comes in applies to a one-to-one message, or waits for a
    message not stored yet; a group message is read-acked by group receipts."""
    return msg is None or msg.chat_type == ChatType.CHAT


def check_group_read_ack(msg: Message) -> None:
    """Group read receipts are for group messages sent with ``need_group_ack``, by others."""
    if msg.chat_type != ChatType.GROUP_CHAT or not msg.need_group_ack:
        raise IMError(ErrorCode.INVALID_PARAM,
                      "group read receipts are for group messages sent with need_group_ack")
    if _sent_by_me(msg):
        raise IMError(ErrorCode.INVALID_PARAM,
                      "the sender of a group message does not read-ack it")


def counts_group_ack(reader: str, owner: str) -> bool:
    """A group read receipt counts a reader other than the owner (the sender never reads its
    own message)."""
    return not is_mine(reader, owner)
