from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
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


def test_imported_history_is_unread_only_when_it_says_so(store: MessageStore):
    res = store.import_messages([recv("a"), recv("b", is_read=False), recv("c", is_read=True)])
    assert res.imported == 3
    assert store.unread_count("bob") == 1


def test_unknown_conversation_where_one_is_required(store: MessageStore):
    with pytest.raises(IMError) as err:
        store.mark_conversation_read("ghost")
    assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST
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


def test_malformed_stored_payload_is_message_invalid(disk_store: MessageStore, raw_sql):
    m = disk_store.insert_message(recv("fine"))
    raw_sql(disk_store, "UPDATE message SET body = ? WHERE msg_id = ?", (b"\x01\xc1\xc1", m.msg_id))
    with pytest.raises(IMError) as err:
        disk_store.get_message(m.msg_id)
    assert err.value.code == ErrorCode.MESSAGE_INVALID
    assert isinstance(err.value.__cause__, Exception)


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


def test_store_belongs_to_one_user(tmp_path: Path):
    imstore.open(tmp_path / "s", user_id="alice").close()
    with pytest.raises(IMError) as err:
        imstore.open(tmp_path / "s", user_id="mallory")
    assert err.value.code == ErrorCode.DATABASE_ERROR


def test_closed_store_raises(tmp_path: Path):
    s = imstore.open(tmp_path / "s", user_id="alice")
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


def test_a_crash_mid_send_leaves_nothing_in_progress(tmp_path: Path):
    with imstore.open(tmp_path / "s", user_id="alice") as s:
        m = Message.text("bob", "sending")
        m.status = MessageStatus.INPROGRESS
        s.insert_message(m)
    with imstore.open(tmp_path / "s", user_id="alice") as s:
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


def _import_forever(path: str, ready) -> None:  # runs in a child process
    s = imstore.open(path, user_id="alice", search=False)

    def gen():
        i = 0
        while True:
            yield Message.text("alice", f"m{i}", sender=f"p{i % 7}", msg_id=f"id{i}",
                               timestamp=1000 + i, is_read=(i % 2 == 0))
            i += 1

    s.import_messages(gen(), batch_size=250, progress=lambda n: ready.set() if n >= 2000 else None)


def test_sigkill_mid_import_leaves_whole_batches(tmp_path: Path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_import_forever, args=(str(tmp_path / "s"), ready))
    p.start()
    assert ready.wait(60)
    time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    with imstore.open(tmp_path / "s", user_id="alice", search=False) as s:
        total = s.stats()["messages"]
        assert total >= 2000 and total % 250 == 0
        assert s.verify().ok
        expected_unread = sum(1 for i in range(total) if i % 2 == 1)
        assert s.total_unread_count() == expected_unread
    con = sqlite3.connect(tmp_path / "s" / "imstore.db")
    ids = {r[0] for r in con.execute("SELECT msg_id FROM message")}
    assert ids == {f"id{i}" for i in range(total)}
