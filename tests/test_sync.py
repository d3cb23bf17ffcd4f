"""History sync on the store side: tombstones, server read state, stretches and gaps, the timeline
page `ChatClient.load_messages` is built on, keyset paging of type filters and search."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import imstore
from imstore import (
    ChatClient,
    ChatType,
    Conversation,
    CursorResult,
    Direction,
    ErrorCode,
    FetchOptions,
    IMError,
    Message,
    MessageListener,
    MessageStore,
    MessageType,
)
from imstore.store import Gap, Span

T0 = 1_700_000_000_000


def server_msg(i: int, *, peer: str = "bob", is_read: bool | None = None,
               t: int | None = None) -> Message:
    """A received message as a server sends it: server id and time."""
    m = Message.text("alice", f"m{i}", sender=peer, msg_id=f"S{i:04d}")
    m.server_time = T0 + i if t is None else t
    m.local_time = m.server_time
    m.is_read = is_read
    return m


def texts(msgs: list[Message]) -> list[str]:
    return [m.body.text for m in msgs]  # type: ignore[union-attr]


def ids(msgs: list[Message]) -> list[str]:
    return [m.msg_id for m in msgs]


# ------------------------------------------------------------------------------------ tombstones


def test_a_deleted_message_does_not_come_back_with_history(store: MessageStore):
    store.save_history([server_msg(1), server_msg(2)])
    assert store.delete_message("S0001")
    result = store.merge_history([server_msg(1), server_msg(2)])
    assert result.new == []
    assert result.suppressed == ["S0001"]
    assert ids(store.messages("bob")) == ["S0002"]


def test_a_deleted_message_does_not_come_back_live(store: MessageStore):
    store.save_received([server_msg(1)])
    store.delete_message("S0001")
    result = store.merge_received([server_msg(1)])
    assert (result.new, result.suppressed) == ([], ["S0001"])
    assert store.unread_count("bob") == 0


def test_messages_deleted_by_ids_stay_deleted(store: MessageStore):
    store.save_history([server_msg(i) for i in range(5)])
    assert store.delete_message_ids(["S0001", "S0003", "nope"]) == 2
    store.save_history([server_msg(i) for i in range(5)])
    assert ids(store.messages("bob")) == ["S0000", "S0002", "S0004"]


def test_deleting_by_the_local_id_buries_the_server_id_too(store: MessageStore):
    sent = store.insert_message(Message.text("bob", "hello", msg_id="L1"))
    store.mark_sent(sent.msg_id, "S0100", T0 + 100)
    assert store.delete_message("L1")
    assert store.is_deleted("S0100") and store.is_deleted("L1")
    mine = Message.text("bob", "hello", sender="alice", msg_id="S0100")
    mine.server_time = T0 + 100
    assert store.merge_history([mine]).suppressed == ["S0100"]
    assert store.message_count("bob") == 0


@pytest.mark.skipif("local_id" not in Message.__dataclass_fields__,
                    reason="Message.local_id lands with the store helper's branch")
def test_a_deleted_unsent_copy_keeps_the_server_copy_out(store: MessageStore):
    # a send that answered 300 but got through: the user deletes the FAIL copy
    store.insert_message(Message.text("bob", "hello", msg_id="L7", timestamp=T0 + 5))
    store.delete_message("L7")
    server_copy = Message.text("bob", "hello", sender="alice", msg_id="S0007")
    server_copy.server_time = T0 + 7
    server_copy.local_id = "L7"  # type: ignore[attr-defined]
    assert store.merge_history([server_copy]).suppressed == ["S0007"]


def test_a_time_range_delete_keeps_that_range_out(store: MessageStore):
    store.save_history([server_msg(i) for i in (1, 5, 9)])
    assert store.delete_messages("bob", start_time=T0, end_time=T0 + 6) == 2
    # 3 was never stored here, but lies in the deleted range
    result = store.merge_history([server_msg(i) for i in (1, 3, 5, 9)])
    assert sorted(result.suppressed) == ["S0001", "S0003", "S0005"]
    assert ids(store.messages("bob")) == ["S0009"]


def test_a_range_tombstone_ends_at_the_newest_message_stored(store: MessageStore):
    store.save_history([server_msg(1), server_msg(2)])
    store.delete_messages("bob", start_time=T0, end_time=T0 + 1000)
    assert ids(store.merge_history([server_msg(3)]).new) == ["S0003"]


def test_a_cleared_conversation_stays_empty_and_a_new_message_appears_alone(store: MessageStore):
    store.save_history([server_msg(i) for i in range(1, 4)])
    store.save_received([server_msg(4)])
    assert store.delete_conversation("bob", delete_messages=True)
    store.save_history([server_msg(i) for i in range(1, 5)])  # a history page
    store.save_history([server_msg(4)])  # the conversation list's last message
    assert store.message_count("bob") == 0
    assert store.conversation("bob") is None
    assert ids(store.merge_received([server_msg(5)]).new) == ["S0005"]
    assert ids(store.messages("bob")) == ["S0005"]
    assert store.unread_count("bob") == 1


def test_removing_a_conversation_but_not_its_messages_leaves_no_tombstone(store: MessageStore):
    store.save_history([server_msg(1), server_msg(3)])
    store.delete_conversation("bob", delete_messages=False)
    result = store.merge_history([server_msg(i) for i in (1, 2, 3)])
    assert (ids(result.new), result.suppressed) == (["S0002"], [])
    assert not store.is_deleted("S0001")


def test_inserting_a_deleted_message_again_lifts_its_tombstone(store: MessageStore):
    store.save_history([server_msg(1)])
    store.delete_message("S0001")
    store.insert_message(server_msg(1))
    assert not store.is_deleted("S0001")
    assert store.verify().repaired["tombstones_of_stored_messages"] == 0


def test_verify_repairs_a_tombstone_of_a_stored_message(store: MessageStore,
                                                        raw_sql: Callable[..., int]):
    store.save_history([server_msg(1)])
    raw_sql(store, "INSERT INTO tombstone (msg_id, conv_id) VALUES ('S0001', 'bob')")
    report = store.verify()
    assert report.repaired["tombstones_of_stored_messages"] == 1
    assert not store.is_deleted("S0001")
    assert store.verify().ok


# ------------------------------------------------------------------------------ read state


@pytest.mark.parametrize(("server_says", "unread"), [(False, 1), (None, 0), (True, 0)])
def test_history_takes_the_read_state_the_server_says(store: MessageStore, server_says, unread):
    store.save_history([server_msg(1, is_read=server_says)])
    assert store.unread_count("bob") == unread


def test_a_message_counted_from_history_is_not_counted_again_live(store: MessageStore):
    store.save_history([server_msg(1, is_read=False)])
    result = store.merge_received([server_msg(1)])
    assert result.new == []
    assert store.unread_count("bob") == 1


def test_a_message_counted_live_is_not_counted_again_from_history(store: MessageStore):
    store.save_received([server_msg(1)])
    assert store.merge_history([server_msg(1, is_read=False)]).new == []
    assert store.unread_count("bob") == 1


def test_the_server_saying_read_makes_a_stored_unread_message_read(store: MessageStore):
    store.save_received([server_msg(1), server_msg(2)])
    result = store.merge_history([server_msg(1, is_read=True), server_msg(2, is_read=None)])
    assert result.read == ["S0001"]
    assert store.unread_count("bob") == 1
    assert store.get_message("S0001").is_read is True


def test_the_server_saying_unread_keeps_a_message_read_here(store: MessageStore):
    store.save_received([server_msg(1)])
    store.mark_message_read("S0001")
    store.save_history([server_msg(1, is_read=False)])
    assert store.unread_count("bob") == 0


def test_mark_conversation_read_up_to_a_message(store: MessageStore):
    store.save_received([server_msg(i) for i in range(5)])
    assert store.mark_conversation_read("bob", up_to_msg_id="S0002") == 3
    assert store.unread_count("bob") == 2
    assert [m.is_read for m in store.messages("bob")] == [True] * 3 + [False] * 2
    assert store.mark_conversation_read("bob", up_to_msg_id="S0001") == 0
    assert store.verify().ok


def test_mark_conversation_read_up_to_a_message_of_another_conversation(store: MessageStore):
    store.save_received([server_msg(1), server_msg(2, peer="carol")])
    with pytest.raises(IMError) as err:
        store.mark_conversation_read("bob", up_to_msg_id="S0002")
    assert err.value.code == ErrorCode.INVALID_PARAM
    assert store.unread_count("bob") == 1


# ----------------------------------------------------------------------------------- gaps


def test_a_conversation_never_synced_is_one_gap(store: MessageStore):
    assert store.gaps("bob") == [Gap("bob", None, None)]
    assert store.stretches("bob") == []


def test_the_newest_page_is_contiguous_up_to_the_live_edge(store: MessageStore):
    page = [server_msg(i) for i in range(10, 20)]
    store.save_history(page, span=Span("bob", T0 + 10, None, older_cursor="c10"))
    assert store.gaps("bob") == [Gap("bob", None, T0 + 10, newer_msg_id="S0010",
                                     older_cursor="c10")]


def test_live_messages_open_a_stretch_up_to_the_live_edge(store: MessageStore):
    # after the oldest's time: others may share it and lie before it
    store.save_received([server_msg(5), server_msg(3)])
    assert store.stretches("bob") == [Span("bob", T0 + 4, None)]
    store.save_received([server_msg(8)])
    assert store.stretches("bob") == [Span("bob", T0 + 4, None)]


def test_the_conversation_list_last_message_opens_a_live_stretch(store: MessageStore):
    last = server_msg(45, is_read=False)
    store.save_history([last], span=Span.after("bob", last.timestamp))
    assert [g.before_time for g in store.gaps("bob")] == [T0 + 46]
    assert store.gaps("bob")[0].newer_msg_id is None  # its time is still to be fetched


def test_forgetting_the_live_edge_reopens_the_newest_time(store: MessageStore):
    store.save_history([server_msg(i) for i in range(5)], span=Span("bob", None, None))
    store.forget_live_edge("bob")
    assert store.stretches("bob") == [Span("bob", None, T0 + 3)]
    store.save_history([server_msg(9)], span=Span.after("carol", T0))  # another conversation
    store.forget_live_edge("carol")  # a stretch holding no server message goes
    assert store.stretches("carol") == [] and store.stretches("bob") == [Span("bob", None, T0 + 3)]


def test_stretches_that_touch_merge_and_keep_their_outer_cursors(store: MessageStore):
    store.save_history([], span=Span("bob", T0 + 100, T0 + 200, "older-a", "newer-a"))
    store.save_history([], span=Span("bob", T0 + 300, T0 + 400, "older-b", "newer-b"))
    assert len(store.gaps("bob")) == 3
    store.save_history([], span=Span("bob", T0 + 201, T0 + 299))
    assert store.stretches("bob") == [Span("bob", T0 + 100, T0 + 400, "older-a", "newer-b")]


def test_stretches_that_overlap_merge(store: MessageStore):
    store.save_history([], span=Span("bob", T0 + 100, T0 + 200))
    store.save_history([], span=Span("bob", T0 + 150, None))
    store.save_history([], span=Span("bob", None, T0 + 120))
    assert store.stretches("bob") == [Span("bob", None, None)]
    assert store.gaps("bob") == []


def test_gaps_name_the_messages_on_either_side(store: MessageStore):
    store.save_history([server_msg(i) for i in (1, 2)], span=Span("bob", None, T0 + 2))
    store.save_history([server_msg(i) for i in (8, 9)], span=Span("bob", T0 + 8, None))
    assert store.gaps("bob") == [Gap("bob", T0 + 2, T0 + 8, older_msg_id="S0002",
                                     newer_msg_id="S0008")]


def test_a_local_delete_opens_no_gap(store: MessageStore):
    store.save_history([server_msg(i) for i in range(5)], span=Span("bob", None, None))
    store.delete_message("S0002")
    store.delete_messages("bob", start_time=T0 + 3, end_time=T0 + 3)
    assert store.gaps("bob") == []


def at(x: int | None) -> int | None:
    return None if x is None else T0 + x


@pytest.mark.parametrize(("direction", "cursor", "first", "start", "end", "span"), [
    # UP from the newest: up to the live edge, not the time at the cut (more may share it)
    (Direction.UP, "c", True, None, None, (11, None, "c", None)),
    (Direction.UP, None, True, None, None, (None, None, None, None)),
    # UP in a window: to its top; with nothing more, from its bottom
    (Direction.UP, "c", True, 0, 25, (11, 25, "c", None)),
    (Direction.UP, None, True, 5, 25, (5, 25, None, None)),
    (Direction.UP, None, True, None, 25, (None, 25, None, None)),
    # UP with a cursor from elsewhere: inside what the page holds, both edges' times unknown
    (Direction.UP, "c", False, None, None, (11, 18, "c", None)),
    (Direction.UP, None, False, None, None, (None, 18, None, None)),
    (Direction.UP, "c", False, None, 19, (11, 19, "c", None)),  # the caller vouches for 19
    # DOWN from the oldest, and in a window
    (Direction.DOWN, "n", True, None, None, (None, 18, None, "n")),
    (Direction.DOWN, "n", True, None, 30, (None, 18, None, "n")),
    (Direction.DOWN, None, True, 5, None, (5, None, None, None)),
    (Direction.DOWN, None, True, 5, 30, (5, 30, None, None)),
    (Direction.DOWN, "n", False, None, None, (11, 18, None, "n")),
    (Direction.DOWN, None, False, None, None, (11, None, None, None)),
    (Direction.DOWN, "n", False, 10, None, (10, 18, None, "n")),  # the caller vouches for 10
])
def test_the_span_of_a_page(direction, cursor, first, start, end, span):
    page = [server_msg(i) for i in range(10, 20)]
    got = Span.of_page("bob", page, direction=direction, cursor=cursor, first=first,
                       start_time=at(start), end_time=at(end))
    assert got == Span("bob", at(span[0]), at(span[1]), span[2], span[3])


@pytest.mark.parametrize("direction", [Direction.UP, Direction.DOWN])
def test_a_page_cut_inside_a_tie_proves_nothing_at_that_time(direction):
    # two messages share each time: T0+10 at the page's oldest edge, T0+13 at its newest
    page = [server_msg(i, t=T0 + 10 + i // 2) for i in range(8)]
    got = Span.of_page("bob", page, direction=direction, cursor="c", first=True)
    if direction == Direction.UP:  # cut at its oldest time: the span starts after it
        assert got == Span("bob", T0 + 11, None, older_cursor="c")
    else:  # cut at its newest time: the span ends before it
        assert got == Span("bob", None, T0 + 12, newer_cursor="c")
    assert not got.holds(T0 + 10 if direction == Direction.UP else T0 + 13)
    # every message of the page at one time, more to come: nothing proved either way
    tie = [server_msg(i, t=T0) for i in range(5)]
    assert Span.of_page("bob", tie, direction=direction, cursor="c", first=False,
                        start_time=T0, end_time=T0) is None
    assert Span.of_page("bob", tie, direction=direction, cursor=None, first=False,
                        start_time=T0, end_time=T0) == Span("bob", T0, T0)


def test_an_empty_page_with_more_to_come_proves_nothing():
    assert Span.of_page("bob", [], direction=Direction.UP, cursor="c", first=True,
                        end_time=T0) is None
    assert Span.of_page("bob", [], direction=Direction.UP, cursor=None, first=True,
                        end_time=T0) == Span("bob", None, T0)


# ------------------------------------------------------------------------------- timeline


def test_a_timeline_page_stops_at_a_gap(store: MessageStore):
    store.save_history([server_msg(i) for i in range(0, 5)])  # no span: not known contiguous
    store.save_history([server_msg(i) for i in range(10, 20)], span=Span("bob", T0 + 10, None))
    page = store.timeline("bob", limit=15)
    assert ids(page.messages) == [f"S{i:04d}" for i in range(10, 20)]
    assert page.gap == Gap("bob", None, T0 + 10, newer_msg_id="S0010")
    assert len(store.messages("bob", limit=15)) == 15


def test_a_full_timeline_page_has_no_gap(store: MessageStore):
    store.save_history([server_msg(i) for i in range(10, 20)], span=Span("bob", T0 + 10, None))
    page = store.timeline("bob", limit=10)
    assert page.gap is None and len(page.messages) == 10
    assert store.timeline("bob", limit=5, start_msg_id="S0015").gap is None


def test_a_timeline_page_from_a_message_in_a_gap(store: MessageStore):
    store.save_history([server_msg(i) for i in range(10, 20)], span=Span("bob", T0 + 15, None))
    page = store.timeline("bob", start_msg_id="S0012")
    assert page.messages == []
    assert page.gap == Gap("bob", None, T0 + 13, newer_msg_id="S0012")


def test_a_timeline_page_without_a_live_stretch_starts_with_a_gap(store: MessageStore):
    store.save_history([server_msg(i) for i in range(5)], span=Span("bob", None, T0 + 4))
    page = store.timeline("bob")
    assert page.messages == []
    assert page.gap == Gap("bob", T0 + 4, None, older_msg_id="S0004")


def test_a_timeline_page_going_down(store: MessageStore):
    store.save_history([server_msg(i) for i in range(5)], span=Span("bob", None, T0 + 4))
    store.save_history([server_msg(i) for i in range(8, 10)])
    page = store.timeline("bob", direction=Direction.DOWN, start_msg_id="S0001")
    assert ids(page.messages) == ["S0002", "S0003", "S0004"]
    assert page.gap == Gap("bob", T0 + 4, None, older_msg_id="S0004")
    assert store.timeline("bob", direction=Direction.DOWN, limit=3).gap is None


class ListServer:
    """A list of 45 messages standing in for the server's history of one conversation."""

    def __init__(self) -> None:
        self.history = [server_msg(i, is_read=True) for i in range(45)]
        self.fetches = 0

    def fetch(self, gap: Gap, direction: Direction, limit: int = 20) -> list[Message]:
        self.fetches += 1
        lo = None if gap.after_time is None else gap.after_time + 1
        hi = None if gap.before_time is None else gap.before_time - 1
        inside = [m for m in self.history if (lo is None or m.timestamp >= lo)
                  and (hi is None or m.timestamp <= hi)]
        got = inside[-limit:] if direction == Direction.UP else inside[:limit]
        span = Span.of_page("bob", got, direction=direction,
                            cursor="more" if len(inside) > limit else None, first=True,
                            start_time=lo, end_time=hi)
        return got, span


