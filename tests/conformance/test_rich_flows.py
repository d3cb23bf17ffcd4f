"""Issue 20 on every backend: replies, threads, formatted text and captions kept both ways;
reactions and message pins seen by every member, offline ones when they come back; a user's
conversation pin and marks kept by the server; a forged reaction removal refused.

Only the `SyncAdapter`/`Transport` contract and `ChatClient` are used; on Synapse they run over
the Matrix mapping (``m.relates_to``, ``m.reaction``, ``m.room.pinned_events``, ``m.tag``,
``m.marked_unread``: docs/adapters.md, "Rich messages").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imstore import ChatType, ConversationMark, ErrorCode, IMError, Message, MessageListener, Reaction
from imstore.message import ImageBody, TextBody

from .conftest import Backend, Harness, Peer, png_bytes

pytestmark = pytest.mark.slow


def both() -> list[Any]:
    return ["memory", "synapse"]


class Reactions(MessageListener):
    """What ``on_reactions_changed`` told, in order."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, list[tuple[str, int]]]] = []

    def on_reactions_changed(self, msg_id: str, reactions: list[Reaction]) -> None:
        self.heard.append((msg_id, [(r.key, r.count) for r in reactions]))


def keys(peer: Peer, msg_id: str) -> list[tuple[str, int, bool]]:
    return [(r.key, r.count, r.mine) for r in peer.store.reactions(msg_id)]


async def said(b: Backend, sender: Peer, receiver: Peer, msg: Message) -> Message:
    """``sender`` sends ``msg``; returns it once ``receiver`` has it."""
    sent = await sender.client.send_message(msg)
    await b.until(lambda: receiver.store.get_message(sent.msg_id) is not None,
                  f"{receiver.id} to receive {sent.msg_id}")
    got = receiver.store.get_message(sent.msg_id)
    assert got is not None
    return got


@pytest.mark.parametrize("backend", both(), indirect=True)
def test_replies_threads_formatting_and_captions_reach_the_peer(backend: Harness, tmp_path: Path):
    pic = tmp_path / "pic.png"
    pic.write_bytes(png_bytes())

    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        root = await said(b, alice, bob, Message.text(bob.id, "lunch?", formatted="<b>lunch?</b>"))
        assert root.body == TextBody("lunch?", "<b>lunch?</b>")
        reply = await said(b, bob, alice, Message.text(alice.id, "yes", reply_to=root.msg_id))
        assert reply.reply_to == root.msg_id
        thread = await said(b, bob, alice, Message.text(alice.id, "where?",
                                                         thread_id=root.msg_id))
        assert thread.thread_id == root.msg_id
        assert [m.msg_id for m in alice.store.thread_messages(root.msg_id)] == [thread.msg_id]
        assert thread.msg_id not in [m.msg_id for m in alice.store.messages(bob.id)]
        image = await said(b, alice, bob, Message.image(bob.id, pic, caption="the menu"))
        assert isinstance(image.body, ImageBody) and image.body.caption == "the menu"

    backend.run(main)


