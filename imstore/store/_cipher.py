"""Encryption at rest of the store's database (SQLCipher): which key opens it, and the two
rewrites (plaintext -> encrypted, old key -> new key).

Rules kept here:
- a database file is plain (it starts with SQLite's header), encrypted (anything else: SQLCipher
  keeps its 16-byte salt there), empty or missing (`database_state`), read without writing;
- the key every connection gets is raw (32 bytes, then the salt): a passphrase is derived once
  per open (`imstore._crypto.derive_key`), with the salt of the database's first bytes;
- a missing key, a key for a plain store, a wrong key and the extra not installed each get
  their own `IMError` with what to do; a wrong key fails on the first read, before anything is
  written;
- a rewrite runs only on a closed store (it must be the only connection: leaving WAL mode needs
  that) and is atomic: the new database is written beside the old one, checked (integrity and
  the row count of every table), and only then renamed over it; from before the copy until
  after the rename it holds the old database's exclusive lock, so a process that opens the store
  meanwhile fails instead of writing into a file about to be replaced;
- the search index, which the old key (or no key) protected, is removed before the rename (a
  crash never leaves it beside the new database) and rebuilt at the next open; a SIGKILL at any
  step leaves a store that opens with the old key or the new one, and what it left over is
  removed by the next rewrite or open.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import urllib.parse
from types import ModuleType
from typing import Any

from .._crypto import SALT_BYTES, check_key, cipher_driver, derive_key
from ..errors import ErrorCode, IMError
from ._checks import check_path
from ._connection import Database, connect, open_in_this_process, use_key
from ._schema import DATABASE_FILE
from ._schema import read_owner as read_plain_owner

__all__ = [
    "change_key",
    "database_state",
    "encrypt_store",
    "is_encrypted",
    "open_database",
    "probe_write_lock",
    "read_owner",
    "settle_key",
]

_PLAIN = b"SQLite format 3\x00"
_NOT_A_DATABASE = "file is not a database"
_REKEY = ".rekey"  # suffix of the copy a rewrite makes


def database_state(db_path: str) -> str:
    """``"missing"``, ``"empty"``, ``"plain"`` or ``"encrypted"``."""
    try:
        with open(db_path, "rb") as f:
            head = f.read(len(_PLAIN))
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        raise IMError(ErrorCode.DATABASE_ERROR, f"cannot read {db_path!r}: {exc}") from exc
    if not head:
        return "empty"
    return "plain" if head == _PLAIN else "encrypted"


def _salt(db_path: str) -> bytes:
    with open(db_path, "rb") as f:
        return f.read(SALT_BYTES)


# Every refusal of this module: one sentence each, saying what to do.
_REFUSALS: dict[str, tuple[ErrorCode, str]] = {
    "missing key": (ErrorCode.INVALID_PARAM,
                    "the store in {where!r} is encrypted: open it with key= (the raw 32-byte key "
                    "or the passphrase it was encrypted with)"),
    "plain store": (ErrorCode.INVALID_PARAM,
                    "a key was given but the store in {where!r} is not encrypted: open it "
                    "without key=, or encrypt it first with imstore.encrypt_store(path, key)"),
    "wrong key": (ErrorCode.INVALID_PARAM,
                  "the key does not open the encrypted store in {where!r}: it is not the key "
                  "(or passphrase) the store was encrypted with (or the database's first page "
                  "is damaged: then restore it from a backup); nothing was changed"),
    "still open": (ErrorCode.DATABASE_ERROR,
                   "the store in {where!r} is open (in this or another process): close it "
                   "everywhere, then try again; nothing was changed"),
    "no store": (ErrorCode.FILE_NOT_FOUND, "there is no store in {where!r}"),
    "encrypted already": (ErrorCode.INVALID_PARAM,
                          "the store in {where!r} is encrypted already: to change its key, "
                          "call imstore.change_key(path, old_key, new_key)"),
    "not encrypted": (ErrorCode.INVALID_PARAM,
                      "the store in {where!r} is not encrypted: encrypt it with "
                      "imstore.encrypt_store(path, key)"),
}


def _refusal(kind: str, where: str) -> IMError:
    code, text = _REFUSALS[kind]
    return IMError(code, text.format(where=where))


def _key_spec(key: Any, state: str, db_path: str) -> tuple[ModuleType, bytes]:
    """The driver and the raw key + salt of the database at ``db_path`` for ``key``."""
    driver = cipher_driver()
    secret = check_key(key)
    salt = _salt(db_path) if state == "encrypted" else os.urandom(SALT_BYTES)
    return driver, derive_key(secret, salt) + salt


def _match(state: str, key: Any, where: str) -> None:
    """Refuse a key the database does not take: none for an encrypted one, one for a plain one."""
    if key is None and state == "encrypted":
        raise _refusal("missing key", where)
    if key is not None and state == "plain":
        raise _refusal("plain store", where)


def settle_key(directory: str, key: Any) -> Any:
    """``key`` as every later step of one open takes it: a passphrase for an encrypted store
    already derived (with its salt) into the raw key, so that checking the owner and opening
    derive it once between them; anything else as it is (checked where it is used)."""
    db_path = os.path.join(directory, DATABASE_FILE)
    if not isinstance(key, str) or database_state(db_path) != "encrypted":
        return key
    return derive_key(check_key(key), _salt(db_path))


def open_database(db_path: str, key: Any) -> Database:
    """The connected database of a store on disk, opened with ``key`` (None: a plain store)."""
    where = os.path.dirname(db_path)
    state = database_state(db_path)
    _match(state, key, where)
    if key is None:
        db = connect(db_path)
    else:
        driver, spec = _key_spec(key, state, db_path)
        try:
            db = connect(db_path, driver=driver, key=spec)
        except IMError as exc:
            if state == "encrypted" and _NOT_A_DATABASE in str(exc.__cause__):
                raise _refusal("wrong key", where) from exc
            raise
    # connected (in WAL mode): no rewrite runs now, so what one left is garbage
    remove_leftovers(db_path)
    return db


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    """Whether the store in directory ``path`` is encrypted (IMError FILE_NOT_FOUND when there
    is no store there). Reads the database's first bytes only; needs no key and no extra."""
    return _existing(path)[2] == "encrypted"


