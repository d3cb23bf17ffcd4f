"""Encryption at rest (issue 22), the store's side: SQLCipher keys, the errors for each wrong
key, the rewrites (`encrypt_store`, `change_key`), and the sealed files an index is made of."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

import imstore
from imstore import ErrorCode, IMError, Message, MessageStore, _crypto
from imstore.store import _cipher

pytest.importorskip("sqlcipher3", reason="encryption needs imstore[crypto]")

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
BOB = Message.text("bob", "").conv_id


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by its content's hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _holding(folder: Path, word: bytes) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and word in p.read_bytes()]


def _plain_store(path: Path, n: int = 30, word: str = "plainword") -> None:
    with imstore.open(path, user_id="alice") as s:
        s.import_messages(Message.text("alice", f"{word} {i}", sender="bob") for i in range(n))
        s.flush_index()


# ---------------------------------------------------------------------------- keys at open

@pytest.mark.parametrize("key", [KEY, "correct horse battery staple"], ids=["raw", "passphrase"])
def test_a_store_opened_with_a_key_is_encrypted_and_opens_again(tmp_path: Path, key) -> None:
    with imstore.open(tmp_path / "s", user_id="alice", key=key) as s:
        m = s.insert_message(Message.text("bob", "hello there"))
    assert imstore.is_encrypted(tmp_path / "s")
    assert not (tmp_path / "s" / "imstore.db").read_bytes().startswith(b"SQLite format 3")
    with imstore.open(tmp_path / "s", user_id="alice", key=key) as s:
        assert s.get_message(m.msg_id).body.text == "hello there"
        assert [r.msg_id for r in s.search_messages("hello")] == [m.msg_id]
    assert MessageStore.stored_owner(tmp_path / "s", key=key) == "alice"


def test_a_passphrase_and_the_raw_key_it_derives_open_the_same_store(tmp_path: Path) -> None:
    imstore.open(tmp_path / "s", user_id="alice", key="pass phrase").close()
    salt = (tmp_path / "s" / "imstore.db").read_bytes()[:16]
    raw = _crypto.derive_key("pass phrase", salt)
    with imstore.open(tmp_path / "s", user_id="alice", key=raw) as s:
        assert s.conversations() == []


def test_no_plaintext_in_the_database_files_while_open_and_after_close(tmp_path: Path) -> None:
    path = tmp_path / "s"
    word = b"xylophonic"
    with imstore.open(path, user_id="alice", key=KEY, search=False) as s:
        s.import_messages(Message.text("alice", f"{word.decode()} {i}", sender="bob",
                                       ext={"note": word.decode()}) for i in range(500))
        s.insert_message(Message.text("bob", "one more xylophonic"))
        assert (path / "imstore.db-wal").stat().st_size > 0  # the WAL holds the last writes
        assert _holding(path, word) == []
        assert _holding(path, b"bob") == []  # ids too
    assert _holding(path, word) == []
    with imstore.open(path, user_id="alice", key=KEY, search=False) as s:
        assert s.message_count(BOB) == 501


def test_the_passphrase_is_derived_once_per_open_for_every_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = _cipher.derive_key

    def counting(key, salt):
        calls.append(1)
        return real(key, salt)

    monkeypatch.setattr(_cipher, "derive_key", counting)
    with imstore.open(tmp_path / "s", user_id="alice", key="pass") as s:
        def read() -> None:  # each thread opens its own SQLite connection
            for _ in range(5):
                s.insert_message(Message.text("bob", "hi"))
                s.messages(BOB, limit=5)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.message_count(BOB) == 20
    assert calls == [1]


# ----------------------------------------------------------------------- one error for each

def test_a_missing_key_says_the_store_is_encrypted(tmp_path: Path) -> None:
    imstore.open(tmp_path / "s", user_id="alice", key=KEY).close()
    for call in (lambda: imstore.open(tmp_path / "s", user_id="alice"),
                 lambda: MessageStore.stored_owner(tmp_path / "s")):
        with pytest.raises(IMError) as err:
            call()
        assert err.value.code == ErrorCode.INVALID_PARAM
        assert "is encrypted: open it with key=" in err.value.description


@pytest.mark.parametrize("wrong", [OTHER, "not the passphrase"], ids=["raw", "passphrase"])
def test_a_wrong_key_is_named_and_changes_nothing(tmp_path: Path, wrong) -> None:
    with imstore.open(tmp_path / "s", user_id="alice", key=KEY) as s:
        s.insert_message(Message.text("bob", "kept"))
    before = _snapshot(tmp_path / "s")
    for call in (lambda: imstore.open(tmp_path / "s", user_id="alice", key=wrong),
                 lambda: MessageStore.stored_owner(tmp_path / "s", key=wrong),
                 lambda: imstore.change_key(tmp_path / "s", wrong, "new")):
        with pytest.raises(IMError) as err:
            call()
        assert err.value.code == ErrorCode.INVALID_PARAM
        assert "does not open the encrypted store" in err.value.description
    assert _snapshot(tmp_path / "s") == before
    with imstore.open(tmp_path / "s", user_id="alice", key=KEY) as s:
        assert s.message_count(BOB) == 1


def test_a_key_for_a_plain_store_says_so(tmp_path: Path) -> None:
    _plain_store(tmp_path / "s", 3)
    before = _snapshot(tmp_path / "s")
    with pytest.raises(IMError) as err:
        imstore.open(tmp_path / "s", user_id="alice", key=KEY)
    assert err.value.code == ErrorCode.INVALID_PARAM
    assert "not encrypted" in err.value.description and "encrypt_store" in err.value.description
    assert _snapshot(tmp_path / "s") == before


@pytest.mark.parametrize("key", [b"short", b"", "", 42, ["k"]])
def test_a_key_that_is_no_key_is_refused(tmp_path: Path, key) -> None:
    with pytest.raises(IMError) as err:
        imstore.open(tmp_path / "s", user_id="alice", key=key)
    assert err.value.code == ErrorCode.INVALID_PARAM
    assert not (tmp_path / "s" / "imstore.db").exists()


def test_a_key_for_a_store_in_memory_is_refused() -> None:
    with pytest.raises(IMError) as err:
        imstore.open(":memory:", user_id="alice", key=KEY)
    assert err.value.code == ErrorCode.INVALID_PARAM


def test_without_the_extra_a_key_says_what_to_install(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlcipher3", None)  # import sqlcipher3 fails
    with pytest.raises(IMError) as err:
        imstore.open(tmp_path / "s", user_id="alice", key=KEY)
    assert err.value.code == ErrorCode.SERVICE_NOT_ENABLED
    assert "imstore[crypto]" in err.value.description
    with imstore.open(tmp_path / "p", user_id="alice") as s:  # a plain store needs nothing
        s.insert_message(Message.text("bob", "fine"))


# ---------------------------------------------------------------------------- the rewrites

@pytest.mark.parametrize("key", [KEY, "a passphrase"], ids=["raw", "passphrase"])
def test_encrypt_store_keeps_every_row_and_leaves_no_plaintext(tmp_path: Path, key) -> None:
    path = tmp_path / "s"
    _plain_store(path, 40, "plainword")
    assert not imstore.is_encrypted(path) and _holding(path, b"plainword")
    imstore.encrypt_store(path, key)
    assert imstore.is_encrypted(path)
    assert _holding(path, b"plainword") == []  # database replaced, plaintext index removed
    assert sorted(os.listdir(path)) == ["imstore.db", "search.lock"]
    with imstore.open(path, user_id="alice", key=key) as s:
        assert s.message_count(BOB) == 40
        assert len(s.search_messages("plainword", limit=100)) == 40  # the index is rebuilt
        assert s.verify().ok


def test_encrypt_store_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s"
    _plain_store(path, 5)

    def broken(*_args: object) -> None:
        raise IMError(ErrorCode.DATABASE_ERROR, "the check failed")

    monkeypatch.setattr(_cipher, "_check_copy", broken)
    with pytest.raises(IMError):
        imstore.encrypt_store(path, KEY)
    assert not imstore.is_encrypted(path)
    assert not any(name.endswith(".rekey") for name in os.listdir(path))
    with imstore.open(path, user_id="alice") as s:
        assert s.message_count(BOB) == 5


def test_encrypt_store_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(IMError) as err:
        imstore.encrypt_store(tmp_path / "none", KEY)
    assert err.value.code == ErrorCode.FILE_NOT_FOUND
    imstore.open(tmp_path / "e", user_id="alice", key=KEY).close()
    with pytest.raises(IMError) as err:
        imstore.encrypt_store(tmp_path / "e", KEY)
    assert "encrypted already" in err.value.description and "change_key" in err.value.description


def test_an_open_store_is_refused_by_the_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with imstore.open(path, user_id="alice") as s:
        s.insert_message(Message.text("bob", "open"))
        with pytest.raises(IMError) as err:
            imstore.encrypt_store(path, KEY)
        assert "is open" in err.value.description
    imstore.encrypt_store(path, KEY)
    with imstore.open(path, user_id="alice", key=KEY) as s:
        with pytest.raises(IMError) as err:
            imstore.change_key(path, KEY, OTHER)
        assert "is open" in err.value.description
        assert s.message_count(BOB) == 1


def test_change_key_moves_the_store_to_the_new_key(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with imstore.open(path, user_id="alice", key=KEY) as s:
        s.import_messages(Message.text("alice", f"word {i}", sender="bob") for i in range(25))
    imstore.change_key(path, KEY, "new passphrase")
    with pytest.raises(IMError):
        imstore.open(path, user_id="alice", key=KEY)
    with imstore.open(path, user_id="alice", key="new passphrase") as s:
        assert s.message_count(BOB) == 25
        assert len(s.search_messages("word", limit=100)) == 25
    imstore.change_key(path, "new passphrase", OTHER)
    with imstore.open(path, user_id="alice", key=OTHER) as s:
        assert s.verify().ok


def test_change_key_refuses_a_plain_store(tmp_path: Path) -> None:
    _plain_store(tmp_path / "s", 1)
    with pytest.raises(IMError) as err:
        imstore.change_key(tmp_path / "s", KEY, OTHER)
    assert "not encrypted" in err.value.description


def test_is_encrypted_needs_a_store(tmp_path: Path) -> None:
    with pytest.raises(IMError) as err:
        imstore.is_encrypted(tmp_path)
    assert err.value.code == ErrorCode.FILE_NOT_FOUND


# ------------------------------------------------------------------- sealed files (the index)

def test_a_sealed_file_round_trips_and_never_repeats() -> None:
    key = _crypto.index_key(KEY)
    one, two = _crypto.seal(key, b"secret words"), _crypto.seal(key, b"secret words")
    assert one != two and b"secret" not in one  # a fresh salt and nonce per file
    assert _crypto.unseal(key, one) == _crypto.unseal(key, two) == b"secret words"
    assert _crypto.sealed_length(len(one)) == len(b"secret words")


@pytest.mark.parametrize("damage", ["flip", "cut", "plain", "other key"])
def test_a_sealed_file_that_was_changed_does_not_open(damage: str) -> None:
    key = _crypto.index_key(KEY)
    sealed = bytearray(_crypto.seal(key, b"x" * 100))
    if damage == "flip":
        sealed[40] ^= 1
    elif damage == "cut":
        del sealed[-5:]
    elif damage == "plain":
        sealed = bytearray(b"x" * 100)
    else:
        key = _crypto.index_key(OTHER)
    with pytest.raises(IMError) as err:
        _crypto.unseal(key, bytes(sealed))
    assert err.value.code == ErrorCode.DATABASE_ERROR


def test_keys_for_other_purposes_differ_from_the_store_key() -> None:
    assert _crypto.index_key(KEY) != KEY
    assert _crypto.index_key(KEY) != _crypto.index_key(OTHER)
    assert _crypto.subkey(KEY, b"a") != _crypto.subkey(KEY, b"b")


def test_an_encrypted_whoosh_index_holds_no_plaintext(tmp_path: Path) -> None:
    from whoosh import fields, qparser

    from imstore._crypto._whoosh import EncryptedStorage

    key = _crypto.index_key(KEY)
    storage = EncryptedStorage(str(tmp_path / "ix"), key)
    storage.create()
    ix = storage.create_index(fields.Schema(id=fields.ID(stored=True), body=fields.TEXT))
    for batch in range(3):  # several segments, then a merge
        w = ix.writer()
        for i in range(200):
            w.add_document(id=f"{batch}-{i}", body=f"zanzibar word{i}")
        w.commit(merge=False)
    ix.writer().commit(optimize=True)
    assert _holding(tmp_path / "ix", b"zanzibar") == []
    assert _holding(tmp_path / "ix", b"word1") == []
    again = EncryptedStorage(str(tmp_path / "ix"), key).open_index()  # a cold cache
    query = qparser.QueryParser("body", again.schema).parse("zanzibar")
    with again.searcher() as searcher:
        assert len(searcher.search(query, limit=None)) == 600
    with pytest.raises(IMError):
        EncryptedStorage(str(tmp_path / "ix"), _crypto.index_key(OTHER)).open_index()


_HOLD_OPEN = """
import sys, imstore
s = imstore.open(sys.argv[1], user_id="alice", key=bytes(range(32)))
print("open", flush=True)
sys.stdin.read()
s.close()
"""


def test_a_store_open_in_another_process_is_refused_by_change_key(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "s"
    imstore.open(path, user_id="alice", key=KEY).close()
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_OPEN, str(path)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        with pytest.raises(IMError) as err:
            imstore.change_key(path, KEY, OTHER)
        assert "is open" in err.value.description
    finally:
        proc.communicate("", timeout=60)
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    assert not any(name.endswith(".rekey") for name in os.listdir(path))
    with imstore.open(path, user_id="alice", key=KEY) as s:  # still the old key
        assert s.conversations() == []
