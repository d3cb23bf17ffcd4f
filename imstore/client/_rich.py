"""Rich messages through the server: reactions, message pins, and the user's conversation pins
and marks, both ways (what this user does, and what the transport says others did).

Rules kept here:
- what this user does goes to the server first and is stored as the server answered it (its
  reaction id, its times); nothing is stored when the server refuses, and a transport without the
  method raises `IMError(SERVICE_NOT_ENABLED)` naming it;
- a reaction or a pin names a message the server has (sent or received, with the server's id);
  a reaction of this user the server never numbered was never sent: taking it back is local;
- what the transport says is applied as said, attributed to its sender; a removal is applied
  only to the sender's own reaction (a reaction id that is someone else's changes nothing);
  reactions and pins of messages not stored here are not kept; what the store refuses is
  logged and skipped, never raised into the transport;
- listeners hear `on_reactions_changed(msg_id, reactions)` once per message whose reactions
  changed and `on_pinned_messages_changed(conv_id, messages)` once per conversation whose pins
  changed, after the store has the change; the conversation's own changes (pin, marks) reach
  them through the store's change feed (`on_conversations_changed`);
- a conversation's state from the server is its whole state (pin and marks): applied in one go,
  the newest of a batch only; the conversation list gives the pin and marks of a conversation
  new on this device (later changes come as states; a mark read away here, e.g. UNREAD without
  a receipt, is not brought back), and never takes any away (a server that does not carry them
  says nothing).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence

from ..adapters import ConversationState, PinEvent, ReactionEvent
from ..checks import check_id, check_marks
from ..errors import ErrorCode, IMError
from ..message import Conversation, CursorResult, Message, MessageStatus, Reaction
from ..store import MessageStore
from ._gate import ConnectionGate
from ._listeners import Listeners
from ._settings import Settings

__all__ = ["Rich"]

log = logging.getLogger("imstore.client")


class Rich:
    """Reactions, pins and conversation state of one client."""

    def __init__(self, store: MessageStore, gate: ConnectionGate, listeners: Listeners,
                 settings: Settings) -> None:
        self._store = store
        self._gate = gate
        self._listeners = listeners
        self._settings = settings

    async def _request(self, name: str, *args: object) -> object:
        method = self._gate.method(name)
        return await self._gate.request(lambda: method(*args), self._settings.send_timeout)

    def _on_server(self, msg_id: str) -> Message:
        """The stored message ``msg_id``, which the server must have."""
        msg = self._store.get_message(check_id(msg_id, "msg_id"))
        if msg is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
        if msg.status != MessageStatus.SUCCESS or msg.server_time is None:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"the message {msg_id!r} is not on the server yet; send it first")
        return msg

    def _conversation(self, conv_id: str) -> Conversation:
        conv = self._store.conversation(check_id(conv_id, "conv_id"))
        if conv is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST, f"there is no conversation {conv_id!r}")
        return conv

    # ---------------------------------------------------------------- what this user does

    async def add_reaction(self, msg_id: str, key: str) -> list[Reaction]:
        msg = self._on_server(msg_id)
        check_id(key, "key")
        reaction_id = await self._request("send_reaction", msg, key)
        after = self._store.apply_reaction(  # a transport that names no id: kept without one
            msg.msg_id, key, reaction_id=reaction_id if isinstance(reaction_id, str) and reaction_id
            else None)
        return self._reactions_changed(msg.msg_id, after)

    async def remove_reaction(self, msg_id: str, key: str) -> list[Reaction]:
        msg = self._on_server(msg_id)
        check_id(key, "key")
        reaction_id = self._store.reaction_id(msg.msg_id, key)
        if reaction_id is not None:
            await self._request("remove_reaction", msg, reaction_id)
        after = self._store.apply_reaction_removal(msg.msg_id, key)
        return self._reactions_changed(msg.msg_id, after)

    def _reactions_changed(self, msg_id: str, after: list[Reaction] | None) -> list[Reaction]:
        if after is None:
            return self._store.reactions(msg_id)
        self._listeners.emit("on_reactions_changed", msg_id, after)
        return after

    async def pin_message(self, msg_id: str, pinned: bool) -> bool:
        msg = self._on_server(msg_id)
        at = await self._request("pin_message", msg, pinned)
        changed = self._store.apply_message_pin(msg.msg_id, pinned=pinned,
                                                pinned_by=self._store.user_id,
                                                timestamp=at if isinstance(at, int) else None)
        if changed:
            self._pins_changed({msg.conv_id})
        return changed

    async def pin_conversation(self, conv_id: str, pinned: bool) -> bool:
        conv = self._conversation(conv_id)
        at = await self._request("pin_conversation", conv.conv_id, conv.chat_type, pinned)
        return self._store.pin_conversation(conv.conv_id, pinned,
                                            timestamp=at if pinned and isinstance(at, int) else None)

    async def set_marks(self, conv_id: str, add: str | Iterable[str],
                        remove: str | Iterable[str]) -> frozenset[str]:
        conv = self._conversation(conv_id)
        plus, minus = list(check_marks(add, "add")), list(check_marks(remove, "remove"))
        after = await self._request("set_conversation_marks", conv.conv_id, conv.chat_type,
                                    plus, minus)
        return self._apply_marks(conv.conv_id, frozenset(after) if isinstance(after, Iterable)
                                 else (conv.marks | set(plus)) - set(minus))

    def _apply_marks(self, conv_id: str, marks: frozenset[str]) -> frozenset[str]:
        """Make the conversation's marks ``marks`` (read now: the answer may come after other
        changes)."""
        here = self._conversation(conv_id).marks
        return self._store.set_conversation_marks(conv_id, add=sorted(marks - here),
                                                  remove=sorted(here - marks))

    # ------------------------------------------------------------- what the server says

    def reactions(self, events: Sequence[ReactionEvent]) -> None:
        changed: dict[str, list[Reaction]] = {}
        for e in events:
            with _skipped("reaction", e):
                msg_id, after = self._apply_reaction(e)
                if after is not None:
                    changed[self._store_id(msg_id)] = after
        for msg_id, after in changed.items():
            self._listeners.emit("on_reactions_changed", msg_id, after)

    def _apply_reaction(self, e: ReactionEvent) -> tuple[str, list[Reaction] | None]:
        if not e.removed:
            return e.msg_id, self._store.apply_reaction(e.msg_id, e.key, e.sender,
                                                        reaction_id=e.reaction_id,
                                                        timestamp=e.time or None)
        if e.msg_id and e.key and e.sender:
            if self._store.reaction_id(e.msg_id, e.key, e.sender) not in (None, e.reaction_id):
                return e.msg_id, None  # the id is another reaction's: not the sender's to take back
            return e.msg_id, self._store.apply_reaction_removal(e.msg_id, e.key, e.sender)
        removed = self._store.apply_reaction_removal_by_id(e.reaction_id)
        return removed if removed is not None else ("", None)

    def _store_id(self, msg_id: str) -> str:
        msg = self._store.get_message(msg_id)
        return msg.msg_id if msg is not None else msg_id

    def pins(self, events: Sequence[PinEvent]) -> None:
        convs: set[str] = set()
        for e in events:
            with _skipped("pin", e):
                msg = self._store.get_message(e.msg_id)
                if msg is not None and self._store.apply_message_pin(
                        msg.msg_id, pinned=e.pinned, pinned_by=e.by or None,
                        timestamp=e.time or None):
                    convs.add(msg.conv_id)
        self._pins_changed(convs)

    def _pins_changed(self, convs: Iterable[str]) -> None:
        for conv_id in sorted(convs):
            self._listeners.emit("on_pinned_messages_changed", conv_id,
                                 self._store.pinned_messages(conv_id))

    def conversation_states(self, states: Sequence[ConversationState]) -> None:
        newest = {s.conv_id: s for s in states}
        for s in newest.values():
            with _skipped("conversation state", s):
                if self._store.conversation(s.conv_id) is None:
                    self._store.save_conversation(s.conv_id, s.chat_type)
                if s.pinned_at is not None:
                    self._store.pin_conversation(s.conv_id, True, timestamp=s.pinned_at)
                else:
                    self._store.pin_conversation(s.conv_id, False)
                self._apply_marks(s.conv_id, frozenset(s.marks))

    # ------------------------------------------------------------- what history carries

    def history_page(self, page: CursorResult[Message], conv_id: str) -> None:
        """Apply what a saved history page carries beside its messages (`HistoryPage`)."""
        self.reactions(getattr(page, "reactions", None) or [])
        pins: list[PinEvent] | None = getattr(page, "pins", None)
        if pins is None:
            return
        said = {self._store_id(p.msg_id) for p in pins}
        gone = [PinEvent(m.msg_id, False, "") for m in self._store.pinned_messages(conv_id)
                if m.msg_id not in said]
        self.pins([*pins, *gone])

    def listed(self, conv: Conversation) -> None:
        """A conversation of the server's list, new on this device: add the pin and marks it
        carries."""
        here = self._store.conversation(conv.conv_id)
        if here is None:
            return
        with _skipped("conversation state", conv.conv_id):
            if conv.pinned_at is not None and here.pinned_at is None:
                self._store.pin_conversation(conv.conv_id, True, timestamp=conv.pinned_at)
            if conv.marks - here.marks:
                self._store.set_conversation_marks(conv.conv_id,
                                                   add=sorted(conv.marks - here.marks))


@contextlib.contextmanager
def _skipped(what: str, item: object) -> Iterator[None]:
    """What the server said that the store refuses is logged and left out, never raised into
    the transport (the rest of the batch still applies)."""
    try:
        yield
    except IMError as exc:
        log.warning("ignored a %s the server sent (%r): %s", what, item, exc)

