"""Encryption at rest against what can happen while a store is rewritten (issue 22): SIGKILL at
each step of `encrypt_store` and `change_key`, and another process opening the store meanwhile.
Whatever happens, the store opens with the old key or the new one and holds every message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import imstore
from imstore import IMError, Message
from imstore.store import _cipher

pytest.importorskip("sqlcipher3", reason="encryption needs imstore[crypto]")

KEY = bytes(range(32))
NEW = bytes(range(1, 33))
OTHER = bytes(range(2, 34))
BOB = Message.text("bob", "").conv_id

def _old_key(rewrite: str) -> bytes | None:
    """The key the store has before ``rewrite``: none before encrypt_store, KEY before
    change_key."""
    return None if rewrite == "encrypt_store" else KEY


def _store_for(path: Path, rewrite: str, text: str) -> bytes | None:
    """A store ready for ``rewrite``, holding one message; returns its key."""
    old = _old_key(rewrite)
    with imstore.open(path, user_id="alice", key=old, search=False) as s:
        s.insert_message(Message.text("bob", text))
    return old


def _rewrite(path: Path, rewrite: str, new: bytes) -> None:
    """Run ``rewrite`` (encrypt_store, or change_key from KEY) to key ``new``."""
    if rewrite == "encrypt_store":
        imstore.encrypt_store(path, new)
    else:
        imstore.change_key(path, KEY, new)


def _kill_after(script: str, args: list[str], lines: int) -> list[str]:
    """Run ``script`` in a child process, read ``lines`` lines of its output, SIGKILL it (that
    PID, and it only); returns the lines."""
    with subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            said = [proc.stdout.readline().strip() for _ in range(lines)]
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    return said


_WRITE_DURING = """
import sys, imstore
from imstore import Message
from imstore.store import _connection
_connection.BUSY_TIMEOUT = 0.5  # a rewrite holds the store: fail soon instead of after 30 s
key = bytes.fromhex(sys.argv[2]) if sys.argv[2] else None
with imstore.open(sys.argv[1], user_id="alice", key=key, search=False) as s:
    s.insert_message(Message.text("bob", "written during the rewrite"))
print("stored", flush=True)
"""


@pytest.mark.parametrize("rewrite", ["encrypt_store", "change_key"])
def test_a_process_that_opens_the_store_during_a_rewrite_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rewrite: str) -> None:
    path = tmp_path / "s"
    old = _store_for(path, rewrite, "before")
    said: list[str] = []
    real = _cipher._check_copy

    def another_process_writes(*args: object) -> None:  # after the copy, before the rename
        done = subprocess.run([sys.executable, "-c", _WRITE_DURING, str(path),
                               "" if old is None else old.hex()],
                              capture_output=True, text=True, timeout=120)
        said.append(done.stdout.strip())
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_cipher, "_check_copy", another_process_writes)
    _rewrite(path, rewrite, NEW)
    with imstore.open(path, user_id="alice", key=NEW, search=False) as s:
        texts = [m.body.text for m in s.messages(BOB)]
    # the other process was refused, or what it stored is there: never "stored" and lost
    assert said == [""] or "written during the rewrite" in texts, (said, texts)
    assert "before" in texts


@pytest.mark.parametrize("rewrite", ["encrypt_store", "change_key"])
def test_a_second_rewrite_meanwhile_is_refused_and_spoils_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rewrite: str) -> None:
    path = tmp_path / "s"
    _store_for(path, rewrite, "kept")
    refused: list[str] = []
    real = _cipher._check_copy

    def another_rewrite(*args: object) -> None:  # the copy is written, not yet checked
        with pytest.raises(IMError) as err:
            _rewrite(path, rewrite, OTHER)
        refused.append(err.value.description)
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_cipher, "_check_copy", another_rewrite)
    _rewrite(path, rewrite, NEW)
    assert len(refused) == 1 and "is open" in refused[0]
    with imstore.open(path, user_id="alice", key=NEW, search=False) as s:
        assert [m.body.text for m in s.messages(BOB)] == ["kept"]


# -------------------------------------------------------------------- SIGKILL at each step

_REWRITE_STOPPED_AT = """
import os, shutil, sys
import sqlcipher3
import imstore
from imstore.store import _cipher

path, rewrite, step, old, new = sys.argv[1:6]
old_key = bytes.fromhex(old) if old else None
new_key = bytes.fromhex(new)


def stop(where):  # tell the test, then wait for its SIGKILL
    print("at", where, flush=True)
    sys.stdin.readline()
    sys.exit(3)  # the test did not kill: it fails on the exit code


def after(name, module, attr):
    real = getattr(module, attr)

    def hooked(*args, **kwargs):
        out = real(*args, **kwargs)
        stop(name)
        return out

    setattr(module, attr, hooked)


class Proxy:  # stops inside sqlcipher_export, while SQLite copies the rows
    def __init__(self, con):
        self._con = con

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, sql, *args):
        if "sqlcipher_export" in sql:
            ticks = iter(range(10**9))
            self._con.set_progress_handler(
                lambda: 0 if next(ticks) != 40 else stop("export"), 100)
        return self._con.execute(sql, *args)


if step == "lock":
    after("lock", _cipher, "_hold")
elif step == "export":
    real_connect = sqlcipher3.connect
    sqlcipher3.connect = lambda *a, **k: Proxy(real_connect(*a, **k))
elif step == "check":
    after("check", _cipher, "_check_copy")
elif step == "index":
    after("index", shutil, "rmtree")
elif step == "rename":
    after("rename", os, "replace")
if rewrite == "encrypt_store":
    imstore.encrypt_store(path, new_key)
else:
    imstore.change_key(path, old_key, new_key)