def load_all(store: MessageStore, server: ListServer, direction: Direction) -> list[str]:
    """What `ChatClient.load_messages` does: read the timeline, fill each gap, read again."""
    seen: list[str] = []
    start = None
    while True:
        page = store.timeline("bob", start_msg_id=start, limit=20, direction=direction)
        while page.gap is not None:
            assert server.fetches < 50, "filling gaps makes no progress"
            got, span = server.fetch(page.gap, direction)
            store.save_history(got, span=span)
            page = store.timeline("bob", start_msg_id=start, limit=20, direction=direction)
        if not page.messages:
            return seen
        if direction == Direction.UP:
            seen, start = ids(page.messages) + seen, page.messages[0].msg_id
        else:
            seen, start = seen + ids(page.messages), page.messages[-1].msg_id


@pytest.mark.parametrize("direction", [Direction.UP, Direction.DOWN])
def test_reading_a_timeline_and_filling_its_gaps_gives_the_whole_conversation(
        store: MessageStore, direction):
    server = ListServer()
    last = server.history[-1]
    store.save_history([last], span=Span("bob", last.timestamp, None))  # the conversation list
    assert load_all(store, server, direction) == [m.msg_id for m in server.history]
    assert store.gaps("bob") == []
    fetched = server.fetches
    assert load_all(store, server, direction) == [m.msg_id for m in server.history]
    assert server.fetches == fetched  # nothing left to fetch


