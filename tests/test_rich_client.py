"""Rich messages end to end through ChatClient and MemoryServer: replies and threads kept in
history, reactions, message pins, conversation pins and marks, the listeners that announce them,
offline members, new devices, and forgeries that change nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import imstore
from imstore import (
    ChatClient,
    ChatType,
    ConversationMark,
    ErrorCode,
    IMError,
    MemoryServer,
    Message,
    MessageListener,
    Reaction,
)
from imstore.adapters import ConversationState, HistoryPage, PinEvent, ReactionEvent, SendResult
from imstore.message import TextBody

from .conftest import Clients, Clock, Pair


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Heard(MessageListener):
    """The rich-message events a listener hears, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_reactions_changed(self, msg_id: str, reactions: list[Reaction]) -> None:
        self.events.append(("reactions", msg_id, [(r.key, r.count) for r in reactions]))

    def on_pinned_messages_changed(self, conv_id: str, messages: list[Message]) -> None:
        self.events.append(("pins", conv_id, [m.msg_id for m in messages]))

    def on_conversations_changed(self, conv_ids: list[str]) -> None:
        self.events.append(("conversations", tuple(conv_ids)))

    def on_total_unread_changed(self, total: int) -> None:
        self.events.append(("total", total))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e[1:] for e in self.events if e[0] == kind]


def listen(client: ChatClient) -> Heard:
    heard = Heard()
    client.add_listener(heard)
    return heard


async def hello(pair: Pair, text: str = "lunch?") -> Message:
    """alice says something to bob; both have it."""
    sent = await pair.ca.send_message(Message.text("bob", text))
    await pair.settle()
    return sent


def counts(store: imstore.MessageStore, msg_id: str) -> list[tuple[str, int, bool]]:
    return [(r.key, r.count, r.mine) for r in store.reactions(msg_id)]


# ------------------------------------------------------------------------ replies, threads


def test_a_reply_keeps_what_it_quotes_both_ways(pair: Pair):
    async def main() -> None:
        root = await hello(pair)
        reply = await pair.cb.send_message(
            Message.text("alice", "yes", formatted="<b>yes</b>", reply_to=root.msg_id))
        await pair.settle()
        got = pair.a.get_message(reply.msg_id)
        assert got is not None and got.reply_to == root.msg_id
        assert got.body == TextBody("yes", "<b>yes</b>")
        assert [m.body.text for m in pair.a.messages("bob")] == ["lunch?", "yes"]

    run(main())


def test_a_reply_to_a_local_id_names_the_server_id(pair: Pair, clock: Clock):
    server = pair.server
    first = server.post(Message.text("bob", "root", sender="alice", msg_id="local-1"))
    reply = server.post(Message.text("bob", "re", sender="alice", msg_id="local-2",
                                     reply_to="local-1", thread_id="local-1"))
    assert (reply.reply_to, reply.thread_id) == (first.msg_id, first.msg_id)
    other = server.post(Message.text("alice", "re", sender="bob", reply_to="local-1"))
    assert other.reply_to == "local-1"  # only the sender's own local ids are its messages


def test_replies_sent_before_their_root_went_out_name_its_server_id_everywhere(pair: Pair):
    async def main() -> None:
        root = Message.text("bob", "root")
        local = root.msg_id
        reply = Message.text("bob", "quote", reply_to=local)
        inner = Message.text("bob", "in thread", thread_id=local)
        sent = await asyncio.gather(*(pair.ca.send_message(m) for m in (root, reply, inner)))
        await pair.settle()
        server_id = sent[0].msg_id
        assert server_id != local
        for store in (pair.a, pair.b):  # the sender's own copies too
            assert store.get_message(sent[1].msg_id).reply_to == server_id
            assert [m.msg_id for m in store.thread_messages(server_id)] == [sent[2].msg_id]
            assert [(t.root, t.reply_count) for t in store.threads("bob" if store is pair.a
                                                                   else "alice")] == \
                [(server_id, 1)]

    run(main())


