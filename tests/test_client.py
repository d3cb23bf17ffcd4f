"""Sending, receiving, receipts and attachments through ChatClient and MemoryServer."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
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
from imstore.client._attachments import image_suffix
from imstore.kinds import KINDS, AutoDownload
from imstore.message import CustomBody, TextBody

from .conftest import Clients, Clock, Pair


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
    # CMD sends go through INPROGRESS too (never stored)
    assert statuses.count(MessageStatus.INPROGRESS) == 8 and statuses.count(MessageStatus.SUCCESS) == 8


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
        await pair.ca.wait_idle()  # returns once the send is parked, waiting for the connection
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
        await pair.ca.wait_idle()  # the send is parked, waiting for the connection
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


def test_a_recall_by_a_moderator_is_recorded_and_old_handlers_still_hear_recalls(pair: Pair):
    from imstore.adapters import takes_recalled_by
    from imstore.lifecycle import RECALLED_BY

    class OldHandler:
        def on_messages_recalled(self, msg_ids):
            self.got = msg_ids

    assert takes_recalled_by(pair.ca) and not takes_recalled_by(OldHandler())
    assert not takes_recalled_by(object())

    async def main():
        m = await pair.cb.send_message(Message.text("alice", "spam"))
        await pair.settle()
        pair.ca.on_messages_recalled([m.msg_id], {m.msg_id: "mod"})
        return pair.a.get_message(m.msg_id)

    got = run(main())
    assert got.recalled_at is not None and got.ext[RECALLED_BY] == "mod"
    with pytest.raises(IMError) as err:
        pair.ca.on_messages_recalled([got.msg_id], {got.msg_id: ""})
    assert err.value.code == ErrorCode.INVALID_PARAM


@pytest.mark.parametrize(("head", "suffix"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0d", ".png"), (b"\xff\xd8\xff\xe0" + bytes(8), ".jpg"),
    (b"GIF89a" + bytes(6), ".gif"), (b"GIF87a" + bytes(6), ".gif"),
    (b"RIFF\x00\x00\x00\x00WEBP", ".webp"), (b"RIFF\x00\x00\x00\x00WAVE", ""),
    (b"\x00\x00\x00\x18ftypmp42", ""), (b"", "")])
def test_a_thumbnail_is_named_after_the_image_it_holds(pair: Pair, tmp_path: Path, head, suffix):
    assert image_suffix(head) == suffix
    clip, thumb = tmp_path / "clip.mp4", tmp_path / "thumb.png"  # the thumbnail's name lies
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    thumb.write_bytes(head + b"rest")

    async def main():
        sent = await pair.ca.send_message(Message.video("bob", clip, 1000, thumbnail=thumb))
        await pair.settle()
        return pair.b.get_message(sent.msg_id)

    got = run(main())
    path = Path(got.body.thumbnail_path)
    assert got.body.thumbnail_status == DownloadStatus.SUCCEEDED
    assert path.read_bytes() == head + b"rest" and path.suffix == suffix
    assert path.name == f"thumb_{got.msg_id}_clip{suffix}"
    assert os.listdir(path.parent) == [path.name]  # renamed, not copied


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


# ----------------------------------------------------------------------------------------------
# The send queue, receipts and the protocol, against MemoryServer and against a transport written
# from the protocol alone.


class Relay:
    """A TransportHandler that forwards exactly the protocol's methods: the server never sees
    the client behind it."""

    def __init__(self, handler) -> None:
        self._h = handler

    def on_messages(self, messages):
        self._h.on_messages(messages)

    def on_delivery_acks(self, msg_ids):
        self._h.on_delivery_acks(msg_ids)

    def on_read_acks(self, msg_ids):
        self._h.on_read_acks(msg_ids)

    def on_conversation_read(self, conv_id, reader, up_to=None):
        self._h.on_conversation_read(conv_id, reader, up_to)

    def on_messages_recalled(self, msg_ids):
        self._h.on_messages_recalled(msg_ids)

    def on_messages_edited(self, messages):
        self._h.on_messages_edited(messages)

    def on_group_read_acks(self, acks):
        self._h.on_group_read_acks(acks)

    def on_connection_state_changed(self, state):
        self._h.on_connection_state_changed(state)


class WireTransport:
    """A transport written from the protocol alone (docs/adapters.md): the MemoryServer
    connection is only its wire. ``on_send`` runs before every send reaches the wire."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.on_send = None
        self.sends: list[str] = []

    @property
    def state(self) -> ConnectionState:
        return self._conn.state

    def attach(self, handler) -> None:
        self._conn.attach(Relay(handler))

    async def send(self, message):
        self.sends.append(message.msg_id)
        if self.on_send is not None:
            self.on_send(message)
        return await self._conn.send(message)

    async def reconnect(self):
        await self._conn.reconnect()

    async def send_delivery_ack(self, message):
        await self._conn.send_delivery_ack(message)

    async def send_read_ack(self, message):
        await self._conn.send_read_ack(message)

    async def send_conversation_ack(self, conv_id, chat_type, up_to=None):
        await self._conn.send_conversation_ack(conv_id, chat_type, up_to)

    async def send_group_read_ack(self, message):
        await self._conn.send_group_read_ack(message)

    async def fetch_group_read_acks(self, msg_id, cursor, limit):
        return await self._conn.fetch_group_read_acks(msg_id, cursor, limit)

    async def upload(self, path, *, progress=None):
        return await self._conn.upload(path, progress=progress)

    async def download(self, url, dest, *, progress=None):
        await self._conn.download(url, dest, progress=progress)

    async def recall_message(self, message):
        return await self._conn.recall_message(message)

    async def edit_message(self, message, body):
        return await self._conn.edit_message(message, body)


