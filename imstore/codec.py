"""msgpack encoding of message bodies and ``ext``, the size limits, and message validation.

Rules kept here:
- this is the one place that checks sizes: the payload limit (msgpack-encoded body plus ``ext``)
  and the attachment file limit;
- an encoded body starts with a version byte; fields this version does not know are kept in the
  body's ``extra`` and written back unchanged;
- a blob that cannot be decoded is an `IMError(MESSAGE_INVALID)`, never a crash.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any

import msgpack

from .errors import ErrorCode, IMError
from .message import (
    ATTACHMENT_TYPES,
    Body,
    CmdBody,
    CustomBody,
    DownloadStatus,
    FileBody,
    ImageBody,
    LocationBody,
    Message,
    MessageType,
    TextBody,
    VideoBody,
    VoiceBody,
)

__all__ = [
    "BODY_CLASSES",
    "FORMAT_VERSION",
    "Limits",
    "body_from_dict",
    "body_to_dict",
    "decode_body",
    "decode_ext",
    "encode_body",
    "encode_ext",
    "validate_message",
]

FORMAT_VERSION = 1

BODY_CLASSES: dict[MessageType, type] = {
    MessageType.TEXT: TextBody,
    MessageType.IMAGE: ImageBody,
    MessageType.VOICE: VoiceBody,
    MessageType.VIDEO: VideoBody,
    MessageType.FILE: FileBody,
    MessageType.LOCATION: LocationBody,
    MessageType.CMD: CmdBody,
    MessageType.CUSTOM: CustomBody,
}

# Per class: (field name, is a DownloadStatus) for every field but ``extra``.
_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {
    cls: tuple((f.name, "DownloadStatus" in str(f.type)) for f in fields(cls) if f.name != "extra")
    for cls in BODY_CLASSES.values()
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits. The defaults are the product's; some servers allow more (5 KB, 200 MB).

    Attributes:
        max_payload_bytes: msgpack-encoded body plus ``ext``.
        max_file_bytes: an attachment's file.
    """

    max_payload_bytes: int = 3 * 1024
    max_file_bytes: int = 10 * 1024 * 1024


def body_to_dict(body: Body) -> dict[str, Any]:
    """The body as plain msgpack-able data, unknown fields included."""
    out: dict[str, Any] = dict(body.extra)
    for name, is_status in _FIELDS[type(body)]:
        value = getattr(body, name)
        out[name] = int(value) if is_status else value
    return out


_NAMES: dict[type, frozenset[str]] = {c: frozenset(n for n, _ in f) for c, f in _FIELDS.items()}
_STATUS_FIELDS: dict[type, tuple[str, ...]] = {c: tuple(n for n, st in f if st)
                                              for c, f in _FIELDS.items()}
_DOWNLOAD_STATUS = {int(s): s for s in DownloadStatus}


def body_from_dict(mtype: MessageType, data: dict[str, Any]) -> Body:
    """Rebuild a body; keys this version does not know go to ``extra``."""
    cls = BODY_CLASSES[mtype]
    names = _NAMES[cls]
    known: dict[str, Any]
    extra: dict[str, Any] = {}
    if names.issuperset(data):  # the common case: written by this version
        known = data
    else:
        known = {}
        for k, v in data.items():
            if k in names:
                known[k] = v
            else:
                extra[k] = v
    for k in _STATUS_FIELDS[cls]:
        if k in known:
            known[k] = _DOWNLOAD_STATUS.get(known[k]) or DownloadStatus(known[k])
    body: Body = cls(**known, extra=extra)
    return body


def _pack(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"cannot encode {type(value).__name__}: {exc}; use str, int, float, bool, "
                      "bytes, None, lists and dicts with str keys") from exc


def encode_body(body: Body) -> bytes:
    """Version byte + msgpack map."""
    return bytes((FORMAT_VERSION,)) + _pack(body_to_dict(body))


def encode_ext(ext: dict[str, Any]) -> bytes:
    return _pack(ext) if ext else b""


def _unpack(blob: bytes | memoryview, what: str) -> Any:
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for corrupt input
        raise IMError(ErrorCode.MESSAGE_INVALID,
                      f"the stored {what} is corrupt ({exc}); delete the message or restore the "
                      "database from a backup") from exc


def decode_body(mtype: MessageType, blob: bytes) -> Body:
    """Decode a stored body. Raises `IMError(MESSAGE_INVALID)` on a corrupt blob."""
    if not blob:
        raise IMError(ErrorCode.MESSAGE_INVALID, "the stored body is empty; delete the message")
    data = _unpack(memoryview(blob)[1:], "body")
    if not isinstance(data, dict):
        raise IMError(ErrorCode.MESSAGE_INVALID, "the stored body is not a map; delete the message")
    try:
        return body_from_dict(mtype, data)
    except (TypeError, ValueError) as exc:
        raise IMError(ErrorCode.MESSAGE_INVALID,
                      f"the stored body does not fit a {mtype.name} message ({exc})") from exc


