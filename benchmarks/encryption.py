"""Encryption at rest, measured: the same workload into a plain and an encrypted store in one
run, as ratios (encrypted / plain), and the time a passphrase costs at open.

    python -m benchmarks.encryption --messages 50000

The database is encrypted (SQLCipher) and so is the search index (every file sealed,
`imstore.index._sealed`): the search figure includes decrypting index files (cached after the
first read), the import-until-indexed one sealing them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time

import imstore

from .__main__ import DATA, queries
from .workload import OWNER, generate, load_corpus

KEY = bytes(range(32))


def _p50(fn, n: int) -> float:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def run(path: str, key: bytes | None, msgs, words, extra) -> dict[str, float]:
    fig: dict[str, float] = {}
    store = imstore.open(path, user_id=OWNER, key=key)
    try:
        t = time.perf_counter()
        store.import_messages(msgs, batch_size=1000)
        fig["import, until it returns (s)"] = time.perf_counter() - t
        store.flush_index()
        fig["import, until indexed (s)"] = time.perf_counter() - t
        it = iter(extra)
        fig["insert_message p50 (ms)"] = _p50(lambda: store.insert_message(next(it)), len(extra))
        store.flush_index()
        qs = iter(words * 3)
        fig["search p50 (ms)"] = _p50(lambda: store.search_messages(next(qs), limit=20),
                                      len(words) * 3)
        big = msgs[0].conv_id
        fig["page of 20 p50 (ms)"] = _p50(lambda: store.messages(big, limit=20), 200)
    finally:
        store.close()
    fig["database size (MB)"] = os.path.getsize(os.path.join(path, "imstore.db")) / 2**20
    return fig


def open_times(root: str) -> dict[str, float]:
    """Open with a passphrase: once, then four threads each with a first query of their own."""
    path = os.path.join(root, "pass")
    imstore.open(path, user_id=OWNER, key="correct horse battery staple").close()
    t = time.perf_counter()
    store = imstore.open(path, user_id=OWNER, key="correct horse battery staple")
    opened = time.perf_counter() - t

    def first_query() -> None:
        store.conversations()

    t = time.perf_counter()
    threads = [threading.Thread(target=first_query) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    per_threads = time.perf_counter() - t
    store.close()
    t = time.perf_counter()
    imstore.open(os.path.join(root, "enc"), user_id=OWNER, key=KEY).close()
    raw = time.perf_counter() - t
    return {"open with a passphrase (s)": opened,
            "then 4 threads' first queries (s)": per_threads,
            "open with a raw key (s)": raw}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.encryption")
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    n = args.messages
    corpus = load_corpus(DATA)
    msgs = list(generate(n, max(10, n // 100), args.seed, corpus))
    extra = list(generate(200, 10, args.seed + 1, corpus))
    for i, m in enumerate(extra):
        m.msg_id = f"x{i}"
    english, chinese = queries(corpus, random.Random(args.seed), 20)
    words = english + chinese
    root = tempfile.mkdtemp(prefix="imstore-bench-enc-")
    try:
        plain = run(os.path.join(root, "plain"), None, msgs, words, extra)
        for m in extra:
            m.msg_id = "y" + m.msg_id[1:]
        enc = run(os.path.join(root, "enc"), KEY, msgs, words, extra)
        print(f"imstore encryption benchmark: {n:,} messages, one run each, same process")
        print(f"  {'figure':<36} {'plain':>10} {'encrypted':>10} {'ratio':>7}")
        for name in plain:
            ratio = enc[name] / plain[name] if plain[name] else float("nan")
            print(f"  {name:<36} {plain[name]:>10.3f} {enc[name]:>10.3f} {ratio:>6.2f}x")
        for name, value in open_times(root).items():
            print(f"  {name:<36} {value:>10.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