class HookedConnection:
    """MemoryServer's own connection with a hook before each send (same as WireTransport's)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.on_send = None
        self.sends: list[str] = []
        original = conn.send

        async def send(message):
            self.sends.append(message.msg_id)
            if self.on_send is not None:
                self.on_send(message)
            return await original(message)

        conn.send = send


class Duo(Clients):
    """alice and bob on one MemoryServer, through its connections or through WireTransport."""

    def __init__(self, backend: str, tmp: Path, clock: Clock, **client_kw) -> None:
        self.server = MemoryServer(clock=clock)
        self.stores = {u: imstore.open(":memory:", user_id=u) for u in ("alice", "bob")}
        self.clients: dict[str, ChatClient] = {}
        self.wires: dict[str, object] = {}
        kw = {"send_timeout": 0.2, **client_kw}
        for u, s in self.stores.items():
            conn = self.server.connect(u)
            if backend == "memory":
                self.wires[u] = HookedConnection(conn)
                client = ChatClient(s, conn, download_dir=str(tmp / f"{u}-files"), **kw)
            else:
                wire = self.wires[u] = WireTransport(conn)
                client = ChatClient(s, conn, transport=wire, download_dir=str(tmp / f"{u}-files"),
                                    **kw)
            self.clients[u] = client
        self.a, self.b = self.stores["alice"], self.stores["bob"]
        self.ca, self.cb = self.clients["alice"], self.clients["bob"]

    def hook(self, user: str, fn) -> None:
        self.wires[user].on_send = fn

    def sends(self, user: str) -> list[str]:
        return self.wires[user].sends


@pytest.fixture(params=["memory", "protocol"])
def duo(request, tmp_path: Path, clock: Clock):
    d = Duo(request.param, tmp_path, clock)
    yield d
    d.close()


class Log(MessageListener):
    """Every event a listener hears, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.signals: dict[str, asyncio.Event] = {}

    def signal(self, name: str) -> asyncio.Event:
        """An event set once ``name`` has been heard (already, or later)."""
        event = self.signals.setdefault(name, asyncio.Event())
        if any(e[0] == name for e in self.events):
            event.set()
        return event

    def _add(self, *event) -> None:
        self.events.append(event)
        if event[0] in self.signals:
            self.signals[event[0]].set()

    def on_messages_received(self, messages):
        self._add("received", *[m.body.text if m.type == MessageType.TEXT else m.type.name
                                for m in messages])

    def on_cmd_messages_received(self, messages):
        self._add("cmd", *[m.body.action for m in messages])

    def on_messages_delivered(self, messages):
        self._add("delivered", len(messages))

    def on_messages_read(self, messages):
        self._add("read", len(messages))

    def on_conversation_read(self, conv_id, reader):
        self._add("conversation_read", conv_id)

    def on_group_message_read(self, acks):
        self._add("group_read", *[a.reader for a in acks])

    def on_message_status_changed(self, message, status):
        self._add(status.name)

    def on_connection_state_changed(self, state):
        self._add(state.name)

    def on_messages_recalled(self, messages):
        self._add("recalled", len(messages))

    def on_messages_edited(self, messages):
        self._add("edited", len(messages))


def texts(store, conv: str) -> list[str]:
    return [m.body.text for m in store.messages(conv, limit=50)]


def drop_then_restore(d: Duo, user: str = "alice", *, times: int = 1, after_server=False):
    """The first ``times`` sends see the connection drop to RECONNECTING under them (before
    they reach the server, or, with ``after_server``, once the peer got the message and the
    answer is lost); it comes back as soon as the client has heard of the drop."""
    loop = asyncio.get_running_loop()
    left = [times]

    def drop(*_):
        if left[0] > 0:
            left[0] -= 1
            loop.call_soon(d.server.disconnect, user)

    class Back(MessageListener):
        def on_connection_state_changed(self, state):
            if state == ConnectionState.RECONNECTING:
                loop.call_soon(d.server.restore, user)

    class Arrived(MessageListener):
        def on_messages_received(self, messages):
            drop()

    d.clients[user].add_listener(Back())
    if after_server:
        d.server.lose_answers(times)
        d.clients["bob" if user == "alice" else "alice"].add_listener(Arrived())
    else:
        d.hook(user, drop)


@pytest.mark.parametrize("reached", [False, True], ids=["before-server", "after-server"])
def test_a_drop_mid_send_sends_after_the_reconnection_once(duo: Duo, reached: bool):
    async def main():
        drop_then_restore(duo, after_server=reached)
        m = await duo.ca.send_message(Message.text("bob", "through the drop"))
        await duo.settle()
        return m

    m = run(main())
    assert m.status == MessageStatus.SUCCESS and m.local_id == duo.sends("alice")[0]
    assert texts(duo.b, "alice") == ["through the drop"]
    assert duo.a.get_message(m.msg_id).is_delivered
    assert len(duo.sends("alice")) == 2 and len(set(duo.sends("alice"))) == 1  # same local id


def test_an_image_sent_while_reconnecting_goes_out_after(duo: Duo, tmp_path: Path):
    f = files(tmp_path)
    log = Log()
    duo.ca.add_listener(log)

    async def main():
        duo.server.disconnect("alice")
        task = asyncio.create_task(duo.ca.send_message(Message.image("bob", f["pic.png"])))
        await log.signal("INPROGRESS").wait()
        duo.server.restore("alice")
        m = await task
        await duo.settle()
        got = duo.b.get_message(m.msg_id)
        got = await duo.cb.download_attachment(got.msg_id)
        return m, got

    m, got = run(main())
    assert m.status == MessageStatus.SUCCESS
    assert Path(got.body.local_path).read_bytes() == f["pic.png"].read_bytes()
    assert got.body.thumbnail_status == DownloadStatus.SUCCEEDED


@pytest.mark.parametrize("latency", [0.0, 0.01])
def test_a_message_typed_after_the_reconnection_does_not_overtake(duo: Duo, latency: float):
    log = Log()
    duo.ca.add_listener(log)

    async def main():
        duo.server.set_latency(latency)
        duo.server.disconnect("alice")
        first = asyncio.create_task(duo.ca.send_message(Message.text("bob", "first")))
        await log.signal("INPROGRESS").wait()
        duo.server.restore("alice")
        await duo.ca.send_message(Message.text("bob", "second"))
        await first
        await duo.settle()

    run(main())
    assert texts(duo.a, "bob") == ["first", "second"]
    assert texts(duo.b, "alice") == ["first", "second"]


