"""msgpack encoding of message bodies and ``ext``, the size limits, and message validation.

Rules kept here:
- this is the one place that checks sizes: the payload limit (msgpack-encoded body plus ``ext``)
  and the attachment file limit;
- an encoded body starts with a version byte; fields this version does not know are kept in the
  body's ``extra`` and written back unchanged; fields added later (`_OMIT_WHEN_EMPTY`) are left
  out while empty, so a body that does not use them encodes as it did before they existed;
- ``local_ext`` (this device's data on a message) has its own limit and is never part of the
  payload;
- a blob that cannot be decoded is an `IMError(MESSAGE_INVALID)`, never a crash;
- the checks of single values (ids, text, marks, times, enums, paths) are `checks`'s; the
  message's fields are checked here with them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import msgpack

from .checks import (
    MAX_ID_CHARS,
    check_enum,
    check_id,
    check_text,
    check_time,
)
from .checks import encodable as _encodable
from .errors import ErrorCode, IMError, invalid
from .kinds import ATTACHMENT_TYPES, KINDS, check_content
from .lifecycle import INT64_MIN, MAX_TIME
from .message import (
    Body,
    ChatType,
    DownloadStatus,
    FileBody,
    Message,
    MessageStatus,
    MessageType,
    TextBody,
    ThumbnailedBody,
    UndecodableBody,
)

__all__ = [
    "BODY_CLASSES",
    "FORMAT_VERSION",
    "MAX_EXT_DEPTH",
    "MAX_TIME",
    "Limits",
    "body_from_dict",
    "body_to_dict",
    "check_body_fields",
    "check_ext",
    "decode_body",
    "decode_ext",
    "encode_body",
    "encode_ext",
    "encode_local_ext",
    "invalid",
    "validate_message",
]

FORMAT_VERSION = 1
MAX_EXT_DEPTH = 32  # nesting of ext (and of body params) beyond this is refused
UINT64_MAX = 2**64 - 1  # msgpack holds ints from INT64_MIN to this

BODY_CLASSES: dict[MessageType, type] = {t: k.body for t, k in KINDS.items()}

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
        max_thumbnail_bytes: the thumbnail an image or a video is sent with.
        max_local_ext_bytes: a message's msgpack-encoded ``local_ext`` (kept on this device,
            never sent).
    """

    max_payload_bytes: int = 3 * 1024
    max_file_bytes: int = 10 * 1024 * 1024
    max_thumbnail_bytes: int = 1024 * 1024
    max_local_ext_bytes: int = 64 * 1024


# Body fields added after the first format: written only when not empty (old readers never see
# them; old payloads decode with their defaults).
_OMIT_WHEN_EMPTY = frozenset({"formatted", "caption"})


def body_to_dict(body: Body) -> dict[str, Any]:
    """The body as plain msgpack-able data, unknown fields included. An `UndecodableBody` has
    no such form: `IMError(MESSAGE_INVALID)` (its ``raw`` bytes are what there is)."""
    names = _FIELDS.get(type(body))
    if names is None:
        raise IMError(ErrorCode.MESSAGE_INVALID,
                      f"a {type(body).__name__} has no plain form"
                      + ("; its stored bytes are in .raw" if isinstance(body, UndecodableBody)
                         else ""))
    out: dict[str, Any] = dict(body.extra)
    for name, is_status in names:
        value = getattr(body, name)
        if name in _OMIT_WHEN_EMPTY and not value:
            continue
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
    if isinstance(body, UndecodableBody):
        raise IMError(ErrorCode.MESSAGE_INVALID,
                      "this message's stored body could not be decoded, so it cannot be written "
                      "back; delete the message")
    return bytes((FORMAT_VERSION,)) + _pack(body_to_dict(body))


def encode_ext(ext: dict[str, Any]) -> bytes:
    return _pack(ext) if ext else b""


def encode_local_ext(value: Any, limits: Limits) -> bytes | None:
    """A message's ``local_ext`` checked and encoded (None when empty); MESSAGE_SIZE_LIMIT past
    `Limits.max_local_ext_bytes`."""
    if not value and type(value) is dict:
        return None
    check_ext(value, "local_ext")
    blob = _pack(value)
    if len(blob) > limits.max_local_ext_bytes:
        raise IMError(ErrorCode.MESSAGE_SIZE_LIMIT,
                      f"local_ext is {len(blob)} bytes; its limit is {limits.max_local_ext_bytes} "
                      "bytes (msgpack-encoded); keep larger data in a file of your own")
    return blob


