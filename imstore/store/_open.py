"""Opening a store: the directory, the owner, the database file, and what a database needs before
the parts can use it.

Rules kept here:
- a store belongs to one user: opening it as anyone else is refused before anything is created;
- ``":memory:"`` is written nowhere, so it takes no key; a key that is no key creates nothing;
- a store whose database is gone (deleted, or 0 bytes) while the rest of it remains is not
  re-created empty (`refuse_lost_database`);
- a database is migrated and its limits settled before any part reads it; a crash mid-send left
  INPROGRESS rows that did not go out: opening moves them by the lifecycle's INTERRUPT event;
- the pre-flights (`stored_owner`, `check_writable`) create and change nothing.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import peewee as pw

from .._crypto import check_key
from ..codec import Limits, invalid
from ..errors import ErrorCode, IMError
from ..index import LOCK_FILE
from ..lifecycle import MAX_TIME, SendEvent, status_after
from ._checks import check_path
from ._cipher import open_database, probe_write_lock, read_owner, settle_key
from ._connection import Connection, connect
from ._indexer import IndexPolicy
from ._rows import SENT
from ._schema import DATABASE_FILE, build_models, migrate, settle_limits

__all__ = ["check_options", "check_writable", "connect_store", "prepare", "refuse_lost_database",
           "stored_owner"]


def check_options(limits: Any, index_policy: Any) -> None:
    """The optional arguments of `MessageStore.open`: a `Limits` of positive ints, an
    `IndexPolicy` (each None or one)."""
    if limits is not None:
        check_limits(limits)
    if index_policy is not None and not isinstance(index_policy, IndexPolicy):
        raise invalid("index_policy", "an IndexPolicy or None", index_policy)


def check_limits(limits: Any) -> None:
    if not isinstance(limits, Limits):
        raise invalid("limits", "a Limits or None", limits)
    for name in ("max_payload_bytes", "max_file_bytes", "max_thumbnail_bytes",
                 "max_local_ext_bytes"):
        value = getattr(limits, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < MAX_TIME:
            raise invalid(f"limits.{name}", "a positive int", value)


def connect_store(path: str, user_id: str, key: Any) -> tuple[pw.SqliteDatabase, str | None]:
    """The database of ``user_id``'s store at ``path`` (a checked path), and its directory (None
    in memory). Refuses another user's store before creating anything."""
    if path != ":memory:":
        key = settle_key(path, key)  # a passphrase derived once for this whole open
        owner = read_owner(path, key)
        if owner is not None and owner != user_id:
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"the store in {path!r} belongs to {owner!r}, not {user_id!r}: open "
                          f"it with user_id={owner!r}, or give {user_id!r} a directory of "
                          "their own")
    return _connect(path, key)


def _connect(path: str, key: Any) -> tuple[pw.SqliteDatabase, str | None]:
    if path == ":memory:":
        if key is not None:
            raise IMError(ErrorCode.INVALID_PARAM, "a store in memory is written nowhere: "
                          "key= is for a store on disk; open ':memory:' without it")
        return connect(":memory:"), None
    if key is not None:
        check_key(key)  # a key that is no key creates nothing
    directory = os.path.abspath(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise IMError(ErrorCode.DATABASE_ERROR,
                      f"cannot create the store directory {directory!r}: {exc}") from exc
    refuse_lost_database(directory)
    return open_database(os.path.join(directory, DATABASE_FILE), key), directory


def refuse_lost_database(directory: str) -> None:
    """A store whose database is gone (deleted, or truncated to 0 bytes) while the rest of it
    remains is not re-created empty: that would hide the loss (and verify would then empty the
    index of a history it cannot see)."""
    db = os.path.join(directory, DATABASE_FILE)
    try:
        if os.path.getsize(db) > 0:
            return
        state = "is empty (0 bytes)"
    except OSError:
        state = "is missing"
    remains = [name for name in (f"{DATABASE_FILE}-wal", LOCK_FILE, "search")
               if os.path.lexists(os.path.join(directory, name))]
    if remains:
        raise IMError(ErrorCode.DATABASE_ERROR,
                      f"the database {db!r} {state} but the rest of a store remains "
                      f"({', '.join(remains)}): the message history is not there. Restore "
                      f"{DATABASE_FILE} from a backup, or delete the folder to start an empty "
                      "store")


def prepare(conn: Connection, db: pw.SqliteDatabase, user_id: str,
            limits: Limits | None) -> tuple[SimpleNamespace, Limits]:
    """Migrate ``db`` for ``user_id`` and settle its limits (the database is closed when that
    fails); then move what a crash left INPROGRESS. Returns the models and the limits."""
    models = build_models(db)
    try:
        with conn.guard():
            migrate(db, models, user_id)
            settled = settle_limits(db, limits)
    except ValueError as exc:
        db.close()
        raise IMError(ErrorCode.DATABASE_ERROR, str(exc)) from exc
    except IMError:
        db.close()
        raise
    # A crash mid-send leaves INPROGRESS rows: they did not go out (the INTERRUPT move). Only
    # this user's sends: a received copy's status is the server's word, not a send of ours.
    for was, now in status_after(SendEvent.INTERRUPT).items():
        conn.execute(f"UPDATE message SET status = ? WHERE status = ? AND {SENT}",
                     (int(now), int(was)))
    return models, settled


def stored_owner(path: Any, key: Any) -> str | None:
    """See `MessageStore.stored_owner`."""
    return read_owner(check_path(path, "a directory path"), key)


def check_writable(path: Any, timeout: float, key: Any) -> None:
    """See `MessageStore.check_writable`."""
    directory = check_path(path, "a directory path")
    db = os.path.join(directory, DATABASE_FILE)
    for p in (directory, db, os.path.join(directory, "search")):
        if os.path.exists(p) and not os.access(p, os.W_OK):
            raise IMError(ErrorCode.DATABASE_ERROR, f"permission denied: cannot write {p} "
                          "(a store needs write access, even to be read)")
    if os.path.isfile(db):
        probe_write_lock(db, key, timeout)
