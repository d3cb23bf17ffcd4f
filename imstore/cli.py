"""The ``imstore`` command: the demo, importing exports, reading, searching and checking a store.

Text output is for people, ``--json`` for scripts. Long work draws a progress bar on a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import IMError
from .message import Message, MessageType
from .store import MessageStore

__all__ = ["main"]

DEFAULT_STORE = os.environ.get("IMSTORE_DIR", "imstore-data")


class Progress:
    """A one-line progress bar on stderr (only on a terminal)."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total = label, total
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()

    def __call__(self, done: int) -> None:
        if not self.tty:
            return
        rate = done / max(time.monotonic() - self.start, 1e-6)
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {done}/{self.total} ({rate:,.0f}/s)")
        else:
            sys.stderr.write(f"\r{self.label} {done:,} ({rate:,.0f}/s)")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _owner(path: str) -> str | None:
    db = os.path.join(path, "imstore.db")
    if not os.path.exists(db):
        return None
    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'user_id'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return row[0] if row else None


def _open(args: argparse.Namespace, create: bool = False) -> MessageStore:
    user = getattr(args, "user", None) or _owner(args.store)
    if user is None:
        if create:
            raise IMError(110, f"{args.store} holds no store yet: pass --user ID to create one")
        raise IMError(1400, f"{args.store} holds no store; import something first "
                            "(imstore import FILE --store DIR --user ID)")
    return MessageStore.open(args.store, user_id=user)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def summary(msg: Message) -> str:
    """One line of a message for people."""
    from .text import content_text

    b = msg.body
    text = content_text(msg.type, b).replace("\n", " ")
    label = {MessageType.TEXT: ""}.get(msg.type, f"[{msg.type.name.lower()}] ")
    return f"{label}{text}"


def _emit(args: argparse.Namespace, data: Any, lines: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=1, default=str))
    else:
        for line in lines:
            print(line)


def _msg_json(m: Message) -> dict[str, Any]:
    from .importers.jsonl import to_dict

    return to_dict(m)


def cmd_import(args: argparse.Namespace) -> int:
    from .importers import import_file

    results: dict[str, dict[str, Any]] = {}
    with _open(args, create=True) as store:
        for path in args.files:
            bar = Progress(f"importing {os.path.basename(path)}")
            res = import_file(store, path, fmt=args.format, progress=bar)
            bar.close()
            results[path] = {"imported": res.imported, "skipped": res.skipped,
                             "duplicates": res.duplicates, "reasons": res.reasons}
    lines = []
    for path, r in results.items():
        lines.append(f"{path}: {r['imported']} imported, {r['duplicates']} already there, "
                     f"{r['skipped']} skipped")
        lines += [f"  skipped {n}: {why}" for why, n in r["reasons"].items()]
    _emit(args, results, lines)
    return 0


def cmd_conversations(args: argparse.Namespace) -> int:
    with _open(args) as store:
        convs = store.conversations()
    data = [{"conv_id": c.conv_id, "chat_type": c.chat_type.name, "unread": c.unread_count,
             "last_activity": c.last_activity,
             "last_message": summary(c.last_message) if c.last_message else None} for c in convs]
    lines = [f"{c.conv_id:<24} {c.chat_type.name:<10} unread {c.unread_count:<4} "
             f"{_when(c.last_activity)}  {summary(c.last_message) if c.last_message else ''}"[:160]
             for c in convs] or ["(no conversations)"]
    _emit(args, data, lines)
    return 0


def _print_messages(args: argparse.Namespace, msgs: list[Message]) -> None:
    lines = [f"{_when(m.timestamp)}  {m.sender}: {summary(m)}" for m in msgs] or ["(no messages)"]
    _emit(args, [_msg_json(m) for m in msgs], lines)


def cmd_messages(args: argparse.Namespace) -> int:
    with _open(args) as store:
        msgs = store.messages(args.conv, start_msg_id=args.before, limit=args.limit)
    _print_messages(args, msgs)
    return 0