def _unpack(blob: bytes | memoryview, what: str) -> Any:
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for corrupt input
        raise IMError(ErrorCode.MESSAGE_INVALID,
                      f"the stored {what} is corrupt ({exc}); delete the message or restore the "
                      "database from a backup") from exc


def decode_body(mtype: MessageType, blob: bytes) -> Body:
    """Decode a stored body. Raises `IMError(MESSAGE_INVALID)` on a corrupt blob."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise IMError(ErrorCode.MESSAGE_INVALID,
                      f"the stored body is a {_SQL_TYPES.get(type(blob), type(blob).__name__)} "
                      "value, not a BLOB; delete the message or restore the database from a backup")
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


_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL"}


def decode_ext(blob: bytes | None, what: str = "ext") -> dict[str, Any]:
    if not blob:
        return {}
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise IMError(ErrorCode.MESSAGE_INVALID,
                      f"the stored {what} is a {_SQL_TYPES.get(type(blob), type(blob).__name__)} "
                      "value, not a BLOB")
    data = _unpack(blob, what)
    if not isinstance(data, dict):
        raise IMError(ErrorCode.MESSAGE_INVALID, f"the stored {what} is not a map")
    return data


# ---------------------------------------------------------------------------------- validation
# Values are checked where they enter (h11's events): every field of a message, every argument of
# the store's public methods. A bad value is an `IMError` naming the field, raised before anything
# is encoded or written; nothing below raises anything else.


def _check_tree(value: Any, field: str, depth: int) -> None:
    if depth > MAX_EXT_DEPTH:
        raise invalid(field, f"nested at most {MAX_EXT_DEPTH} levels deep", value)
    if isinstance(value, str):
        check_text(value, field)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise invalid(field, "a dict with str keys", value)
            check_text(k, field)
            _check_tree(v, field, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_tree(v, field, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) \
            and not INT64_MIN <= value <= UINT64_MAX:
        raise invalid(field, "made of ints that fit in 64 bits", value)


def check_ext(value: Any, field: str = "ext") -> dict[str, Any]:
    """App-defined attributes: a dict with str keys, at most `MAX_EXT_DEPTH` deep, of values
    msgpack can hold (str, int, float, bool, bytes, None, lists, dicts)."""
    if type(value) is not dict:
        if not isinstance(value, dict):
            raise invalid(field, "a dict with str keys", value)
        _check_tree(value, field, 1)
        return value
    for k, v in value.items():  # flat text and numbers first: the usual ext, in one pass
        t = type(v)
        if type(k) is not str or not (k.isascii() or _encodable(k)) \
                or (t is str and not (v.isascii() or _encodable(v))) \
                or t not in _FLAT or (t is int and not INT64_MIN <= v <= UINT64_MAX):
            _check_tree(value, field, 1)
            break
    return value


_FLAT = frozenset({str, int, float, bool, type(None), bytes})


def _str_field(value: Any, field: str) -> None:
    if type(value) is not str or not (value.isascii() or _encodable(value)):
        check_text(value, field)


def _int_field(value: Any, field: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TIME:
        raise invalid(field, f"an int from 0 to {MAX_TIME}", value)


def _optional_int_field(value: Any, field: str) -> None:
    if value is not None:
        _int_field(value, field)


def _float_field(value: Any, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(field, "a finite number", value)


def _status_field(value: Any, field: str) -> None:
    if type(value) is not DownloadStatus and (type(value) is not int or value not in _STATUSES):
        raise invalid(field, "a DownloadStatus", value)


def _str_dict_field(value: Any, field: str) -> None:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise invalid(field, "a dict[str, str]; convert the values to strings", value)
    check_ext(value, field)


def _dict_field(value: Any, field: str) -> None:
    if value or type(value) is not dict:  # the usual empty ``extra`` costs nothing
        check_ext(value, field)


_STATUSES = frozenset(DownloadStatus)
_FIELD_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "str": _str_field, "int": _int_field, "int | None": _optional_int_field,
    "float": _float_field, "DownloadStatus": _status_field, "dict[str, str]": _str_dict_field,
    "dict[str, Any]": _dict_field,
}
# The fast path of a field check, inlined into a body class's checker (``v`` is the value, ``F``
# the field's name in messages): the condition under which the full check is called. Each is
# the first test of its `_FIELD_CHECKS` function ("True": always call it), so a value that
# passes it would pass the full check too.
_FAST_PATHS: dict[str, str] = {
    "str": "type(v) is not str or not (v.isascii() or _encodable(v))",
    "int": "True", "int | None": "v is not None", "float": "True", "DownloadStatus": "True",
    "dict[str, str]": "True", "dict[str, Any]": "v or type(v) is not dict",
}


def _compile_body_check(cls: type) -> Callable[[Any], None]:
    """One function per body class, compiled from its annotations at import: every field's check
    in field order (its fast path inline, the full `_FIELD_CHECKS` check when that fails)."""
    namespace: dict[str, Any] = {"_encodable": _encodable}
    lines = [f"def check_{cls.__name__}(body):"]
    for i, f in enumerate(fields(cls)):
        kind = str(f.type)
        namespace[f"check_{i}"] = _FIELD_CHECKS[kind]
        lines += [f"    v = body.{f.name}",
                  f"    if {_FAST_PATHS[kind]}:",
                  f"        check_{i}(v, {'body.' + f.name!r})"]
    lines.append("    return None")
    exec(compile("\n".join(lines) + "\n", f"<body check of {cls.__name__}>", "exec"), namespace)
    checker: Callable[[Any], None] = namespace[f"check_{cls.__name__}"]
    return checker


_BODY_CHECKS: dict[type, Callable[[Any], None]] = {
    cls: _compile_body_check(cls) for cls in BODY_CLASSES.values()
}


def check_body_fields(mtype: MessageType, body: Any) -> None:
    """The body is its type's class and every field has the type the class declares."""
    want = BODY_CLASSES[mtype]
    if type(body) is not want:
        raise IMError(ErrorCode.MESSAGE_INVALID,
                      f"a {mtype.name} message needs a {want.__name__}, not "
                      f"{type(body).__name__}; build it with Message.{mtype.name.lower()}()")
    _BODY_CHECKS[want](body)