print("done", flush=True)
"""

_STEPS = ["lock", "export", "check", "index", "rename"]


def _opens_with(path: Path, keys: list[bytes | None]) -> bytes | None:
    """The one key of ``keys`` that opens the store (the others are refused)."""
    opened = []
    for key in keys:
        try:
            imstore.open(path, user_id="alice", key=key, search=False).close()
        except IMError:
            continue
        opened.append(key)
    assert len(opened) == 1, opened
    return opened[0]


def _kill_at(path: Path, rewrite: str, step: str, old: bytes | None) -> None:
    said = _kill_after(_REWRITE_STOPPED_AT, [str(path), rewrite, step,
                                             "" if old is None else old.hex(), NEW.hex()], 1)
    assert said == [f"at {step}"]


@pytest.mark.parametrize("step", _STEPS)
@pytest.mark.parametrize("rewrite", ["encrypt_store", "change_key"])
def test_a_rewrite_killed_at_any_step_leaves_a_store_that_opens_and_lost_nothing(
        tmp_path: Path, rewrite: str, step: str) -> None:
    path = tmp_path / "s"
    old = _old_key(rewrite)
    with imstore.open(path, user_id="alice", key=old) as s:  # with an index (plaintext or not)
        s.import_messages(Message.text("alice", f"quokkaword {i}", sender="bob")
                          for i in range(300))
        s.flush_index()
    _kill_at(path, rewrite, step, old)
    now = _opens_with(path, [old, NEW])
    if now == NEW and rewrite == "encrypt_store":  # nothing the old store held is left in clear
        assert [p.name for p in path.rglob("*") if p.is_file()
                and b"quokkaword" in p.read_bytes()] == []
    with imstore.open(path, user_id="alice", key=now, search=False) as s:
        assert sorted(m.body.text for m in s.messages(BOB, limit=400)) == sorted(
            f"quokkaword {i}" for i in range(300))
        assert s.verify().ok
    assert not [n for n in os.listdir(path) if ".rekey" in n]  # the next open cleaned up
    if now != NEW:  # the rewrite, run again, goes through
        _rewrite(path, rewrite, NEW)
    with imstore.open(path, user_id="alice", key=NEW) as s:
        assert s.message_count(BOB) == 300
        assert len(s.search_messages("quokkaword", limit=400)) == 300


# ------------------------------------------------------------------------ several processes

_WRITER = """
import sys, imstore
from imstore import Message
path, key, who = sys.argv[1], sys.argv[2], sys.argv[3]
key = bytes.fromhex(key[4:]) if key.startswith("raw:") else key
with imstore.open(path, user_id="alice", key=key, search=False) as s:
    print("open", flush=True)
    sys.stdin.readline()  # all writers start together
    for i in range(150):
        s.insert_message(Message.text("bob", f"{who} {i}"))
print("done", flush=True)
"""


def test_two_processes_write_an_encrypted_store_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s"
    imstore.open(path, user_id="alice", key="shared passphrase").close()
    raw = _cipher.derive_key("shared passphrase", (path / "imstore.db").read_bytes()[:16])
    keys = {"raw": f"raw:{raw.hex()}", "passphrase": "shared passphrase"}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), key, who],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for who, key in keys.items()]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "open"
        outs = [p.communicate("go\n", timeout=300)[0] for p in procs]
        assert [o.strip() for o in outs] == ["done", "done"]
    finally:
        for p in procs:  # exactly the children this test started
            if p.returncode is None:
                p.kill()
                p.wait()
    with imstore.open(path, user_id="alice", key=raw, search=False) as s:
        texts = {m.body.text for m in s.messages(BOB, limit=400)}
        assert texts == {f"{who} {i}" for who in keys for i in range(150)}
        assert s.verify().ok


_IMPORTER = """
import sys, imstore
from imstore import Message
with imstore.open(sys.argv[1], user_id="alice", key=bytes(range(32)), search=False) as s:
    def told(n):
        print(n, flush=True)
    s.import_messages((Message.text("alice", f"batch word {i}", sender="bob")
                       for i in range(100_000)), batch_size=500, progress=told)
"""


def test_an_import_into_an_encrypted_store_killed_keeps_every_committed_batch(
        tmp_path: Path) -> None:
    path = tmp_path / "s"
    told = [int(n) for n in _kill_after(_IMPORTER, [str(path)], 6)]
    with imstore.open(path, user_id="alice", key=KEY, search=False) as s:
        count = s.message_count(BOB)
        assert count >= told[-1] and count % 500 == 0
        assert s.verify().ok
    assert not [p for p in path.rglob("*") if p.is_file() and b"batch word" in p.read_bytes()]


_KILLED_WITH_A_WAL = """
import sys, imstore
from imstore import Message
s = imstore.open(sys.argv[1], user_id="alice", key=bytes(range(32)), search=False)
for i in range(100):
    s.insert_message(Message.text("bob", f"in the wal {i}"))
print("written", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("wrong", [NEW, None, "a wrong passphrase"], ids=["raw", "none", "passphrase"])
def test_a_wrong_key_on_a_killed_store_with_a_hot_wal_loses_nothing(tmp_path: Path, wrong) -> None:
    path = tmp_path / "s"
    assert _kill_after(_KILLED_WITH_A_WAL, [str(path)], 1) == ["written"]
    assert (path / "imstore.db-wal").stat().st_size > 0  # the messages are in the WAL only
    for _ in range(2):
        with pytest.raises(IMError):
            imstore.open(path, user_id="alice", key=wrong, search=False)
    with imstore.open(path, user_id="alice", key=KEY, search=False) as s:
        assert s.message_count(BOB) == 100
        assert s.verify().ok