def test_filling_gaps_brings_back_nothing_deleted_here(store: MessageStore):
    server = ListServer()
    store.save_history(server.history[30:], span=Span("bob", server.history[30].timestamp, None))
    store.delete_message("S0040")
    store.save_history(server.history[:3])  # known, not known to be contiguous
    store.delete_messages("bob", start_time=T0, end_time=T0 + 1)
    expected = [m.msg_id for m in server.history if m.msg_id not in ("S0040", "S0000", "S0001")]
    assert load_all(store, server, Direction.UP) == expected


# ------------------------------------------------------------------------- tied timestamps


class TiedServer:
    """A read-only `SyncAdapter` for bob's chat with alice whose messages share server times as
    ``times`` says (non-decreasing, in the server's order). It pages in that order with opaque
    cursors and applies the time bounds inclusively; it counts its fetches."""

    def __init__(self, times: list[int]) -> None:
        self.history = [server_msg(i, t=T0 + t, is_read=True) for i, t in enumerate(times)]
        self.fetches = 0

    async def fetch_conversations(self, cursor, limit):
        last = self.history[-1]
        return CursorResult([Conversation("bob", ChatType.CHAT, 0, last, last.timestamp)], None)

    async def fetch_history(self, conv_id, chat_type, cursor, limit, options: FetchOptions):
        self.fetches += 1
        order = list(range(len(self.history)))
        if options.direction != Direction.DOWN:
            order.reverse()
        if cursor is not None:
            order = order[order.index(int(cursor)) + 1:]
        picked = [i for i in order if (options.start_time is None
                                       or self.history[i].timestamp >= options.start_time)
                  and (options.end_time is None or self.history[i].timestamp <= options.end_time)]
        page = picked[:limit]
        return CursorResult([self.history[i] for i in sorted(page)],
                            str(page[-1]) if len(picked) > limit else None)

    async def remove_messages(self, *args):
        raise IMError(ErrorCode.SERVICE_NOT_ENABLED, "read-only")

    async def delete_conversation(self, *args):
        raise IMError(ErrorCode.SERVICE_NOT_ENABLED, "read-only")


