"""The two ways imstore talks to a server: `SyncAdapter` (history) and `Transport` (real time).

Both are `typing.Protocol`s: implement them for your server and hand them to `ChatClient`.
`MemoryServer.connect` returns one object implementing both; it is the worked example.

Rules every adapter keeps:
- **Cursors** are opaque strings made by the adapter; ``None`` as an argument means "from the
  start", ``None`` in a `CursorResult` means "no next page". A cursor stays valid while new
  messages arrive: paging on never skips or repeats a message.
- **Pages** hold their items oldest first. With ``Direction.UP`` the first page is the newest
  one and later pages go back in time; with ``Direction.DOWN`` the first page is the oldest.
- **Messages** come back as the user sees them: ``conv_id`` is the peer for one-to-one chats,
  ``direction`` is SEND for the user's own messages, ``msg_id`` and ``server_time`` are the
  server's.
- **Errors** are `IMError`: NETWORK_ERROR / SERVER_NOT_REACHABLE when the server cannot be
  reached, SERVER_TIMEOUT / SERVER_BUSY / SERVER_UNKNOWN_ERROR for the server's own failures,
  QUERY_PARAM_REACHES_LIMIT for a page size outside 1-50, INVALID_PARAM for other bad arguments,
  CONVERSATION_NOT_EXIST, MESSAGE_WEBSOCKET_DISCONNECTED when a transport is down. `ChatClient`
  maps a send that does not answer within its time-out itself; a transport need not.
- **A transport is any object with ``attach`` and ``send``** (`is_transport`). Every other
  `Transport` method is optional: `ChatClient` raises `IMError(SERVICE_NOT_ENABLED)` naming the
  missing method when a feature needs it (`transport_method`).
- **Sends are idempotent by local id**: ``send(message)`` carries the sender's local id in
  ``message.msg_id`` on the first try and on every retry; the server de-duplicates by (sender,
  that id), answers a retry with the first result, and carries the id back as ``local_id`` on the
  sender's own messages in history.
- **Rich messages** (`_rich`): reactions, message pins and each user's conversation pins and
  marks are optional transport methods like the others; what the server says about them arrives
  through optional handler methods (`TransportHandler.on_reactions`, ``on_message_pins``,
  ``on_conversation_states``: a transport calls them only on handlers that have them) and
  beside a history page (`HistoryPage`). A change is attributed to the connection's user: a
  server never takes one user's reaction, pin or mark as another's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

from ..errors import ErrorCode, IMError
from ..message import (
    Body,
    ChatType,
    Conversation,
    CursorResult,
    FetchOptions,
    GroupReadAck,
    Message,
)
from ._rich import ConversationState, HistoryPage, PinEvent, ReactionEvent

__all__ = [
    "MAX_PAGE",
    "MAX_REMOVE_IDS",
    "OPTIONAL_HANDLER_METHODS",
    "RECALL_WINDOW_MS",
    "ConnectionState",
    "ConversationState",
    "HistoryPage",
    "PinEvent",
    "ReactionEvent",
    "RemoteFile",
    "SendResult",
    "SyncAdapter",
    "Transport",
    "TransportHandler",
    "check_page_size",
    "check_remove_args",
    "is_transport",
    "takes_recalled_by",
    "transport_method",
]

MAX_PAGE = 50
"""The largest page an adapter is asked for (the product's history API limit)."""


RECALL_WINDOW_MS = 120_000
"""How long after sending a message its sender may recall it, unless a server says otherwise."""


MAX_REMOVE_IDS = 50
"""The most message ids one one-way delete (`SyncAdapter.remove_messages`) may name."""


def check_remove_args(msg_ids: Sequence[str] | None, before: int | None) -> None:
    """Raise `IMError(INVALID_PARAM)` unless exactly one of ``msg_ids`` (1-`MAX_REMOVE_IDS` ids)
    and ``before`` is given: the rule of `SyncAdapter.remove_messages`."""
    if (msg_ids is None) == (before is None):
        raise IMError(ErrorCode.INVALID_PARAM, "give either msg_ids or before, not both")
    if msg_ids is not None and not 1 <= len(msg_ids) <= MAX_REMOVE_IDS:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"delete 1 to {MAX_REMOVE_IDS} messages per call, not {len(msg_ids)}")


