"""A hostile homeserver, canned (issue 24, the Matrix items; no Synapse): whatever it answers,
the adapter raises only `IMError`, keeps every valid event of a batch, never dies behind a
CONNECTED state, reads no answer past its bounds, and leaves no file or status behind.

Each test is paired with the valid input it must still accept."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imstore
from imstore import ChatClient, ChatType, ConnectionState, DownloadStatus, ErrorCode, IMError, Message
from imstore.adapters.matrix import Bounds, MatrixAdapter
from imstore.adapters.matrix import _mapping as mp
from imstore.message import ImageBody

from .matrix_canned import (
    BASE,
    BOB,
    DM,
    GROUP,
    ME,
    Homeserver,
    Recorder,
    adapter,
    dm_rooms,
    group_alias,
    joined,
    msg_event,
    run,
)

MiB = 1024 * 1024

# --------------------------------------------- item 2: one bad event never fails its batch

BAD_EVENTS: dict[str, Any] = {
    "not an object": 5,
    "a list": ["m.room.message"],
    "content a list": {**msg_event("$b", "x"), "content": ["x"]},
    "content a string": {**msg_event("$b", "x"), "content": "text"},
    "no event id": {k: v for k, v in msg_event("$b", "x").items() if k != "event_id"},
    "sender a number": {**msg_event("$b", "x"), "sender": 5},
    "sender no user id": {**msg_event("$b", "x"), "sender": "bob"},
    "time a string": {**msg_event("$b", "x"), "origin_server_ts": "soon"},
    "time past 2^53": {**msg_event("$b", "x"), "origin_server_ts": 2**70},
    "time negative": {**msg_event("$b", "x"), "origin_server_ts": -5},
}
ODD_EVENTS: dict[str, Any] = {  # mapped with what can be trusted, the rest left out
    "msgtype a number": msg_event("$o", "x", msgtype=5),
    "size a string": msg_event("$o", "p", msgtype="m.image", url="mxc://hs.test/i",
                               info={"size": "big", "w": -3, "h": 1.5}),
    "info a list": msg_event("$o", "p", msgtype="m.video", url=7, info=[1]),
    "geo garbage": msg_event("$o", "here", msgtype="m.location", geo_uri="geo:nan,inf"),
    "namespace a list": msg_event("$o", "x", **{mp.NS: ["ext"]}),
    "ext and extra wrong": msg_event("$o", "x", **{mp.NS: {"ext": [1], "extra": "e",
                                                          "local_id": 5}}),
    "custom params wrong": msg_event("$o", "x", msgtype=mp.CUSTOM_MSGTYPE,
                                     **{mp.NS: {"event": 5, "params": [1]}}),
    "edit of nothing": {**msg_event("$o", "* x"), "content": {
        "msgtype": "m.text", "body": "* x", "m.new_content": 5,
        "m.relates_to": {"rel_type": "m.replace", "event_id": 5}}},
    "bundled edit wrong": {**msg_event("$o", "x"), "unsigned": {
        "m.relations": {"m.replace": {"content": {"m.new_content": {"msgtype": 3}}}}}},
    "unsigned a list": {**msg_event("$o", "x"), "unsigned": [1]},
    "redacted_because a string": {**msg_event("$o", "x"), "unsigned": {"redacted_because": "x"}},
    "redaction of a number": {"type": "m.room.redaction", "event_id": "$o", "sender": BOB,
                              "origin_server_ts": 3, "redacts": 5},
}


def _batch_with(bad: Any) -> dict[str, Any]:
    return joined(DM, msg_event("$ok1", "before", ts=10), bad, msg_event("$ok2", "after", ts=30))


async def _delivered(*answers: Any) -> tuple[MatrixAdapter, Recorder, Homeserver]:
    hs = Homeserver()
    dm_rooms(hs)
    a = await adapter(hs)
    rec = Recorder()
    hs.sync({}, *answers)
    a.attach(rec)
    await hs.asked_sync(2 + len(answers))
    return a, rec, hs


@pytest.mark.parametrize("name", list(BAD_EVENTS))
def test_a_bad_event_is_kept_as_bad_and_the_rest_of_its_batch_goes_in(name: str):
    async def main() -> None:
        a, rec, _ = await _delivered(_batch_with(BAD_EVENTS[name]))
        assert [m.msg_id for m in rec.messages()] == ["$ok1", "$ok2"]
        assert [b.source for b in a.bad_events] == [BAD_EVENTS[name]]
        assert rec.got("on_bad_events")[0][0][0].reason
        assert a.state == ConnectionState.CONNECTED and a.since == "s2"
        await a.close()
    run(main())


@pytest.mark.parametrize("name", list(ODD_EVENTS))
def test_an_odd_event_is_mapped_with_what_can_be_trusted_and_the_batch_goes_in(name: str):
    async def main() -> None:
        a, rec, _ = await _delivered(_batch_with(ODD_EVENTS[name]))
        ids = [m.msg_id for m in rec.messages()]
        assert ids[0] == "$ok1" and ids[-1] == "$ok2" and set(ids) <= {"$ok1", "$o", "$ok2"}
        assert a.state == ConnectionState.CONNECTED and a.since == "s2"
        await a.close()
    run(main())


def test_the_same_batch_with_valid_events_only_is_accepted_whole():
    async def main() -> None:
        a, rec, _ = await _delivered(_batch_with(msg_event("$ok", "middle", ts=20)))
        assert [m.msg_id for m in rec.messages()] == ["$ok1", "$ok", "$ok2"]
        assert a.bad_events == [] and rec.got("on_bad_events") == []
        await a.close()
    run(main())


@pytest.mark.parametrize("alias", ["another room's", "no one's", "this room's"])
def test_a_room_is_the_group_its_state_claims_only_when_the_groups_alias_names_it(alias: str):
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        if alias != "no one's":
            group_alias(hs, GROUP if alias == "another room's" else "!claims:hs.test")
        a = await adapter(hs)
        rec = Recorder()
        claim = {"type": mp.CONV_STATE, "state_key": "", "event_id": "$s", "sender": BOB,
                 "origin_server_ts": 1,
                 "content": {"chat_type": "GROUP_CHAT", "id": "team", "members": [ME, BOB]}}
        hs.sync({}, {"rooms": {"join": {"!claims:hs.test": {
            "state": {"events": [claim]},
            "timeline": {"events": [msg_event("$p", "the team's plan, says bob")]}}}}})
        a.attach(rec)
        await hs.asked_sync(3)
        [m] = rec.messages()
        assert (m.conv_id, m.chat_type) == (
            ("team", ChatType.GROUP_CHAT) if alias == "this room's" else
            ("!claims:hs.test", ChatType.GROUP_CHAT))
        await a.close()
    run(main())


@pytest.mark.parametrize("answer", [
    {"rooms": {"join": {DM: 5}}},
    {"rooms": {"join": {DM: {"timeline": {"events": {"a": 1}}, "state": 3,
                             "ephemeral": {"events": [{"type": "m.receipt", "content": 5},
                                                      {"type": "m.receipt",
                                                       "content": {"$ok1": 5}}]},
                             "unread_notifications": {"notification_count": "lots"}}}}},
    {"rooms": {"join": [DM], "invite": "x", "leave": 5}},
    {"rooms": 5, "to_device": {"events": [5, {"type": mp.CMD_EVENT, "content": "x"},
                                          {"type": mp.RECEIPT_EVENT, "content": 5}]},
     "account_data": {"events": [{"type": "m.direct", "content": [1]}]}},
    {"rooms": {"join": {DM: {"state": {"events": [
        {"type": mp.CONV_STATE, "state_key": "", "content": {"chat_type": ["CHAT"]}}]}}}}},
])
def test_odd_sections_of_a_sync_are_skipped_and_the_loop_goes_on(answer: dict[str, Any]):
    async def main() -> None:
        a, rec, _ = await _delivered(answer, joined(DM, msg_event("$next", "next")))
        assert [m.msg_id for m in rec.messages()] == ["$next"]
        assert a.state == ConnectionState.CONNECTED and a.since == "s3"
        await a.close()
    run(main())


@pytest.mark.parametrize("answer", [
    httpx.Response(200, json={"rooms": {}}),  # no next_batch
    httpx.Response(200, json={"next_batch": 5}),
    httpx.Response(200, json={"next_batch": None}),
    httpx.Response(200, json=[1, 2]),
    httpx.Response(200, text="<html>proxy error</html>"),
    httpx.Response(200, content=b'{"next_batch": "s", "rooms": '),
])
def test_a_malformed_sync_answer_is_reconnecting_never_a_dead_loop(answer: httpx.Response):
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        a = await adapter(hs)
        rec = Recorder()
        hs.sync({}, answer)
        a.attach(rec)
        await hs.asked_sync(3)
        assert a.state == ConnectionState.RECONNECTING and a.sync.running()
        assert a.since == "s1"  # the bad answer moved nothing
        hs.sync(joined(DM, msg_event("$after", "after")))
        await hs.asked_sync(4)
        assert a.state == ConnectionState.CONNECTED
        assert [m.msg_id for m in rec.messages()] == ["$after"]
        await a.close()
    run(main())


# ------------------------------------------------------------------ fuzz, paired with valid

JSON = st.recursive(st.none() | st.booleans() | st.integers()
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                       max_size=3),
                    max_leaves=12)
EVENT_KEYS = st.sampled_from(["type", "event_id", "sender", "origin_server_ts", "content",
                              "unsigned", "redacts", "state_key"])
EVENTS = st.dictionaries(EVENT_KEYS, JSON | st.sampled_from(
    ["m.room.message", "m.room.redaction", "$e", BOB, ME, 5]), max_size=8)
CONTENTS = st.dictionaries(st.sampled_from(
    ["msgtype", "body", "url", "info", "geo_uri", "filename", mp.NS, "m.new_content",
     "m.relates_to"]), JSON | st.sampled_from(["m.text", "m.image", "m.location", "m.video",
                                                "m.file", "m.audio", mp.CUSTOM_MSGTYPE]),
    max_size=9)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=EVENTS, content=CONTENTS)
def test_fuzzed_events_map_to_a_message_none_or_a_bad_event_only(event: dict[str, Any],
                                                                 content: dict[str, Any]):
    room = mp.RoomInfo(DM, "bob", imstore.ChatType.CHAT)
    for ev in (event, {**msg_event("$f", "x"), "content": content}):
        try:
            got = mp.event_to_message(ev, room, ME, "hs.test", history=True, read_up_to=5)
            edit = mp.edit_to_message(ev, room, ME, "hs.test", None)
        except mp.BadEventError:
            continue
        for m in (got, edit):
            assert m is None or isinstance(m, Message)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=50), ts=st.integers(0, 2**53), ext=st.dictionaries(
    st.text(max_size=5), st.integers(), max_size=3))
def test_fuzzed_valid_events_are_accepted(text: str, ts: int, ext: dict[str, int]):
    room = mp.RoomInfo(DM, "bob", imstore.ChatType.CHAT)
    ev = msg_event("$v", text, ts=ts, **{mp.NS: {"ext": ext}})
    got = mp.event_to_message(ev, room, ME, "hs.test")
    assert got is not None and (got.body.text, got.server_time, got.ext) == (text, ts, ext)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=st.dictionaries(st.sampled_from(["rooms", "to_device", "account_data",
                                                "next_batch"]), JSON, max_size=4))
def test_fuzzed_sync_answers_leave_the_loop_running(answer: dict[str, Any]):
    async def main() -> None:
        hs = Homeserver()
        a = await adapter(hs)
        hs.sync({}, httpx.Response(200, json=answer), {})
        a.attach(Recorder())
        await hs.asked_sync(4)
        assert a.sync.running() and a.state == ConnectionState.CONNECTED
        await a.close()
    run(main())


LOGIN_ANSWERS = st.one_of(
    st.dictionaries(st.sampled_from(["access_token", "user_id", "device_id", "x"]), JSON),
    JSON.map(lambda v: httpx.Response(200, content=json.dumps(v).encode())),
    st.binary(max_size=40).map(lambda b: httpx.Response(200, content=b)),
    st.sampled_from([400, 401, 403, 404, 429, 500, 502]))


@settings(max_examples=80, deadline=None)
@given(answer=LOGIN_ANSWERS)
def test_fuzzed_login_answers_raise_only_imerror(answer: Any):
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/login$", answer)
        try:
            a = await MatrixAdapter.login(BASE, "alice", "pw", http_transport=hs.transport)
        except IMError:
            return
        assert a.mxid.startswith("@") and isinstance(a.api.token, str)
        await a.close()
    run(main())


def test_a_login_that_never_answers_is_a_timeout_not_a_hang():
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> None:
        with pytest.raises(IMError) as err:
            await MatrixAdapter.login(BASE, "alice", "pw", bounds=Bounds(answer_timeout=0.01),
                                      http_transport=httpx.MockTransport(never))
        assert err.value.code == ErrorCode.SERVER_TIMEOUT
    run(main())


# ----------------------------------------------- item 8: sizes, times, big syncs, receipts


class Endless:
    """A body of ``total`` bytes streamed in 1 MiB chunks of one shared buffer, counting how
    much was asked for: the adapter must stop reading at its bound, not allocate the body."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.chunk = b" " * MiB

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        while self.sent < self.total:
            self.sent += len(self.chunk)
            yield self.chunk


