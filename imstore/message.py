"""Values of the domain: enums, `Message` and its factories, `Conversation`, reactions, pins,
threads and paging results.

Rules kept here:
- no I/O and no storage: these are plain values that the store, the client and adapters pass around;
- the bodies (and their `DownloadStatus`) are `bodies`' values, re-exported here: ``from
  imstore.message import TextBody`` keeps working;
- ``Message.conv_id`` follows the specification (`conversation_id`, the one place that says it):
  the peer for CHAT, ``to`` for groups and rooms. Factories do not know the store's owner, so a
  message whose ``sender`` is given is first taken as received; the store settles ``direction``
  and ``conv_id`` once it knows who its user is;
- what each message type means beyond its body class (searchable fields, attachments,
  downloads, its blank body) is the table in `kinds`, not here.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Generic, TypeVar

from .bodies import (
    Body,
    CmdBody,
    CustomBody,
    DownloadStatus,
    FileBody,
    ImageBody,
    LocationBody,
    TextBody,
    ThumbnailedBody,
    UndecodableBody,
    VideoBody,
    VoiceBody,
)
from .errors import ErrorCode, IMError, invalid

__all__ = [
    "REACTION_SENDERS",
    "Body",
    "ChatType",
    "CmdBody",
    "Conversation",
    "ConversationMark",
    "CursorResult",
    "CustomBody",
    "Direction",
    "DownloadStatus",
    "FetchOptions",
    "FileBody",
    "GroupReadAck",
    "ImageBody",
    "ImportResult",
    "LocationBody",
    "Message",
    "MessageStatus",
    "MessageType",
    "PinRecord",
    "Reaction",
    "ReactionRecord",
    "SearchScope",
    "TextBody",
    "ThreadSummary",
    "ThumbnailedBody",
    "UndecodableBody",
    "VideoBody",
    "VoiceBody",
    "conversation_id",
    "new_msg_id",
    "now_ms",
]

T = TypeVar("T")


class MessageType(IntEnum):
    TEXT = 1
    IMAGE = 2
    VOICE = 3
    VIDEO = 4
    FILE = 5
    LOCATION = 6
    CMD = 7
    CUSTOM = 8


class ChatType(IntEnum):
    CHAT = 1
    GROUP_CHAT = 2
    CHAT_ROOM = 3


class Direction(IntEnum):
    """For messages: SEND or RECEIVE from the owner's point of view. For reads: UP (towards older
    messages) or DOWN (towards newer ones)."""

    SEND = 1
    RECEIVE = 2
    UP = 3
    DOWN = 4


class MessageStatus(IntEnum):
    CREATE = 1
    INPROGRESS = 2
    SUCCESS = 3
    FAIL = 4


class SearchScope(IntEnum):
    CONTENT = 1
    EXT = 2
    ALL = 3


class ConversationMark(StrEnum):
    """The marks imstore itself gives meaning to. A conversation's ``marks`` is a set of str:
    these, plus any custom mark an app chooses (a non-empty str)."""

    UNREAD = "unread"  # a badge with no unread message; reading the conversation clears it


_counter = itertools.count()


def now_ms() -> int:
    """Milliseconds since the epoch: the clock of `lifecycle` (which owns it), kept importable
    here."""
    return _lifecycle.now_ms()


def new_msg_id() -> str:
    """A local message id: unique on this device, ordered by creation time."""
    return f"L{time.time_ns():x}{os.getpid() & 0xFFFF:04x}{next(_counter) & 0xFFFFFF:06x}"


# --------------------------------------------------------------------------------------- message


def conversation_id(chat_type: ChatType, to: str, sender: str | None,
                    owner: str | None = None) -> str:
    """The conversation a message belongs to: for CHAT the peer (the sender of a received
    message, ``to`` of a sent one), for groups and rooms ``to``. ``sender`` None or equal to
    ``owner`` means the message was sent by the owner (`lifecycle.is_mine`)."""
    received = not _lifecycle.is_mine(sender, owner)
    return sender if (received and chat_type == ChatType.CHAT and sender) else to


@dataclass(slots=True, eq=False)
class Message:
    """One message. Make one with the factories (`Message.text`, `Message.image`, ...).

    ``sender=None`` in a factory means the store's own user. ``is_read=None`` means "not said":
    a received message inserted into the store counts as unread, an imported one as read.
    ``local_id`` is the id the sender's device gave the message before the server renamed it;
    ``edited_at`` and ``recalled_at`` are the server times (ms) of the last edit and of the
    recall (a recalled message keeps its ids and times; its body is its type's blank body).

    ``reply_to`` is the id of the message this one quotes (same conversation); ``thread_id`` the
    id of its thread's root: a thread reply is outside the conversation's main timeline (see
    `MessageStore.thread_messages`). ``local_ext`` is app data kept on this device only: never
    sent, not part of the payload limit, with a limit of its own (`Limits.max_local_ext_bytes`).
    """

    msg_id: str
    conv_id: str
    chat_type: ChatType
    type: MessageType
    sender: str | None
    to: str
    body: Body
    direction: Direction = Direction.SEND
    status: MessageStatus = MessageStatus.CREATE
    local_time: int = 0
    server_time: int | None = None
    is_read: bool | None = None
    is_delivered: bool = False
    is_read_acked: bool = False
    need_group_ack: bool = False
    group_ack_count: int = 0
    ext: dict[str, Any] = field(default_factory=dict)
    local_id: str | None = None
    edited_at: int | None = None
    recalled_at: int | None = None
    reply_to: str | None = None
    thread_id: str | None = None
    local_ext: dict[str, Any] = field(default_factory=dict)

    @property
    def timestamp(self) -> int:
        """The time the message is ordered by: the server's when it stamped it, else the local one."""
        return self.server_time if self.server_time is not None else self.local_time

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _MESSAGE_FIELDS)

    __hash__ = None  # type: ignore[assignment]

    # -- factories -------------------------------------------------------------------------------

    @classmethod
    def of(
        cls,
        mtype: MessageType,
        to: str,
        body: Body,
        *,
        chat_type: ChatType = ChatType.CHAT,
        ext: dict[str, Any] | None = None,
        sender: str | None = None,
        msg_id: str | None = None,
        timestamp: int | None = None,
        is_read: bool | None = None,
        need_group_ack: bool = False,
        local_id: str | None = None,
        edited_at: int | None = None,
        recalled_at: int | None = None,
        reply_to: str | None = None,
        thread_id: str | None = None,
        local_ext: dict[str, Any] | None = None,
    ) -> Message:
        """A message of type ``mtype`` with a body already made (importers, adapters); the
        keyword arguments are those of every factory. Raises `IMError(INVALID_PARAM)` naming the
        argument that has the wrong type (the store checks values and sizes when it stores)."""
        mtype = _enum(MessageType, mtype, "mtype")
        chat_type = _enum(ChatType, chat_type, "chat_type")
        _want(isinstance(to, str) and bool(to), "to", "a non-empty id (str)", to)
        for name, value in (("sender", sender), ("msg_id", msg_id), ("local_id", local_id)):
            _want(value is None or (isinstance(value, str) and bool(value)), name,
                  "a non-empty id (str) or None", value)
        _want(ext is None or isinstance(ext, dict), "ext", "a dict or None", ext)
        _want(is_read is None or isinstance(is_read, bool), "is_read", "True, False or None",
              is_read)
        _want(isinstance(need_group_ack, bool), "need_group_ack", "True or False", need_group_ack)
        for name, when in (("edited_at", edited_at), ("recalled_at", recalled_at)):
            _want(when is None or _is_int(when), name, "an int of ms or None", when)
        for name, ref in (("reply_to", reply_to), ("thread_id", thread_id)):
            _want(ref is None or (isinstance(ref, str) and bool(ref)), name,
                  "a message id (str) or None", ref)
        _want(local_ext is None or isinstance(local_ext, dict), "local_ext", "a dict or None",
              local_ext)
        if timestamp is not None:
            _check_timestamp(timestamp)
        received = sender is not None
        return cls(
            msg_id=msg_id or new_msg_id(),
            conv_id=conversation_id(chat_type, to, sender),
            chat_type=chat_type,
            type=mtype,
            sender=sender,
            to=to,
            body=body,
            direction=Direction.RECEIVE if received else Direction.SEND,
            status=MessageStatus.SUCCESS if received else MessageStatus.CREATE,
            local_time=timestamp if timestamp is not None else now_ms(),
            server_time=timestamp if (received and timestamp is not None) else None,
            is_read=is_read,
            need_group_ack=need_group_ack,
            ext=dict(ext) if ext else {},
            local_id=local_id,
            edited_at=edited_at,
            recalled_at=recalled_at,
            reply_to=reply_to,
            thread_id=thread_id,
            local_ext=dict(local_ext) if local_ext else {},
        )

    @classmethod
    def text(cls, to: str, text: str, *, formatted: str = "", **kw: Any) -> Message:
        """A text message (emoji are text); ``formatted`` is its HTML form, if any."""
        _want(isinstance(text, str), "text", "a str", text)
        _want(isinstance(formatted, str), "formatted", "a str", formatted)
        return cls.of(MessageType.TEXT, to, TextBody(text, formatted), **kw)

    @classmethod
    def image(cls, to: str, path: str | os.PathLike[str], *, width: int | None = None,
              height: int | None = None, thumbnail: str | os.PathLike[str] | None = None,
              display_name: str | None = None, caption: str = "", **kw: Any) -> Message:
        """An image from a local file; the client uploads it before sending."""
        p = _path(path, "path")
        body = ImageBody(local_path=p, display_name=_name(display_name, p),
                         width=_size(width, "width"), height=_size(height, "height"),
                         caption=_caption(caption),
                         thumbnail_path=_path(thumbnail, "thumbnail") if thumbnail else "")
        return cls.of(MessageType.IMAGE, to, body, **kw)

    @classmethod
    def voice(cls, to: str, path: str | os.PathLike[str], duration_ms: int, *,
              display_name: str | None = None, caption: str = "", **kw: Any) -> Message:
        """A voice message from a local audio file."""
        p = _path(path, "path")
        body = VoiceBody(local_path=p, display_name=_name(display_name, p),
                         duration_ms=_duration(duration_ms), caption=_caption(caption))
        return cls.of(MessageType.VOICE, to, body, **kw)

    @classmethod
    def video(cls, to: str, path: str | os.PathLike[str], duration_ms: int, *,
              thumbnail: str | os.PathLike[str] | None = None, width: int | None = None,
              height: int | None = None, display_name: str | None = None, caption: str = "",
              **kw: Any) -> Message:
        """A video from a local file, with an optional local thumbnail image."""
        p = _path(path, "path")
        body = VideoBody(local_path=p, display_name=_name(display_name, p),
                         duration_ms=_duration(duration_ms), width=_size(width, "width"),
                         height=_size(height, "height"), caption=_caption(caption),
                         thumbnail_path=_path(thumbnail, "thumbnail") if thumbnail else "")
        return cls.of(MessageType.VIDEO, to, body, **kw)

    @classmethod
    def file(cls, to: str, path: str | os.PathLike[str], *, display_name: str | None = None,
             caption: str = "", **kw: Any) -> Message:
        """Any file."""
        p = _path(path, "path")
        body = FileBody(local_path=p, display_name=_name(display_name, p),
                        caption=_caption(caption))
        return cls.of(MessageType.FILE, to, body, **kw)

    @classmethod
    def location(cls, to: str, latitude: float, longitude: float, *, address: str = "",
                 building_name: str = "", **kw: Any) -> Message:
        """A location (coordinates from a map service)."""
        _want(isinstance(address, str), "address", "a str", address)
        _want(isinstance(building_name, str), "building_name", "a str", building_name)
        body = LocationBody(_degrees(latitude, "latitude", 90),
                            _degrees(longitude, "longitude", 180), address, building_name)
        return cls.of(MessageType.LOCATION, to, body, **kw)

    @classmethod
    def cmd(cls, to: str, action: str, params: dict[str, Any] | None = None, **kw: Any) -> Message:
        """A command to the peer: sent, never shown, never stored."""
        _want(isinstance(action, str), "action", "a str", action)
        _want(params is None or isinstance(params, dict), "params", "a dict or None", params)
        return cls.of(MessageType.CMD, to, CmdBody(action, dict(params or {})), **kw)

    @classmethod
    def custom(cls, to: str, event: str, params: dict[str, str] | None = None, **kw: Any) -> Message:
        """An app-defined message (red packets, templates, ...)."""
        _want(isinstance(event, str), "event", "a str", event)
        _want(params is None or isinstance(params, dict), "params", "a dict[str, str] or None",
              params)
        return cls.of(MessageType.CUSTOM, to, CustomBody(event, dict(params or {})), **kw)


