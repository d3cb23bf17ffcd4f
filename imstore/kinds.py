"""What each message type means, in one table keyed by `MessageType`.

Rules kept here:
- `KINDS` is the one place that says, per type: the body class, which body fields keyword search
  sees, whether it carries an attachment and a thumbnail, what a receiver downloads by itself,
  whether it is stored at all, whether it may be edited, what its content must say to be sent or
  stored (`check_content`), and its *blank* body (what a recalled message keeps). The codec,
  search, the store, the client, the server and the importers read it;
- a row's ``attachment`` and ``thumbnail`` agree with its body class (a `FileBody`, a
  `ThumbnailedBody`: the one group of thumbnail fields); the table checks itself on import;
- adding a message type is a row here plus its body class in `message`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import ErrorCode, IMError
from .message import (
    Body,
    CmdBody,
    CustomBody,
    FileBody,
    ImageBody,
    LocationBody,
    MessageType,
    TextBody,
    ThumbnailedBody,
    VideoBody,
    VoiceBody,
)

__all__ = ["ATTACHMENT_TYPES", "KINDS", "AutoDownload", "Kind", "blank_body", "check_content",
           "kind_of", "searchable_text"]


class AutoDownload(Enum):
    """What a receiving client downloads without being asked."""

    NOTHING = "nothing"
    THUMBNAIL = "thumbnail"
    FILE = "file"


def _anything(body: Any) -> None:
    """Any content will do (an attachment's rules are its file's, checked by the codec)."""


def _needs_text(body: TextBody) -> None:
    if not body.text:
        raise IMError(ErrorCode.MESSAGE_INVALID, "a text message needs non-empty text")


def _on_earth(body: LocationBody) -> None:
    lat, lon = body.latitude, body.longitude
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"body.latitude/longitude must be within -90..90 / -180..180, not "
                      f"{(lat, lon)!r}")


def _named(type_name: str, attr: str) -> Callable[[Any], None]:
    def check(body: Any) -> None:
        if not getattr(body, attr):
            raise IMError(ErrorCode.MESSAGE_INVALID,
                          f"a {type_name} message needs a non-empty {attr}")
    return check


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
    content: Callable[[Any], None] = _anything  # raises IMError when the content is not enough


KINDS: dict[MessageType, Kind] = {
    MessageType.TEXT: Kind(TextBody, ("text",), editable=True, blank=lambda: TextBody(""),
                           content=_needs_text),
    MessageType.IMAGE: Kind(ImageBody, ("display_name", "caption"), attachment=True,
                            thumbnail=True, auto_download=AutoDownload.THUMBNAIL, blank=ImageBody),
    MessageType.VOICE: Kind(VoiceBody, ("display_name", "caption"), attachment=True,
                            auto_download=AutoDownload.FILE, blank=VoiceBody),
    MessageType.VIDEO: Kind(VideoBody, ("display_name", "caption"), attachment=True,
                            thumbnail=True, auto_download=AutoDownload.THUMBNAIL, blank=VideoBody),
    MessageType.FILE: Kind(FileBody, ("display_name", "caption"), attachment=True,
                           blank=FileBody),
    MessageType.LOCATION: Kind(LocationBody, ("address", "building_name"),
                               blank=lambda: LocationBody(0.0, 0.0), content=_on_earth),
    MessageType.CMD: Kind(CmdBody, (), stored=False, blank=lambda: CmdBody(""),
                          content=_named("CMD", "action")),
    MessageType.CUSTOM: Kind(CustomBody, ("event",), editable=True,
                             blank=lambda: CustomBody(""), content=_named("CUSTOM", "event")),
}

for _type, _kind in KINDS.items():  # the table agrees with the bodies, or the import fails
    if _kind.attachment != issubclass(_kind.body, FileBody) \
            or _kind.thumbnail != issubclass(_kind.body, ThumbnailedBody) \
            or (_kind.auto_download is AutoDownload.THUMBNAIL and not _kind.thumbnail):
        raise TypeError(f"KINDS[{_type.name}] disagrees with its body class {_kind.body}")

ATTACHMENT_TYPES = frozenset(t for t, k in KINDS.items() if k.attachment)


def kind_of(mtype: MessageType) -> Kind:
    """The facts of a message type."""
    return KINDS[mtype]


def check_content(mtype: MessageType, body: Body) -> None:
    """What a body of this type must say to be worth sending or storing (a recall notice's
    blank body is exempt: the caller skips it). Raises `IMError`."""
    KINDS[mtype].content(body)


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

