"""What the importers share: the options of one import, what a first pass learns about an export,
text decoding with a clear error, stable ids, and the few message shapes every format needs.

Rules kept here:
- a file's encoding is decided once, from its first bytes (a BOM, or UTF-16's zero bytes), else
  it is UTF-8 -- or the encoding the user named; text that does not decode is an `IMError` naming
  the file and the line, never a replacement character and never a `UnicodeDecodeError`;
- who "me" is in an export is decided by `Identity` alone: a sender is the store's owner when
  their id or their name (as the export writes it) is one of the names the import was given;
- a deleted message is a recall notice, not text (`deleted_message`); an edit keeps its time;
- a file an export names is read only from inside the export's folder (`inside`);
- one malformed entry is skipped with its reason, never the whole import (`one_entry`).
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import io
import json
import mimetypes
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ErrorCode, IMError
from ..message import (
    ChatType,
    FileBody,
    ImageBody,
    Message,
    MessageType,
    TextBody,
    VideoBody,
    VoiceBody,
)
from ._archive import MAX_LINE_CHARS

__all__ = [
    "MALFORMED",
    "ExportInfo",
    "Identity",
    "ImportOptions",
    "attachment_message",
    "custom",
    "decode_lines",
    "deleted_message",
    "detect_encoding",
    "inside",
    "mark_edited",
    "one_entry",
    "stable_id",
    "str_params",
    "zone_of",
]

Skipped = Callable[[str], None]


@dataclass
class ImportOptions:
    """How to read one export.

    Attributes:
        me: the names or ids the store's owner has in this export (as the export writes them).
        owner: the store's owner id (also matched, so ``--user NAME`` alone still works).
        tz: an IANA zone for exports that write phone-local times (WhatsApp); None: this machine's.
        date_order: "dmy", "mdy" or "ymd" when an export's dates cannot tell (WhatsApp).
        encoding: the text encoding to use instead of detecting it.
    """

    me: tuple[str, ...] = ()
    owner: str = ""
    tz: str | None = None
    date_order: str | None = None
    encoding: str | None = None

    def identity(self, *extra: str) -> Identity:
        names = {n for n in (*self.me, self.owner, *extra) if n}
        if ":" in self.owner:  # the store's owner "tg:42" is "42" in a Telegram export
            names.add(self.owner.split(":", 1)[1])
        return Identity(frozenset(names))


@dataclass(frozen=True)
class Identity:
    """The names and ids that mean "the store's owner" in one export."""

    names: frozenset[str]
    folded: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", frozenset(_fold(n) for n in self.names))

    def is_me(self, *keys: object) -> bool:
        return any(k is not None and _fold(str(k)) in self.folded for k in keys)


def _fold(name: str) -> str:
    """Names compare without case and surrounding space ("ann " is "Ann")."""
    return " ".join(name.split()).casefold()


@dataclass
class ExportInfo:
    """What a first pass over an export learned, before anything is written.

    Attributes:
        format: the format's name.
        total: how many entries the import will read (the progress bar's total).
        owner: the imstore id of the person who made the export, when it says (a new store
            without ``--user`` takes it as its owner).
        owner_name: that person's display name, when known.
        notes: what the import decided that the user should hear (time zone, date order, who
            "me" is).
    """

    format: str
    total: int = 0
    owner: str | None = None
    owner_name: str | None = None
    notes: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def stable_id(prefix: str, *parts: object) -> str:
    """A message id derived from what identifies the message in its export (so a re-import finds
    it again)."""
    digest = hashlib.sha1("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:24]
    return f"{prefix}:{digest}"


def str_params(params: dict[str, Any]) -> dict[str, str]:
    """Custom message params must be strings: JSON-encode what is not."""
    return {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
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
    is referenced by its local path, a missing one by ``origin`` (where the export said it was).
    The text sent with it (``ext["caption"]`` as the readers collect it) becomes the body's
    ``caption``, which search finds in the default scope."""
    local = path if path and os.path.isfile(path) else ""
    ext = dict(kw.pop("ext", None) or {})
    common: dict[str, Any] = dict(local_path=local, display_name=display_name,
                                  remote_url="" if local else origin,
                                  size=os.path.getsize(local) if local else int(size or 0),
                                  caption=str(ext.pop("caption", "") or ""))
    body: FileBody
    if mtype == MessageType.IMAGE:
        body = ImageBody(width=_int(width), height=_int(height), **common)
    elif mtype == MessageType.VIDEO:
        thumb = thumbnail if thumbnail and os.path.isfile(thumbnail) else ""
        body = VideoBody(duration_ms=duration_ms, width=_int(width), height=_int(height),
                         thumbnail_path=thumb, **common)
    elif mtype == MessageType.VOICE:
        body = VoiceBody(duration_ms=duration_ms, **common)
    else:
        body = FileBody(**common)
    return Message.of(mtype, to, body, ext=ext, **kw)


def inside(base: str, rel: str) -> str:
    """``rel`` (a path an export names) under the export's folder ``base``; "" when it points
    outside it (an absolute path, ``..``, a link out): such a file is never read."""
    root = os.path.realpath(base)
    path = os.path.realpath(os.path.join(root, rel))
    return path if os.path.commonpath([root, path]) == root and path != root else ""


# What converting one malformed entry of an export can raise: the entry is skipped with its
# reason, the rest goes on (`one_entry`).
MALFORMED = (IMError, TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError)


def one_entry(fmt: str, skipped: Skipped, convert: Callable[[], Iterable[Message]]
              ) -> list[Message]:
    """The messages of one export entry, or none (with the reason counted) when the entry is
    malformed in a way the reader did not foresee -- a field of the wrong type, a value out of
    range: one bad entry never fails the import."""
    try:
        return list(convert())
    except MALFORMED as exc:
        if isinstance(exc, IMError):  # "latitude must be ..., not 999.0": the reason, not the value
            why = str(exc.description).split(", not ")[0]
        else:
            why = f"a field of the wrong type or value ({type(exc).__name__})"
        skipped(f"{fmt}: {why}")
        return []


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


_MESSAGE_FIELDS = {f.name for f in dataclasses.fields(Message)}


def mark_edited(msg: Message, edited_at: int | None) -> Message:
    """Record that a message was edited (at ``edited_at`` ms, when the export says)."""
    if "edited_at" in _MESSAGE_FIELDS and edited_at is not None:
        msg.edited_at = edited_at  # type: ignore[attr-defined]
    msg.ext["edited"] = True
    if edited_at is not None:
        msg.ext["edited_at"] = edited_at
    return msg


def deleted_message(to: str, when: int, placeholder: str, **kw: Any) -> Message:
    """A message the sender deleted for everyone: a recall notice (blank body, ``recalled_at``)
    where the message model has one, else a CUSTOM ``deleted`` event; ``ext["deleted"]`` either
    way, with the export's placeholder text kept in ``ext["placeholder"]``."""
    ext = dict(kw.pop("ext", None) or {})
    ext.update(deleted=True, placeholder=placeholder)
    if "recalled_at" in _MESSAGE_FIELDS:
        msg = Message.text(to, "-", ext=ext, **kw)
        msg.body = TextBody("")
        msg.recalled_at = when  # type: ignore[attr-defined]
        return msg
    return Message.custom(to, "deleted", {}, ext=ext, **kw)


def zone_of(tz: str | None) -> tuple[Any, str]:
    """(tzinfo, how to name it) for ``--tz``; None is this machine's zone (tzinfo None: naive
    times are read as local ones)."""
    if tz is None:
        local = datetime.now().astimezone().tzinfo
        return None, f"this machine's zone ({local}); pass --tz to change"
    try:
        return ZoneInfo(tz), tz
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise IMError(ErrorCode.INVALID_PARAM, f"unknown time zone {tz!r}; use a name like "
                                               "Europe/Berlin or UTC") from exc


# ---------------------------------------------------------------------------------- text input

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def detect_encoding(head: bytes) -> str:
    """The encoding of text starting with ``head``: from a BOM, from UTF-16's zero bytes around
    ASCII characters, else UTF-8 (checked strictly while reading)."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    if len(head) >= 4:
        if head[0] and not head[1] and head[2] and not head[3]:
            return "utf-16-le"
        if not head[0] and head[1] and not head[2] and head[3]:
            return "utf-16-be"
    return "utf-8"


def encoding_error(name: str, line: int, exc: UnicodeDecodeError | None, encoding: str) -> IMError:
    what = f" ({exc.reason}, byte {exc.object[exc.start:exc.start + 1]!r})" if exc else ""
    return IMError(ErrorCode.FILE_INVALID,
                   f"{name}, line {line}: not {encoding} text{what}; exports are UTF-8 or UTF-16 "
                   "-- if you know this file's encoding, pass it (e.g. --encoding latin-1)")


def decode_lines(raw: IO[bytes], name: str, encoding: str | None) -> Iterator[str]:
    """The lines of a binary stream as text (newlines kept), decoded strictly; a byte that does not
    decode, or a line past `MAX_LINE_CHARS`, is an `IMError` naming ``name`` and the line."""
    head = raw.read(4)
    enc = encoding or detect_encoding(head)
    try:
        codecs.lookup(enc)
    except LookupError as exc:
        raise IMError(ErrorCode.INVALID_PARAM, f"unknown encoding {enc!r}") from exc
    buffered = io.BufferedReader(_Prefixed(head, raw))
    stream = io.TextIOWrapper(buffered, encoding=enc, errors="strict", newline="")
    lineno = 0
    try:
        while line := stream.readline(MAX_LINE_CHARS + 1):
            lineno += 1
            if len(line) > MAX_LINE_CHARS:
                raise IMError(ErrorCode.FILE_INVALID,
                              f"{name}, line {lineno}: longer than {MAX_LINE_CHARS:,} characters; "
                              "not a chat export")
            yield line
    except UnicodeDecodeError as exc:
        raise encoding_error(name, lineno + 1, exc, enc) from exc


class _Prefixed(io.RawIOBase):
    """A binary stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(b))
        b[:len(data)] = data
        return len(data)


def chained(*iterables: Iterable[Message]) -> Iterator[Message]:
    for it in iterables:
        yield from it


def chat_type_name(ct: ChatType) -> str:
    return ct.name