def check_page_size(limit: int) -> None:
    """Raise `IMError(QUERY_PARAM_REACHES_LIMIT)` for a page size outside 1-`MAX_PAGE`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise IMError(ErrorCode.QUERY_PARAM_REACHES_LIMIT,
                      f"page size must be 1 to {MAX_PAGE}, not {limit!r}")


OPTIONAL_HANDLER_METHODS = frozenset({"on_reactions", "on_message_pins", "on_conversation_states"})
"""`TransportHandler` methods a handler may lack: a transport calls them only when it has them."""


ProgressFn = Callable[[int, int], None]
"""Progress of a transfer: (bytes done, bytes in all)."""


class ConnectionState(IntEnum):
    CONNECTED = 1
    RECONNECTING = 2
    DISCONNECTED = 3


@dataclass(frozen=True, slots=True)
class SendResult:
    """The server's answer to a send: its id for the message and its time (ms)."""

    msg_id: str
    server_time: int


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """An uploaded file: where the server keeps it, an access secret, a thumbnail if it made one."""

    url: str
    secret: str | None = None
    thumbnail_url: str | None = None


@runtime_checkable
class SyncAdapter(Protocol):
    """The server's history API."""

    async def fetch_conversations(self, cursor: str | None, limit: int
                                  ) -> CursorResult[Conversation]:
        """The user's conversations, most recently active first, each with its last message."""
        ...

    async def fetch_history(self, conv_id: str, chat_type: ChatType, cursor: str | None,
                            limit: int, options: FetchOptions) -> CursorResult[Message]:
        """A page of one conversation's history as the user sees it (one-way deletes applied,
        the plan's retention applied), filtered by ``options`` (types, sender, time range)."""
        ...

    async def remove_messages(self, conv_id: str, chat_type: ChatType,
                              msg_ids: Sequence[str] | None, before: int | None) -> None:
        """Delete messages from this user's server history only (by ids, at most 50, or all
        older than ``before`` ms). Other members still see them."""
        ...

    async def delete_conversation(self, conv_id: str, chat_type: ChatType,
                                  delete_messages: bool) -> None:
        """Delete a conversation (and, if asked, its history) on the server."""
        ...