# -- what the factories accept: each raises IMError(INVALID_PARAM) naming the argument ------------

# A factory's ``timestamp`` is in ms. A value that reads as a date in 1970-2000 in ms but as one
# after 2000 in seconds is a time in seconds by mistake: refused, with the fix in the message.
# (Small values -- test clocks, explicit orderings -- stay accepted.)
SECONDS_BY_MISTAKE = (946_684_800, 978_307_200_000)  # 2000-01-01 in s .. 2001-01-01 in ms


def _want(ok: bool, field: str, what: str, value: Any) -> None:
    if not ok:
        raise invalid(field, what, value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _enum(enum: type[Any], value: Any, field: str) -> Any:
    if type(value) is enum:
        return value
    _want(_is_int(value) and value in enum._value2member_map_, field, f"a {enum.__name__}",
          value)
    return enum(value)


def _check_timestamp(value: Any) -> None:
    _want(_is_int(value) and value >= 0, "timestamp", "an int of milliseconds since the epoch",
          value)
    lo, hi = SECONDS_BY_MISTAKE
    if lo <= value < hi:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"timestamp {value} is a date before 2001 in milliseconds; it looks like "
                      f"seconds since the epoch: pass {value * 1000}")


def _path(value: Any, field: str) -> str:
    return _checks.check_path(value, "a file path (str or os.PathLike)", field)


