"""The Matrix adapter's sync loop, offline against canned ``/sync`` answers: what the handler
hears, in which order, and what the connection state says."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from imstore import ChatType, ConnectionState, Direction, MessageStatus, MessageType
from imstore.adapters.matrix import _mapping as mp

from .matrix_canned import (
    BOB,
    DM,
    GROUP,
    ME,
    Homeserver,
    Recorder,
    adapter,
    dm_rooms,
    group_room,
    joined,
    keeping_adapter,
    msg_event,
    run,
    started,
)


def test_the_first_sync_delivers_only_what_the_user_has_not_read():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        receipt = {"type": "m.receipt", "content": {"$1": {"m.read": {ME: {"ts": 5}}}}}
        a, rec = await started(hs, joined(DM, msg_event("$1", "old", ts=10),
                                           msg_event("$2", "new", ts=20),
                                           ephemeral={"events": [receipt]}))
        await hs.asked_sync(2)
        assert [m.msg_id for m in rec.messages()] == ["$2"]
        m = rec.messages()[0]
        assert (m.conv_id, m.chat_type, m.sender, m.to, m.body.text) == (
            "bob", ChatType.CHAT, "bob", "alice", "new")
        assert a.since == "s1" and a.state == ConnectionState.CONNECTED
        await a.close()
        assert rec.states()[-1] == ConnectionState.DISCONNECTED
    run(main())


def test_later_syncs_deliver_messages_then_edits_recalls_and_receipts():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        edit = {"type": "m.room.message", "event_id": "$e", "sender": BOB,
                "origin_server_ts": 40,
                "content": mp.edit_content("$1", MessageType.TEXT, mp.TextBody("fixed"))}
        redaction = {"type": "m.room.redaction", "event_id": "$r", "sender": BOB,
                     "origin_server_ts": 50, "redacts": "$2"}
        # this device's own message comes back with its transaction id: not delivered again
        mine = {**msg_event("$m", "mine", sender=ME, ts=30), "unsigned": {"transaction_id": "t"}}
        receipt = {"type": "m.receipt", "content": {"$m": {"m.read": {BOB: {"ts": 60}}}}}
        a, rec = await started(hs, {}, joined(
            DM, msg_event("$1", "hi", ts=10), msg_event("$2", "oops", ts=20), mine, edit,
            redaction, ephemeral={"events": [receipt]}))
        await hs.asked_sync(3)
        names = [n for n, _ in rec.calls if n != "on_connection_state_changed"]
        assert names == ["on_messages", "on_messages_edited", "on_messages_recalled",
                         "on_read_acks", "on_conversation_read"]
        assert [m.msg_id for m in rec.messages()] == ["$1", "$2"]
        edited = rec.got("on_messages_edited")[0][0][0]
        assert (edited.msg_id, edited.body.text, edited.edited_at, edited.sender,
                edited.server_time) == ("$1", "fixed", 40, "bob", 10)
        assert rec.got("on_messages_recalled") == [(["$2"],)]
        assert rec.got("on_read_acks") == [(["$m"],)]
        assert rec.got("on_conversation_read") == [("bob", "bob", 30)]
        await a.close()
    run(main())


def test_group_receipts_become_group_read_acks_once_per_reader():
    async def main() -> None:
        hs = Homeserver()
        group_room(hs)
        mine = msg_event("$g1", "ack me", sender=ME, ts=10,
                         **{mp.NS: {"need_group_ack": True}})
        receipt = {"type": "m.receipt", "content": {"$g1": {"m.read": {BOB: {"ts": 99}}}}}
        a, rec = await started(hs, {}, joined(GROUP, mine, ephemeral={"events": [receipt]}),
                                joined(GROUP, ephemeral={"events": [receipt]}))
        await hs.asked_sync(4)
        acks = rec.got("on_group_read_acks")
        assert len(acks) == 1
        ack = acks[0][0][0]
        assert (ack.msg_id, ack.conv_id, ack.reader, ack.timestamp) == ("$g1", "team", "bob", 99)
        page = await a.fetch_group_read_acks("$g1", None, 10)
        assert [r.reader for r in page.items] == ["bob"] and page.cursor is None
        await a.close()
    run(main())


def test_to_device_delivery_receipts_and_commands_arrive():
    async def main() -> None:
        hs = Homeserver()
        to_device = {"events": [
            {"type": mp.RECEIPT_EVENT, "sender": BOB,
             "content": {"kind": "delivered", "event_ids": ["$x", 5]}},
            {"type": mp.CMD_EVENT, "sender": BOB,
             "content": {"action": "typing", "params": {"on": True}, "local_id": "L1",
                         "chat_type": "CHAT", "ts": 7}},
            {"type": mp.CMD_EVENT, "sender": BOB, "content": {"chat_type": "NOPE"}}]}
        a, rec = await started(hs, {}, {"to_device": to_device})
        await hs.asked_sync(3)
        assert rec.got("on_delivery_acks") == [(["$x"],)]
        cmd = rec.messages()[0]
        assert (cmd.type, cmd.msg_id, cmd.body.action, cmd.conv_id, cmd.server_time) == (
            MessageType.CMD, "L1", "typing", "bob", 7)
        assert [b.where for b in a.bad_events] == ["to_device"]
        await a.close()
    run(main())


def test_a_limited_timeline_is_back_filled_down_to_the_last_position():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        hs.on("GET", r"/rooms/!dm:hs.test/messages$",
              {"chunk": [msg_event("$b2", "two", ts=12), msg_event("$b1", "one", ts=11)],
               "end": "p2"}, {"chunk": []})
        limited = {"rooms": {"join": {DM: {"timeline": {
            "events": [msg_event("$3", "three", ts=13)], "limited": True, "prev_batch": "p1"}}}}}
        a, rec = await started(hs, {}, limited)
        await hs.asked_sync(3)
        assert [m.msg_id for m in rec.messages()] == ["$b1", "$b2", "$3"]
        first = hs.params(hs.calls("GET", "/messages$")[0])
        assert (first["from"], first["to"], first["dir"]) == ("p1", "s1", "b")
        await a.close()
    run(main())


def test_invites_are_joined_left_rooms_forgotten_and_m_direct_read():
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/join/", {"room_id": "!new:hs.test"})
        hs.on("GET", r"/rooms/!d2:hs.test/state/", 404)
        answer = {"account_data": {"events": [
            {"type": "m.direct", "content": {BOB: ["!d2:hs.test"], "x": "bad"}}]},
            "rooms": {"invite": {"!new:hs.test": {}}, "leave": {DM: {}},
                      "join": {"!d2:hs.test": {"timeline": {"events": [
                          msg_event("$d", "direct", ts=3)]}}}}}
        a, rec = await started(hs, {}, answer)
        await hs.asked_sync(3)
        assert hs.calls("POST", r"/join/!new:hs.test")
        assert a.rooms.direct == {BOB: ["!d2:hs.test"]}
        assert rec.messages()[0].conv_id == "bob"
        assert rec.messages()[0].chat_type == ChatType.CHAT
        await a.close()
    run(main())


def test_a_failing_sync_is_reconnecting_until_one_succeeds():
    async def main() -> None:
        hs = Homeserver()
        a, rec = await started(hs, {}, 502, {"next_batch": 5}, httpx.Response(200, text="x"),
                                {})
        await hs.asked_sync(6)
        assert rec.states() == [ConnectionState.RECONNECTING, ConnectionState.CONNECTED]
        assert a.state == ConnectionState.CONNECTED and a.since == "s5"
        await a.close()
    run(main())


def test_a_revoked_token_ends_the_loop_disconnected():
    async def main() -> None:
        hs = Homeserver()
        a, _ = await started(hs, httpx.Response(401, json={"errcode": "M_UNKNOWN_TOKEN"}))
        await hs.asked_sync(1)
        while a.sync.running():
            await a.sync.task  # type: ignore[misc]
        assert a.state == ConnectionState.DISCONNECTED
        await a.close()
    run(main())


def test_pause_and_resume_go_on_from_the_same_position():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        a, rec = await started(hs, {})
        await a.wait_synced(5)
        a.pause()
        assert a.state == ConnectionState.RECONNECTING
        hs.sync(joined(DM, msg_event("$p", "while away", ts=9)))
        a.resume()
        await a.wait_synced(5)
        await hs.asked_sync(3)
        assert [m.msg_id for m in rec.messages()] == ["$p"]
        assert "since=s1" in str(hs.calls("GET", "/sync$")[-1].url)
        await a.close()
    run(main())


def test_a_handler_that_fails_does_not_stop_the_loop():
    class Broken(Recorder):
        def on_messages(self, messages):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug in the app")

    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        a = await adapter(hs)
        rec = Broken()
        hs.sync({}, joined(DM, msg_event("$1", "x")), {})
        a.attach(rec)
        await hs.asked_sync(4)
        assert a.state == ConnectionState.CONNECTED and a.since == "s3"
        await a.close()
    run(main())


MALLORY = "@mallory:hs.test"


def _edit(eid: str, target: str, text: str, sender: str, ts: int) -> dict:
    return {"type": "m.room.message", "event_id": eid, "sender": sender, "origin_server_ts": ts,
            "content": mp.edit_content(target, MessageType.TEXT, mp.TextBody(text))}


def _redaction(eid: str, target: str, sender: str, ts: int) -> dict:
    return {"type": "m.room.redaction", "event_id": eid, "sender": sender,
            "origin_server_ts": ts, "redacts": target}


def test_edits_and_redactions_apply_only_from_the_sender_or_a_moderator():
    async def main() -> None:
        hs = Homeserver()
        group_room(hs)
        levels = {"type": "m.room.power_levels", "state_key": "", "event_id": "$pl",
                  "sender": ME, "origin_server_ts": 1,
                  "content": {"users": {ME: 100, "@mod:hs.test": 50}, "redact": 50}}
        a, rec = await started(hs, {}, joined(
            GROUP, levels, msg_event("$1", "bob's", ts=10), msg_event("$2", "bob's too", ts=11),
            msg_event("$3", "and this", ts=12),
            _edit("$e1", "$1", "forged", MALLORY, 20), _edit("$e2", "$2", "fixed", BOB, 21),
            _redaction("$r1", "$1", MALLORY, 22), _redaction("$r2", "$2", "@mod:hs.test", 23),
            _redaction("$r3", "$3", BOB, 24)))
        await hs.asked_sync(3)
        assert [(m.msg_id, m.body.text) for (ms,) in rec.got("on_messages_edited") for m in ms] \
            == [("$2", "fixed")]
        assert rec.got("on_messages_recalled") == [(["$2", "$3"], {"$2": "mod"})]
        await a.close()
    run(main())


def test_what_another_device_of_the_user_sends_arrives_as_sent():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        phone = msg_event("$p", "from my phone", sender=ME, ts=10)
        here = {**msg_event("$h", "from here", sender=ME, ts=11),
                "unsigned": {"transaction_id": "t1"}}
        edit = _edit("$pe", "$p", "edited on the phone", ME, 12)
        a, rec = await started(hs, {}, joined(DM, phone, here, edit))
        await hs.asked_sync(3)
        (got,) = rec.messages()
        assert (got.msg_id, got.conv_id, got.direction, got.status) == (
            "$p", "bob", Direction.SEND, MessageStatus.SUCCESS)
        assert [m.body.text for (ms,) in rec.got("on_messages_edited") for m in ms] == [
            "edited on the phone"]
        await a.close()
    run(main())


def test_a_read_on_another_device_of_the_user_is_a_conversation_read_by_the_user():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        receipt = {"type": "m.receipt", "content": {"$2": {"m.read": {ME: {"ts": 60}}}}}
        marker = {"type": "m.fully_read", "content": {"event_id": "$3"}}
        a, rec = await started(hs, {}, joined(DM, msg_event("$1", "a", ts=10),
                                               msg_event("$2", "b", ts=20),
                                               msg_event("$3", "c", ts=30)),
                                joined(DM, ephemeral={"events": [receipt]}),
                                joined(DM, account_data={"events": [marker]}),
                                joined(DM, account_data={"events": [marker]}))
        await hs.asked_sync(5)
        assert rec.got("on_conversation_read") == [("bob", "alice", 20), ("bob", "alice", 30)]
        await a.close()
    run(main())


def test_a_restarted_adapter_goes_on_from_the_position_and_rooms_an_earlier_run_kept():
    async def main() -> None:
        hs = Homeserver()
        kept: dict[str, dict] = {}
        first = await keeping_adapter(hs, kept)
        dm_rooms(hs)
        rec = Recorder()
        hs.sync(joined(DM, msg_event("$1", "hi", ts=10)))
        first.attach(rec)
        await hs.asked_sync(2)
        await first.close()
        (state,) = kept.values()
        assert state["since"] == "s1" and [DM, "bob", "CHAT"] in state["rooms"]
        # the next run: a new session on the same store knows the room before any sync
        hs.sync({**joined(DM, msg_event("$2", "while closed", ts=20)), "next_batch": "s2"})
        second = await keeping_adapter(hs, kept)
        assert second.rooms.by_conv[(ChatType.CHAT, "bob")] == DM
        rec = Recorder()
        second.attach(rec)
        await hs.asked_sync(4)
        since = [parse_qs(urlsplit(str(r.url)).query).get("since") for r in hs.requests
                 if r.url.path.endswith("/sync")]
        assert since[-2:] == [["s1"], ["s2"]]
        assert [m.msg_id for m in rec.messages()] == ["$2"]
        assert next(iter(kept.values()))["since"] == "s2"
        await second.close()
    run(main())


def test_a_direct_invite_is_joined_recorded_in_m_direct_and_a_chat_with_its_inviter():
    async def main() -> None:
        hs = Homeserver()
        room = "!fromnio:hs.test"
        hs.on("POST", r"/join/", {"room_id": room})
        hs.on("PUT", r"/account_data/m\.direct$", {})
        member = {"type": "m.room.member", "state_key": ME, "sender": BOB,
                  "content": {"membership": "invite", "is_direct": True}}
        invite = {"rooms": {"invite": {room: {"invite_state": {"events": [member]}}}},
                  "account_data": {"events": [{"type": "m.direct",
                                               "content": {"@carol:hs.test": ["!c:hs.test"]}}]}}
        a, rec = await started(hs, invite, joined(room, msg_event("$1", "hi", ts=10)))
        await hs.asked_sync(3)
        assert hs.body(hs.calls("PUT", r"m\.direct")[0]) == {"@carol:hs.test": ["!c:hs.test"],
                                                            BOB: [room]}
        (got,) = rec.messages()
        assert (got.conv_id, got.chat_type) == ("bob", ChatType.CHAT)
        assert not hs.calls("GET", r"/state/")  # m.direct said what the room is
        await a.close()
    run(main())


def test_a_batch_the_app_failed_to_store_is_asked_again_after_a_restart():
    """The position is kept only for a batch the handler took: when storing it raised (a full
    disk, say), the next run starts before it again instead of skipping it for good."""
    class Failing(Recorder):
        def on_messages(self, messages):  # type: ignore[no-untyped-def]
            if any(m.msg_id == "$2" for m in messages):
                raise OSError("database or disk is full")
            self.calls.append(("on_messages", (messages,)))

    async def main() -> None:
        hs = Homeserver()
        kept: dict[str, dict] = {}
        first = await keeping_adapter(hs, kept)
        dm_rooms(hs)
        hs.sync(joined(DM, msg_event("$1", "kept", ts=10)))
        hs.sync({**joined(DM, msg_event("$2", "lost to a full disk", ts=20)),
                 "next_batch": "s2"})
        rec = Failing()
        first.attach(rec)
        await hs.asked_sync(3)
        await first.close()
        assert next(iter(kept.values()))["since"] == "s1"  # not s2: $2 was never stored
    run(main())
