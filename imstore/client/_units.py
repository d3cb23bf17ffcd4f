"""Units of work: what the client does in the background, and `wait_idle`, which waits for it.

Rules kept here:
- a unit of work is a send under way (`Units.send_unit`) or a background task (`Units.spawn`: a
  receipt going out, an automatic download); outside an event loop a background task waits for
  the client's next async call;
- a unit that waits on what only the outside world can move (the connection, or an earlier send
  that waits for it) parks (`Units.park`): `wait_idle` returns when every unit is done or
  parked, so tests wait for the client instead of sleeping;
- a background unit's `IMError` is logged, never raised into the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..errors import IMError

__all__ = ["SendQueue", "Units"]

log = logging.getLogger("imstore.client")
T = TypeVar("T")

# True inside the client's own units of work: what `wait_idle` waits for, and what it counts as
# parked while it waits for the connection.
_UNIT: contextvars.ContextVar[bool] = contextvars.ContextVar("imstore_client_unit", default=False)


class Units:
    """The units of work of one client."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deferred: list[Callable[[], Coroutine[Any, Any, Any]]] = []
        self._active: set[asyncio.Future[None]] = set()  # one per send under way
        self._parks: set[asyncio.Future[Any]] = set()  # what parked units wait for
        self._pokes: list[asyncio.Future[None]] = []  # wait_idle, woken when a unit parks

    def spawn(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run background work now, or, outside an event loop, at the client's next async call."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._deferred.append(make)
            return
        self._start_deferred(loop)
        self._start(loop, make)

    def _start_deferred(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._deferred:
            self._start(loop, self._deferred.pop(0))

    def _start(self, loop: asyncio.AbstractEventLoop,
               make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        task = loop.create_task(self._quiet(make()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quiet(coro: Awaitable[Any]) -> None:
        _UNIT.set(True)  # the task's own context: a background unit of work
        try:
            await coro
        except IMError as exc:
            log.warning("background work failed: %s", exc)

    @contextlib.asynccontextmanager
    async def send_unit(self) -> AsyncIterator[None]:
        """A send under way, from its call to its end: a unit `wait_idle` waits for."""
        active: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._active.add(active)
        token = _UNIT.set(True)
        try:
            yield
        finally:
            _UNIT.reset(token)
            active.set_result(None)
            self._active.discard(active)

    async def wait_idle(self) -> None:
        """Wait until every unit is done or parked (see the module's rules)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let work scheduled just now (a send's task) begin
        while True:
            self._start_deferred(loop)
            pending: list[asyncio.Future[Any]] = [t for t in self._tasks
                                                  if not t.done() and t.get_loop() is loop]
            pending += [f for f in self._active if not f.done() and f.get_loop() is loop]
            parked = sum(1 for f in self._parks if not f.done())
            if len(pending) <= parked:
                return
            poke: asyncio.Future[None] = loop.create_future()
            self._pokes.append(poke)
            try:
                await asyncio.wait([*pending, poke], return_when=asyncio.FIRST_COMPLETED)
            finally:
                poke.cancel()
                if poke in self._pokes:
                    self._pokes.remove(poke)

    async def park(self, fut: asyncio.Future[T], timeout: float | None = None) -> T:
        """Await ``fut``, which only the outside world can move: `wait_idle` counts the unit
        awaiting it as parked. Raises TimeoutError after ``timeout`` seconds."""
        if not _UNIT.get():
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        self._parks.add(fut)
        pokes, self._pokes = self._pokes, []
        for poke in pokes:
            if not poke.done():
                poke.set_result(None)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            self._parks.discard(fut)


class SendQueue:
    """One FIFO per conversation: sends leave in the order of the calls."""

    def __init__(self, units: Units) -> None:
        self._units = units
        self._tails: dict[str, asyncio.Future[None]] = {}  # per key: the last call queued

    async def in_order(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` after every earlier call with the same ``key`` has finished."""
        loop = asyncio.get_running_loop()
        prev = self._tails.get(key)
        mine: asyncio.Future[None] = loop.create_future()
        self._tails[key] = mine

        def release(_: object = None) -> None:
            if not mine.done():
                mine.set_result(None)
            if self._tails.get(key) is mine:
                del self._tails[key]

        try:
            if prev is not None and not prev.done() and prev.get_loop() is loop:
                await self._units.park(prev)
            return await work()
        finally:
            # A caller cancelled while still queued must not let later sends overtake the
            # earlier ones: the queue moves on only once its predecessor is done too.
            if prev is not None and not prev.done() and prev.get_loop() is loop:
                prev.add_done_callback(release)
            else:
                release()
