"""The background indexer at its edges: a takeover with a large backlog, calls on a closed store,
a crash in the middle of a rebuild, rows written by other store objects or with search off,
waits from a non-indexer and from inside an import, and fork."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import imstore
from imstore import ErrorCode, IMError, IndexPolicy, Message

_ROOT = str(Path(__file__).resolve().parent.parent)


def test_a_search_that_takes_over_a_large_backlog_does_not_deadlock(tmp_path: Path):
    # the search holds the writer lock when it makes this process the indexer; the new
    # thread must never be waited for from there (the lock order is the thread's first)
    path = tmp_path / "s"
    owner = imstore.open(path, user_id="me")
    # a second open: not the indexer; a batch of 50 stands for 50,000 (a large outbox)
    other = imstore.open(path, user_id="me", index_policy=IndexPolicy(batch=50))
    assert not other.index_status().indexer
    with owner.pause_indexing():
        other.import_messages(Message.text("p", f"w{i}q common", sender="p", msg_id=f"m{i}",
                                           timestamp=1000 + i) for i in range(5000))
    owner.close()  # the indexer goes away with 5,000 entries pending
    out: list[list[Message]] = []
    t = threading.Thread(target=lambda: out.append(other.search_messages("w4999q")), daemon=True)
    t.start()
    t.join(60)
    try:
        assert not t.is_alive(), "the search deadlocked"
        assert [m.msg_id for m in out[0]] == ["m4999"]
        other.flush_index(timeout=60)
        assert other.verify().ok
    finally:
        other.close()


@pytest.mark.parametrize("call", ["search", "rebuild", "verify", "flush"])
def test_a_call_on_a_closed_store_leaves_the_indexer_lock_free(tmp_path: Path, call: str):
    path = tmp_path / "s"
    st = imstore.open(path, user_id="me")
    st.insert_message(Message.text("p", "hello", sender="p"))
    st.close()
    with pytest.raises(IMError) as err:
        {"search": lambda: st.search_messages("hello"), "rebuild": st.rebuild_search_index,
         "verify": st.verify, "flush": st.flush_index}[call]()
    assert err.value.code == ErrorCode.DATABASE_ERROR
    with imstore.open(path, user_id="me") as again:
        assert again.index_status().indexer  # nobody else has the store open


_CRASH_IN_A_DAMAGE_REBUILD = textwrap.dedent("""
    import os, sys, time
    import imstore
    from imstore import Message
    from imstore.index import SearchIndex, SearchIndexError
    from imstore.index._outbox import Outbox
    st = imstore.open(sys.argv[1], user_id="me")
    st.import_messages(Message.text("p", f"apple {i}", sender="p", msg_id=f"m{i}", timestamp=i)
                       for i in range(200))
    st.flush_index()
    def damaged(self, *a, **kw):  # every read of the index fails as a damaged one would
        raise SearchIndexError("a damaged segment", damaged=True)
    def crash(self, db):
        os._exit(0)  # the process dies (power cut, kill -9) while queueing the rebuild
    SearchIndex.hits = SearchIndex.is_common = damaged
    Outbox.enqueue_everything = crash
    assert len(st.search_messages("apple", limit=400)) == 200  # read from the rows
    time.sleep(30)
