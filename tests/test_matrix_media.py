"""The Matrix adapter's media, offline: uploads carry their type, downloads are streamed,
bounded and leave nothing behind when refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from imstore import ErrorCode, IMError, MessageType
from imstore.adapters.matrix import Bounds
from imstore.adapters.matrix import _mapping as mp
from imstore.message import FileBody, ImageBody, VideoBody, VoiceBody

from .matrix_canned import Homeserver, adapter, run


def test_an_upload_carries_its_content_type_and_images_get_a_thumbnail(tmp_path: Path):
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/media/v3/upload$", {"content_uri": "mxc://hs.test/abc"})
        a = await adapter(hs)
        pic = tmp_path / "p.png"
        pic.write_bytes(b"\x89PNG" + b"0" * 100)
        seen: list[tuple[int, int]] = []
        got = await a.upload(str(pic), progress=lambda d, t: seen.append((d, t)))
        assert (got.url, got.thumbnail_url) == ("mxc://hs.test/abc", "mxc://hs.test/abc#thumbnail")
        req = hs.calls("POST", "upload")[0]
        assert req.headers["content-type"] == "image/png" and req.content == pic.read_bytes()
        assert hs.params(req)["filename"] == "p.png" and seen[-1] == (104, 104)
        doc = tmp_path / "d.bin"
        doc.write_bytes(b"x")
        assert (await a.upload(str(doc))).thumbnail_url is None
        with pytest.raises(IMError) as err:
            await a.upload(str(tmp_path / "missing"))
        assert err.value.code == ErrorCode.FILE_NOT_FOUND
        hs.on("POST", r"/media/v3/upload$", 500)
        with pytest.raises(IMError) as err:
            await a.upload(str(doc))
        assert err.value.code == ErrorCode.FILE_UPLOAD_FAILED
        hs.on("POST", r"/media/v3/upload$", 413)
        with pytest.raises(IMError) as err:
            await a.upload(str(doc))
        assert err.value.code == ErrorCode.FILE_TOO_LARGE
        await a.close()
    run(main())


def test_a_download_and_a_thumbnail_with_its_fallback(tmp_path: Path):
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/media/download/hs\.test/abc$", httpx.Response(200, content=b"file"))
        hs.on("GET", r"/media/thumbnail/hs\.test/abc$", httpx.Response(200, content=b"thumb"),
              404)
        a = await adapter(hs)
        dest = tmp_path / "f"
        seen: list[tuple[int, int]] = []
        await a.download("mxc://hs.test/abc", str(dest), progress=lambda d, t: seen.append((d, t)))
        assert dest.read_bytes() == b"file" and seen[-1] == (4, 4)
        await a.download("mxc://hs.test/abc#thumbnail", str(dest))
        assert dest.read_bytes() == b"thumb"
        await a.download("mxc://hs.test/abc#thumbnail", str(dest))  # no thumbnail: the file
        assert dest.read_bytes() == b"file"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
        with pytest.raises(IMError) as err:
            await a.download("https://elsewhere/x", str(dest))
        assert err.value.code == ErrorCode.FILE_DOWNLOAD_FAILED
        hs.on("GET", r"/media/download/hs\.test/gone$", 404)
        with pytest.raises(IMError) as err:
            await a.download("mxc://hs.test/gone", str(tmp_path / "g"))
        assert err.value.code == ErrorCode.FILE_DOWNLOAD_FAILED
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
        await a.close()
    run(main())


@pytest.mark.parametrize("declared", [True, False])
@pytest.mark.parametrize("url", ["mxc://hs.test/big", "mxc://hs.test/big#thumbnail"])
def test_media_past_the_bound_are_refused_and_leave_nothing(tmp_path: Path, declared: bool,
                                                            url: str):
    async def body():
        for _ in range(50):
            yield b"x" * 1000

    def answer(request: httpx.Request) -> httpx.Response:
        if declared:
            return httpx.Response(200, content=b"x" * 50_000)
        return httpx.Response(200, content=body())

    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/media/(download|thumbnail)/hs\.test/big$", answer)
        a = await adapter(hs, bounds=Bounds(max_media_bytes=10_000))
        with pytest.raises(IMError) as err:
            await a.download(url, str(tmp_path / "big"))
        assert err.value.code == ErrorCode.FILE_TOO_LARGE
        assert list(tmp_path.iterdir()) == []
        await a.close()
    run(main())


def test_a_download_that_breaks_off_leaves_nothing(tmp_path: Path):
    async def body():
        yield b"x" * 100
        raise httpx.ReadError("reset")

    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/media/download/", lambda r: httpx.Response(200, content=body()))
        a = await adapter(hs)
        with pytest.raises(IMError) as err:
            await a.download("mxc://hs.test/x", str(tmp_path / "x"))
        assert err.value.code == ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED
        assert list(tmp_path.iterdir()) == []
        await a.close()
    run(main())


@pytest.mark.parametrize("mtype, body, mimetype", [
    (MessageType.IMAGE, ImageBody(remote_url="mxc://hs.test/i", display_name="p.png"), "image/png"),
    (MessageType.VOICE, VoiceBody(remote_url="mxc://hs.test/v", display_name="v.ogg"), "audio/ogg"),
    (MessageType.VIDEO, VideoBody(remote_url="mxc://hs.test/m", display_name="m.mp4",
                                  thumbnail_url="mxc://hs.test/t", thumbnail_path="/x/t.png"),
     "video/mp4"),
    (MessageType.FILE, FileBody(remote_url="mxc://hs.test/f", display_name="r.pdf"),
     "application/pdf")])
def test_outgoing_media_carry_their_mimetype(mtype: MessageType, body: FileBody, mimetype: str):
    info = mp.body_content(mtype, body)["info"]
    assert info["mimetype"] == mimetype
    if mtype == MessageType.VIDEO:
        assert info["thumbnail_info"] == {"mimetype": "image/png"}


def test_a_file_of_no_known_type_says_none():
    info = mp.body_content(MessageType.FILE, FileBody(remote_url="mxc://hs.test/f",
                                                      display_name="blob"))["info"]
    assert "mimetype" not in info