def test_many_sends_keep_their_order_through_drops_and_retries(duo: Duo):
    async def main():
        drop_then_restore(duo, times=3)
        duo.server.set_latency(0.001)
        tasks = [asyncio.create_task(duo.ca.send_message(Message.text("bob", f"m{i}")))
                 for i in range(8)]
        await asyncio.gather(*tasks)
        await duo.settle()

    run(main())
    want = [f"m{i}" for i in range(8)]
    assert texts(duo.a, "bob") == want and texts(duo.b, "alice") == want


def test_receipts_sent_while_the_sender_is_offline_reach_it_later(duo: Duo):
    log = Log()
    duo.ca.add_listener(log)

    async def main():
        duo.server.disconnect("bob")  # bob gets them later
        one = await duo.ca.send_message(Message.text("bob", "one"))
        two = await duo.ca.send_message(Message.text("bob", "two"))
        duo.server.disconnect("alice")  # now the sender is away
        duo.server.restore("bob")
        await duo.settle()  # delivery receipts go out while alice is away
        await duo.cb.ack_message_read(one.msg_id)
        await duo.cb.ack_conversation_read("alice")
        assert not duo.a.get_message(one.msg_id).is_delivered
        duo.server.restore("alice")
        await duo.settle()
        return one, two

    one, two = run(main())
    for m in (one, two):
        got = duo.a.get_message(m.msg_id)
        assert got.is_delivered and got.is_read_acked
    heard = [e[0] for e in log.events if e[0] in ("delivered", "read", "conversation_read")]
    assert heard == ["delivered", "read", "conversation_read"]


def test_a_conversation_receipt_leaves_later_messages_unacked(duo: Duo):
    async def main():
        early = await duo.ca.send_message(Message.text("bob", "early"))
        await duo.settle()
        duo.server.disconnect("alice")
        await duo.cb.ack_conversation_read("alice")  # queued for alice, up to "early"
        duo.server.restore("alice")
        later = await duo.ca.send_message(Message.text("bob", "later"))
        await duo.settle()
        return early, later

    early, later = run(main())
    assert duo.a.get_message(early.msg_id).is_read_acked
    assert not duo.a.get_message(later.msg_id).is_read_acked


def test_reconnect_wait_bounds_the_wait(tmp_path: Path, clock: Clock):
    d = Duo("memory", tmp_path, clock, reconnect_wait=0.05)
    d.server.disconnect("alice")
    with pytest.raises(IMError) as err:
        run(d.ca.send_message(Message.text("bob", "never")))
    assert err.value.code == ErrorCode.SERVER_NOT_REACHABLE
    assert d.a.messages("bob")[-1].status == MessageStatus.FAIL
    d.close()


def test_a_hanging_upload_fails_after_transfer_timeout(tmp_path: Path, clock: Clock):
    d = Duo("protocol", tmp_path, clock, transfer_timeout=0.05)
    f = files(tmp_path)

    async def hang(path, *, progress=None):
        await asyncio.Event().wait()

    d.wires["alice"].upload = hang
    with pytest.raises(IMError) as err:
        run(d.ca.send_message(Message.file("bob", f["doc.pdf"])))
    assert err.value.code == ErrorCode.FILE_UPLOAD_FAILED
    assert d.a.messages("bob")[-1].status == MessageStatus.FAIL
    d.close()


def test_one_to_one_read_receipts_are_refused_for_group_messages(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)
    server.create_group("team", ["alice", "bob"])
    a, b = imstore.open(":memory:", user_id="alice"), imstore.open(":memory:", user_id="bob")
    ca, cb = ChatClient(a, server.connect("alice")), ChatClient(b, server.connect("bob"))

    async def main():
        m = await ca.send_message(Message.text("team", "hi", chat_type=ChatType.GROUP_CHAT,
                                               need_group_ack=True))
        with pytest.raises(IMError) as err:
            await cb.ack_message_read(m.msg_id)
        assert err.value.code == ErrorCode.INVALID_PARAM
        with pytest.raises(IMError) as err:  # the server refuses it too
            await server.connect("bob").send_read_ack(b.get_message(m.msg_id))
        assert err.value.code == ErrorCode.INVALID_PARAM
        with pytest.raises(IMError) as err:  # the sender cannot group-ack its own message
            await ca.ack_group_message_read(m.msg_id)
        assert err.value.code == ErrorCode.INVALID_PARAM
        with pytest.raises(IMError) as err:
            await server.connect("alice").send_group_read_ack(a.get_message(m.msg_id))
        assert err.value.code == ErrorCode.INVALID_PARAM
        return m

    m = run(main())
    assert not a.get_message(m.msg_id).is_read_acked
    assert a.get_message(m.msg_id).group_ack_count == 0
    a.close()
    b.close()


def test_group_receipts_obey_require_read_ack(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)
    server.create_group("team", ["alice", "bob"])
    a, b = imstore.open(":memory:", user_id="alice"), imstore.open(":memory:", user_id="bob")
    ca = ChatClient(a, server.connect("alice"))
    cb = ChatClient(b, server.connect("bob"), require_read_ack=False)

    async def main():
        m = await ca.send_message(Message.text("team", "hi", chat_type=ChatType.GROUP_CHAT,
                                               need_group_ack=True))
        await cb.ack_group_message_read(m.msg_id)
        return m

    m = run(main())
    assert b.unread_count("team") == 0  # read here
    assert a.get_message(m.msg_id).group_ack_count == 0  # but no receipt went out
    a.close()
    b.close()


