from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

import imstore
from imstore import (
    ChatType,
    Direction,
    ErrorCode,
    IMError,
    Message,
    MessageStatus,
    MessageStore,
    MessageType,
)
from imstore.codec import Limits
from imstore.kinds import blank_body
from imstore.message import CustomBody, FileBody, TextBody, UndecodableBody

from .conftest import raw_connect


def recv(text: str, peer: str = "bob", ts: int | None = None, **kw) -> Message:
    return Message.text("alice", text, sender=peer, timestamp=ts, **kw)


def texts(msgs) -> list[str]:
    return [m.body.text for m in msgs]


# ------------------------------------------------------------------------------------- paging


def test_paging_up_and_down_with_and_without_start(store: MessageStore):
    msgs = [recv(f"m{i}", ts=1000 + i) for i in range(50)]
    store.import_messages(msgs)
    assert texts(store.messages("bob", limit=5)) == [f"m{i}" for i in range(45, 50)]
    assert texts(store.messages("bob", start_msg_id=msgs[10].msg_id, limit=5)) == \
        [f"m{i}" for i in range(5, 10)]
    assert texts(store.messages("bob", start_msg_id=msgs[2].msg_id, limit=5)) == ["m0", "m1"]
    assert store.messages("bob", start_msg_id=msgs[0].msg_id) == []
    assert texts(store.messages("bob", limit=3, direction=Direction.DOWN)) == ["m0", "m1", "m2"]
    assert texts(store.messages("bob", start_msg_id=msgs[47].msg_id, limit=5,
                                direction=Direction.DOWN)) == ["m48", "m49"]
    assert store.messages("bob", start_msg_id=msgs[49].msg_id, direction=Direction.DOWN) == []
    assert store.messages("nobody") == []


