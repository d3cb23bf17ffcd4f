"""The Matrix adapter's SyncAdapter calls, offline against canned ``/messages`` answers:
history pages, filters and cursors, the conversation list, one-way and full deletes."""

from __future__ import annotations

import re

import httpx
import pytest

from imstore import ChatType, Direction, ErrorCode, FetchOptions, IMError, MessageType
from imstore.adapters.matrix import _mapping as mp

from .matrix_canned import BOB, DM, GROUP, ME, Homeserver, adapter, msg_event, run

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
        assert hs.params(hs.calls("GET", "timestamp_to_event")[0])["dir"] == "b"
        before = len(hs.calls("GET", "/messages$"))
        down = await a.fetch_history("bob", ChatType.CHAT, None, 10, FetchOptions(
            direction=Direction.DOWN, start_time=1))
        assert hs.params(hs.calls("GET", "/messages$")[before])["from"] == "s-ctx"
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


def test_the_conversation_list_is_newest_first_and_pages():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/joined_rooms$", {"joined_rooms": [DM, GROUP, "!empty:hs.test", 7]})
        hs.on("GET", rf"/rooms/{re.escape(DM)}/messages$", {"chunk": [msg_event("$d", "d", ts=5)]})
        hs.on("GET", rf"/rooms/{re.escape(GROUP)}/messages$",
              {"chunk": [msg_event("$g", "g", ts=9, sender=ME)]})
        hs.on("GET", r"/rooms/!empty:hs.test/messages$", {"chunk": []})
        hs.on("GET", r"/state/io\.imstore\.conversation/$", 404)
        a = await adapter(hs)
        a.sync.paused = True
        a.rooms.remember(mp.RoomInfo(DM, "bob", ChatType.CHAT))
        a.rooms.unread[DM] = 3
        first = await a.fetch_conversations(None, 1)
        assert [c.conv_id for c in first.items] == [GROUP]
        assert first.items[0].chat_type == ChatType.GROUP_CHAT and first.cursor
        rest = await a.fetch_conversations(first.cursor, 5)
        assert [(c.conv_id, c.unread_count) for c in rest.items] == [("bob", 3)]
        assert rest.cursor is None
        await a.close()
    run(main())


def test_deleting_for_everyone_needs_an_admin_and_frees_the_alias():
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
        assert hs.calls("DELETE", r"/directory/room/#imstore\.dm\.")
        await a.close()
    run(main())