async def read_all(client: ChatClient, limit: int, direction: Direction) -> list[str]:
    """Every message `load_messages` gives, page after page in ``direction``."""
    seen: list[str] = []
    start = None
    for _ in range(200):
        page = await client.load_messages("bob", ChatType.CHAT, start_msg_id=start, limit=limit,
                                          direction=direction)
        assert page.complete
        if not page:
            return seen
        if direction == Direction.UP:
            seen, start = ids(page) + seen, page[0].msg_id
        else:
            seen, start = seen + ids(page), page[-1].msg_id
    raise AssertionError("load_messages never reached the end")


def read_tied(times: list[int], limit: int, direction: Direction, listed: bool) -> TiedServer:
    """Read a whole `TiedServer` conversation through a client without live delivery (after
    the conversation list when ``listed``); it must come back whole, once, in the server's
    order (but for the tie of the list's last message, stored before the rest of its tie)."""
    server = TiedServer(times)

    async def main():
        with imstore.open(":memory:", user_id="alice", search=False) as store:
            client = ChatClient(store, server)
            if listed:
                await client.fetch_conversations_from_server()
            got = await read_all(client, limit, direction)
            if listed:  # the list's last message came first: its tie keeps arrival order
                tied = {m.msg_id for m in server.history if m.timestamp == T0 + times[-1]}
                assert sorted(got) == ids(server.history)
                assert [i for i in got if i not in tied] == [
                    i for i in ids(server.history) if i not in tied]
            else:
                assert got == ids(server.history)
            assert store.gaps("bob") == []
            fetched = server.fetches
            if direction == Direction.DOWN:  # the whole conversation is known: no more fetches
                assert await read_all(client, limit, direction) == got
                assert server.fetches == fetched
    run(main())
    return server


