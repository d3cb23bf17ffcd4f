"""ChatClient: the facade an application holds. It owns no rule of its own: each concern is a
part, as the store's are.

Rules kept here:
- the parts and what each owns: `Listeners` (who hears what), `Units` (background work and
  `wait_idle`), `ConnectionGate` (what a network step does in each connection state: its table),
  `Sender` (sends, their per-conversation queue, uploads, recall and edit), `Inbound` (what the
  transport brings: the client is its `TransportHandler`), `OutgoingReceipts` (read receipts),
  `Attachments` (downloads, driven by `kinds`), `History` (server history and gaps), `Rich`
  (reactions, message pins, the user's conversation pins and marks);
- the client talks to servers only through the adapters and to the database only through
  `MessageStore`; the message lifecycle's rules are `imstore.lifecycle`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

from ..adapters import (
    ConnectionState,
    ConversationState,
    PinEvent,
    ProgressFn,
    ReactionEvent,
    SyncAdapter,
    Transport,
    check_remove_args,
    is_transport,
)
from ..checks import check_recalled_by
from ..errors import ErrorCode, IMError
from ..kinds import AutoDownload
from ..lifecycle import PENDING_RECEIPT_TTL_MS, ReceiptKind
from ..message import (
    Body,
    ChatType,
    Conversation,
    ConversationMark,
    CursorResult,
    Direction,
    FetchOptions,
    GroupReadAck,
    Message,
    Reaction,
)
from ..store import Changes, MessageStore
from ._attachments import TARGETS, Attachments
from ._checks import (
    check_acks,
    check_adapter,
    check_callback,
    check_chat_type,
    check_cursor,
    check_download_dir,
    check_events,
    check_flag,
    check_id,
    check_ids,
    check_listener,
    check_messages,
    check_optional_id,
    check_options,
    check_outgoing,
    check_state,
    check_store,
    check_time,
)
from ._gate import ConnectionGate
from ._history import History, MessagePage
from ._inbound import Inbound
from ._listeners import Listeners, MessageListener
from ._receipts import OutgoingReceipts
from ._rich import Rich
from ._sending import Sender
from ._settings import Settings
from ._units import Units

__all__ = ["ChatClient"]

T = TypeVar("T")


class _Setting(Generic[T]):
    """An attribute of the client that is its `Settings`' field of the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Setting[T]: ...
    @overload
    def __get__(self, obj: ChatClient, objtype: type | None = None) -> T: ...

    def __get__(self, obj: ChatClient | None, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj._settings, self.name)

    def __set__(self, obj: ChatClient, value: T) -> None:
        setattr(obj._settings, self.name, Settings.check(self.name, value))


