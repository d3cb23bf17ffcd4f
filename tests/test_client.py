"""Sending, receiving, receipts and attachments through ChatClient and MemoryServer."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import imstore
from imstore import (
    ChatClient,
    ChatType,
    ConnectionState,
    DownloadStatus,
    ErrorCode,
    GroupReadAck,
    IMError,
    MemoryServer,
    Message,
    MessageListener,
    MessageStatus,
    MessageType,
)
from imstore.client import safe_file_name

from .conftest import Clock, Pair


def run(coro):
    return asyncio.run(coro)


class Recorder(MessageListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_messages_received(self, messages):
        self.events.append(("received", [m.msg_id for m in messages]))

    def on_cmd_messages_received(self, messages):
        self.events.append(("cmd", [m.body.action for m in messages]))

    def on_messages_delivered(self, messages):
        self.events.append(("delivered", [m.msg_id for m in messages]))

    def on_messages_read(self, messages):
        self.events.append(("read", [m.msg_id for m in messages]))

    def on_conversation_read(self, conv_id, reader):
        self.events.append(("conversation_read", (conv_id, reader)))

    def on_group_message_read(self, acks):
        self.events.append(("group_read", [a.reader for a in acks]))

    def on_message_status_changed(self, message, status):
        self.events.append(("status", status))

    def kinds(self, kind: str) -> list[object]:
        return [v for k, v in self.events if k == kind]


def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, size in (("pic.png", 3000), ("voice.ogg", 5000), ("clip.mp4", 9000),
                       ("thumb.png", 300), ("doc.pdf", 1234)):
        p = tmp_path / name
        p.write_bytes(os.urandom(size))
        out[name] = p
    return out


def test_every_type_end_to_end_with_receipts(pair: Pair, tmp_path: Path):
    f = files(tmp_path)
    rec_a, rec_b = Recorder(), Recorder()
    pair.ca.add_listener(rec_a)
    pair.cb.add_listener(rec_b)

    async def main():
        sent = [
            await pair.ca.send_message(Message.text("bob", "hello 👋", ext={"k": "v"})),
            await pair.ca.send_message(Message.image("bob", f["pic.png"], width=30, height=20)),
            await pair.ca.send_message(Message.voice("bob", f["voice.ogg"], 1500)),
            await pair.ca.send_message(Message.video("bob", f["clip.mp4"], 4000,
                                                     thumbnail=f["thumb.png"])),
            await pair.ca.send_message(Message.file("bob", f["doc.pdf"])),
            await pair.ca.send_message(Message.location("bob", 48.85, 2.35, address="Paris",
                                                        building_name="Louvre")),
            await pair.ca.send_message(Message.custom("bob", "red_packet", {"amount": "5"})),
            await pair.ca.send_message(Message.cmd("bob", "typing", {"on": True})),
        ]
        await pair.settle()
        return sent

    sent = run(main())
    assert all(m.status == MessageStatus.SUCCESS and m.server_time for m in sent)
    assert all(m.msg_id.startswith("S") for m in sent)
    got = {m.type: m for m in pair.b.messages("alice", limit=20)}
    assert len(got) == 7 and MessageType.CMD not in got
    assert rec_b.kinds("cmd") == [["typing"]]
    assert got[MessageType.TEXT].body.text == "hello 👋" and got[MessageType.TEXT].ext == {"k": "v"}
    loc = got[MessageType.LOCATION].body
    assert (loc.latitude, loc.longitude, loc.address, loc.building_name) == (48.85, 2.35, "Paris",
                                                                             "Louvre")
    assert got[MessageType.CUSTOM].body.params == {"amount": "5"}
    assert got[MessageType.IMAGE].body.width == 30
    # automatic downloads: image and video thumbnails, voice audio; not files or full videos
    img, voice, video, doc = (got[t].body for t in (MessageType.IMAGE, MessageType.VOICE,
                                                    MessageType.VIDEO, MessageType.FILE))
    assert img.thumbnail_status == DownloadStatus.SUCCEEDED
    assert voice.download_status == DownloadStatus.SUCCEEDED
    assert Path(voice.local_path).read_bytes() == f["voice.ogg"].read_bytes()
    assert video.thumbnail_status == DownloadStatus.SUCCEEDED
    assert Path(video.thumbnail_path).read_bytes() == f["thumb.png"].read_bytes()
    assert video.download_status == DownloadStatus.PENDING
    assert doc.download_status == DownloadStatus.PENDING and doc.local_path == ""
    full = run(pair.cb.download_attachment(got[MessageType.VIDEO].msg_id))
    assert Path(full.body.local_path).read_bytes() == f["clip.mp4"].read_bytes()
    assert pair.b.get_message(full.msg_id).body.download_status == DownloadStatus.SUCCEEDED
    assert pair.b.unread_count("alice") == 7
    # receipts on alice's side
    assert all(pair.a.get_message(m.msg_id).is_delivered for m in sent[:7])
    assert len(rec_a.kinds("delivered")) == 7

    async def read_some():
        await pair.cb.ack_message_read(sent[0].msg_id)
        await pair.cb.ack_message_read(sent[0].msg_id)  # twice: harmless

    run(read_some())
    assert pair.a.get_message(sent[0].msg_id).is_read_acked
    assert not pair.a.get_message(sent[1].msg_id).is_read_acked
    assert rec_a.kinds("read") == [[sent[0].msg_id]]
    assert pair.b.unread_count("alice") == 6
    run(pair.cb.ack_conversation_read("alice"))
    assert pair.b.unread_count("alice") == 0
    assert all(m.is_read_acked for m in pair.a.messages("bob"))
    assert rec_a.kinds("conversation_read") == [("bob", "bob")]
    statuses = rec_a.kinds("status")
    assert statuses.count(MessageStatus.INPROGRESS) == 7 and statuses.count(MessageStatus.SUCCESS) == 8


def test_group_read_receipts(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)
    server.create_group("team", ["alice", "bob", "carol", "dave"])
    stores = {u: imstore.open(":memory:", user_id=u) for u in ("alice", "bob", "carol", "dave")}
    clients = {u: ChatClient(s, server.connect(u)) for u, s in stores.items()}
    rec = Recorder()
    clients["alice"].add_listener(rec)

    async def main():
        m = await clients["alice"].send_message(Message.text(
            "team", "read me", chat_type=ChatType.GROUP_CHAT, need_group_ack=True))
        plain = await clients["alice"].send_message(Message.text(
            "team", "no receipts", chat_type=ChatType.GROUP_CHAT))
        for u in ("bob", "carol", "carol"):
            await clients[u].ack_group_message_read(m.msg_id)
        assert stores["alice"].get_message(m.msg_id).group_ack_count == 2
        page1 = await clients["alice"].fetch_group_read_acks(m.msg_id, limit=1)
        page2 = await clients["alice"].fetch_group_read_acks(m.msg_id, cursor=page1.cursor, limit=1)
        assert [a.reader for a in page1.items + page2.items] == ["bob", "carol"]
        assert page2.cursor is None
        with pytest.raises(IMError) as err:
            await clients["bob"].ack_group_message_read(plain.msg_id)
        assert err.value.code == ErrorCode.INVALID_PARAM
        assert stores["bob"].unread_count("team") == 1
        clock.advance_days(3.1)
        with pytest.raises(IMError) as err:
            await clients["dave"].ack_group_message_read(m.msg_id)
        assert err.value.code == ErrorCode.MESSAGE_EXPIRED
        return m

    m = run(main())
    assert stores["alice"].get_message(m.msg_id).group_ack_count == 2
    assert rec.kinds("group_read") == [["bob"], ["carol"]]
    # the same receipts arriving again do not count twice
    clients["alice"].on_group_read_acks([GroupReadAck(m.msg_id, "team", "bob", 1)])
    assert stores["alice"].get_message(m.msg_id).group_ack_count == 2
    for s in stores.values():
        assert s.verify().ok
        s.close()


def test_receipts_that_arrive_early_or_twice(pair: Pair):
    # A receipt for a message the store does not have yet is kept until it arrives.
    pair.ca.on_delivery_acks(["S999"])
    pair.ca.on_read_acks(["S999"])
    pair.ca.on_read_acks(["S999"])
    m = pair.a.insert_message(Message.text("bob", "local copy"))
    pair.a.mark_sent(m.msg_id, "S999", 123)  # returns (message, early receipt kinds)
    got = pair.a.get_message("S999")
    assert got.is_delivered and got.is_read_acked
    assert pair.a.get_message(m.msg_id).msg_id == "S999"  # the local id still finds it
    pair.ca.on_delivery_acks(["S999"])
    assert pair.a.verify().ok


def test_lost_answers_give_300_after_one_retry(pair: Pair):
    sends: list[str] = []
    conn = pair.server.connect("alice")
    original = conn.send

    async def counting(message):
        sends.append(message.msg_id)
        return await original(message)

    conn.send = counting  # type: ignore[method-assign]
    pair.server.faults.lost_answers = 2
    reconnects = []
    original_reconnect = conn.reconnect

    async def counting_reconnect():
        reconnects.append(1)
        await original_reconnect()

    conn.reconnect = counting_reconnect  # type: ignore[method-assign]
    with pytest.raises(IMError) as err:
        run(pair.ca.send_message(Message.text("bob", "anyone?")))
    assert err.value.code == ErrorCode.SERVER_NOT_REACHABLE
    assert len(sends) == 2 and len(reconnects) == 1
    stored = pair.a.messages("bob")[-1]
    assert stored.status == MessageStatus.FAIL
    # the server did get it once: the retry was not delivered twice
    assert pair.b.message_count("alice") == 1
    # one lost answer: the retry after reconnecting succeeds
    pair.server.faults.lost_answers = 1
    ok = run(pair.ca.send_message(Message.text("bob", "second try works")))
    assert ok.status == MessageStatus.SUCCESS
    # resend of the failed one
    again = run(pair.ca.resend_message(stored.msg_id))
    assert again.status == MessageStatus.SUCCESS and pair.b.message_count("alice") == 2
    with pytest.raises(IMError) as err:
        run(pair.ca.resend_message(again.msg_id))
    assert err.value.code == ErrorCode.INVALID_PARAM


def test_unreachable_server_after_timeout_is_300(pair: Pair):
    pair.server.faults.lost_answers = 1
    pair.server.faults.unreachable = True
    with pytest.raises(IMError) as err:
        run(pair.ca.send_message(Message.text("bob", "x")))
    assert err.value.code == ErrorCode.SERVER_NOT_REACHABLE
    assert pair.a.messages("bob")[-1].status == MessageStatus.FAIL


def test_disconnected_is_510_and_stored_as_fail(pair: Pair):
    pair.server.disconnect("alice", reconnect=False)
    with pytest.raises(IMError) as err:
        run(pair.ca.send_message(Message.text("bob", "offline")))
    assert err.value.code == ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED
    assert pair.a.messages("bob")[-1].status == MessageStatus.FAIL
    assert pair.b.message_count("alice") == 0


def test_a_send_waits_through_a_reconnection(pair: Pair):
    states: list[ConnectionState] = []

    class L(MessageListener):
        def on_connection_state_changed(self, state):
            states.append(state)

    pair.ca.add_listener(L())

    async def main():
        pair.server.disconnect("alice", reconnect=True)
        task = asyncio.create_task(pair.ca.send_message(Message.text("bob", "patience")))
        await asyncio.sleep(0.02)
        assert not task.done()
        assert pair.a.messages("bob")[-1].status == MessageStatus.INPROGRESS
        pair.server.restore("alice")
        return await task

    m = run(main())
    assert m.status == MessageStatus.SUCCESS
    assert states == [ConnectionState.RECONNECTING, ConnectionState.CONNECTED]
    assert pair.b.messages("alice")[-1].body.text == "patience"


def test_reconnection_that_fails_is_510(pair: Pair):
    async def main():
        pair.server.disconnect("alice", reconnect=True)
        task = asyncio.create_task(pair.ca.send_message(Message.text("bob", "x")))
        await asyncio.sleep(0.01)
        pair.server.disconnect("alice", reconnect=False)
        return await asyncio.gather(task, return_exceptions=True)

    (err,) = run(main())
    assert isinstance(err, IMError) and err.code == ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED


def test_failed_upload_is_402_and_too_large_is_405(pair: Pair, tmp_path: Path):
    f = files(tmp_path)
    pair.server.faults.failed_uploads = 1
    with pytest.raises(IMError) as err:
        run(pair.ca.send_message(Message.file("bob", f["doc.pdf"])))
    assert err.value.code == ErrorCode.FILE_UPLOAD_FAILED
    failed = pair.a.messages("bob")[-1]
    assert failed.status == MessageStatus.FAIL
    again = run(pair.ca.resend_message(failed.msg_id))
    assert again.status == MessageStatus.SUCCESS and again.body.remote_url
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(10 * 1024 * 1024 + 1)
    before = pair.a.message_count("bob")
    with pytest.raises(IMError) as err:
        run(pair.ca.send_message(Message.file("bob", big)))
    assert err.value.code == ErrorCode.FILE_TOO_LARGE
    with pytest.raises(IMError) as err:
        run(pair.ca.send_message(Message.image("bob", tmp_path / "nope.png")))
    assert err.value.code == ErrorCode.FILE_NOT_FOUND
    with pytest.raises(IMError) as err:
        run(pair.ca.send_message(Message.text("bob", "x" * 4000)))
    assert err.value.code == ErrorCode.MESSAGE_SIZE_LIMIT
    assert pair.a.message_count("bob") == before  # nothing stored for bad messages


def test_upload_progress_is_reported(pair: Pair, tmp_path: Path):
    p = tmp_path / "big.bin"
    p.write_bytes(os.urandom(600 * 1024))
    seen: list[tuple[int, int]] = []
    sent = run(pair.ca.send_message(Message.file("bob", p),
                                    progress=lambda done, total: seen.append((done, total))))
    assert seen[-1] == (600 * 1024, 600 * 1024) and len(seen) == 3
    assert sent.body.remote_url and sent.status == MessageStatus.SUCCESS


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a\x00b.txt", "..", "",
                                  "C:\\Windows\\evil.dll", "....//x"])
def test_downloads_never_escape_the_download_folder(pair: Pair, tmp_path: Path, name: str):
    assert "/" not in safe_file_name(name) and "\x00" not in safe_file_name(name)
    src = tmp_path / "payload.bin"
    src.write_bytes(b"payload")

    async def main():
        m = await pair.ca.send_message(Message.file("bob", src, display_name=name or "x"))
        await pair.settle()
        stored = pair.b.get_message(m.msg_id)
        stored.body.display_name = name  # as a hostile server could name it
        pair.b.update_message(stored)
        return await pair.cb.download_attachment(m.msg_id)

    got = run(main())
    path = Path(got.body.local_path).resolve()
    assert Path(pair.cb.download_dir).resolve() in path.parents
    assert path.read_bytes() == b"payload"


def test_failed_download_is_403_and_marked_failed(pair: Pair, tmp_path: Path):
    src = tmp_path / "a.txt"
    src.write_text("hi")

    async def main():
        m = await pair.ca.send_message(Message.file("bob", src))
        await pair.settle()
        pair.server._files.clear()  # the server lost the file
        with pytest.raises(IMError) as err:
            await pair.cb.download_attachment(m.msg_id)
        assert err.value.code == ErrorCode.FILE_DOWNLOAD_FAILED
        return m

    m = run(main())
    assert pair.b.get_message(m.msg_id).body.download_status == DownloadStatus.FAILED


def test_no_delivery_receipts_when_not_required(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)
    a, b = imstore.open(":memory:", user_id="alice"), imstore.open(":memory:", user_id="bob")
    ca = ChatClient(a, server.connect("alice"))
    cb = ChatClient(b, server.connect("bob"), require_delivery_ack=False, require_read_ack=False)

    async def main():
        m = await ca.send_message(Message.text("bob", "hi"))
        await cb.wait_idle()
        await cb.ack_message_read(m.msg_id)
        return m

    m = run(main())
    got = a.get_message(m.msg_id)
    assert not got.is_delivered and not got.is_read_acked
    assert b.unread_count("alice") == 0
    a.close()
    b.close()


def test_offline_messages_arrive_on_reconnection(pair: Pair):
    async def main():
        pair.server.disconnect("bob", reconnect=True)
        await pair.ca.send_message(Message.text("bob", "while you were away"))
        assert pair.b.message_count("alice") == 0
        pair.server.restore("bob")
        await pair.settle()

    run(main())
    assert pair.b.unread_count("alice") == 1


def test_a_listener_that_raises_does_not_break_the_client(pair: Pair):
    class Broken(MessageListener):
        def on_messages_received(self, messages):
            raise RuntimeError("app bug")

    pair.cb.add_listener(Broken())
    run(pair.ca.send_message(Message.text("bob", "still stored")))
    assert pair.b.message_count("alice") == 1


def test_group_and_room_delivery(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)
    server.create_chat_room("lobby", ["alice", "bob"])
    a, b = imstore.open(":memory:", user_id="alice"), imstore.open(":memory:", user_id="bob")
    ca, _cb = ChatClient(a, server.connect("alice")), ChatClient(b, server.connect("bob"))
    run(ca.send_message(Message.text("lobby", "hi room", chat_type=ChatType.CHAT_ROOM)))
    assert b.unread_count("lobby") == 1 and b.total_unread_count() == 0
    with pytest.raises(IMError) as err:
        run(ca.send_message(Message.text("nope", "x", chat_type=ChatType.GROUP_CHAT)))
    assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
    a.close()
    b.close()