@runtime_checkable
class TransportHandler(Protocol):
    """What a transport calls when something arrives. `ChatClient` is one.

    Call these from the event loop's thread, in the order the server sent things: receipts for a
    message never before the message itself.
    """

    def on_messages(self, messages: list[Message]) -> None:
        """Messages for this user (CMD included), as the user sees them."""
        ...

    def on_delivery_acks(self, msg_ids: list[str]) -> None:
        """One-to-one messages this user sent reached the peer's device (server ids)."""
        ...

    def on_read_acks(self, msg_ids: list[str]) -> None:
        """The peer read these one-to-one messages this user sent (server ids)."""
        ...

    def on_conversation_read(self, conv_id: str, reader: str, up_to: int | None = None) -> None:
        """``reader`` read the conversation up to the message with server time ``up_to``: only
        SUCCESS sent messages with server time <= ``up_to`` become read-acked (None: every
        SUCCESS sent message already sent). Transports that know no position may omit it."""
        ...

    def on_messages_recalled(self, msg_ids: list[str],
                             recalled_by: Mapping[str, str] | None = None) -> None:
        """These messages (server ids) were recalled: they become recall notices.
        ``recalled_by`` maps those recalled by someone other than their sender (a moderator)
        to who did. Handlers written before it take only ``msg_ids``: a transport passes
        ``recalled_by`` only when it names someone and `takes_recalled_by` says the handler
        takes it."""
        ...

    def on_messages_edited(self, messages: list[Message]) -> None:
        """These messages were edited: each carries its server ``msg_id``, the new ``body`` and
        ``edited_at``."""
        ...

    def on_group_read_acks(self, acks: list[GroupReadAck]) -> None:
        """Members read group messages this user sent with ``need_group_ack``."""
        ...

    def on_connection_state_changed(self, state: ConnectionState) -> None:
        """The connection changed state; call it on every change."""
        ...

    # Optional (`OPTIONAL_HANDLER_METHODS`): a handler written before rich messages lacks
    # these; a transport calls them only when the handler has them.

    def on_reactions(self, events: list[ReactionEvent]) -> None:
        """Reactions were added or removed (by any member, this user's other devices included),
        in the order they happened."""
        ...

    def on_message_pins(self, events: list[PinEvent]) -> None:
        """Messages were pinned or unpinned in their conversations (by any member)."""
        ...

    def on_conversation_states(self, states: list[ConversationState]) -> None:
        """This user's pin or marks of conversations changed on another of its devices: each is
        the conversation's whole state now (the newest last)."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Real-time delivery, receipts and files.

    Only `attach` and `send` are required (see `is_transport`); ``state`` defaults to CONNECTED
    when a transport has none, and every other method is optional: a feature that needs a missing
    one raises `IMError(SERVICE_NOT_ENABLED)` naming it. (``isinstance(x, Transport)`` tells
    whether ``x`` has every method; `ChatClient` asks `is_transport` instead.)

    ``state`` is the connection's state now; the transport reports every change through
    ``handler.on_connection_state_changed`` and everything that arrives through the handler given
    to `attach`. `send` raises `IMError(MESSAGE_WEBSOCKET_DISCONNECTED)` when the connection is
    down; it may simply never answer when an answer is lost (the client times out). While the
    state is RECONNECTING the client holds its sends and retries them, with the same local id,
    once the state is CONNECTED again.
    """

    state: ConnectionState

    def attach(self, handler: TransportHandler) -> None: ...

    async def send(self, message: Message) -> SendResult:
        """Send a message (attachments already uploaded). ``message.msg_id`` is the sender's
        local id, the same on every retry: the server de-duplicates by (sender, local id),
        answers a retry with the first result and delivers the message once. Messages must reach
        receivers in the order their sends were answered."""
        ...

    async def reconnect(self) -> None:
        """Re-establish the connection; raises `IMError(SERVER_NOT_REACHABLE)` when it cannot."""
        ...

    async def send_delivery_ack(self, message: Message) -> None:
        """Tell a one-to-one message's sender that it reached this device."""
        ...

    async def send_read_ack(self, message: Message) -> None:
        """Tell a message's sender that this user read it."""
        ...

    async def send_conversation_ack(self, conv_id: str, chat_type: ChatType,
                                    up_to: int | None = None) -> None:
        """Tell the peer that this user read the conversation up to the message with server time
        ``up_to`` (None: everything up to now). The client passes ``up_to`` only to transports
        whose method takes it."""
        ...

    async def send_group_read_ack(self, message: Message) -> None:
        """Record this user as a reader of a group message sent with ``need_group_ack``."""
        ...

    async def fetch_group_read_acks(self, msg_id: str, cursor: str | None, limit: int
                                    ) -> CursorResult[GroupReadAck]:
        """The readers of a group message, in the order they read it."""
        ...

    async def upload(self, path: str, *, progress: ProgressFn | None = None) -> RemoteFile:
        """Upload a local file; raises `IMError(FILE_UPLOAD_FAILED)` on failure."""
        ...

    async def download(self, url: str, dest: str, *, progress: ProgressFn | None = None) -> None:
        """Download ``url`` to the local path ``dest``; `IMError(FILE_DOWNLOAD_FAILED)` on failure."""
        ...

    async def recall_message(self, message: Message) -> int:
        """Recall one of this user's sent messages (by its server ``msg_id``) for every member;
        returns the server time of the recall. `IMError(MESSAGE_EXPIRED)` past the server's recall
        window."""
        ...

    async def edit_message(self, message: Message, body: Body) -> int:
        """Replace the content of one of this user's sent TEXT or CUSTOM messages (by its server
        ``msg_id``) for every member; returns the server time of the edit (``edited_at``)."""
        ...

    async def send_reaction(self, message: Message, key: str) -> str:
        """React with ``key`` to a message (by its server ``msg_id``) as this user; returns the
        server's id of the reaction (the first one's when the user had reacted so already).
        Every member hears `ReactionEvent` (this user's other devices too)."""
        ...

    async def remove_reaction(self, message: Message, reaction_id: str) -> None:
        """Take back this user's reaction ``reaction_id`` to ``message``. Someone else's reaction
        is `IMError(INVALID_PARAM)` and changes nothing; one already taken back is not an
        error."""
        ...

    async def pin_message(self, message: Message, pinned: bool) -> int:
        """Pin (or unpin) a message in its conversation for every member; returns the server
        time of the change (of the first pin when it was pinned already)."""
        ...

    async def pin_conversation(self, conv_id: str, chat_type: ChatType, pinned: bool
                               ) -> int | None:
        """Pin (or unpin) a conversation for this user, on all its devices; returns when it is
        pinned (ms; None: unpinned)."""
        ...

    async def set_conversation_marks(self, conv_id: str, chat_type: ChatType,
                                     add: Sequence[str], remove: Sequence[str]
                                     ) -> frozenset[str]:
        """Add and remove marks of a conversation for this user, on all its devices; returns the
        conversation's marks after."""
        ...


def takes_recalled_by(handler: object) -> bool:
    """Whether ``handler.on_messages_recalled`` takes a second argument (``recalled_by``)."""
    fn = getattr(handler, "on_messages_recalled", None)
    if not callable(fn):
        return False
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params) or sum(
        p.kind in positional for p in params) >= 2


def is_transport(obj: object) -> bool:
    """Whether ``obj`` can serve as a `Transport`: it has ``attach`` and ``send``."""
    return callable(getattr(obj, "attach", None)) and callable(getattr(obj, "send", None))


def transport_method(transport: object, name: str) -> Any:
    """``transport.<name>``, or `IMError(SERVICE_NOT_ENABLED)` naming it when it lacks one."""
    method = getattr(transport, name, None)
    if not callable(method):
        raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                      f"the transport {type(transport).__name__} does not implement {name}(); "
                      f"this feature needs it")
    return method
