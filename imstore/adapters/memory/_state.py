"""What the reference server holds: conversations, their members and messages, and the plans.

Rules kept here:
- one `Conv` per conversation on the server, keyed by `Directory.conv_key`: a one-to-one chat by
  its two users (sorted, so both sides name the same one), a group or chat room by its id;
- a group or chat room exists once (`create`) and its members are who `create` and `join` said;
  a one-to-one chat's members are its two users;
- every stored message is reachable by its server id until its conversation is deleted for
  everyone; CMD messages are reachable by id but never part of a history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from ...errors import ErrorCode, IMError
from ...message import ChatType, Message

__all__ = ["GROUP_ACK_DAYS", "Conv", "Directory", "Faults",
           "RetentionPlan", "Stored"]

GROUP_ACK_DAYS = 3


class RetentionPlan(Enum):
    """How long the server keeps history, in days, by plan."""

    FREE = 3
    BASIC = 7
    ADVANCED = 90
    ENTERPRISE = 180  # the default; configure with MemoryServer(retention_days=...)


@dataclass(slots=True)
class Stored:
    seq: int
    msg: Message  # as the sender sent it, with server id and time
    hidden_for: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Conv:
    key: str
    chat_type: ChatType
    members: frozenset[str]
    messages: list[Stored] = field(default_factory=list)


@dataclass(slots=True)
class Faults:
    """Faults to inject. Counters go down by one each time they fire."""

    latency: float = 0.0  # seconds before every answer
    lost_answers: int = 0  # sends that never get an answer
    failed_uploads: int = 0
    unreachable: bool = False  # reconnect() fails


class Directory:
    """The server's conversations, groups and messages by id."""

    def __init__(self) -> None:
        self.convs: dict[str, Conv] = {}
        self.groups: dict[str, tuple[ChatType, frozenset[str]]] = {}
        self.by_server_id: dict[str, tuple[Conv, Stored]] = {}

    @staticmethod
    def conv_key(user: str, conv_id: str, chat_type: ChatType) -> str:
        if chat_type == ChatType.CHAT:
            a, b = sorted((user, conv_id))
            return f"c:{a}:{b}"
        return f"g:{conv_id}"

    def create(self, gid: str, chat_type: ChatType, members: Sequence[str]) -> None:
        if gid in self.groups:
            raise IMError(ErrorCode.INVALID_PARAM, f"{gid!r} exists already")
        self.groups[gid] = (chat_type, frozenset(members))

    def join(self, gid: str, user_id: str) -> None:
        if gid not in self.groups:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST, f"there is no group or room {gid!r}")
        chat_type, members = self.groups[gid]
        self.groups[gid] = (chat_type, members | {user_id})
        conv = self.convs.get(self.conv_key(user_id, gid, chat_type))
        if conv is not None:
            conv.members = self.groups[gid][1]

    def members(self, user: str, conv_id: str, chat_type: ChatType) -> frozenset[str]:
        """Who is in the conversation ``user`` names ``conv_id``; the user must be one of them."""
        if chat_type == ChatType.CHAT:
            return frozenset((user, conv_id))
        group = self.groups.get(conv_id)
        if group is None or group[0] != chat_type:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no {chat_type.name} {conv_id!r} on the server")
        if user not in group[1]:
            raise IMError(ErrorCode.INVALID_PARAM, f"{user!r} is not a member of {conv_id!r}")
        return group[1]

    def conversation_of(self, user: str, conv_id: str, chat_type: ChatType) -> Conv | None:
        return self.convs.get(self.conv_key(user, conv_id, chat_type))

    def users_conversation(self, user: str, conv_id: str, chat_type: ChatType) -> Conv:
        """The conversation, which must hold ``user``; else CONVERSATION_NOT_EXIST."""
        conv = self.conversation_of(user, conv_id, chat_type)
        if conv is None or user not in conv.members:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{user!r} has no conversation {conv_id!r} on the server")
        return conv

    def stored(self, msg_id: str) -> tuple[Conv, Stored]:
        """The conversation and stored message of a server id; else MESSAGE_INVALID."""
        found = self.by_server_id.get(msg_id)
        if found is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {msg_id!r} on the server")
        return found

    def drop(self, conv: Conv) -> None:
        """Delete a conversation and its messages for everyone."""
        del self.convs[conv.key]
        for s in conv.messages:
            self.by_server_id.pop(s.msg.msg_id, None)
