"""The Matrix adapter's Transport calls, offline against canned answers: sends and their rooms,
commands, receipts, recalls, edits, reconnection."""

from __future__ import annotations

import re

import httpx
import pytest

from imstore import ChatType, ConnectionState, ErrorCode, IMError, Message, MessageStatus
from imstore.adapters.matrix import _mapping as mp
from imstore.message import TextBody

from .matrix_canned import (
    BOB,
    DM,
    GROUP,
    ME,
    Homeserver,
    Recorder,
    adapter,
    group_room,
    msg_event,
    run,
)


def _sent(msg: Message) -> Message:
    msg.status = MessageStatus.SUCCESS  # as the store keeps a message the server has
    return msg


DIRECT = r"/account_data/m\.direct$"


def _event_route(hs: Homeserver, eid: str, ts: int, room: str = DM, sender: str = ME) -> None:
    hs.on("GET", rf"/rooms/{re.escape(room)}/event/{re.escape(eid)}$",
          msg_event(eid, "x", sender=sender, ts=ts))


def test_a_first_send_goes_to_the_dm_that_m_direct_lists():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", DIRECT, {BOB: [DM, "!a:hs.test"], "@carol:hs.test": ["!c:hs.test"]})
        hs.on("POST", r"/join/", httpx.Response(403, json={"errcode": "M_FORBIDDEN"}),
              {"room_id": DM})
        hs.on("PUT", r"/send/m\.room\.message/", {"event_id": "$s1"})
        _event_route(hs, "$s1", 777)
        a = await adapter(hs)
        msg = Message.text("bob", "hello", ext={"k": 1})
        res = await a.send(msg)
        assert (res.msg_id, res.server_time) == ("$s1", 777)
        put = hs.calls("PUT", r"/send/m\.room\.message/")[0]
        assert DM in put.url.path and put.url.path.endswith(msg.msg_id)
        content = hs.body(put)
        assert content["body"] == "hello" and content[mp.NS]["local_id"] == msg.msg_id
        # the first listed room could not be joined (left): the next one is the chat
        assert [c.url.path for c in hs.calls("POST", "/join/")] == [
            "/_matrix/client/v3/join/!a:hs.test", "/_matrix/client/v3/join/!dm:hs.test"]
        await a.send(Message.text("bob", "again"))  # the room is cached now
        assert len(hs.calls("GET", DIRECT)) == 1 and len(hs.calls("POST", "/join/")) == 2
        assert not hs.calls("GET", r"/directory/") and not hs.calls("PUT", DIRECT)
        await a.close()
    run(main())


def test_a_send_to_a_new_peer_creates_a_direct_room_without_an_alias():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", DIRECT, 404)
        hs.on("POST", r"/createRoom$", {"room_id": DM})
        hs.on("PUT", DIRECT, {})
        hs.on("PUT", r"/send/", {"event_id": "$s"})
        _event_route(hs, "$s", 5)
        a = await adapter(hs)
        assert (await a.send(Message.text("bob", "x"))).msg_id == "$s"
        create = hs.body(hs.calls("POST", "createRoom")[0])
        assert create["is_direct"] and create["invite"] == [BOB]
        assert create["preset"] == "trusted_private_chat" and "room_alias_name" not in create
        assert hs.body(hs.calls("PUT", DIRECT)[0]) == {BOB: [DM]}
        assert not hs.calls("GET", r"/directory/")
        await a.close()
    run(main())


def test_a_send_to_an_unknown_user_and_to_an_unknown_group_fail_clearly():
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/createRoom$", httpx.Response(404, json={"errcode": "M_NOT_FOUND"}))
        a = await adapter(hs)
        with pytest.raises(IMError) as err:
            await a.send(Message.text("nobody", "x"))
        assert err.value.code == ErrorCode.INVALID_PARAM
        with pytest.raises(IMError) as err:
            await a.send(Message.text("team", "x", chat_type=ChatType.GROUP_CHAT))
        assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
        with pytest.raises(IMError) as err:
            await a.join("team", ChatType.GROUP_CHAT)
        assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
        await a.close()
    run(main())


def test_a_room_left_since_it_was_cached_is_resolved_again():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", DIRECT, {BOB: [DM]})
        hs.on("POST", r"/join/", {})
        hs.on("PUT", r"/send/", httpx.Response(403, json={"errcode": "M_FORBIDDEN"}),
              {"event_id": "$ok"})
        _event_route(hs, "$ok", 3)
        a = await adapter(hs)
        a.rooms.remember(mp.RoomInfo("!old:hs.test", "bob", ChatType.CHAT))
        assert (await a.send(Message.text("bob", "x"))).msg_id == "$ok"
        assert len(hs.calls("PUT", "/send/")) == 2
        await a.close()
    run(main())


