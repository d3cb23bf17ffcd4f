"""Shared fixtures: an in-memory store, a store on disk, the shared data folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import imstore
from imstore import MessageStore

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("IMSTORE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def store() -> Iterator[MessageStore]:
    with imstore.open(":memory:", user_id="alice") as s:
        yield s


# The key of the encrypted runs: tests on disk run once plain and once encrypted (SQLCipher).
TEST_KEY = bytes(range(32))


@pytest.fixture(params=[None, TEST_KEY], ids=["plain", "encrypted"])
def store_key(request: pytest.FixtureRequest) -> bytes | None:
    """None (a plain store), then a raw key (an encrypted store; skipped without the extra)."""
    if request.param is not None:
        pytest.importorskip("sqlcipher3", reason="the encrypted runs need imstore[crypto]")
    return request.param  # type: ignore[no-any-return]


def raw_connect(path: str | os.PathLike[str], key: bytes | None = None) -> Any:
    """A driver connection to a store's database file, outside imstore (for checks on disk)."""
    if key is None:
        import sqlite3

        return sqlite3.connect(path)
    import sqlcipher3

    con = sqlcipher3.connect(str(path))
    con.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    return con


@pytest.fixture
def disk_store(tmp_path: Path, store_key: bytes | None) -> Iterator[MessageStore]:
    with imstore.open(tmp_path / "alice", user_id="alice", key=store_key) as s:
        yield s


@pytest.fixture
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"the shared data folder {DATA} is absent (set IMSTORE_DATA to point at it)")
    return DATA


class Clock:
    """A settable clock in ms for the server's retention and receipt windows."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1  # every reading is a new millisecond, like a busy server
        return self.now

    def advance_days(self, days: float) -> None:
        self.now += int(days * 86_400_000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def settle(clients: Iterable[imstore.ChatClient]) -> None:
    """Let every client finish its work, three rounds over all of them (one's work, such as a
    send, starts another's: a receipt back)."""
    clients = list(clients)
    for _ in range(3):
        for c in clients:
            await c.wait_idle()


class Clients:
    """Named stores and their clients (``stores``, ``clients``): settled and closed together."""

    stores: dict[str, MessageStore]
    clients: dict[str, imstore.ChatClient]

    async def settle(self) -> None:
        await settle(self.clients.values())

    def close(self) -> None:
        for s in self.stores.values():
            s.close()


class Pair:
    """alice and bob, each with a store and a client, on one MemoryServer."""

    def __init__(self, server: imstore.MemoryServer, tmp: Path) -> None:
        self.server = server
        self.a = imstore.open(":memory:", user_id="alice")
        self.b = imstore.open(":memory:", user_id="bob")
        self.ca = imstore.ChatClient(self.a, server.connect("alice"), send_timeout=0.2,
                                     download_dir=str(tmp / "alice-files"))
        self.cb = imstore.ChatClient(self.b, server.connect("bob"), send_timeout=0.2,
                                     download_dir=str(tmp / "bob-files"))

    async def settle(self) -> None:
        await settle([self.ca, self.cb])

    def close(self) -> None:
        self.a.close()
        self.b.close()


@pytest.fixture
def pair(tmp_path: Path, clock: Clock) -> Iterator[Pair]:
    p = Pair(imstore.MemoryServer(clock=clock), tmp_path)
    yield p
    p.close()


@pytest.fixture
def raw_sql() -> Callable[..., int]:
    """Run one write statement on a store's database behind its back (to simulate drift or
    corruption); returns the changed row count."""

    def run(store: MessageStore, sql: str, params: Sequence[Any] = ()) -> int:
        return store.connection.execute(sql, params)

    return run