def _name(display_name: Any, path: str) -> str:
    _want(display_name is None or isinstance(display_name, str), "display_name", "a str or None",
          display_name)
    return display_name or os.path.basename(path)


def _caption(value: Any) -> str:
    _want(isinstance(value, str), "caption", "a str", value)
    return str(value)


def _size(value: Any, field: str) -> int | None:
    _want(value is None or (_is_int(value) and value >= 0), field,
          "a non-negative int of pixels or None", value)
    return value  # type: ignore[no-any-return]


def _duration(value: Any) -> int:
    ok = (_is_int(value) or isinstance(value, float)) and 0 <= value < _lifecycle.MAX_TIME
    _want(ok, "duration_ms", "a non-negative number of milliseconds", value)
    return int(value)


def _degrees(value: Any, field: str, bound: int) -> float:
    ok = (_is_int(value) or isinstance(value, float)) and -bound <= value <= bound
    _want(ok, field, f"a number of degrees from -{bound} to {bound}", value)
    return float(value)


_MESSAGE_FIELDS = tuple(Message.__dataclass_fields__)


# ------------------------------------------------------------------------------ other values


class Conversation:
    """A conversation with its unread count, last message and state.

    ``title`` is its name (None: none given); ``pinned_at`` the time (ms) it was pinned (None:
    not pinned; pinned conversations list first, newest pin first); ``marks`` a set of str
    (`ConversationMark.UNREAD` and app-defined marks); ``draft`` the text being written (this
    device only); ``ext`` app-defined attributes. ``error`` says why a stored conversation could
    not be read in full (its type or ext are corrupt; what could be read is there), else None.
    ``last_message`` of conversations listed by the store is decoded on first access, so a list
    of thousands costs only what is looked at.
    """

    __slots__ = ("_decode", "_last", "_last_row", "chat_type", "conv_id", "draft", "error", "ext",
                 "last_activity", "marks", "pinned_at", "title", "unread_count")

    def __init__(self, conv_id: str, chat_type: ChatType, unread_count: int = 0,
                 last_message: Message | None = None, last_activity: int = 0,
                 ext: dict[str, Any] | None = None, *, title: str | None = None,
                 pinned_at: int | None = None, marks: frozenset[str] = frozenset(),
                 draft: str | None = None, error: str | None = None) -> None:
        self.conv_id = conv_id
        self.chat_type = chat_type
        self.unread_count = unread_count
        self.last_activity = last_activity
        self.ext = ext if ext is not None else {}
        self.title = title
        self.pinned_at = pinned_at
        self.marks = frozenset(marks)
        self.draft = draft
        self.error = error
        self._last = last_message
        self._last_row: Any = None
        self._decode: Callable[[Any], Message] | None = None

    @classmethod
    def lazy(cls, conv_id: str, chat_type: ChatType, unread_count: int, last_activity: int,
             ext: dict[str, Any], row: Any, decode: Callable[[Any], Message],
             title: str | None = None, pinned_at: int | None = None,
             marks: frozenset[str] = frozenset(), draft: str | None = None,
             error: str | None = None) -> Conversation:
        """A conversation whose last message is decoded from ``row`` when first read (the
        store's list: its values are already checked, so they are set as they are)."""
        conv = cls.__new__(cls)
        conv.conv_id, conv.chat_type, conv.unread_count = conv_id, chat_type, unread_count
        conv.last_activity, conv.ext, conv.title = last_activity, ext, title
        conv.pinned_at, conv.marks, conv.draft, conv.error = pinned_at, marks, draft, error
        conv._last, conv._last_row, conv._decode = None, row, decode
        return conv

    @property
    def last_message(self) -> Message | None:
        if self._last_row is not None and self._decode is not None:
            self._last, self._last_row = self._decode(self._last_row), None
        return self._last

    @last_message.setter
    def last_message(self, value: Message | None) -> None:
        self._last, self._last_row = value, None

    @property
    def pinned(self) -> bool:
        return self.pinned_at is not None

    def _key(self) -> tuple[Any, ...]:
        return (self.conv_id, self.chat_type, self.unread_count, self.last_message,
                self.last_activity, self.ext, self.title, self.pinned_at, self.marks, self.draft,
                self.error)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Conversation):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        state = "".join(f", {n}={getattr(self, n)!r}"
                        for n in ("title", "pinned_at", "draft", "error") if getattr(self, n))
        marks = f", marks={set(self.marks)!r}" if self.marks else ""
        return (f"Conversation(conv_id={self.conv_id!r}, chat_type={self.chat_type!r}, "
                f"unread_count={self.unread_count!r}, last_message={self.last_message!r}, "
                f"last_activity={self.last_activity!r}, ext={self.ext!r}{state}{marks})")


