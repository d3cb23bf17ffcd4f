"""The store against what its surroundings can do to it (issue 24): a database that vanished
under its index, ``os.fork`` while another thread writes, a full disk."""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

import imstore
from imstore import ErrorCode, IMError, Message, MessageStore
from imstore.store import _connection

FULL = "database or disk is full"


def _fill(store: MessageStore, n: int, word: str = "hello") -> list[Message]:
    return [store.insert_message(Message.text("bob", f"{word} {i}")) for i in range(n)]


# ------------------------------------------------------------------ a database that vanished

@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_open_refuses_a_store_whose_database_vanished(tmp_path: Path, damage: str,
                                                      store_key: bytes | None) -> None:
    path = tmp_path / "s"
    with imstore.open(path, user_id="alice", key=store_key) as s:
        _fill(s, 5)
        s.flush_index()
    db = path / "imstore.db"
    if damage == "deleted":
        db.unlink()
    else:
        db.write_bytes(b"")
    with pytest.raises(IMError) as err:
        imstore.open(path, user_id="alice", key=store_key)
    assert err.value.code == ErrorCode.DATABASE_ERROR
    assert "imstore.db" in err.value.description and "search" in err.value.description
    assert ("missing" if damage == "deleted" else "empty") in err.value.description
    # nothing was re-created in its place
    assert not db.exists() if damage == "deleted" else db.stat().st_size == 0


def test_open_creates_a_store_in_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    with imstore.open(tmp_path / "s", user_id="alice") as s:
        assert s.conversations() == []


def test_verify_never_empties_the_index_of_a_history_it_cannot_see(
        tmp_path: Path, store_key: bytes | None) -> None:
    with imstore.open(tmp_path / "s", user_id="alice", key=store_key) as s:
        _fill(s, 20, "zebra")
        s.flush_index()
        # the history vanishes under the store (outside its rules: no outbox entries)
        s.connection.execute("DELETE FROM message")
        with pytest.raises(IMError) as err:
            s.verify()
        assert err.value.code == ErrorCode.DATABASE_ERROR
        assert "rebuild_search_index" in err.value.description
        assert s._indexer.doc_count() == 20  # the index was left as it was


# ---------------------------------------------------------------------------------- fork