def test_early_group_acks_are_announced_once_applied(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)
    server.create_group("team", ["alice", "bob"])
    a, b = imstore.open(":memory:", user_id="alice"), imstore.open(":memory:", user_id="bob")
    ca = ChatClient(a, server.connect("alice"), send_timeout=0.2)
    cb = ChatClient(b, server.connect("bob"))
    log, got = Log(), Log()
    ca.add_listener(log)
    cb.add_listener(got)

    async def main():
        server.lose_answers(1)  # alice's answer is late: bob's ack comes first
        task = asyncio.create_task(ca.send_message(Message.text(
            "team", "ack me", chat_type=ChatType.GROUP_CHAT, need_group_ack=True)))
        await got.signal("received").wait()
        (m,) = b.messages("team")
        await cb.ack_group_message_read(m.msg_id)
        assert [e for e in log.events if e[0] == "group_read"] == []
        return await task

    m = run(main())
    assert a.get_message(m.msg_id).group_ack_count == 1
    assert [e for e in log.events if e[0] in ("SUCCESS", "group_read")] == [
        ("SUCCESS",), ("group_read", "bob")]
    a.close()
    b.close()


class Minimal:
    """An adapter with the history API, ``attach`` and ``send`` only."""

    def __init__(self, conn) -> None:
        self.conn = conn

    async def fetch_conversations(self, cursor, limit):
        return await self.conn.fetch_conversations(cursor, limit)

    async def fetch_history(self, conv_id, chat_type, cursor, limit, options):
        return await self.conn.fetch_history(conv_id, chat_type, cursor, limit, options)

    async def remove_messages(self, conv_id, chat_type, msg_ids, before):
        await self.conn.remove_messages(conv_id, chat_type, msg_ids, before)

    async def delete_conversation(self, conv_id, chat_type, delete_messages):
        await self.conn.delete_conversation(conv_id, chat_type, delete_messages)

    def attach(self, handler) -> None:
        self.conn.attach(Relay(handler))

    async def send(self, message):
        return await self.conn.send(message)


def test_an_adapter_with_attach_and_send_is_the_transport(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)
    a, b = imstore.open(":memory:", user_id="alice"), imstore.open(":memory:", user_id="bob")
    ca = ChatClient(a, Minimal(server.connect("alice")), download_dir=str(tmp_path))
    cb = ChatClient(b, Minimal(server.connect("bob")), require_delivery_ack=False)
    f = files(tmp_path)

    async def main():
        m = await ca.send_message(Message.text("bob", "minimal"))
        assert m.status == MessageStatus.SUCCESS
        for call, name in ((lambda: cb.ack_message_read(m.msg_id), "send_read_ack"),
                           (lambda: cb.ack_conversation_read("alice"), "send_conversation_ack"),
                           (lambda: ca.send_message(Message.file("bob", f["doc.pdf"])), "upload"),
                           (lambda: ca.fetch_group_read_acks(m.msg_id), "fetch_group_read_acks"),
                           (lambda: ca.recall_message(m.msg_id), "recall_message"),
                           (lambda: ca.edit_message(m.msg_id, TextBody("x")), "edit_message")):
            with pytest.raises(IMError) as err:
                await call()
            assert err.value.code == ErrorCode.SERVICE_NOT_ENABLED and name in str(err.value)

    run(main())
    assert b.messages("alice")[-1].body.text == "minimal"
    a.close()
    b.close()


def test_a_transport_must_have_attach_and_send(store):
    with pytest.raises(IMError) as err:
        ChatClient(store, Minimal(None), transport=object())
    assert err.value.code == ErrorCode.INVALID_PARAM


def test_a_300_whose_message_got_through_leaves_one_copy_after_history(duo: Duo):
    async def main():
        duo.server.lose_answers(2)
        with pytest.raises(IMError) as err:
            await duo.ca.send_message(Message.text("bob", "did it go?"))
        assert err.value.code == ErrorCode.SERVER_NOT_REACHABLE
        (failed,) = duo.a.messages("bob")
        assert failed.status == MessageStatus.FAIL
        page = await duo.ca.fetch_history_messages("bob", ChatType.CHAT)
        return failed, page

    failed, page = run(main())
    (server_copy,) = page.items
    assert server_copy.local_id is None or server_copy.local_id == failed.msg_id
    (one,) = duo.a.messages("bob")
    assert one.status == MessageStatus.SUCCESS and one.msg_id == server_copy.msg_id
    assert duo.a.get_message(failed.msg_id).msg_id == server_copy.msg_id  # the local id finds it
    assert texts(duo.b, "alice") == ["did it go?"]
    assert duo.a.verify().ok


def test_history_carries_the_local_id_for_the_sender_only(clock: Clock):
    server = MemoryServer(clock=clock)
    posted = server.post(Message.text("bob", "hi", sender="alice", msg_id="L-local-1"))
    mine = run(server.connect("alice").fetch_history("bob", ChatType.CHAT, None, 10,
                                                     imstore.FetchOptions()))
    theirs = run(server.connect("bob").fetch_history("alice", ChatType.CHAT, None, 10,
                                                     imstore.FetchOptions()))
    assert mine.items[0].local_id == "L-local-1" and mine.items[0].msg_id == posted.msg_id
    assert theirs.items[0].local_id is None


# ----------------------------------------------------------------------------------------------
# Every transition and event, in order, for each send path (alice's listener, then bob's).

R, C, D = "RECONNECTING", "CONNECTED", "DISCONNECTED"
OK_A = ["INPROGRESS", "SUCCESS", "delivered"]


def _restore_when_waiting(d: Duo, log: Log, *, then_down: bool = False):
    async def during():
        await log.signal("INPROGRESS").wait()
        if then_down:
            d.server.disconnect("alice", reconnect=False)
        else:
            d.server.restore("alice")
    return during