def test_a_1_gb_sync_answer_is_refused_in_bounded_memory():
    async def main() -> None:
        body = Endless(1024 * MiB)
        hs = Homeserver()
        a = await adapter(hs)
        hs.sync({}, lambda r: httpx.Response(200, content=body))
        a.attach(Recorder())
        tracemalloc.start()
        try:
            await hs.asked_sync(3)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert a.state == ConnectionState.RECONNECTING and a.sync.running()
        assert body.sent <= a.api.bounds.max_answer_bytes + MiB  # it stopped at the bound
        assert peak < 16 * MiB  # references to one shared chunk, never the 1 GB (nor the bound)
        await a.close()
    run(main())


def test_a_declared_1_gb_answer_is_refused_before_a_byte_is_read():
    async def main() -> None:
        body = Endless(1024 * MiB)
        hs = Homeserver()
        hs.on("POST", r"/login$", lambda r: httpx.Response(
            200, content=body, headers={"content-length": str(1024 * MiB)}))
        with pytest.raises(IMError) as err:
            await MatrixAdapter.login(BASE, "alice", "pw", http_transport=hs.transport)
        assert err.value.code == ErrorCode.SERVER_UNKNOWN_ERROR and body.sent == 0
    run(main())


def test_a_1_gb_download_is_streamed_refused_and_leaves_nothing(tmp_path: Path):
    async def main() -> None:
        body = Endless(1024 * MiB)
        hs = Homeserver()
        hs.on("GET", r"/media/download/", lambda r: httpx.Response(200, content=body))
        a = await adapter(hs)
        with pytest.raises(IMError) as err:
            await a.download("mxc://hs.test/huge", str(tmp_path / "huge"))
        assert err.value.code == ErrorCode.FILE_TOO_LARGE
        assert body.sent <= a.api.bounds.max_media_bytes + MiB
        assert list(tmp_path.iterdir()) == []
        await a.close()
    run(main())