def test_walking_every_page_returns_each_message_once(store: MessageStore):
    # Many messages share one millisecond; some are server-stamped, some local only.
    msgs = []
    for i in range(300):
        m = recv(f"m{i}", ts=5000 + i // 40)
        if i % 3 == 0:
            m.server_time = None
            m.local_time = 5000 + i // 40
        msgs.append(m)
    store.import_messages(msgs, batch_size=64)
    seen: list[str] = []
    page = store.messages("bob", limit=7)
    while page:
        seen = texts(page) + seen
        page = store.messages("bob", start_msg_id=page[0].msg_id, limit=7)
    assert sorted(seen) == sorted(f"m{i}" for i in range(300))
    assert len(seen) == len(set(seen))
    times = [store.get_message(m.msg_id).timestamp for m in msgs]
    ordered = [m.timestamp for m in store.messages("bob", limit=400)][-300:]
    assert ordered == sorted(times)
    down: list[str] = []
    page = store.messages("bob", limit=9, direction=Direction.DOWN)
    while page:
        down += texts(page)
        page = store.messages("bob", start_msg_id=page[-1].msg_id, limit=9,
                              direction=Direction.DOWN)
    assert down == seen


def test_server_time_orders_before_local_time(store: MessageStore):
    local = Message.text("bob", "sent later, not yet stamped", timestamp=3000)
    store.insert_message(local)
    store.insert_message(recv("stamped earlier", ts=2000))
    assert texts(store.messages("bob")) == ["stamped earlier", "sent later, not yet stamped"]
    local.server_time = 1000
    store.update_message(local)
    assert texts(store.messages("bob")) == ["sent later, not yet stamped", "stamped earlier"]
    assert store.conversation("bob").last_message.body.text == "stamped earlier"


@pytest.mark.parametrize("limit", [0, 401, -1, 1.5, True])
def test_limits_outside_1_to_400(store: MessageStore, limit):
    with pytest.raises(IMError) as err:
        store.messages("bob", limit=limit)
    assert err.value.code == ErrorCode.QUERY_PARAM_REACHES_LIMIT
    with pytest.raises(IMError) as err:
        store.messages_by_type("bob", MessageType.TEXT, limit=limit)
    assert err.value.code == ErrorCode.QUERY_PARAM_REACHES_LIMIT


def test_unknown_start_message(store: MessageStore):
    with pytest.raises(IMError) as err:
        store.messages("bob", start_msg_id="nope")
    assert err.value.code == ErrorCode.INVALID_PARAM


# ------------------------------------------------------------------------- filters and reads


def test_type_filter_and_time_range(store: MessageStore, tmp_path: Path):
    f = tmp_path / "a.pdf"
    f.write_bytes(b"%PDF")
    store.insert_message(recv("t1", ts=100))
    store.insert_message(Message.file("alice", f, sender="bob", timestamp=200))
    store.insert_message(Message.location("alice", 1.0, 2.0, address="x", sender="bob", timestamp=300))
    store.insert_message(Message.text("carol", "to carol", timestamp=400))
    store.insert_message(Message.custom("carol", "poke", sender="carol", timestamp=500))
    got = store.messages_by_type("bob", [MessageType.FILE, MessageType.LOCATION])
    assert [m.type for m in got] == [MessageType.FILE, MessageType.LOCATION]
    assert [m.type for m in store.messages_by_type(None, MessageType.TEXT)] == [MessageType.TEXT] * 2
    assert [m.conv_id for m in store.messages_by_type(None, MessageType.TEXT, sender="alice")] == ["carol"]
    assert store.messages_by_type(None, MessageType.TEXT, timestamp=400)[0].body.text == "t1"
    assert texts(store.messages_by_type(None, MessageType.TEXT, timestamp=100,
                                        direction=Direction.DOWN)) == ["to carol"]
    assert [m.timestamp for m in store.messages_between("bob", 100, 200)] == [100, 200]
    assert [m.timestamp for m in store.messages_between("bob", 150, 1000, limit=1)] == [200]
    with pytest.raises(IMError) as err:
        store.messages_between("bob", 300, 100)
    assert err.value.code == ErrorCode.INVALID_PARAM


def test_get_message_and_conversations(store: MessageStore):
    a = store.insert_message(recv("hi", ts=100))
    store.insert_message(Message.text("g1", "hello group", chat_type=ChatType.GROUP_CHAT, timestamp=300))
    store.insert_message(Message.text("room", "in room", chat_type=ChatType.CHAT_ROOM,
                                      sender="dave", timestamp=200))
    assert store.get_message(a.msg_id) == a
    assert store.get_message("nope") is None
    convs = store.conversations()
    assert [c.conv_id for c in convs] == ["g1", "room", "bob"]
    assert [c.conv_id for c in store.conversations(chat_type=ChatType.CHAT_ROOM)] == ["room"]
    assert store.conversation("bob").last_message == a
    assert store.conversation("zzz") is None
    assert store.message_count("bob") == 1


def test_direction_and_conversation_ids_follow_the_owner(store: MessageStore):
    sent = store.insert_message(Message.text("bob", "to bob"))
    assert (sent.direction, sent.conv_id, sent.sender, sent.is_read) == \
        (Direction.SEND, "bob", "alice", True)
    got = store.insert_message(Message.text("alice", "from bob", sender="bob"))
    assert (got.direction, got.conv_id, got.is_read) == (Direction.RECEIVE, "bob", False)
    mine = store.insert_message(Message.text("bob", "explicit me", sender="alice"))
    assert (mine.direction, mine.conv_id) == (Direction.SEND, "bob")
    grp = store.insert_message(Message.text("g", "x", chat_type=ChatType.GROUP_CHAT, sender="bob"))
    assert grp.conv_id == "g"


# ----------------------------------------------------------------------------------- unread


def test_unread_counts_and_chat_rooms(store: MessageStore):
    store.insert_message(recv("1"))
    store.insert_message(recv("2"))
    store.insert_message(Message.text("room", "r", chat_type=ChatType.CHAT_ROOM, sender="x"))
    store.insert_message(Message.text("g", "g", chat_type=ChatType.GROUP_CHAT, sender="x"))
    assert store.unread_count("bob") == 2
    assert store.unread_count("room") == 1
    assert store.total_unread_count() == 3  # chat rooms are left out
    first = store.messages("bob")[0]
    assert store.mark_message_read(first.msg_id) is True
    assert store.mark_message_read(first.msg_id) is False
    assert store.unread_count("bob") == 1
    assert store.mark_conversation_read("bob") == 1
    assert store.unread_count("bob") == 0
    assert store.mark_all_conversations_read() == 2
    assert store.total_unread_count() == 0 and store.unread_count("room") == 0


def test_mark_conversation_read_up_to_a_message(store: MessageStore):
    msgs = [recv(f"m{i}", ts=100 + i) for i in range(4)]
    for m in msgs:
        store.insert_message(m)
    assert store.mark_conversation_read("bob", up_to_msg_id=msgs[1].msg_id) == 2
    assert [m.is_read for m in store.messages("bob")] == [True, True, False, False]
    assert store.unread_count("bob") == 2


def test_imported_history_is_unread_only_when_it_says_so(store: MessageStore):
    res = store.import_messages([recv("a"), recv("b", is_read=False), recv("c", is_read=True)])
    assert res.imported == 3
    assert store.unread_count("bob") == 1


def test_unknown_conversation_where_one_is_required(store: MessageStore):
    assert store.mark_conversation_read("ghost") == 0  # read as an empty one (docs/api.md)
    with pytest.raises(IMError) as err:
        store.set_conversation_ext("ghost", {"draft": "x"})
    assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
    assert store.unread_count("ghost") == 0
    assert store.delete_conversation("ghost") is False


# ---------------------------------------------------------------------------------- deletes


def test_deletes_keep_counters_and_last_message(store: MessageStore):
    msgs = [recv(f"m{i}", ts=100 + i, is_read=False) for i in range(10)]
    store.import_messages(msgs)
    assert store.unread_count("bob") == 10
    assert store.delete_message(msgs[9].msg_id) is True
    assert store.delete_message(msgs[9].msg_id) is False
    conv = store.conversation("bob")
    assert conv.unread_count == 9 and conv.last_message.body.text == "m8"
    assert store.delete_messages("bob", start_time=100, end_time=104) == 5
    assert store.unread_count("bob") == 4
    assert texts(store.messages("bob")) == ["m5", "m6", "m7", "m8"]
    assert store.delete_conversation("bob", delete_messages=False) is True
    assert store.conversation("bob") is None and store.total_unread_count() == 0
    assert store.message_count("bob") == 4  # history kept
    store.insert_message(recv("new", ts=50))
    conv = store.conversation("bob")
    assert conv.unread_count == 1 and conv.last_message.body.text == "m8"
    assert store.delete_conversation("bob") is True
    assert store.message_count("bob") == 0 and store.verify().ok


def test_the_conversation_list_follows_its_last_message(store: MessageStore, raw_sql):
    first = store.insert_message(recv("older", ts=100))
    last = store.insert_message(recv("newest", ts=200))
    assert store.conversations()[0].last_message == last
    store.mark_message_read(last.msg_id)
    assert store.conversations()[0].last_message.is_read is True
    last.ext = {"edited": "yes"}
    store.update_message(last)
    assert store.conversations()[0].last_message.ext == {"edited": "yes"}
    mine = store.insert_message(Message.text("bob", "sending", timestamp=300))
    store.mark_sent(mine.msg_id, "S1", 300)
    assert store.conversation("bob").last_message.msg_id == "S1"
    store.apply_receipts(1, ["S1"])
    assert store.conversations()[0].last_message.is_delivered
    store.delete_message("S1")
    store.delete_message(last.msg_id)
    assert store.conversation("bob").last_message == first
    store.delete_message(first.msg_id)
    assert store.conversation("bob").last_message is None
    raw_sql(store, "UPDATE conversation SET lm_msg_id = 'stale'")
    assert store.verify().repaired["last_message_copies"] == 1  # a stale copy is cleared
    store.insert_message(recv("again", ts=400))
    raw_sql(store, "UPDATE conversation SET lm_msg_id = 'stale'")
    assert store.verify().repaired["last_message_copies"] == 1
    assert store.conversation("bob").last_message.body.text == "again"


def test_cmd_messages_are_never_stored(store: MessageStore):
    with pytest.raises(IMError) as err:
        store.insert_message(Message.cmd("bob", "typing"))
    assert err.value.code == ErrorCode.MESSAGE_INVALID
    res = store.import_messages([Message.cmd("bob", "typing"), recv("x")])
    assert (res.imported, res.skipped) == (1, 1)
    assert store.message_count("bob") == 1


# -------------------------------------------------------------------- bad input, no half-writes


def test_failures_write_nothing(store: MessageStore, tmp_path: Path):
    before = store.stats()
    bad = [
        Message.text("bob", "x" * 4000),
        Message.text("bob", ""),
        Message.file("bob", tmp_path / "missing"),
        Message.text("bob", "ok", ext={"x": object()}),
    ]
    codes = []
    for m in bad:
        with pytest.raises(IMError) as err:
            store.insert_message(m)
        codes.append(err.value.code)
    assert codes == [ErrorCode.MESSAGE_SIZE_LIMIT, ErrorCode.MESSAGE_INVALID,
                     ErrorCode.FILE_NOT_FOUND, ErrorCode.INVALID_PARAM]
    dup = store.insert_message(recv("once"))
    with pytest.raises(IMError) as err:
        store.insert_message(recv("again", msg_id=dup.msg_id))
    assert err.value.code == ErrorCode.MESSAGE_INVALID
    with pytest.raises(IMError) as err:
        store.insert_message(Message.text("bob", "group?", chat_type=ChatType.GROUP_CHAT))
    assert err.value.code == ErrorCode.INVALID_PARAM
    after = store.stats()
    assert after["messages"] == before["messages"] + 1
    assert store.unread_count("bob") == 1


def test_import_skips_bad_messages_and_reports_why(store: MessageStore):
    res = store.import_messages([recv("good"), Message.text("bob", ""), recv("x" * 5000),
                                 recv("good", msg_id="fixed"), recv("again", msg_id="fixed")])
    assert res.imported == 2 and res.skipped == 2 and res.duplicates == 1
    assert any("MESSAGE_SIZE_LIMIT" in r for r in res.reasons)
    again = store.import_messages([recv("good", msg_id="fixed")])
    assert (again.imported, again.duplicates) == (0, 1)


CORRUPT = b"\x01\xc1\xc1"  # a version byte, then bytes msgpack refuses


def test_an_undecodable_row_comes_back_as_an_undecodable_body(disk_store: MessageStore, raw_sql):
    m = disk_store.insert_message(recv("fine", ts=100))
    raw_sql(disk_store, "UPDATE message SET body = ? WHERE msg_id = ?", (CORRUPT, m.msg_id))
    got = disk_store.get_message(m.msg_id)
    assert isinstance(got.body, UndecodableBody)
    assert (got.body.raw, got.msg_id, got.timestamp, got.type) == (CORRUPT, m.msg_id, 100,
                                                                   MessageType.TEXT)


def test_an_undecodable_row_does_not_fail_its_page(store: MessageStore, raw_sql):
    msgs = [recv(f"m{i}", ts=100 + i) for i in range(3)]
    store.import_messages(msgs)
    raw_sql(store, "UPDATE message SET body = ? WHERE msg_id = ?", (CORRUPT, msgs[1].msg_id))
    page = store.messages("bob")
    assert [type(m.body).__name__ for m in page] == ["TextBody", "UndecodableBody", "TextBody"]


def test_verify_reports_undecodable_rows(store: MessageStore, raw_sql):
    m = store.insert_message(recv("x"))
    raw_sql(store, "UPDATE message SET body = ? WHERE msg_id = ?", (CORRUPT, m.msg_id))
    report = store.verify()
    assert report.undecodable == [m.msg_id] and not report.ok


def test_an_undecodable_message_cannot_be_written_back(store: MessageStore, raw_sql):
    m = store.insert_message(recv("x"))
    raw_sql(store, "UPDATE message SET body = ? WHERE msg_id = ?", (CORRUPT, m.msg_id))
    with pytest.raises(IMError) as err:
        store.update_message(store.get_message(m.msg_id))
    assert err.value.code == ErrorCode.MESSAGE_INVALID


def test_update_message_changes_flags_and_counters(store: MessageStore):
    m = store.insert_message(recv("hi"))
    m.is_read = True
    m.ext = {"edited": "1"}
    store.update_message(m)
    assert store.unread_count("bob") == 0
    assert store.get_message(m.msg_id).ext == {"edited": "1"}
    ghost = recv("never stored")
    with pytest.raises(IMError) as err:
        store.update_message(ghost)
    assert err.value.code == ErrorCode.MESSAGE_INVALID


def test_store_belongs_to_one_user(tmp_path: Path, store_key):
    imstore.open(tmp_path / "s", user_id="alice", key=store_key).close()
    with pytest.raises(IMError) as err:
        imstore.open(tmp_path / "s", user_id="mallory", key=store_key)
    assert err.value.code == ErrorCode.DATABASE_ERROR


def test_closed_store_raises(tmp_path: Path, store_key):
    s = imstore.open(tmp_path / "s", user_id="alice", key=store_key)
    s.close()
    s.close()
    with pytest.raises(IMError) as err:
        s.messages("bob")
    assert err.value.code == ErrorCode.DATABASE_ERROR


def test_verify_repairs_drift(disk_store: MessageStore, raw_sql):
    disk_store.import_messages([recv(f"m{i}", is_read=False) for i in range(5)])
    raw_sql(disk_store, "UPDATE conversation SET unread_count = 42, last_rowid = NULL")
    report = disk_store.verify()
    assert report.repaired["unread_counts"] == 1 and report.repaired["last_messages"] == 1
    assert disk_store.unread_count("bob") == 5
    assert disk_store.verify().ok


def test_a_crash_mid_send_leaves_nothing_in_progress(tmp_path: Path, store_key):
    with imstore.open(tmp_path / "s", user_id="alice", key=store_key) as s:
        m = Message.text("bob", "sending")
        m.status = MessageStatus.INPROGRESS
        s.insert_message(m)
    with imstore.open(tmp_path / "s", user_id="alice", key=store_key) as s:
        assert s.get_message(m.msg_id).status == MessageStatus.FAIL


# ---------------------------------------------------------------------------------- threads


def test_threads_keep_every_invariant(disk_store: MessageStore):
    errors: list[BaseException] = []
    n_writers, per_writer = 4, 60

    def writer(w: int) -> None:
        try:
            for i in range(per_writer):
                m = disk_store.insert_message(recv(f"w{w}-{i}", peer=f"p{w % 2}"))
                if i % 3 == 0:
                    disk_store.mark_message_read(m.msg_id)
                if i % 10 == 0:
                    disk_store.import_messages([recv(f"imp{w}-{i}-{k}", peer="p2", is_read=False)
                                                for k in range(5)])
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(100):
                disk_store.conversations()
                disk_store.total_unread_count()
                disk_store.messages("p0", limit=20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert disk_store.stats()["messages"] == n_writers * per_writer + n_writers * 6 * 5
    assert disk_store.verify().ok


def test_memory_store_is_thread_safe(store: MessageStore):
    def work(k: int) -> None:
        for i in range(50):
            store.insert_message(recv(f"{k}-{i}", peer=f"p{k}"))
            store.conversations()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.total_unread_count() == 200 and store.verify().ok


# ---------------------------------------------------------------------------------- crashes


def _import_forever(path: str, ready, key) -> None:  # runs in a child process
    s = imstore.open(path, user_id="alice", search=False, key=key)

    def gen():
        i = 0
        while True:
            yield Message.text("alice", f"m{i}", sender=f"p{i % 7}", msg_id=f"id{i}",
                               timestamp=1000 + i, is_read=(i % 2 == 0))
            i += 1

    s.import_messages(gen(), batch_size=250, progress=lambda n: ready.set() if n >= 2000 else None)


def test_sigkill_mid_import_leaves_whole_batches(tmp_path: Path, store_key):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_import_forever, args=(str(tmp_path / "s"), ready, store_key))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    with imstore.open(tmp_path / "s", user_id="alice", search=False, key=store_key) as s:
        total = s.stats()["messages"]
        assert total >= 2000 and total % 250 == 0
        assert s.verify().ok
        expected_unread = sum(1 for i in range(total) if i % 2 == 1)
        assert s.total_unread_count() == expected_unread
    con = raw_connect(tmp_path / "s" / "imstore.db", store_key)
    ids = {r[0] for r in con.execute("SELECT msg_id FROM message")}
    assert ids == {f"id{i}" for i in range(total)}


# ------------------------------------------------------------ contract: ids, recall, edit, limits


def sent(store: MessageStore, text: str = "hi", peer: str = "bob", ts: int = 100) -> Message:
    return store.insert_message(Message.text(peer, text, timestamp=ts))


def test_local_id_survives_the_round_trip(store: MessageStore):
    m = recv("from history", local_id="L-on-bob's-device")
    store.insert_message(m)
    assert store.get_message(m.msg_id).local_id == "L-on-bob's-device"


def test_mark_sent_keeps_the_local_id(store: MessageStore):
    m = sent(store)
    stored, _ = store.mark_sent(m.msg_id, "S1", 200)
    assert (stored.msg_id, stored.local_id, stored.server_time) == ("S1", m.msg_id, 200)


def test_get_message_finds_a_sent_message_by_its_local_id(store: MessageStore):
    m = sent(store)
    store.mark_sent(m.msg_id, "S1", 200)
    assert store.get_message(m.msg_id).msg_id == "S1"


def test_mark_sent_refuses_a_server_id_of_another_conversation(store: MessageStore):
    store.insert_message(recv("taken", msg_id="S1"))
    m = sent(store, peer="carol")
    with pytest.raises(IMError) as err:
        store.mark_sent(m.msg_id, "S1", 200)
    assert err.value.code == ErrorCode.MESSAGE_INVALID
    assert store.get_message(m.msg_id).status == m.status  # nothing changed


def test_mark_sent_merges_the_server_copy_that_came_first(store: MessageStore):
    m = sent(store)
    copy = Message.text("bob", "hi", msg_id="S1", timestamp=200, local_id=m.msg_id)
    store.save_history([copy])
    stored, _ = store.mark_sent(m.msg_id, "S1", 200)
    assert store.message_count("bob") == 1 and stored.status == MessageStatus.SUCCESS


def test_conversation_read_ack_stops_at_up_to(store: MessageStore):
    a, b = sent(store, "a", ts=100), sent(store, "b", ts=300)
    store.mark_sent(a.msg_id, "S1", 100)
    store.mark_sent(b.msg_id, "S2", 300)
    assert store.mark_conversation_read_acked("bob", up_to=200) == ["S1"]


def test_conversation_read_ack_skips_messages_that_did_not_go_out(store: MessageStore):
    failed = Message.text("bob", "lost", timestamp=100)
    failed.status = MessageStatus.FAIL
    store.insert_message(failed)
    assert store.mark_conversation_read_acked("bob") == []
    assert store.get_message(failed.msg_id).is_read_acked is False


def test_recall_blanks_the_body_and_keeps_the_ids(store: MessageStore):
    m = store.insert_message(recv("secret", ts=100))
    (notice,) = store.apply_recall([m.msg_id], 500)
    got = store.get_message(m.msg_id)
    assert got == notice and got.body == TextBody("") and got.recalled_at == 500
    assert got.timestamp == 100


def test_a_recall_by_a_moderator_names_who_did(store: MessageStore):
    from imstore.lifecycle import RECALLED_BY

    spam, own = store.insert_message(recv("spam")), store.insert_message(recv("mine"))
    spam.ext = {"k": "v"}
    store.update_message(spam)
    done = store.apply_recall([spam.msg_id, own.msg_id], 500,
                              recalled_by={spam.msg_id: "mod", "unknown": "mod"})
    assert [m.ext for m in done] == [{"k": "v", RECALLED_BY: "mod"}, {}]
    assert store.get_message(spam.msg_id).ext == {"k": "v", RECALLED_BY: "mod"}
    for bad in ({spam.msg_id: 5}, ["mod"], {"": "mod"}):
        with pytest.raises(IMError) as err:
            store.apply_recall([own.msg_id], 600, recalled_by=bad)
        assert err.value.code == ErrorCode.INVALID_PARAM


@pytest.mark.parametrize("mtype", [t for t in MessageType if t != MessageType.CMD])
def test_blank_bodies_are_valid_only_on_recall_notices(store: MessageStore, mtype: MessageType):
    notice = Message.of(mtype, "alice", blank_body(mtype), sender="bob", recalled_at=5)
    assert store.insert_message(notice).recalled_at == 5


def test_recall_keeps_read_state(store: MessageStore):
    m = store.insert_message(recv("unread"))
    store.apply_recall([m.msg_id], 500)
    assert store.unread_count("bob") == 1


def test_a_recalled_message_leaves_the_search_index(store: MessageStore):
    m = store.insert_message(recv("needle", ts=100))
    store.apply_recall([m.msg_id], 500)
    assert store.search_messages("needle") == []


def test_recalling_twice_changes_nothing(store: MessageStore):
    m = store.insert_message(recv("x"))
    store.apply_recall([m.msg_id], 500)
    assert store.apply_recall([m.msg_id, "unknown"], 600) == []


def test_edit_replaces_the_body(store: MessageStore):
    m = store.insert_message(recv("typo", ts=100))
    got = store.apply_edit(m.msg_id, TextBody("fixed"), 300)
    assert (got.body.text, got.edited_at) == ("fixed", 300)
    assert [x.msg_id for x in store.search_messages("fixed")] == [m.msg_id]


def test_an_older_edit_changes_nothing(store: MessageStore):
    m = store.insert_message(recv("v0"))
    store.apply_edit(m.msg_id, TextBody("v2"), 300)
    assert store.apply_edit(m.msg_id, TextBody("v1"), 200).body.text == "v2"


def test_edit_of_an_unknown_message_is_none(store: MessageStore):
    assert store.apply_edit("nope", TextBody("x"), 1) is None


def test_edit_of_an_attachment_is_refused(store: MessageStore, tmp_path: Path):
    f = tmp_path / "a.txt"
    f.write_text("x")
    m = store.insert_message(Message.file("alice", f, sender="bob"))
    with pytest.raises(IMError) as err:
        store.apply_edit(m.msg_id, FileBody(display_name="b"), 5)
    assert err.value.code == ErrorCode.MESSAGE_INVALID


def test_edit_with_a_body_of_the_wrong_class_is_refused(store: MessageStore):
    m = store.insert_message(recv("x"))
    with pytest.raises(IMError) as err:
        store.apply_edit(m.msg_id, CustomBody("poke"), 5)
    assert err.value.code == ErrorCode.MESSAGE_INVALID


def test_pending_receipts_are_pruned(store: MessageStore):
    store.apply_receipts(1, ["never-stored"])
    assert store.verify().pending_receipts == 1
    assert store.prune_pending_receipts(0) == 1
    assert store.verify().pending_receipts == 0


def test_recent_pending_receipts_are_kept(store: MessageStore):
    store.apply_receipts(1, ["later"])
    assert store.prune_pending_receipts(3_600_000) == 0


def test_stored_owner_reads_without_creating(tmp_path: Path):
    assert MessageStore.stored_owner(tmp_path / "none") is None
    assert not (tmp_path / "none").exists()


def test_stored_owner_names_the_owner(tmp_path: Path, store_key):
    imstore.open(tmp_path / "s", user_id="alice", key=store_key).close()
    assert MessageStore.stored_owner(tmp_path / "s", key=store_key) == "alice"


def test_limits_are_kept_with_the_store(tmp_path: Path, store_key):
    big = Limits(max_payload_bytes=5 * 1024, max_file_bytes=200 * 1024 * 1024)
    imstore.open(tmp_path / "s", user_id="alice", limits=big, key=store_key).close()
    with imstore.open(tmp_path / "s", user_id="alice", key=store_key) as s:
        assert s.limits == big


def test_a_new_store_has_the_product_limits(store: MessageStore):
    assert store.limits == Limits()


def test_a_version_1_store_is_upgraded(tmp_path: Path):
    path = tmp_path / "old"
    path.mkdir()
    con = sqlite3.connect(path / "imstore.db")
    con.executescript(V1_SCHEMA)
    con.close()
    with imstore.open(path, user_id="alice") as s:
        m = s.insert_message(recv("after the upgrade"))
        assert s.apply_recall([m.msg_id], 9)[0].recalled_at == 9
        assert s.verify().ok


V1_SCHEMA = """
CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1'), ('user_id', 'alice');
CREATE TABLE message ("id" INTEGER NOT NULL PRIMARY KEY, "msg_id" TEXT NOT NULL, "local_id" TEXT,
  "conv_id" TEXT NOT NULL, "chat_type" INTEGER NOT NULL, "type" INTEGER NOT NULL,
  "sender" TEXT NOT NULL, "recipient" TEXT NOT NULL, "direction" INTEGER NOT NULL,
  "status" INTEGER NOT NULL, "local_time" INTEGER NOT NULL, "server_time" INTEGER,
  "sort_time" INTEGER NOT NULL, "is_read" INTEGER NOT NULL, "is_delivered" INTEGER NOT NULL,
  "is_read_acked" INTEGER NOT NULL, "need_group_ack" INTEGER NOT NULL,
  "group_ack_count" INTEGER NOT NULL, "body" BLOB NOT NULL, "ext" BLOB);
CREATE UNIQUE INDEX message_msg_id ON message (msg_id);
CREATE TABLE conversation (conv_id TEXT NOT NULL PRIMARY KEY, chat_type INTEGER NOT NULL,
  unread_count INTEGER NOT NULL, last_rowid INTEGER, last_sort INTEGER NOT NULL,
  last_activity INTEGER NOT NULL, ext BLOB, lm_msg_id TEXT, lm_type INTEGER, lm_sender TEXT,
  lm_recipient TEXT, lm_direction INTEGER, lm_status INTEGER, lm_local_time INTEGER,
  lm_server_time INTEGER, lm_is_read INTEGER, lm_is_delivered INTEGER, lm_is_read_acked INTEGER,
  lm_need_group_ack INTEGER, lm_group_ack_count INTEGER, lm_body BLOB, lm_ext BLOB);
CREATE TABLE pending_receipt (msg_id TEXT NOT NULL, kind INTEGER NOT NULL,
  PRIMARY KEY (msg_id, kind));
"""


def test_flush_index_applies_pending_work(disk_store: MessageStore):
    disk_store.insert_message(recv("queued"))
    assert disk_store.flush_index() == 1
    assert disk_store.stats()["search_pending"] == 0


@pytest.mark.parametrize("how", ["merge_received", "merge_history"])
def test_a_merge_leaves_out_a_one_to_one_message_between_two_other_people(store, how):
    """What the server sends is held to the store's owner rule as inserts and imports are."""
    ours = Message.text("alice", "for alice", sender="bob", msg_id="s1", timestamp=10**12)
    stray = Message.text("dave", "not for alice", sender="carol", msg_id="s2", timestamp=10**12)
    result = getattr(store, how)([ours, stray])
    assert [m.msg_id for m in result.new] == ["s1"]
    assert store.get_message("s2") is None and store.conversation("dave") is None