def test_a_thread_reply_stays_out_of_the_main_timeline(pair: Pair):
    async def main() -> None:
        root = await hello(pair)
        reply = await pair.cb.send_message(Message.text("alice", "which place?",
                                                        thread_id=root.msg_id))
        await pair.settle()
        assert [m.body.text for m in pair.a.messages("bob")] == ["lunch?"]
        assert [m.msg_id for m in pair.a.thread_messages(root.msg_id)] == [reply.msg_id]
        [summary] = pair.a.threads("bob")
        assert (summary.root, summary.reply_count) == (root.msg_id, 1)
        # the server's list names the main timeline's last message, not the thread reply
        listed = (await pair.server.connect("alice").fetch_conversations(None, 20)).items
        assert listed[0].last_message is not None
        assert listed[0].last_message.msg_id == root.msg_id

    run(main())


def test_history_keeps_relations_formatting_and_captions(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)
    pic = tmp_path / "pic.png"
    pic.write_bytes(b"\x89PNG" + bytes(100))

    async def main() -> None:
        alice = ChatClient(imstore.open(":memory:", user_id="alice"), server.connect("alice"),
                           download_dir=str(tmp_path / "a"))
        root = await alice.send_message(Message.text("bob", "plain", formatted="<i>plain</i>"))
        await alice.send_message(Message.image("bob", pic, caption="the menu",
                                               reply_to=root.msg_id))
        await alice.send_message(Message.text("bob", "in thread", thread_id=root.msg_id))
        # bob's first device: everything from history
        bob_store = imstore.open(":memory:", user_id="bob")
        bob = ChatClient(bob_store, server.connect("bob"), download_dir=str(tmp_path / "b"),
                         auto_download=False)
        await bob.fetch_history_messages("alice", ChatType.CHAT,
                                         options=imstore.FetchOptions(save=True))
        [text, image] = bob_store.messages("alice")
        assert text.body == TextBody("plain", "<i>plain</i>")
        assert (image.body.caption, image.reply_to) == ("the menu", root.msg_id)
        [thread] = bob_store.thread_messages(root.msg_id)
        assert thread.body.text == "in thread"
        assert bob_store.search_messages("menu")[0].msg_id == image.msg_id
        alice.store.close()
        bob_store.close()

    run(main())


# ------------------------------------------------------------------------------ reactions


def test_a_reaction_is_seen_by_the_peer_and_counted_once(pair: Pair):
    heard_a, heard_b = listen(pair.ca), listen(pair.cb)

    async def main() -> None:
        msg = await hello(pair)
        after = await pair.cb.add_reaction(msg.msg_id, "👍")
        assert [(r.key, r.count, r.mine) for r in after] == [("👍", 1, True)]
        await pair.cb.add_reaction(msg.msg_id, "👍")  # again: nothing changes
        await pair.settle()
        assert counts(pair.a, msg.msg_id) == [("👍", 1, False)]
        assert pair.a.reactions(msg.msg_id)[0].senders == ("bob",)
        await pair.ca.add_reaction(msg.msg_id, "👍")
        await pair.settle()
        assert counts(pair.a, msg.msg_id) == [("👍", 2, True)]
        assert counts(pair.b, msg.msg_id) == [("👍", 2, True)]
        await pair.cb.remove_reaction(msg.msg_id, "👍")
        await pair.settle()
        assert counts(pair.a, msg.msg_id) == [("👍", 1, True)]
        assert counts(pair.b, msg.msg_id) == [("👍", 1, False)]
        # each change heard once, on each side
        steps = [[("👍", 1)], [("👍", 2)], [("👍", 1)]]
        assert heard_a.of("reactions") == [(msg.msg_id, s) for s in steps]
        assert heard_b.of("reactions") == [(msg.msg_id, s) for s in steps]
        # reactions are not messages: nothing unread, no page item
        assert pair.a.unread_count("bob") == 0 and len(pair.b.messages("alice")) == 1

    run(main())


