"""The Matrix adapter's rich messages, offline against canned answers: relations, formatted text,
captions, stickers and unknown events mapped both ways; reactions, message pins and this user's
conversation pin and marks sent as Matrix sends them and told to the handler as others did them;
a forged reaction removal or edit changes nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from imstore import ChatType, ConversationMark, ErrorCode, IMError, Message, MessageType
from imstore.adapters import ConversationState, PinEvent, ReactionEvent
from imstore.adapters.matrix import _mapping as mp
from imstore.adapters.matrix import _rich as rc
from imstore.message import CustomBody, FileBody, ImageBody, TextBody

from .matrix_canned import (
    BOB,
    DM,
    GROUP,
    ME,
    Homeserver,
    adapter,
    dm_rooms,
    group_room,
    is_list_sync,
    joined,
    msg_event,
    run,
    started,
)

DM_INFO = mp.RoomInfo(DM, "bob", ChatType.CHAT)
CAROL = "@carol:hs.test"


def received(ev: dict) -> Message:
    msg = mp.event_to_message(ev, DM_INFO, ME, "hs.test")
    assert msg is not None
    return msg


def sent_content(msg: Message) -> dict:
    return mp.message_content(msg)


def event(content: dict, kind: str = "m.room.message", eid: str = "$1", sender: str = BOB
          ) -> dict:
    return {"type": kind, "event_id": eid, "sender": sender, "origin_server_ts": 7,
            "content": content}


def reaction(eid: str, target: str, key: str, sender: str = BOB, **unsigned: object) -> dict:
    ev = event({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}},
               "m.reaction", eid, sender)
    if unsigned:
        ev["unsigned"] = dict(unsigned)
    return ev


def redaction(eid: str, target: str, sender: str = BOB) -> dict:
    return {"type": "m.room.redaction", "event_id": eid, "sender": sender,
            "origin_server_ts": 9, "redacts": target, "content": {}}


# ------------------------------------------------------------------------------- the mapping


def test_formatted_text_is_matrix_html_both_ways():
    content = sent_content(Message.text("bob", "lunch?", formatted="<b>lunch?</b>"))
    assert (content["body"], content["format"], content["formatted_body"]) == (
        "lunch?", mp.HTML, "<b>lunch?</b>")
    assert received(event(content)).body == TextBody("lunch?", "<b>lunch?</b>")
    plain = sent_content(Message.text("bob", "plain"))
    assert "format" not in plain and "formatted_body" not in plain
    other = received(event({"msgtype": "m.text", "body": "x", "format": "text/markdown",
                            "formatted_body": "*x*"}))
    assert other.body == TextBody("x")  # only HTML is a formatted body


def test_a_caption_is_the_body_of_a_file_event_whose_filename_differs(tmp_path):
    pic = tmp_path / "pic.png"
    pic.write_bytes(b"\x89PNG")
    msg = Message.image("bob", pic, caption="the menu")
    msg.body.remote_url = "mxc://hs.test/abc"
    content = sent_content(msg)
    assert (content["body"], content["filename"]) == ("the menu", "pic.png")
    body = received(event(content)).body
    assert isinstance(body, ImageBody) and (body.caption, body.display_name) == ("the menu",
                                                                               "pic.png")
    # another client's file without a caption, and one whose caption is its file name
    bare = received(event({"msgtype": "m.file", "body": "a.pdf", "filename": "a.pdf",
                           "url": "mxc://hs.test/f"})).body
    assert isinstance(bare, FileBody) and bare.caption == "" and bare.display_name == "a.pdf"
    old = received(event({"msgtype": "m.file", "body": "a.pdf", "url": "mxc://hs.test/f"})).body
    assert isinstance(old, FileBody) and old.caption == "" and old.display_name == "a.pdf"
    same = Message.file("bob", pic, caption="pic.png")
    same.body.remote_url = "mxc://hs.test/abc"
    assert received(event(sent_content(same))).body.caption == "pic.png"


def test_replies_and_threads_are_matrix_relations():
    reply = sent_content(Message.text("bob", "yes", reply_to="$root"))
    assert reply["m.relates_to"] == {"m.in_reply_to": {"event_id": "$root"}}
    got = received(event(reply))
    assert (got.reply_to, got.thread_id) == ("$root", None)

    thread = sent_content(Message.text("bob", "where?", thread_id="$root"))
    assert thread["m.relates_to"] == {"rel_type": "m.thread", "event_id": "$root",
                                      "is_falling_back": True,
                                      "m.in_reply_to": {"event_id": "$root"}}
    got = received(event(thread))
    assert (got.reply_to, got.thread_id) == (None, "$root")  # the fallback is no reply

    both = sent_content(Message.text("bob", "this", thread_id="$root", reply_to="$t1"))
    got = received(event(both))
    assert (got.reply_to, got.thread_id) == ("$t1", "$root")
    assert both["m.relates_to"]["is_falling_back"] is False

    junk = received(event({"msgtype": "m.text", "body": "x",
                           "m.relates_to": {"m.in_reply_to": {"event_id": 5},
                                            "rel_type": "m.thread", "event_id": ""}}))
    assert (junk.reply_to, junk.thread_id) == (None, None)


def test_a_sticker_is_an_image_and_an_unknown_event_is_kept_as_custom():
    sticker = received(event({"body": "a cat", "url": "mxc://hs.test/cat",
                              "info": {"w": 64, "h": 64, "mimetype": "image/png"}}, "m.sticker"))
    assert sticker.type == MessageType.IMAGE and isinstance(sticker.body, ImageBody)
    assert (sticker.body.display_name, sticker.body.caption, sticker.body.width) == (
        "a cat", "", 64)
    assert sticker.body.remote_url == "mxc://hs.test/cat"

    poll = received(event({"question": {"text": "lunch?"}, "kind": "open"}, "org.example.poll"))
    assert poll.type == MessageType.CUSTOM and isinstance(poll.body, CustomBody)
    assert poll.body.event == "org.example.poll"
    assert poll.body.params == {"question": '{"text": "lunch?"}', "kind": "open"}
    assert json.loads(poll.body.params["question"]) == {"text": "lunch?"}

    # not messages: state, reactions, redactions and imstore's own event types
    assert mp.event_to_message({**event({"name": "x"}, "m.room.name"), "state_key": ""},
                               DM_INFO, ME, "hs.test") is None
    assert mp.event_to_message(reaction("$r", "$1", "👍"), DM_INFO, ME, "hs.test") is None
    assert mp.event_to_message(redaction("$x", "$1"), DM_INFO, ME, "hs.test") is None
    assert mp.event_to_message(event({}, mp.CMD_EVENT), DM_INFO, ME, "hs.test") is None


def test_the_pure_parts_refuse_what_is_not_theirs():
    assert rc.annotation(event({"m.relates_to": {"rel_type": "m.reference",
                                                 "event_id": "$1"}}, "m.reaction")) is None
    assert rc.annotation(reaction("$r", "$1", "")) is None
    assert rc.annotation(event({}, "m.room.message")) is None
    assert rc.pinned_ids({"pinned": ["$a", 5, "$a", "", "$b"]}) == ["$a", "$b"]
    assert rc.pinned_ids("junk") == []
    tags = {"m.favourite": {rc.PINNED_AT: 42}, "u.work": {}, "u.": {}, "m.lowpriority": {}}
    assert rc.conversation_state(tags, True) == (42, frozenset({"work",
                                                                  ConversationMark.UNREAD}))
    assert rc.conversation_state({"m.favourite": {}}, False) == (0, frozenset())
    assert rc.conversation_state({}, False) == (None, frozenset())


# --------------------------------------------------------------------------------- the sync




def test_reactions_are_told_with_their_sender_and_own_id_and_taken_back_by_it_only():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        hs.on("GET", r"/event/", lambda request: 404)
        a, rec = await started(
            hs, joined(DM, msg_event("$m", "vote", sender=ME, ts=5)),
            joined(DM, reaction("$r1", "$m", "👍"), reaction("$r2", "$m", "🎉", sender=ME),
                   reaction("$mine", "$m", "👀", sender=ME, transaction_id="t")),
            joined(DM, redaction("$x1", "$r2", sender=BOB),  # not bob's to take back
                   redaction("$x2", "$r1", sender=BOB)))
        await hs.asked_sync(4)
        told = [e for args in rec.got("on_reactions") for e in args[0]]
        assert told == [
            ReactionEvent("$m", "👍", "bob", "$r1", time=7),
            ReactionEvent("$m", "🎉", "alice", "$r2", time=7),  # from another device of mine
            ReactionEvent("$m", "👍", "bob", "$r1", removed=True, time=9)]
        assert not rec.got("on_messages_recalled")  # a reaction's redaction is no recall
        assert a.rich.reactions["$mine"] == ("$m", "👀", ME)  # this device's: known, not told
        await a.close()
    run(main())


def test_a_reaction_made_before_a_restart_is_taken_back_by_its_id_and_by_its_sender_only():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        # as the server keeps reactions once redacted: type and sender, no content
        kept = {"$r9": {**reaction("$r9", "$m", "👍"), "content": {}},
                "$r8": {**reaction("$r8", "$m", "🎉", sender=CAROL), "content": {}}}
        hs.on("GET", r"/event/", lambda request: kept[request.url.path.rsplit("/", 1)[-1]
                                                      .replace("%24", "$")])
        a, rec = await started(hs, joined(DM, redaction("$x9", "$r9", sender=BOB),
                                          redaction("$x8", "$r8", sender=BOB)))
        await hs.asked_sync(2)
        told = [e for args in rec.got("on_reactions") for e in args[0]]
        assert told == [ReactionEvent("", "", "bob", "$r9", removed=True, time=9)]
        assert not rec.got("on_messages_recalled")
        await a.close()
    run(main())


def test_a_forged_edit_changes_nothing():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        forged = {"type": "m.room.message", "event_id": "$e", "sender": BOB,
                  "origin_server_ts": 8,
                  "content": mp.edit_content("$m", MessageType.TEXT, TextBody("bob says"))}
        a, rec = await started(hs, joined(DM, msg_event("$m", "mine", sender=ME, ts=5)),
                                joined(DM, forged))
        await hs.asked_sync(3)
        assert not rec.got("on_messages_edited")
        await a.close()
    run(main())


def test_pins_are_told_as_the_pinned_events_state_changes():
    async def main() -> None:
        hs = Homeserver()
        group_room(hs)

        def pins(eid: str, ids: list, sender: str = BOB) -> dict:
            return {**event({"pinned": ids}, rc.PINNED, eid, sender), "state_key": ""}

        a, rec = await started(
            hs, joined(GROUP, state={"events": [pins("$p0", ["$a"])]}),
            joined(GROUP, pins("$p1", ["$a", "$b"]), pins("$p2", ["$b"], sender=CAROL)))
        await hs.asked_sync(3)
        told = [e for args in rec.got("on_message_pins") for e in args[0]]
        assert told == [PinEvent("$a", True, "bob", 7), PinEvent("$b", True, "bob", 7),
                        PinEvent("$a", False, "carol", 7)]
        await a.close()
    run(main())


def test_this_users_tags_and_unread_flag_are_told_as_whole_states():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        tags = {"type": "m.tag", "content": {"tags": {"m.favourite": {rc.PINNED_AT: 30},
                                                      "u.work": {}}}}
        unread = {"type": "m.marked_unread", "content": {"unread": True}}
        hs.on("GET", r"/account_data/m\.marked_unread$", {"unread": False})
        hs.on("GET", r"/account_data/com\.famedly\.marked_unread$", 404)
        a, rec = await started(hs, joined(DM, account_data={"events": [tags]}),
                                joined(DM, account_data={"events": [unread]}),
                                joined(DM, account_data={"events": [unread]}))  # no change
        await hs.asked_sync(4)
        told = [s for args in rec.got("on_conversation_states") for s in args[0]]
        assert told == [
            ConversationState("bob", ChatType.CHAT, 30, frozenset({"work"})),
            ConversationState("bob", ChatType.CHAT, 30,
                              frozenset({"work", ConversationMark.UNREAD}))]
        await a.close()
    run(main())


# ------------------------------------------------------------------------------ the transport


def _mine(msg_id: str = "$m", conv: str = "bob", chat_type: ChatType = ChatType.CHAT
          ) -> Message:
    msg = Message.text(conv, "x", sender="alice", chat_type=chat_type)
    msg.msg_id, msg.conv_id = msg_id, conv
    return msg


async def _paused(hs: Homeserver):
    a = await adapter(hs)
    a.sync.paused = True
    a.rooms.remember(DM_INFO)
    a.rooms.remember(mp.RoomInfo(GROUP, "team", ChatType.GROUP_CHAT))
    return a


def test_a_reaction_is_an_annotation_and_a_second_one_gets_the_first_ones_id():
    async def main() -> None:
        hs = Homeserver()
        hs.on("PUT", r"/send/m\.reaction/", {"event_id": "$r1"},
              httpx.Response(400, json={"errcode": "M_DUPLICATE_ANNOTATION",
                                                      "error": "twice"}))
        hs.on("GET", r"/relations/\$m/m\.annotation/m\.reaction$", {"chunk": [
            reaction("$other", "$m", "👍"), reaction("$r1", "$m", "👍", sender=ME)]})
        a = await _paused(hs)
        assert await a.send_reaction(_mine(), "👍") == "$r1"
        (put,) = hs.calls("PUT", r"/send/m\.reaction/")
        assert hs.body(put) == {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$m",
                                                 "key": "👍"}}
        a.rich.reactions.clear()  # a new run: the server's relations say which is mine
        assert await a.send_reaction(_mine(), "👍") == "$r1"
        await a.close()
    run(main())


def test_only_this_users_own_reaction_is_taken_back():
    async def main() -> None:
        hs = Homeserver()
        hs.on("PUT", r"/redact/", {"event_id": "$x"})
        hs.on("GET", r"/event/\$theirs$", reaction("$theirs", "$m", "👍"))
        hs.on("GET", r"/event/\$gone$", 404)
        a = await _paused(hs)
        a.rich.reactions["$r1"] = ("$m", "👍", ME)
        await a.remove_reaction(_mine(), "$r1")
        assert len(hs.calls("PUT", r"/redact/\$r1/")) == 1 and "$r1" not in a.rich.reactions
        with pytest.raises(IMError) as e:
            await a.remove_reaction(_mine(), "$theirs")
        assert e.value.code == ErrorCode.INVALID_PARAM
        await a.remove_reaction(_mine(), "$gone")  # taken back already: no error
        assert [r.url.path for r in hs.calls("PUT", r"/redact/")] == [
            hs.calls("PUT", r"/redact/")[0].url.path]
        await a.close()
    run(main())


def test_pinning_a_message_edits_the_rooms_pinned_events():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/state/m\.room\.pinned_events/$", 404, {"pinned": ["$m"]},
              {"pinned": ["$m"]}, {"pinned": []})
        hs.on("PUT", r"/state/m\.room\.pinned_events/$", {"event_id": "$s1"},
              {"event_id": "$s2"},
              httpx.Response(403, json={"errcode": "M_FORBIDDEN", "error": "no"}))
        hs.on("GET", r"/event/\$s\d$", lambda request: {
            **event({}, rc.PINNED, request.url.path.rsplit("/", 1)[1].replace("%24", "$")),
            "origin_server_ts": 70})
        a = await _paused(hs)
        group = _mine("$m", "team", ChatType.GROUP_CHAT)
        assert await a.pin_message(group, True) == 70
        assert await a.pin_message(group, True) > 0  # pinned already: nothing sent
        assert await a.pin_message(group, False) == 70
        puts = [hs.body(r) for r in hs.calls("PUT", r"/state/m\.room\.pinned_events/$")]
        assert puts == [{"pinned": ["$m"]}, {"pinned": []}]
        with pytest.raises(IMError) as e:
            await a.pin_message(group, True)
        assert e.value.code == ErrorCode.INVALID_PARAM
        await a.close()
    run(main())


def test_a_conversation_pin_and_marks_are_this_users_tags_and_a_read_clears_unread():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/tags$", {"tags": {"m.lowpriority": {}}})
        hs.on("PUT", r"/tags/", {})
        hs.on("DELETE", r"/tags/", {})
        hs.on("GET", r"/account_data/m\.marked_unread$", 404)
        hs.on("GET", r"/account_data/com\.famedly\.marked_unread$", {"unread": False})
        hs.on("PUT", r"/account_data/m\.marked_unread$", {})
        hs.on("POST", r"/read_markers$", {})
        hs.on("GET", r"/event/\$m$", msg_event("$m", "x", ts=5))
        a = await _paused(hs)
        at = await a.pin_conversation("bob", ChatType.CHAT, True)
        assert isinstance(at, int) and await a.pin_conversation("bob", ChatType.CHAT, True) == at
        (fav,) = hs.calls("PUT", r"/tags/m\.favourite$")
        assert hs.body(fav) == {rc.PINNED_AT: at}
        marks = await a.set_conversation_marks("bob", ChatType.CHAT,
                                               ["work", ConversationMark.UNREAD], [])
        assert marks == {"work", ConversationMark.UNREAD}
        assert hs.body(hs.calls("PUT", r"/account_data/m\.marked_unread$")[-1]) == {
            "unread": True}
        assert await a.set_conversation_marks("bob", ChatType.CHAT, [], ["work", "never"]) == {
            ConversationMark.UNREAD}
        assert len(hs.calls("DELETE", r"/tags/u\.work$")) == 1
        assert await a.pin_conversation("bob", ChatType.CHAT, False) is None
        assert len(hs.calls("DELETE", r"/tags/m\.favourite$")) == 1
        msg = Message.text("alice", "x", sender="bob")
        msg.msg_id, msg.conv_id = "$m", "bob"
        await a.send_read_ack(msg)
        assert hs.body(hs.calls("PUT", r"/account_data/m\.marked_unread$")[-1]) == {
            "unread": False}
        await a.send_read_ack(msg)  # nothing left to clear: nothing sent
        assert len(hs.calls("PUT", r"/account_data/m\.marked_unread$")) == 2
        with pytest.raises(IMError) as e:
            await a.pin_conversation("nobody", ChatType.GROUP_CHAT, True)
        assert e.value.code == ErrorCode.CONVERSATION_NOT_EXIST
        await a.close()
    run(main())


def test_a_failed_unread_clear_never_fails_the_read_receipt():
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/read_markers$", {})
        hs.on("GET", r"/event/\$m$", msg_event("$m", "x", ts=5))
        hs.on("GET", r"/account_data/", 500)
        a = await _paused(hs)
        msg = Message.text("alice", "x", sender="bob")
        msg.msg_id, msg.conv_id = "$m", "bob"
        await a.send_read_ack(msg)
        assert len(hs.calls("POST", r"/read_markers$")) == 1
        await a.close()
    run(main())


def test_the_conversation_list_carries_pin_marks_and_title():
    async def main() -> None:
        hs = Homeserver()
        group_room(hs)
        state = [{"type": mp.CONV_STATE, "state_key": "", "event_id": "$s", "sender": ME,
                  "origin_server_ts": 1,
                  "content": {"chat_type": "GROUP_CHAT", "id": "team", "members": [ME]}},
                 {"type": "m.room.topic", "state_key": "", "event_id": "$t", "sender": ME,
                  "origin_server_ts": 1, "content": {"topic": "lunch plans"}}]
        data = [{"type": "m.tag", "content": {"tags": {"m.favourite": {rc.PINNED_AT: 3},
                                                       "u.work": {}}}},
                {"type": "m.marked_unread", "content": {"unread": True}}]
        listing = {"next_batch": "l1", "rooms": {"join": {GROUP: {
            "timeline": {"events": [msg_event("$g", "g", ts=9)]}, "state": {"events": state},
            "account_data": {"events": data}}}}}
        a = await adapter(hs)
        hs.on("GET", r"/sync$", lambda request: listing if is_list_sync(request)
              else {"next_batch": "invites"})
        a.sync.paused = True
        (conv,) = (await a.fetch_conversations(None, 5)).items
        assert (conv.conv_id, conv.title, conv.pinned_at, conv.marks) == (
            "team", "lunch plans", 3, {"work", ConversationMark.UNREAD})
        await a.close()
    run(main())


def test_the_echo_of_this_users_own_change_is_not_told_and_a_failed_one_is_undone():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/tags$", {"tags": {}})
        hs.on("GET", r"/account_data/", {"unread": False})
        hs.on("PUT", r"/tags/m\.favourite$", {})
        hs.on("PUT", r"/tags/u\.", 500)
        hs.on("PUT", r"/account_data/m\.marked_unread$", 500)
        a = await _paused(hs)
        at = await a.pin_conversation("bob", ChatType.CHAT, True)
        echo = [{"type": "m.tag", "content": {"tags": {"m.favourite": {rc.PINNED_AT: at}}}}]
        assert a.rich.take_account_data(DM, echo) is False  # the echo is no news
        for mark in ("work", ConversationMark.UNREAD):
            with pytest.raises(IMError):
                await a.set_conversation_marks("bob", ChatType.CHAT, [mark], [])
        assert (a.rich.tags[DM], a.rich.unread[DM]) == ({"m.favourite": {rc.PINNED_AT: at}},
                                                        False)
        await a.close()
    run(main())


def test_a_late_echo_of_an_older_own_change_does_not_undo_a_newer_one():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/tags$", {"tags": {}})
        hs.on("GET", r"/account_data/", {"unread": False})
        hs.on("PUT", r"/tags/", {})
        a = await _paused(hs)
        at = await a.pin_conversation("bob", ChatType.CHAT, True)
        assert await a.set_conversation_marks("bob", ChatType.CHAT, ["work"], []) == {"work"}
        fav = {"m.favourite": {rc.PINNED_AT: at}}
        late = [{"type": "m.tag", "content": {"tags": fav}}]
        assert a.rich.take_account_data(DM, late) is False
        assert a.rich.tags[DM] == {**fav, "u.work": {}}
        other = [{"type": "m.tag", "content": {"tags": {"u.home": {}}}}]  # another device
        assert a.rich.take_account_data(DM, other) is True
        assert a.rich.tags[DM] == {"u.home": {}} and a.rich.pending[(DM, "m.tag")] == []
        await a.close()
    run(main())