@pytest.mark.parametrize("direction", [Direction.UP, Direction.DOWN])
@pytest.mark.parametrize("listed", [False, True], ids=["fresh", "listed"])
def test_a_tie_larger_than_a_page_comes_back_whole_in_order(direction, listed):
    # 5 messages, then 45 at one time (more than a fill's page of 20), then 5
    times = [0, 1, 2, 3, 4] + [5] * 45 + [6, 7, 8, 9, 10]
    read_tied(times, 20, direction, listed)


@pytest.mark.parametrize("direction", [Direction.UP, Direction.DOWN])
def test_ties_at_the_edges_of_every_page_come_back_whole_in_order(direction):
    # pages of 20 cut at a time two messages share, at both ends of the conversation too
    times = [i // 2 for i in range(60)]
    read_tied(times, 7, direction, listed=False)


def test_a_client_without_live_delivery_fetches_the_newest_page_again():
    server = TiedServer([0, 1, 2])

    async def main():
        with imstore.open(":memory:", user_id="alice", search=False) as store:
            client = ChatClient(store, server)
            assert ids(await client.load_messages("bob", ChatType.CHAT)) == ids(server.history)
            late = server_msg(3, t=T0 + 2, is_read=True)  # arrives with the newest's time
            server.history.append(late)
            page = await client.load_messages("bob", ChatType.CHAT)
            assert ids(page) == ids(server.history) and server.fetches == 2
    run(main())


def test_a_moderators_recall_learned_from_history_names_who_did():
    from imstore.kinds import blank_body
    from imstore.lifecycle import RECALLED_BY

    server = TiedServer([0, 1])

    async def main():
        with imstore.open(":memory:", user_id="alice", search=False) as store:
            client = ChatClient(store, server)
            await client.fetch_history_messages("bob", ChatType.CHAT)
            spam = server.history[0]
            spam.body, spam.recalled_at, spam.ext = blank_body(spam.type), T0 + 5, {
                RECALLED_BY: "mod"}
            await client.fetch_history_messages("bob", ChatType.CHAT)
            got = store.get_message(spam.msg_id)
            assert got.recalled_at == T0 + 5 and got.ext == {RECALLED_BY: "mod"}
    run(main())


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=1, max_size=70),
       limit=st.integers(1, 25), direction=st.sampled_from([Direction.UP, Direction.DOWN]),
       listed=st.booleans())
def test_any_ties_come_back_whole_in_order(steps, limit, direction, listed):
    times = [sum(steps[:i + 1]) for i in range(len(steps))]
    read_tied(times, limit, direction, listed)


# --------------------------------------------------------------------------- keyset paging


def ten_at_one_time(store: MessageStore) -> list[Message]:
    msgs = [server_msg(i, t=T0) for i in range(10)]
    for m in msgs:
        m.body.text = f"same time {m.msg_id}"  # type: ignore[union-attr]
    store.import_messages(msgs)
    return msgs


def walk(read: Callable[[str | None], list[Message]], direction: Direction) -> list[str]:
    seen: list[str] = []
    start = None
    while page := read(start):
        seen = ids(page) + seen if direction == Direction.UP else seen + ids(page)
        start = page[0].msg_id if direction == Direction.UP else page[-1].msg_id
    return seen


