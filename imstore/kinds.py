"""What each message type means, in one table keyed by `MessageType`.

Rules kept here:
- `KINDS` is the one place that says, per type: the body class, which body fields keyword search
  sees, whether it carries an attachment and a thumbnail, what a receiver downloads by itself,
  whether it is stored at all, whether it may be edited, and its *blank* body (what a recalled
  message keeps). The codec, search, the store, the client, the server and the importers read it;
- adding a message type is a row here plus its body class in `message`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .message import (
    Body,
    CmdBody,
    CustomBody,
    FileBody,
    ImageBody,
    LocationBody,
    MessageType,
    TextBody,
    VideoBody,
    VoiceBody,
)

__all__ = ["ATTACHMENT_TYPES", "KINDS", "AutoDownload", "Kind", "blank_body", "kind_of",
           "searchable_text"]


class AutoDownload(Enum):
    """What a receiving client downloads without being asked."""

    NOTHING = "nothing"
    THUMBNAIL = "thumbnail"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class Kind:
    """The facts of one message type."""

    body: type[Any]
    searchable: tuple[str, ...] = ()  # body fields keyword search (scope CONTENT) sees
    attachment: bool = False  # the body is a `FileBody`: a file on the server and the device
    thumbnail: bool = False  # the body carries a thumbnail (path, url, status)
    auto_download: AutoDownload = AutoDownload.NOTHING
    stored: bool = True  # CMD messages are sent, never stored
    editable: bool = False  # the sender may replace the content after sending
    blank: Callable[[], Body] = lambda: TextBody("")  # the body of a recall notice


KINDS: dict[MessageType, Kind] = {
    MessageType.TEXT: Kind(TextBody, ("text",), editable=True, blank=lambda: TextBody("")),
    MessageType.IMAGE: Kind(ImageBody, ("display_name", "caption"), attachment=True,
                            thumbnail=True, auto_download=AutoDownload.THUMBNAIL, blank=ImageBody),
    MessageType.VOICE: Kind(VoiceBody, ("display_name", "caption"), attachment=True,
                            auto_download=AutoDownload.FILE, blank=VoiceBody),
    MessageType.VIDEO: Kind(VideoBody, ("display_name", "caption"), attachment=True,
                            thumbnail=True, auto_download=AutoDownload.THUMBNAIL, blank=VideoBody),
    MessageType.FILE: Kind(FileBody, ("display_name", "caption"), attachment=True,
                           blank=FileBody),
    MessageType.LOCATION: Kind(LocationBody, ("address", "building_name"),
                               blank=lambda: LocationBody(0.0, 0.0)),
    MessageType.CMD: Kind(CmdBody, (), stored=False, blank=lambda: CmdBody("")),
    MessageType.CUSTOM: Kind(CustomBody, ("event",), editable=True,
                             blank=lambda: CustomBody("")),
}

ATTACHMENT_TYPES = frozenset(t for t, k in KINDS.items() if k.attachment)


def kind_of(mtype: MessageType) -> Kind:
    """The facts of a message type."""
    return KINDS[mtype]


def blank_body(mtype: MessageType) -> Body:
    """The body a recalled message of this type keeps."""
    return KINDS[mtype].blank()


def searchable_text(mtype: MessageType, fields: dict[str, Any] | Any) -> str:
    """What keyword search sees of a body: its searchable fields, one per line. ``fields`` is a
    body or the plain dict it was encoded as (search reads raw payloads too)."""
    kind = KINDS.get(mtype)
    if kind is None:
        return ""
    if isinstance(fields, dict):
        values = [fields.get(k, "") for k in kind.searchable]
    elif isinstance(fields, kind.body):
        values = [getattr(fields, k) for k in kind.searchable]
    else:
        return ""
    return "\n".join(str(v) for v in values if v != "")  # fields added later are often empty

