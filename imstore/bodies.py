"""Message bodies: the payload of each message type, and the download status an attachment's
file and thumbnail carry.

Rules kept here:
- no I/O and no storage: plain slotted values (the codec encodes them, `kinds` maps each
  `MessageType` to its class);
- every body keeps the fields it does not know in ``extra``, so a payload written by a newer
  version survives a decode/encode round trip;
- the bodies that have a thumbnail share one group of thumbnail fields (`ThumbnailedBody`);
- a stored payload that cannot be decoded is an `UndecodableBody` value (its bytes and why),
  never an exception on read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = ["Body", "CmdBody", "CustomBody", "DownloadStatus", "FileBody", "ImageBody",
           "LocationBody", "TextBody", "ThumbnailedBody", "UndecodableBody", "VideoBody",
           "VoiceBody"]


class DownloadStatus(IntEnum):
    PENDING = 1
    DOWNLOADING = 2
    SUCCEEDED = 3
    FAILED = 4



@dataclass(slots=True)
class TextBody:
    """Plain text (what search sees) and, when the sender formatted it, its HTML form (Matrix's
    ``org.matrix.custom.html``) in ``formatted``."""

    text: str
    formatted: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FileBody:
    """An attachment. ``local_path`` is where the file is (sender) or will be (receiver) on this
    device; ``remote_url`` where the server keeps it once uploaded; ``caption`` the text sent
    with it (searched like the file name)."""

    local_path: str = ""
    display_name: str = ""
    remote_url: str = ""
    secret: str = ""
    size: int = 0
    download_status: DownloadStatus = DownloadStatus.PENDING
    caption: str = ""
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
