"""The client's listeners: what an application hears, and the one way the client tells it.

Rules kept here:
- every event is told to every listener in the order they were added, after the store has the
  change it announces;
- a listener's bug never breaks the client: its exception is logged and the next listener runs.
"""

from __future__ import annotations

import logging
from typing import Any

from ..adapters import ConnectionState
from ..message import GroupReadAck, Message, MessageStatus, Reaction

__all__ = ["Listeners", "MessageListener"]

log = logging.getLogger("imstore.client")


class MessageListener:
    """Override what you need; every method does nothing by default."""

    def on_messages_received(self, messages: list[Message]) -> None:
        """Messages arrived and are stored (CMD messages go to `on_cmd_messages_received`)."""

    def on_cmd_messages_received(self, messages: list[Message]) -> None:
        """Commands arrived (never stored)."""

    def on_messages_delivered(self, messages: list[Message]) -> None:
        """Sent messages reached the peer's device."""

    def on_messages_read(self, messages: list[Message]) -> None:
        """The peer read these sent messages."""

    def on_conversation_read(self, conv_id: str, reader: str) -> None:
        """The peer read the whole conversation."""

    def on_group_message_read(self, acks: list[GroupReadAck]) -> None:
        """Members read group messages sent with ``need_group_ack``."""

    def on_message_status_changed(self, message: Message, status: MessageStatus) -> None:
        """A sent message changed status (INPROGRESS, SUCCESS, FAIL)."""

    def on_connection_state_changed(self, state: ConnectionState) -> None:
        """The transport's connection changed state."""

    def on_messages_recalled(self, messages: list[Message]) -> None:
        """Messages were recalled (by this user or their sender): each is now a recall notice,
        with ``recalled_at`` and a blank body."""

    def on_messages_edited(self, messages: list[Message]) -> None:
        """Messages were edited: each has its new body and ``edited_at``."""

    def on_conversations_changed(self, conv_ids: list[str]) -> None:
        """Conversations changed in the store (unread count, last message, activity, title,
        pin, marks, draft, ext; created or deleted): once per write, after it committed, in
        the thread that wrote, whoever wrote (this client, the app, an import)."""

    def on_total_unread_changed(self, total: int) -> None:
        """`MessageStore.total_unread_count` changed; ``total`` is the new count."""

    def on_reactions_changed(self, msg_id: str, reactions: list[Reaction]) -> None:
        """A message's reactions changed (anyone's, this user's included); ``reactions`` are
        all of them now (`MessageStore.reactions`)."""

    def on_pinned_messages_changed(self, conv_id: str, messages: list[Message]) -> None:
        """Messages were pinned or unpinned in a conversation; ``messages`` are its pinned
        messages now, the newest pin first (`MessageStore.pinned_messages`)."""


class Listeners:
    """The listeners of one client."""

    def __init__(self) -> None:
        self._items: list[MessageListener] = []

    def add(self, listener: MessageListener) -> None:
        if listener not in self._items:
            self._items.append(listener)

    def remove(self, listener: MessageListener) -> None:
        if listener in self._items:
            self._items.remove(listener)

    def emit(self, name: str, *args: Any) -> None:
        for listener in list(self._items):
            try:
                getattr(listener, name)(*args)
            except Exception:  # a listener's bug must not break the client
                log.exception("listener %r failed in %s", listener, name)