@pytest.mark.parametrize("backend", both(), indirect=True)
def test_a_reaction_reaches_the_peer_once_and_goes_away(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        heard = Reactions()
        bob.client.add_listener(heard)
        msg = await said(b, alice, bob, Message.text(bob.id, "vote"))
        await alice.client.add_reaction(msg.msg_id, "👍")
        await alice.client.add_reaction(msg.msg_id, "👍")
        await b.until(lambda: keys(bob, msg.msg_id) == [("👍", 1, False)], "the reaction")
        await bob.client.add_reaction(msg.msg_id, "👍")
        await b.until(lambda: keys(alice, msg.msg_id) == [("👍", 2, True)], "two reactions")
        await alice.client.remove_reaction(msg.msg_id, "👍")
        await b.until(lambda: keys(bob, msg.msg_id) == [("👍", 1, True)], "the removal")
        assert heard.heard == [(msg.msg_id, [("👍", 1)]), (msg.msg_id, [("👍", 2)]),
                               (msg.msg_id, [("👍", 1)])]
        assert bob.store.unread_count(alice.id) == 1  # the message only: reactions are not

    backend.run(main)


@pytest.mark.parametrize("backend", both(), indirect=True)
def test_a_pinned_message_is_pinned_for_every_member(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob, carol = await b.users("alice", "bob", "carol")
        team = await b.create_group(alice, "pins-" + alice.id, [bob, carol])
        group = dict(chat_type=ChatType.GROUP_CHAT)
        msg = await said(b, alice, carol, Message.text(team, "the plan", **group))
        await b.until(lambda: bob.store.get_message(msg.msg_id) is not None, "bob's copy")
        await bob.client.pin_message(msg.msg_id)

        def pinned(p: Peer) -> list[str]:
            return [m.msg_id for m in p.store.pinned_messages(team)]

        await b.until(lambda: pinned(alice) == pinned(carol) == [msg.msg_id], "the pin")
        await carol.client.pin_message(msg.msg_id, pinned=False)
        await b.until(lambda: pinned(alice) == pinned(bob) == [], "the unpin")

    backend.run(main)


@pytest.mark.parametrize("backend", both(), indirect=True)
def test_an_offline_member_gets_reactions_and_pins_when_back(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        msg = await said(b, alice, bob, Message.text(bob.id, "while you were away"))
        await b.offline(bob)
        await alice.client.add_reaction(msg.msg_id, "🎉")
        await alice.client.pin_message(msg.msg_id)
        await b.online(bob)
        await b.until(lambda: keys(bob, msg.msg_id) == [("🎉", 1, False)], "the reaction")
        await b.until(lambda: [m.msg_id for m in bob.store.pinned_messages(alice.id)]
                      == [msg.msg_id], "the pin")

    backend.run(main)


@pytest.mark.parametrize("backend", both(), indirect=True)
def test_a_conversation_pin_and_marks_are_the_users_own(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        await said(b, alice, bob, Message.text(bob.id, "hi"))
        assert await alice.client.pin_conversation(bob.id) is True
        assert await alice.client.set_conversation_marks(bob.id, add=["work"]) == {"work"}
        await alice.client.mark_conversation_unread(bob.id)
        conv = alice.store.conversation(bob.id)
        assert conv is not None and conv.pinned
        assert conv.marks == {"work", ConversationMark.UNREAD}
        listed = {c.conv_id: c for c in
                  (await alice.transport.fetch_conversations(None, 20)).items}
        assert listed[bob.id].pinned_at is not None
        assert listed[bob.id].marks == {"work", ConversationMark.UNREAD}
        await alice.client.ack_conversation_read(bob.id)
        await b.until(lambda: ConversationMark.UNREAD not in alice.store.conversation(bob.id).marks,
                      "reading to clear the unread mark")
        other = bob.store.conversation(alice.id)
        assert other is not None and not other.pinned and not other.marks

    backend.run(main)


@pytest.mark.parametrize("backend", both(), indirect=True)
def test_a_reaction_cannot_be_taken_back_by_someone_else(backend: Harness):
    async def main(b: Backend) -> None:
        alice, bob = await b.users("alice", "bob")
        msg = await said(b, alice, bob, Message.text(bob.id, "mine"))
        await alice.client.add_reaction(msg.msg_id, "👍")
        await b.until(lambda: keys(bob, msg.msg_id) == [("👍", 1, False)], "the reaction")
        theirs = bob.store.reaction_id(msg.msg_id, "👍", alice.id)
        assert theirs is not None
        with pytest.raises(IMError) as e:
            await bob.transport.remove_reaction(msg, theirs)
        assert e.value.code == ErrorCode.INVALID_PARAM
        await b.settle()
        assert keys(alice, msg.msg_id) == [("👍", 1, True)]
        assert keys(bob, msg.msg_id) == [("👍", 1, False)]

    backend.run(main)