def _reap(pid: int, timeout: float) -> int | None:
    """The exit status of child ``pid``, or None when it did not exit within ``timeout``."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        return None
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _reap_or_kill(pid: int, timeout: float = 60) -> int | None:
    """`_reap`, and a child still running after ``timeout`` (hung) is killed: exactly the child
    the test started. Returns its exit status, or None when it had to be killed."""
    code: int | None = None
    try:
        code = _reap(pid, timeout)
    finally:
        if code is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return code


def _child_uses(store: MessageStore) -> int:
    """In a forked child: write, read and close the store inherited from the parent."""
    try:
        msg = store.insert_message(Message.text("carol", "from the child"))
        assert store.get_message(msg.msg_id) is not None
        assert store.message_count(msg.conv_id) >= 1
        store.close()
        return 0
    except BaseException:  # the child reports by its exit code
        return 1


@pytest.mark.slow
def test_fork_while_another_thread_writes(tmp_path: Path, store_key: bytes | None) -> None:
    store = imstore.open(tmp_path / "s", user_id="alice", key=store_key)
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            store.insert_message(Message.text("bob", f"parent {i}"))
            if i % 10 == 0:
                store.messages(Message.text("bob", "").conv_id, limit=5)
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    children: list[int] = []
    hung: list[int] = []
    failed: list[int] = []
    try:
        for _ in range(50):
            pid = os.fork()
            if pid == 0:  # the child never returns into pytest
                os._exit(_child_uses(store))
            children.append(pid)
            code = _reap(pid, 60)
            if code is None:
                hung.append(pid)
                continue  # killed in the end
            children.remove(pid)
            if code != 0:
                failed.append(pid)
    finally:
        for pid in children:  # exactly the children this test started and did not reap
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        stop.set()
        writer.join()
    try:
        assert hung == [] and failed == []
        # every child's message is in the store
        assert store.message_count(Message.text("carol", "").conv_id) == 50
        assert store.verify().ok
    finally:
        store.close()


def test_fork_child_of_a_store_in_memory_keeps_its_copy() -> None:
    store = imstore.open(":memory:", user_id="alice")
    _fill(store, 3)
    pid = os.fork()
    if pid == 0:
        os._exit(_child_uses(store))
    assert _reap_or_kill(pid) == 0
    assert store.message_count(Message.text("carol", "").conv_id) == 0  # the child wrote to its own copy
    store.close()


def _child_is_refused(store: MessageStore) -> int:
    """In a child forked inside a transaction: the inherited store refuses, and says why."""
    try:
        store.get_message("any")
    except IMError as exc:
        return 0 if "open it again in the child" in exc.description else 2
    except BaseException:  # the child reports by its exit code
        return 3
    return 1


def test_a_store_forked_inside_a_transaction_is_refused_in_the_child(tmp_path: Path) -> None:
    store = imstore.open(tmp_path / "s", user_id="alice")
    try:
        with store.connection.tx():
            pid = os.fork()
            if pid == 0:
                os._exit(_child_is_refused(store))
        assert _reap_or_kill(pid) == 0
        _fill(store, 2)  # the parent goes on
        assert store.verify().ok
    finally:
        store.close()


# ------------------------------------------------------------------------------ disk full

def test_a_full_disk_is_named_not_the_failed_rollback(tmp_path: Path,
                                                      store_key: bytes | None) -> None:
    with imstore.open(tmp_path / "s", user_id="alice", key=store_key) as s:
        pages = s.connection.db.execute_sql("PRAGMA page_count").fetchone()[0]
        s.connection.db.execute_sql(f"PRAGMA max_page_count = {pages + 2}")  # this thread's
        with pytest.raises(IMError) as err:
            for i in range(2000):
                s.insert_message(Message.text("bob", f"filler {i} " * 40))
        assert err.value.code == ErrorCode.DATABASE_ERROR
        assert FULL in err.value.description and "free space" in err.value.description
        assert "cannot rollback" not in err.value.description
        with pytest.raises(IMError) as err:
            s.import_messages(Message.text("bob", "x " * 500) for _ in range(500))
        assert FULL in err.value.description


def test_open_on_a_full_disk_is_an_imerror(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_connection.PRAGMAS, "max_page_count", 1)  # room for the header only
    with pytest.raises(IMError) as err:
        imstore.open(tmp_path / "s", user_id="alice")
    assert err.value.code == ErrorCode.DATABASE_ERROR
    assert FULL in err.value.description
    assert isinstance(err.value.__cause__, pw.DatabaseError)


def test_verify_gives_up_after_its_timeout_when_the_index_cannot_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from whoosh.filedb.filestore import FileStorage

    def full(*_args: object, **_kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with imstore.open(tmp_path / "s", user_id="alice") as s:
        _fill(s, 3)
        s.flush_index()
        monkeypatch.setattr(FileStorage, "create_file", full)
        _fill(s, 3, "later")
        with pytest.raises(IMError) as err:
            s.verify(timeout=0.5)
        assert err.value.code == ErrorCode.DATABASE_ERROR
        assert "search index" in err.value.description
        monkeypatch.undo()
        assert s.verify(timeout=60).repaired.get("search_index") == 0


@pytest.mark.parametrize("timeout", [-1, "1", True, float("nan")])
def test_verify_checks_its_timeout(store: MessageStore, timeout: object) -> None:
    with pytest.raises(IMError) as err:
        store.verify(timeout=timeout)  # type: ignore[arg-type]
    assert err.value.code == ErrorCode.INVALID_PARAM


# ----------------------------------------------------- a real full disk (a tiny tmpfs, as root)

@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, when this process may mount one (root on Linux); skipped otherwise."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill_disk(mount: Path) -> Path:
    filler = mount / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_a_real_full_disk(tiny_disk: Path) -> None:
    path = tiny_disk / "s"
    with imstore.open(path, user_id="alice") as s:
        kept = _fill(s, 50)
        s.flush_index()
        filler = _fill_disk(tiny_disk)
        with pytest.raises(IMError) as err:
            for i in range(5000):
                s.insert_message(Message.text("bob", f"more {i} " * 40))
        assert err.value.code == ErrorCode.DATABASE_ERROR
        assert FULL in err.value.description
        assert s.get_message(kept[-1].msg_id) is not None
    with pytest.raises(IMError) as err:  # the store's next open, on the full disk
        imstore.open(path, user_id="alice").close()
    assert err.value.code == ErrorCode.DATABASE_ERROR
    filler.unlink()
    with imstore.open(path, user_id="alice") as s:
        assert s.message_count(Message.text("bob", "").conv_id) >= 50
        assert s.verify(timeout=60).undecodable == []


@pytest.mark.slow
@pytest.mark.parametrize("rewrite", ["encrypt_store", "change_key"])
def test_a_rewrite_on_a_full_disk_changes_nothing(tiny_disk: Path, rewrite: str) -> None:
    pytest.importorskip("sqlcipher3", reason="encryption needs imstore[crypto]")
    path = tiny_disk / "s"
    old = None if rewrite == "encrypt_store" else bytes(range(32))
    with imstore.open(path, user_id="alice", key=old, search=False) as s:
        s.import_messages(Message.text("alice", f"kept {i} " * 20, sender="bob")
                          for i in range(1500))
    filler = _fill_disk(tiny_disk)
    filler.write_bytes(filler.read_bytes()[:-200_000])  # room to open, not to copy
    with pytest.raises(IMError) as err:
        if rewrite == "encrypt_store":
            imstore.encrypt_store(path, bytes(range(1, 33)))
        else:
            imstore.change_key(path, old, bytes(range(1, 33)))
    assert err.value.code == ErrorCode.DATABASE_ERROR
    assert FULL in err.value.description and "nothing was changed" in err.value.description
    assert sorted(os.listdir(path)) == ["imstore.db"]  # no half copy left
    filler.unlink()
    with imstore.open(path, user_id="alice", key=old, search=False) as s:
        assert s.message_count(Message.text("bob", "").conv_id) == 1500
        assert s.verify().ok


def test_verify_without_a_timeout_gives_up_on_an_index_that_cannot_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from whoosh.filedb.filestore import FileStorage

    from imstore.store import _verify

    def full(*_args: object, **_kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_verify, "STALL_SECONDS", 0.5)
    with imstore.open(tmp_path / "s", user_id="alice") as s:
        _fill(s, 3)
        s.flush_index()
        monkeypatch.setattr(FileStorage, "create_file", full)
        _fill(s, 3, "later")
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                s.verify()
                outcome.append(None)
            except BaseException as exc:  # handed to the test's thread
                outcome.append(exc)

        waiter = threading.Thread(target=run, daemon=True)
        waiter.start()
        waiter.join(120)  # a guard against the hang under test, not a measure
        monkeypatch.undo()  # the disk has room again: a verify that still waits goes on
        waiter.join()
        assert len(outcome) == 1 and isinstance(outcome[0], IMError), outcome
        assert "has not moved" in outcome[0].description
        assert s.verify().repaired.get("search_index") == 0


@pytest.mark.slow
def test_a_real_full_disk_under_an_encrypted_store_and_its_index(tiny_disk: Path) -> None:
    pytest.importorskip("sqlcipher3", reason="encryption needs imstore[crypto]")
    path, key = tiny_disk / "s", bytes(range(32))
    with imstore.open(path, user_id="alice", key=key) as s:
        kept = _fill(s, 50, "zanzibarite")
        s.flush_index()
        filler = _fill_disk(tiny_disk)
        with pytest.raises(IMError) as err:
            for i in range(5000):
                s.insert_message(Message.text("bob", f"zanzibarite more {i} " * 40))
        assert FULL in err.value.description
        assert s.get_message(kept[-1].msg_id) is not None
        assert len(s.search_messages("zanzibarite", limit=400)) >= 50  # exact, full or not
        try:  # the index may or may not be behind: either way verify returns or says so
            s.verify(timeout=1)
        except IMError as exc:
            assert "search index" in exc.description or FULL in exc.description
        filler.unlink()
        s.flush_index(timeout=120)
        assert s.verify(timeout=120).repaired.get("search_index") == 0
    assert not [p for p in path.rglob("*") if p.is_file() and b"zanzibarite" in p.read_bytes()]


def _child_searches(store: MessageStore, word: str, expected: int) -> int:
    """In a forked child: search the inherited store."""
    try:
        return 0 if len(store.search_messages(word, limit=400)) == expected else 1
    except BaseException:  # the child reports by its exit code
        return 2


def test_a_fork_while_a_thread_is_inside_the_sealed_index_cache(tmp_path: Path) -> None:
    pytest.importorskip("sqlcipher3", reason="encryption needs imstore[crypto]")
    store = imstore.open(tmp_path / "s", user_id="alice", key=bytes(range(32)))
    try:
        _fill(store, 30, "cached")
        store.flush_index()
        assert len(store.search_messages("cached", limit=400)) == 30
        _fill(store, 10, "cached")
        store.flush_index()  # a new commit: the next search opens files it has not read yet
        cache = store._indexer._sealing.cache  # type: ignore[union-attr]
        with cache._lock:  # a thread of this process is inside the cache when it forks
            pid = os.fork()
            if pid == 0:
                os._exit(_child_searches(store, "cached", 40))
        assert _reap_or_kill(pid) == 0
    finally:
        store.close()
