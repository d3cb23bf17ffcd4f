"""Attachments: where downloads land, the one download path, and what arrives downloads by itself.

Rules kept here:
- a download is one path (`Attachments.download`) driven by a table of targets (`TARGETS`: the
  file, the thumbnail), each saying which body fields it reads and writes; its status moves
  along the lifecycle's download table; a failed download is stored FAILED and raised as
  FILE_DOWNLOAD_FAILED;
- what a received message downloads by itself is its kind's ``auto_download`` (`kinds.KINDS`),
  never a rule of the client's own; the thumbnail only for kinds that have one;
- a file lands in ``download_dir/<conversation>/``, with a name that cannot leave it;
- a file keeps the extension of its display name; a thumbnail is named after what it holds,
  sniffed from its first bytes once downloaded (`image_suffix`: PNG, JPEG, GIF, WebP; no
  extension when none of them), never after the file it shows (a video's ``.mp4``);
- a store in memory gets a temporary download folder only when a download needs one; it is
  removed when the client closes (or is collected).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..adapters import ProgressFn
from ..errors import ErrorCode, IMError
from ..kinds import AutoDownload, kind_of
from ..lifecycle import DownloadEvent, download_move
from ..message import DownloadStatus, FileBody, Message, ThumbnailedBody
from ..store import MessageStore
from ._gate import ConnectionGate
from ._settings import Settings

__all__ = ["TARGETS", "Attachments", "Target", "image_suffix", "safe_file_name"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def safe_file_name(name: str, fallback: str = "file") -> str:
    """A file name that cannot leave its directory: no separators, no ``..``, no NUL bytes."""
    base = name.replace("\\", "/").split("/")[-1]
    base = _UNSAFE.sub("_", base).strip().lstrip(".")
    return base[:120] or fallback


_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF87a", ".gif"),
                (b"GIF89a", ".gif"))


def image_suffix(head: bytes) -> str:
    """The extension of the image format ``head`` (a file's first 12 bytes) starts, or ""."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    return next((ext for magic, ext in _IMAGE_MAGIC if head.startswith(magic)), "")


@dataclass(frozen=True, slots=True)
class Target:
    """What one kind of download reads and writes on a body."""

    body: type[FileBody]  # the bodies that have it
    url: str  # the field with the server's url
    path: str  # the field the local path goes to
    status: str  # the field with its DownloadStatus
    prefix: str  # of the local file's name
    fallback: str  # the file's name when the body has no display name
    missing: str  # the error when the body has none to download
    sized: bool  # the body's size becomes the downloaded file's
    sniffed: bool  # named after the image format it holds, not the display name's extension


TARGETS: dict[AutoDownload, Target] = {
    AutoDownload.FILE: Target(FileBody, "remote_url", "local_path", "download_status", "", "file",
                              "this message has no file to download", sized=True, sniffed=False),
    AutoDownload.THUMBNAIL: Target(ThumbnailedBody, "thumbnail_url", "thumbnail_path",
                                   "thumbnail_status", "thumb_", "thumb",
                                   "this message has no thumbnail", sized=False, sniffed=True),
}


class Attachments:
    """Downloads of one client."""

    def __init__(self, store: MessageStore, gate: ConnectionGate, settings: Settings,
                 download_dir: str | None) -> None:
        self._store = store
        self._gate = gate
        self._settings = settings
        self._dir = None if download_dir is None and store.directory is None else os.path.abspath(
            download_dir or os.path.join(store.directory or "", "files"))
        self._cleanup: Callable[[], Any] | None = None

    @property
    def download_dir(self) -> str:
        """Where downloads land; for a store in memory, a temporary folder made on first use."""
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="imstore-files-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        return self._dir

    def close(self) -> None:
        """Remove the temporary download folder, if one was made."""
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup, self._dir = None, None

    def auto(self, msg: Message) -> list[Callable[[], Coroutine[Any, Any, Message]]]:
        """What a newly received message downloads by itself (its kind's ``auto_download``)."""
        if not self._settings.auto_download:
            return []
        kind = kind_of(msg.type)
        if kind.auto_download is AutoDownload.THUMBNAIL and not kind.thumbnail:
            return []
        target = TARGETS.get(kind.auto_download)
        if target is None or not isinstance(msg.body, target.body) \
                or not getattr(msg.body, target.url):
            return []
        return [lambda: self.download(msg.msg_id, target)]

    def _dest(self, msg: Message, name: str, prefix: str) -> str:
        root = self.download_dir
        folder = os.path.join(root, safe_file_name(msg.conv_id, "conversation"))
        os.makedirs(folder, exist_ok=True)
        path = os.path.abspath(os.path.join(
            folder, f"{prefix}{safe_file_name(msg.msg_id, 'msg')}_{safe_file_name(name)}"))
        if os.path.commonpath([path, root]) != root:
            raise IMError(ErrorCode.FILE_INVALID, f"refusing to write outside {root}")
        return path

    async def download(self, msg_id: str, target: Target,
                       progress: ProgressFn | None = None) -> Message:
        """Download one target of a stored message; returns the updated message."""
        msg = self._store.get_message(msg_id)
        if msg is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
        body = msg.body
        if not isinstance(body, target.body) or not getattr(body, target.url):
            raise IMError(ErrorCode.MESSAGE_INVALID, target.missing)
        url: str = getattr(body, target.url)
        name = body.display_name or target.fallback
        if target.sniffed:
            name = os.path.splitext(safe_file_name(name))[0] or target.fallback
        dest = self._dest(msg, name, target.prefix)
        self._set(msg, target, DownloadEvent.START)
        download: Callable[..., Awaitable[Any]] = self._gate.method("download")

        def fetch() -> Awaitable[Any]:
            if target.sized:
                return download(url, dest, progress=progress)
            return download(url, dest)

        try:
            await self._gate.transfer(fetch, self._settings.transfer_timeout, None,
                                      ErrorCode.FILE_DOWNLOAD_FAILED)
        except IMError as exc:
            self._set(msg, target, DownloadEvent.FAIL)
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED, exc.description) from exc
        if target.sniffed:
            dest = self._named_by_content(dest)
        setattr(body, target.path, dest)
        if target.sized:
            body.size = os.path.getsize(dest)
        return self._set(msg, target, DownloadEvent.DONE)

    @staticmethod
    def _named_by_content(path: str) -> str:
        """``path`` renamed with the extension of the image it holds (as it is, if none)."""
        with open(path, "rb") as f:
            suffix = image_suffix(f.read(12))
        if not suffix:
            return path
        os.replace(path, path + suffix)
        return path + suffix

    def _set(self, msg: Message, target: Target, event: DownloadEvent) -> Message:
        status: DownloadStatus = getattr(msg.body, target.status)
        setattr(msg.body, target.status, download_move(status, event))
        return self._store.update_message(msg)