def read_owner(directory: str, key: Any) -> str | None:
    """The owner kept in the store of ``directory`` (None: no store there), read-only, with
    ``key`` for an encrypted store."""
    db_path = os.path.join(directory, DATABASE_FILE)
    state = database_state(db_path)
    if state in ("missing", "empty"):
        return None
    _match(state, key, directory)
    if key is None:
        return read_plain_owner(directory)
    driver, spec = _key_spec(key, state, db_path)
    uri = f"file:{urllib.parse.quote(os.path.abspath(db_path))}?mode=ro"
    con = driver.connect(uri, uri=True)
    try:
        use_key(con, spec)
        row = con.execute("SELECT value FROM meta WHERE key = 'user_id'").fetchone()
    except driver.Error as exc:
        if _NOT_A_DATABASE in str(exc):
            raise _refusal("wrong key", directory) from exc
        raise IMError(ErrorCode.DATABASE_ERROR,
                      f"cannot read the store in {directory!r}: {exc}") from exc
    finally:
        con.close()
    return None if row is None else str(row[0])


def probe_write_lock(db_path: str, key: Any, timeout: float) -> None:
    """IMError when the database at ``db_path`` cannot take a write now: another process keeps
    its write lock for more than ``timeout`` seconds, or it is read-only. An encrypted one is
    probed with ``key`` (None: not probed; opening it will say the key is missing)."""
    where = os.path.dirname(db_path)
    state = database_state(db_path)
    if state in ("missing", "empty") or (state == "encrypted" and key is None):
        return
    _match(state, key, where)
    driver: Any = sqlite3
    if key is not None:
        driver, spec = _key_spec(key, state, db_path)
    con = driver.connect(db_path, timeout=timeout, isolation_level=None)
    try:
        if key is not None:
            use_key(con, spec)
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
    except driver.Error as exc:
        why = str(exc)
        if _NOT_A_DATABASE in why and key is not None:
            raise _refusal("wrong key", where) from exc
        if "locked" in why or "busy" in why:
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"the store {where} is locked by another process (an import?); "
                          "try again when it is done") from exc
        if "readonly" in why:
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"permission denied: cannot write {db_path} (read-only)") from exc
        raise IMError(ErrorCode.DATABASE_ERROR, f"{db_path}: {exc}") from exc
    finally:
        con.close()


def _existing(path: str | os.PathLike[str]) -> tuple[str, str, str]:
    """The directory, database file and state of the store in ``path``; IMError when none."""
    directory = os.path.abspath(check_path(path, "a directory path"))
    db_path = os.path.join(directory, DATABASE_FILE)
    state = database_state(db_path)
    if state in ("missing", "empty"):
        raise _refusal("no store", directory)
    return directory, db_path, state


def encrypt_store(path: str | os.PathLike[str], key: Any) -> None:
    """Encrypt the plaintext store in directory ``path`` with ``key`` (a raw 32-byte key or a
    passphrase). The store must be closed everywhere. Atomic: the encrypted copy replaces the
    database only once it is checked; the plaintext search index is removed (the next open
    rebuilds it)."""
    directory, db_path, state = _existing(path)
    if state == "encrypted":
        raise _refusal("encrypted already", directory)
    driver, target = _key_spec(key, "new", db_path)
    _rewrite(directory, driver, None, target)