@dataclass(frozen=True, slots=True)
class Reaction:
    """The reactions with one key (an emoji, or any short text) on one message: how many people
    reacted, the first of them (oldest first, at most `REACTION_SENDERS`), and whether the
    store's user is one of them. Reactions are not messages: never unread, never in a page."""

    key: str
    count: int
    senders: tuple[str, ...]
    mine: bool


REACTION_SENDERS = 20  # senders listed per `Reaction` (count has them all)


@dataclass(frozen=True, slots=True)
class ReactionRecord:
    """One sender's reaction as the store keeps it (what an export needs to put it back): the
    message, the key, who, the server's id of the reaction (None when unknown) and when (ms)."""

    msg_id: str
    key: str
    sender: str
    reaction_id: str | None
    timestamp: int


@dataclass(frozen=True, slots=True)
class PinRecord:
    """One pinned message as the store keeps it: the message, when it was pinned (ms) and by
    whom (None when the pin did not say)."""

    msg_id: str
    pinned_at: int
    pinned_by: str | None


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """A thread of a conversation: its root's id, how many replies it has, and the newest one."""

    root: str
    reply_count: int
    last_reply: Message | None


@dataclass(slots=True)
class CursorResult(Generic[T]):
    """One page. ``cursor is None`` means there is no next page."""

    items: list[T]
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Filters for `ChatClient.fetch_history_messages`."""

    direction: Direction = Direction.UP
    types: tuple[MessageType, ...] | None = None
    start_time: int | None = None
    end_time: int | None = None
    sender: str | None = None
    save: bool = True


@dataclass(frozen=True, slots=True)
class GroupReadAck:
    """One member's read receipt of a group message."""

    msg_id: str
    conv_id: str
    reader: str
    timestamp: int
    ack_id: str = ""


@dataclass(slots=True)
class ImportResult:
    """What `MessageStore.import_messages` did: counts, and why anything was skipped."""

    imported: int = 0
    skipped: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


# The factories read the clock, the time bound and "is it mine" from `lifecycle`, which owns them.
# Its tables are keyed by this module's enums, so it is imported last, once they exist (whichever
# of the two is imported first, each finds the other's names when a factory runs).
from . import checks as _checks  # noqa: E402  (the one path rule; checks imports this module)
from . import lifecycle as _lifecycle  # noqa: E402
