"""The Matrix adapter's SyncAdapter calls, offline against canned ``/messages`` answers:
history pages, filters and cursors, the conversation list, one-way and full deletes."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from imstore import ChatType, Direction, ErrorCode, FetchOptions, IMError, MessageType
from imstore.adapters.matrix import _mapping as mp

from .matrix_canned import (
    BOB,
    DM,
    GROUP,
    ME,
    Homeserver,
    adapter,
    group_alias,
    is_list_sync,
    msg_event,
    run,
)

MESSAGES = rf"/rooms/{re.escape(DM)}/messages$"


async def _dm(hs: Homeserver):
    a = await adapter(hs)
    a.sync.paused = True  # no loop: these tests are about the history calls alone
    a.rooms.remember(mp.RoomInfo(DM, "bob", ChatType.CHAT))
    return a


def test_a_page_is_oldest_first_with_a_cursor_that_goes_on():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", MESSAGES, {"chunk": [msg_event("$3", "c", ts=30), msg_event("$2", "b", ts=20)],
                                "end": "t2"},
              {"chunk": [msg_event("$1", "a", ts=10)], "end": "t3"}, {"chunk": []})
        hs.on("GET", r"/account_data/m\.fully_read$", {"event_id": "$2"})
        hs.on("GET", r"/event/\$2$", msg_event("$2", "b", ts=20))
        a = await _dm(hs)
        first = await a.fetch_history("bob", ChatType.CHAT, None, 2, FetchOptions())
        assert [m.msg_id for m in first.items] == ["$2", "$3"]
        assert [m.is_read for m in first.items] == [True, False]
        assert first.cursor is not None
        second = await a.fetch_history("bob", ChatType.CHAT, first.cursor, 2, FetchOptions())
        assert [m.msg_id for m in second.items] == ["$1"] and second.cursor is None
        assert hs.params(hs.calls("GET", "/messages$")[1])["from"] == "t2"
        await a.close()
    run(main())


def test_a_page_carries_unknown_events_as_live_sync_does_and_asks_for_no_state():
    async def main() -> None:
        hs = Homeserver()
        poll = {"type": "org.example.poll", "event_id": "$p", "sender": BOB,
                "origin_server_ts": 20, "content": {"question": "pizza?"}}
        member = {"type": "m.room.member", "event_id": "$j", "sender": BOB, "state_key": BOB,
                  "origin_server_ts": 15, "content": {"membership": "join"}}
        hs.on("GET", MESSAGES, {"chunk": [msg_event("$t", "text", ts=30), poll, member],
                                "end": "t2"}, {"chunk": []})
        a = await _dm(hs)
        page = await a.fetch_history("bob", ChatType.CHAT, None, 10, FetchOptions())
        assert [(m.msg_id, m.type) for m in page.items] == [("$p", MessageType.CUSTOM),
                                                             ("$t", MessageType.TEXT)]
        assert page.items[0].body.event == "org.example.poll"
        filt = json.loads(hs.params(hs.calls("GET", "/messages$")[0])["filter"])
        assert "types" not in filt
        assert {"m.reaction", "m.room.redaction", "m.room.member"} <= set(filt["not_types"])
        assert "m.room.message" not in filt["not_types"]
        await a.close()
    run(main())


def test_filters_types_sender_and_window_apply_and_stop_past_the_window():
    async def main() -> None:
        hs = Homeserver()
        image = msg_event("$i", "p.png", ts=25, msgtype="m.image", url="mxc://hs.test/i")
        hs.on("GET", MESSAGES, {"chunk": [msg_event("$4", "d", ts=40), image,
                                          msg_event("$2", "b", ts=20), msg_event("$0", "z", ts=5)],
                                "end": "more"})
        hs.on("GET", r"/timestamp_to_event$", {"event_id": "$4"})
        hs.on("GET", r"/context/", {"start": "s-ctx", "end": "e-ctx"})
        a = await _dm(hs)
        opts = FetchOptions(types=(MessageType.TEXT,), sender="bob", start_time=10, end_time=35)
        page = await a.fetch_history("bob", ChatType.CHAT, None, 10, opts)
        assert [m.msg_id for m in page.items] == ["$2"] and page.cursor is None
        call = hs.params(hs.calls("GET", "/messages$")[0])
        assert call["from"] == "e-ctx" and BOB in call["filter"]
        # paged from just past the bound: events sharing its time are all reached
        assert [(hs.params(c)["dir"], hs.params(c)["ts"])
                for c in hs.calls("GET", "timestamp_to_event")] == [("b", "36")]
        before = len(hs.calls("GET", "/messages$"))
        down = await a.fetch_history("bob", ChatType.CHAT, None, 10, FetchOptions(
            direction=Direction.DOWN, start_time=1))
        assert hs.params(hs.calls("GET", "/messages$")[before])["from"] == "s-ctx"
        assert hs.params(hs.calls("GET", "timestamp_to_event")[1])["ts"] == "0"
        assert down.cursor is not None
        hs.on("GET", r"/timestamp_to_event$", 404)
        empty = await a.fetch_history("bob", ChatType.CHAT, None, 10, FetchOptions(end_time=1))
        assert empty.items == [] and empty.cursor is None
        await a.close()
    run(main())


def test_one_way_deletes_hide_messages_and_entries():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", MESSAGES, {"chunk": [msg_event("$3", "c", ts=30), msg_event("$2", "b", ts=20),
                                          msg_event("$1", "a", ts=10)]})
        hs.on("GET", r"/account_data/io\.imstore\.hidden$", {"ids": ["$3"], "before": 15})
        hs.on("PUT", r"/account_data/io\.imstore\.hidden$", {})
        a = await _dm(hs)
        page = await a.fetch_history("bob", ChatType.CHAT, None, 10, FetchOptions())
        assert [m.msg_id for m in page.items] == ["$2"]
        await a.remove_messages("bob", ChatType.CHAT, ["$9"], None)
        await a.remove_messages("bob", ChatType.CHAT, None, 12)
        await a.delete_conversation("bob", ChatType.CHAT, False)
        puts = [hs.body(r) for r in hs.calls("PUT", "hidden$")]
        assert puts[0]["ids"] == ["$3", "$9"] and puts[1]["before"] == 15
        assert "deleted_at" in puts[2]
        with pytest.raises(IMError):
            await a.remove_messages("bob", ChatType.CHAT, None, None)
        with pytest.raises(IMError) as err:
            await a.remove_messages("team", ChatType.GROUP_CHAT, ["$1"], None)
        assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
        await a.close()
    run(main())


def test_a_deleted_or_left_conversation_reads_empty_or_not_existing():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/messages$", httpx.Response(403, json={"errcode": "M_FORBIDDEN"}))
        a = await _dm(hs)
        page = await a.fetch_history("bob", ChatType.CHAT, None, 10, FetchOptions())
        assert page.items == [] and page.cursor is None
        assert await a.fetch_history("carol", ChatType.CHAT, None, 5, FetchOptions()) == page
        a.rooms.remember(mp.RoomInfo(GROUP, "team", ChatType.GROUP_CHAT))
        with pytest.raises(IMError) as err:
            await a.fetch_history("team", ChatType.GROUP_CHAT, None, 10, FetchOptions())
        assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
        with pytest.raises(IMError) as err:
            await a.fetch_history("bob", ChatType.CHAT, None, 0, FetchOptions())
        assert err.value.code == ErrorCode.QUERY_PARAM_REACHES_LIMIT
        await a.close()
    run(main())


def test_the_conversation_list_is_one_sync_newest_first_and_pages():
    def room(*events: dict, unread: int = 0, **extra: object) -> dict:
        return {"timeline": {"events": list(events)},
                "unread_notifications": {"notification_count": unread}, **extra}

    edit = {"type": "m.room.message", "event_id": "$x", "sender": BOB, "origin_server_ts": 99,
            "content": mp.edit_content("$old", MessageType.TEXT, mp.TextBody("x"))}
    hidden = {"type": mp.HIDDEN, "content": {"ids": ["$h"]}}
    listing = {"next_batch": "l1", "account_data": {"events": [
        {"type": "m.direct", "content": {BOB: [DM]}}]}, "rooms": {"join": {
            DM: room(msg_event("$d0", "older", ts=4), msg_event("$d", "d", ts=5), unread=3),
            GROUP: room(msg_event("$g", "g", ts=9, sender=ME), state={"events": [
                {"type": mp.CONV_STATE, "state_key": "", "event_id": "$s", "sender": ME,
                 "origin_server_ts": 1,
                 "content": {"chat_type": "GROUP_CHAT", "id": "team", "members": [ME]}}]}),
            "!edits:hs.test": room(msg_event("$e0", "before", ts=6), edit),
            "!hidden:hs.test": room(msg_event("$h", "gone", ts=50),
                                    account_data={"events": [hidden]}),
            "!empty:hs.test": room(), "!bad:hs.test": 7,
            "!poll:hs.test": room(msg_event("$q0", "before the poll", ts=2), {
                "type": "org.example.poll", "event_id": "$q", "sender": BOB,
                "origin_server_ts": 3, "content": {"question": "pizza?"}})}}}

    def answer(request: httpx.Request) -> dict:
        return listing if is_list_sync(request) else {"next_batch": "invites"}

    async def main() -> None:
        hs = Homeserver()
        a = await adapter(hs)
        hs.on("GET", r"/sync$", answer)
        group_alias(hs)
        a.sync.paused = True
        first = await a.fetch_conversations(None, 2)
        assert [(c.conv_id, c.chat_type) for c in first.items] == [
            ("team", ChatType.GROUP_CHAT), ("!edits:hs.test", ChatType.GROUP_CHAT)]
        assert first.items[1].last_message.msg_id == "$e0" and first.cursor
        rest = await a.fetch_conversations(first.cursor, 5)
        assert [c.conv_id for c in rest.items] == ["bob", "!poll:hs.test"]
        assert rest.items[0].unread_count == 3
        assert rest.items[0].last_message.is_read is False and rest.cursor is None
        # the newest event stored live is the last message: a poll, not the text before it
        assert (rest.items[1].last_message.msg_id, rest.items[1].last_message.type) == (
            "$q", MessageType.CUSTOM)
        assert "not_types" in json.loads(hs.params(
            next(r for r in hs.requests if is_list_sync(r)))["filter"])["room"]["timeline"]
        assert len([r for r in hs.requests if is_list_sync(r)]) == 1  # the next page: kept
        assert not hs.calls("GET", r"/messages$") and not hs.calls("GET", r"/state/")
        await a.fetch_conversations(None, 2)  # a new listing asks again
        assert len([r for r in hs.requests if is_list_sync(r)]) == 2
        await a.close()
    run(main())


def test_deleting_for_everyone_needs_an_admin():
    async def main() -> None:
        hs = Homeserver()
        hs.on("DELETE", r"/_synapse/admin/v1/rooms/", httpx.Response(
            403, json={"errcode": "M_FORBIDDEN"}), {"delete_id": "x"})
        hs.on("DELETE", r"/directory/room/", 404)
        a = await _dm(hs)
        with pytest.raises(IMError) as err:
            await a.delete_conversation("bob", ChatType.CHAT, True)
        assert err.value.code == ErrorCode.SERVICE_NOT_ENABLED
        await a.delete_conversation("bob", ChatType.CHAT, True)
        assert ("bob" not in [i.conv_id for i in a.rooms.rooms.values()])
        assert not hs.calls("DELETE", r"/directory/room/")  # a chat has no alias to free
        await a.close()
    run(main())


def test_the_list_counts_what_came_after_the_read_position_when_the_server_counts_less():
    receipt = {"type": "m.receipt", "content": {"$1": {"m.read": {ME: {"ts": 15}}}}}
    listing = {"next_batch": "l1", "rooms": {"join": {DM: {
        "timeline": {"events": [msg_event(f"${i}", f"m{i}", ts=10 * i) for i in range(1, 5)]},
        "ephemeral": {"events": [receipt]},
        "unread_notifications": {"notification_count": 2}}}}}

    async def main() -> None:
        hs = Homeserver()
        a = await adapter(hs)
        hs.on("GET", r"/sync$", lambda r: listing if is_list_sync(r) else {"next_batch": "i"})
        a.sync.paused = True
        a.rooms.remember(mp.RoomInfo(DM, "bob", ChatType.CHAT))
        (conv,) = (await a.fetch_conversations(None, 5)).items
        assert (conv.unread_count, conv.last_message.is_read) == (3, False)
        await a.close()
    run(main())
