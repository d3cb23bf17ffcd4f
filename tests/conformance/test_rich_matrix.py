"""Issue 20 on Synapse with a Matrix client imstore did not write (matrix-nio): its replies,
threads, formatted text, captions, stickers, reactions, pins and unknown events reach imstore as
what they are; imstore's reach it as Matrix events it understands; a forged reaction removal
changes nothing. Only public names and the Matrix client-server API are used."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from imstore import ChatType, Message, MessageType
from imstore.message import CustomBody, ImageBody, TextBody

from .conftest import Harness, png_bytes

nio_peer = pytest.importorskip("tests.conformance.nio_peer",
                               reason="matrix-nio is not installed: pip install '.[test]'")
nio = pytest.importorskip("nio")

pytestmark = pytest.mark.slow


@pytest.fixture
def world(synapse: dict[str, Any], tmp_path: Path) -> Harness:
    return Harness("synapse", tmp_path, synapse)


def localpart(mxid: str) -> str:
    return mxid[1:].partition(":")[0]


async def send(peer: Any, room: str, kind: str, content: dict[str, Any]) -> str:
    answer = await peer.client.room_send(room, kind, content)
    assert isinstance(answer, nio.RoomSendResponse), f"nio: {kind} failed: {answer}"
    return str(answer.event_id)


async def upload(peer: Any, name: str) -> str:
    data = png_bytes()
    answer, _ = await peer.client.upload(io.BytesIO(data), content_type="image/png",
                                         filename=name, filesize=len(data))
    assert isinstance(answer, nio.UploadResponse), f"nio: upload failed: {answer}"
    return str(answer.content_uri)


async def said_hi(b: Any, w: Any) -> tuple[Any, Any, str, str]:
    """alice on imstore, bob on nio; bob opens a DM (both may redact there) and says hi."""
    (alice,) = await b.users("alice")
    bob = await w.user("bob")
    room = await bob.create_dm(alice.transport.mxid)
    hi = await bob.text(room, "hi")
    await b.until(lambda: alice.store.get_message(hi) is not None, "bob's hi")
    return alice, bob, room, hi


def test_what_another_client_sends_arrives_as_what_it_is(world: Harness):
    async def main(b: Any, w: Any) -> None:
        (alice,) = await b.users("alice")
        bob = await w.user("bob")
        room = await bob.create_dm(alice.transport.mxid)
        root = await send(bob, room, "m.room.message", {
            "msgtype": "m.text", "body": "lunch?", "format": "org.matrix.custom.html",
            "formatted_body": "<b>lunch?</b>"})
        reply = await bob.reply(room, root, "at noon")
        thread = await send(bob, room, "m.room.message", {
            "msgtype": "m.text", "body": "where?", "m.relates_to": {
                "rel_type": "m.thread", "event_id": root, "is_falling_back": True,
                "m.in_reply_to": {"event_id": root}}})
        url = await upload(bob, "menu.png")
        image = await send(bob, room, "m.room.message", {
            "msgtype": "m.image", "body": "the menu", "filename": "menu.png", "url": url,
            "info": {"mimetype": "image/png", "w": 2, "h": 2}})
        sticker = await send(bob, room, "m.sticker", {
            "body": "a cat", "url": url, "info": {"mimetype": "image/png", "w": 2, "h": 2}})
        poll = await send(bob, room, "org.example.poll", {"question": "pizza?", "answers": [1, 2]})
        await b.until(lambda: alice.store.get_message(poll) is not None, "bob's poll")
        got = {eid: alice.store.get_message(eid) for eid in (root, reply, thread, image, sticker,
                                                             poll)}
        assert got[root].body == TextBody("lunch?", "<b>lunch?</b>")
        assert (got[reply].reply_to, got[reply].thread_id) == (root, None)
        assert (got[thread].reply_to, got[thread].thread_id) == (None, root)
        assert [m.msg_id for m in alice.store.thread_messages(root)] == [thread]
        assert isinstance(got[image].body, ImageBody)
        assert (got[image].body.caption, got[image].body.display_name) == ("the menu",
                                                                           "menu.png")
        assert got[sticker].type == MessageType.IMAGE
        assert isinstance(got[poll].body, CustomBody) and got[poll].body.event == "org.example.poll"
        assert got[poll].body.params == {"question": "pizza?", "answers": "[1, 2]"}
        # history carries what live sync did: the same messages, the poll among them
        page = await alice.client.fetch_history_messages(localpart(bob.mxid), ChatType.CHAT,
                                                         limit=50)
        assert [m.msg_id for m in page.items] == [root, reply, thread, image, sticker, poll]
        assert page.items[-1].body == got[poll].body

    nio_peer.run(world, main)


def test_what_imstore_sends_is_what_another_client_reads(world: Harness, tmp_path: Path):
    async def main(b: Any, w: Any) -> None:
        alice, bob, room, hi = await said_hi(b, w)
        peer = localpart(bob.mxid)
        pic = tmp_path / "pic.png"
        pic.write_bytes(png_bytes())
        formatted = await alice.client.send_message(Message.text(peer, "hey", formatted="<i>hey</i>",
                                                                 reply_to=hi))
        threaded = await alice.client.send_message(Message.text(peer, "in thread", thread_id=hi))
        captioned = await alice.client.send_message(Message.image(peer, pic, caption="look"))
        await alice.client.add_reaction(hi, "👍")
        await alice.client.pin_message(hi)
        events = {ev["event_id"]: ev for ev in await bob.events(room)}
        c = events[formatted.msg_id]["content"]
        assert (c["format"], c["formatted_body"]) == ("org.matrix.custom.html", "<i>hey</i>")
        assert c["m.relates_to"] == {"m.in_reply_to": {"event_id": hi}}
        rel = events[threaded.msg_id]["content"]["m.relates_to"]
        assert (rel["rel_type"], rel["event_id"]) == ("m.thread", hi)
        c = events[captioned.msg_id]["content"]
        assert (c["msgtype"], c["body"], c["filename"]) == ("m.image", "look", "pic.png")
        (react,) = [ev for ev in events.values() if ev["type"] == "m.reaction"]
        assert (react["sender"], react["content"]["m.relates_to"]) == (
            alice.transport.mxid, {"rel_type": "m.annotation", "event_id": hi, "key": "👍"})
        pinned = (await bob.client.room_get_state_event(room, "m.room.pinned_events")).content
        assert pinned.get("pinned") == [hi]

    nio_peer.run(world, main)


def test_replies_made_before_their_root_went_out_reach_another_client_with_its_event_id(
        world: Harness):
    async def main(b: Any, w: Any) -> None:
        alice, bob, room, _ = await said_hi(b, w)
        peer = localpart(bob.mxid)
        root = Message.text(peer, "root")
        local = root.msg_id  # what the app has while the root is being sent
        sent = await asyncio.gather(*(alice.client.send_message(m) for m in (
            root, Message.text(peer, "quote", reply_to=local),
            Message.text(peer, "in thread", thread_id=local))))
        event_id = sent[0].msg_id
        assert event_id.startswith("$")
        events = {ev["event_id"]: ev for ev in await bob.events(room)}
        assert events[sent[1].msg_id]["content"]["m.relates_to"] == {
            "m.in_reply_to": {"event_id": event_id}}
        assert events[sent[2].msg_id]["content"]["m.relates_to"]["event_id"] == event_id
        assert alice.store.get_message(sent[1].msg_id).reply_to == event_id
        assert [m.msg_id for m in alice.store.thread_messages(event_id)] == [sent[2].msg_id]

    nio_peer.run(world, main)


def test_reactions_of_another_client_and_a_forged_removal(world: Harness):
    async def main(b: Any, w: Any) -> None:
        alice, bob, room, hi = await said_hi(b, w)
        theirs = await send(bob, room, "m.reaction", {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": hi, "key": "🎉"}})
        await b.until(lambda: [(r.key, r.senders) for r in alice.store.reactions(hi)]
                      == [("🎉", (localpart(bob.mxid),))], "bob's reaction")
        assert alice.store.reaction_id(hi, "🎉", localpart(bob.mxid)) == theirs
        await alice.client.add_reaction(hi, "👍")
        mine = alice.store.reaction_id(hi, "👍")
        assert mine is not None
        await bob.redact(room, mine)  # bob takes back alice's reaction: a forgery here
        await bob.redact(room, theirs)  # bob takes back his own
        marker = await bob.text(room, "done")
        await b.until(lambda: alice.store.get_message(marker) is not None, "bob's marker")
        assert [(r.key, r.count, r.mine) for r in alice.store.reactions(hi)] == [("👍", 1, True)]

    nio_peer.run(world, main)


def test_pins_of_another_client_and_this_users_tags_on_another_device(world: Harness):
    async def main(b: Any, w: Any) -> None:
        alice, bob, room, hi = await said_hi(b, w)
        pin = await bob.client.room_put_state(room, "m.room.pinned_events", {"pinned": [hi]})
        assert isinstance(pin, nio.RoomPutStateResponse), pin
        await b.until(lambda: [m.msg_id for m in alice.store.pinned_messages(
            localpart(bob.mxid))] == [hi], "bob's pin")
        # alice's other client favourites the room and tags it
        other = await w.device(alice.transport.mxid, "pw-" + alice.id)
        base = f"/_matrix/client/v3/user/{alice.transport.mxid}/rooms/{room}"
        await other._raw("PUT", f"{base}/tags/m.favourite", {"order": 0.5})
        await other._raw("PUT", f"{base}/tags/u.work", {})
        await other._raw("PUT", f"{base}/account_data/m.marked_unread", {"unread": True})

        def state() -> tuple[bool, set[str]] | None:
            conv = alice.store.conversation(localpart(bob.mxid))
            return None if conv is None else (conv.pinned, set(conv.marks))

        await b.until(lambda: state() == (True, {"work", "unread"}), "alice's other client")
        assert alice.store.conversation(localpart(bob.mxid)).chat_type == ChatType.CHAT
        # reading clears the unread mark, on the server too
        await alice.client.ack_conversation_read(localpart(bob.mxid))
        await b.until(lambda: state() == (True, {"work"}), "reading to clear the mark")
        flag = await other._raw("GET", f"{base}/account_data/m.marked_unread", None)
        assert flag == {"unread": False}

    nio_peer.run(world, main)
