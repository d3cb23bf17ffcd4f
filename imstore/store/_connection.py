"""The store's SQLite connection: opening it, the writer lock, transactions, driver errors, fork.

Rules kept here:
- one writer at a time: every write holds ``lock`` and one SQLite transaction (`Connection.tx`);
- a driver error leaves as `IMError(DATABASE_ERROR)` with the original as ``__cause__``, and its
  message names the first error, not the failed rollback that followed it (a full disk reads
  "database or disk is full", never "cannot rollback - no transaction is active");
- a closed connection refuses every call with `IMError(DATABASE_ERROR)`;
- every SQLite call goes through `query` (the fork gate) or runs with ``lock`` held (`tx`), so
  that ``os.fork`` can wait until no thread of this process is inside SQLite for this store;
- fork: before it, every open store is quiesced (its writer lock held, its readers drained);
  in the child, each store gets fresh locks and fresh SQLite connections (the inherited ones are
  closed there, idle, never used again: SQLite connections must not cross a fork). A store that
  could not be quiesced (the forking thread was inside one of its transactions, or a thread held
  its lock too long) refuses every call in the child with an `IMError` saying to open it again;
- a database on disk gets its key (SQLCipher) as the first statement of every connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import ModuleType
from typing import Any

import peewee as pw

from ..errors import ErrorCode, IMError

__all__ = ["BUSY_TIMEOUT", "CHUNK", "PRAGMAS", "Connection", "Database", "chunks", "connect",
           "marks", "open_in_this_process", "use_key"]

CHUNK = 500  # ids per IN (...) list
# The pragmas of every connection (a database on disk adds WAL). Tests change it to make a
# disk look full (``max_page_count``).
PRAGMAS: dict[str, Any] = {"foreign_keys": 1, "cache_size": -32000, "temp_store": "memory"}
BUSY_TIMEOUT = 30.0  # seconds a connection waits for another process's lock before failing
_FORK_WAIT = 10.0  # seconds a fork waits for a store's writer before giving up on that store
_FULL = "database or disk is full"


def chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``seq`` in slices of at most ``n``."""
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def marks(n: int) -> str:
    """``?,?,...`` for an IN list of ``n`` values."""
    return ",".join("?" * n)


class Database(pw.SqliteDatabase):
    """peewee's SQLite database with the store's connection rules: the driver (``sqlite3``, or
    ``sqlcipher3`` for an encrypted store), the raw key as the first statement of each new
    connection, and every connection remembered, so that a forked child can close them."""

    def __init__(self, database: str, *, driver: ModuleType = sqlite3, key: bytes | None = None,
                 **kwargs: Any) -> None:
        self.driver = driver
        self.key = key
        self.opened: weakref.WeakSet[Any] = weakref.WeakSet()
        self._factory = type("Connection", (driver.Connection,), {})  # weak-referenceable
        super().__init__(database, **kwargs)

    def _connect(self) -> Any:
        conn = self.driver.connect(self.database, timeout=self._timeout,  # type: ignore[attr-defined]
                                   isolation_level=None,
                                   factory=self._factory, **self.connect_params)
        try:
            if self.key is not None:
                use_key(conn, self.key)
            self._add_conn_hooks(conn)  # type: ignore[attr-defined]
        except Exception:
            conn.close()
            raise
        self.opened.add(conn)
        return conn


def use_key(conn: Any, key: bytes) -> None:
    """Give a new SQLCipher connection its raw key (``key`` is the 32-byte key, then the salt):
    no key derivation per connection. SQLCipher's own log stays quiet (a wrong key is our
    `IMError`, not lines on stderr)."""
    conn.execute("PRAGMA cipher_log_level = NONE")
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")