SEND_PATHS = {
    # name: (setup(d, log) -> optional coroutine run beside the send, message kind,
    #        alice's events, bob's events, error code)
    "text": (lambda d, log: None, "text", OK_A, ["received"], None),
    "cmd": (lambda d, log: None, "cmd", ["INPROGRESS", "SUCCESS"], ["cmd"], None),
    "image": (lambda d, log: None, "image", OK_A, ["received"], None),
    "while reconnecting": (lambda d, log: (d.server.disconnect("alice"),
                                           _restore_when_waiting(d, log))[1],
                           "text", ["INPROGRESS", C, "SUCCESS", "delivered"], ["received"], None),
    "image while reconnecting": (lambda d, log: (d.server.disconnect("alice"),
                                                 _restore_when_waiting(d, log))[1],
                                 "image", ["INPROGRESS", C, "SUCCESS", "delivered"], ["received"],
                                 None),
    "drop before the server": (lambda d, log: drop_then_restore(d), "text",
                               ["INPROGRESS", R, C, "SUCCESS", "delivered"], ["received"], None),
    "drop after the server": (lambda d, log: drop_then_restore(d, after_server=True), "text",
                              ["INPROGRESS", R, C, "SUCCESS", "delivered"], ["received"], None),
    "one lost answer": (lambda d, log: d.server.lose_answers(1), "text", OK_A, ["received"], None),
    "two lost answers": (lambda d, log: d.server.lose_answers(2), "text", ["INPROGRESS", "FAIL"],
                         ["received"], ErrorCode.SERVER_NOT_REACHABLE),
    "unreachable": (lambda d, log: (d.server.lose_answers(1), d.server.set_reachable(False),
                                    None)[2], "text", ["INPROGRESS", D, "FAIL"], ["received"],
                    ErrorCode.SERVER_NOT_REACHABLE),
    "disconnected": (lambda d, log: d.server.disconnect("alice", reconnect=False), "text",
                     ["INPROGRESS", "FAIL"], [], ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED),
    "cmd disconnected": (lambda d, log: d.server.disconnect("alice", reconnect=False), "cmd",
                         ["INPROGRESS", "FAIL"], [], ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED),
    "reconnection fails": (lambda d, log: (d.server.disconnect("alice"),
                                           _restore_when_waiting(d, log, then_down=True))[1],
                           "text", ["INPROGRESS", D, "FAIL"], [],
                           ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED),
    "upload fails": (lambda d, log: d.server.fail_uploads(1), "file", ["INPROGRESS", "FAIL"], [],
                     ErrorCode.FILE_UPLOAD_FAILED),
}


@pytest.mark.parametrize("path", list(SEND_PATHS))
def test_every_transition_and_event_of_each_send_path(duo: Duo, tmp_path: Path, path: str):
    setup, kind, want_a, want_b, code = SEND_PATHS[path]
    f = files(tmp_path)
    make = {"text": lambda: Message.text("bob", "hi"), "cmd": lambda: Message.cmd("bob", "ping"),
            "image": lambda: Message.image("bob", f["pic.png"]),
            "file": lambda: Message.file("bob", f["doc.pdf"])}[kind]
    log_a, log_b = Log(), Log()

    async def main():
        during = setup(duo, log_a)
        duo.ca.add_listener(log_a)
        duo.cb.add_listener(log_b)
        side = asyncio.create_task(during()) if during else None
        try:
            await duo.ca.send_message(make())
            err = None
        except IMError as exc:
            err = exc.code
        if side:
            await side
        await duo.settle()
        return err

    assert run(main()) == code
    assert [e[0] for e in log_a.events] == want_a
    assert [e[0] for e in log_b.events] == want_b


@pytest.mark.parametrize("first", ["two lost answers", "upload fails", "disconnected"])
def test_every_transition_of_a_resend(duo: Duo, tmp_path: Path, first: str):
    setup, kind, _, _, _ = SEND_PATHS[first]
    f = files(tmp_path)
    log = Log()

    async def main():
        setup(duo, log)
        msg = Message.file("bob", f["doc.pdf"]) if kind == "file" else Message.text("bob", "hi")
        with pytest.raises(IMError):
            await duo.ca.send_message(msg)
        duo.server.restore("alice")
        duo.ca.add_listener(log)
        again = await duo.ca.resend_message(msg.msg_id)
        await duo.settle()
        return again

    again = run(main())
    assert again.status == MessageStatus.SUCCESS
    assert [e[0] for e in log.events] == ["INPROGRESS", "SUCCESS", "delivered"]
    assert duo.b.message_count("alice") == 1


# ----------------------------------------------------------------------------------------------
# Recall and edit end to end.

@pytest.mark.parametrize("bob_online", [True, False])
def test_recall_end_to_end(duo: Duo, bob_online: bool):
    log_a, log_b = Log(), Log()
    duo.ca.add_listener(log_a)
    duo.cb.add_listener(log_b)

    async def main():
        m = await duo.ca.send_message(Message.text("bob", "secret plans"))
        await duo.settle()
        if not bob_online:
            duo.server.disconnect("bob")
        notice = await duo.ca.recall_message(m.msg_id)
        duo.server.restore("bob")
        await duo.settle()
        return m, notice

    m, notice = run(main())
    assert notice.recalled_at is not None and notice.body.text == ""
    for store in (duo.a, duo.b):
        got = store.get_message(m.msg_id)
        assert got.recalled_at is not None and got.body.text == ""
        assert (got.msg_id, got.type, got.sender) == (m.msg_id, m.type, m.sender)
        assert store.search_messages("secret") == []
    assert ("recalled", 1) in log_a.events and ("recalled", 1) in log_b.events


def test_recall_past_the_window_is_message_expired(tmp_path: Path):
    clock = Clock()
    d = Duo("protocol", tmp_path, clock)

    async def main():
        m = await d.ca.send_message(Message.text("bob", "too late"))
        clock.now += 120_001
        with pytest.raises(IMError) as err:
            await d.ca.recall_message(m.msg_id)
        assert err.value.code == ErrorCode.MESSAGE_EXPIRED
        return m

    m = run(main())
    assert d.a.get_message(m.msg_id).recalled_at is None
    assert d.b.get_message(m.msg_id).body.text == "too late"
    d.close()