def test_taking_back_a_reaction_one_never_made_changes_nothing(pair: Pair):
    async def main() -> None:
        msg = await hello(pair)
        assert await pair.cb.remove_reaction(msg.msg_id, "👍") == []
        await pair.ca.add_reaction(msg.msg_id, "🎉")
        await pair.settle()
        assert counts(pair.b, msg.msg_id) == [("🎉", 1, False)]
        assert await pair.cb.remove_reaction(msg.msg_id, "🎉") == pair.b.reactions(msg.msg_id)
        await pair.settle()
        assert counts(pair.a, msg.msg_id) == [("🎉", 1, True)]

    run(main())


@pytest.mark.parametrize(("msg_id", "key", "code"), [
    ("nope", "👍", ErrorCode.MESSAGE_INVALID),
    (None, "", ErrorCode.INVALID_PARAM),
    (None, 5, ErrorCode.INVALID_PARAM),
    (None, "x" * 65, ErrorCode.INVALID_PARAM),
])
def test_a_bad_reaction_is_refused_and_changes_nothing(pair: Pair, msg_id: Any, key: Any,
                                                      code: ErrorCode):
    async def main() -> None:
        msg = await hello(pair)
        with pytest.raises(IMError) as e:
            await pair.cb.add_reaction(msg_id or msg.msg_id, key)
        assert e.value.code == code
        await pair.settle()
        assert pair.a.reactions(msg.msg_id) == pair.b.reactions(msg.msg_id) == []

    run(main())


def test_a_message_not_on_the_server_takes_no_reaction_or_pin(pair: Pair):
    async def main() -> None:
        pair.server.disconnect("alice", reconnect=False)
        with pytest.raises(IMError):
            await pair.ca.send_message(Message.text("bob", "lost"))
        [failed] = pair.a.messages("bob")
        for call in (pair.ca.add_reaction(failed.msg_id, "👍"),
                     pair.ca.pin_message(failed.msg_id)):
            with pytest.raises(IMError) as e:
                await call
            assert e.value.code == ErrorCode.INVALID_PARAM
        assert pair.a.reactions(failed.msg_id) == [] and pair.a.pinned_messages("bob") == []

    run(main())


# ------------------------------------------------------------------------- message pins


def test_a_pinned_message_is_pinned_for_the_peer(pair: Pair):
    heard_b = listen(pair.cb)

    async def main() -> None:
        msg = await hello(pair)
        assert await pair.ca.pin_message(msg.msg_id) is True
        assert await pair.ca.pin_message(msg.msg_id) is False  # already pinned
        await pair.settle()
        assert [m.msg_id for m in pair.b.pinned_messages("alice")] == [msg.msg_id]
        await pair.cb.pin_message(msg.msg_id, pinned=False)
        await pair.settle()
        assert pair.a.pinned_messages("bob") == pair.b.pinned_messages("alice") == []
        assert heard_b.of("pins") == [("alice", [msg.msg_id]), ("alice", [])]

    run(main())


# -------------------------------------------------------------------- conversation state


def test_a_conversation_pin_and_marks_live_on_the_server(pair: Pair, tmp_path: Path):
    async def main() -> None:
        await hello(pair)
        assert await pair.ca.pin_conversation("bob") is True
        assert await pair.ca.set_conversation_marks("bob", add=["work", "later"],
                                                    remove="later") == {"work"}
        conv = pair.a.conversation("bob")
        assert conv is not None and conv.pinned and conv.marks == {"work"}
        # the peer's conversation is its own
        peer = pair.b.conversation("alice")
        assert peer is not None and not peer.pinned and not peer.marks
        # a new device of alice's starts from the server's list
        store = imstore.open(":memory:", user_id="alice")
        fresh = ChatClient(store, pair.server.connect("alice"), download_dir=str(tmp_path / "n"))
        [listed] = (await fresh.fetch_conversations_from_server()).items
        assert listed.pinned_at == conv.pinned_at and listed.marks == {"work"}
        await fresh.pin_conversation("bob", pinned=False)
        assert not store.conversation("bob").pinned
        store.close()

    run(main())


