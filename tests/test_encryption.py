"""Encryption at rest (issue 22), the store's side: SQLCipher keys, the errors for each wrong
key, the rewrites (`encrypt_store`, `change_key`), no plaintext in any file at any moment, and
no temporary file (the index's side: test_encryption_index.py)."""

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
    """The files under ``folder`` that hold ``word`` now. While an import runs the indexer
    writes and removes temporary files: one gone between the listing and the read holds
    nothing any more (the next look reads whatever replaced it)."""
    found = []
    for p in folder.rglob("*"):
        try:
            if p.is_file() and word in p.read_bytes():
                found.append(str(p.relative_to(folder)))
        except FileNotFoundError:
            continue
    return found


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
    word, peer = b"xylophonic", "bob-4f2a9c1e"  # long enough never to occur in ciphertext
    with imstore.open(path, user_id="alice", key=KEY, search=False) as s:
        s.import_messages(Message.text("alice", f"{word.decode()} {i}", sender=peer,
                                       ext={"note": word.decode()}) for i in range(500))
        s.insert_message(Message.text(peer, "one more xylophonic"))
        assert (path / "imstore.db-wal").stat().st_size > 0  # the WAL holds the last writes
        assert _holding(path, word) == []
        assert _holding(path, peer.encode()) == []  # ids too
    assert _holding(path, word) == []
    with imstore.open(path, user_id="alice", key=KEY, search=False) as s:
        assert s.message_count(Message.text(peer, "").conv_id) == 501


class _Scanner:
    """Reads every file under a folder, again and again, and remembers which held a secret.
    (Files and folders come and go while a store works: one that vanished between listing and
    reading held nothing; `os.walk` skips a folder that vanished while it was listed.)"""

    def __init__(self, folder: Path, secrets: list[bytes]) -> None:
        self.folder, self.secrets = folder, secrets
        self.found: set[tuple[str, bytes]] = set()
        self.scans = 0

    def scan(self) -> None:
        for p in [Path(d, f) for d, _, files in os.walk(self.folder) for f in files]:
            try:
                data = p.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                continue
            self.found |= {(p.name, s) for s in self.secrets if s in data}
        self.scans += 1


@pytest.mark.parametrize("search", [False, True], ids=["no index", "with its index"])
def test_a_unique_word_is_in_no_file_at_any_moment_of_an_import_nor_after_close(
        tmp_path: Path, search: bool) -> None:
    path = tmp_path / "s"
    peer, word = "zqxpeer-83f1c0", "quetzalcoatlite"
    scanner = _Scanner(path, [word.encode(), peer.encode(), word.encode("utf-16-le")])
    stop = threading.Event()

    def keep_scanning() -> None:
        while not stop.is_set():
            scanner.scan()

    with imstore.open(path, user_id="alice", key=KEY, search=search) as s:
        thread = threading.Thread(target=keep_scanning)
        thread.start()
        try:
            s.import_messages((Message.text("alice", f"{word} number {i}", sender=peer,
                                            ext={"tag": word}) for i in range(6000)),
                              batch_size=300, progress=lambda _n: scanner.scan())
            conv = Message.text(peer, "").conv_id
            s.set_conversation_ext(conv, {"draft": word})
            sent = s.insert_message(Message.text(peer, f"a reply with {word}"))
            s.mark_conversation_read(conv)
            s.delete_message(sent.msg_id)
            assert s.verify().ok
            if search:
                s.flush_index()
                assert len(s.search_messages(word, limit=400)) == 400
                s.rebuild_search_index()  # a rebuild writes the whole index again
        finally:
            stop.set()
            thread.join()
        scanner.scan()
    scanner.scan()
    assert scanner.scans > 20  # one per batch at least, while the import ran
    assert scanner.found == set()


def test_the_passphrase_is_derived_once_per_open_for_every_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = _cipher.derive_key

    def counting(key, salt):
        if isinstance(key, str):  # a raw key goes through as it is: no derivation
            calls.append(1)
        return real(key, salt)

    monkeypatch.setattr(_cipher, "derive_key", counting)
    imstore.open(tmp_path / "s", user_id="alice", key="pass").close()  # created: derived once
    assert calls == [1]
    with imstore.open(tmp_path / "s", user_id="alice", key="pass") as s:  # opened: once more
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
    assert calls == [1, 1]


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


@pytest.mark.parametrize("key", [bytes(31), bytes(33), memoryview(KEY), "\ud800", 3.5, True],
                         ids=["31 bytes", "33 bytes", "memoryview", "surrogate", "float", "bool"])
def test_a_bad_key_for_a_new_store_creates_nothing(tmp_path: Path, key) -> None:
    with pytest.raises(IMError) as err:
        imstore.open(tmp_path / "s", user_id="alice", key=key)
    assert err.value.code == ErrorCode.INVALID_PARAM
    assert not (tmp_path / "s").exists()


