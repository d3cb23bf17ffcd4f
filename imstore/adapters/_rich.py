"""What a server says about rich messages and conversation state: the values a transport hands
its `TransportHandler` (and a history page carries) for reactions, message pins and each user's
conversation pins and marks.

Rules kept here:
- every value is frozen and names what it is about by the server's ids (the message's server
  ``msg_id``, the conversation as the user sees it);
- a `ReactionEvent` is one sender's key added to or removed from one message, with the server's
  id of that reaction, so that a removal naming only the id can be applied;
- a `PinEvent` is one message pinned or unpinned in its conversation, for every member;
- a `ConversationState` is the whole of one user's state of one conversation (pin and marks), not
  a change: applying it twice, or an older one before a newer one, ends in the newer state;
- `HistoryPage` is a history page that also carries the reactions of its messages and its
  conversation's pins; a plain `CursorResult` means the server said nothing about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..message import ChatType, CursorResult, Message

__all__ = ["ConversationState", "HistoryPage", "PinEvent", "ReactionEvent"]


@dataclass(frozen=True, slots=True)
class ReactionEvent:
    """``sender`` reacted with ``key`` to the message ``msg_id`` (or took it back: ``removed``).

    ``reaction_id`` is the server's id of the reaction (a Matrix annotation's event id); ``time``
    the server time (ms) of the change. A removal whose message, key or sender the server no
    longer knows may leave them empty ("") and name only ``reaction_id``.
    """

    msg_id: str
    key: str
    sender: str
    reaction_id: str
    removed: bool = False
    time: int = 0


@dataclass(frozen=True, slots=True)
class PinEvent:
    """``by`` pinned the message ``msg_id`` in its conversation (or unpinned it) at server time
    ``time`` (ms)."""

    msg_id: str
    pinned: bool
    by: str
    time: int = 0


@dataclass(frozen=True, slots=True)
class ConversationState:
    """One user's state of a conversation on the server, the same on all its devices:
    ``pinned_at`` (ms; None: not pinned) and its ``marks``."""

    conv_id: str
    chat_type: ChatType
    pinned_at: int | None = None
    marks: frozenset[str] = frozenset()


@dataclass(slots=True)
class HistoryPage(CursorResult[Message]):
    """A page of history with what the server keeps beside its messages: ``reactions`` (every
    reaction the page's messages have now, as added `ReactionEvent`s) and ``pins`` (every message
    pinned in the conversation now, as `PinEvent`s; None: the server does not say)."""

    reactions: list[ReactionEvent] = field(default_factory=list)
    pins: list[PinEvent] | None = None
