"""Values of the domain: enums, message bodies, `Message`, `Conversation` and paging results.

Rules kept here:
- no I/O and no storage: these are plain values that the store, the client and adapters pass around;
- every body keeps the fields it does not know in ``extra``, so a payload written by a newer
  version survives a decode/encode round trip;
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
from enum import IntEnum
from typing import Any, Generic, TypeVar

__all__ = [
    "Body",
    "ChatType",
    "CmdBody",
    "Conversation",
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
    "SearchScope",
    "TextBody",
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


class DownloadStatus(IntEnum):
    PENDING = 1
    DOWNLOADING = 2
    SUCCEEDED = 3
    FAILED = 4


class SearchScope(IntEnum):
    CONTENT = 1
    EXT = 2
    ALL = 3


_counter = itertools.count()


def now_ms() -> int:
    """Milliseconds since the epoch: the clock of `lifecycle` (which owns it), kept importable
    here. Imported on call: `lifecycle` reads this module's enums."""
    from .lifecycle import now_ms as clock

    return clock()


def new_msg_id() -> str:
    """A local message id: unique on this device, ordered by creation time."""
    return f"L{time.time_ns():x}{os.getpid() & 0xFFFF:04x}{next(_counter) & 0xFFFFFF:06x}"


# ---------------------------------------------------------------------------------------- bodies


@dataclass(slots=True)
class TextBody:
    text: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FileBody:
    """An attachment. ``local_path`` is where the file is (sender) or will be (receiver) on this
    device; ``remote_url`` where the server keeps it once uploaded."""

    local_path: str = ""
    display_name: str = ""
    remote_url: str = ""
    secret: str = ""
    size: int = 0
    download_status: DownloadStatus = DownloadStatus.PENDING
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ThumbnailedBody(FileBody):
    """The one group of thumbnail fields, shared by the bodies that have a thumbnail (images,
    videos; `kinds.Kind.thumbnail` says which): where the thumbnail is on this device, where the
    server keeps it, and how its download went. Keyword-only, after each body's own fields."""

    thumbnail_path: str = field(default="", kw_only=True)
    thumbnail_url: str = field(default="", kw_only=True)
    thumbnail_status: DownloadStatus = field(default=DownloadStatus.PENDING, kw_only=True)


@dataclass(slots=True)
class ImageBody(ThumbnailedBody):
    width: int | None = None
    height: int | None = None


@dataclass(slots=True)
class VoiceBody(FileBody):
    duration_ms: int = 0


@dataclass(slots=True)
class VideoBody(ThumbnailedBody):
    duration_ms: int = 0
    width: int | None = None
    height: int | None = None


@dataclass(slots=True)
class LocationBody:
    latitude: float
    longitude: float
    address: str = ""
    building_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CmdBody:
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CustomBody:
    event: str
    params: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class UndecodableBody:
    """The body of a stored message that could not be decoded (a corrupt or foreign payload):
    the raw bytes as stored and why decoding failed. Reads return such messages instead of
    failing; `MessageStore.verify` reports them. Never written back."""

    raw: bytes
    error: str
    extra: dict[str, Any] = field(default_factory=dict)


Body = (TextBody | FileBody | ThumbnailedBody | ImageBody | VoiceBody | VideoBody | LocationBody
        | CmdBody | CustomBody | UndecodableBody)


# --------------------------------------------------------------------------------------- message


def conversation_id(chat_type: ChatType, to: str, sender: str | None,
                    owner: str | None = None) -> str:
    """The conversation a message belongs to: for CHAT the peer (the sender of a received
    message, ``to`` of a sent one), for groups and rooms ``to``. ``sender`` None or equal to
    ``owner`` means the message was sent by the owner."""
    received = sender is not None and sender != owner
    return sender if (received and chat_type == ChatType.CHAT and sender) else to


