"""python -m benchmarks.rich [--messages N] [--conversations N]

Rich messages and conversation state, measured (reported, never asserted):

- the import of the messages (one run), a page of 20 of a
  conversation (with relations: a fifth of the messages quote another, 30% are thread replies,
  unless ``--no-threads``), and the conversation list's first 50 and first 20 (all, one
  chat type), on two stores: ``--messages`` messages in ``--conversations`` conversations
  (pages, reactions, threads) and ``--messages`` conversations of one message each (the list);
- with this version's features, the same list with 20 pinned conversations and 2,000 marked
  ones, the list filtered by a mark, `reactions(msg_id)` and `threads(conv_id)`.

Run it with an older imstore first on the path (``PYTHONPATH=<old checkout>``) to get the
"before" figures of the reads both versions have: the features it lacks are skipped. Times are
medians of repeated calls, in ms, on a store on disk in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import imstore
from imstore import ChatType, Message

from .__main__ import timings

START = 1_700_000_000_000


def median_ms(fn: Callable[[], Any], n: int = 200) -> float:
    for _ in range(5):  # warm the caches first
        fn()
    return statistics.median(timings(fn, n))


def messages(n: int, convs: int, threads: bool) -> Any:
    for i in range(n):
        conv = f"g{i % convs}"
        extra: dict[str, Any] = {}
        if threads and i % 10 >= 7:  # 30% are thread replies, 3 to each tenth message
            root = i - i % 10
            conv, extra["thread_id"] = f"g{root % convs}", f"m{root}"
        elif threads and i % 5 == 1 and i > convs:  # and a fifth quote an earlier message
            extra["reply_to"] = f"m{i - convs}"
        yield Message.text(conv, f"message {i} about lunch", chat_type=ChatType.GROUP_CHAT,
                           sender=f"u{i % 50}", msg_id=f"m{i}", timestamp=START + i * 1000,
                           **extra)


def report(name: str, ms: float) -> None:
    print(f"{name:<58} {ms:8.3f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--conversations", type=int, default=1_000)
    ap.add_argument("--no-threads", action="store_true",
                    help="the same messages as an older imstore stores (no thread replies)")
    args = ap.parse_args()
    rich = hasattr(imstore.MessageStore, "threads")
    print(f"imstore from {imstore.__file__} ({'with' if rich else 'without'} rich messages); "
          f"{args.messages:,} messages", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        with imstore.open(f"{tmp}/a", user_id="me") as s:
            t = time.perf_counter()
            s.import_messages(messages(args.messages, args.conversations,
                                       rich and not args.no_threads))
            report("import_messages, until it returns", (time.perf_counter() - t) * 1000)
            s.flush_index()
            big = f"g{args.conversations // 2}"
            report(f"page of 20 ({args.conversations:,} conversations)",
                   median_ms(lambda: s.messages(big, limit=20)))
            mid = s.messages(big, limit=40)[0].msg_id
            report("page of 20 before a message", median_ms(
                lambda: s.messages(big, start_msg_id=mid, limit=20)))
            if rich:
                target = f"m{(args.messages // 2) // 10 * 10}"
                for k in range(8):
                    for u in range(k + 1):
                        s.apply_reaction(target, f"r{k}", f"u{u}")
                report("reactions(msg_id), 8 keys, 36 reactions",
                       median_ms(lambda: s.reactions(target)))
                root_conv = s.get_message(target).conv_id  # its threads: a tenth of its messages
                report(f"threads({root_conv!r}, limit=20)",
                       median_ms(lambda: s.threads(root_conv)))
                report("thread_messages(root, limit=20)",
                       median_ms(lambda: s.thread_messages("m0")))
        with imstore.open(f"{tmp}/b", user_id="me") as s:
            n = args.messages
            s.import_messages(Message.text(f"p{i}", "hi", chat_type=ChatType.GROUP_CHAT,
                                           sender="u", msg_id=f"c{i}",
                                           timestamp=START + i * 1000) for i in range(n))
            s.flush_index()
            report(f"conversations(limit=50), {n:,} conversations",
                   median_ms(lambda: s.conversations(limit=50)))
            report("conversations(limit=20)", median_ms(lambda: s.conversations(limit=20)))
            report("conversations(chat_type=GROUP_CHAT, limit=20)", median_ms(
                lambda: s.conversations(chat_type=ChatType.GROUP_CHAT, limit=20)))
            if rich:
                for i in range(0, n, n // 20):
                    s.pin_conversation(f"p{i}", timestamp=START + i)
                for i in range(0, n, max(1, n // 2000)):
                    s.set_conversation_marks(f"p{i}", add="work")
                report("conversations(limit=50), 20 pinned, 2,000 marked",
                       median_ms(lambda: s.conversations(limit=50)))
                report("conversations(limit=20), 20 pinned, 2,000 marked",
                       median_ms(lambda: s.conversations(limit=20)))
                report("conversations(marks='work', limit=20)",
                       median_ms(lambda: s.conversations(marks="work", limit=20)))
                report("conversations(marks='absent', limit=20)",
                       median_ms(lambda: s.conversations(marks="absent", limit=20), 50))


if __name__ == "__main__":
    sys.exit(main())
