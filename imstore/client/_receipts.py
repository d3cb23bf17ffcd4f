"""Receipts that go out: read receipts for messages, conversations and group messages.

Rules kept here:
- a receipt marks the message (or conversation) read here first, then goes out when
  ``require_read_ack`` is on, through the connection gate like a send, answered within
  ``send_timeout``;
- who may send which receipt is the lifecycle's (`check_read_ack_here`, `sends_read_ack`,
  `check_group_read_ack`);
- a conversation's read position on the server is the newest message here that the server
  stamped (never a local FAIL), and it never moves backwards (the server's rule).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..adapters import check_page_size
from ..errors import ErrorCode, IMError
from ..lifecycle import (
    check_group_read_ack,
    check_read_ack_here,
    counts_group_ack,
    sends_read_ack,
)
from ..message import CursorResult, GroupReadAck, Message
from ..store import MessageStore
from ._gate import ConnectionGate, call
from ._settings import Settings

__all__ = ["OutgoingReceipts"]


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` accepts a keyword argument ``name`` (older transports may not)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


class OutgoingReceipts:
    """Read receipts of one client."""

    def __init__(self, store: MessageStore, gate: ConnectionGate, settings: Settings) -> None:
        self._store = store
        self._gate = gate
        self._settings = settings

    def stored(self, msg_id: str) -> Message:
        msg = self._store.get_message(msg_id)
        if msg is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
        return msg

    async def _send(self, method: str, *args: Any, **kw: Any) -> None:
        send = self._gate.method(method)
        await self._gate.request(lambda: send(*args, **kw), self._settings.send_timeout)

    async def message_read(self, msg_id: str) -> None:
        msg = self.stored(msg_id)
        check_read_ack_here(msg)
        self._store.mark_message_read(msg.msg_id)
        if self._settings.require_read_ack and sends_read_ack(msg):
            await self._send("send_read_ack", msg)

    async def conversation_read(self, conv_id: str, up_to_msg_id: str | None) -> None:
        conv = self._store.conversation(conv_id)
        if conv is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST, f"there is no conversation {conv_id!r}")
        if up_to_msg_id is not None:
            last = self.stored(up_to_msg_id)
            stamped = [last.server_time] if last.server_time is not None else [
                m.server_time for m in self._store.messages(conv_id, start_msg_id=last.msg_id,
                                                            limit=20)
                if m.server_time is not None]
        else:
            stamped = [m.server_time for m in self._store.messages(conv_id, limit=20)
                       if m.server_time is not None]
        up_to = max(stamped, default=None)
        self._store.mark_conversation_read(conv_id, up_to_msg_id=up_to_msg_id)
        if not self._settings.require_read_ack:
            return
        send = self._gate.method("send_conversation_ack")
        if up_to is not None and _takes(send, "up_to"):
            await self._send("send_conversation_ack", conv_id, conv.chat_type, up_to=up_to)
        else:
            await self._send("send_conversation_ack", conv_id, conv.chat_type)

    async def group_message_read(self, msg_id: str) -> None:
        msg = self.stored(msg_id)
        check_group_read_ack(msg)
        self._store.mark_message_read(msg.msg_id)
        if self._settings.require_read_ack:
            await self._send("send_group_read_ack", msg)

    async def fetch_group_read_acks(self, msg_id: str, cursor: str | None,
                                    limit: int) -> CursorResult[GroupReadAck]:
        check_page_size(limit)
        fetch = self._gate.method("fetch_group_read_acks")
        page: CursorResult[GroupReadAck] = await call(fetch(msg_id, cursor, limit))
        self._store.add_group_acks([a for a in page.items
                                    if counts_group_ack(a.reader, self._store.user_id)])
        return page