def test_marked_unread_until_read(pair: Pair):
    async def main() -> None:
        await hello(pair)
        await pair.cb.ack_conversation_read("alice")
        await pair.cb.mark_conversation_unread("alice")
        assert ConversationMark.UNREAD in pair.b.conversation("alice").marks
        assert pair.b.total_unread_count() == 0
        await pair.cb.ack_conversation_read("alice")
        assert ConversationMark.UNREAD not in pair.b.conversation("alice").marks
        [listed] = (await pair.server.connect("bob").fetch_conversations(None, 20)).items
        assert ConversationMark.UNREAD not in listed.marks  # the server's mark went too

    run(main())


def test_state_from_another_device_is_applied_whole_and_heard_once(pair: Pair):
    heard = listen(pair.ca)

    async def main() -> None:
        await hello(pair)
        heard.events.clear()
        # what alice's other device does reaches this one as the conversation's state
        pair.server.rich.pin_conversation("alice", "bob", ChatType.CHAT, True)
        pair.server.rich.set_marks("alice", "bob", ChatType.CHAT, ["work"], [])
        await pair.settle()
        conv = pair.a.conversation("bob")
        assert conv.pinned and conv.marks == {"work"}
        assert heard.of("conversations") == [(("bob",),), (("bob",),)]
        pair.server.rich.set_marks("alice", "bob", ChatType.CHAT, [], ["work"])
        pair.server.rich.pin_conversation("alice", "bob", ChatType.CHAT, False)
        await pair.settle()
        conv = pair.a.conversation("bob")
        assert not conv.pinned and not conv.marks
        assert heard.of("total") == []

    run(main())


def test_a_state_for_a_conversation_not_here_makes_it(pair: Pair):
    pair.ca.on_conversation_states([ConversationState("carol", ChatType.CHAT, 5, frozenset({"x"})),
                                    ConversationState("carol", ChatType.CHAT, 7, frozenset())])
    conv = pair.a.conversation("carol")
    assert conv is not None and conv.pinned_at == 7 and not conv.marks  # the newest one


@pytest.mark.parametrize(("call", "code"), [
    (lambda c: c.pin_conversation("nobody"), ErrorCode.CONVERSATION_NOT_EXIST),
    (lambda c: c.pin_conversation("bob", pinned="yes"), ErrorCode.INVALID_PARAM),
    (lambda c: c.set_conversation_marks("bob", add=[""]), ErrorCode.INVALID_PARAM),
    (lambda c: c.set_conversation_marks("bob", add=3), ErrorCode.INVALID_PARAM),
    (lambda c: c.set_conversation_marks("bob", add=[f"m{i}" for i in range(33)]),
     ErrorCode.INVALID_PARAM),
    (lambda c: c.pin_message("bob"), ErrorCode.MESSAGE_INVALID),
])
def test_bad_conversation_state_is_refused_and_changes_nothing(pair: Pair, call: Any,
                                                               code: ErrorCode):
    async def main() -> None:
        await hello(pair)
        before = pair.a.conversation("bob")
        with pytest.raises(IMError) as e:
            await call(pair.ca)
        assert e.value.code == code
        assert pair.a.conversation("bob") == before
        [listed] = (await pair.server.connect("alice").fetch_conversations(None, 20)).items
        assert listed.pinned_at is None and not listed.marks

    run(main())


# ------------------------------------------------------------------- listeners, offline


