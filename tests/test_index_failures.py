"""What a file, a full disk or a busy store can do to the index (issue 24's index items): damaged
lock and index paths, a damaged row-id column, failed writes that must leave nothing behind, and
a reindex asked from another store object while others keep writing."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

import imstore
from imstore import ErrorCode, IMError, Message


def _fill(st: imstore.MessageStore, n: int = 50) -> None:
    st.import_messages(Message.text("p", f"apple w{i}q", sender="p", msg_id=f"m{i}",
                                    timestamp=1000 + i) for i in range(n))
    st.flush_index()


@pytest.mark.parametrize("damage", ["lock is an empty directory", "lock is a dangling symlink",
                                    "index is a file", "index is a dangling symlink"])
def test_damaged_lock_and_index_paths_are_repaired(tmp_path: Path, damage: str):
    path = tmp_path / "s"
    with imstore.open(path, user_id="me") as st:
        _fill(st)
    lock, index = path / "search.lock", path / "search"
    if damage.startswith("lock"):
        lock.unlink()
        if "directory" in damage:
            lock.mkdir()
        else:
            lock.symlink_to(tmp_path / "nowhere")
    else:
        import shutil

        shutil.rmtree(index)
        if "file" in damage:
            index.write_bytes(b"not an index")
        else:
            index.symlink_to(tmp_path / "nowhere")
    with imstore.open(path, user_id="me") as st:
        assert st.index_status().indexer
        assert len(st.search_messages("apple", limit=100)) == 50
        st.flush_index(timeout=60)
        assert st.verify().ok
    assert index.is_dir() and lock.is_file()


def test_a_lock_path_that_is_a_full_directory_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "s"
    with imstore.open(path, user_id="me") as st:
        _fill(st, 5)
    (path / "search.lock").unlink()
    (path / "search.lock").mkdir()
    (path / "search.lock" / "keep").write_text("someone's file")
    with pytest.raises(IMError) as err:
        imstore.open(path, user_id="me")
    assert err.value.code == ErrorCode.DATABASE_ERROR and "is a directory" in str(err.value)
    assert (path / "search.lock" / "keep").read_text() == "someone's file"  # nothing removed


def test_verify_sees_a_damaged_row_id_column_and_repairs_it(tmp_path: Path):
    path = tmp_path / "s"
    with imstore.open(path, user_id="me") as st:
        _fill(st, 200)
    cols = list((path / "search").glob("*.rowid.col"))
    assert cols
    for col in cols:  # every row id off by 100,000: the counts still agree
        data = bytearray(col.read_bytes())
        for i in range(0, len(data) - len(data) % 8, 16):
            data[i + 5] ^= 0x01
        col.write_bytes(bytes(data))
    with imstore.open(path, user_id="me") as st:
        def found() -> int:  # two words: answered from the index's hits
            return sum(len(st.search_messages(f"w{i}q apple")) for i in range(0, 200, 5))

        assert found() < 40  # the damage shows
        report = st.verify()
        assert report.repaired["search_index"] > 0
        st.flush_index(timeout=60)
        assert found() == 40
        assert st.verify().ok


def test_a_full_disk_leaves_no_partial_segment_files_and_the_work_queued(tmp_path: Path,
                                                                         monkeypatch):
    from imstore.index import SearchIndex, SearchIndexError

    ix = SearchIndex(str(tmp_path / "ix"), workers=1)
    before = sorted(os.listdir(tmp_path / "ix"))
    storage_type = type(ix._storage)
    real = storage_type.create_file
    made: list[str] = []

    def full(self, name, **kw):  # the third file of the segment finds the disk full
        made.append(name)
        if len(made) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, **kw)

    monkeypatch.setattr(storage_type, "create_file", full)
    from imstore.index import Doc

    docs = [Doc(i, i, "c", "p", 1, f"apple {i}", "") for i in range(1, 30)]
    for _ in range(3):  # each retry fails the same way
        made.clear()
        with pytest.raises(SearchIndexError) as err:
            ix.apply([], [], new=docs)
        assert not err.value.damaged
    monkeypatch.setattr(storage_type, "create_file", real)
    left = sorted(set(os.listdir(tmp_path / "ix")) - {"MAIN_WRITELOCK"})  # whoosh's lock file
    assert left == before  # nothing left behind
    ix.apply([], [], new=docs)  # the disk has room again: the same work goes in
    assert ix.doc_count() == 29
    ix.close()


def test_a_reindex_asked_elsewhere_is_served_while_others_keep_writing(tmp_path: Path):
    path = tmp_path / "s"
    app = imstore.open(path, user_id="me")  # the indexer
    tool = imstore.open(path, user_id="me")  # `imstore reindex` in effect
    writer = imstore.open(path, user_id="me")  # another process that keeps writing
    stop = threading.Event()
    written: list[int] = []

    def keep_writing() -> None:
        i = 0
        while not stop.is_set():
            writer.insert_message(Message.text("p", f"busy {i}", sender="p", msg_id=f"b{i}"))
            written.append(i)
            i += 1

    try:
        _fill(app, 300)
        t = threading.Thread(target=keep_writing, daemon=True)
        t.start()
        assert tool.rebuild_search_index() >= 300  # returns though writes never stop
        stop.set()
        t.join(60)
        assert not t.is_alive() and written
        assert len(tool.search_messages("apple", limit=400)) == 300
        app.flush_index(timeout=60)
        assert app.verify().ok
    finally:
        stop.set()
        for st in (writer, tool, app):
            st.close()