def decode_ext(blob: bytes | None) -> dict[str, Any]:
    if not blob:
        return {}
    data = _unpack(blob, "ext")
    if not isinstance(data, dict):
        raise IMError(ErrorCode.MESSAGE_INVALID, "the stored ext is not a map; delete the message")
    return data


def _invalid(code: ErrorCode, text: str) -> IMError:
    return IMError(code, text)


def _check_body(msg: Message) -> None:
    body = msg.body
    want = BODY_CLASSES[msg.type]
    if type(body) is not want:
        raise _invalid(ErrorCode.MESSAGE_INVALID,
                       f"a {msg.type.name} message needs a {want.__name__}, not "
                       f"{type(body).__name__}; build it with Message.{msg.type.name.lower()}()")
    if isinstance(body, TextBody):
        if not isinstance(body.text, str) or not body.text:
            raise _invalid(ErrorCode.MESSAGE_INVALID, "a text message needs non-empty text")
    elif isinstance(body, LocationBody):
        lat, lon = body.latitude, body.longitude
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (lat, lon)) \
                or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise _invalid(ErrorCode.INVALID_PARAM,
                           f"latitude {lat!r} / longitude {lon!r} are outside -90..90 / -180..180")
    elif isinstance(body, CmdBody | CustomBody):
        name = body.action if isinstance(body, CmdBody) else body.event
        if not isinstance(name, str) or not name:
            raise _invalid(ErrorCode.MESSAGE_INVALID,
                           f"a {msg.type.name} message needs a non-empty "
                           f"{'action' if isinstance(body, CmdBody) else 'event'}")
        if not isinstance(body.params, dict):
            raise _invalid(ErrorCode.INVALID_PARAM, "params must be a dict")
        if isinstance(body, CustomBody) and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in body.params.items()):
            raise _invalid(ErrorCode.INVALID_PARAM,
                           "a custom message's params must be dict[str, str]; convert the values "
                           "to strings")


def _check_file(body: FileBody, limits: Limits, need_file: bool) -> None:
    path = body.local_path
    if not path:
        if need_file or not body.remote_url:
            raise _invalid(ErrorCode.FILE_NOT_FOUND,
                           "the attachment has neither a local file nor a remote url")
        return
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:
        if need_file or not body.remote_url:
            raise _invalid(ErrorCode.FILE_NOT_FOUND,
                           f"attachment file {path!r} does not exist; check the path") from exc
        return
    if not os.path.isfile(path):
        raise _invalid(ErrorCode.FILE_INVALID, f"attachment {path!r} is not a regular file")
    if st.st_size > limits.max_file_bytes:
        raise _invalid(ErrorCode.FILE_TOO_LARGE,
                       f"attachment {path!r} has {st.st_size} bytes; the limit is "
                       f"{limits.max_file_bytes} bytes")
    body.size = st.st_size
    if not body.display_name:
        body.display_name = os.path.basename(path)


def validate_message(msg: Message, limits: Limits, *, need_file: bool = False) -> tuple[bytes, bytes]:
    """Check a message against the type rules and the limits; return (encoded body, encoded ext).

    ``need_file`` is true when sending: the attachment must be on this device. Otherwise (import,
    insert of received messages) a remote url is enough.
    """
    try:
        mtype = MessageType(msg.type)
    except ValueError as exc:
        raise _invalid(ErrorCode.INVALID_PARAM,
                       f"unknown message type {msg.type!r}; use a MessageType") from exc
    msg.type = mtype
    if not isinstance(msg.to, str) or not msg.to:
        raise _invalid(ErrorCode.INVALID_PARAM, "a message needs a recipient ('to')")
    if not isinstance(msg.ext, dict) or not all(isinstance(k, str) for k in msg.ext):
        raise _invalid(ErrorCode.INVALID_PARAM, "ext must be a dict with str keys")
    _check_body(msg)
    if mtype in ATTACHMENT_TYPES:
        assert isinstance(msg.body, FileBody)
        _check_file(msg.body, limits, need_file)
    body = encode_body(msg.body)
    ext = encode_ext(msg.ext)
    size = len(body) - 1 + len(ext)
    if size > limits.max_payload_bytes:
        raise _invalid(ErrorCode.MESSAGE_SIZE_LIMIT,
                       f"the message payload is {size} bytes; the limit is "
                       f"{limits.max_payload_bytes} bytes (body plus ext, msgpack-encoded)")
    return body, ext
