"""Reading the files of an export in bounded memory, whatever the archive claims.

Rules kept here:
- a zip member is opened only when its declared size is within the limit for its use and its
  compression ratio is one real exports have (`MAX_RATIO`, for members past `SMALL`): a zip bomb
  is refused before a byte is inflated; zipfile stops reading at the declared size, and a member
  whose data disagrees with its header is a damaged archive -- an `IMError`, never a raw error;
- a JSON file read whole (Slack's listings and day files) may be at most `MAX_JSON_BYTES`, in a
  zip or in a folder; text read line by line (WhatsApp) may be large, but no line may pass
  `MAX_LINE_CHARS` (see `_common.decode_lines`).
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import IO, Any

from ..errors import ErrorCode, IMError

__all__ = ["MAX_JSON_BYTES", "MAX_LINE_CHARS", "MAX_RATIO", "MAX_TEXT_BYTES", "folder_json_size",
           "json_size_ok", "open_member"]

MAX_TEXT_BYTES = 8 << 30  # a chat's text, read as a stream (years of a busy chat fit)
MAX_JSON_BYTES = 256 << 20  # a JSON file parsed whole (a Slack day of a busy channel is a few MB)
MAX_LINE_CHARS = 1 << 20  # one line of a text export (WhatsApp messages are at most 65,536)
MAX_RATIO = 200  # inflated / deflated size of one member (chat text and JSON: 5-30)
SMALL = 1 << 20  # members up to this size are not held to the ratio


def _refuse(path: str, name: str, why: str) -> IMError:
    return IMError(ErrorCode.FILE_INVALID,
                   f"{path}: {name} {why}; the archive is damaged or hostile (a zip bomb?) -- "
                   "unpack it yourself if you trust it")


def open_member(z: zipfile.ZipFile, name: str, path: str, limit: int) -> IO[bytes]:
    """Member ``name`` of ``z`` (the archive at ``path``) for reading, once its size (at most
    ``limit`` bytes) and compression ratio pass."""
    info = z.getinfo(name)
    if info.file_size > limit:
        raise _refuse(path, name, f"unpacks to {info.file_size:,} bytes, past the limit of "
                                  f"{limit:,}")
    if info.file_size > SMALL and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise _refuse(path, name, f"unpacks {info.file_size // max(info.compress_size, 1):,} "
                                  f"times its packed size, past {MAX_RATIO}")
    try:
        return io.BufferedReader(_Checked(z.open(name), path, name))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as exc:
        raise _refuse(path, name, f"cannot be read ({exc})") from exc


def json_size_ok(path: str, name: str, size: int) -> None:
    """Refuse a JSON file too large to parse whole."""
    if size > MAX_JSON_BYTES:
        raise IMError(ErrorCode.FILE_INVALID,
                      f"{path}: {name} has {size:,} bytes, past the limit of {MAX_JSON_BYTES:,} "
                      "for one JSON file of an export")


class _Checked(io.RawIOBase):
    """A member's stream whose damage (a bad CRC, data past its header) is an `IMError`."""

    def __init__(self, raw: IO[bytes], path: str, name: str) -> None:
        self.raw, self.path, self.name = raw, path, name

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self.raw.read(len(b))
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise _refuse(self.path, self.name, f"cannot be read ({exc})") from exc
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.raw.close()
        super().close()


def folder_json_size(path: str, name: str) -> None:
    """`json_size_ok` for a file of an unpacked export."""
    json_size_ok(path, name, os.path.getsize(os.path.join(path, name)))
