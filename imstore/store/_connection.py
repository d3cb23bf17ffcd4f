"""The store's SQLite connection: the writer lock, transactions, and driver errors.

Rules kept here:
- one writer at a time: every write holds ``lock`` and one SQLite transaction (`Connection.tx`);
- a driver error leaves as `IMError(DATABASE_ERROR)` with the original as ``__cause__``;
- a closed connection refuses every call with `IMError(DATABASE_ERROR)`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import peewee as pw

from ..errors import ErrorCode, IMError

__all__ = ["CHUNK", "Connection", "chunks", "marks"]

CHUNK = 500  # ids per IN (...) list


def chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``seq`` in slices of at most ``n``."""
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def marks(n: int) -> str:
    """``?,?,...`` for an IN list of ``n`` values."""
    return ",".join("?" * n)


class Connection:
    """The peewee database of one store, with its writer lock.

    An in-memory database has one SQLite connection shared by every thread, so reads take the
    writer lock too; a database on disk gives each thread its own connection (WAL readers do not
    wait for the writer).
    """

    def __init__(self, db: pw.SqliteDatabase, *, shared: bool) -> None:
        self.db = db
        self.lock = threading.RLock()
        self._read_lock: AbstractContextManager[Any] = self.lock if shared else nullcontext()
        self.closed = False
        # told of each outermost write transaction: begin(), then committed() (after the lock
        # is released) or rolled_back() (see _changes.ChangeFeed)
        self.watchers: list[Any] = []

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Refuse a closed store; turn driver errors into `IMError(DATABASE_ERROR)`."""
        if self.closed:
            raise IMError(ErrorCode.DATABASE_ERROR, "the store is closed; open it again")
        try:
            yield
        except IMError:
            raise
        except (pw.DatabaseError, pw.InterfaceError, sqlite3.Error) as exc:
            raise IMError(ErrorCode.DATABASE_ERROR, f"database error: {exc}") from exc

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
        with self._read_lock, self.guard():
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

    def close(self) -> None:
        self.closed = True
        self.db.close()