def _time_arg(value: str | None) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def cmd_search(args: argparse.Namespace) -> int:
    types = [MessageType[t.upper()] for t in args.type] if args.type else None
    with _open(args) as store:
        msgs = store.search_messages(args.keyword, conv_id=args.conv, sender=args.sender,
                                     types=types, start_time=_time_arg(args.since),
                                     end_time=_time_arg(args.until), limit=args.limit)
    _print_messages(args, msgs)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        stats = store.stats()
    _emit(args, stats, [f"{k:<16} {v:,}" for k, v in stats.items()])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .importers.jsonl import write_jsonl

    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    n = 0
    try:
        with _open(args) as store:
            convs = [args.conv] if args.conv else [c.conv_id for c in store.conversations()]
            bar = Progress("exporting")
            for conv in convs:
                page = store.messages(conv, limit=400, direction=_down())
                while page:
                    n += write_jsonl(page, out)
                    bar(n)
                    page = store.messages(conv, start_msg_id=page[-1].msg_id, limit=400,
                                          direction=_down())
            bar.close()
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        print(json.dumps({"exported": n}) if args.json else f"{n} messages written to {args.output}")
    return 0


def _down() -> Any:
    from .message import Direction

    return Direction.DOWN


def cmd_reindex(args: argparse.Namespace) -> int:
    with _open(args) as store:
        bar = Progress("indexing")
        n = store.rebuild_search_index(progress=bar)
        bar.close()
    _emit(args, {"indexed": n}, [f"{n} messages indexed"])
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _open(args) as store:
        report = store.verify()
    lines = [f"{k:<24} {v}" for k, v in report.repaired.items()]
    lines.append("all consistent" if report.ok else f"repaired {report.total} item(s)")
    _emit(args, report.repaired, lines)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(verbose=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imstore", description="The local message store of an IM "
                                "client: import chat exports, read, search and check them.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str,
            store: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        sp.add_argument("--json", action="store_true", help="print JSON for scripts")
        if store:
            sp.add_argument("--store", default=DEFAULT_STORE,
                            help=f"the store's directory (default: $IMSTORE_DIR or {DEFAULT_STORE})")
        return sp

    d = add("demo", cmd_demo, "two users on an embedded server, showing every capability",
            store=False)
    d.add_argument("--quiet", action="store_true", help="print only the summary")

    sp = add("import", cmd_import, "import chat exports (Telegram JSON, WhatsApp .txt, Slack .zip, "
             "imstore JSON lines)")
    sp.add_argument("files", nargs="+", metavar="FILE")
    sp.add_argument("--user", help="the store owner's user id (needed to create a store)")
    sp.add_argument("--format", default="auto",
                    choices=["auto", "telegram", "whatsapp", "slack", "jsonl"])

    add("conversations", cmd_conversations, "list conversations, newest first, with unread counts")

    sp = add("messages", cmd_messages, "show a conversation's messages, newest page")
    sp.add_argument("conv", metavar="CONV")
    sp.add_argument("--limit", type=int, default=20, help="how many (1-400)")
    sp.add_argument("--before", metavar="MSG_ID", help="the page before this message")

    sp = add("search", cmd_search, "search messages by keyword (any language)")
    sp.add_argument("keyword", metavar="KEYWORD")
    sp.add_argument("--conv", help="only this conversation")
    sp.add_argument("--type", action="append", help="only this message type (repeatable)",
                    choices=[t.name.lower() for t in MessageType])
    sp.add_argument("--sender", help="only this sender")
    sp.add_argument("--since", help="ISO date/time or ms since the epoch")
    sp.add_argument("--until", help="ISO date/time or ms since the epoch")
    sp.add_argument("--limit", type=int, default=20, help="how many (1-400)")

    add("stats", cmd_stats, "counts of conversations, messages, unread and pending index work")

    sp = add("export", cmd_export, "export messages as imstore JSON lines (lossless)")
    sp.add_argument("conv", nargs="?", metavar="CONV", help="only this conversation")
    sp.add_argument("--format", default="jsonl", choices=["jsonl"])
    sp.add_argument("--output", "-o", help="file to write (default: standard output)")

    add("reindex", cmd_reindex, "rebuild the keyword index from the database")
    add("verify", cmd_verify, "recount unread counters and derived state, repair drift")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except IMError as exc:
        print(f"imstore: error {int(exc.code)} {exc.code.name}: {exc.description}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