def test_a_sync_that_never_finishes_is_a_timeout_and_reconnecting():
    async def main() -> None:
        async def stall(request: httpx.Request) -> httpx.Response:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        hs = Homeserver()
        a = await adapter(hs, bounds=Bounds(answer_timeout=0.01))
        a.sync.poll_timeout = 0.0
        rec = Recorder()
        hs.sync({}, stall, {})
        a.attach(rec)
        await hs.asked_sync(4)
        assert rec.states()[:2] == [ConnectionState.RECONNECTING, ConnectionState.CONNECTED]
        await a.close()
    run(main())


def test_a_10000_event_sync_yields_to_the_event_loop_between_slices():
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        a = await adapter(hs)
        order: list[str] = []

        class Handler(Recorder):
            def on_messages(self, messages):  # type: ignore[no-untyped-def]
                order.append("messages")
                super().__getattr__("on_messages")(messages)

        async def other_work() -> None:
            while True:
                order.append("other")
                await asyncio.sleep(0)

        rec = Handler()
        big = joined(DM, *(msg_event(f"$m{i}", "x", ts=i) for i in range(10_000)))
        hs.sync({}, big)
        a.attach(rec)
        await hs.asked_sync(2)
        ticker = asyncio.get_running_loop().create_task(other_work())
        await hs.asked_sync(3)
        ticker.cancel()
        assert len(rec.messages()) == 10_000
        first, last = order.index("messages"), len(order) - 1 - order[::-1].index("messages")
        assert order.count("messages") == 10_000 // a.api.bounds.sync_slice
        assert "other" in order[first:last]  # other work ran while the batch went in
        await a.close()
    run(main())