def test_each_change_is_heard_once_after_it_is_stored(pair: Pair):
    seen: list[Any] = []

    class Checking(MessageListener):
        def on_reactions_changed(self, msg_id: str, reactions: list[Reaction]) -> None:
            seen.append(("reactions", pair.b.reactions(msg_id) == reactions))

        def on_pinned_messages_changed(self, conv_id: str, messages: list[Message]) -> None:
            seen.append(("pins", pair.b.pinned_messages(conv_id) == messages))

    pair.cb.add_listener(Checking())

    async def main() -> None:
        msg = await hello(pair)
        await pair.ca.add_reaction(msg.msg_id, "👍")
        await pair.ca.pin_message(msg.msg_id)
        await pair.ca.add_reaction(msg.msg_id, "👍")
        await pair.ca.pin_message(msg.msg_id)
        await pair.settle()
        assert seen == [("reactions", True), ("pins", True)]

    run(main())


def test_an_offline_peer_gets_reactions_and_pins_on_reconnection(pair: Pair):
    heard_b = listen(pair.cb)

    async def main() -> None:
        msg = await hello(pair)
        pair.server.disconnect("bob")
        await pair.ca.add_reaction(msg.msg_id, "👍")
        await pair.ca.add_reaction(msg.msg_id, "🎉")
        await pair.ca.remove_reaction(msg.msg_id, "👍")
        await pair.ca.pin_message(msg.msg_id)
        assert pair.b.reactions(msg.msg_id) == [] and pair.b.pinned_messages("alice") == []
        pair.server.restore("bob")
        await pair.settle()
        assert counts(pair.b, msg.msg_id) == [("🎉", 1, False)]
        assert [m.msg_id for m in pair.b.pinned_messages("alice")] == [msg.msg_id]
        # the kept events come as one batch: one announcement per message and conversation
        assert heard_b.of("reactions") == [(msg.msg_id, [("🎉", 1)])]
        assert heard_b.of("pins") == [("alice", [msg.msg_id])]

    run(main())


def test_a_new_member_sees_reactions_and_pins_in_history(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)
    server.create_group("team", ["alice", "bob"])

    async def main() -> None:
        alice = ChatClient(imstore.open(":memory:", user_id="alice"), server.connect("alice"),
                           download_dir=str(tmp_path / "a"))
        team = dict(chat_type=ChatType.GROUP_CHAT)
        root = await alice.send_message(Message.text("team", "vote", **team))
        other = await alice.send_message(Message.text("team", "other", **team))
        await alice.add_reaction(root.msg_id, "👍")
        await alice.add_reaction(other.msg_id, "👎")
        await alice.remove_reaction(other.msg_id, "👎")
        await alice.pin_message(root.msg_id)
        server.join("team", "carol")
        store = imstore.open(":memory:", user_id="carol")
        carol = ChatClient(store, server.connect("carol"), download_dir=str(tmp_path / "c"))
        heard = listen(carol)
        await carol.fetch_history_messages("team", ChatType.GROUP_CHAT,
                                           options=imstore.FetchOptions(save=True))
        assert counts(store, root.msg_id) == [("👍", 1, False)]
        assert store.reactions(other.msg_id) == []
        assert [m.msg_id for m in store.pinned_messages("team")] == [root.msg_id]
        assert heard.of("reactions") == [(root.msg_id, [("👍", 1)])]
        # a pin that went while the page was away goes here too; the next page says so
        await alice.pin_message(root.msg_id, pinned=False)
        store.apply_message_pin(other.msg_id)
        await carol.fetch_history_messages("team", ChatType.GROUP_CHAT,
                                           options=imstore.FetchOptions(save=True))
        alice.store.close()
        assert store.pinned_messages("team") == []
        store.close()

    run(main())


# ------------------------------------------------------------------------------- forgery