def change_key(path: str | os.PathLike[str], old_key: Any, new_key: Any) -> None:
    """Re-encrypt the encrypted store in directory ``path`` from ``old_key`` to ``new_key``
    (each a raw 32-byte key or a passphrase). The store must be closed everywhere: an open
    store is refused. Atomic, like `encrypt_store`; a wrong ``old_key`` changes nothing."""
    directory, db_path, state = _existing(path)
    if state == "plain":
        raise _refusal("not encrypted", directory)
    check_key(new_key, "new_key")
    driver, source = _key_spec(old_key, state, db_path)
    _, target = _key_spec(new_key, "new", db_path)
    _rewrite(directory, driver, source, target)


def _counts(con: Any, schema: str = "main") -> dict[str, int]:
    tables = [r[0] for r in con.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%'").fetchall()]
    return {t: con.execute(f'SELECT count(*) FROM {schema}."{t}"').fetchone()[0] for t in tables}


def _rewrite(directory: str, driver: ModuleType, source: bytes | None, target: bytes) -> None:
    """Copy the database into a new file under key ``target``, check it, and rename it over the
    old one, holding the old one exclusively from before the copy until after the rename: no
    other process reads or writes it meanwhile (one that tried gets an error, never a write into
    the file about to be replaced). The index the old key protected goes before the rename."""
    db_path = os.path.join(directory, DATABASE_FILE)
    if open_in_this_process(db_path):
        raise _refusal("still open", directory)
    tmp = db_path + _REKEY
    con = driver.connect(db_path, timeout=0, isolation_level=None)
    try:
        if source is not None:
            use_key(con, source)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except driver.Error as exc:  # the key, or another process holding the file
            raise _refusal("wrong key" if _NOT_A_DATABASE in str(exc) else "still open",
                           directory) from exc
        _hold(con, driver, directory)
    except BaseException:
        con.close()
        raise
    try:  # held: no other rewrite runs, so a copy already there is a leftover
        remove_leftovers(db_path)
        try:
            con.execute(f"ATTACH DATABASE ? AS fresh KEY \"x'{target.hex()}'\"", (tmp,))
            con.execute("SELECT sqlcipher_export('fresh')").fetchone()
            expected = _counts(con)
            if _counts(con, "fresh") != expected:
                raise IMError(ErrorCode.DATABASE_ERROR, "the rewritten database lost rows")
            con.execute("DETACH DATABASE fresh")
            _check_copy(driver, tmp, target, expected)
        except driver.Error as exc:
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"cannot rewrite the store in {directory!r}: {exc}; nothing was "
                          "changed") from exc
        _remove_index(directory)
        os.replace(tmp, db_path)
        for name in (f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm"):
            if os.path.exists(os.path.join(directory, name)):
                os.remove(os.path.join(directory, name))
        _fsync_dir(directory)
    except BaseException:
        remove_leftovers(db_path)
        raise
    finally:
        con.close()  # releases the old file: a process that waited for it finds it replaced


def _hold(con: Any, driver: ModuleType, directory: str) -> None:
    """Take the database out of WAL mode (that needs every other connection gone: the store
    must be closed) and hold its exclusive lock until ``con`` closes."""
    try:
        con.execute("PRAGMA locking_mode = EXCLUSIVE").fetchone()
        con.execute("PRAGMA journal_mode = DELETE").fetchone()
        con.execute("BEGIN EXCLUSIVE")
        con.execute("COMMIT")
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "delete":
            raise driver.OperationalError("database is locked")
    except driver.Error as exc:
        raise _refusal("still open", directory) from exc


def _remove_index(directory: str) -> None:
    """Remove the search index (a cache the next open rebuilds): it was written under the old
    key, or in plaintext. Before the rename, so that a crash never leaves it beside the new
    database."""
    index = os.path.join(directory, "search")
    try:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(index)
    except OSError as exc:
        raise IMError(ErrorCode.DATABASE_ERROR,
                      f"cannot remove the search index {index!r} ({exc}); the database was "
                      "not changed: remove that folder and try again") from exc


def remove_leftovers(db_path: str) -> None:
    """Remove what an interrupted rewrite left (its unfinished copy and that copy's journal)."""
    for leftover in (db_path + _REKEY, db_path + _REKEY + "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(leftover)


def _check_copy(driver: ModuleType, tmp: str, key: bytes, expected: dict[str, int]) -> None:
    con = driver.connect(tmp, isolation_level=None)
    try:
        use_key(con, key)
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok" or _counts(con) != expected:
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"the rewritten database does not check ({ok}); nothing was changed")
    finally:
        con.close()


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