def test_2000_received_messages_get_every_delivery_receipt_in_a_few_requests(tmp_path: Path):
    async def main() -> None:
        hs = Homeserver()
        dm_rooms(hs)
        hs.on("PUT", r"/sendToDevice/", {})
        a = await adapter(hs)
        store = imstore.open(":memory:", user_id="alice")
        client = ChatClient(store, a, auto_download=False, download_dir=str(tmp_path))
        try:
            hs.sync({}, joined(DM, *(msg_event(f"$m{i}", "x", ts=i + 1) for i in range(2000))))
            await hs.asked_sync(3)
            await client.wait_idle()
            bodies = [hs.body(r) for r in hs.calls("PUT", "/sendToDevice/")]
            acked = [i for b in bodies for i in b["messages"][BOB]["*"]["event_ids"]]
            assert sorted(acked) == sorted(f"$m{i}" for i in range(2000))
            assert len(bodies) <= 2000 // 500 + 1
        finally:
            client.close()
            await a.close()
            store.close()
    run(main())


# ---------------------------------------- item 12: media past the limit, status not stuck


@pytest.mark.parametrize("thumbnail", [False, True])
def test_media_past_the_limit_leave_no_file_and_a_failed_status(tmp_path: Path, thumbnail: bool):
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/media/(download|thumbnail)/", lambda r: httpx.Response(
            200, content=Endless(1024 * MiB)))
        a = await adapter(hs, bounds=Bounds(max_media_bytes=2 * MiB))
        a.sync.paused = True
        store = imstore.open(":memory:", user_id="alice")
        client = ChatClient(store, a, auto_download=False, download_dir=str(tmp_path))
        msg = Message.image("alice", __file__, sender="bob")
        msg.body = ImageBody(remote_url="mxc://hs.test/big", display_name="big.png",
                             thumbnail_url="mxc://hs.test/big#thumbnail")
        msg.msg_id, msg.server_time = "$img", 5
        store.merge_received([msg])
        try:
            with pytest.raises(IMError):
                if thumbnail:
                    await client.download_thumbnail("$img")
                else:
                    await client.download_attachment("$img")
            body = store.get_message("$img").body
            status = body.thumbnail_status if thumbnail else body.download_status
            assert status == DownloadStatus.FAILED
            assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
        finally:
            client.close()
            await a.close()
            store.close()
    run(main())