def test_a_forged_reaction_removal_changes_nothing(pair: Pair):
    async def main() -> None:
        msg = await hello(pair)
        await pair.ca.add_reaction(msg.msg_id, "👍")
        await pair.settle()
        theirs = pair.b.reaction_id(msg.msg_id, "👍", "alice")
        assert theirs is not None
        with pytest.raises(IMError) as e:  # bob's connection takes back alice's reaction
            await pair.server.connect("bob").remove_reaction(msg, theirs)
        assert e.value.code == ErrorCode.INVALID_PARAM
        # a transport that says bob took back alice's reaction is not believed either
        pair.cb.on_reactions([ReactionEvent(msg.msg_id, "👍", "bob", theirs, removed=True)])
        await pair.settle()
        assert counts(pair.a, msg.msg_id) == [("👍", 1, True)]
        assert counts(pair.b, msg.msg_id) == [("👍", 1, False)]

    run(main())


def test_a_forged_edit_changes_nothing(pair: Pair):
    async def main() -> None:
        msg = await hello(pair)
        with pytest.raises(IMError) as e:  # bob's connection edits alice's message
            await pair.server.connect("bob").edit_message(msg, TextBody("forged"))
        assert e.value.code == ErrorCode.INVALID_PARAM
        forged = pair.b.get_message(msg.msg_id)
        forged.body, forged.sender, forged.edited_at = TextBody("forged"), "carol", 1
        pair.cb.on_messages_edited([forged])
        await pair.settle()
        assert pair.a.get_message(msg.msg_id).body.text == "lunch?"
        assert pair.b.get_message(msg.msg_id).body.text == "lunch?"

    run(main())


# ---------------------------------------------------------------------- the protocol's edges


class BareTransport:
    """A transport with only the two required methods."""

    def attach(self, handler: Any) -> None:
        self.handler = handler

    async def send(self, message: Message) -> SendResult:
        return SendResult("S" + message.msg_id, 1_700_000_000_000)


@pytest.mark.parametrize("name", ["send_reaction", "remove_reaction", "pin_message",
                                  "pin_conversation", "set_conversation_marks"])
def test_a_transport_without_the_method_is_service_not_enabled(name: str):
    store = imstore.open(":memory:", user_id="alice")
    client = ChatClient(store, pair_history(), transport=BareTransport())  # type: ignore[arg-type]

    async def main() -> None:
        msg = await client.send_message(Message.text("bob", "hi"))
        store.apply_reaction(msg.msg_id, "👍", reaction_id="r1")
        calls = {"send_reaction": client.add_reaction(msg.msg_id, "🎉"),
                 "remove_reaction": client.remove_reaction(msg.msg_id, "👍"),
                 "pin_message": client.pin_message(msg.msg_id),
                 "pin_conversation": client.pin_conversation("bob"),
                 "set_conversation_marks": client.set_conversation_marks("bob", add="x")}
        for other, coro in calls.items():
            if other != name:
                coro.close()
        with pytest.raises(IMError) as e:
            await calls[name]
        assert e.value.code == ErrorCode.SERVICE_NOT_ENABLED and name in str(e.value)
        assert counts(store, msg.msg_id) == [("👍", 1, True)]
        assert store.pinned_messages("bob") == [] and not store.conversation("bob").marks

    run(main())
    store.close()


def pair_history() -> Any:
    return MemoryServer().connect("alice")


def test_a_handler_without_the_new_methods_still_works(pair: Pair):
    class OldHandler:
        def __init__(self) -> None:
            self.got: list[str] = []

        def on_messages(self, messages: list[Message]) -> None:
            self.got += [m.msg_id for m in messages]

        def on_connection_state_changed(self, state: Any) -> None:
            pass

    old = OldHandler()
    pair.server.connect("bob").attach(old)  # type: ignore[arg-type]

    async def main() -> None:
        msg = await pair.ca.send_message(Message.text("bob", "hi"))
        await pair.ca.add_reaction(msg.msg_id, "👍")
        await pair.ca.pin_message(msg.msg_id)
        assert old.got == [msg.msg_id]

    run(main())