def test_groups_are_created_and_joined_and_a_taken_id_is_refused():
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/createRoom$", {"room_id": GROUP},
              httpx.Response(400, json={"errcode": "M_ROOM_IN_USE"}))
        a = await adapter(hs)
        assert await a.create_group("team", ["bob"]) == GROUP
        body = hs.body(hs.calls("POST", "createRoom")[0])
        assert body["name"] == "team" and body["room_alias_name"] == "imstore.g.team"
        with pytest.raises(IMError) as err:
            await a.create_chat_room("lobby", [])
        assert err.value.code == ErrorCode.INVALID_PARAM
        assert await a.join("team", ChatType.GROUP_CHAT) == GROUP
        hs.on("GET", r"/directory/room/#imstore\.g\.other", {"room_id": "!o:hs.test"})
        hs.on("POST", r"/join/!o", httpx.Response(403, json={"errcode": "M_FORBIDDEN"}))
        with pytest.raises(IMError) as err:
            await a.join("other", ChatType.GROUP_CHAT)
        assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
        await a.close()
    run(main())


def test_commands_go_to_device_to_the_peer_or_every_other_member():
    async def main() -> None:
        hs = Homeserver()
        hs.on("PUT", r"/sendToDevice/", {})
        hs.on("GET", r"/joined_members$", {"joined": {ME: {}, BOB: {}, "@carol:hs.test": {}}})
        a = await adapter(hs)
        a.rooms.remember(mp.RoomInfo(GROUP, "team", ChatType.GROUP_CHAT))
        res = await a.send(Message.cmd("bob", "typing", {"on": "1"}))
        assert res.msg_id.startswith("L")
        await a.send(Message.cmd("team", "ping", chat_type=ChatType.GROUP_CHAT))
        one, group = (hs.body(r)["messages"] for r in hs.calls("PUT", "/sendToDevice/"))
        assert list(one) == [BOB] and one[BOB]["*"]["action"] == "typing"
        assert sorted(group) == [BOB, "@carol:hs.test"]
        with pytest.raises(IMError):
            await a.send(Message.cmd("nogroup", "x", chat_type=ChatType.GROUP_CHAT))
        await a.close()
    run(main())


def test_delivery_receipts_of_one_moment_share_one_request():
    async def main() -> None:
        import asyncio

        hs = Homeserver()
        hs.on("PUT", r"/sendToDevice/", {})
        a = await adapter(hs)
        msgs = [Message.text("alice", "x", sender="bob") for _ in range(3)]
        for i, m in enumerate(msgs):
            m.msg_id = f"$d{i}"
        mine = Message.text("bob", "x")
        await asyncio.gather(*(a.send_delivery_ack(m) for m in [*msgs, mine]))
        calls = hs.calls("PUT", "/sendToDevice/")
        assert len(calls) == 1 and a.delivery_acks.requests == 1
        assert hs.body(calls[0])["messages"][BOB]["*"]["event_ids"] == ["$d0", "$d1", "$d2"]
        hs.on("PUT", r"/sendToDevice/", 500)
        with pytest.raises(IMError):
            await a.send_delivery_ack(msgs[0])
        await a.close()
    run(main())


def test_read_receipts_and_conversation_acks_move_the_read_markers():
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/read_markers$", {})
        hs.on("GET", r"/messages$", {"chunk": [msg_event("$n", "newest", ts=50)]})
        hs.on("GET", r"/timestamp_to_event$", {"event_id": "$t", "origin_server_ts": 40})
        _event_route(hs, "$t", 40, sender=BOB)
        _event_route(hs, "$r", 30, sender=BOB)
        a = await adapter(hs)
        a.rooms.remember(mp.RoomInfo(DM, "bob", ChatType.CHAT))
        received = Message.text("alice", "x", sender="bob")
        received.msg_id, received.conv_id = "$r", "bob"
        await a.send_read_ack(received)
        await a.send_conversation_ack("bob", ChatType.CHAT)
        await a.send_conversation_ack("bob", ChatType.CHAT, up_to=45)
        marks = [hs.body(r)["m.read"] for r in hs.calls("POST", "read_markers")]
        assert marks == ["$r", "$n", "$t"]
        assert a.reads.read_ts(DM) == 50  # never moved back by the older "$t"
        await a.send_conversation_ack("nobody", ChatType.CHAT)  # no room: nothing to ack
        await a.close()
    run(main())