class ChatClient:
    """Connects a `MessageStore` to a server through a `SyncAdapter` and a `Transport`.

    Args:
        store: the local store.
        adapter: the server's history API.
        transport: real-time delivery; when None, ``adapter`` is used if it has ``attach`` and
            ``send`` (optional transport methods it lacks raise `IMError(SERVICE_NOT_ENABLED)`
            when a feature needs them).
        send_timeout: seconds to wait for the server's answer to a send (and to a receipt).
        reconnect_wait: the longest, in seconds, one send (uploads included) waits in all for a
            RECONNECTING connection to come back before failing with 300; None (the default)
            means three times ``send_timeout``.
        transfer_timeout: seconds an upload or a download may take before failing with 402 / 403.
        require_delivery_ack: send delivery receipts for one-to-one messages received.
        require_read_ack: send read receipts when messages are marked read here.
        auto_download: download what each kind of message downloads by itself as it arrives
            (`kinds.Kind.auto_download`: thumbnails of images and videos, the audio of voice
            messages).
        download_dir: where attachments land (default: ``files/`` in the store's directory; for
            an in-memory store, a temporary directory made at the first download and removed by
            `close`).
    """

    send_timeout = _Setting[float]()
    reconnect_wait = _Setting[float]()
    transfer_timeout = _Setting[float]()
    require_delivery_ack = _Setting[bool]()
    require_read_ack = _Setting[bool]()
    auto_download = _Setting[bool]()

    def __init__(self, store: MessageStore, adapter: SyncAdapter, *,
                 transport: Transport | None = None, send_timeout: float = 10.0,
                 reconnect_wait: float | None = None, transfer_timeout: float = 300.0,
                 require_delivery_ack: bool = True, require_read_ack: bool = True,
                 auto_download: bool = True, download_dir: str | None = None) -> None:
        check_store(store)
        check_adapter(adapter)
        download_dir = check_download_dir(download_dir)
        self._settings = Settings(
            send_timeout,
            Settings.default_wait(send_timeout) if reconnect_wait is None else reconnect_wait,
            transfer_timeout, require_delivery_ack, require_read_ack, auto_download)
        self.store = store
        self.adapter = adapter
        if transport is None and is_transport(adapter):
            transport = adapter  # type: ignore[assignment]
        elif transport is not None and not is_transport(transport):
            raise IMError(ErrorCode.INVALID_PARAM,
                          "transport= needs an object with attach() and send()")
        self.transport = transport
        live = transport is not None
        self._listeners = Listeners()
        self._units = Units()
        self._gate = ConnectionGate(transport, self._units, lambda: self.reconnect_wait)
        self._attachments = Attachments(store, self._gate, self._settings, download_dir)
        self._sender = Sender(store, self._gate, self._units, self._listeners, self._settings)
        self._inbound = Inbound(store, self._gate, self._units, self._listeners, self._settings,
                                self._attachments, live)
        self._receipts = OutgoingReceipts(store, self._gate, self._settings)
        self._rich = Rich(store, self._gate, self._listeners, self._settings)
        self._history = History(store, adapter, self._listeners, self._inbound, self._rich, live)
        # an adapter that keeps state between runs (a sync position) keeps it in the store
        keep = getattr(transport if transport is not None else adapter, "keep_state", None)
        if callable(keep):
            keep(store.adapter_state, store.save_adapter_state)
        if transport is not None:
            transport.attach(self)
        store.add_change_listener(self._store_changed)

    def _store_changed(self, changes: Changes) -> None:
        """The store committed a write: tell the listeners what it changed."""
        self._listeners.emit("on_conversations_changed", sorted(changes.conversations))
        if changes.total_unread is not None:
            self._listeners.emit("on_total_unread_changed", changes.total_unread)

    @property
    def download_dir(self) -> str:
        """Where attachments land (see the class's ``download_dir``)."""
        return self._attachments.download_dir

    def close(self) -> None:
        """Let go of what the client made: its temporary download folder, if any, and its
        hold on the store's change notices. The store and the transport are the caller's to
        close."""
        self.store.remove_change_listener(self._store_changed)
        self._attachments.close()

    # ---------------------------------------------------------------------------- listeners

    def add_listener(self, listener: MessageListener) -> None:
        self._listeners.add(check_listener(listener))

    def remove_listener(self, listener: MessageListener) -> None:
        self._listeners.remove(check_listener(listener))

    async def wait_idle(self) -> None:
        """Wait until the client is idle: every send under way, receipt going out and automatic
        download is done, or waits for the connection to come back (RECONNECTING: then it
        returns with those parked, and a later call after the reconnection waits for them).
        Tests use it instead of sleeping; it is part of the public testing contract."""
        await self._units.wait_idle()

    # ------------------------------------------------------------------------------ sending

    async def send_message(self, msg: Message, *, progress: ProgressFn | None = None) -> Message:
        """Send a message; returns it with the server's id and time and status SUCCESS.
        ``progress(done, total)`` hears how the attachment's upload goes.

        Sends of one conversation leave in the order of the calls. While the connection is
        RECONNECTING the message (and its upload) waits and goes out after the reconnection.

        Raises `IMError`: the codec's codes for a bad message (nothing is stored), 402 when an
        upload fails or outlasts ``transfer_timeout``, 510 when the connection is down and not
        reconnecting, 300 when the server did not answer twice (once before and once after
        reconnecting) or the connection stayed RECONNECTING longer than ``reconnect_wait``,
        500 when the server's id for it is already another conversation's. On failure the stored
        message is FAIL; `resend_message` tries again.
        """
        check_outgoing(msg, self.store.user_id)
        check_callback(progress)
        return await self._sender.send(msg, progress)

    async def resend_message(self, msg_id: str, *, progress: ProgressFn | None = None) -> Message:
        """Send again a message that failed (it keeps its local id, so a server that did get it
        the first time answers with the first result and delivers it once)."""
        check_id(msg_id, "msg_id")
        check_callback(progress)
        return await self._sender.resend(msg_id, progress)

    async def recall_message(self, msg_id: str) -> Message:
        """Recall one of your sent messages for every member (offline ones when they return):
        it becomes a recall notice (same id, type, sender and times; blank body; ``recalled_at``
        set) and leaves search. Returns the notice.

        Raises `IMError`: MESSAGE_EXPIRED past the server's recall window, INVALID_PARAM for a
        message that is not yours or not sent, SERVICE_NOT_ENABLED when the transport has no
        ``recall_message``.
        """
        check_id(msg_id, "msg_id")
        return await self._sender.recall(msg_id)

    async def edit_message(self, msg_id: str, body: Body) -> Message:
        """Replace the content of one of your sent TEXT or CUSTOM messages for every member;
        returns it with the new body and ``edited_at``. Search finds the new content only.

        Raises `IMError`: INVALID_PARAM for another type or a body of another type, the codec's
        codes for a body that breaks the limits, SERVICE_NOT_ENABLED when the transport has no
        ``edit_message``.
        """
        check_id(msg_id, "msg_id")
        return await self._sender.edit(msg_id, body)

    # ------------------------------------------------------------------ transport handler

    def on_messages(self, messages: list[Message]) -> None:
        self._inbound.messages(check_messages(messages))

    def on_delivery_acks(self, msg_ids: list[str]) -> None:
        self._inbound.receipts(ReceiptKind.DELIVERED, check_ids(msg_ids, "msg_ids"))

    def on_read_acks(self, msg_ids: list[str]) -> None:
        self._inbound.receipts(ReceiptKind.READ, check_ids(msg_ids, "msg_ids"))

    def on_conversation_read(self, conv_id: str, reader: str, up_to: int | None = None) -> None:
        check_id(conv_id, "conv_id")
        check_id(reader, "reader")
        if up_to is not None:
            check_time(up_to, "up_to")
        self._inbound.conversation_read(conv_id, reader, up_to)

    def on_group_read_acks(self, acks: list[GroupReadAck]) -> None:
        self._inbound.group_read_acks(check_acks(acks))

    def on_messages_recalled(self, msg_ids: list[str],
                             recalled_by: Mapping[str, str] | None = None) -> None:
        self._inbound.recalled(check_ids(msg_ids, "msg_ids"), check_recalled_by(recalled_by))

    def on_messages_edited(self, messages: list[Message]) -> None:
        self._inbound.edited(check_messages(messages))

    def on_connection_state_changed(self, state: ConnectionState) -> None:
        self._inbound.connection_changed(check_state(state))

    def on_reactions(self, events: list[ReactionEvent]) -> None:
        self._rich.reactions(check_events(events, ReactionEvent))

    def on_message_pins(self, events: list[PinEvent]) -> None:
        self._rich.pins(check_events(events, PinEvent))

    def on_conversation_states(self, states: list[ConversationState]) -> None:
        self._rich.conversation_states(check_events(states, ConversationState, "states"))

    def prune_pending_receipts(self, older_than_ms: int = PENDING_RECEIPT_TTL_MS) -> None:
        """Forget receipts (group ones included) kept for messages that never arrived, once
        they are older than ``older_than_ms``. Runs at every reconnection."""
        self._inbound.prune(older_than_ms)

    # ------------------------------------------------------------------------ rich messages

    async def add_reaction(self, msg_id: str, key: str) -> list[Reaction]:
        """React with ``key`` (an emoji, or any short text) to a message the server has, for
        every member; returns the message's reactions after (`MessageStore.reactions`).
        Listeners hear `on_reactions_changed` when they changed. SERVICE_NOT_ENABLED when the
        transport has no ``send_reaction``."""
        check_id(msg_id, "msg_id")
        check_id(key, "key")
        return await self._rich.add_reaction(msg_id, key)

    async def remove_reaction(self, msg_id: str, key: str) -> list[Reaction]:
        """Take back your reaction ``key`` to a message, for every member; returns the
        message's reactions after (unchanged when you had none with that key)."""
        check_id(msg_id, "msg_id")
        check_id(key, "key")
        return await self._rich.remove_reaction(msg_id, key)

    async def pin_message(self, msg_id: str, pinned: bool = True) -> bool:
        """Pin (or unpin) a message the server has in its conversation, for every member
        (`MessageStore.pinned_messages`); returns whether that changed anything here."""
        check_id(msg_id, "msg_id")
        return await self._rich.pin_message(msg_id, check_flag(pinned, "pinned"))

    async def pin_conversation(self, conv_id: str, pinned: bool = True) -> bool:
        """Pin (or unpin) a conversation on all your devices (`MessageStore.pin_conversation`
        is the local-only form); returns whether that changed anything here."""
        check_id(conv_id, "conv_id")
        return await self._rich.pin_conversation(conv_id, check_flag(pinned, "pinned"))

    async def set_conversation_marks(self, conv_id: str, *, add: str | Sequence[str] = (),
                                     remove: str | Sequence[str] = ()) -> frozenset[str]:
        """Add and remove marks of a conversation on all your devices (the server keeps them);
        returns its marks after. `MessageStore.set_conversation_marks` is the local-only form."""
        check_id(conv_id, "conv_id")
        return await self._rich.set_marks(conv_id, add, remove)

    async def mark_conversation_unread(self, conv_id: str) -> frozenset[str]:
        """Add `ConversationMark.UNREAD` on all your devices (a badge with no unread message;
        reading the conversation clears it); returns the conversation's marks after."""
        check_id(conv_id, "conv_id")
        return await self._rich.set_marks(conv_id, ConversationMark.UNREAD.value, ())

    # ----------------------------------------------------------------------------- receipts

    async def ack_message_read(self, msg_id: str) -> None:
        """Mark a received one-to-one message read here and tell its sender (when read receipts
        are on). Group messages take `ack_group_message_read` (INVALID_PARAM here)."""
        check_id(msg_id, "msg_id")
        await self._receipts.message_read(msg_id)

    async def ack_conversation_read(self, conv_id: str, *,
                                    up_to_msg_id: str | None = None) -> None:
        """Mark a conversation read here, all of it or (``up_to_msg_id``) up to and including
        that message (Tencent's clean-up-to), and tell the server and the peer up to which
        message: the user's read position on the server moves there (never backwards)."""
        check_id(conv_id, "conv_id")
        check_optional_id(up_to_msg_id, "up_to_msg_id")
        await self._receipts.conversation_read(conv_id, up_to_msg_id)

    async def ack_group_message_read(self, msg_id: str) -> None:
        """Read receipt for a group message someone else sent with ``need_group_ack``; it is
        marked read here either way, and the receipt goes out when ``require_read_ack``."""
        check_id(msg_id, "msg_id")
        await self._receipts.group_message_read(msg_id)

    async def fetch_group_read_acks(self, msg_id: str, *, cursor: str | None = None,
                                    limit: int = 20) -> CursorResult[GroupReadAck]:
        """A page of a group message's readers; the stored ``group_ack_count`` follows them."""
        check_id(msg_id, "msg_id")
        check_cursor(cursor)
        return await self._receipts.fetch_group_read_acks(msg_id, cursor, limit)

    # -------------------------------------------------------------------------- attachments

    async def download_attachment(self, msg_id: str, *,
                                  progress: ProgressFn | None = None) -> Message:
        """Download a message's file (image, voice, video, file); returns the updated message
        with ``body.local_path`` and ``body.download_status``."""
        check_id(msg_id, "msg_id")
        check_callback(progress)
        return await self._attachments.download(msg_id, TARGETS[AutoDownload.FILE], progress)

    async def download_thumbnail(self, msg_id: str) -> Message:
        """Download the thumbnail of an image or video message; returns the updated message
        with ``body.thumbnail_path`` and ``body.thumbnail_status``."""
        check_id(msg_id, "msg_id")
        return await self._attachments.download(msg_id, TARGETS[AutoDownload.THUMBNAIL])

    # ------------------------------------------------------------------------------ history

    async def fetch_conversations_from_server(self, *, cursor: str | None = None,
                                              limit: int = 20) -> CursorResult[Conversation]:
        """A page of the user's server conversations, merged into the store (with their last
        messages, unread when the server says the user has not read them, and announced like
        any message first seen); returns the local view of them. A conversation cleared on this
        device whose last message is one it deleted is not listed again."""
        check_cursor(cursor)
        return await self._history.conversations(cursor, limit)

    async def fetch_history_messages(self, conv_id: str, chat_type: ChatType, *,
                                     cursor: str | None = None, limit: int = 20,
                                     options: FetchOptions | None = None
                                     ) -> CursorResult[Message]:
        """A page of a conversation's server history (oldest first within the page). With
        ``options.save`` the page is merged into the store in one transaction: no duplicates,
        local read state kept (a message the server says is read becomes read), a message new
        here unread when the server says the user has not read it (then announced, once),
        nothing deleted here brought back; an unfiltered page also records the stretch it
        proves contiguous with the server (`MessageStore.gaps`)."""
        check_id(conv_id, "conv_id")
        check_chat_type(chat_type)
        check_cursor(cursor)
        check_options(options)
        return await self._history.fetch(conv_id, chat_type, cursor, limit, options)

    async def load_messages(self, conv_id: str, chat_type: ChatType, *,
                            start_msg_id: str | None = None, limit: int = 20,
                            direction: Direction = Direction.UP) -> MessagePage:
        """What `MessageStore.messages` would return if the store held the whole conversation:
        the local page, with every gap in its way fetched from the server first (saved, so the
        gap closes; deleted messages stay out; read state as the server says, counted once).

        Returns a `MessagePage` (a list of messages, oldest first). When the server cannot be
        reached it holds what is local (`MessageStore.messages`) and its ``complete`` is False.
        """
        check_chat_type(chat_type)
        return await self._history.load(conv_id, chat_type, start_msg_id, limit, direction)

    async def remove_messages_from_server(self, conv_id: str, chat_type: ChatType, *,
                                          msg_ids: Sequence[str] | None = None,
                                          before: int | None = None) -> int:
        """Delete messages from this user's server history (other members keep them) and from
        the store: by ids, or every message older than ``before`` (ms). Returns how many were
        removed locally."""
        check_id(conv_id, "conv_id")
        check_chat_type(chat_type)
        if msg_ids is not None:
            msg_ids = check_ids(msg_ids, "msg_ids")
        if before is not None:
            check_time(before, "before")
        check_remove_args(msg_ids, before)
        return await self._history.remove(conv_id, chat_type, msg_ids, before)

    async def delete_conversation_from_server(self, conv_id: str, chat_type: ChatType, *,
                                              delete_messages: bool = True) -> None:
        """Delete a conversation on the server (with its history unless ``delete_messages`` is
        False) and locally."""
        check_id(conv_id, "conv_id")
        check_chat_type(chat_type)
        check_flag(delete_messages, "delete_messages")
        await self._history.delete_conversation(conv_id, chat_type, delete_messages)
