"""python -m benchmarks [--messages N] [--conversations N] [--seed S] [--json PATH] [--segments-only]

Prints one table of figures, imstore next to the reference measured in the same run on the same
rows, and writes the same figures as JSON. Figures are printed, never asserted.
``--segments-only`` measures the search index's segment writer alone on the workload's documents
(against a naive whoosh writer), without a store.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import imstore
from imstore import Message, MessageType
from imstore.text import content_text, ext_text

from .reference import Fts5, RawSQLite, naive_whoosh, rows_of
from .report import _fmt
from .workload import OWNER, Corpus, common_queries, generate, load_corpus

DATA = Path(os.environ.get("IMSTORE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@dataclass
class Figure:
    name: str
    imstore: float
    reference: float | None
    ratio: float | None
    unit: str
    goal: str
    met: bool | None


class Report:
    def __init__(self) -> None:
        self.figures: list[Figure] = []

    def add(self, name: str, mine: float, ref: float | None, unit: str, goal: str = "",
            check: Callable[[float, float | None], bool] | None = None) -> None:
        ratio = (mine / ref) if ref else None
        met = check(mine, ratio) if check else None
        self.figures.append(Figure(name, mine, ref, ratio, unit, goal, met))
        mark = {True: "met", False: "MISSED", None: ""}[met]
        print(f"  {name:<46} {_fmt(mine):>11} {_fmt(ref):>11} {unit:<8} "
              f"{'' if ratio is None else f'{ratio:6.2f}x':>8}  {goal} {mark}", flush=True)


def timings(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def dir_size(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def step(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def peak_import_rss(messages: int, conversations: int, seed: int) -> float:
    """Peak RSS (MB) of a fresh process importing ``messages`` from a generator, with search."""
    code = (
        "import resource, shutil, sys, tempfile, imstore\n"
        "from pathlib import Path\n"
        "from benchmarks.workload import generate, load_corpus\n"
        f"c = load_corpus(Path({str(DATA)!r}))\n"
        "d = tempfile.mkdtemp()\n"
        "s = imstore.open(d, user_id='me')\n"
        f"s.import_messages(generate({messages}, {conversations}, {seed}, c), batch_size=1000)\n"
        "s.close()\n"
        "shutil.rmtree(d)\n"
        # VmHWM is this process's own peak; ru_maxrss would include the parent's memory at fork
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
        "print(int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def index_docs(msgs: list[Message]) -> list[Any]:
    """The index documents of the workload's messages (row ids in import order)."""
    from imstore.index import Doc

    return [Doc(i + 1, m.timestamp, m.conv_id, m.sender or OWNER, int(m.type),
                content_text(m.type, m.body), ext_text(m.ext)) for i, m in enumerate(msgs)]