def test_group_read_acks_need_a_group_message_that_asked_for_them():
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/read_markers$", {})
        _event_route(hs, "$g", 5, room=GROUP, sender=BOB)
        a = await adapter(hs)
        group_room(hs)
        a.rooms.remember(mp.RoomInfo(GROUP, "team", ChatType.GROUP_CHAT))
        m = Message.text("team", "x", chat_type=ChatType.GROUP_CHAT, sender="bob")
        m.msg_id, m.conv_id = "$g", "team"
        with pytest.raises(IMError):
            await a.send_group_read_ack(m)
        m.need_group_ack = True
        await a.send_group_read_ack(m)
        assert hs.body(hs.calls("POST", "read_markers")[0])["m.read"] == "$g"
        hs.on("GET", r"/joined_rooms$", {"joined_rooms": [GROUP]})
        with pytest.raises(IMError) as err:
            await a.fetch_group_read_acks("$unknown", None, 10)
        assert err.value.code == ErrorCode.MESSAGE_INVALID
        await a.close()
    run(main())


def test_recall_and_edit_own_messages_only_within_the_rules():
    async def main() -> None:
        from imstore.message import now_ms

        hs = Homeserver()
        now = now_ms()
        _event_route(hs, "$mine", now)
        _event_route(hs, "$old", now - 10_000_000)
        hs.on("PUT", r"/redact/", {"event_id": "$red"})
        _event_route(hs, "$red", now + 1)
        hs.on("PUT", r"/send/", {"event_id": "$ed"})
        _event_route(hs, "$ed", now + 2)
        a = await adapter(hs)
        a.rooms.remember(mp.RoomInfo(DM, "bob", ChatType.CHAT))
        m = _sent(Message.text("bob", "x"))
        m.msg_id = "$mine"
        assert await a.recall_message(m) == now + 1
        redact = hs.body(hs.calls("PUT", "/redact/")[0])
        assert redact[f"{mp.NS}.type"] == "TEXT"
        assert await a.edit_message(m, TextBody("new")) == now + 2
        edit = hs.body(hs.calls("PUT", "/send/")[0])
        assert edit["m.new_content"]["body"] == "new"
        old = _sent(Message.text("bob", "x"))
        old.msg_id = "$old"
        with pytest.raises(IMError) as err:
            await a.recall_message(old)
        assert err.value.code == ErrorCode.MESSAGE_EXPIRED
        other = Message.text("alice", "x", sender="bob")
        for call in (a.recall_message(other), a.edit_message(other, TextBody("y"))):
            with pytest.raises(IMError) as err:
                await call
            assert err.value.code == ErrorCode.INVALID_PARAM
        image = _sent(Message.location("bob", 1.0, 2.0))
        with pytest.raises(IMError):
            await a.edit_message(image, TextBody("y"))
        await a.close()
    run(main())


def test_network_loss_is_510_and_reconnecting_and_reconnect_restores():
    async def main() -> None:
        hs = Homeserver()

        def down(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("down")

        hs.on("PUT", r"/send/", down)
        hs.on("GET", r"/account/whoami$", down)
        a = await adapter(hs)
        rec = Recorder()
        a._link.attach(rec)  # no sync loop: the calls alone decide the state
        a.sync.paused = True
        a.rooms.remember(mp.RoomInfo(DM, "bob", ChatType.CHAT))
        with pytest.raises(IMError) as err:
            await a.send(Message.text("bob", "x"))
        assert err.value.code == ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED
        assert a.state == ConnectionState.RECONNECTING
        with pytest.raises(IMError) as err:
            await a.reconnect()
        assert err.value.code == ErrorCode.SERVER_NOT_REACHABLE
        hs.on("GET", r"/account/whoami$", {"user_id": ME})
        hs.sync({})
        await a.reconnect()
        assert a.state == ConnectionState.CONNECTED
        await a.close()
        for call in (a.send(Message.text("bob", "x")), a.upload("/nonexistent"),
                     a.send_read_ack(Message.text("bob", "x"))):
            with pytest.raises(IMError) as err:
                await call
            assert err.value.code == ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED
        with pytest.raises(IMError):
            await a.reconnect()
    run(main())


def test_set_retention_puts_the_room_policy():
    async def main() -> None:
        hs = Homeserver()
        hs.on("PUT", r"/state/m\.room\.retention/$", {"event_id": "$p"})
        a = await adapter(hs)
        a.rooms.remember(mp.RoomInfo(GROUP, "team", ChatType.GROUP_CHAT))
        await a.set_retention("team", ChatType.GROUP_CHAT, 86_400_000)
        assert hs.body(hs.calls("PUT", "retention")[0]) == {"max_lifetime": 86_400_000}
        with pytest.raises(IMError) as err:
            await a.set_retention("none", ChatType.GROUP_CHAT, 1)
        assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
        async with a:
            pass
    run(main())
