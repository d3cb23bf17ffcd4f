"""Rich messages and conversation state in the store: relations, threads, reactions, pins,
captions, formatted text, local data, conversation title/pin/marks/draft, change listeners."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import imstore
from imstore import (
    ChatType,
    ConversationMark,
    Direction,
    ErrorCode,
    IMError,
    Message,
    MessageListener,
    MessageStore,
    MessageType,
    Reaction,
    ThreadSummary,
)
from imstore.codec import Limits, body_from_dict, body_to_dict, decode_body, encode_body
from imstore.message import FileBody, ImageBody, TextBody
from imstore.store import Changes

from .conftest import Pair
from .test_validation import HOSTILE


def recv(text: str, peer: str = "bob", ts: int | None = None, **kw) -> Message:
    return Message.text("alice", text, sender=peer, timestamp=ts, **kw)


def group(text: str, sender: str = "carol", ts: int | None = None, **kw) -> Message:
    return Message.text("team", text, chat_type=ChatType.GROUP_CHAT, sender=sender,
                        timestamp=ts, **kw)


def texts(msgs) -> list[str]:
    return [m.body.text for m in msgs]


# ------------------------------------------------------------------------------ values, codec


def test_reply_thread_and_local_ext_round_trip(store: MessageStore):
    root = store.insert_message(recv("root", ts=1, msg_id="r"))
    m = store.insert_message(recv("quote", ts=2, reply_to=root.msg_id,
                                  local_ext={"note": "ask later"}))
    got = store.get_message(m.msg_id)
    assert (got.reply_to, got.thread_id, got.local_ext) == ("r", None, {"note": "ask later"})
    assert got == m


def test_formatted_text_and_caption_round_trip():
    t = TextBody("bold", formatted="<b>bold</b>")
    assert decode_body(MessageType.TEXT, encode_body(t)) == t
    img = ImageBody(remote_url="mxc://x", display_name="p.png", caption="our beach")
    assert decode_body(MessageType.IMAGE, encode_body(img)) == img


def test_empty_new_fields_encode_as_before():
    # a body that does not use the new fields is byte-for-byte what the previous format wrote
    assert body_to_dict(TextBody("hi")) == {"text": "hi"}
    assert "caption" not in body_to_dict(FileBody(remote_url="u", display_name="f"))


def test_old_payloads_decode_and_unknown_fields_survive():
    body = body_from_dict(MessageType.TEXT, {"text": "x", "from_v9": [1, 2]})
    assert body == TextBody("x", extra={"from_v9": [1, 2]})
    assert body_to_dict(body) == {"from_v9": [1, 2], "text": "x"}


def test_local_ext_is_outside_the_payload_limit(store: MessageStore):
    # 3,000 characters of text and a 100-character note: the note does not count
    m = store.insert_message(recv("x" * 3000, local_ext={"note": "n" * 100}))
    assert store.get_message(m.msg_id).local_ext == {"note": "n" * 100}


def test_local_ext_has_its_own_limit(store: MessageStore):
    with pytest.raises(IMError) as err:
        store.insert_message(recv("hi", local_ext={"blob": "x" * (64 * 1024)}))
    assert err.value.code == ErrorCode.MESSAGE_SIZE_LIMIT
    assert store.conversations() == []


def test_set_local_ext_replaces_and_clears(store: MessageStore):
    m = store.insert_message(recv("hi"))
    assert store.set_local_ext(m.msg_id, {"starred": True}).local_ext == {"starred": True}
    assert store.set_local_ext(m.msg_id, None).local_ext == {}


@pytest.mark.parametrize("call, code", [
    (lambda s: s.set_local_ext("nope", {}), ErrorCode.MESSAGE_INVALID),
    (lambda s: s.set_local_ext("m", "text"), ErrorCode.INVALID_PARAM),
    (lambda s: s.set_local_ext("m", {1: 2}), ErrorCode.INVALID_PARAM),
    (lambda s: s.set_local_ext("m", {"b": "x" * 70_000}), ErrorCode.MESSAGE_SIZE_LIMIT),
    (lambda s: s.insert_message(recv("x", reply_to="")), ErrorCode.INVALID_PARAM),
    (lambda s: s.insert_message(recv("x", thread_id=5)), ErrorCode.INVALID_PARAM),
])
def test_bad_local_data_and_relations_are_refused(store: MessageStore, call, code):
    store.insert_message(recv("hi", msg_id="m"))
    with pytest.raises(IMError) as err:
        call(store)
    assert err.value.code == code
    assert store.get_message("m").local_ext == {}


def test_a_bigger_local_limit_is_kept_with_the_store(tmp_path: Path):
    big = Limits(max_local_ext_bytes=200_000)
    imstore.open(tmp_path / "s", user_id="alice", limits=big).close()
    with imstore.open(tmp_path / "s", user_id="alice") as s:
        assert s.limits.max_local_ext_bytes == 200_000
        m = s.insert_message(recv("hi", local_ext={"b": "x" * 100_000}))
        assert len(s.get_message(m.msg_id).local_ext["b"]) == 100_000


def test_caption_is_searched_by_default(store: MessageStore):
    body = ImageBody(remote_url="mxc://x", display_name="IMG_1.jpg", caption="sunset 海边")
    store.insert_message(Message.of(MessageType.IMAGE, "alice", body, sender="bob"))
    assert [m.body.caption for m in store.search_messages("sunset")] == ["sunset 海边"]
    assert len(store.search_messages("海边")) == 1


def test_formatted_html_is_not_searched(store: MessageStore):
    store.insert_message(recv("plain words", formatted="<em>plain</em> words"))
    assert store.search_messages("em") == []
    assert len(store.search_messages("plain")) == 1


# ------------------------------------------------------------------------------------ threads


def test_thread_replies_stay_out_of_the_main_timeline(store: MessageStore):
    store.insert_message(group("root", ts=10, msg_id="root"))
    store.insert_message(group("in thread", ts=20, thread_id="root"))
    store.insert_message(group("after", ts=15))
    assert texts(store.messages("team")) == ["root", "after"]
    assert texts(store.thread_messages("root")) == ["in thread"]
    assert store.conversation("team").last_message.body.text == "after"


def test_a_thread_reply_is_never_the_last_message(store: MessageStore):
    store.insert_message(group("root", ts=10, msg_id="root"))
    store.import_messages([group("r1", ts=30, thread_id="root"), group("main", ts=20)])
    conv = store.conversation("team")
    assert (conv.last_message.body.text, conv.last_activity) == ("main", 20)


def test_thread_replies_count_unread_and_reading_the_conversation_reads_them(store):
    store.insert_message(group("root", ts=10, msg_id="root"))
    store.insert_message(group("reply", ts=11, thread_id="root"))
    assert store.unread_count("team") == 2
    store.mark_conversation_read("team")
    assert store.unread_count("team") == 0
    assert all(m.is_read for m in store.thread_messages("root"))


def test_thread_messages_page_like_messages(store: MessageStore):
    store.insert_message(group("root", ts=1, msg_id="root"))
    replies = [group(f"r{i}", ts=100 + i // 3, thread_id="root") for i in range(12)]
    store.import_messages(replies)
    assert texts(store.thread_messages("root", limit=3)) == ["r9", "r10", "r11"]
    older = store.thread_messages("root", start_msg_id=replies[9].msg_id, limit=4)
    assert texts(older) == ["r5", "r6", "r7", "r8"]
    newer = store.thread_messages("root", start_msg_id=replies[1].msg_id, limit=2,
                                  direction=Direction.DOWN)
    assert texts(newer) == ["r2", "r3"]


def test_threads_newest_first_with_counts(store: MessageStore):
    store.import_messages([group("a", ts=1, msg_id="a"), group("b", ts=2, msg_id="b"),
                           group("a1", ts=3, thread_id="a"), group("b1", ts=4, thread_id="b"),
                           group("a2", ts=5, thread_id="a")])
    got = store.threads("team")
    assert [(t.root, t.reply_count, t.last_reply.body.text) for t in got] == \
        [("a", 2, "a2"), ("b", 1, "b1")]
    assert isinstance(got[0], ThreadSummary)
    assert store.threads("team", limit=1)[0].root == "a"


def test_deleting_replies_keeps_the_summary(store: MessageStore):
    store.import_messages([group("a", ts=1, msg_id="a"), group("a1", ts=2, thread_id="a",
                                                                msg_id="a1"),
                           group("a2", ts=3, thread_id="a", msg_id="a2")])
    store.delete_message("a2")
    assert [(t.reply_count, t.last_reply.msg_id) for t in store.threads("team")] == [(1, "a1")]
    store.delete_message("a1")
    assert store.threads("team") == []


def test_a_thread_whose_root_is_not_stored_is_listed(store: MessageStore):
    store.insert_message(group("reply first", ts=5, thread_id="unseen-root"))
    assert [t.root for t in store.threads("team")] == ["unseen-root"]


def test_a_sent_root_takes_its_replies_and_thread_along_to_its_server_id(store: MessageStore):
    root = store.insert_message(Message.text("team", "root", chat_type=ChatType.GROUP_CHAT))
    local = root.msg_id
    quote = store.insert_message(Message.text("team", "quote", chat_type=ChatType.GROUP_CHAT,
                                              reply_to=local))
    mine = store.insert_message(Message.text("team", "in thread",
                                             chat_type=ChatType.GROUP_CHAT, thread_id=local))
    theirs = store.insert_message(group("peer, already on the server id", ts=9, thread_id="S1",
                                        msg_id="p1"))
    elsewhere = store.insert_message(recv("another conversation", reply_to=local))
    assert [t.root for t in store.threads("team")] == [local, "S1"]
    store.mark_sent(local, "S1", 5)
    assert store.get_message(quote.msg_id).reply_to == "S1"
    assert [m.msg_id for m in store.thread_messages("S1")] == [theirs.msg_id, mine.msg_id]
    assert [(t.root, t.reply_count, t.last_reply.msg_id) for t in store.threads("team")] == \
        [("S1", 2, mine.msg_id)]
    assert store.thread_messages(local) == []
    assert store.get_message(elsewhere.msg_id).reply_to == local  # not this conversation's
    assert store.get_message(local).msg_id == "S1"  # the local id still finds the root
    assert store.verify().ok


# ---------------------------------------------------------------------------------- reactions


def test_reactions_count_senders_and_mine(store: MessageStore):
    m = store.insert_message(recv("hi", ts=1))
    store.apply_reaction(m.msg_id, "👍", "bob", timestamp=10)
    store.apply_reaction(m.msg_id, "❤️", "carol", timestamp=11)
    after = store.apply_reaction(m.msg_id, "👍", timestamp=12)  # the store's user
    assert after == [Reaction("👍", 2, ("bob", "alice"), True),
                     Reaction("❤️", 1, ("carol",), False)]
    assert store.reactions(m.msg_id) == after


def test_reacting_twice_changes_nothing(store: MessageStore):
    m = store.insert_message(recv("hi"))
    assert store.apply_reaction(m.msg_id, "👍", "bob") is not None
    assert store.apply_reaction(m.msg_id, "👍", "bob") is None
    assert store.reactions(m.msg_id)[0].count == 1


def test_a_reaction_is_removed_by_its_server_id(store: MessageStore):
    m = store.insert_message(recv("hi"))
    store.apply_reaction(m.msg_id, "👍", "bob", reaction_id="$ev1")
    assert store.reaction_id(m.msg_id, "👍", "bob") == "$ev1"
    assert store.apply_reaction_removal_by_id("$ev1") == (m.msg_id, [])
    assert store.apply_reaction_removal_by_id("$ev1") is None


def test_the_echo_of_ones_own_reaction_gives_it_its_id(store: MessageStore):
    m = store.insert_message(recv("hi"))
    store.apply_reaction(m.msg_id, "👍")
    assert store.apply_reaction(m.msg_id, "👍", reaction_id="$mine") is None
    assert store.reaction_id(m.msg_id, "👍") == "$mine"


def test_removing_a_reaction(store: MessageStore):
    m = store.insert_message(recv("hi"))
    store.apply_reaction(m.msg_id, "👍", "bob")
    store.apply_reaction(m.msg_id, "👍", "carol")
    assert store.apply_reaction_removal(m.msg_id, "👍", "bob") == \
        [Reaction("👍", 1, ("carol",), False)]
    assert store.apply_reaction_removal(m.msg_id, "👍", "bob") is None


def test_reactions_are_not_messages(store: MessageStore):
    m = store.insert_message(recv("hi", is_read=True))
    store.apply_reaction(m.msg_id, "👍", "bob")
    assert store.unread_count("bob") == 0
    assert len(store.messages("bob")) == 1


def test_a_reaction_to_a_message_not_stored_is_not_kept(store: MessageStore):
    assert store.apply_reaction("unknown", "👍", "bob") is None
    assert store.reactions("unknown") == []


def test_deleting_a_message_deletes_its_reactions(store: MessageStore):
    m = store.insert_message(recv("hi", ts=1))
    store.apply_reaction(m.msg_id, "👍", "bob")
    store.delete_message(m.msg_id)
    n = store.insert_message(recv("takes the row id", ts=2))  # row ids may be reused
    assert store.reactions(n.msg_id) == []
    assert store.verify().ok


def test_reactions_follow_the_message_to_its_server_id(store: MessageStore):
    m = store.insert_message(Message.text("bob", "mine", timestamp=5))
    store.apply_reaction(m.msg_id, "👍", "bob")
    store.mark_sent(m.msg_id, "$server", 6)
    assert store.reactions("$server")[0].senders == ("bob",)


def test_senders_are_listed_up_to_a_limit_and_counted_in_full(store: MessageStore):
    m = store.insert_message(recv("popular"))
    for i in range(30):
        store.apply_reaction(m.msg_id, "🎉", f"user{i:02}", timestamp=100 + i)
    (r,) = store.reactions(m.msg_id)
    assert r.count == 30 and r.senders == tuple(f"user{i:02}" for i in range(20))


def test_reaction_records_list_every_sender_with_id_and_time(store: MessageStore):
    from imstore import ReactionRecord

    m = store.insert_message(recv("popular", ts=1))
    n = store.insert_message(recv("quiet", ts=2))
    for i in range(25):
        store.apply_reaction(m.msg_id, "🎉", f"user{i:02}", reaction_id=f"$r{i}",
                             timestamp=100 + i)
    store.apply_reaction(n.msg_id, "👍", timestamp=50)
    records = store.reaction_records([m.msg_id, "unknown", n.msg_id])
    assert records[:2] == [ReactionRecord(m.msg_id, "🎉", "user00", "$r0", 100),
                           ReactionRecord(m.msg_id, "🎉", "user01", "$r1", 101)]
    assert len(records) == 26 and store.reactions(m.msg_id)[0].count == 25
    assert records[-1] == ReactionRecord(n.msg_id, "👍", "alice", None, 50)
    assert store.reaction_records([]) == []
    with pytest.raises(IMError) as err:
        store.reaction_records("not a list")
    assert err.value.code == ErrorCode.INVALID_PARAM


# ------------------------------------------------------------------------------ pinned messages


def test_pinned_messages_newest_pin_first(store: MessageStore):
    a = store.insert_message(recv("a", ts=1))
    b = store.insert_message(recv("b", ts=2))
    assert store.apply_message_pin(a.msg_id, timestamp=20, pinned_by="bob")
    assert store.apply_message_pin(b.msg_id, timestamp=10)
    assert not store.apply_message_pin(b.msg_id, timestamp=30)  # already pinned
    assert texts(store.pinned_messages("bob")) == ["a", "b"]
    assert [(p.msg_id, p.pinned_at, p.pinned_by) for p in store.pin_records("bob")] == [
        (a.msg_id, 20, "bob"), (b.msg_id, 10, None)]
    assert store.apply_message_pin(a.msg_id, pinned=False)
    assert texts(store.pinned_messages("bob")) == ["b"]
    assert not store.apply_message_pin("unknown")


# ------------------------------------------------------------------------- conversation state


def test_pinned_conversations_list_first_newest_pin_first(store: MessageStore):
    for i, peer in enumerate(["p1", "p2", "p3", "p4"]):
        store.insert_message(recv("x", peer=peer, ts=100 + i))
    store.pin_conversation("p1", timestamp=5)
    store.pin_conversation("p2", timestamp=7)
    assert [c.conv_id for c in store.conversations()] == ["p2", "p1", "p4", "p3"]
    assert store.conversation("p2").pinned_at == 7
    store.pin_conversation("p2", False)
    assert [c.conv_id for c in store.conversations()] == ["p1", "p4", "p3", "p2"]


def test_pinning_again_keeps_the_place(store: MessageStore):
    store.insert_message(recv("x"))
    assert store.pin_conversation("bob")
    at = store.conversation("bob").pinned_at
    assert not store.pin_conversation("bob")
    assert store.conversation("bob").pinned_at == at


def test_marks_add_remove_and_filter(store: MessageStore):
    for i, peer in enumerate(("p1", "p2", "p3")):
        store.insert_message(recv("x", peer=peer, ts=10 + i))
    assert store.set_conversation_marks("p1", add=["work", "star"]) == {"work", "star"}
    store.set_conversation_marks("p2", add="work")
    assert [c.conv_id for c in store.conversations(marks="work")] == ["p2", "p1"]
    assert [c.conv_id for c in store.conversations(marks=["work", "star"])] == ["p1"]
    assert store.set_conversation_marks("p1", remove="work") == {"star"}
    assert store.conversation("p1").marks == {"star"}
    assert store.conversations(marks="nothing") == []


def test_a_mark_filter_finds_only_whole_marks(store: MessageStore):
    store.insert_message(recv("x"))
    store.set_conversation_marks("bob", add="workshop")
    assert store.conversations(marks="work") == []


def test_mark_unread_shows_a_badge_that_reading_clears(store: MessageStore):
    store.insert_message(recv("x", is_read=True))
    assert store.mark_conversation_unread("bob")
    conv = store.conversation("bob")
    assert ConversationMark.UNREAD in conv.marks and conv.unread_count == 0
    assert store.total_unread_count() == 0  # counts messages only
    store.mark_conversation_read("bob")
    assert store.conversation("bob").marks == frozenset()


@pytest.mark.parametrize("read", [
    lambda s, m: s.mark_message_read(m.msg_id),
    lambda s, m: s.mark_all_conversations_read(),
    lambda s, m: s.mark_conversation_read("bob", up_to_msg_id=m.msg_id),
])
def test_every_way_of_reading_clears_the_unread_mark(store: MessageStore, read):
    m = store.insert_message(recv("x"))
    store.set_conversation_marks("bob", add=[ConversationMark.UNREAD, "star"])
    read(store, m)
    assert store.conversation("bob").marks == {"star"}


def test_draft_and_title(store: MessageStore):
    store.insert_message(recv("x"))
    assert store.set_draft("bob", "half a thought")
    assert not store.set_draft("bob", "half a thought")
    assert store.set_conversation_title("bob", "Bob 鲍勃")
    conv = store.conversation("bob")
    assert (conv.draft, conv.title) == ("half a thought", "Bob 鲍勃")
    store.set_draft("bob", None)
    store.set_conversation_title("bob", "")
    conv = store.conversation("bob")
    assert (conv.draft, conv.title) == (None, None)


@pytest.mark.parametrize("call, code", [
    (lambda s: s.pin_conversation("nobody"), ErrorCode.CONVERSATION_NOT_EXIST),
    (lambda s: s.set_draft("nobody", "x"), ErrorCode.CONVERSATION_NOT_EXIST),
    (lambda s: s.set_conversation_title("nobody", "x"), ErrorCode.CONVERSATION_NOT_EXIST),
    (lambda s: s.set_conversation_marks("nobody", add="x"), ErrorCode.CONVERSATION_NOT_EXIST),
    (lambda s: s.mark_conversation_unread("nobody"), ErrorCode.CONVERSATION_NOT_EXIST),
    (lambda s: s.pin_conversation("bob", "yes"), ErrorCode.INVALID_PARAM),
    (lambda s: s.pin_conversation("bob", timestamp=-1), ErrorCode.INVALID_PARAM),
    (lambda s: s.set_conversation_marks("bob", add=""), ErrorCode.INVALID_PARAM),
    (lambda s: s.set_conversation_marks("bob", add="a\x1fb"), ErrorCode.INVALID_PARAM),
    (lambda s: s.set_conversation_marks("bob", add="m" * 65), ErrorCode.INVALID_PARAM),
    (lambda s: s.set_conversation_marks("bob", add=[str(i) for i in range(33)]),
     ErrorCode.INVALID_PARAM),
    (lambda s: s.set_conversation_marks("bob", add=5), ErrorCode.INVALID_PARAM),
    (lambda s: s.conversations(marks=[""]), ErrorCode.INVALID_PARAM),
    (lambda s: s.set_draft("bob", b"bytes"), ErrorCode.INVALID_PARAM),
    (lambda s: s.set_conversation_title("bob", "t" * 1025), ErrorCode.INVALID_PARAM),
    (lambda s: s.apply_reaction("m", ""), ErrorCode.INVALID_PARAM),
    (lambda s: s.apply_reaction("m", "👍", 7), ErrorCode.INVALID_PARAM),
    (lambda s: s.apply_message_pin("m", pinned=1), ErrorCode.INVALID_PARAM),
    (lambda s: s.thread_messages("root", limit=0), ErrorCode.QUERY_PARAM_REACHES_LIMIT),
    (lambda s: s.thread_messages("root", start_msg_id="nope"), ErrorCode.INVALID_PARAM),
    (lambda s: s.threads("bob", limit=401), ErrorCode.QUERY_PARAM_REACHES_LIMIT),
    (lambda s: s.add_change_listener("not callable"), ErrorCode.INVALID_PARAM),
])
def test_bad_conversation_state_is_refused_and_changes_nothing(store: MessageStore, call, code):
    store.insert_message(recv("x", msg_id="m"))
    before = store.conversation("bob")
    with pytest.raises(IMError) as err:
        call(store)
    assert err.value.code == code
    assert store.conversation("bob") == before


# --------------------------------------------------------------------------- change listeners


def listen(store: MessageStore) -> list[Changes]:
    heard: list[Changes] = []
    store.add_change_listener(heard.append)
    return heard


def test_a_received_message_is_heard_once_with_the_new_total(store: MessageStore):
    heard = listen(store)
    store.insert_message(recv("x"))
    assert heard == [Changes(frozenset({"bob"}), 1)]


def test_a_batch_over_several_conversations_is_heard_once(store: MessageStore):
    heard = listen(store)
    store.import_messages([recv("a", peer="p1", is_read=False), recv("b", peer="p2")])
    assert heard == [Changes(frozenset({"p1", "p2"}), 1)]


@pytest.mark.parametrize("change", [
    lambda s: s.pin_conversation("bob"),
    lambda s: s.set_conversation_marks("bob", add="star"),
    lambda s: s.set_draft("bob", "d"),
    lambda s: s.set_conversation_title("bob", "t"),
    lambda s: s.set_conversation_ext("bob", {"k": "v"}),
])
def test_state_changes_are_heard_without_a_total(store: MessageStore, change):
    store.insert_message(recv("x", is_read=True))
    heard = listen(store)
    change(store)
    assert heard == [Changes(frozenset({"bob"}), None)]


def test_reading_is_heard_with_the_new_total(store: MessageStore):
    store.insert_message(recv("x"))
    store.insert_message(recv("y", peer="carol"))
    heard = listen(store)
    store.mark_conversation_read("bob")
    assert heard == [Changes(frozenset({"bob"}), 1)]


def test_nothing_is_heard_when_nothing_changed(store: MessageStore):
    store.insert_message(recv("x"))
    heard = listen(store)
    store.mark_all_conversations_read()
    store.mark_all_conversations_read()
    store.set_draft("bob", None)
    assert heard == [Changes(frozenset({"bob"}), 0)]


def test_a_rolled_back_write_is_not_heard(store: MessageStore):
    store.insert_message(recv("x", msg_id="dup"))
    heard = listen(store)
    with pytest.raises(IMError):
        store.insert_message(recv("again", msg_id="dup"))
    assert heard == []


def test_chat_rooms_do_not_move_the_total(store: MessageStore):
    heard = listen(store)
    store.insert_message(Message.text("room", "hi", chat_type=ChatType.CHAT_ROOM, sender="bob"))
    assert heard == [Changes(frozenset({"room"}), None)]


def test_deleting_a_conversation_is_heard(store: MessageStore):
    store.insert_message(recv("x"))
    heard = listen(store)
    store.delete_conversation("bob")
    assert heard == [Changes(frozenset({"bob"}), 0)]


def test_a_listener_that_raises_does_not_undo_the_write(store: MessageStore):
    def boom(_changes: Changes) -> None:
        raise RuntimeError("listener bug")

    store.add_change_listener(boom)
    store.insert_message(recv("kept"))
    assert store.message_count("bob") == 1


def test_a_removed_listener_hears_nothing(store: MessageStore):
    heard: list[Changes] = []
    store.add_change_listener(heard.append)
    store.remove_change_listener(heard.append)
    store.insert_message(recv("x"))
    assert heard == []


def test_listeners_hear_writes_of_every_thread_on_disk(disk_store: MessageStore):
    import threading

    heard = listen(disk_store)
    t = threading.Thread(target=lambda: disk_store.insert_message(recv("from a thread")))
    t.start()
    t.join()
    disk_store.insert_message(recv("from here", peer="carol"))
    assert [c.conversations for c in heard] == [frozenset({"bob"}), frozenset({"carol"})]


def test_listeners_hear_an_encrypted_store(tmp_path: Path):
    pytest.importorskip("sqlcipher3", reason="encryption needs imstore[crypto]")
    with imstore.open(tmp_path / "s", user_id="alice", key=bytes(range(32))) as s:
        heard = listen(s)
        s.insert_message(recv("secret"))
        s.pin_conversation("bob")
    assert heard == [Changes(frozenset({"bob"}), 1), Changes(frozenset({"bob"}), None)]


# ------------------------------------------------------------------------------------ verify


def test_verify_repairs_thread_summaries_and_reaction_counts(store: MessageStore):
    store.import_messages([group("a", ts=1, msg_id="a"), group("a1", ts=2, thread_id="a")])
    store.apply_reaction("a", "👍", "bob")
    run = store.connection.execute
    run("UPDATE thread SET reply_count = 7")
    run("UPDATE reaction_count SET count = 3")
    report = store.verify()
    assert report.repaired["thread_summaries"] == 1
    assert report.repaired["reaction_counts"] == 1
    assert store.threads("team")[0].reply_count == 1
    assert store.reactions("a")[0].count == 1
    assert store.verify().ok


# ------------------------------------------------------------- derived state under random ops


class RichModel(RuleBasedStateMachine):
    """Thread summaries, reaction counts, last messages and unread counts against a plain model,
    under random inserts (main and thread), deletes, reactions and reads."""

    def __init__(self) -> None:
        super().__init__()
        self.store = imstore.open(":memory:", user_id="alice", search=False)
        self.msgs: dict[str, tuple[int, str | None, bool]] = {}  # id -> (time, thread, unread)
        self.reacts: dict[str, set[tuple[str, str]]] = {}  # id -> {(key, sender)}
        self.n = 0

    def teardown(self) -> None:
        self.store.close()

    @rule(t=st.integers(0, 20), in_thread=st.booleans(), read=st.booleans())
    def insert(self, t: int, in_thread: bool, read: bool) -> None:
        roots = [i for i, (_, th, _) in self.msgs.items() if th is None]
        thread = roots[t % len(roots)] if in_thread and roots else None
        self.n += 1
        m = group(f"m{self.n}", ts=t, msg_id=f"id{self.n}", thread_id=thread, is_read=read)
        self.store.insert_message(m)
        self.msgs[m.msg_id] = (t, thread, not read)

    @rule(k=st.integers(0, 50))
    def delete(self, k: int) -> None:
        if self.msgs:
            victim = sorted(self.msgs)[k % len(self.msgs)]
            self.store.delete_message(victim)
            del self.msgs[victim]
            self.reacts.pop(victim, None)

    @rule(k=st.integers(0, 50), key=st.sampled_from(["👍", "❤️"]),
          who=st.sampled_from(["alice", "bob"]), add=st.booleans())
    def react(self, k: int, key: str, who: str, add: bool) -> None:
        if not self.msgs:
            return
        target = sorted(self.msgs)[k % len(self.msgs)]
        have = self.reacts.setdefault(target, set())
        if add:
            self.store.apply_reaction(target, key, who)
            have.add((key, who))
        else:
            self.store.apply_reaction_removal(target, key, who)
            have.discard((key, who))

    @rule()
    def read_all(self) -> None:
        if self.msgs:
            self.store.mark_conversation_read("team")
        self.msgs = {i: (t, th, False) for i, (t, th, _) in self.msgs.items()}

    @invariant()
    def derived_state_matches(self) -> None:
        s = self.store
        assert s.unread_count("team") == sum(u for _, _, u in self.msgs.values())
        main = [(t, int(i[2:]), i) for i, (t, th, _) in self.msgs.items() if th is None]
        conv = s.conversation("team")
        if conv is not None:
            last = conv.last_message
            assert (last.msg_id if last else None) == (max(main)[2] if main else None)
        replies: dict[str, list[tuple[int, int, str]]] = {}
        for i, (t, th, _) in self.msgs.items():
            if th is not None:
                replies.setdefault(th, []).append((t, int(i[2:]), i))
        got = {t.root: (t.reply_count, t.last_reply.msg_id) for t in s.threads("team", limit=400)}
        assert got == {r: (len(v), max(v)[2]) for r, v in replies.items()}
        for msg_id, pairs in self.reacts.items():
            want = {k: {w for kk, w in pairs if kk == k} for k, _ in pairs}
            assert {r.key: set(r.senders) for r in s.reactions(msg_id)} == want
            assert {r.key: r.count for r in s.reactions(msg_id)} == {k: len(v)
                                                                    for k, v in want.items()}


TestRichModel = RichModel.TestCase
TestRichModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


# --------------------------------------------------------------------------- hostile arguments

RICH_VALID: dict[str, Any] = {
    "root_msg_id": "m1", "msg_id": "m1", "conv_id": "bob", "start_msg_id": None, "limit": 5,
    "direction": Direction.UP, "key": "👍", "sender": None, "reaction_id": None,
    "timestamp": None, "pinned": True, "pinned_by": None, "data": {"a": 1}, "add": ("x",),
    "remove": (), "text": "draft", "title": "T", "chat_type": None, "marks": None,
}
# method -> (its parameters, how many are positional)
RICH_CALLS: dict[str, tuple[tuple[str, ...], int]] = {
    "thread_messages": (("root_msg_id", "start_msg_id", "limit", "direction"), 1),
    "threads": (("conv_id", "limit"), 1),
    "reactions": (("msg_id",), 1),
    "apply_reaction": (("msg_id", "key", "sender", "reaction_id", "timestamp"), 3),
    "apply_reaction_removal": (("msg_id", "key", "sender"), 3),
    "apply_reaction_removal_by_id": (("reaction_id",), 1),
    "reaction_id": (("msg_id", "key", "sender"), 3),
    "pinned_messages": (("conv_id",), 1),
    "apply_message_pin": (("msg_id", "pinned", "pinned_by", "timestamp"), 1),
    "set_local_ext": (("msg_id", "data"), 2),
    "pin_conversation": (("conv_id", "pinned", "timestamp"), 2),
    "set_conversation_marks": (("conv_id", "add", "remove"), 1),
    "mark_conversation_unread": (("conv_id",), 1),
    "set_draft": (("conv_id", "text"), 2),
    "set_conversation_title": (("conv_id", "title"), 2),
    "conversations": (("chat_type", "marks", "limit"), 0),
}


@pytest.fixture(scope="module")
def hostile_target() -> Any:
    s = imstore.open(":memory:", user_id="alice")
    s.insert_message(Message.text("alice", "hello", sender="bob", msg_id="m1", timestamp=1))
    yield s
    s.close()


@pytest.mark.parametrize(("method", "param"),
                         [(m, p) for m, (ps, _) in RICH_CALLS.items() for p in ps])
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=HOSTILE)
def test_a_hostile_argument_raises_only_imerror(hostile_target: MessageStore, method: str,
                                                param: str, value: Any):
    names, npos = RICH_CALLS[method]
    args = {n: (value if n == param else RICH_VALID.get(n)) for n in names}
    fn = getattr(hostile_target, method)
    try:
        fn(*[args[n] for n in names[:npos]], **{n: args[n] for n in names[npos:]})
    except IMError:
        pass


# ------------------------------------------------------------------ the client's listeners


class Badges(MessageListener):
    def __init__(self) -> None:
        self.changed: list[list[str]] = []
        self.totals: list[int] = []

    def on_conversations_changed(self, conv_ids: list[str]) -> None:
        self.changed.append(conv_ids)

    def on_total_unread_changed(self, total: int) -> None:
        self.totals.append(total)


def test_the_client_tells_conversation_and_total_unread_changes(pair: Pair):
    heard = Badges()
    pair.cb.add_listener(heard)

    async def main() -> None:
        await pair.ca.send_message(Message.text("bob", "hi"))
        await pair.settle()

    asyncio.run(main())
    assert ["alice"] in heard.changed and heard.totals == [1]
    before = len(heard.changed)
    pair.b.mark_conversation_read("alice")
    assert heard.changed[before:] == [["alice"]] and heard.totals == [1, 0]
    pair.b.set_draft("alice", "typing…")
    assert heard.changed[-1] == ["alice"] and heard.totals == [1, 0]


def test_a_closed_client_tells_nothing(pair: Pair):
    heard = Badges()
    pair.cb.add_listener(heard)
    pair.cb.close()
    pair.b.insert_message(Message.text("bob", "local", sender="carol"))
    assert heard.changed == [] and heard.totals == []
