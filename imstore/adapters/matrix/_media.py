"""Media: uploads to and downloads from the homeserver's media repository.

Rules kept here:
- a download is streamed to ``<dest>.part`` and renamed to ``dest`` only when complete; it is
  refused (`IMError(FILE_TOO_LARGE)`) the moment it passes `Bounds.max_media_bytes` — by the
  declared length before a byte is read, else by counting — and on any failure the partial file
  is removed: nothing is left behind;
- ``<mxc>#thumbnail`` asks for the server's thumbnail (same bound), falling back to the file
  when the server cannot make one;
- an upload carries its content type (from the file name); images get the server's thumbnail.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os

from ...errors import ErrorCode, IMError
from .. import ProgressFn, RemoteFile
from . import _mapping as mp
from . import _requests as rq
from ._api import Api, MatrixError, need, wire_errors

__all__ = ["Media"]


class Media:
    """The media repository of one homeserver."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def upload(self, path: str, progress: ProgressFn | None) -> RemoteFile:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise IMError(ErrorCode.FILE_NOT_FOUND, f"cannot read {path!r}: {exc}") from exc
        name = os.path.basename(path)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if progress:
            progress(0, len(data))
        try:
            answer = await self.api.call(rq.upload(name), content=data,
                                         headers={"Content-Type": ctype})
            url = need(answer, "content_uri", str, "POST /upload")
        except IMError as exc:
            if exc.code == ErrorCode.FILE_TOO_LARGE or exc.code == ErrorCode.NETWORK_ERROR:
                raise
            raise IMError(ErrorCode.FILE_UPLOAD_FAILED,
                          f"the homeserver refused {name!r}: {exc.description}") from exc
        if progress:
            progress(len(data), len(data))
        return RemoteFile(url=url, thumbnail_url=url + mp.THUMB_MARK
                          if ctype.startswith("image/") else None)

    async def download(self, url: str, dest: str, progress: ProgressFn | None) -> None:
        thumb = url.endswith(mp.THUMB_MARK)
        parts = rq.split_mxc(url.removesuffix(mp.THUMB_MARK))
        if parts is None:
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED, f"{url[:200]!r} is not an mxc:// URL")
        tmp = dest + ".part"
        try:
            if thumb:
                try:
                    await self._fetch(rq.thumbnail(*parts), tmp, progress)
                    os.replace(tmp, dest)
                    return
                except MatrixError:
                    pass  # no thumbnail of this file: take the file itself
            await self._fetch(rq.download(*parts), tmp, progress)
            os.replace(tmp, dest)
        except IMError as exc:
            if exc.code in (ErrorCode.FILE_TOO_LARGE, ErrorCode.NETWORK_ERROR):
                raise
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED,
                          f"cannot download {url[:200]!r}: {exc.description}") from exc
        except OSError as exc:
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED,
                          f"cannot write {dest!r}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    async def _fetch(self, req: rq.Request, tmp: str, progress: ProgressFn | None) -> None:
        limit = self.api.bounds.max_media_bytes
        too_big = IMError(ErrorCode.FILE_TOO_LARGE,
                          f"the file is larger than the {limit} bytes this adapter accepts; "
                          "raise Bounds.max_media_bytes to take it")
        try:
            async with asyncio.timeout(self.api.bounds.media_timeout):
                await self._stream(req, tmp, progress, too_big)
        except TimeoutError as exc:
            raise IMError(ErrorCode.SERVER_TIMEOUT,
                          f"the download took longer than {self.api.bounds.media_timeout:g} s"
                          ) from exc

    async def _stream(self, req: rq.Request, tmp: str, progress: ProgressFn | None,
                      too_big: IMError) -> None:
        limit = self.api.bounds.max_media_bytes
        async with self.api.stream(req) as resp:
            declared = resp.headers.get("content-length", "")
            total = int(declared) if declared.isdigit() else 0
            if total > limit:
                raise too_big
            done = 0
            with open(tmp, "wb") as f, wire_errors("a download"):
                async for chunk in resp.aiter_bytes():
                    done += len(chunk)
                    if done > limit:
                        raise too_big
                    f.write(chunk)
                    if progress:
                        progress(done, max(total, done))
        if progress and not done:
            progress(0, 0)
