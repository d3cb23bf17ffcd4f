"""MemoryServer and ChatClient's history operations (SyncAdapter)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imstore
from imstore import (
    ChatClient,
    ChatType,
    Direction,
    ErrorCode,
    FetchOptions,
    IMError,
    MemoryServer,
    Message,
    MessageType,
    RetentionPlan,
)

from .conftest import Clock


def run(coro):
    return asyncio.run(coro)


def post_chat(server: MemoryServer, n: int, a: str = "alice", b: str = "bob") -> list[Message]:
    """n messages of history between a and b (not delivered live)."""
    return [server.post(Message.text(b if i % 2 == 0 else a, f"m{i}", sender=a if i % 2 == 0 else b),
                        deliver=False) for i in range(n)]


async def walk(client: ChatClient, conv: str, limit: int, direction: Direction,
               between=None, chat_type: ChatType = ChatType.CHAT) -> list[str]:
    out: list[str] = []
    cursor = None
    opts = FetchOptions(direction=direction, save=False)
    while True:
        page = await client.fetch_history_messages(conv, chat_type, cursor=cursor, limit=limit,
                                                   options=opts)
        ids = [m.msg_id for m in page.items]
        assert ids == sorted(ids)  # oldest first within a page
        out = ids + out if direction == Direction.UP else out + ids
        if between:
            between()
        if page.cursor is None:
            return out
        cursor = page.cursor


@pytest.mark.parametrize("limit", [1, 20, 50])
@pytest.mark.parametrize("direction", [Direction.UP, Direction.DOWN])
def test_paging_returns_every_message_once_in_order(limit, direction, clock):
    server = MemoryServer(clock=clock)
    posted = post_chat(server, 1000)
    store = imstore.open(":memory:", user_id="bob")
    client = ChatClient(store, server.connect("bob"))
    got = run(walk(client, "alice", limit, direction))
    assert got == [m.msg_id for m in posted]
    store.close()


@pytest.mark.parametrize("direction", [Direction.UP, Direction.DOWN])
def test_cursors_survive_new_messages(direction, clock):
    server = MemoryServer(clock=clock)
    posted = post_chat(server, 300)
    extra: list[Message] = []
    store = imstore.open(":memory:", user_id="bob")
    client = ChatClient(store, server.connect("bob"))
    got = run(walk(client, "alice", 20, direction,
                   between=lambda: extra.extend(post_chat(server, 3))))
    want = [m.msg_id for m in posted]
    if direction == Direction.DOWN:  # going forward, the new ones are reached too
        want += [m.msg_id for m in extra[: len(got) - len(want)]]
    assert got == want
    assert len(set(got)) == len(got)
    store.close()


@pytest.mark.parametrize("plan, days", [(RetentionPlan.FREE, 3), (RetentionPlan.BASIC, 7),
                                        (RetentionPlan.ADVANCED, 90), (RetentionPlan.ENTERPRISE, 180)])
def test_retention_by_plan(plan, days):
    clock = Clock()
    server = MemoryServer(plan=plan, clock=clock)
    old = server.post(Message.text("bob", "old", sender="alice"))
    clock.advance_days(days - 0.5)
    recent = server.post(Message.text("bob", "recent", sender="alice"))
    conn = server.connect("bob")
    page = run(conn.fetch_history("alice", ChatType.CHAT, None, 50, FetchOptions()))
    assert [m.msg_id for m in page.items] == [old.msg_id, recent.msg_id]
    clock.advance_days(1)
    page = run(conn.fetch_history("alice", ChatType.CHAT, None, 50, FetchOptions()))
    assert [m.msg_id for m in page.items] == [recent.msg_id]


def test_enterprise_retention_is_configurable():
    clock = Clock()
    server = MemoryServer(plan=RetentionPlan.ENTERPRISE, retention_days=365, clock=clock)
    server.post(Message.text("bob", "a year ago", sender="alice"))
    clock.advance_days(364)
    page = run(server.connect("bob").fetch_history("alice", ChatType.CHAT, None, 50, FetchOptions()))
    assert len(page.items) == 1


def test_filters(clock):
    server = MemoryServer(clock=clock)
    server.create_group("g", ["alice", "bob", "carol"])
    t0 = clock.now
    for i in range(10):
        who = ["alice", "bob", "carol"][i % 3]
        if i % 2:
            server.post(Message.location("g", 1, 2, address=f"a{i}", chat_type=ChatType.GROUP_CHAT,
                                         sender=who))
        else:
            server.post(Message.text("g", f"t{i}", chat_type=ChatType.GROUP_CHAT, sender=who))
    conn = server.connect("alice")

    def fetch(**kw) -> list[Message]:
        return run(conn.fetch_history("g", ChatType.GROUP_CHAT, None, 50, FetchOptions(**kw))).items

    assert {m.type for m in fetch(types=(MessageType.LOCATION,))} == {MessageType.LOCATION}
    assert {m.sender for m in fetch(sender="carol")} == {"carol"}
    assert len(fetch(start_time=t0 + 3, end_time=t0 + 5)) == 3
    mine = [m for m in fetch() if m.sender == "alice"]
    assert all(m.direction == Direction.SEND for m in mine)
    with pytest.raises(IMError) as err:
        run(server.connect("dave").fetch_history("g", ChatType.GROUP_CHAT, None, 10, FetchOptions()))
    assert err.value.code == ErrorCode.INVALID_PARAM


def test_limits_and_bad_cursors(pair):
    async def main():
        for bad in (0, 51):
            with pytest.raises(IMError) as err:
                await pair.ca.fetch_history_messages("bob", ChatType.CHAT, limit=bad)
            assert err.value.code == ErrorCode.QUERY_PARAM_REACHES_LIMIT
            with pytest.raises(IMError) as err:
                await pair.ca.fetch_conversations_from_server(limit=bad)
            assert err.value.code == ErrorCode.QUERY_PARAM_REACHES_LIMIT
        post_chat(pair.server, 3)
        with pytest.raises(IMError) as err:
            await pair.ca.remove_messages_from_server("bob", ChatType.CHAT,
                                                      msg_ids=[f"x{i}" for i in range(51)])
        assert err.value.code == ErrorCode.INVALID_PARAM
        with pytest.raises(IMError) as err:
            await pair.ca.fetch_history_messages("bob", ChatType.CHAT, cursor="garbage!")
        assert err.value.code == ErrorCode.INVALID_PARAM
    run(main())


def test_merge_is_idempotent_keeps_local_state_and_counts_unread_once(pair):
    async def main():
        posted = post_chat(pair.server, 30)
        first = await pair.cb.fetch_history_messages("alice", ChatType.CHAT, limit=10)
        assert pair.b.unread_count("alice") == 5  # alice's 5: bob read none of them anywhere
        assert pair.b.message_count("alice") == 10
        # a message that arrived live (unread) and then comes again with history
        live = pair.server.post(Message.text("bob", "live", sender="alice"))
        assert pair.b.unread_count("alice") == 6
        ext_local = first.items[0]
        ext_local.ext = {"pinned": "yes"}
        pair.b.update_message(ext_local)
        again = await pair.cb.fetch_history_messages("alice", ChatType.CHAT, limit=11)
        assert pair.b.unread_count("alice") == 6  # fetching again never counts twice
        assert pair.b.get_message(live.msg_id).is_read is False
        assert pair.b.message_count("alice") == 11  # the same page twice adds nothing
        older = await pair.cb.fetch_history_messages("alice", ChatType.CHAT, cursor=again.cursor,
                                                     limit=50)
        assert [m.msg_id for m in older.items] == [m.msg_id for m in posted[:20]]
        assert pair.b.get_message(ext_local.msg_id).ext == {"pinned": "yes"}
        assert pair.b.message_count("alice") == 31
        assert pair.b.unread_count("alice") == 16
        assert pair.b.verify().ok
    run(main())


def test_a_count_the_store_cannot_reach_costs_no_history_on_each_listing(pair):
    async def main():
        sent = [pair.server.post(Message.text("alice", f"u{i}", sender="bob")) for i in range(3)]
        store = imstore.open(":memory:", user_id="alice")
        conn = pair.server.connect("alice")
        asked = []
        real = conn.fetch_history

        async def counted(*args, **kwargs):
            asked.append(args[0])
            return await real(*args, **kwargs)

        conn.fetch_history = counted
        client = ChatClient(store, conn)
        await client.fetch_conversations_from_server()  # brings the three unread
        assert (store.unread_count("bob"), len(asked)) == (3, 1)
        store.mark_conversation_read("bob")  # read here, no receipt: the server still says 3
        for _ in range(3):
            [listed] = (await client.fetch_conversations_from_server()).items
            assert listed.unread_count == 0
        assert len(asked) == 2  # one look found nothing to bring; the next listings ask none
        pair.server.post(Message.text("alice", "new", sender="bob"))  # the server's word changed
        await client.fetch_conversations_from_server()
        assert len(asked) == 3 and store.unread_count("bob") == 1
        assert [m.msg_id for m in store.messages("bob")][:3] == [m.msg_id for m in sent]
        store.close()

    run(main())


def test_conversations_from_the_server_appear_locally(pair):
    async def main():
        pair.server.create_group("g", ["alice", "bob"])
        post_chat(pair.server, 2)
        pair.server.post(Message.text("g", "group hello", chat_type=ChatType.GROUP_CHAT, sender="bob"))
        fresh = imstore.open(":memory:", user_id="alice")
        client = ChatClient(fresh, pair.server.connect("alice"))
        seen = []
        page = await client.fetch_conversations_from_server(limit=1)
        seen += page.items
        while page.cursor:
            page = await client.fetch_conversations_from_server(cursor=page.cursor, limit=1)
            seen += page.items
        assert [c.conv_id for c in seen] == ["g", "bob"]
        convs = {c.conv_id: c for c in fresh.conversations()}
        assert convs["g"].last_message.body.text == "group hello"
        # alice has read nothing on the server: the last messages count as unread
        assert convs["g"].chat_type == ChatType.GROUP_CHAT and convs["g"].unread_count == 1
        assert convs["bob"].last_message.body.text == "m1"
        fresh.close()
    run(main())


def test_one_way_delete_and_conversation_delete(pair):
    async def main():
        posted = post_chat(pair.server, 10)
        await pair.ca.fetch_history_messages("bob", ChatType.CHAT, limit=50)
        assert pair.a.message_count("bob") == 10
        gone = [posted[1].msg_id, posted[2].msg_id]
        assert await pair.ca.remove_messages_from_server("bob", ChatType.CHAT, msg_ids=gone) == 2
        mine = await pair.ca.fetch_history_messages("bob", ChatType.CHAT, limit=50)
        assert not set(gone) & {m.msg_id for m in mine.items}
        assert pair.a.message_count("bob") == 8
        theirs = await pair.cb.fetch_history_messages("alice", ChatType.CHAT, limit=50)
        assert len(theirs.items) == 10
        before = posted[5].server_time
        await pair.ca.remove_messages_from_server("bob", ChatType.CHAT, before=before)
        mine = await pair.ca.fetch_history_messages("bob", ChatType.CHAT, limit=50)
        assert [m.msg_id for m in mine.items] == [m.msg_id for m in posted[5:]]
        assert pair.a.message_count("bob") == 5
        await pair.ca.delete_conversation_from_server("bob", ChatType.CHAT)
        assert pair.a.conversation("bob") is None and pair.a.message_count("bob") == 0
        for client, peer in ((pair.ca, "bob"), (pair.cb, "alice")):
            page = await client.fetch_history_messages(peer, ChatType.CHAT, limit=50)
            assert page.items == []
        with pytest.raises(IMError) as err:
            await pair.ca.delete_conversation_from_server("bob", ChatType.CHAT)
        assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
    run(main())


class FailingAdapter:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def fetch_conversations(self, cursor, limit):
        raise self.exc

    async def fetch_history(self, conv_id, chat_type, cursor, limit, options):
        raise self.exc

    async def remove_messages(self, conv_id, chat_type, msg_ids, before):
        raise self.exc

    async def delete_conversation(self, conv_id, chat_type, delete_messages):
        raise self.exc


@pytest.mark.parametrize("exc, code", [
    (IMError(ErrorCode.SERVER_BUSY, "busy"), ErrorCode.SERVER_BUSY),
    (ConnectionResetError("reset"), ErrorCode.NETWORK_ERROR),
    (TimeoutError(), ErrorCode.SERVER_TIMEOUT),
    (RuntimeError("bug"), ErrorCode.SERVER_UNKNOWN_ERROR),
])
def test_adapter_errors_reach_the_caller_as_imerror(store, exc, code):
    client = ChatClient(store, FailingAdapter(exc))
    store.insert_message(Message.text("bob", "kept"))
    with pytest.raises(IMError) as err:
        run(client.fetch_history_messages("bob", ChatType.CHAT))
    assert err.value.code == code
    with pytest.raises(IMError):
        run(client.remove_messages_from_server("bob", ChatType.CHAT, before=10**15))
    assert store.message_count("bob") == 1  # nothing removed locally when the server failed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["post", "fetch", "remove", "remove_before"]),
                          st.sampled_from(["alice", "bob", "carol"]),
                          st.sampled_from(["alice", "bob", "carol", "g"]),
                          st.integers(1, 50), st.randoms(use_true_random=False)),
                min_size=1, max_size=40))
def test_stores_hold_exactly_the_server_view_of_fetched_conversations(ops):
    clock = Clock()
    server = MemoryServer(clock=clock)
    server.create_group("g", ["alice", "bob", "carol"])
    users = ["alice", "bob", "carol"]
    stores = {u: imstore.open(":memory:", user_id=u, search=False) for u in users}
    clients = {u: ChatClient(stores[u], server.connect(u)) for u in users}
    fetched: dict[str, set[tuple[str, ChatType]]] = {u: set() for u in users}

    def conv_of(u: str, target: str) -> tuple[str, ChatType] | None:
        if target == "g":
            return "g", ChatType.GROUP_CHAT
        return None if target == u else (target, ChatType.CHAT)

    async def fetch_all(u: str, conv: str, ct: ChatType, limit: int) -> None:
        cursor = None
        while True:
            page = await clients[u].fetch_history_messages(conv, ct, cursor=cursor, limit=limit)
            if page.cursor is None:
                return
            cursor = page.cursor

    async def main() -> None:
        for op, u, target, n, rnd in ops:
            conv = conv_of(u, target)
            if conv is None:
                continue
            if op == "post":
                server.post(Message.text(conv[0], f"{u}-{n}", chat_type=conv[1], sender=u))
            elif op == "fetch":
                await fetch_all(u, conv[0], conv[1], n)
                fetched[u].add(conv)
            elif conv in fetched[u]:
                local = [m.msg_id for m in stores[u].messages(conv[0], limit=400)]
                if op == "remove" and local:
                    ids = rnd.sample(local, min(len(local), 1 + n % 5))
                    await clients[u].remove_messages_from_server(conv[0], conv[1], msg_ids=ids)
                elif op == "remove_before" and local:
                    t = stores[u].get_message(rnd.choice(local)).server_time
                    await clients[u].remove_messages_from_server(conv[0], conv[1], before=t)
        for u in users:
            for conv_id, ct in fetched[u]:
                await fetch_all(u, conv_id, ct, 50)
                view = server.history(u, conv_id, ct, None, 50, FetchOptions(direction=Direction.DOWN))
                want = []
                while True:
                    want += [m.msg_id for m in view.items]
                    if view.cursor is None:
                        break
                    view = server.history(u, conv_id, ct, view.cursor, 50,
                                          FetchOptions(direction=Direction.DOWN))
                have = [m.msg_id for m in stores[u].messages(conv_id, limit=400)]
                assert have == want

    run(main())
    for s in stores.values():
        assert s.verify().ok
        s.close()




# ------------------------------------------------------------------------------ recall and edit


def _history(server: MemoryServer, user: str, conv: str) -> list[Message]:
    return run(server.connect(user).fetch_history(conv, ChatType.CHAT, None, 50,
                                                  FetchOptions())).items


class Heard:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def __getattr__(self, name: str):
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args: self.events.append((name, args))


def test_recall_within_the_window_reaches_everyone_and_history(clock):
    server = MemoryServer(clock=clock, recall_window_ms=60_000)
    bob = Heard()
    server.connect("bob").attach(bob)
    server.disconnect("bob")  # offline: hears it on return
    m = server.post(Message.text("bob", "oops", sender="alice"))
    at = run(server.connect("alice").recall_message(m))
    assert run(server.connect("alice").recall_message(m)) == at  # again: the same recall
    assert [n for n, _ in bob.events] == ["on_connection_state_changed"]
    server.restore("bob")
    names = [n for n, _ in bob.events if n != "on_connection_state_changed"]
    assert names == ["on_messages", "on_messages_recalled"]
    for user, conv in (("alice", "bob"), ("bob", "alice")):
        (h,) = _history(server, user, conv)
        assert h.recalled_at == at and h.body.text == "" and h.msg_id == m.msg_id


def test_recall_past_the_window_and_of_others_messages_is_refused(clock):
    server = MemoryServer(clock=clock)
    m = server.post(Message.text("bob", "old", sender="alice"))
    with pytest.raises(IMError) as err:
        run(server.connect("bob").recall_message(m))
    assert err.value.code == ErrorCode.INVALID_PARAM
    clock.now += 120_001
    with pytest.raises(IMError) as err:
        run(server.connect("alice").recall_message(m))
    assert err.value.code == ErrorCode.MESSAGE_EXPIRED
    assert _history(server, "bob", "alice")[0].recalled_at is None


def test_edit_replaces_the_body_for_everyone(clock):
    from imstore.message import CustomBody, TextBody

    server = MemoryServer(clock=clock)
    bob = Heard()
    server.connect("bob").attach(bob)
    m = server.post(Message.text("bob", "helo", sender="alice"))
    at = run(server.connect("alice").edit_message(m, TextBody("hello")))
    ((_, (edited,)),) = [e for e in bob.events if e[0] == "on_messages_edited"]
    assert edited[0].body.text == "hello" and edited[0].edited_at == at
    assert edited[0].direction == Direction.RECEIVE
    assert _history(server, "alice", "bob")[0].body.text == "hello"
    for bad in (CustomBody("x"),):
        with pytest.raises(IMError) as err:
            run(server.connect("alice").edit_message(m, bad))
        assert err.value.code == ErrorCode.INVALID_PARAM
    loc = server.post(Message.location("bob", 1.0, 2.0, sender="alice"))
    with pytest.raises(IMError) as err:
        run(server.connect("alice").edit_message(loc, TextBody("x")))
    assert err.value.code == ErrorCode.INVALID_PARAM


def test_receipts_for_an_offline_sender_are_queued_in_order(clock):
    server = MemoryServer(clock=clock)
    alice = Heard()
    server.connect("alice").attach(alice)
    m1 = server.post(Message.text("bob", "one", sender="alice"))
    m2 = server.post(Message.text("bob", "two", sender="alice"))
    server.disconnect("alice")
    bob = server.connect("bob")
    run(bob.send_delivery_ack(server.view(m1, "bob")))
    run(bob.send_read_ack(server.view(m1, "bob")))
    run(bob.send_conversation_ack("alice", ChatType.CHAT))
    assert alice.events == [("on_connection_state_changed", (imstore.ConnectionState.RECONNECTING,))]
    server.restore("alice")
    assert alice.events[2:] == [("on_delivery_acks", ([m1.msg_id],)),
                                ("on_read_acks", ([m1.msg_id],)),
                                ("on_conversation_read", ("bob", "bob", m2.server_time))]


def test_the_read_position_marks_history_read(clock):
    server = MemoryServer(clock=clock)
    posted = [server.post(Message.text("bob", f"m{i}", sender="alice")) for i in range(3)]
    run(server.connect("bob").send_read_ack(server.view(posted[1], "bob")))
    assert [m.is_read for m in _history(server, "bob", "alice")] == [True, True, False]
    assert all(m.is_read for m in _history(server, "alice", "bob"))  # one's own messages


def test_join_makes_a_full_member(clock):
    server = MemoryServer(clock=clock)
    server.create_group("g", ["alice", "bob"])
    server.post(Message.text("g", "before", chat_type=ChatType.GROUP_CHAT, sender="alice"))
    server.join("g", "carol")
    carol = server.connect("carol")
    convs = run(carol.fetch_conversations(None, 20)).items
    assert [c.conv_id for c in convs] == ["g"]
    page = run(carol.fetch_history("g", ChatType.GROUP_CHAT, None, 20, FetchOptions()))
    assert [m.body.text for m in page.items] == ["before"]
    with pytest.raises(IMError) as err:
        server.join("nope", "carol")
    assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