def _check_file(body: FileBody, limits: Limits, need_file: bool) -> tuple[int, str] | None:
    """Check an attachment's file; returns (size, display name) read from a local file."""
    path = body.local_path
    if not path:
        if need_file or not body.remote_url:
            raise IMError(ErrorCode.FILE_NOT_FOUND,
                          "the attachment has neither a local file nor a remote url")
        return None
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:
        if need_file or not body.remote_url:
            raise IMError(ErrorCode.FILE_NOT_FOUND,
                          f"attachment file {path!r} does not exist; check the path") from exc
        return None
    if not os.path.isfile(path):
        raise IMError(ErrorCode.FILE_INVALID, f"attachment {path!r} is not a regular file")
    if st.st_size > limits.max_file_bytes:
        raise IMError(ErrorCode.FILE_TOO_LARGE,
                      f"attachment {path!r} has {st.st_size} bytes; the limit is "
                      f"{limits.max_file_bytes} bytes")
    return st.st_size, body.display_name or os.path.basename(path)


def _check_thumbnail(path: str, limits: Limits, need_file: bool) -> None:
    """A thumbnail to send is a regular file within ``max_thumbnail_bytes``."""
    try:
        size = os.stat(path).st_size
    except (OSError, ValueError) as exc:
        if need_file:
            raise IMError(ErrorCode.FILE_NOT_FOUND,
                          f"thumbnail file {path!r} does not exist; check the path") from exc
        return
    if not os.path.isfile(path):
        raise IMError(ErrorCode.FILE_INVALID, f"thumbnail {path!r} is not a regular file")
    if size > limits.max_thumbnail_bytes:
        raise IMError(ErrorCode.FILE_TOO_LARGE,
                      f"thumbnail {path!r} has {size} bytes; the limit is "
                      f"{limits.max_thumbnail_bytes} bytes (Limits.max_thumbnail_bytes)")