@dataclass(slots=True, eq=False)
class Message:
    """One message. Make one with the factories (`Message.text`, `Message.image`, ...).

    ``sender=None`` in a factory means the store's own user. ``is_read=None`` means "not said":
    a received message inserted into the store counts as unread, an imported one as read.
    ``local_id`` is the id the sender's device gave the message before the server renamed it;
    ``edited_at`` and ``recalled_at`` are the server times (ms) of the last edit and of the
    recall (a recalled message keeps its ids and times; its body is its type's blank body).
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
    ) -> Message:
        """A message of type ``mtype`` with a body already made (importers, adapters); the
        keyword arguments are those of every factory."""
        chat_type = ChatType(chat_type)
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
        )

    @classmethod
    def text(cls, to: str, text: str, **kw: Any) -> Message:
        """A text message (emoji are text)."""
        return cls.of(MessageType.TEXT, to, TextBody(text), **kw)

    @classmethod
    def image(cls, to: str, path: str | os.PathLike[str], *, width: int | None = None,
              height: int | None = None, thumbnail: str | os.PathLike[str] | None = None,
              display_name: str | None = None, **kw: Any) -> Message:
        """An image from a local file; the client uploads it before sending."""
        p = os.fspath(path)
        body = ImageBody(local_path=p, display_name=display_name or os.path.basename(p),
                         width=width, height=height,
                         thumbnail_path=os.fspath(thumbnail) if thumbnail else "")
        return cls.of(MessageType.IMAGE, to, body, **kw)

    @classmethod
    def voice(cls, to: str, path: str | os.PathLike[str], duration_ms: int, *,
              display_name: str | None = None, **kw: Any) -> Message:
        """A voice message from a local audio file."""
        p = os.fspath(path)
        body = VoiceBody(local_path=p, display_name=display_name or os.path.basename(p),
                         duration_ms=int(duration_ms))
        return cls.of(MessageType.VOICE, to, body, **kw)

    @classmethod
    def video(cls, to: str, path: str | os.PathLike[str], duration_ms: int, *,
              thumbnail: str | os.PathLike[str] | None = None, width: int | None = None,
              height: int | None = None, display_name: str | None = None, **kw: Any) -> Message:
        """A video from a local file, with an optional local thumbnail image."""
        p = os.fspath(path)
        body = VideoBody(local_path=p, display_name=display_name or os.path.basename(p),
                         duration_ms=int(duration_ms), width=width, height=height,
                         thumbnail_path=os.fspath(thumbnail) if thumbnail else "")
        return cls.of(MessageType.VIDEO, to, body, **kw)

    @classmethod
    def file(cls, to: str, path: str | os.PathLike[str], *, display_name: str | None = None,
             **kw: Any) -> Message:
        """Any file."""
        p = os.fspath(path)
        body = FileBody(local_path=p, display_name=display_name or os.path.basename(p))
        return cls.of(MessageType.FILE, to, body, **kw)

    @classmethod
    def location(cls, to: str, latitude: float, longitude: float, *, address: str = "",
                 building_name: str = "", **kw: Any) -> Message:
        """A location (coordinates from a map service)."""
        body = LocationBody(float(latitude), float(longitude), address, building_name)
        return cls.of(MessageType.LOCATION, to, body, **kw)

    @classmethod
    def cmd(cls, to: str, action: str, params: dict[str, Any] | None = None, **kw: Any) -> Message:
        """A command to the peer: sent, never shown, never stored."""
        return cls.of(MessageType.CMD, to, CmdBody(action, dict(params or {})), **kw)

    @classmethod
    def custom(cls, to: str, event: str, params: dict[str, str] | None = None, **kw: Any) -> Message:
        """An app-defined message (red packets, templates, ...)."""
        return cls.of(MessageType.CUSTOM, to, CustomBody(event, dict(params or {})), **kw)


_MESSAGE_FIELDS = tuple(Message.__dataclass_fields__)


# ------------------------------------------------------------------------------ other values


class Conversation:
    """A conversation with its unread count and last message.

    ``last_message`` of conversations listed by the store is decoded on first access, so a list
    of thousands costs only what is looked at.
    """

    __slots__ = ("_decode", "_last", "_last_row", "chat_type", "conv_id", "ext", "last_activity",
                 "unread_count")

    def __init__(self, conv_id: str, chat_type: ChatType, unread_count: int = 0,
                 last_message: Message | None = None, last_activity: int = 0,
                 ext: dict[str, Any] | None = None) -> None:
        self.conv_id = conv_id
        self.chat_type = chat_type
        self.unread_count = unread_count
        self.last_activity = last_activity
        self.ext = ext if ext is not None else {}
        self._last = last_message
        self._last_row: Any = None
        self._decode: Callable[[Any], Message] | None = None

    @classmethod
    def lazy(cls, conv_id: str, chat_type: ChatType, unread_count: int, last_activity: int,
             ext: dict[str, Any], row: Any, decode: Callable[[Any], Message]) -> Conversation:
        """A conversation whose last message is decoded from ``row`` when first read."""
        conv = cls(conv_id, chat_type, unread_count, None, last_activity, ext)
        conv._last_row, conv._decode = row, decode
        return conv

    @property
    def last_message(self) -> Message | None:
        if self._last_row is not None and self._decode is not None:
            self._last, self._last_row = self._decode(self._last_row), None
        return self._last

    @last_message.setter
    def last_message(self, value: Message | None) -> None:
        self._last, self._last_row = value, None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Conversation):
            return NotImplemented
        return (self.conv_id, self.chat_type, self.unread_count, self.last_message,
                self.last_activity, self.ext) == (other.conv_id, other.chat_type,
                                                  other.unread_count, other.last_message,
                                                  other.last_activity, other.ext)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Conversation(conv_id={self.conv_id!r}, chat_type={self.chat_type!r}, "
                f"unread_count={self.unread_count!r}, last_message={self.last_message!r}, "
                f"last_activity={self.last_activity!r}, ext={self.ext!r})")


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