@pytest.mark.parametrize("bob_online", [True, False])
def test_edit_end_to_end(duo: Duo, bob_online: bool):
    async def main():
        m = await duo.ca.send_message(Message.text("bob", "meet at noon"))
        c = await duo.ca.send_message(Message.custom("bob", "poll", {"q": "lunch?"}))
        await duo.settle()
        if not bob_online:
            duo.server.disconnect("bob")
        edited = await duo.ca.edit_message(m.msg_id, TextBody("meet at three"))
        await duo.ca.edit_message(c.msg_id, CustomBody("poll", {"q": "dinner?"}))
        with pytest.raises(IMError) as err:
            await duo.ca.edit_message(m.msg_id, CustomBody("x"))
        assert err.value.code == ErrorCode.INVALID_PARAM
        duo.server.restore("bob")
        await duo.settle()
        return m, c, edited

    m, c, edited = run(main())
    assert edited.edited_at is not None
    for store in (duo.a, duo.b):
        got = store.get_message(m.msg_id)
        assert got.body.text == "meet at three" and got.edited_at == edited.edited_at
        assert store.get_message(c.msg_id).body.params == {"q": "dinner?"}
        assert [x.msg_id for x in store.search_messages("three")] == [m.msg_id]
        assert store.search_messages("noon") == []


def test_recall_and_edit_come_with_history(tmp_path: Path, clock: Clock):
    d = Duo("memory", tmp_path, clock)

    async def main():
        gone = await d.ca.send_message(Message.text("bob", "to recall"))
        kept = await d.ca.send_message(Message.text("bob", "to edit"))
        await d.ca.recall_message(gone.msg_id)
        await d.ca.edit_message(kept.msg_id, TextBody("edited"))
        fresh = imstore.open(":memory:", user_id="bob")
        client = ChatClient(fresh, Minimal(d.server.connect("bob")))
        await client.fetch_history_messages("alice", ChatType.CHAT)
        return fresh, gone, kept

    fresh, gone, kept = run(main())
    assert fresh.get_message(gone.msg_id).recalled_at is not None
    assert fresh.get_message(kept.msg_id).body.text == "edited"
    fresh.close()
    d.close()


# ----------------------------------------------------------------------------------------------
# Store rules the client relies on (CONTRACT.md).

def test_a_server_id_collision_fails_that_send_only(duo: Duo, monkeypatch):
    log = Log()

    async def main():
        await duo.ca.send_message(Message.text("bob", "before"))
        await duo.settle()
        duo.ca.add_listener(log)
        original = duo.a.mark_sent

        def collide(local_id, server_id, server_time):
            raise IMError(ErrorCode.MESSAGE_INVALID, f"{server_id} is another conversation's")

        monkeypatch.setattr(duo.a, "mark_sent", collide)
        with pytest.raises(IMError) as err:
            await duo.ca.send_message(Message.text("bob", "collides"))
        assert err.value.code == ErrorCode.MESSAGE_INVALID
        monkeypatch.setattr(duo.a, "mark_sent", original)
        await duo.ca.send_message(Message.text("bob", "after"))

    run(main())
    stored = {m.body.text: m.status for m in duo.a.messages("bob")}
    assert stored == {"before": MessageStatus.SUCCESS, "collides": MessageStatus.FAIL,
                      "after": MessageStatus.SUCCESS}
    statuses = [e[0] for e in log.events if e[0] in ("INPROGRESS", "SUCCESS", "FAIL")]
    assert statuses == ["INPROGRESS", "FAIL", "INPROGRESS", "SUCCESS"]


def test_mark_sent_never_touches_another_conversations_message(store):
    other = store.insert_message(Message.text("alice", "carol's", sender="carol", msg_id="S1"))
    mine = store.insert_message(Message.text("bob", "mine"))
    with pytest.raises(IMError) as err:
        store.mark_sent(mine.msg_id, "S1", 5)
    assert err.value.code == ErrorCode.MESSAGE_INVALID
    assert store.get_message("S1").body.text == other.body.text
    assert store.get_message(mine.msg_id).msg_id == mine.msg_id


def test_a_conversation_receipt_leaves_fail_messages_unacked(duo: Duo):
    async def main():
        ok = await duo.ca.send_message(Message.text("bob", "ok"))
        duo.server.disconnect("alice", reconnect=False)
        with pytest.raises(IMError):
            await duo.ca.send_message(Message.text("bob", "never left"))
        duo.server.restore("alice")
        await duo.settle()
        await duo.cb.ack_conversation_read("alice")
        await duo.settle()
        return ok

    ok = run(main())
    got = {m.body.text: m for m in duo.a.messages("bob")}
    assert got["ok"].is_read_acked and got["ok"].msg_id == ok.msg_id
    assert not got["never left"].is_read_acked


def test_early_group_acks_that_never_find_their_message_are_pruned(pair: Pair):
    pair.ca.on_group_read_acks([GroupReadAck("S-never", "team", "bob", 1)])
    assert [a.reader for a in pair.a.group_read_acks("S-never")] == ["bob"]  # kept in SQLite
    pair.ca.prune_pending_receipts()
    assert pair.a.group_read_acks("S-never") == []


@pytest.mark.parametrize("times, code", [(1, None), (2, ErrorCode.SERVER_NOT_REACHABLE)])
def test_a_510_while_connected_counts_as_no_answer(tmp_path: Path, clock: Clock, times, code):
    d = Duo("protocol", tmp_path, clock)
    left = [times]

    def refuse(message):
        if left[0] > 0:
            left[0] -= 1
            raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED, "hiccup")

    d.hook("alice", refuse)

    async def main():
        try:
            return (await d.ca.send_message(Message.text("bob", "hi"))).status
        except IMError as exc:
            return exc.code

    got = run(main())
    assert got == (code or MessageStatus.SUCCESS)
    assert len(d.sends("alice")) == 2  # one reconnect, one retry: never 510 while CONNECTED
    d.close()


def test_wait_idle_returns_with_sends_parked_and_waits_for_them_once_connected(duo: Duo):
    async def main():
        duo.server.disconnect("alice")
        first = asyncio.create_task(duo.ca.send_message(Message.text("bob", "first")))
        second = asyncio.create_task(duo.ca.send_message(Message.text("bob", "second")))
        await duo.ca.wait_idle()  # both wait for the connection: nothing else to do
        assert [m.status for m in duo.a.messages("bob")] == [MessageStatus.INPROGRESS] * 2
        assert not first.done() and not second.done()
        duo.server.restore("alice")
        await duo.ca.wait_idle()  # now they go out, and wait_idle waits for them
        assert first.done() and second.done()
        await duo.settle()

    run(main())
    assert [m.status for m in duo.a.messages("bob")] == [MessageStatus.SUCCESS] * 2
    assert texts(duo.b, "alice") == ["first", "second"]


