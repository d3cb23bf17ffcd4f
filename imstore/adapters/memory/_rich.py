"""Rich messages on the reference server: reactions, message pins, and each user's conversation
pins and marks.

Rules kept here:
- a reaction is one (message, key, sender); the sender is the connection's user, always: a
  connection cannot add or take back anyone else's reaction (INVALID_PARAM, nothing changes).
  Reacting again with the same key answers with the first reaction's id; taking back a reaction
  already taken back changes nothing;
- reactions and message pins are about messages the user can see (a member, not hidden from it,
  within retention), never CMD messages; every member hears each change as an event, on every
  device, offline ones on reconnection (`Delivery`), except the device that made it; a history
  page carries its messages' reactions and its conversation's pins, so a new device sees them;
- a conversation's pin and marks belong to one user: they reach that user's other devices as the
  conversation's whole `ConversationState`, and the conversation list carries them; reading the
  conversation (any read receipt of the user's in it) clears `ConversationMark.UNREAD`;
- a conversation deleted for everyone takes its pins and every user's state of it along, the
  states still kept for devices away included;
- a reply or thread reply that names a message by its sender's local id names it by the server's
  id once the server has it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ...checks import MAX_MARKS, check_marks
from ...errors import ErrorCode, IMError
from ...kinds import kind_of
from ...message import (
    ChatType,
    Conversation,
    ConversationMark,
    CursorResult,
    Message,
)
from .. import ConversationState, HistoryPage, PinEvent, ReactionEvent, SendResult
from ._delivery import Delivery
from ._history import History
from ._state import Conv, Directory

if TYPE_CHECKING:
    from ._connection import MemoryConnection

__all__ = ["MAX_TOKEN_CHARS", "Rich", "resolve_relations"]

MAX_TOKEN_CHARS = 64
"""The longest reaction key the server takes (marks follow `checks.check_marks`)."""



def _check_token(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN_CHARS \
            or not value.isprintable():
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"a {what} is 1 to {MAX_TOKEN_CHARS} printable characters, not {value!r}")
    return value


def resolve_relations(m: Message, sender: str, sent: dict[tuple[str, str], SendResult]) -> None:
    """Make ``m``'s ``reply_to`` and ``thread_id`` name server ids where they name one of the
    sender's messages by its local id."""
    for name in ("reply_to", "thread_id"):
        ref = getattr(m, name)
        if ref is not None and (sender, ref) in sent:
            setattr(m, name, sent[(sender, ref)].msg_id)


