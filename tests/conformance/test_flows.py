"""The specification's flows, written against the SyncAdapter/Transport contract and ChatClient,
run against every backend (see conftest.py). Nothing here knows which server it talks to: what a
backend cannot do is a skip with its reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from imstore import (
    ChatClient,
    ChatType,
    ConnectionState,
    Direction,
    DownloadStatus,
    ErrorCode,
    FetchOptions,
    IMError,
    Message,
    MessageStatus,
    MessageType,
)
from imstore.message import CustomBody, TextBody

from .conftest import Backend, Harness, png_bytes


def media(tmp: Path) -> dict[str, Path]:
    out = {}
    for name, data in (("pic.png", png_bytes()), ("voice.ogg", b"OggS" + bytes(range(256)) * 20),
                       ("clip.mp4", bytes(range(256)) * 40), ("thumb.png", png_bytes(16, 12)),
                       ("doc.pdf", b"%PDF-1.4 " + b"x" * 1234)):
        p = tmp / name
        p.write_bytes(data)
        out[name] = p
    return out


async def texts(b: Backend, sender: Any, to: str, n: int, prefix: str = "m",
                chat_type: ChatType = ChatType.CHAT) -> list[Message]:
    return [await sender.client.send_message(Message.text(to, f"{prefix}{i}", chat_type=chat_type))
            for i in range(n)]


async def all_pages(client: ChatClient, conv_id: str, chat_type: ChatType, limit: int,
                    options: FetchOptions) -> list[list[Message]]:
    pages, cursor = [], None
    while True:
        page = await client.fetch_history_messages(conv_id, chat_type, cursor=cursor,
                                                   limit=limit, options=options)
        pages.append(page.items)
        cursor = page.cursor
        if cursor is None:
            return pages


# ------------------------------------------------------------------------------- sending


def test_every_type_is_sent_received_and_its_files_come_down(backend: Harness, tmp_path: Path):
    f = media(tmp_path)

    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        to = bob.id
        sent = [
            await alice.client.send_message(Message.text(to, "hello 👋 你好", ext={"k": "v"})),
            await alice.client.send_message(Message.image(to, f["pic.png"], width=64, height=48)),
            await alice.client.send_message(Message.voice(to, f["voice.ogg"], 1500)),
            await alice.client.send_message(Message.video(to, f["clip.mp4"], 4000,
                                                          thumbnail=f["thumb.png"])),
            await alice.client.send_message(Message.file(to, f["doc.pdf"])),
            await alice.client.send_message(Message.location(to, 48.85, 2.35, address="Paris",
                                                             building_name="Louvre")),
            await alice.client.send_message(Message.custom(to, "red_packet", {"amount": "5"})),
            await alice.client.send_message(Message.cmd(to, "typing", {"on": True})),
        ]
        assert all(m.status == MessageStatus.SUCCESS and m.server_time for m in sent)
        await b.until(lambda: bob.store.message_count(alice.id) == 7, "seven messages at bob")
        await b.until(lambda: bob.rec.kinds("cmd") == [["typing"]], "the command at bob")
        got = {m.type: m for m in bob.store.messages(alice.id, limit=20)}
        assert MessageType.CMD not in got
        assert [m.msg_id for m in bob.store.messages(alice.id, limit=20)] == [
            m.msg_id for m in sent[:7]]
        text = got[MessageType.TEXT]
        assert (text.body.text, text.ext, text.direction) == ("hello 👋 你好", {"k": "v"},
                                                              Direction.RECEIVE)
        loc = got[MessageType.LOCATION].body
        assert (loc.latitude, loc.longitude, loc.address, loc.building_name) == (
            48.85, 2.35, "Paris", "Louvre")
        assert (got[MessageType.CUSTOM].body.event, got[MessageType.CUSTOM].body.params) == (
            "red_packet", {"amount": "5"})
        assert got[MessageType.IMAGE].body.width == 64
        assert got[MessageType.VOICE].body.duration_ms == 1500

        def downloaded() -> bool:
            g = {m.type: m.body for m in bob.store.messages(alice.id, limit=20)}
            return (g[MessageType.IMAGE].thumbnail_status == DownloadStatus.SUCCEEDED
                    and g[MessageType.VOICE].download_status == DownloadStatus.SUCCEEDED
                    and g[MessageType.VIDEO].thumbnail_status == DownloadStatus.SUCCEEDED)

        await b.until(downloaded, "the automatic downloads")
        g = {m.type: m.body for m in bob.store.messages(alice.id, limit=20)}
        assert Path(g[MessageType.VOICE].local_path).read_bytes() == f["voice.ogg"].read_bytes()
        assert Path(g[MessageType.VIDEO].thumbnail_path).read_bytes() == f["thumb.png"].read_bytes()
        assert Path(g[MessageType.IMAGE].thumbnail_path).stat().st_size > 0
        assert g[MessageType.VIDEO].download_status == DownloadStatus.PENDING
        assert g[MessageType.FILE].download_status == DownloadStatus.PENDING
        for mtype, name in ((MessageType.FILE, "doc.pdf"), (MessageType.VIDEO, "clip.mp4"),
                            (MessageType.IMAGE, "pic.png")):
            done = await bob.client.download_attachment(got[mtype].msg_id)
            assert Path(done.body.local_path).read_bytes() == f[name].read_bytes()
            assert done.body.download_status == DownloadStatus.SUCCEEDED

    backend.run(main)


def test_a_retried_send_is_delivered_once(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        msg = Message.text(bob.id, "once")
        msg.sender = alice.id
        first = await alice.transport.send(msg)
        again = await alice.transport.send(msg)  # same local id: a retry
        assert again == first
        after = await alice.client.send_message(Message.text(bob.id, "after"))
        await b.until(lambda: bob.store.message_count(alice.id) == 2, "two messages at bob")
        assert [m.msg_id for m in bob.store.messages(alice.id)] == [first.msg_id, after.msg_id]

    backend.run(main)


def test_a_send_the_server_never_answers_fails_with_300_and_resends_once(backend: Harness):
    async def main(b: Backend) -> None:
        if not b.server_faults and b.name != "memory":
            pytest.skip(f"{b.name}: this Synapse was not started by scripts/synapse.py, so "
                        "there is no PID to pause")
        alice, bob = await b.users("alice", "bob")
        await alice.client.send_message(Message.text(bob.id, "before"))
        alice.client.send_timeout = 1.0
        await b.pause_server()
        try:
            with pytest.raises(IMError) as err:
                await alice.client.send_message(Message.text(bob.id, "frozen"))
            assert err.value.code == ErrorCode.SERVER_NOT_REACHABLE
        finally:
            await b.resume_server()
        failed = [m for m in alice.store.messages(bob.id) if m.status == MessageStatus.FAIL]
        assert [m.body.text for m in failed] == ["frozen"]
        alice.client.send_timeout = 10.0
        await b.until(lambda: alice.transport.state == ConnectionState.CONNECTED, "reconnection")
        again = await alice.client.resend_message(failed[0].msg_id)
        assert again.status == MessageStatus.SUCCESS
        await b.until(lambda: bob.store.message_count(alice.id) == 2, "both messages at bob")
        assert [m.body.text for m in bob.store.messages(alice.id)] == ["before", "frozen"]

    backend.run(main)


def test_the_connection_comes_back_after_the_server_restarts(backend: Harness):
    async def main(b: Backend) -> None:
        if not b.server_faults and b.name != "memory":
            pytest.skip(f"{b.name}: not started by scripts/synapse.py, so it cannot be restarted")
        alice, bob = await b.users("alice", "bob")
        await alice.client.send_message(Message.text(bob.id, "before"))
        alice.client.send_timeout = 30.0  # the wait through RECONNECTING outlasts a restart
        waiting: list[asyncio.Task[Message]] = []

        async def while_down() -> None:
            await b.until(lambda: alice.transport.state == ConnectionState.RECONNECTING,
                          "RECONNECTING while the server is down")
            # sent while RECONNECTING: it waits and goes out after the reconnection
            waiting.append(asyncio.ensure_future(
                alice.client.send_message(Message.text(bob.id, "during"))))
            await b.settle()

        await b.restart_server(while_down)
        during = await waiting[0]
        assert during.status == MessageStatus.SUCCESS
        await b.until(lambda: alice.transport.state == ConnectionState.CONNECTED, "CONNECTED")
        assert ("state", ConnectionState.RECONNECTING) in alice.rec.events
        sent = await alice.client.send_message(Message.text(bob.id, "after"))
        await b.until(lambda: bob.store.get_message(sent.msg_id) is not None, "delivery")
        assert [m.body.text for m in bob.store.messages(alice.id)] == ["before", "during", "after"]

    backend.run(main)


def test_messages_sent_while_offline_all_arrive_once(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        await alice.client.send_message(Message.text(bob.id, "hi"))
        await b.until(lambda: bob.store.message_count(alice.id) == 1, "the first message")
        await b.offline(bob)
        sent = await texts(b, alice, bob.id, 8)  # more than a sync's timeline holds
        await b.online(bob)
        await b.until(lambda: bob.store.message_count(alice.id) == 9, "9 messages at bob")
        assert [m.msg_id for m in bob.store.messages(alice.id, limit=50)][1:] == [
            m.msg_id for m in sent]
        assert bob.store.unread_count(alice.id) == 9
        assert sorted(bob.rec.received_ids()) == sorted(
            m.msg_id for m in bob.store.messages(alice.id, limit=50))

    backend.run(main)


def test_group_and_chat_room_messages_reach_every_member(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob, carol = await b.users("alice", "bob", "carol")
        group = await b.create_group(alice, "team-" + alice.id, [bob, carol])
        room = await b.create_group(alice, "lobby-" + alice.id, [bob],
                                    chat_type=ChatType.CHAT_ROOM)
        g = await alice.client.send_message(Message.text(group, "to the team",
                                                         chat_type=ChatType.GROUP_CHAT))
        r = await bob.client.send_message(Message.text(room, "in the lobby",
                                                       chat_type=ChatType.CHAT_ROOM))
        await b.until(lambda: bob.store.get_message(g.msg_id) is not None
                      and carol.store.get_message(g.msg_id) is not None
                      and alice.store.get_message(r.msg_id) is not None, "fan-out")
        got = carol.store.get_message(g.msg_id)
        assert got is not None and (got.conv_id, got.chat_type, got.sender) == (
            group, ChatType.GROUP_CHAT, alice.id)
        got = alice.store.get_message(r.msg_id)
        assert got is not None and (got.conv_id, got.chat_type) == (room, ChatType.CHAT_ROOM)
        await alice.client.send_message(Message.cmd(group, "refresh", {"what": "topic"},
                                                    chat_type=ChatType.GROUP_CHAT))
        await b.until(lambda: bob.rec.kinds("cmd") == [["refresh"]]
                      and carol.rec.kinds("cmd") == [["refresh"]], "the group command")
        assert bob.store.get_message(g.msg_id) is not None  # commands are never stored
        assert bob.store.message_count(group) == 1

    backend.run(main)


# ------------------------------------------------------------------------------- receipts


def test_delivery_and_read_receipts_reach_the_sender(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        m1 = await alice.client.send_message(Message.text(bob.id, "one"))
        m2 = await alice.client.send_message(Message.text(bob.id, "two"))

        def stored(i: str) -> Message:
            m = alice.store.get_message(i)
            assert m is not None
            return m

        await b.until(lambda: stored(m1.msg_id).is_delivered and stored(m2.msg_id).is_delivered,
                      "delivery receipts")
        await b.until(lambda: bob.store.message_count(alice.id) == 2, "both at bob")
        await bob.client.ack_message_read(m1.msg_id)
        await b.until(lambda: stored(m1.msg_id).is_read_acked, "the read receipt")
        await bob.client.ack_conversation_read(alice.id)
        await b.until(lambda: stored(m2.msg_id).is_read_acked, "the conversation read receipt")
        await b.until(lambda: alice.rec.kinds("conversation_read"), "on_conversation_read")
        assert alice.rec.kinds("conversation_read")[-1] == (bob.id, bob.id)
        assert bob.store.unread_count(alice.id) == 0

    backend.run(main)


def test_unread_counts_follow_reads(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob, carol = await b.users("alice", "bob", "carol")
        await texts(b, alice, bob.id, 3)
        await texts(b, carol, bob.id, 2)
        await b.until(lambda: bob.store.total_unread_count() == 5, "five unread at bob")
        assert (bob.store.unread_count(alice.id), bob.store.unread_count(carol.id)) == (3, 2)
        await bob.client.ack_conversation_read(alice.id)
        assert (bob.store.unread_count(alice.id), bob.store.total_unread_count()) == (0, 2)
        last = bob.store.messages(carol.id)[-1]
        await bob.client.ack_message_read(last.msg_id)
        assert bob.store.unread_count(carol.id) == 1

    backend.run(main)


def test_group_read_acks_are_counted_and_listed(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob, carol = await b.users("alice", "bob", "carol")
        group = await b.create_group(alice, "acks-" + alice.id, [bob, carol])
        msg = Message.text(group, "please read", chat_type=ChatType.GROUP_CHAT)
        msg.need_group_ack = True
        sent = await alice.client.send_message(msg)
        await b.until(lambda: bob.store.get_message(sent.msg_id) is not None
                      and carol.store.get_message(sent.msg_id) is not None, "fan-out")
        await bob.client.ack_group_message_read(sent.msg_id)
        await carol.client.ack_group_message_read(sent.msg_id)

        def count() -> int:
            m = alice.store.get_message(sent.msg_id)
            return m.group_ack_count if m else -1

        await b.until(lambda: count() == 2, "two group read acks")
        readers: list[str] = []
        cursor = None
        for _ in range(5):
            page = await alice.client.fetch_group_read_acks(sent.msg_id, cursor=cursor, limit=1)
            readers += [a.reader for a in page.items]
            cursor = page.cursor
            if cursor is None:
                break
        assert sorted(readers) == sorted([bob.id, carol.id])

    backend.run(main)


# -------------------------------------------------------------------------------- history


def test_history_pages_both_ways_without_duplicates_while_history_grows(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = [m.msg_id for m in await texts(b, alice, bob.id, 12)]
        up = FetchOptions(save=False)
        first = await bob.client.fetch_history_messages(alice.id, ChatType.CHAT, limit=5,
                                                        options=up)
        await texts(b, alice, bob.id, 2, prefix="late")  # history grows while paging
        rest = []
        cursor = first.cursor
        while cursor is not None:
            page = await bob.client.fetch_history_messages(alice.id, ChatType.CHAT, limit=5,
                                                           cursor=cursor, options=up)
            rest = page.items + rest
            cursor = page.cursor
        ids = [m.msg_id for m in rest + first.items]
        assert ids == sent
        down = await all_pages(bob.client, alice.id, ChatType.CHAT, 4,
                               FetchOptions(direction=Direction.DOWN, save=False))
        ids = [m.msg_id for page in down for m in page]
        assert ids[:12] == sent and len(ids) == 14 == len(set(ids))
        assert all(len(p) <= 4 for p in down)

    backend.run(main)


def test_history_is_saved_once_and_seen_as_the_user_sees_it(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = await texts(b, alice, bob.id, 4)
        await b.until(lambda: bob.store.message_count(alice.id) == 4, "live delivery")
        page = await bob.client.fetch_history_messages(alice.id, ChatType.CHAT, limit=50)
        assert [m.msg_id for m in page.items] == [m.msg_id for m in sent]
        assert bob.store.message_count(alice.id) == 4
        assert all(m.direction == Direction.RECEIVE and m.conv_id == alice.id
                   and m.sender == alice.id for m in page.items)
        mine = await alice.client.fetch_history_messages(bob.id, ChatType.CHAT, limit=50,
                                                         options=FetchOptions(save=False))
        assert all(m.direction == Direction.SEND and m.conv_id == bob.id for m in mine.items)

    backend.run(main)


def test_history_filters_by_time_type_and_sender(backend: Harness, tmp_path: Path):
    f = media(tmp_path)

    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = await texts(b, alice, bob.id, 6)
        pic = await alice.client.send_message(Message.file(bob.id, f["doc.pdf"]))
        reply = await bob.client.send_message(Message.text(alice.id, "reply"))
        times = [m.server_time or 0 for m in sent]
        window = FetchOptions(start_time=times[1], end_time=times[4], save=False)
        for direction in (Direction.UP, Direction.DOWN):
            opts = FetchOptions(start_time=window.start_time, end_time=window.end_time,
                                direction=direction, save=False)
            pages = await all_pages(bob.client, alice.id, ChatType.CHAT, 2, opts)
            if direction == Direction.UP:
                pages.reverse()  # UP pages go back in time
            assert [m.msg_id for p in pages for m in p] == [m.msg_id for m in sent[1:5]], direction
        files = await bob.client.fetch_history_messages(
            alice.id, ChatType.CHAT, limit=50,
            options=FetchOptions(types=(MessageType.FILE,), save=False))
        assert [m.msg_id for m in files.items] == [pic.msg_id]
        bobs = await bob.client.fetch_history_messages(
            alice.id, ChatType.CHAT, limit=50, options=FetchOptions(sender=bob.id, save=False))
        assert [m.msg_id for m in bobs.items] == [reply.msg_id]

    backend.run(main)


def test_conversation_list_is_newest_first_and_paged(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob, carol = await b.users("alice", "bob", "carol")
        await alice.client.send_message(Message.text(bob.id, "to bob"))
        group = await b.create_group(carol, "club-" + carol.id, [bob])
        await carol.client.send_message(Message.text(group, "club news",
                                                     chat_type=ChatType.GROUP_CHAT))
        last = await carol.client.send_message(Message.text(bob.id, "to bob from carol"))
        convs = []
        cursor = None
        for _ in range(5):
            page = await bob.client.fetch_conversations_from_server(cursor=cursor, limit=1)
            convs += page.items
            cursor = page.cursor
            if cursor is None:
                break
        assert [(c.conv_id, c.chat_type) for c in convs] == [
            (carol.id, ChatType.CHAT), (group, ChatType.GROUP_CHAT), (alice.id, ChatType.CHAT)]
        stored = bob.store.conversation(carol.id)
        assert stored is not None and stored.last_message is not None
        assert stored.last_message.msg_id == last.msg_id

    backend.run(main)


def test_a_chat_opened_while_offline_is_on_the_fetched_list(backend: Harness):
    # an app that starts by fetching the conversation list must see a chat a peer opened while
    # this device was away, before its live connection has caught up
    async def main(b: Backend) -> None:
        bob, carol = await b.users("bob", "carol")
        await b.offline(bob)
        first = await carol.client.send_message(Message.text(bob.id, "are you there?"))
        page = await bob.client.fetch_conversations_from_server(limit=10)
        assert [(c.conv_id, c.chat_type) for c in page.items] == [(carol.id, ChatType.CHAT)]
        last = page.items[0].last_message
        assert last is not None and last.msg_id == first.msg_id
        assert page.items[0].unread_count == 1
        stored = bob.store.conversation(carol.id)
        assert stored is not None and stored.unread_count == 1
        await b.online(bob)
        await b.settle()
        assert bob.rec.received_ids() == [first.msg_id]  # announced once, not again when live
        stored = bob.store.conversation(carol.id)
        assert stored is not None and stored.unread_count == 1

    backend.run(main)


def test_page_sizes_and_cursors_are_checked(backend: Harness):
    async def main(b: Backend) -> None:
        (alice,) = await b.users("alice")
        adapter = alice.transport
        for limit in (0, 51):
            with pytest.raises(IMError) as err:
                await adapter.fetch_history("nobody", ChatType.CHAT, None, limit, FetchOptions())
            assert err.value.code == ErrorCode.QUERY_PARAM_REACHES_LIMIT
            with pytest.raises(IMError) as err:
                await adapter.fetch_conversations(None, limit)
            assert err.value.code == ErrorCode.QUERY_PARAM_REACHES_LIMIT
        with pytest.raises(IMError) as err:
            await adapter.fetch_history("no-such-group", ChatType.GROUP_CHAT, None, 10,
                                        FetchOptions())
        assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST

    backend.run(main)


# -------------------------------------------------------------------------------- deletes


def test_one_way_delete_hides_messages_from_me_only(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = await texts(b, alice, bob.id, 4)
        await alice.client.remove_messages_from_server(bob.id, ChatType.CHAT,
                                                       msg_ids=[sent[1].msg_id])
        mine = await alice.client.fetch_history_messages(bob.id, ChatType.CHAT, limit=50,
                                                         options=FetchOptions(save=False))
        assert [m.msg_id for m in mine.items] == [m.msg_id for i, m in enumerate(sent) if i != 1]
        await alice.client.remove_messages_from_server(bob.id, ChatType.CHAT,
                                                       before=sent[3].server_time)
        mine = await alice.client.fetch_history_messages(bob.id, ChatType.CHAT, limit=50,
                                                         options=FetchOptions(save=False))
        assert [m.msg_id for m in mine.items] == [sent[3].msg_id]
        theirs = await bob.client.fetch_history_messages(alice.id, ChatType.CHAT, limit=50,
                                                         options=FetchOptions(save=False))
        assert [m.msg_id for m in theirs.items] == [m.msg_id for m in sent]

    backend.run(main)


def test_deleting_a_conversation_with_its_history_deletes_it_for_everyone(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        await texts(b, alice, bob.id, 3)
        await alice.client.delete_conversation_from_server(bob.id, ChatType.CHAT)
        assert alice.store.conversation(bob.id) is None
        for peer, other in ((alice, bob), (bob, alice)):
            page = await peer.client.fetch_history_messages(other.id, ChatType.CHAT, limit=50,
                                                            options=FetchOptions(save=False))
            assert page.items == []
        convs = await bob.client.fetch_conversations_from_server(limit=50)
        assert alice.id not in [c.conv_id for c in convs.items]
        again = await alice.client.send_message(Message.text(bob.id, "a new start"))
        await b.until(lambda: bob.store.get_message(again.msg_id) is not None, "a new message")

    backend.run(main)


def test_deleting_a_conversation_but_not_its_history_keeps_the_history(backend: Harness):

    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = await texts(b, alice, bob.id, 2)
        await alice.client.delete_conversation_from_server(bob.id, ChatType.CHAT,
                                                           delete_messages=False)
        convs = await alice.client.fetch_conversations_from_server(limit=50)
        assert bob.id not in [c.conv_id for c in convs.items]
        page = await alice.client.fetch_history_messages(bob.id, ChatType.CHAT, limit=50,
                                                         options=FetchOptions(save=False))
        assert [m.msg_id for m in page.items] == [m.msg_id for m in sent]

    backend.run(main)


# ---------------------------------------------------------------------------- recall, edit


def test_recall_reaches_the_peer_and_history(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = await alice.client.send_message(Message.text(bob.id, "oops"))
        await b.until(lambda: bob.store.get_message(sent.msg_id) is not None, "delivery")
        when = await alice.transport.recall_message(alice.store.get_message(sent.msg_id))
        assert when >= (sent.server_time or 0)
        await b.until(lambda: bob.rec.kinds("recalled"), "the recall at bob")
        page = await bob.transport.fetch_history(alice.id, ChatType.CHAT, None, 10,
                                                 FetchOptions(save=False))
        (got,) = page.items
        assert got.msg_id == sent.msg_id and got.body == TextBody("")
        assert getattr(got, "recalled_at", None) is not None

    backend.run(main)


def test_recall_through_the_client(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = await alice.client.send_message(Message.text(bob.id, "take it back"))
        await b.until(lambda: bob.store.get_message(sent.msg_id) is not None, "delivery")
        await alice.client.recall_message(sent.msg_id)
        await b.until(lambda: getattr(bob.store.get_message(sent.msg_id), "recalled_at", None),
                      "the recall notice at bob")
        assert bob.store.search_messages("take") == []

    backend.run(main)


def test_edit_reaches_the_peer_and_history(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = await alice.client.send_message(Message.text(bob.id, "helo"))
        card = await alice.client.send_message(Message.custom(bob.id, "card", {"v": "1"}))
        await b.until(lambda: bob.store.message_count(alice.id) == 2, "delivery")
        at = await alice.transport.edit_message(alice.store.get_message(sent.msg_id),
                                                TextBody("hello"))
        await alice.transport.edit_message(alice.store.get_message(card.msg_id),
                                           CustomBody("card", {"v": "2"}))
        assert at >= (sent.server_time or 0)
        with pytest.raises(IMError) as err:
            await alice.transport.edit_message(
                alice.store.get_message(sent.msg_id).__class__.location(bob.id, 1.0, 2.0),
                TextBody("x"))
        assert err.value.code in (ErrorCode.INVALID_PARAM, ErrorCode.MESSAGE_INVALID)
        page = await bob.transport.fetch_history(alice.id, ChatType.CHAT, None, 10,
                                                 FetchOptions(save=False))
        assert [m.body for m in page.items] == [TextBody("hello"), CustomBody("card", {"v": "2"})]
        assert getattr(page.items[0], "edited_at", at) == at
        await b.until(lambda: bob.rec.kinds("edited"), "the edit at bob")

    backend.run(main)


def test_edit_through_the_client(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = await alice.client.send_message(Message.text(bob.id, "teh plan"))
        await b.until(lambda: bob.store.get_message(sent.msg_id) is not None, "delivery")
        await alice.client.edit_message(sent.msg_id, TextBody("the plan"))

        def edited() -> bool:
            m = bob.store.get_message(sent.msg_id)
            return m is not None and m.body == TextBody("the plan")

        await b.until(edited, "the edit at bob")
        assert [m.msg_id for m in bob.store.search_messages("plan")] == [sent.msg_id]

    backend.run(main)


# ---------------------------------------------------------------------- server read state


def test_history_carries_the_users_read_position(backend: Harness):

    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        sent = await texts(b, alice, bob.id, 3)
        await b.until(lambda: bob.store.message_count(alice.id) == 3, "delivery")
        await bob.client.ack_message_read(sent[1].msg_id)
        await b.settle()
        page = await bob.transport.fetch_history(alice.id, ChatType.CHAT, None, 10,
                                                 FetchOptions(save=False))
        assert [m.is_read for m in page.items] == [True, True, False]

    backend.run(main)


# ------------------------------------------------------------------------------- retention


def test_history_past_the_retention_period_is_gone(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        await texts(b, alice, bob.id, 2)
        await b.expire_history(alice, bob.id, ChatType.CHAT)
        page = None

        async def fetch() -> None:
            nonlocal page
            page = await bob.client.fetch_history_messages(alice.id, ChatType.CHAT, limit=10,
                                                           options=FetchOptions(save=False))

        await fetch()
        for _ in range(100):  # a real server applies a new policy within moments
            if page is not None and page.items == []:
                break
            await b.settle()
            await fetch()
        assert page is not None and page.items == []

    backend.run(main)


def test_the_conversation_list_carries_the_servers_unread_count(backend: Harness):

    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        # the conversation exists and bob is in it (Matrix counts what arrives after a join)
        await alice.client.send_message(Message.text(bob.id, "hi"))
        await b.until(lambda: bob.store.message_count(alice.id) == 1, "the first message")
        await bob.client.ack_conversation_read(alice.id)
        await texts(b, alice, bob.id, 3)

        async def unread() -> int:
            page = await bob.transport.fetch_conversations(None, 10)
            return next(c.unread_count for c in page.items if c.conv_id == alice.id)

        got = -1
        for _ in range(200):  # the server counts asynchronously; bounded
            got = await unread()
            if got == 3:
                break
            await b.settle()
            await asyncio.sleep(0.02)
        assert got == 3
        await bob.client.ack_conversation_read(alice.id)
        for _ in range(200):
            got = await unread()
            if got == 0:
                break
            await b.settle()
            await asyncio.sleep(0.02)
        assert got == 0

    backend.run(main)


def test_load_messages_fills_the_gaps_of_a_new_device(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        await b.offline(bob)
        sent = [m.msg_id for m in await texts(b, alice, bob.id, 12)]
        await bob.client.fetch_conversations_from_server(limit=20)
        got: list[str] = []
        start = None
        for _ in range(10):
            page = await bob.client.load_messages(alice.id, ChatType.CHAT, start_msg_id=start,
                                                  limit=5)
            if not page:
                break
            got = [m.msg_id for m in page] + got
            start = page[0].msg_id
        assert got == sent

    backend.run(main)


def test_start_up_order_keeps_unread_counts(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        await b.offline(bob)
        await texts(b, alice, bob.id, 3)
        await bob.client.fetch_conversations_from_server(limit=20)
        await b.online(bob)
        await b.until(lambda: bob.store.message_count(alice.id) == 3, "three messages at bob")
        await b.until(lambda: bob.store.unread_count(alice.id) == 3, "three unread")
        assert len(bob.rec.received_ids()) == 3

    backend.run(main)
