"""The Matrix conversation list, measured on a live Synapse: a user in N rooms (one message each)
lists them from a fresh device in pages of 20, next to the one ``/sync`` request that answers
the list (the reference: what a hand-written client pays for the same data).

    python -m benchmarks.matrix_list --rooms 100     # a Synapse from scripts/synapse.py

Synapse is found as the conformance tests find it (``IMSTORE_SYNAPSE_DIR`` or ``.synapse``, or
``IMSTORE_SYNAPSE_URL`` and ``IMSTORE_SYNAPSE_SECRET``). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from imstore import ChatType, Message
from imstore.adapters.matrix import MatrixAdapter
from imstore.adapters.matrix import _mapping as mp
from imstore.adapters.matrix import _requests as rq

REPO = Path(__file__).resolve().parents[1]


def synapse() -> dict[str, Any]:
    url, secret = os.environ.get("IMSTORE_SYNAPSE_URL"), os.environ.get("IMSTORE_SYNAPSE_SECRET")
    if url and secret:
        return {"url": url.rstrip("/"), "secret": secret}
    base = Path(os.environ.get("IMSTORE_SYNAPSE_DIR", REPO / ".synapse"))
    state: dict[str, Any] = json.loads((base / "state.json").read_text())
    return state


class Counted(httpx.AsyncBaseTransport):
    """The adapter's HTTP client hook: counts requests, then sends them."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def main(rooms: int, page_size: int, runs: int) -> dict[str, float]:
    info = synapse()
    user = f"lister-{secrets.token_hex(3)}"
    password = "pw-" + user
    await MatrixAdapter.register(info["url"], user, password, shared_secret=info["secret"])
    maker = await MatrixAdapter.login(info["url"], user, password)
    try:
        for start in range(0, rooms, 10):
            async def room(i: int) -> None:
                gid = f"{user}-g{i:04d}"
                await maker.create_group(gid, [])
                await maker.send(Message.text(gid, f"in {gid}", chat_type=ChatType.GROUP_CHAT))
            await asyncio.gather(*(room(i) for i in range(start, min(start + 10, rooms))))
    finally:
        await maker.close()
    list_s, raw_s, per_page = [], [], []
    for _ in range(runs):
        hook = Counted()
        fresh = await MatrixAdapter.login(info["url"], user, password, http_transport=hook)
        try:
            fresh.pause()  # the list alone, as an app shows it before its first sync returns
            before, t = hook.requests, time.perf_counter()
            cursor, listed = None, 0
            while True:
                page = await fresh.fetch_conversations(cursor, page_size)
                listed += len(page.items)
                cursor = page.cursor
                if cursor is None:
                    break
            list_s.append(time.perf_counter() - t)
            pages = -(-listed // page_size)
            per_page.append((hook.requests - before) / pages)
            t = time.perf_counter()  # the reference: the one request that carries the list
            await fresh.api.call(rq.sync(rq.list_filter(10, [mp.CONV_STATE], [mp.HIDDEN],
                                                        mp.HISTORY_NOT_TYPES),
                                         None, rq.fresh_timeout(int(time.time() * 1000))))
            raw_s.append(time.perf_counter() - t)
        finally:
            await fresh.close()
    return {"rooms": rooms, "list_s": statistics.median(list_s),
            "reference_s": statistics.median(raw_s),
            "ratio": statistics.median(list_s) / statistics.median(raw_s),
            "requests_per_page": max(per_page)}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--page-size", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    got = asyncio.run(main(args.rooms, args.page_size, args.runs))
    print(f"{got['rooms']} rooms in pages of {args.page_size}: the whole list "
          f"{got['list_s']:.2f} s, the one /sync that carries it {got['reference_s']:.2f} s "
          f"({got['ratio']:.2f}x); at most {got['requests_per_page']:.1f} requests a page")


if __name__ == "__main__":
    cli()