def connect(path: str, *, driver: ModuleType = sqlite3, key: bytes | None = None) -> Database:
    """The database of the store at ``path`` (a file; ``":memory:"`` for a store in memory),
    connected: IMError(DATABASE_ERROR) when it cannot be opened."""
    pragmas = dict(PRAGMAS)
    if path == ":memory:":
        db = Database(":memory:", pragmas=pragmas, thread_safe=False, check_same_thread=False)
    else:
        pragmas |= {"journal_mode": "wal", "synchronous": "normal"}
        db = Database(path, driver=driver, key=key, pragmas=pragmas, timeout=BUSY_TIMEOUT,
                      lock_type="IMMEDIATE", check_same_thread=False)
    try:
        db.connect(reuse_if_open=True)
    except (pw.DatabaseError, sqlite3.Error, driver.Error) as exc:
        raise database_error(exc, f"cannot open the database {path!r}") from exc
    return db


def _first_error(exc: BaseException) -> BaseException:
    """The error that started it all: when a statement fails so badly that SQLite rolls the
    transaction back itself (a full disk, an I/O error), the rollback that follows fails with
    "no transaction is active" and keeps the real cause as its ``__context__``."""
    first = exc
    while "no transaction is active" in str(first) and first.__context__ is not None:
        first = first.__context__
    return first


def database_error(exc: BaseException, doing: str = "database error") -> IMError:
    """The `IMError` for a driver error: its first cause named, with what to do."""
    first = _first_error(exc)
    text = str(first) or type(first).__name__
    if _FULL in text or "disk I/O error" in text:
        return IMError(ErrorCode.DATABASE_ERROR,
                       f"{doing}: {text}: free space on the device and retry (the failed "
                       "transaction was rolled back; what was committed before stays)")
    return IMError(ErrorCode.DATABASE_ERROR, f"{doing}: {text}")