@pytest.mark.parametrize("direction", [Direction.UP, Direction.DOWN])
def test_paging_by_type_returns_every_message_sharing_a_timestamp(store: MessageStore, direction):
    msgs = ten_at_one_time(store)
    seen = walk(lambda s: store.messages_by_type("bob", MessageType.TEXT, start_msg_id=s,
                                                 limit=3, direction=direction), direction)
    assert seen == ids(msgs) == ids(store.messages("bob"))


@pytest.mark.parametrize("dense_rows", [4000, 1], ids=["rows-in-time-order", "index"])
@pytest.mark.parametrize("direction", [Direction.UP, Direction.DOWN])
def test_searching_in_pages_returns_every_message_sharing_a_timestamp(
        store: MessageStore, monkeypatch: pytest.MonkeyPatch, direction, dense_rows):
    monkeypatch.setattr("imstore.store._query._DENSE_ROWS", dense_rows)
    msgs = ten_at_one_time(store)
    seen = walk(lambda s: store.search_messages("same", start_msg_id=s, limit=3,
                                                direction=direction), direction)
    assert seen == ids(msgs)


def test_searching_in_pages_with_words_the_index_does_not_hold(store: MessageStore):
    msgs = [server_msg(i, t=T0) for i in range(10)]
    for m in msgs:
        m.body.text = "🎉 party"  # type: ignore[union-attr]
    store.import_messages(msgs)
    seen = walk(lambda s: store.search_messages("🎉", start_msg_id=s, limit=3), Direction.UP)
    assert seen == ids(msgs)


def test_search_time_bounds_stay_filters_with_a_start_message(store: MessageStore):
    msgs = [server_msg(i) for i in range(10)]
    for m in msgs:
        m.body.text = f"word {m.msg_id}"  # type: ignore[union-attr]
    store.import_messages(msgs)
    got = store.search_messages("word", start_msg_id="S0008", start_time=T0 + 3, limit=10)
    assert ids(got) == [f"S{i:04d}" for i in range(3, 8)]


def test_search_from_an_unknown_message(store: MessageStore):
    with pytest.raises(IMError) as err:
        store.search_messages("x", start_msg_id="nope")
    assert err.value.code == ErrorCode.INVALID_PARAM


# ------------------------------------------------------------------ merges under random orders


class MergeModel(RuleBasedStateMachine):
    """Live delivery, history pages (with the server's read position), local deletes, clears
    and reads in any order: the store holds what a plain model says, counted once."""

    N = 12

    def __init__(self) -> None:
        super().__init__()
        self.store = imstore.open(":memory:", user_id="alice", search=False)
        self.stored: dict[int, bool] = {}  # i -> read
        self.buried: set[int] = set()
        self.ranges: list[tuple[int, int]] = []

    def teardown(self) -> None:
        try:
            assert self.store.verify().ok
        finally:
            self.store.close()

    def _covered(self, i: int) -> bool:
        return i in self.buried or any(a <= i <= b for a, b in self.ranges)

    @rule(items=st.lists(st.integers(0, N - 1), max_size=4))
    def live(self, items):
        self.store.merge_received([server_msg(i) for i in items])
        for i in items:
            if not self._covered(i) and i not in self.stored:
                self.stored[i] = False

    @rule(lo=st.integers(0, N - 1), size=st.integers(0, 5), read_up_to=st.integers(-1, N - 1))
    def history(self, lo, size, read_up_to):
        page = range(lo, min(lo + size, self.N))
        self.store.merge_history([server_msg(i, is_read=i <= read_up_to) for i in page])
        for i in page:
            if self._covered(i):
                continue
            self.stored[i] = self.stored.get(i, False) or i <= read_up_to

    @rule(i=st.integers(0, N - 1))
    def delete(self, i):
        assert self.store.delete_message(f"S{i:04d}") == (i in self.stored)
        if self.stored.pop(i, None) is not None:
            self.buried.add(i)

    @rule(a=st.integers(0, N - 1), b=st.integers(0, N - 1))
    def delete_range(self, a, b):
        a, b = min(a, b), max(a, b)
        self.store.delete_messages("bob", start_time=T0 + a, end_time=T0 + b)
        if self.stored and a <= max(self.stored):
            self.ranges.append((a, min(b, max(self.stored))))
        for i in [i for i in self.stored if a <= i <= b]:
            del self.stored[i]

    @rule()
    def clear(self):
        self.store.delete_conversation("bob", delete_messages=True)
        if self.stored:
            self.ranges.append((-1, max(self.stored)))
        self.stored.clear()

    @rule(i=st.integers(0, N - 1))
    def read(self, i):
        if i in self.stored:
            self.store.mark_message_read(f"S{i:04d}")
            self.stored[i] = True

    @invariant()
    def store_matches_model(self):
        msgs = self.store.messages("bob", limit=400)
        assert ids(msgs) == [f"S{i:04d}" for i in sorted(self.stored)]
        assert [m.is_read for m in msgs] == [self.stored[i] for i in sorted(self.stored)]
        assert self.store.unread_count("bob") == sum(not r for r in self.stored.values())


TestMergeModel = MergeModel.TestCase
TestMergeModel.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


# ------------------------------------------------------------- the client against the server


