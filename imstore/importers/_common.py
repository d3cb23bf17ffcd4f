"""Helpers shared by the importers."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
from typing import Any

from ..message import FileBody, ImageBody, Message, MessageType, VideoBody, VoiceBody

__all__ = ["attachment_message", "custom", "stable_id", "str_params"]


def stable_id(prefix: str, *parts: object) -> str:
    """A message id derived from what identifies the message in its export (so a re-import finds
    it again)."""
    digest = hashlib.sha1("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:24]
    return f"{prefix}:{digest}"


def str_params(params: dict[str, Any]) -> dict[str, str]:
    """Custom message params must be strings: JSON-encode what is not."""
    return {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in params.items() if v is not None}


def custom(to: str, event: str, params: dict[str, Any], **kw: Any) -> Message:
    return Message.custom(to, event, str_params(params), **kw)


def kind_of(name: str, mime: str | None = None) -> MessageType:
    mime = mime or mimetypes.guess_type(name)[0] or ""
    if mime.startswith("image/"):
        return MessageType.IMAGE
    if mime.startswith("video/"):
        return MessageType.VIDEO
    if mime.startswith("audio/"):
        return MessageType.VOICE
    return MessageType.FILE


def attachment_message(to: str, mtype: MessageType, *, path: str | None, origin: str,
                       display_name: str, size: int = 0, width: int | None = None,
                       height: int | None = None, duration_ms: int = 0,
                       thumbnail: str | None = None, **kw: Any) -> Message:
    """An attachment message for a file that may or may not be beside the export: a present file
    is referenced by its local path, a missing one by ``origin`` (where the export said it was)."""
    local = path if path and os.path.isfile(path) else ""
    common: dict[str, Any] = dict(local_path=local, display_name=display_name,
                                  remote_url="" if local else origin,
                                  size=os.path.getsize(local) if local else int(size or 0))
    body: FileBody
    if mtype == MessageType.IMAGE:
        body = ImageBody(width=width, height=height, **common)
    elif mtype == MessageType.VIDEO:
        thumb = thumbnail if thumbnail and os.path.isfile(thumbnail) else ""
        body = VideoBody(duration_ms=duration_ms, width=width, height=height,
                         thumbnail_path=thumb, **common)
    elif mtype == MessageType.VOICE:
        body = VoiceBody(duration_ms=duration_ms, **common)
    else:
        body = FileBody(**common)
    return Message.of(mtype, to, body, **kw)