def test_is_transport_needs_attach_and_send_only(clock: Clock):
    from imstore.adapters import is_transport

    full = MemoryServer(clock=clock).connect("alice")
    assert is_transport(full) and isinstance(full, imstore.Transport)
    assert is_transport(Minimal(full)) and not isinstance(Minimal(full), imstore.Transport)
    assert not is_transport(object())


def test_a_transport_whose_conversation_ack_takes_no_position_still_works(tmp_path, clock):
    class Older(WireTransport):
        async def send_conversation_ack(self, conv_id, chat_type):  # the old signature
            await self._conn.send_conversation_ack(conv_id, chat_type)

    d = Duo("protocol", tmp_path, clock)
    older = Older(d.server.connect("bob"))
    cb = ChatClient(d.b, d.server.connect("bob"), transport=older)

    async def main():
        m = await d.ca.send_message(Message.text("bob", "hi"))
        await d.settle()
        await cb.ack_conversation_read("alice")
        return m

    m = run(main())
    assert d.a.get_message(m.msg_id).is_read_acked
    d.close()


def test_a_hanging_download_fails_after_transfer_timeout(tmp_path: Path, clock: Clock):
    d = Duo("protocol", tmp_path, clock, transfer_timeout=0.05)
    d.cb.auto_download = False
    f = files(tmp_path)

    async def hang(url, dest, *, progress=None):
        await asyncio.Event().wait()

    d.wires["bob"].download = hang

    async def main():
        m = await d.ca.send_message(Message.file("bob", f["doc.pdf"]))
        await d.settle()
        with pytest.raises(IMError) as err:
            await d.cb.download_attachment(m.msg_id)
        assert err.value.code == ErrorCode.FILE_DOWNLOAD_FAILED
        return m

    m = run(main())
    assert d.b.get_message(m.msg_id).body.download_status == DownloadStatus.FAILED
    d.close()


# ------------------------------------------------------------------ kinds drive the downloads

def _received_attachments(pair: Pair, f: dict[str, Path]) -> dict[str, Message]:
    async def main():
        await pair.ca.send_message(Message.image("bob", f["pic.png"]))
        await pair.ca.send_message(Message.voice("bob", f["voice.ogg"], 1000))
        await pair.ca.send_message(Message.video("bob", f["clip.mp4"], 2000,
                                                        thumbnail=f["thumb.png"]))
        await pair.ca.send_message(Message.file("bob", f["doc.pdf"]))
        await pair.settle()

    run(main())
    return {m.type.name: m for m in pair.b.messages("alice")}


@pytest.mark.parametrize(("mtype", "auto"), [
    (t, a) for t in (MessageType.IMAGE, MessageType.VOICE, MessageType.VIDEO, MessageType.FILE)
    for a in AutoDownload if a is not AutoDownload.THUMBNAIL or KINDS[t].thumbnail],
    ids=str)
def test_the_client_downloads_what_the_kinds_table_says(pair: Pair, tmp_path: Path,
                                                         monkeypatch, mtype, auto):
    kind = KINDS[mtype]
    monkeypatch.setitem(KINDS, mtype, dataclasses.replace(kind, auto_download=auto))
    got = _received_attachments(pair, files(tmp_path))[mtype.name].body
    file_done = got.download_status == DownloadStatus.SUCCEEDED
    thumb_done = getattr(got, "thumbnail_status", None) == DownloadStatus.SUCCEEDED
    assert (file_done, thumb_done) == (auto is AutoDownload.FILE, auto is AutoDownload.THUMBNAIL)


def test_voice_and_image_set_to_download_nothing_download_nothing(pair: Pair, tmp_path: Path,
                                                                   monkeypatch):
    for mtype in (MessageType.VOICE, MessageType.IMAGE):
        monkeypatch.setitem(KINDS, mtype, dataclasses.replace(
            KINDS[mtype], auto_download=AutoDownload.NOTHING))
    got = _received_attachments(pair, files(tmp_path))
    assert got["VOICE"].body.download_status == DownloadStatus.PENDING
    assert got["IMAGE"].body.thumbnail_status == DownloadStatus.PENDING
    assert got["VIDEO"].body.thumbnail_status == DownloadStatus.SUCCEEDED  # its row unchanged


def test_a_failed_thumbnail_download_is_stored_failed(pair: Pair, tmp_path: Path, monkeypatch):
    f = files(tmp_path)
    pair.cb.auto_download = False

    async def broken(url, dest, **kw):
        raise ConnectionError("the media server hung up")

    async def main():
        await pair.ca.send_message(Message.video("bob", f["clip.mp4"], 2000,
                                                        thumbnail=f["thumb.png"]))
        await pair.settle()
        got = pair.b.messages("alice")[-1]
        monkeypatch.setattr(pair.cb.transport, "download", broken)
        with pytest.raises(IMError) as err:
            await pair.cb.download_thumbnail(got.msg_id)
        return got, err.value

    got, err = run(main())
    assert err.code == ErrorCode.FILE_DOWNLOAD_FAILED
    stored = pair.b.get_message(got.msg_id).body
    assert stored.thumbnail_status == DownloadStatus.FAILED and not stored.thumbnail_path
    assert stored.download_status == DownloadStatus.PENDING  # the video itself untouched


def test_an_images_own_thumbnail_is_uploaded(pair: Pair, tmp_path: Path):
    f = files(tmp_path)

    async def main():
        sent = await pair.ca.send_message(Message.image("bob", f["pic.png"],
                                                        thumbnail=f["thumb.png"]))
        await pair.settle()
        return sent

    sent = run(main())
    got = pair.b.get_message(sent.msg_id).body
    assert got.thumbnail_status == DownloadStatus.SUCCEEDED
    assert Path(got.thumbnail_path).read_bytes() == f["thumb.png"].read_bytes()