class Heard(MessageListener):
    def __init__(self) -> None:
        self.received: list[str] = []

    def on_messages_received(self, messages: list[Message]) -> None:
        self.received += [m.msg_id for m in messages]


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("first_path", ["conversation list", "history page"])
def test_offline_messages_seen_first_by_a_fetch_are_counted_announced_and_acked_once(
        pair, first_path):
    async def main():
        heard = Heard()
        pair.ca.add_listener(heard)
        pair.server.disconnect("alice")
        sent = [await pair.cb.send_message(Message.text("alice", f"hi {i}")) for i in range(3)]
        if first_path == "conversation list":
            await pair.ca.fetch_conversations_from_server()
        else:
            await pair.ca.fetch_history_messages("bob", ChatType.CHAT, limit=2)
        pair.server.restore("alice")
        await pair.settle()
        assert pair.a.unread_count("bob") == 3 and pair.a.message_count("bob") == 3
        assert sorted(heard.received) == sorted(m.msg_id for m in sent)
        assert all(pair.b.get_message(m.msg_id).is_delivered for m in sent)
    run(main())


def test_messages_read_on_another_device_come_read_to_a_fresh_store(pair, tmp_path):
    async def main():
        for i in range(3):
            await pair.cb.send_message(Message.text("alice", f"hi {i}"))
        await pair.settle()
        await pair.ca.ack_conversation_read("bob")
        await pair.cb.send_message(Message.text("alice", "after"))
        fresh = imstore.open(":memory:", user_id="alice")
        client = ChatClient(fresh, pair.server.connect("alice"),
                            download_dir=str(tmp_path / "fresh"))
        page = await client.fetch_history_messages("bob", ChatType.CHAT, limit=10)
        assert [m.is_read for m in page.items] == [True, True, True, False]
        assert fresh.unread_count("bob") == 1
        fresh.close()
    run(main())


def test_reading_up_to_a_message_moves_the_server_position_there(pair, tmp_path):
    async def main():
        msgs = [await pair.cb.send_message(Message.text("alice", f"hi {i}")) for i in range(4)]
        await pair.settle()
        await pair.ca.ack_conversation_read("bob", up_to_msg_id=msgs[1].msg_id)
        assert pair.a.unread_count("bob") == 2
        fresh = imstore.open(":memory:", user_id="alice")
        client = ChatClient(fresh, pair.server.connect("alice"),
                            download_dir=str(tmp_path / "fresh"))
        page = await client.fetch_history_messages("bob", ChatType.CHAT, limit=10)
        assert [m.is_read for m in page.items] == [True, True, False, False]
        fresh.close()
    run(main())


def test_deletes_here_stay_deleted_through_history_and_list_fetches(pair):
    async def main():
        msgs = [await pair.cb.send_message(Message.text("alice", f"hi {i}")) for i in range(4)]
        await pair.settle()
        pair.a.delete_message(msgs[1].msg_id)
        await pair.ca.fetch_history_messages("bob", ChatType.CHAT, limit=10)
        assert msgs[1].msg_id not in ids(pair.a.messages("bob"))
        pair.a.delete_conversation("bob", delete_messages=True)
        await pair.ca.fetch_history_messages("bob", ChatType.CHAT, limit=10)
        await pair.ca.fetch_conversations_from_server()
        assert pair.a.message_count("bob") == 0 and pair.a.conversation("bob") is None
        new = await pair.cb.send_message(Message.text("alice", "new"))
        await pair.settle()
        assert ids(pair.a.messages("bob")) == [new.msg_id]
        assert pair.a.unread_count("bob") == 1
    run(main())


def test_removing_from_the_server_by_a_local_id(pair, tmp_path):
    async def main():
        msg = Message.text("bob", "oops")
        local_id = msg.msg_id
        await pair.ca.send_message(msg)
        await pair.ca.remove_messages_from_server("bob", ChatType.CHAT, msg_ids=[local_id])
        assert pair.a.message_count("bob") == 0
        fresh = imstore.open(":memory:", user_id="alice")
        client = ChatClient(fresh, pair.server.connect("alice"),
                            download_dir=str(tmp_path / "fresh"))
        page = await client.fetch_history_messages("bob", ChatType.CHAT, limit=10)
        assert page.items == [] and fresh.message_count("bob") == 0
        fresh.close()
    run(main())


def test_a_new_device_pages_up_through_the_whole_conversation(pair, tmp_path):
    async def main():
        posted = [pair.server.post(Message.text("alice", f"m{i}", sender="bob"), deliver=False)
                  for i in range(45)]
        fresh = imstore.open(":memory:", user_id="alice")
        client = ChatClient(fresh, pair.server.connect("alice"),
                            download_dir=str(tmp_path / "fresh"))
        await client.fetch_conversations_from_server()
        seen: list[str] = []
        start = None
        while page := await client.load_messages("bob", ChatType.CHAT, start_msg_id=start):
            assert page.complete and len(page) <= 20
            seen = ids(page) + seen
            start = page[0].msg_id
        assert seen == [m.msg_id for m in posted]
        assert fresh.gaps("bob") == [] and fresh.unread_count("bob") == 45
        fresh.close()
    run(main())


def test_load_messages_offline_returns_the_local_page(pair, monkeypatch):
    async def unreachable(*args, **kwargs):
        raise IMError(ErrorCode.NETWORK_ERROR, "no network")

    async def main():
        for i in range(3):  # sent from alice's other device: read, so the list brings only m2
            pair.server.post(Message.text("bob", f"m{i}", sender="alice"), deliver=False)
        await pair.ca.fetch_conversations_from_server()
        monkeypatch.setattr(pair.ca.adapter, "fetch_history", unreachable)
        page = await pair.ca.load_messages("bob", ChatType.CHAT)
        assert not page.complete and texts(page) == ["m2"]
    run(main())


