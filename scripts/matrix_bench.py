#!/usr/bin/env python3
"""Per-send latency of imstore's Matrix adapter against a local Synapse (numbers for docs/adapters.md).

Run with imstore and httpx importable, after ``python scripts/synapse.py start``::

    PYTHONPATH=. python scripts/matrix_bench.py --sends 50

Registers two fresh users, then measures ``ChatClient.send_message`` (PUT /send and the GET of the
event's server time) and the time until the receiver's store has the message (its /sync loop).
Prints mean, p50 and p95 in milliseconds; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import imstore  # noqa: E402
from imstore import ChatClient, Message  # noqa: E402
from imstore.adapters.matrix import MatrixAdapter  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(url: str, secret: str, sends: int) -> dict[str, dict[str, float]]:
    sfx = secrets.token_hex(3)
    names = [f"bench-a-{sfx}", f"bench-b-{sfx}"]
    for n in names:
        await MatrixAdapter.register(url, n, "pw-" + n, shared_secret=secret)
    a = await MatrixAdapter.login(url, names[0], "pw-" + names[0])
    b = await MatrixAdapter.login(url, names[1], "pw-" + names[1])
    sa, sb = imstore.open(":memory:", user_id=a.user_id), imstore.open(":memory:", user_id=b.user_id)
    ca, cb = ChatClient(sa, a), ChatClient(sb, b)
    try:
        await a.wait_synced()
        await b.wait_synced()
        await ca.send_message(Message.text(b.user_id, "warm-up"))  # creates the direct room
        send_ms, arrive_ms = [], []
        for i in range(sends):
            t0 = time.perf_counter()
            sent = await ca.send_message(Message.text(b.user_id, f"message {i}"))
            t1 = time.perf_counter()
            while sb.get_message(sent.msg_id) is None:
                await asyncio.sleep(0.001)
            t2 = time.perf_counter()
            send_ms.append((t1 - t0) * 1000)
            arrive_ms.append((t2 - t0) * 1000)
        await ca.wait_idle()
        await cb.wait_idle()
    finally:
        await a.close()
        await b.close()
        sa.close()
        sb.close()
    return {name: {"mean": statistics.fmean(v), "p50": pct(v, 50), "p95": pct(v, 95),
                   "n": len(v)}
            for name, v in (("send", send_ms), ("send_to_receiver_store", arrive_ms))}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=ROOT / ".synapse")
    args = parser.parse_args()
    state = json.loads((args.dir / "state.json").read_text())
    result = asyncio.run(main(state["url"], state["secret"], args.sends))
    for name, r in result.items():
        print(f"{name:>24}: mean {r['mean']:.1f} ms, p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms "
              f"over {int(r['n'])}")
