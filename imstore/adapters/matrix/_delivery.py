"""Delivery receipts this device sends: Matrix has none, so imstore sends its own to-device event.

Rules kept here:
- every delivery receipt asked for while one request is being prepared goes in that one request
  (one ``sendToDevice`` for all peers and ids of the moment), never one request per message;
- each caller hears the outcome of the request that carried its receipt (an `IMError` is
  raised to all of them);
- at most `MAX_IDS` ids per peer in one request; the rest go in the next.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets

from . import _mapping as mp
from . import _requests as rq
from ._api import Api

__all__ = ["DeliveryAcks"]

MAX_IDS = 500


class DeliveryAcks:
    """Batches this device's delivery receipts into one to-device request at a time."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._pending: dict[str, list[str]] = {}
        self._waiting: list[asyncio.Future[None]] = []
        self._flush: asyncio.Task[None] | None = None
        self._txn = itertools.count(1)
        self._session = secrets.token_hex(4)  # txn ids stay unique across adapters
        self.requests = 0  # how many requests were sent (for tests and benchmarks)

    async def ack(self, peer_mxid: str, event_id: str) -> None:
        ids = self._pending.setdefault(peer_mxid, [])
        if event_id not in ids:
            ids.append(event_id)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._send())
        await fut

    async def _send(self) -> None:
        await asyncio.sleep(0)  # let every receipt asked for in this turn join the batch
        while self._pending:
            pending, self._pending = self._pending, {}
            waiting, self._waiting = self._waiting, []
            error: BaseException | None = None
            try:
                while pending:
                    batch = {peer: ids[:MAX_IDS] for peer, ids in pending.items()}
                    pending = {peer: ids[MAX_IDS:] for peer, ids in pending.items()
                               if len(ids) > MAX_IDS}
                    self.requests += 1
                    await self.api.call(rq.send_to_device(
                        mp.RECEIPT_EVENT, f"d{self._session}.{next(self._txn)}",
                        {peer: {"kind": "delivered", "event_ids": ids}
                         for peer, ids in batch.items()}))
            except Exception as exc:
                error = exc
            for fut in waiting:
                if fut.done():
                    continue
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)
