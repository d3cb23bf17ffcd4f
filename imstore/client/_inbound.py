"""What the transport brings: messages, receipts, recalls, edits and connection changes (the
client is the transport's `TransportHandler`; these are its handlers).

Rules kept here:
- what arrives is stored before listeners hear of it; CMD messages are only announced;
- a received message stored for the first time, by whichever path (live, offline queue, the
  conversation list, history), is acknowledged as delivered when the lifecycle says so
  (`sends_delivery_ack`), starts its kind's automatic downloads, and is announced once
  (`Inbound.arrived`); a message deleted here never gets there;
- receipts that arrive twice or early are harmless: the store keeps early ones (one-to-one and
  group) until their message is there, and prunes them at each reconnection when it never came;
- one-to-one receipts apply to one-to-one messages (`takes_receipt`); a group receipt from the
  owner is never counted (`counts_group_ack`);
- a conversation read by the owner itself (on another of its devices) marks what was received
  there up to that server time read here too, and nothing goes back to the server; read by
  anyone else, it read-acks the owner's sent messages;
- a recall or an edit without the server's time takes the time it arrived; an edit is applied
  only when it comes from the stored message's sender (a forged one changes nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from ..adapters import ConnectionState
from ..kinds import kind_of
from ..lifecycle import (
    PENDING_RECEIPT_TTL_MS,
    ReceiptKind,
    counts_group_ack,
    is_mine,
    now_ms,
    sends_delivery_ack,
    takes_receipt,
)
from ..message import Direction, GroupReadAck, Message, MessageType
from ..store import MessageStore
from ._attachments import Attachments
from ._gate import ConnectionGate
from ._listeners import Listeners
from ._settings import Settings
from ._units import Units

__all__ = ["Inbound"]

_RECEIPT_EVENTS = {ReceiptKind.DELIVERED: "on_messages_delivered",
                   ReceiptKind.READ: "on_messages_read"}


class Inbound:
    """The transport handler's work for one client."""

    def __init__(self, store: MessageStore, gate: ConnectionGate, units: Units,
                 listeners: Listeners, settings: Settings, attachments: Attachments,
                 live: bool) -> None:
        self._store = store
        self._gate = gate
        self._units = units
        self._listeners = listeners
        self._settings = settings
        self._attachments = attachments
        self._live = live  # a transport delivers live: delivery receipts can go out

    def messages(self, messages: list[Message]) -> None:
        cmds = [m for m in messages if m.type == MessageType.CMD]
        others = [m for m in messages if m.type != MessageType.CMD]
        if cmds:
            self._listeners.emit("on_cmd_messages_received", cmds)
        if others:
            self.arrived(self._store.merge_received(others).new)

    def arrived(self, new: Sequence[Message]) -> None:
        """Messages stored for the first time: the module's rules for them."""
        received = [m for m in new if m.direction == Direction.RECEIVE]
        for m in received:
            if self._settings.require_delivery_ack and self._live and sends_delivery_ack(m):
                self._units.spawn(self._delivery_ack(m))
            for work in self._attachments.auto(m):
                self._units.spawn(work)
        if received:
            self._listeners.emit("on_messages_received", received)

    def _delivery_ack(self, msg: Message) -> Callable[[], Coroutine[Any, Any, None]]:
        async def ack() -> None:
            send = self._gate.method("send_delivery_ack")
            await self._gate.request(lambda: send(msg), self._settings.send_timeout)
        return ack

    def receipts(self, kind: ReceiptKind, msg_ids: list[str]) -> None:
        ids = [i for i in msg_ids if takes_receipt(self._store.get_message(i))]
        changed = self._store.apply_receipts(kind, ids)
        msgs = [m for m in (self._store.get_message(i) for i in changed) if m is not None]
        if msgs:
            self._listeners.emit(_RECEIPT_EVENTS[kind], msgs)

    def conversation_read(self, conv_id: str, reader: str, up_to: int | None) -> None:
        if is_mine(reader, self._store.user_id):
            self._read_on_another_device(conv_id, up_to)
        else:
            self._store.mark_conversation_read_acked(conv_id, up_to)
        self._listeners.emit("on_conversation_read", conv_id, reader)

    def _read_on_another_device(self, conv_id: str, up_to: int | None) -> None:
        if self._store.conversation(conv_id) is None:
            return
        if up_to is None:
            self._store.mark_conversation_read(conv_id)
            return
        stored = [t for t in MessageType if kind_of(t).stored]
        last = self._store.messages_by_type(conv_id, stored, timestamp=up_to + 1, limit=1)
        if last:
            self._store.mark_conversation_read(conv_id, up_to_msg_id=last[-1].msg_id)

    def group_read_acks(self, acks: list[GroupReadAck]) -> None:
        acks = [a for a in acks if counts_group_ack(a.reader, self._store.user_id)]
        if not acks:
            return
        changed = self._store.add_group_acks(acks)  # early ones are kept for `mark_sent`
        heard = [a for a in acks if a.msg_id in changed]
        if heard:
            self._listeners.emit("on_group_message_read", heard)

    def recalled(self, msg_ids: list[str], recalled_by: Mapping[str, str] | None = None) -> None:
        """Recalls that arrived; ``recalled_by`` names who recalled the messages their sender
        did not (a moderator)."""
        changed = self._store.apply_recall(list(msg_ids), now_ms(), recalled_by=recalled_by)
        if changed:
            self._listeners.emit("on_messages_recalled", changed)

    def edited(self, messages: list[Message]) -> None:
        changed = [m for m in (self._store.apply_edit(e.msg_id, e.body, e.edited_at or now_ms())
                               for e in messages if self._from_sender(e)) if m is not None]
        if changed:
            self._listeners.emit("on_messages_edited", changed)

    def _from_sender(self, edit: Message) -> bool:
        here = self._store.get_message(edit.msg_id)
        if here is None or edit.sender is None:
            return True  # nothing to compare (a transport that does not say who edited)
        owner = self._store.user_id
        return here.sender == edit.sender or (is_mine(here.sender, owner)
                                              and is_mine(edit.sender, owner))

    def connection_changed(self, state: ConnectionState) -> None:
        self._gate.changed()
        if state == ConnectionState.CONNECTED:
            self.prune(PENDING_RECEIPT_TTL_MS)
        self._listeners.emit("on_connection_state_changed", state)

    def prune(self, older_than_ms: int) -> None:
        self._store.prune_pending_receipts(older_than_ms)
