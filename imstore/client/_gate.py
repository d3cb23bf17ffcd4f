"""The connection gate: every network step of the client passes it, and what happens to a step
is one table, `STEP_OUTCOMES`.

Rules kept here (the table):
- the connection is RECONNECTING before a step: the step parks until it comes back, within the
  wait budget of its send (``reconnect_wait`` in all), else 300;
- the connection is DISCONNECTED before a step: 510 (only then);
- the state leaves CONNECTED while the step runs (or the transport raises 510 as it does): the
  step runs again after the reconnection, with the same local id;
- the server does not answer in time (or the transport raises 510 while the connection says it is
  CONNECTED): once, the connection is re-made and the step retried; twice, 300 (`Sender`);
- an adapter's exception that is not an `IMError` becomes one, keeping its cause (`call`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, TypeVar

from ..adapters import ConnectionState, Transport, transport_method
from ..errors import ErrorCode, IMError
from ._units import Units

__all__ = ["STEP_OUTCOMES", "ConnectionGate", "Outcome", "Step", "WaitBudget", "call"]

log = logging.getLogger("imstore.client")
T = TypeVar("T")


class Step(Enum):
    """What a network step meets."""

    RECONNECTING = "the connection is RECONNECTING before the step"
    DISCONNECTED = "the connection is DISCONNECTED before the step"
    DROPPED = "the connection left CONNECTED while the step ran"
    NO_ANSWER = "no answer in time, the first time"
    NO_ANSWER_AGAIN = "no answer in time, after reconnecting"


class Outcome(Enum):
    """What the client does about it."""

    PARK = "park until the state changes, within the budget"
    FAIL_510 = "fail with MESSAGE_WEBSOCKET_DISCONNECTED"
    RERUN = "run the step again after the reconnection, with the same local id"
    RECONNECT_RETRY = "re-make the connection and try once more"
    FAIL_300 = "fail with SERVER_NOT_REACHABLE"


STEP_OUTCOMES: dict[Step, Outcome] = {
    Step.RECONNECTING: Outcome.PARK,
    Step.DISCONNECTED: Outcome.FAIL_510,
    Step.DROPPED: Outcome.RERUN,
    Step.NO_ANSWER: Outcome.RECONNECT_RETRY,
    Step.NO_ANSWER_AGAIN: Outcome.FAIL_300,
}


class WaitBudget:
    """How long one send may still wait for RECONNECTING to end, across all its steps."""

    __slots__ = ("deadline", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline: float | None = None

    def left(self, now: float) -> float:
        if self.deadline is None:
            self.deadline = now + self.seconds
        return self.deadline - now


class _Dropped(Exception):
    """The connection left CONNECTED while a step was in flight."""


async def call(aw: Awaitable[T]) -> T:
    """Await an adapter call; anything but an IMError becomes one, keeping the cause."""
    try:
        return await aw
    except IMError:
        raise
    except TimeoutError as exc:
        raise IMError(ErrorCode.SERVER_TIMEOUT, "the server did not answer in time") from exc
    except (ConnectionError, OSError) as exc:
        raise IMError(ErrorCode.NETWORK_ERROR, f"network error: {exc}") from exc
    except Exception as exc:
        raise IMError(ErrorCode.SERVER_UNKNOWN_ERROR, f"the adapter failed: {exc!r}") from exc


class ConnectionGate:
    """Runs network steps through the connection's states (the module's table)."""

    def __init__(self, transport: Transport | None, units: Units,
                 reconnect_wait: Callable[[], float]) -> None:
        self._transport = transport
        self._units = units
        self._reconnect_wait = reconnect_wait
        self._waiters: list[asyncio.Future[None]] = []  # woken at the next state change
        self._generation = 0  # counts state changes

    def changed(self) -> None:
        """The connection changed state: wake every step waiting on it."""
        self._generation += 1
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done() and not fut.get_loop().is_closed():
                fut.set_result(None)

    def transport(self) -> Transport:
        """The transport, or SERVICE_NOT_ENABLED when this client has none."""
        if self._transport is None:
            raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                          "this client has no transport; pass transport= to ChatClient")
        return self._transport

    def method(self, name: str) -> Any:
        """The transport's optional method ``name``, or SERVICE_NOT_ENABLED naming it."""
        return transport_method(self.transport(), name)

    async def request(self, make: Callable[[], Awaitable[T]], timeout: float) -> T:
        """A request to the transport (a receipt, a recall, an edit): it passes the gate like a
        send, and must be answered within ``timeout``."""
        self.transport()
        try:
            return await self.run(make, timeout, None)
        except TimeoutError as exc:
            raise IMError(ErrorCode.SERVER_TIMEOUT, "the server did not answer in time; "
                                                    "try again") from exc

    async def transfer(self, make: Callable[[], Awaitable[T]], timeout: float,
                       budget: WaitBudget | None, code: ErrorCode) -> T:
        """An upload or a download: it passes the gate, and takes at most ``timeout``."""
        try:
            return await self.run(make, timeout, budget)
        except TimeoutError as exc:
            raise IMError(code, f"the transfer did not finish within transfer_timeout="
                                f"{timeout} s; try again") from exc

    def state(self) -> ConnectionState:
        return ConnectionState(getattr(self._transport, "state", ConnectionState.CONNECTED))

    def _state_waiter(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    def _before(self) -> Step | None:
        """What a step meets before it runs: None when the connection is up."""
        state = self.state()
        if state == ConnectionState.RECONNECTING:
            return Step.RECONNECTING
        if state == ConnectionState.DISCONNECTED:
            return Step.DISCONNECTED
        return None

    async def wait_connected(self, budget: WaitBudget | None) -> None:
        """Return once the state is CONNECTED, as the table says for the states before it."""
        loop = asyncio.get_running_loop()
        while (step := self._before()) is not None:
            outcome = STEP_OUTCOMES[step]
            if outcome is Outcome.FAIL_510:
                raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                              "the connection is down and not reconnecting; reconnect, then "
                              "try again")
            assert outcome is Outcome.PARK
            if budget is None:
                budget = WaitBudget(self._reconnect_wait())
            left = budget.left(loop.time())
            if left <= 0:
                raise IMError(ErrorCode.SERVER_NOT_REACHABLE,
                              f"the connection did not come back within reconnect_wait="
                              f"{budget.seconds} s; try again later")
            waiter = self._state_waiter()
            try:
                await self._units.park(waiter, left)
            except TimeoutError:
                waiter.cancel()

    async def run(self, make: Callable[[], Awaitable[T]], timeout: float,
                  budget: WaitBudget | None) -> T:
        """Run one network step once the connection is up; a step that the connection drops
        under is run again (RERUN). Raises TimeoutError when it got no answer in ``timeout``."""
        while True:
            await self.wait_connected(budget)
            generation = self._generation
            try:
                return await self._race(make, timeout)
            except _Dropped:
                step = Step.DROPPED
            except IMError as exc:
                if exc.code != ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED:
                    raise
                if self._unchanged(generation):
                    await asyncio.sleep(0)  # a transport may report the drop just after raising
                if self._unchanged(generation):
                    # "down", yet the connection says it never was: 510 is for DISCONNECTED only,
                    # so this is a step that got no answer
                    raise TimeoutError("the transport raised 510 while CONNECTED") from exc
                step = Step.DROPPED
            assert STEP_OUTCOMES[step] is Outcome.RERUN

    def _unchanged(self, generation: int) -> bool:
        return self.state() == ConnectionState.CONNECTED and self._generation == generation

    async def _race(self, make: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Await one step; stop it with `_Dropped` when the state leaves CONNECTED meanwhile."""
        loop = asyncio.get_running_loop()

        async def step() -> T:  # the coroutine is made inside the task: never left unawaited
            return await call(make())

        task: asyncio.Future[T] = asyncio.ensure_future(step())
        deadline = loop.time() + timeout
        try:
            while True:
                waiter = self._state_waiter()
                both: set[asyncio.Future[Any]] = {task, waiter}
                done, _ = await asyncio.wait(both, timeout=max(deadline - loop.time(), 0),
                                             return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if task in done:
                    return task.result()
                if not done:
                    raise TimeoutError
                if self.state() != ConnectionState.CONNECTED:
                    raise _Dropped
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