def segment_writer(docs: list[Any], workers: int) -> tuple[float, int]:
    """Seconds for the index alone to take ``docs`` (commits of 50k, as imports hand them
    over), and the index's size on disk in bytes."""
    from imstore.index import SearchIndex

    d = tempfile.mkdtemp(prefix="imstore-bench-seg-")
    try:
        ix = SearchIndex(os.path.join(d, "ix"), workers=workers)
        gc.collect()
        t = time.perf_counter()
        for i in range(0, len(docs), 50_000):
            ix.apply([], [], new=docs[i:i + 50_000], merge=False)
        seconds = time.perf_counter() - t
        ix.close()
        return seconds, dir_size(os.path.join(d, "ix"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def import_cpu(msgs: list[Message], path: str, *, search: bool) -> float:
    """CPU seconds (every thread, and the index's helper process once it has exited) to import
    ``msgs`` into a new store and, with search, until they are indexed."""
    import resource

    def spent() -> float:
        mine = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime

    gc.collect()
    before = spent()
    store = imstore.open(path, user_id=OWNER, search=search)
    store.import_messages(msgs, batch_size=1000)
    if search:
        store.flush_index()
    store.close()  # the helper exits and is waited for: its time is counted
    return spent() - before


def wait_indexed(store: Any) -> None:
    """Return once the store's index holds every message written so far."""
    store.flush_index()


def segments_only(n: int, convs: int, seed: int, corpus: Corpus, rep: Report) -> None:
    step("generating the workload")
    msgs = list(generate(n, convs, seed, corpus))
    docs = index_docs(msgs)
    texts = [d.content for d in docs]
    step("naive whoosh writer")
    t_naive = naive_whoosh(texts)
    for workers in (1, 2):
        step(f"segment writer, {workers} process(es)")
        t_seg, size = segment_writer(docs, workers)
        rep.add(f"segment writer alone, {workers} proc (docs/s)", n / t_seg, n / t_naive,
                "docs/s", ">= 2.5x naive whoosh", lambda m, r: r is not None and r >= 2.5)
    rep.add("segment writer index size", size / 2**20, None, "MB")


def queries(corpus: Corpus, rnd: random.Random, n: int) -> tuple[list[str], list[str]]:
    words = sorted({w.lower() for t in rnd.sample(corpus.english, min(2000, len(corpus.english)))
                    for w in re.findall(r"[A-Za-z]{4,}", t)})
    grams = sorted({run[i:i + 2] for t in rnd.sample(corpus.chinese, min(2000, len(corpus.chinese)))
                    for run in re.findall(r"[\u4e00-\u9fff]{2,}", t) for i in range(len(run) - 1)})
    return rnd.sample(words, min(n, len(words))), rnd.sample(grams, min(n, len(grams)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--conversations", type=int, default=None,
                    help="default: messages / 100 (10k conversations at 1M messages)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON here")
    ap.add_argument("--skip-memory", action="store_true", help="skip the peak-RSS import child")
    ap.add_argument("--segments-only", action="store_true",
                    help="measure the index's segment writer alone (no store), then stop")
    args = ap.parse_args(argv)
    n = args.messages
    convs = args.conversations or max(10, n // 100)
    corpus = load_corpus(DATA)
    print(f"imstore {imstore.__version__} benchmark: {n:,} messages in {convs:,} conversations, "
          f"seed {args.seed}; workload from {corpus.source}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}")
    rep = Report()
    if args.segments_only:
        print(f"\n  {'figure':<46} {'imstore':>11} {'reference':>11} {'unit':<8} {'ratio':>8}  goal")
        segments_only(n, convs, args.seed, corpus, rep)
        return finish(rep, args, n, convs, corpus)
    step("generating the workload")
    msgs = list(generate(n, convs, args.seed, corpus))
    big = msgs[0].conv_id
    print(f"\n  {'figure':<46} {'imstore':>11} {'reference':>11} {'unit':<8} {'ratio':>8}  goal")

    root = tempfile.mkdtemp(prefix="imstore-bench-")
    try:
        # -- import, no search ----------------------------------------------------------------
        step("import without search")
        s0 = imstore.open(os.path.join(root, "nosearch"), user_id=OWNER, search=False)
        gc.collect()
        t = time.perf_counter()
        s0.import_messages(msgs, batch_size=1000)
        t_mine = time.perf_counter() - t
        schema = [r[0] for r in s0.connection.query(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END")]
        s0.close()
        raw = RawSQLite(schema)
        c = time.process_time()
        t_raw = raw.import_rows(msgs)
        cpu_raw = time.process_time() - c
        rep.add("import without search (rows/s)", n / t_mine, n / t_raw, "rows/s",
                ">= 0.40x raw executemany", lambda m, r: r is not None and r >= 0.40)

        # -- import with search ---------------------------------------------------------------
        step("import with search")
        path = os.path.join(root, "store")
        store = imstore.open(path, user_id=OWNER)
        gc.collect()
        t = time.perf_counter()
        store.import_messages(msgs, batch_size=1000)
        t_mine = time.perf_counter() - t
        wait_indexed(store)
        t_caught = time.perf_counter() - t
        fts = Fts5(raw.db)
        c = time.process_time()
        t_fts = fts.index(msgs)
        cpu_fts = time.process_time() - c
        rep.add("import with search, until it returns (rows/s)", n / t_mine, n / (t_raw + t_fts),
                "rows/s", ">= 0.5x raw + FTS5", lambda m, r: r is not None and r >= 0.5)
        rep.add("import with search, until indexed (rows/s)", n / t_caught,
                n / (t_raw + t_fts), "rows/s", ">= 0.25x raw + FTS5",
                lambda m, r: r is not None and r >= 0.25)

        step("index throughput")
        texts = [content_text(m.type, m.body) for m in msgs]
        t = time.perf_counter()
        store.rebuild_search_index()
        wait_indexed(store)
        t_index = time.perf_counter() - t
        t_naive = naive_whoosh(texts)
        rep.add("search index rebuild (docs/s)", n / t_index, n / t_naive, "docs/s",
                ">= 2.5x naive whoosh", lambda m, r: r is not None and r >= 2.5)
        step("segment writer alone")
        t_seg, _ = segment_writer(index_docs(msgs), 2)
        rep.add("  segment writer alone (docs/s)", n / t_seg, n / t_naive, "docs/s",
                ">= 2.5x naive whoosh", lambda m, r: r is not None and r >= 2.5)
        rep.add("  (FTS5 indexing, for scale)", n / t_fts, None, "docs/s")

        # -- single inserts ----------------------------------------------------------------------
        step("insert_message")
        extra = list(generate(600, 20, args.seed + 1, corpus))
        for i, m in enumerate(extra):
            m.msg_id = f"x{i}"
        mine_it, raw_it = iter(extra[:300]), iter(rows_of(extra[300:]))
        mine = timings(lambda: store.insert_message(next(mine_it)), 300)
        ref = timings(lambda: raw.insert_one(next(raw_it)), 300)
        rep.add("insert_message p50", pct(mine, .5), pct(ref, .5), "ms")
        rep.add("insert_message p99", pct(mine, .99), pct(ref, .99), "ms")

        # -- pages -----------------------------------------------------------------------------
        step("pages")
        ids = [m.msg_id for m in msgs if m.conv_id == big]
        for label, anchor in (("oldest", ids[min(20, len(ids) - 1)]),
                              ("middle", ids[len(ids) // 2]), ("newest", ids[-1])):
            m_t = timings(lambda a=anchor: store.messages(big, start_msg_id=a, limit=20), 300)
            r_t = timings(lambda a=anchor: raw.page(big, *raw.anchor(a)), 300)
            rep.add(f"page of 20, {label} part of the largest conv", pct(m_t, .5), pct(r_t, .5),
                    "ms", "<= 3x raw", lambda m, r: r is not None and r <= 3)

        # -- conversation list, unread --------------------------------------------------------
        step("conversations and unread")
        rep.add("conversation list, first 50", pct(timings(lambda: store.conversations(limit=50), 30), .5),
                pct(timings(lambda: raw.conversations(50), 30), .5), "ms")
        all_m = timings(store.conversations, 10)
        rep.add(f"conversation list, all {convs:,}", pct(all_m, .5),
                pct(timings(raw.conversations, 10), .5), "ms", "<= 50 ms at 10k conversations",
                lambda m, r: m <= 50 or convs < 10_000)
        rep.add("unread count, one conversation", pct(timings(lambda: store.unread_count(big), 500), .5),
                pct(timings(lambda: raw.unread(big), 500), .5), "ms")
        rep.add("total unread count", pct(timings(store.total_unread_count, 500), .5),
                pct(timings(raw.total_unread, 500), .5), "ms", "<= 1 ms", lambda m, r: m <= 1)

        # -- filters ---------------------------------------------------------------------------
        step("filters")
        media = [int(MessageType.IMAGE), int(MessageType.VIDEO)]
        rep.add("type filter page (image, video)",
                pct(timings(lambda: store.messages_by_type(big, [MessageType.IMAGE, MessageType.VIDEO]),
                            200), .5),
                pct(timings(lambda: raw.by_type(big, media), 200), .5), "ms")
        mid = [m for m in msgs if m.conv_id == big][len(ids) // 2].timestamp
        rep.add("time range page", pct(timings(lambda: store.messages_between(big, mid, mid + 10**9),
                                               200), .5),
                pct(timings(lambda: raw.between(big, mid, mid + 10**9), 200), .5), "ms")

        # -- search ----------------------------------------------------------------------------
        step("search")
        rnd = random.Random(args.seed)
        en, zh = queries(corpus, rnd, 30)
        for lang, qs in (("English", en), ("Chinese", zh)):
            for scope, conv in (("one conversation", big), ("all conversations", None)):
                m_t = [timings(lambda q=q, c=conv: store.search_messages(q, conv_id=c), 1)[0]
                       for q in qs]
                r_t = [timings(lambda q=q, c=conv: fts.search(q, c), 1)[0] for q in qs]
                limit_ms = 30 if conv else 100
                goal = f"p95 <= {limit_ms} ms at 1M"
                check = (lambda lim: lambda m, r: m <= lim)(limit_ms)
                rep.add(f"search {lang}, {scope}, p50", pct(m_t, .5), pct(r_t, .5), "ms")
                rep.add(f"search {lang}, {scope}, p95", pct(m_t, .95), pct(r_t, .95), "ms",
                        goal, check)

        step("search, common words")
        common = common_queries(msgs)
        for scope, conv in (("one conversation", big), ("all conversations", None)):
            m_t = [timings(lambda q=q, c=conv: store.search_messages(q, conv_id=c), 1)[0]
                   for q in common]
            r_t = [timings(lambda q=q, c=conv: fts.search(q, c), 1)[0] for q in common]
            limit_ms = 30 if conv else 100
            rep.add(f"search common words, {scope}, p50", pct(m_t, .5), pct(r_t, .5), "ms")
            rep.add(f"search common words, {scope}, p95", pct(m_t, .95), pct(r_t, .95), "ms",
                    f"p95 <= {limit_ms} ms at 100k", (lambda lim: lambda m, r: m <= lim)(limit_ms))
            worst = max(range(len(common)), key=lambda i: m_t[i])
            print(f"    slowest: {common[worst]!r} {m_t[worst]:.1f} ms")

        step("search, OR of two keywords")
        pairs = [[en[i], zh[i]] for i in range(min(len(en), len(zh), 20))]
        m_t = [timings(lambda p=p: store.search_messages(p, match="any"), 1)[0] for p in pairs]
        r_t = [timings(lambda p=p: fts.search(p, None), 1)[0] for p in pairs]
        rep.add("search OR (an English, a Chinese word), p95", pct(m_t, .95), pct(r_t, .95), "ms")

        step("counts per conversation")
        typical = en[:15] + zh[:15]
        m_t = [timings(lambda q=q: store.search_counts(q), 1)[0] for q in typical]
        r_t = [timings(lambda q=q: fts.counts(q), 1)[0] for q in typical]
        rep.add("search_counts, typical words, p95", pct(m_t, .95), pct(r_t, .95), "ms",
                "p95 <= 50 ms at 100k", lambda m, r: m <= 50)
        some = common[::4]
        m_t = [timings(lambda q=q: store.search_counts(q), 1)[0] for q in some]
        r_t = [timings(lambda q=q: fts.counts(q), 1)[0] for q in some]
        rep.add("search_counts, common words (max_hits 10k), p95", pct(m_t, .95), pct(r_t, .95),
                "ms")

        # Searches while every message is still waiting for the index: the indexer is held
        # back and every row put in its outbox, as right after an import of them all; the
        # entries are taken out again afterwards (the index holds them already).
        step("search with every message pending")
        with store.pause_indexing():
            with store.connection.tx() as db:
                store._indexer.outbox.enqueue_everything(db)  # as a rebuild queues them
            try:
                for lang, qs in (("English", en), ("Chinese", zh)):
                    for scope, conv in (("one conversation", big), ("all conversations", None)):
                        m_t = [timings(lambda q=q, c=conv: store.search_messages(q, conv_id=c),
                                       1)[0] for q in qs]
                        limit_ms = 30 if conv else 100
                        at_goal = n <= 100_000  # the goal is stated for 100k pending
                        rep.add(f"search {lang}, {scope}, every row pending, p95", pct(m_t, .95),
                                None, "ms", f"<= {limit_ms} ms at 100k pending",
                                (lambda lim: lambda m, r: m <= lim)(limit_ms) if at_goal
                                else None)
            finally:
                store.connection.execute("DELETE FROM search_outbox")

        # -- open, sizes -------------------------------------------------------------------------
        step("open time and sizes")
        store.close()
        opens = []
        for _ in range(5):
            t = time.perf_counter()
            s = imstore.open(path, user_id=OWNER)
            opens.append((time.perf_counter() - t) * 1000)
            s.close()
        rep.add("open a store", statistics.median(opens), None, "ms", "<= 200 ms at 1M",
                lambda m, r: m <= 200)
        db_mb = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
                    if f.startswith("imstore.db")) / 2**20
        raw.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rep.add("database size on disk", db_mb, dir_size(raw.dir) / 2**20, "MB",
                "(reference: raw + FTS5)")
        rep.add("search index size on disk", dir_size(os.path.join(path, "search")) / 2**20,
                db_mb, "MB", "<= 1.2x the database", lambda m, r: r is not None and r <= 1.2)
        step("CPU of an import, until indexed (the helper process included)")
        with_search = import_cpu(msgs, os.path.join(root, "cpu-search"), search=True)
        without = import_cpu(msgs, os.path.join(root, "cpu-nosearch"), search=False)
        rep.add("import + index, CPU (s)", with_search, cpu_raw + cpu_fts, "s",
                "(reference: raw import + FTS5)")
        rep.add("  the index's part (with search - without)", with_search - without, cpu_fts,
                "s", "(reference: FTS5)")
        raw.close()
        if not args.skip_memory:
            step("peak memory of an import from a generator (child process)")
            rss = peak_import_rss(n, convs, args.seed)
            rep.add("peak RSS importing from a generator", rss, None, "MB", "<= 300 MB at 1M",
                    lambda m, r: m <= 300)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return finish(rep, args, n, convs, corpus)


def finish(rep: Report, args: argparse.Namespace, n: int, convs: int, corpus: Corpus) -> int:
    met = [f for f in rep.figures if f.met is not None]
    print(f"\n{sum(bool(f.met) for f in met)} of {len(met)} goals met")
    if args.json:
        meta = {"messages": n, "conversations": convs, "seed": args.seed,
                "workload": corpus.source, "python": platform.python_version(),
                "cores": os.cpu_count()}
        Path(args.json).write_text(json.dumps({"meta": meta,
                                               "figures": [asdict(f) for f in rep.figures]},
                                              indent=1))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
