"""Encryption at rest against what can happen while a store is rewritten (issue 22): SIGKILL at
each step of `encrypt_store` and `change_key`, and another process opening the store meanwhile.
Whatever happens, the store opens with the old key or the new one and holds every message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import imstore
from imstore import Message
from imstore.store import _cipher

pytest.importorskip("sqlcipher3", reason="encryption needs imstore[crypto]")

KEY = bytes(range(32))
NEW = bytes(range(1, 33))
BOB = Message.text("bob", "").conv_id

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
    old = None if rewrite == "encrypt_store" else KEY
    with imstore.open(path, user_id="alice", key=old, search=False) as s:
        s.insert_message(Message.text("bob", "before"))
    said: list[str] = []
    real = _cipher._check_copy

    def another_process_writes(*args: object) -> None:  # after the copy, before the rename
        done = subprocess.run([sys.executable, "-c", _WRITE_DURING, str(path),
                               "" if old is None else old.hex()],
                              capture_output=True, text=True, timeout=120)
        said.append(done.stdout.strip())
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_cipher, "_check_copy", another_process_writes)
    if rewrite == "encrypt_store":
        imstore.encrypt_store(path, NEW)
    else:
        imstore.change_key(path, KEY, NEW)
    with imstore.open(path, user_id="alice", key=NEW, search=False) as s:
        texts = [m.body.text for m in s.messages(BOB)]
    # the other process was refused, or what it stored is there: never "stored" and lost
    assert said == [""] or "written during the rewrite" in texts, (said, texts)
    assert "before" in texts
