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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, runtime_checkable

from ..errors import ErrorCode, IMError
from ..message import ChatType, Conversation, CursorResult, FetchOptions, GroupReadAck, Message

__all__ = [
    "MAX_PAGE",
    "ConnectionState",
    "RemoteFile",
    "SendResult",
    "SyncAdapter",
    "Transport",
    "TransportHandler",
    "check_page_size",
]

MAX_PAGE = 50
"""The largest page an adapter is asked for (the product's history API limit)."""


def check_page_size(limit: int) -> None:
    """Raise `IMError(QUERY_PARAM_REACHES_LIMIT)` for a page size outside 1-`MAX_PAGE`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise IMError(ErrorCode.QUERY_PARAM_REACHES_LIMIT,
                      f"page size must be 1 to {MAX_PAGE}, not {limit!r}")


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
    """What a transport calls when something arrives. `ChatClient` is one."""

    def on_messages(self, messages: list[Message]) -> None: ...
    def on_delivery_acks(self, msg_ids: list[str]) -> None: ...
    def on_read_acks(self, msg_ids: list[str]) -> None: ...
    def on_conversation_read(self, conv_id: str, reader: str) -> None: ...
    def on_group_read_acks(self, acks: list[GroupReadAck]) -> None: ...
    def on_connection_state_changed(self, state: ConnectionState) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """Real-time delivery, receipts and files.

    ``state`` is the connection's state now; the transport reports every change through
    ``handler.on_connection_state_changed`` and everything that arrives through the handler given
    to `attach`. `send` raises `IMError(MESSAGE_WEBSOCKET_DISCONNECTED)` when the connection is
    down; it may simply never answer when an answer is lost (the client times out).
    """

    state: ConnectionState

    def attach(self, handler: TransportHandler) -> None: ...

    async def send(self, message: Message) -> SendResult:
        """Send a message (attachments already uploaded). Sending the same ``msg_id`` twice (a
        retry) must not deliver it twice: the server answers with the first result."""
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

    async def send_conversation_ack(self, conv_id: str, chat_type: ChatType) -> None:
        """Tell the peer that this user read the whole conversation."""
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