def test_a_history_page_carries_reactions_and_pins(pair: Pair):
    async def main() -> None:
        msg = await hello(pair)
        await pair.cb.add_reaction(msg.msg_id, "👍")
        await pair.cb.pin_message(msg.msg_id)
        page = await pair.server.connect("alice").fetch_history(
            "bob", ChatType.CHAT, None, 20, imstore.FetchOptions())
        assert isinstance(page, HistoryPage)
        [r] = page.reactions
        assert (r.msg_id, r.key, r.sender, r.removed) == (msg.msg_id, "👍", "bob", False)
        [p] = page.pins
        assert (p.msg_id, p.pinned, p.by) == (msg.msg_id, True, "bob")
        assert isinstance(p, PinEvent)

    run(main())


def test_what_the_store_refuses_is_skipped_and_the_rest_applies(pair: Pair, caplog):
    async def main() -> None:
        msg = await hello(pair)
        pair.cb.on_reactions([ReactionEvent(msg.msg_id, "", "carol", "R1"),
                              ReactionEvent(msg.msg_id, "👍", "carol", "R2")])
        pair.cb.on_conversation_states([ConversationState("alice", ChatType.CHAT, None,
                                                          frozenset({"bad\n"})),
                                        ConversationState("dave", ChatType.CHAT, 3)])
        assert counts(pair.b, msg.msg_id) == [("👍", 1, False)]
        assert not pair.b.conversation("alice").marks and pair.b.conversation("dave").pinned
        assert sum("ignored a" in r.message for r in caplog.records) == 2

    run(main())


def test_this_users_conversation_changes_are_heard_once_each(pair: Pair):
    heard = listen(pair.ca)

    async def main() -> None:
        await hello(pair)
        heard.events.clear()
        await pair.ca.pin_conversation("bob")
        await pair.ca.pin_conversation("bob")  # already pinned: nothing to hear
        await pair.ca.set_conversation_marks("bob", add="work")
        await pair.ca.mark_conversation_unread("bob")
        assert heard.events == [("conversations", ("bob",))] * 3

    run(main())


def test_a_read_of_one_message_clears_the_unread_mark_on_the_server(pair: Pair):
    async def main() -> None:
        msg = await hello(pair)
        await pair.cb.mark_conversation_unread("alice")
        await pair.cb.ack_message_read(msg.msg_id)
        assert not pair.b.conversation("alice").marks
        [listed] = (await pair.server.connect("bob").fetch_conversations(None, 20)).items
        assert not listed.marks

    run(main())


def test_the_list_does_not_bring_back_a_mark_read_away_here(tmp_path: Path, clock: Clock):
    server = MemoryServer(clock=clock)

    async def main() -> None:
        store = imstore.open(":memory:", user_id="bob")
        bob = ChatClient(store, server.connect("bob"), require_read_ack=False,
                         download_dir=str(tmp_path))
        server.post(Message.text("bob", "hi", sender="alice"))
        await bob.mark_conversation_unread("alice")
        await bob.ack_conversation_read("alice")  # no receipt: the server keeps its mark
        await bob.fetch_conversations_from_server()
        assert not store.conversation("alice").marks
        store.close()

    run(main())


# ------------------------------------------------------------------ the user's other devices


class Devices(Clients):
    """alice on her desktop and her phone, bob on his one device, on one MemoryServer."""

    def __init__(self, tmp: Path, clock: Clock) -> None:
        self.server = MemoryServer(clock=clock)
        self.stores = {n: imstore.open(":memory:", user_id=n.split("-")[0])
                       for n in ("alice-desk", "alice-phone", "bob")}
        self.clients = {n: ChatClient(s, self.server.connect(n.split("-")[0],
                                                             "phone" if "phone" in n else None),
                                      send_timeout=0.5, download_dir=str(tmp / n))
                        for n, s in self.stores.items()}
        self.desk, self.phone, self.bob = (self.clients[n] for n in self.stores)


@pytest.fixture
def devices(tmp_path: Path, clock: Clock) -> Any:
    d = Devices(tmp_path, clock)
    yield d
    d.close()