""")


def test_a_crash_in_the_middle_of_a_damage_rebuild_loses_nothing(tmp_path: Path):
    path = str(tmp_path / "s")
    subprocess.run([sys.executable, "-c", _CRASH_IN_A_DAMAGE_REBUILD, path], check=True,
                   env={**os.environ, "PYTHONPATH": _ROOT}, timeout=120)
    with imstore.open(path, user_id="me") as st:
        st.flush_index(timeout=60)
        assert len(st.search_messages("apple", limit=400)) == 200
        assert st.verify().ok


def test_updating_a_row_another_store_object_wrote_indexes_it_once(tmp_path: Path):
    path = tmp_path / "s"
    a = imstore.open(path, user_id="me")  # the indexer
    b = imstore.open(path, user_id="me")  # not the indexer (another process, in effect)
    try:
        m = b.insert_message(Message.text("p", "apple pie", sender="p", msg_id="x1"))
        a.flush_index()
        m.body.text = "banana split"
        a.update_message(m)
        a.flush_index()
        assert a.verify().repaired["search_index"] == 0  # one document, not two
        assert [x.msg_id for x in a.search_messages("banana")] == ["x1"]
        assert a.search_messages("apple") == []
        assert a.verify().ok
    finally:
        b.close()
        a.close()


def test_writes_with_search_off_are_indexed_by_the_indexer(tmp_path: Path):
    path = tmp_path / "s"
    app = imstore.open(path, user_id="me")  # the indexer
    tool = imstore.open(path, user_id="me", search=False)
    try:
        app.insert_message(Message.text("p", "apple", sender="p", msg_id="m1"))
        app.flush_index()
        tool.insert_message(Message.text("p", "zebra crossing", sender="p", msg_id="m2"))
        assert tool.delete_message("m1")
        app.flush_index()
        assert [m.msg_id for m in app.search_messages("zebra")] == ["m2"]
        assert app.search_messages("apple") == []
        assert app.verify().ok
    finally:
        tool.close()
        app.close()
    with imstore.open(path, user_id="me") as st:
        assert [m.msg_id for m in st.search_messages("zebra")] == ["m2"]


def test_a_store_never_indexed_queues_nothing_with_search_off(tmp_path: Path):
    path = tmp_path / "s"
    with imstore.open(path, user_id="me", search=False) as st:
        st.import_messages(Message.text("p", f"w{i}", sender="p") for i in range(100))
        assert st.stats()["search_pending"] == 0  # no index to keep: no outbox to grow
    with imstore.open(path, user_id="me") as st:  # the first open with search builds it whole
        assert len(st.search_messages("w42")) == 1
        st.flush_index(timeout=60)
        assert st.verify().ok


def test_flush_and_rebuild_from_a_store_that_is_not_the_indexer(tmp_path: Path):
    path = tmp_path / "s"
    a = imstore.open(path, user_id="me")
    b = imstore.open(path, user_id="me")
    try:
        with a.pause_indexing():  # the indexer is busy
            b.insert_message(Message.text("p", "hello kiwi", sender="p", msg_id="k"))
            # the indexer is held for the whole block: only the time-out can end this wait
            with pytest.raises(IMError) as err:
                b.flush_index(timeout=0.5)
            assert err.value.code == ErrorCode.DATABASE_ERROR
        assert b.flush_index(timeout=10) == 1
        # a rebuild asked of the indexer, which goes away meanwhile: this one takes over
        res: list[int] = []
        t = threading.Thread(target=lambda: res.append(b.rebuild_search_index()))
        with a.pause_indexing():
            t.start()
            time.sleep(0.5)
            threading.Thread(target=a.close).start()
        t.join(60)
        assert not t.is_alive() and res == [1]
        assert b.index_status().indexer and b.index_status().pending == 0
        assert [m.msg_id for m in b.search_messages("kiwi")] == ["k"]
        assert b.verify().ok
    finally:
        b.close()
        a.close()


def test_a_flush_from_an_import_progress_callback_does_not_wait_for_the_import(tmp_path: Path):
    flushed: list[int] = []
    with imstore.open(tmp_path / "s", user_id="me") as st:

        def progress(seen: int) -> None:
            if seen == 2000:
                st.flush_index(timeout=60)  # the indexer must not yield to this very import
                flushed.append(st.index_status().pending)

        st.import_messages((Message.text("p", f"w{i}q", sender="p") for i in range(4000)),
                           progress=progress)
        assert flushed == [0]
        assert len(st.search_messages("w3999q")) == 1


_FORK_CHILD_SEARCHES = textwrap.dedent("""
    import os, sys
    import imstore
    from imstore import Message
    st = imstore.open(sys.argv[1], user_id="me")
    st.import_messages(Message.text("p", f"w{i}q", sender="p", msg_id=f"m{i}") for i in range(300))
    st.flush_index()
    pid = os.fork()
    if pid == 0:  # the child: a reader; the parent keeps indexing
        ok = (not st.index_status().indexer
              and [m.msg_id for m in st.search_messages("w7q")] == ["m7"])
        st.insert_message(Message.text("p", "from the child", sender="p", msg_id="c"))
        ok = ok and [m.msg_id for m in st.search_messages("child")] == ["c"]
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    st.flush_index(timeout=60)
    assert [m.msg_id for m in st.search_messages("child")] == ["c"]
    assert st.verify().repaired["search_index"] == 0 and st.verify().ok  # 301 documents
    st.close()
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_is_a_reader_and_the_parent_keeps_indexing(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-c", _FORK_CHILD_SEARCHES, str(tmp_path / "s")],
                          env={**os.environ, "PYTHONPATH": _ROOT}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_collector_pause_nests_and_keeps_an_apps_choice():
    import gc

    from imstore.index._collector import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # another batch (another store's thread) meanwhile
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer batch is still running
    assert gc.isenabled()
    gc.disable()  # the app's own choice
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # not turned on behind the app's back
    finally:
        gc.enable()