def test_a_thumbnail_past_the_limit_is_refused_before_anything_is_stored(pair: Pair,
                                                                         tmp_path: Path):
    f = files(tmp_path)
    big = tmp_path / "big-thumb.png"
    big.write_bytes(b"x" * (pair.a.limits.max_thumbnail_bytes + 1))
    with pytest.raises(IMError) as err:
        run(pair.ca.send_message(Message.image("bob", f["pic.png"], thumbnail=big)))
    assert err.value.code == ErrorCode.FILE_TOO_LARGE and "max_thumbnail_bytes" in str(err.value)
    assert pair.a.messages("bob") == []


def test_no_temporary_folder_until_a_download_needs_one(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    server = MemoryServer()
    with imstore.open(":memory:", user_id="alice") as a, \
            imstore.open(":memory:", user_id="bob") as b:
        ca = ChatClient(a, server.connect("alice"))
        cb = ChatClient(b, server.connect("bob"))
        f = files(tmp_path)

        async def main():
            await ca.send_message(Message.text("bob", "hi"))
            await ca.send_message(Message.file("bob", f["doc.pdf"]))  # not downloaded by itself
            await cb.wait_idle()
            assert os.listdir(tmp_path / "tmp") == []
            await ca.send_message(Message.voice("bob", f["voice.ogg"], 1000))
            await cb.wait_idle()  # bob's voice message downloads by itself

        run(main())
        assert [p.startswith("imstore-files-") for p in os.listdir(tmp_path / "tmp")] == [True]
        got = b.messages("alice")[-1].body
        assert Path(got.local_path).read_bytes() == f["voice.ogg"].read_bytes()
        ca.close()
        cb.close()
        assert os.listdir(tmp_path / "tmp") == []


# ---------------------------------------------------------------- what history teaches the client

class _Page:
    """A SyncAdapter whose history is one given page (what another device did meanwhile)."""

    def __init__(self, items: list[Message]) -> None:
        self.items = items

    async def fetch_history(self, conv_id, chat_type, cursor, limit, options):
        return imstore.CursorResult(list(self.items), None)


def test_a_recall_learned_from_history_is_applied_and_announced(store):
    log = Log()
    here = store.insert_message(Message.text("alice", "oops", sender="bob", msg_id="S1",
                                             timestamp=100))
    recalled = Message.text("alice", "", sender="bob", msg_id="S1", timestamp=100)
    recalled.body, recalled.recalled_at = TextBody(""), 500
    client = ChatClient(store, _Page([recalled]))
    client.add_listener(log)
    run(client.fetch_history_messages("bob", ChatType.CHAT))
    got = store.get_message(here.msg_id)
    assert got.recalled_at == 500 and got.body == TextBody("")
    assert ("recalled", 1) in log.events


@pytest.mark.parametrize(("edited_at", "applied"), [(600, True), (50, False)])
def test_an_edit_learned_from_history_is_applied_unless_older(store, edited_at, applied):
    log = Log()
    store.insert_message(Message.text("alice", "frist", sender="bob", msg_id="S1",
                                      timestamp=100))
    store.apply_edit("S1", TextBody("first"), 100)
    edited = Message.text("alice", "first!", sender="bob", msg_id="S1", timestamp=100)
    edited.edited_at = edited_at
    client = ChatClient(store, _Page([edited]))
    client.add_listener(log)
    run(client.fetch_history_messages("bob", ChatType.CHAT))
    assert store.get_message("S1").body.text == ("first!" if applied else "first")
    assert (("edited", 1) in log.events) is applied


def test_a_history_copy_whose_server_id_is_taken_stays_apart(store, caplog):
    log = Log()
    store.insert_message(Message.text("carol", "carol's", sender="carol", msg_id="S1",
                                      timestamp=50))
    failed = Message.text("bob", "lost?", msg_id="L1", timestamp=100)
    failed.status = MessageStatus.FAIL
    store.insert_message(failed)
    copy = Message.text("bob", "lost?", sender="alice", msg_id="S1", timestamp=100,
                        local_id="L1")
    copy.server_time = 100
    client = ChatClient(store, _Page([copy]))
    client.add_listener(log)
    with caplog.at_level("WARNING", logger="imstore.client"):
        run(client.fetch_history_messages("bob", ChatType.CHAT))
    assert "stays apart" in caplog.text
    assert store.get_message("L1").status == MessageStatus.FAIL  # not taken over
    assert store.get_message("S1").body.text == "carol's"
    assert not [e for e in log.events if e[0] == "SUCCESS"]


def test_a_history_copy_of_a_failed_send_makes_it_the_servers(store):
    log = Log()
    failed = Message.text("bob", "got through", msg_id="L1", timestamp=100)
    failed.status = MessageStatus.FAIL
    store.insert_message(failed)
    copy = Message.text("bob", "got through", sender="alice", msg_id="S1", timestamp=100,
                        local_id="L1")
    copy.server_time = 100
    client = ChatClient(store, _Page([copy]))
    client.add_listener(log)
    run(client.fetch_history_messages("bob", ChatType.CHAT))
    got = store.get_message("L1")
    assert (got.msg_id, got.status) == ("S1", MessageStatus.SUCCESS)
    assert store.message_count("bob") == 1
    assert [e for e in log.events if e[0] == "SUCCESS"] == [("SUCCESS",)]


def test_the_connection_gates_table_is_the_designed_one():
    from imstore.client._gate import STEP_OUTCOMES, Outcome, Step

    assert STEP_OUTCOMES == {
        Step.RECONNECTING: Outcome.PARK, Step.DISCONNECTED: Outcome.FAIL_510,
        Step.DROPPED: Outcome.RERUN, Step.NO_ANSWER: Outcome.RECONNECT_RETRY,
        Step.NO_ANSWER_AGAIN: Outcome.FAIL_300}