_PATH_CALLS = {
    "open": lambda p: imstore.open(p, user_id="alice"),
    "open with a key": lambda p: imstore.open(p, user_id="alice", key=KEY),
    "stored_owner": lambda p: MessageStore.stored_owner(p, key=KEY),
    "check_writable": MessageStore.check_writable,
    "is_encrypted": imstore.is_encrypted,
    "encrypt_store": lambda p: imstore.encrypt_store(p, KEY),
    "change_key": lambda p: imstore.change_key(p, KEY, OTHER),
}


@pytest.mark.parametrize("path", ["/tmp/a\x00b", b"/tmp", 7, None, ""],
                         ids=["nul", "bytes", "int", "none", "empty"])
@pytest.mark.parametrize("call", list(_PATH_CALLS))
def test_a_path_that_is_no_path_is_refused(call: str, path: object) -> None:
    with pytest.raises(IMError) as err:
        _PATH_CALLS[call](path)
    assert err.value.code == ErrorCode.INVALID_PARAM
    assert "path" in err.value.description


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


# ------------------------------------------------------------------------- temporary files

@pytest.fixture
def spilled(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The SQLite temporary files (sort spills, VACUUM copies) any SQLCipher connection opens
    from now on, seen from inside SQLite while it works. Each connection starts as a driver
    built with SQLite's own default would (temp_store FILE) and with a tiny cache, so that
    whatever may spill does."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see open files")
    import sqlcipher3

    seen: set[str] = set()
    real = sqlcipher3.connect

    def look() -> int:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if "etilqs_" in target:  # SQLite's prefix for its temporary files
                seen.add(target)
        return 0

    def connect(*args, **kwargs):
        base = kwargs.pop("factory", sqlcipher3.Connection)

        class Spilling(base):  # type: ignore[misc, valid-type]
            keyed = False

            def execute(self, sql, *params):
                if not self.keyed and not sql.startswith(("PRAGMA key", "PRAGMA cipher")):
                    self.keyed = True  # the statements that read the file may run now
                    super().execute("PRAGMA temp_store = FILE")
                    self.shrink()
                cursor = super().execute(sql, *params)
                if sql.startswith("ATTACH"):
                    self.shrink()
                return cursor

            def shrink(self) -> None:
                for schema in [r[1] for r in super().execute("PRAGMA database_list")]:
                    super().execute(f'PRAGMA "{schema}".cache_size = 2')

        con = real(*args, factory=Spilling, **kwargs)
        con.set_progress_handler(look, 500)
        return con

    monkeypatch.setattr(sqlcipher3, "connect", connect)
    return seen


def test_the_spill_detector_sees_a_temporary_file(tmp_path: Path, spilled: set[str]) -> None:
    import sqlcipher3

    con = sqlcipher3.connect(str(tmp_path / "x.db"))
    con.execute(f"PRAGMA key = \"x'{KEY.hex()}'\"")
    con.execute("CREATE TABLE t (x)")
    con.executemany("INSERT INTO t VALUES (?)", [(os.urandom(40).hex(),) for _ in range(20000)])
    con.execute("SELECT x FROM t ORDER BY substr(x, 3)").fetchall()
    con.close()
    assert spilled


def test_an_encrypted_store_never_spills_to_temporary_files(tmp_path: Path,
                                                            spilled: set[str]) -> None:
    path = tmp_path / "s"
    with imstore.open(path, user_id="alice", key=KEY, search=False) as s:
        s.import_messages(Message.text("alice", f"sorted {os.urandom(30).hex()}", sender="bob")
                          for i in range(20000))
        db = s.connection.db
        # said on the connection, whatever the driver was built with (SQLite's default: FILE)
        assert db.execute_sql("PRAGMA temp_store").fetchone()[0] == 2
        db.execute_sql("PRAGMA cache_size = 2")
        db.execute_sql("SELECT * FROM message ORDER BY substr(body, 3)").fetchall()
        db.execute_sql("VACUUM")
        assert s.verify().ok
    assert MessageStore.stored_owner(path, key=KEY) == "alice"
    imstore.change_key(path, KEY, OTHER)  # the copy builds every index: sorts
    assert spilled == set()


def test_a_passphrase_opens_its_store_whichever_unicode_form_it_is_typed_in(
        tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9 cr\u00e8me", "cafe\u0301 cre\u0300me"  # macOS types NFD
    with imstore.open(tmp_path / "s", user_id="alice", key=composed) as s:
        s.insert_message(Message.text("bob", "kept"))
    with imstore.open(tmp_path / "s", user_id="alice", key=decomposed) as s:
        assert s.message_count(BOB) == 1