class _Gate:
    """Counts the threads inside SQLite outside the writer lock (readers of a store on disk);
    a fork closes it, waits for them to leave, and opens it again afterwards."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._shut = False

    def __enter__(self) -> None:
        with self._cond:
            while self._shut:
                self._cond.wait()
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._inside -= 1
            if not self._inside:
                self._cond.notify_all()

    def shut(self, timeout: float) -> bool:
        """Stop new readers and wait (``timeout`` s at most) until none is inside."""
        with self._cond:
            self._shut = True
            if self._cond.wait_for(lambda: not self._inside, timeout):
                return True
            self._shut = False
            self._cond.notify_all()
            return False

    def open(self) -> None:
        with self._cond:
            self._shut = False
            self._cond.notify_all()


class Connection:
    """The peewee database of one store, with its writer lock.

    An in-memory database has one SQLite connection shared by every thread, so reads take the
    writer lock too; a database on disk gives each thread its own connection (WAL readers do not
    wait for the writer).
    """

    def __init__(self, db: pw.SqliteDatabase, *, shared: bool) -> None:
        self.db = db
        self.shared = shared
        self.lock = threading.RLock()
        self._gate = _Gate()
        self.closed = False
        # told of each outermost write transaction: begin(), then committed() (after the lock
        # is released) or rolled_back() (see _changes.ChangeFeed)
        self.watchers: list[Any] = []
        self._quiesced = False  # this process is forking, and the store is still
        self._forked: str | None = None  # why this store refuses calls in a forked child
        _LIVE.add(self)

    @property
    def _read_lock(self) -> AbstractContextManager[Any]:
        return self.lock if self.shared else nullcontext()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Refuse a closed store; turn driver errors into `IMError(DATABASE_ERROR)`."""
        if self._forked is not None:
            raise IMError(ErrorCode.DATABASE_ERROR, self._forked)
        if self.closed:
            raise IMError(ErrorCode.DATABASE_ERROR, "the store is closed; open it again")
        try:
            yield
        except IMError:
            raise
        except (pw.DatabaseError, pw.InterfaceError, sqlite3.Error) as exc:
            raise database_error(exc) from exc
        except Exception as exc:
            driver_error = getattr(self.db, "driver", sqlite3).Error
            if isinstance(exc, driver_error):
                raise database_error(exc) from exc
            raise

    @contextmanager
    def tx(self) -> Iterator[pw.SqliteDatabase]:
        """One write transaction, with the writer lock held (nested calls join the outer one)."""
        watchers = self.watchers
        if not watchers:
            with self.lock, self.guard(), self.db.atomic():
                yield self.db
            return
        with self.lock, self.guard():
            outer = not self.db.in_transaction()
            if not outer:
                with self.db.atomic():
                    yield self.db
                return
            for w in watchers:
                w.begin()
            try:
                with self.db.atomic():
                    yield self.db
            except BaseException:
                for w in watchers:
                    w.rolled_back()
                raise
        for w in watchers:
            w.committed()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read statement."""
        with self._read_lock, self._gate, self.guard():
            return list(self.db.execute_sql(sql, params).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of one read statement, or None."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction; returns the changed row count."""
        with self.tx() as db:
            return int(db.execute_sql(sql, params).rowcount)

    def run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """One statement inside the caller's open transaction; returns the cursor."""
        return self.db.execute_sql(sql, params)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for many parameter rows, inside the caller's open transaction."""
        self.db.cursor().executemany(sql, rows)

    @property
    def store_key(self) -> bytes | None:
        """The raw 32-byte key of an encrypted store (the index key derives from it), or None."""
        key = getattr(self.db, "key", None)
        return None if key is None else bytes(key[:32])

    def close(self) -> None:
        self.closed = True
        self.db.close()

    # ---------------------------------------------------------------------------------- fork

    def _quiesce(self) -> None:
        """Before a fork: hold the writer lock and wait until no reader is inside SQLite."""
        if self.closed or self._forked is not None:
            return
        if self.lock._is_owned():  # type: ignore[attr-defined]  # forking inside a transaction
            return
        if not self.lock.acquire(timeout=_FORK_WAIT):
            return
        if self._gate.shut(_FORK_WAIT):
            self._quiesced = True
        else:
            self.lock.release()

    def _resume(self) -> None:
        """After a fork, in the parent."""
        if self._quiesced:
            self._quiesced = False
            self._gate.open()
            self.lock.release()

    def _renew_in_child(self) -> None:
        """After a fork, in the child: fresh locks and, on disk, fresh SQLite connections."""
        quiesced, self._quiesced = self._quiesced, False
        self.lock = threading.RLock()
        self._gate = _Gate()
        if self.shared:  # one connection in memory: this process's copy of it, idle or not
            if not quiesced and not self.closed:
                self._forked = (f"this store was in use by another thread when process "
                                f"{os.getppid()} forked; open it again in the child process")
            return
        db = self.db
        db._lock = threading.Lock()  # type: ignore[attr-defined]  # peewee's, maybe held
        inherited = list(db.opened) if isinstance(db, Database) else []
        busy = not quiesced or any(c.in_transaction for c in inherited)
        for conn in inherited:
            if busy:
                _ABANDONED.append(conn)  # never closed here: the parent's transaction is live
            else:
                try:
                    conn.close()
                except Exception:  # best effort; the child opens its own
                    _ABANDONED.append(conn)
        db._state = type(db._state)()  # type: ignore[attr-defined]  # no inherited connection
        if busy and not self.closed:
            self._forked = (f"this store was inside a transaction when process {os.getppid()} "
                            "forked; open it again in the child process")


_LIVE: weakref.WeakSet[Connection] = weakref.WeakSet()
_ABANDONED: list[Any] = []  # inherited connections a child must never close nor use


def open_in_this_process(db_path: str) -> bool:
    """Whether a store of this process has the database file ``db_path`` open. (File locks do
    not tell: they are per process, and SQLCipher is a second copy of SQLite in the process.)"""
    target = os.path.abspath(db_path)
    return any(not c.closed and c.db.database == target for c in list(_LIVE))


def _before_fork() -> None:
    for conn in sorted(_LIVE, key=id):
        conn._quiesce()


def _after_fork_in_parent() -> None:
    for conn in sorted(_LIVE, key=id, reverse=True):
        conn._resume()


def _after_fork_in_child() -> None:
    for conn in list(_LIVE):
        conn._renew_in_child()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