def test_what_one_device_does_reaches_the_users_others(devices: Devices):
    d = devices
    heard_desk, heard_phone = listen(d.desk), listen(d.phone)

    async def main() -> None:
        msg = await d.bob.send_message(Message.text("alice", "lunch?"))
        await d.settle()
        await d.desk.add_reaction(msg.msg_id, "👍")
        await d.desk.pin_message(msg.msg_id)
        await d.desk.pin_conversation("bob")
        await d.desk.set_conversation_marks("bob", add="work")
        await d.settle()
        phone = d.phone.store
        assert counts(phone, msg.msg_id) == [("👍", 1, True)]
        assert counts(d.bob.store, msg.msg_id) == [("👍", 1, False)]
        assert [m.msg_id for m in phone.pinned_messages("bob")] == [msg.msg_id]
        conv = phone.conversation("bob")
        assert conv.pinned and conv.marks == {"work"}
        # each device hears each change once: the desk its own doing, the phone the server's word
        assert heard_desk.of("reactions") == heard_phone.of("reactions") == [
            (msg.msg_id, [("👍", 1)])]
        assert heard_desk.of("pins") == heard_phone.of("pins") == [("bob", [msg.msg_id])]
        await d.phone.remove_reaction(msg.msg_id, "👍")  # the phone knows the reaction's id
        await d.settle()
        assert d.desk.store.reactions(msg.msg_id) == d.bob.store.reactions(msg.msg_id) == []

    run(main())


def test_reading_on_one_device_clears_the_unread_mark_on_the_others(devices: Devices):
    d = devices

    async def main() -> None:
        await d.bob.send_message(Message.text("alice", "lunch?"))
        await d.settle()
        await d.phone.mark_conversation_unread("bob")
        await d.settle()
        assert ConversationMark.UNREAD in d.desk.store.conversation("bob").marks
        await d.desk.ack_conversation_read("bob")
        await d.settle()
        assert not d.phone.store.conversation("bob").marks
        assert d.phone.store.unread_count("bob") == 0

    run(main())


def test_a_conversation_deleted_for_everyone_is_not_brought_back_by_a_kept_state(
        devices: Devices):
    d = devices

    async def main() -> None:
        await d.bob.send_message(Message.text("alice", "lunch?"))
        await d.settle()
        d.server.disconnect("alice")
        d.server.rich.pin_conversation("alice", "bob", ChatType.CHAT, True)  # kept for both
        await d.bob.delete_conversation_from_server("alice", ChatType.CHAT)
        d.server.restore("alice")
        await d.settle()
        for device in (d.desk, d.phone):  # what was kept about it was taken back
            assert not device.store.conversation("bob").pinned
        assert (await d.server.connect("alice").fetch_conversations(None, 20)).items == []

    run(main())


class _NamedRooms:
    """A server's history API whose conversation list names its group (a Matrix room's
    m.room.name): the list is all it serves."""

    def __init__(self, title: str) -> None:
        self.title = title

    async def fetch_conversations(self, cursor: str | None, limit: int) -> Any:
        conv = imstore.Conversation("g-named", imstore.ChatType.GROUP_CHAT, 0, None, 5,
                                    title=self.title)
        return imstore.CursorResult([conv], None)


def test_the_servers_conversation_title_reaches_the_store(tmp_path: Path):
    with imstore.open(":memory:", user_id="alice") as store:
        client = imstore.ChatClient(store, _NamedRooms("Climbing club"),
                                    download_dir=str(tmp_path))
        try:
            listed = run(client.fetch_conversations_from_server())
            assert [c.title for c in listed.items] == ["Climbing club"]
            assert store.conversation("g-named").title == "Climbing club"
            renamed = _NamedRooms("Climbing club (2027)")  # renamed on the server
            client2 = imstore.ChatClient(store, renamed, download_dir=str(tmp_path))
            run(client2.fetch_conversations_from_server())
            assert store.conversation("g-named").title == "Climbing club (2027)"
            client2.close()
        finally:
            client.close()
