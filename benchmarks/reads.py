"""python -m benchmarks.reads [--messages N] [--conversations N] [--seed S] [--store DIR] [--profile]

The two reads of the main benchmark that have a raw ``sqlite3`` reference — a page of 20 and the
whole conversation list — taken apart (reported, never asserted):

- imstore's call next to raw's, as in ``python -m benchmarks`` (same workload, same rows);
- the same SQL run by plain ``sqlite3`` on imstore's own database file, so that what SQLite does
  (the file's layout) and what Python does (rows to values) are told apart;
- the conversation table's pages in both files (``dbstat``): how full they are, how many rows
  overflow;
- with ``--profile``, where the Python time of each read goes.

``--store DIR`` keeps the imported store there and reuses it on the next run (the import is the
slow part); without it, everything lives in a temporary directory. For "before" figures, run it
with an older imstore first on the path (``PYTHONPATH=<old checkout>``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imstore
from imstore.store import CONVERSATION_LIST_SQL
from imstore.store._rows import SELECT_COLUMNS

try:  # an older imstore (put first on the path for "before" figures) reads the anchor apart
    from imstore.store._rows import PAGE_FROM_SQL
except ImportError:
    PAGE_FROM_SQL = {}

from .__main__ import DATA
from .reference import RawSQLite
from .workload import OWNER, generate, load_corpus

_LIST = CONVERSATION_LIST_SQL.format(where="")
_PAGE = PAGE_FROM_SQL.get(imstore.Direction.UP)  # the page and its anchor, as imstore reads them


def medians(fns: list[Callable[[], Any]], n: int) -> list[float]:
    """The median ms of each of ``fns``, called in turn ``n`` times (after a warm-up), so that
    a busy shared machine slows them alike."""
    for fn in fns:
        fn()
    spent: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for fn, out in zip(fns, spent, strict=True):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
    return [statistics.median(out) for out in spent]


def without_gc(fn: Callable[[], Any]) -> Any:
    """``fn()`` with the cyclic garbage collector off (what the collector's passes cost)."""
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


def line(name: str, mine: float, ref: float | None = None, unit: str = "ms") -> None:
    ratio = f"{mine / ref:6.2f}x" if ref else ""
    shown = "" if ref is None else f"{ref:10.3f}"
    print(f"  {name:<58} {mine:10.3f} {shown:>10} {unit:<4} {ratio}", flush=True)


def table_pages(db: sqlite3.Connection, name: str) -> str:
    """How the b-tree pages of ``name`` are used, from ``dbstat`` (when SQLite has it)."""
    try:
        row = db.execute("SELECT count(*), sum(pagetype = 'overflow'), sum(ncell), "
                         "sum(unused), sum(pgsize) FROM dbstat WHERE name = ?", (name,)).fetchone()
    except sqlite3.Error:
        return "(no dbstat)"
    pages, overflow, cells, unused, size = row
    return (f"{pages} pages ({overflow} overflow), {cells} cells, "
            f"{100 * (1 - unused / size):.0f}% used")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.reads",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--conversations", type=int, default=None,
                    help="default: messages / 100, as the main benchmark")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--store", metavar="DIR", help="keep the imported store here (reused)")
    ap.add_argument("--profile", action="store_true", help="profile each read's Python time")
    args = ap.parse_args(argv)
    n = args.messages
    convs = args.conversations or max(10, n // 100)
    corpus = load_corpus(DATA)
    msgs = list(generate(n, convs, args.seed, corpus))
    big = msgs[0].conv_id
    ids = [m.msg_id for m in msgs if m.conv_id == big]
    tmp = tempfile.mkdtemp(prefix="imstore-bench-reads-")
    path = args.store or os.path.join(tmp, "store")
    fresh = not os.path.isdir(path)
    store = imstore.open(path, user_id=OWNER, search=False)
    raw: RawSQLite | None = None
    try:
        if fresh:
            print(f"importing {n:,} messages in {convs:,} conversations into {path}", flush=True)
            store.import_messages(msgs, batch_size=1000)
        elif store.stats()["messages"] != n:
            raise SystemExit(f"{path} holds another workload; remove it or choose another --store")
        schema = [r[0] for r in store.connection.query(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END")]
        raw = RawSQLite(schema)
        raw.import_rows(msgs)
        plain = sqlite3.connect(os.path.join(path, "imstore.db"), isolation_level=None)
        print(f"imstore {imstore.__version__} from {Path(imstore.__file__).parent}: {n:,} messages, "
              f"{convs:,} conversations, SQLite {sqlite3.sqlite_version}")
        print(f"  conversation table, imstore: {table_pages(plain, 'conversation')}")
        print(f"  conversation table, raw:     {table_pages(raw.db, 'conversation')}")
        print(f"\n  {'figure':<58} {'imstore':>10} {'raw':>10} unit ratio")

        for label, anchor in (("oldest", ids[min(20, len(ids) - 1)]),
                              ("middle", ids[len(ids) // 2]), ("newest", ids[-1])):
            fns = [lambda a=anchor: store.messages(big, start_msg_id=a, limit=20),
                   lambda a=anchor: raw.page(big, *raw.anchor(a)),
                   lambda a=anchor: [m.body for m in store.messages(big, start_msg_id=a,
                                                                    limit=20)]]
            if _PAGE is not None:
                fns.append(lambda a=anchor: plain.execute(_PAGE, (big, a, a, 20)).fetchall())
            mine, ref, read, *same = medians(fns, 300)
            line(f"page of 20, {label}", mine, ref)
            line("  and every body read", read, ref)
            if same:
                line(f"  imstore's SQL ({len(SELECT_COLUMNS.split(','))} columns) by sqlite3",
                     same[0], ref)

        for limit in (50, None):
            what = "first 50" if limit else f"all {convs:,}"
            sql = _LIST + (f" LIMIT {limit}" if limit else "")
            mine, ref, same, quiet, first = medians([
                lambda lim=limit: store.conversations(limit=lim),
                lambda lim=limit: raw.conversations(lim),
                lambda s=sql: plain.execute(s).fetchall(),
                lambda lim=limit: without_gc(lambda: store.conversations(limit=lim)),
                lambda lim=limit: [c.last_message.body for c in store.conversations(limit=lim)
                                   if c.last_message]], 100 if limit else 30)
            line(f"conversation list, {what}", mine, ref)
            line("  the same SQL by sqlite3 on imstore's file", same, ref)
            line("  imstore's, the garbage collector off", quiet, ref)
            line("  and every last message read (its body too)", first, ref)
        plain.close()

        if args.profile:
            for name, fn in (("page of 20, middle", lambda: store.messages(
                    big, start_msg_id=ids[len(ids) // 2], limit=20)),
                             (f"conversation list, all {convs:,}", store.conversations)):
                prof = cProfile.Profile()
                t = time.perf_counter()
                prof.enable()
                for _ in range(200 if "page" in name else 20):
                    fn()
                prof.disable()
                print(f"\n-- profile: {name} ({time.perf_counter() - t:.2f} s)")
                pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    finally:
        store.close()
        if raw is not None:
            raw.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
