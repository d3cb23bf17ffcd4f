"""Receipts on the reference server: delivery, read, conversation and group read receipts.

Rules kept here:
- one-to-one receipts (delivery, read) only for one-to-one messages and only from their receiver;
- group read receipts only for group messages sent with ``need_group_ack``, only from members
  other than the sender, and only within `GROUP_ACK_DAYS`; a member's first receipt of a message
  is announced to the sender, later ones change nothing;
- a read receipt or conversation ack moves the reader's read position (never backwards); the
  sender (the peer, for a conversation ack in a one-to-one chat) hears it now or on reconnection;
- every read (read receipt, conversation ack, group read receipt) reaches the reader's other
  devices as ``on_conversation_read(conv, reader, up_to)`` with the reader itself as reader, so
  reading on one device clears unread on the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import ErrorCode, IMError
from ...lifecycle import (
    DAY_MS,
    check_group_read_ack,
    check_read_ack,
    sends_delivery_ack,
    sends_read_ack,
)
from ...message import ChatType, CursorResult, GroupReadAck, Message, conversation_id
from .. import check_page_size
from .._cursor import decode_cursor, encode_cursor
from ._delivery import Delivery
from ._history import History
from ._state import GROUP_ACK_DAYS, Conv, Directory

if TYPE_CHECKING:
    from ._connection import MemoryConnection

__all__ = ["Receipts"]


class Receipts:
    """Receipts: checked, recorded, and announced through `Delivery`."""

    def __init__(self, directory: Directory, history: History, delivery: Delivery,
                 clock: Callable[[], int]) -> None:
        self.directory = directory
        self.history = history
        self.delivery = delivery
        self.clock = clock
        self.group_acks: dict[str, dict[str, int]] = {}  # msg id -> reader -> time

    def _received(self, user: str, msg_id: str, what: str,
                  sends: Callable[[Message], bool]) -> tuple[Conv, Message]:
        """The one-to-one message ``msg_id`` that ``user`` received, for a receipt the
        lifecycle's ``sends`` rule lets it send."""
        conv, stored = self.directory.stored(msg_id)
        m = stored.msg
        if user not in conv.members or not sends(self.history.view(m, user)):
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{what} are for one-to-one messages, from their receiver: {user!r} "
                          f"did not receive the one-to-one message {msg_id!r}")
        return conv, m

    def delivery_ack(self, user: str, msg_id: str) -> None:
        _, m = self._received(user, msg_id, "delivery receipts", sends_delivery_ack)
        self.delivery.emit(m.sender, "on_delivery_acks", [msg_id])

    def _read_elsewhere(self, user: str, conv_id: str, up_to: int,
                        by: MemoryConnection | None) -> None:
        self.delivery.emit(user, "on_conversation_read", conv_id, user, up_to, skip=by)

    def read_ack(self, user: str, msg_id: str, by: MemoryConnection | None = None) -> None:
        check_read_ack(self.directory.stored(msg_id)[1].msg)
        conv, m = self._received(user, msg_id, "read receipts", sends_read_ack)
        self.history.move_read_position(user, conv.key, m.server_time or 0)
        self.delivery.emit(m.sender, "on_read_acks", [msg_id])
        self._read_elsewhere(user, conversation_id(m.chat_type, m.to, m.sender, user),
                            m.server_time or 0, by)

    def conversation_ack(self, user: str, conv_id: str, chat_type: ChatType,
                         up_to: int | None, by: MemoryConnection | None = None) -> None:
        members = self.directory.members(user, conv_id, chat_type)
        conv = self.directory.conversation_of(user, conv_id, chat_type)
        if up_to is None:
            newest = [s.msg.server_time or 0 for s in conv.messages] if conv else []
            up_to = max(newest, default=0)
        if conv is not None:
            self.history.move_read_position(user, conv.key, up_to)
        if chat_type == ChatType.CHAT and conv_id in members:
            self.delivery.emit(conv_id, "on_conversation_read", user, user, up_to)
        self._read_elsewhere(user, conv_id, up_to, by)

    def group_ack(self, user: str, msg_id: str, by: MemoryConnection | None = None
                  ) -> GroupReadAck:
        conv, stored = self.directory.stored(msg_id)
        m = stored.msg
        check_group_read_ack(self.history.view(m, user))
        if user not in conv.members:
            raise IMError(ErrorCode.INVALID_PARAM, f"{user!r} is not a member of {m.to!r}")
        if (m.server_time or 0) < self.clock() - GROUP_ACK_DAYS * DAY_MS:
            raise IMError(ErrorCode.MESSAGE_EXPIRED,
                          f"group read receipts are taken for {GROUP_ACK_DAYS} days only")
        readers = self.group_acks.setdefault(msg_id, {})
        first = user not in readers
        readers.setdefault(user, self.clock())
        ack = GroupReadAck(msg_id, m.to, user, readers[user], f"A{msg_id}:{user}")
        self.history.move_read_position(user, conv.key, m.server_time or 0)
        if first:
            self.delivery.emit(m.sender, "on_group_read_acks", [ack])
        self._read_elsewhere(user, m.to, m.server_time or 0, by)
        return ack

    def readers(self, msg_id: str, cursor: str | None, limit: int) -> CursorResult[GroupReadAck]:
        """The readers of a group message, in the order they read it."""
        check_page_size(limit)
        _, stored = self.directory.stored(msg_id)
        start = decode_cursor(cursor, "a", int)[0] if cursor else 0
        readers = list(self.group_acks.get(msg_id, {}).items())
        page = readers[start:start + limit]
        more = start + limit < len(readers)
        conv_id = stored.msg.to
        return CursorResult([GroupReadAck(msg_id, conv_id, r, t, f"A{msg_id}:{r}") for r, t in page],
                            encode_cursor("a", start + limit) if more else None)