def test_removing_a_server_conversation_but_not_its_history(pair):
    async def main():
        msgs = [await pair.cb.send_message(Message.text("alice", f"hi {i}")) for i in range(2)]
        await pair.ca.delete_conversation_from_server("bob", ChatType.CHAT, delete_messages=False)
        listed = await pair.ca.fetch_conversations_from_server()
        assert [c.conv_id for c in listed.items] == []
        page = await pair.ca.fetch_history_messages("bob", ChatType.CHAT, limit=10)
        assert ids(page.items) == ids(msgs)
    run(main())


# ------------------------------------------------- three users, any interleaving, one truth


USERS = ("alice", "bob", "carol")


class ThreeUsers(RuleBasedStateMachine):
    """Live delivery, offline periods, history and list fetches, local deletes and reads across
    three users: once everyone is back and has fetched everything, every store equals the
    server's view minus what its user deleted, unread equals the server's, and nothing was
    announced twice."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.server = imstore.MemoryServer()
        self.stores = {u: imstore.open(":memory:", user_id=u, search=False) for u in USERS}
        self.clients = {u: ChatClient(self.stores[u], self.server.connect(u), send_timeout=1.0,
                                      auto_download=False) for u in USERS}
        self.heard = {u: Heard() for u in USERS}
        for u in USERS:
            self.clients[u].add_listener(self.heard[u])
        self.online = set(USERS)
        self.deleted: dict[str, set[str]] = {u: set() for u in USERS}
        self.n = 0

    def run(self, coro):
        async def whole():
            result = await coro
            for c in self.clients.values():
                await c.wait_idle()
            return result
        return self.loop.run_until_complete(whole())

    def teardown(self) -> None:
        try:
            self._check()
        finally:
            for s in self.stores.values():
                s.close()
            self.loop.close()

    @rule(sender=st.sampled_from(USERS), to=st.sampled_from(USERS))
    def send(self, sender, to):
        if sender == to or sender not in self.online:
            return
        self.n += 1
        self.run(self.clients[sender].send_message(Message.text(to, f"m{self.n}")))

    @rule(user=st.sampled_from(USERS))
    def go_offline(self, user):
        self.server.disconnect(user)
        self.online.discard(user)

    @rule(user=st.sampled_from(USERS))
    def come_back(self, user):
        self.server.restore(user)
        self.online.add(user)
        self.run(self._idle())

    @rule(user=st.sampled_from(USERS), peer=st.sampled_from(USERS), limit=st.integers(1, 5))
    def fetch_history(self, user, peer, limit):
        if user != peer:
            self.run(self.clients[user].fetch_history_messages(peer, ChatType.CHAT, limit=limit))

    @rule(user=st.sampled_from(USERS))
    def fetch_list(self, user):
        self.run(self.clients[user].fetch_conversations_from_server())

    @rule(user=st.sampled_from(USERS), peer=st.sampled_from(USERS), pick=st.integers(0, 50))
    def delete_here(self, user, peer, pick):
        msgs = self.stores[user].messages(peer, limit=400) if user != peer else []
        if msgs:
            m = msgs[pick % len(msgs)]
            self.stores[user].delete_message(m.msg_id)
            self.deleted[user].add(m.msg_id)

    @rule(user=st.sampled_from(USERS), peer=st.sampled_from(USERS))
    def read(self, user, peer):
        if user != peer and user in self.online and self.stores[user].conversation(peer):
            self.run(self.clients[user].ack_conversation_read(peer))

    async def _idle(self) -> None:
        """Wait until every client has done what the last change set off."""
        for client in self.clients.values():
            await client.wait_idle()

    def _server_view(self, user: str, peer: str) -> list[Message]:
        out: list[Message] = []
        cursor = None
        while True:
            page = self.server.history(user, peer, ChatType.CHAT, cursor, 50,
                                       imstore.FetchOptions(save=False))
            out = page.items + out
            cursor = page.cursor
            if cursor is None:
                return out

    def _check(self) -> None:
        for u in USERS:
            self.server.restore(u)
        self.run(self._idle())
        for u in USERS:
            assert len(self.heard[u].received) == len(set(self.heard[u].received)), u
            for peer in USERS:
                if peer == u:
                    continue
                self.run(self.clients[u].load_messages(peer, ChatType.CHAT, limit=400,
                                                       direction=Direction.DOWN))
                cursor = None
                while True:  # and every history page again: deletes must stay deleted
                    page = self.run(self.clients[u].fetch_history_messages(
                        peer, ChatType.CHAT, cursor=cursor, limit=7))
                    if (cursor := page.cursor) is None:
                        break
                view = [m for m in self._server_view(u, peer)
                        if m.msg_id not in self.deleted[u]]
                assert ids(self.stores[u].messages(peer, limit=400)) == ids(view), (u, peer)
                unread = sum(1 for m in view if m.direction == Direction.RECEIVE and not m.is_read)
                assert self.stores[u].unread_count(peer) == unread, (u, peer)
            assert len(self.heard[u].received) == len(set(self.heard[u].received)), u


TestThreeUsers = ThreeUsers.TestCase
TestThreeUsers.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