class Rich:
    """Reactions, pins and conversation states; changes announced through `Delivery`."""

    def __init__(self, directory: Directory, history: History, delivery: Delivery,
                 stamp: Callable[[], int]) -> None:
        self.directory = directory
        self.history = history
        self.delivery = delivery
        self.stamp = stamp
        self._ids = itertools.count(1)
        # msg id -> (key, sender) -> the reaction, oldest first
        self._reactions: dict[str, dict[tuple[str, str], ReactionEvent]] = {}
        self._by_id: dict[str, ReactionEvent] = {}  # reaction id -> it (removed=True: taken back)
        self._pins: dict[str, dict[str, PinEvent]] = {}  # conversation key -> msg id -> the pin
        self._states: dict[tuple[str, str], ConversationState] = {}  # (user, conversation key)

    # ------------------------------------------------------------------------------ messages

    def _visible(self, user: str, msg_id: str) -> Conv:
        """The conversation of a message ``user`` can see, which reactions and pins may name."""
        found = self.directory.by_server_id.get(msg_id)
        if found is None or not kind_of(found[1].msg.type).stored:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {msg_id!r} on the server")
        conv, stored = found
        if user not in conv.members or not self.history.visible(user, stored):
            raise IMError(ErrorCode.INVALID_PARAM, f"{user!r} cannot see the message {msg_id!r}")
        return conv

    def _tell(self, conv: Conv, name: str, event: object, by: MemoryConnection | None) -> None:
        for member in sorted(conv.members):
            self.delivery.emit(member, name, [event], skip=by)

    def react(self, user: str, msg_id: str, key: str, by: MemoryConnection | None = None) -> str:
        """``user`` reacts with ``key``; returns the reaction's id."""
        _check_token(key, "reaction key")
        conv = self._visible(user, msg_id)
        reactions = self._reactions.setdefault(msg_id, {})
        had = reactions.get((key, user))
        if had is not None:
            return had.reaction_id
        event = ReactionEvent(msg_id, key, user, f"R{next(self._ids):012d}", time=self.stamp())
        reactions[(key, user)] = self._by_id[event.reaction_id] = event
        self._tell(conv, "on_reactions", event, by)
        return event.reaction_id

    def unreact(self, user: str, msg_id: str, reaction_id: str,
                by: MemoryConnection | None = None) -> None:
        """``user`` takes back its reaction ``reaction_id`` to ``msg_id``."""
        event = self._by_id.get(reaction_id) if isinstance(reaction_id, str) else None
        if event is None or event.msg_id != msg_id:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"the message {msg_id!r} has no reaction {reaction_id!r}")
        if event.sender != user:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{user!r} can only take back its own reactions, not {event.sender!r}'s")
        if event.removed:
            return
        conv = self._visible(user, msg_id)
        gone = dataclasses.replace(event, removed=True, time=self.stamp())
        self._by_id[reaction_id] = gone
        del self._reactions[msg_id][(event.key, user)]
        self._tell(conv, "on_reactions", gone, by)

    def pin(self, user: str, msg_id: str, pinned: bool,
            by: MemoryConnection | None = None) -> int:
        """``user`` pins (or unpins) ``msg_id`` in its conversation; returns the time of the
        change (the first pin's when it was pinned already)."""
        if not isinstance(pinned, bool):
            raise IMError(ErrorCode.INVALID_PARAM, f"pinned must be True or False, not {pinned!r}")
        conv = self._visible(user, msg_id)
        pins = self._pins.setdefault(conv.key, {})
        if pinned and msg_id in pins:
            return pins[msg_id].time
        event = PinEvent(msg_id, pinned, user, self.stamp())
        if pinned:
            pins[msg_id] = event
        elif pins.pop(msg_id, None) is None:
            return event.time
        self._tell(conv, "on_message_pins", event, by)
        return event.time

    # -------------------------------------------------------------------- conversation state

    def _state(self, user: str, conv_id: str, chat_type: ChatType
               ) -> tuple[str, ConversationState]:
        self.directory.members(user, conv_id, chat_type)  # a member of a group that exists
        key = self.directory.conv_key(user, conv_id, chat_type)
        return key, self._states.get((user, key)) or ConversationState(conv_id, chat_type)

    def _set_state(self, user: str, key: str, state: ConversationState,
                   by: MemoryConnection | None) -> None:
        self._states[(user, key)] = state
        self.delivery.emit(user, "on_conversation_states", [state], skip=by)

    def pin_conversation(self, user: str, conv_id: str, chat_type: ChatType, pinned: bool,
                         by: MemoryConnection | None = None) -> int | None:
        """``user`` pins (or unpins) a conversation for itself; returns when it is pinned."""
        if not isinstance(pinned, bool):
            raise IMError(ErrorCode.INVALID_PARAM, f"pinned must be True or False, not {pinned!r}")
        key, state = self._state(user, conv_id, chat_type)
        if pinned != (state.pinned_at is not None):
            state = dataclasses.replace(state, pinned_at=self.stamp() if pinned else None)
            self._set_state(user, key, state, by)
        return state.pinned_at

    def set_marks(self, user: str, conv_id: str, chat_type: ChatType, add: Sequence[str],
                  remove: Sequence[str], by: MemoryConnection | None = None) -> frozenset[str]:
        """``user`` adds and removes marks of a conversation; returns its marks after."""
        plus, minus = set(check_marks(add, "add")), set(check_marks(remove, "remove"))
        key, state = self._state(user, conv_id, chat_type)
        marks = (state.marks | plus) - minus
        if len(marks) > MAX_MARKS:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"a conversation has at most {MAX_MARKS} marks; remove some first")
        if marks != state.marks:
            self._set_state(user, key, dataclasses.replace(state, marks=frozenset(marks)), by)
        return frozenset(marks)

    def read(self, user: str, conv_id: str, chat_type: ChatType,
             by: MemoryConnection | None = None) -> None:
        """``user`` read the conversation: its UNREAD mark goes."""
        self._read(user, self.directory.conv_key(user, conv_id, chat_type), by)

    def read_message(self, user: str, msg_id: str, by: MemoryConnection | None = None) -> None:
        """``user`` read a message: the UNREAD mark of its conversation goes."""
        self._read(user, self.directory.stored(msg_id)[0].key, by)

    def _read(self, user: str, key: str, by: MemoryConnection | None) -> None:
        state = self._states.get((user, key))
        if state is not None and ConversationMark.UNREAD in state.marks:
            marks = state.marks - {ConversationMark.UNREAD.value}
            self._set_state(user, key, dataclasses.replace(state, marks=marks), by)

    # ---------------------------------------------------------------------- what reads carry

    def page(self, user: str, conv_id: str, chat_type: ChatType,
             page: CursorResult[Message]) -> HistoryPage:
        """A history page with its messages' reactions and its conversation's pins."""
        reactions = sorted((e for m in page.items for e in self._reactions.get(m.msg_id, {}).values()),
                           key=lambda e: e.time)
        conv = self.directory.conversation_of(user, conv_id, chat_type)
        pins = sorted(self._pins.get(conv.key, {}).values(), key=lambda e: e.time) if conv else []
        return HistoryPage(page.items, page.cursor, reactions, pins)

    def conversations(self, user: str, page: CursorResult[Conversation]
                      ) -> CursorResult[Conversation]:
        """The user's conversation list with each one's pin and marks."""
        for c in page.items:
            state = self._states.get((user, self.directory.conv_key(user, c.conv_id, c.chat_type)))
            if state is not None:
                c.pinned_at, c.marks = state.pinned_at, state.marks
        return page

    def forget(self, conv_key: str) -> None:
        """A conversation was deleted for everyone: its pins and states go, and the reactions
        of messages no longer on the server."""
        self._pins.pop(conv_key, None)
        for k in [k for k in self._states if k[1] == conv_key]:
            del self._states[k]

        def about_it(user: str, item: object) -> bool:  # a state kept for a device away
            return isinstance(item, ConversationState) and self.directory.conv_key(
                user, item.conv_id, item.chat_type) == conv_key

        self.delivery.purge(about_it, lambda user: None)
        for msg_id in [i for i in self._reactions if i not in self.directory.by_server_id]:
            del self._reactions[msg_id]