def _check_fields(msg: Message) -> MessageType:
    """Every field of a message has its type and range; returns its type. Each test below is
    the fast path of the check it falls back to, which raises naming the field."""
    mtype = msg.type
    if type(mtype) is not MessageType:
        mtype = check_enum(MessageType, mtype, "type")
    if type(msg.chat_type) is not ChatType:
        check_enum(ChatType, msg.chat_type, "chat_type")
    if type(msg.status) is not MessageStatus:
        check_enum(MessageStatus, msg.status, "status")
    msg_id, to, sender = msg.msg_id, msg.to, msg.sender
    if not (type(msg_id) is type(to) is str and 0 < len(msg_id) <= MAX_ID_CHARS
            and 0 < len(to) <= MAX_ID_CHARS and msg_id.isascii() and to.isascii()):
        check_id(msg_id, "msg_id")
        check_id(to, "to")
    # The common id (a short ASCII str) and time (an int in range) are checked inline, without
    # a call.
    if sender is not None and not (type(sender) is str and 0 < len(sender) <= MAX_ID_CHARS
                                   and sender.isascii()):
        check_id(sender, "sender")
    if msg.local_id is not None:
        check_id(msg.local_id, "local_id")
    if msg.reply_to is not None:
        check_id(msg.reply_to, "reply_to")
    if msg.thread_id is not None:
        check_id(msg.thread_id, "thread_id")
    local_time, server_time = msg.local_time, msg.server_time
    if not (type(local_time) is int and 0 <= local_time <= MAX_TIME):
        check_time(local_time, "local_time")
    if server_time is not None and not (type(server_time) is int and 0 <= server_time <= MAX_TIME):
        check_time(server_time, "server_time")
    if msg.edited_at is not None or msg.recalled_at is not None:
        for name in ("edited_at", "recalled_at"):
            if getattr(msg, name) is not None:
                check_time(getattr(msg, name), name)
    if not (type(msg.is_delivered) is type(msg.is_read_acked) is type(msg.need_group_ack)
            is bool):
        for name in ("is_delivered", "is_read_acked", "need_group_ack"):
            value = getattr(msg, name)
            if type(value) is not bool and (type(value) is not int or value not in (0, 1)):
                raise invalid(name, "True or False", value)
    if msg.is_read is not None and type(msg.is_read) is not bool:
        raise invalid("is_read", "True, False or None", msg.is_read)
    count = msg.group_ack_count
    if type(count) is not int or not 0 <= count < 2**31:
        raise invalid("group_ack_count", "an int from 0 to 2**31 - 1", count)
    if msg.ext or type(msg.ext) is not dict:
        check_ext(msg.ext)
    check_body_fields(mtype, msg.body)
    return mtype


def _str_header(n: int) -> int:
    """The bytes msgpack puts before a str of ``n`` bytes."""
    return 1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5


def validate_message(msg: Message, limits: Limits, *, need_file: bool = False) -> tuple[bytes, bytes]:
    """Check a message against the type rules and the limits; return (encoded body, encoded ext).

    Every field is checked for its type and range first; the message is not changed, except that
    an attachment read from a local file takes that file's ``size`` (and, when it has none, its
    ``display_name``). ``need_file`` is true when sending: the attachment must be on this device.
    Otherwise (import, insert of received messages) a remote url is enough. A recall notice
    (``recalled_at`` set) keeps its type's blank body, which is exempt from the content rules.
    """
    if not isinstance(msg, Message):
        raise invalid("message", "a Message", msg)
    mtype = _check_fields(msg)
    recalled = msg.recalled_at is not None
    if not recalled:
        check_content(mtype, msg.body)
    if mtype in ATTACHMENT_TYPES and not recalled:
        assert isinstance(msg.body, FileBody)
        found = _check_file(msg.body, limits, need_file)
        if found is not None:
            msg.body.size, msg.body.display_name = found
        if isinstance(msg.body, ThumbnailedBody) and msg.body.thumbnail_path:
            _check_thumbnail(msg.body.thumbnail_path, limits, need_file)
    body = encode_body(msg.body)
    ext = encode_ext(msg.ext)
    if msg.local_ext or type(msg.local_ext) is not dict:
        encode_local_ext(msg.local_ext, limits)
    size = len(body) - 1 + len(ext)
    if size > limits.max_payload_bytes:
        room = ""
        if isinstance(msg.body, TextBody):  # what the framing leaves for the text itself
            n = len(msg.body.text.encode("utf-8"))
            framing = size - n - _str_header(n)
            fit = limits.max_payload_bytes - framing
            fit -= _str_header(max(fit - 3, 0))
            room = f"; with this ext, the text may have up to {max(fit, 0)} bytes of UTF-8"
        raise IMError(ErrorCode.MESSAGE_SIZE_LIMIT,
                      f"the message payload is {size} bytes; the limit is "
                      f"{limits.max_payload_bytes} bytes (body plus ext, msgpack-encoded: field "
                      f"names and framing count too){room}")
    return body, ext
