"""The commands that read and check a store: conversations, messages, search, stats, export,
reindex, verify, and the demo.

Rules kept here: each command opens the store through `_preflight`, prints through `_output`
(text for people, ``--json`` for scripts) and returns the exit status; failures are IMErrors
that `main` prints as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import ErrorCode, IMError
from ..message import Direction, MessageType, SearchScope
from ._output import (
    emit,
    output_file,
    print_json,
    print_messages,
    summary,
    time_arg,
    title_of,
    titles,
    when,
    who,
)
from ._preflight import require_store
from ._progress import Progress

__all__ = ["cmd_conversations", "cmd_demo", "cmd_export", "cmd_messages", "cmd_reindex",
           "cmd_search", "cmd_stats", "cmd_verify"]


def cmd_conversations(args: argparse.Namespace) -> int:
    with require_store(args) as store:
        convs = store.conversations()
        counts = {c.conv_id: store.message_count(c.conv_id) for c in convs}
    data = [{"conv_id": c.conv_id, "title": title_of(c), "chat_type": c.chat_type.name,
             "unread": c.unread_count, "messages": counts[c.conv_id],
             "last_activity": c.last_activity,
             "last_message": summary(c.last_message) if c.last_message else None}
            for c in convs]
    lines = [f"{c.conv_id}  {title_of(c) or '-'}  {c.chat_type.name}  {counts[c.conv_id]} "
             f"messages, {c.unread_count} unread  {when(c.last_activity, args)}  "
             f"{summary(c.last_message) if c.last_message else ''}"[:200]
             for c in convs] or ["(no conversations)"]
    emit(args, data, lines)
    return 0


def cmd_messages(args: argparse.Namespace) -> int:
    with require_store(args) as store:
        conv = store.conversation(args.conv)
        if conv is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no conversation {args.conv!r}; `imstore conversations` "
                          "lists them")
        if args.before and args.after:
            raise IMError(ErrorCode.INVALID_PARAM, "use --before or --after, not both")
        anchor = args.before or args.after
        msgs = store.messages(args.conv, start_msg_id=anchor, limit=args.limit,
                              direction=Direction.DOWN if args.after else Direction.UP)
    if not args.json:
        t = title_of(conv)
        print(f"{conv.conv_id}" + (f" ({t})" if t else "") + f", {conv.chat_type.name}")
    print_messages(args, msgs, {conv.conv_id: title_of(conv)}, conv_column=False)
    if not args.json and len(msgs) == args.limit:
        nxt = f"--after {msgs[-1].msg_id}" if args.after else f"--before {msgs[0].msg_id}"
        print(f"(more: {nxt})")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    types = [MessageType[t.upper()] for t in args.type] if args.type else None
    start = time_arg(args.since, "--since", args)
    end = time_arg(args.until, "--until", args, end_of_day=True)
    keyword = args.keyword[0] if len(args.keyword) == 1 else args.keyword
    match = "any" if args.any else "all"
    if args.counts:
        if args.before:
            raise IMError(ErrorCode.INVALID_PARAM, "--counts counts every hit: leave out --before")
        with require_store(args) as store:
            hits = [h for h in store.search_counts(
                keyword, match=match, sender=args.sender, types=types, start_time=start,
                end_time=end, scope=SearchScope[args.scope.upper()]) if args.conv in (None, h.conv_id)]
            names = titles(store, [h.conv_id for h in hits])
        _print_counts(args, hits, names)
        return 0
    with require_store(args) as store:
        msgs = store.search_messages(keyword, match=match, conv_id=args.conv, sender=args.sender,
                                     types=types, start_time=start, end_time=end,
                                     scope=SearchScope[args.scope.upper()], limit=args.limit,
                                     start_msg_id=args.before)
        names = titles(store, [m.conv_id for m in msgs])
    print_messages(args, msgs, names, conv_column=True)
    if not args.json and len(msgs) == args.limit:
        print(f"(more: --before {msgs[0].msg_id})")
    return 0


def _print_counts(args: argparse.Namespace, hits: list[Any], names: dict[str, str]) -> None:
    """`search --counts`: NDJSON, one object a conversation, or a line each for people."""
    if args.json:
        from ..importers.jsonl import to_dict

        for h in hits:
            print(json.dumps({"conv_id": h.conv_id, "title": names.get(h.conv_id, ""),
                              "count": h.count, "capped": h.capped, "newest": to_dict(h.newest)},
                             ensure_ascii=False, default=str))
        return
    if not hits:
        print("(no messages)")
        return
    for h in hits:
        t = names.get(h.conv_id)
        conv = h.conv_id + (f" ({t})" if t and t != h.conv_id else "")
        print(f"{conv}  {h.count:,}{'+' if h.capped else ''} hit{'' if h.count == 1 else 's'}, "
              f"newest {when(h.newest.timestamp, args)}  {who(h.newest)}: {summary(h.newest)}")
    if hits[0].capped:
        print("(counting stopped at 10,000 hits: the counts are lower bounds)")


def cmd_stats(args: argparse.Namespace) -> int:
    with require_store(args) as store:
        stats: dict[str, Any] = {"owner": store.user_id, **store.stats()}
    emit(args, stats, [f"{k:<16} {v:,}" if isinstance(v, int) else f"{k:<16} {v}"
                        for k, v in stats.items()])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..importers.jsonl import export_store

    _outside_the_store(args.output, args.store)
    with require_store(args) as store:
        if args.conv and store.conversation(args.conv) is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST, f"there is no conversation {args.conv!r}")
        convs = [args.conv] if args.conv else [c.conv_id for c in store.conversations()]
        with output_file(args.output) as out:
            bar = Progress("exporting", sum(store.message_count(c) for c in convs))
            try:
                res = export_store(store, out, convs, progress=bar)
            finally:
                bar.close()
    left_out = (f"; left out {res.undecodable} message(s) whose stored body cannot be decoded "
                "(`imstore verify` counts them)") if res.undecodable else ""
    if args.output and args.output != "-":
        if args.json:
            print_json({"exported": res.written, "undecodable": res.undecodable,
                        "file": args.output})
        else:
            print(f"{res.written} messages written to {args.output}{left_out}")
    elif left_out:
        print(f"imstore: {res.written} messages written{left_out}", file=sys.stderr)
    return 0


def _outside_the_store(output: str | None, store: str) -> None:
    """An export written into the store's folder could replace its database: refused."""
    if not output or output == "-":
        return
    target, folder = os.path.realpath(output), os.path.realpath(store)
    if os.path.commonpath([target, folder]) == folder:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"--output {output} is inside the store {store}; write the export "
                      "somewhere else")


def cmd_reindex(args: argparse.Namespace) -> int:
    with require_store(args) as store:
        bar = Progress("indexing", store.stats()["messages"])
        try:
            n = store.rebuild_search_index(progress=bar)
        finally:
            bar.close()
    emit(args, {"indexed": n}, [f"{n} messages indexed"])
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with require_store(args) as store:
        report = store.verify()
    lines = [f"{k:<24} {v}" for k, v in report.repaired.items()]
    for what, ids in (("undecodable messages", report.undecodable),
                      ("unreadable conversations", report.unreadable_conversations)):
        if ids:
            lines.append(f"{what:<24} {len(ids)}: " + ", ".join(ids[:_SHOWN])
                         + (f" (and {len(ids) - _SHOWN} more; --json lists all)"
                            if len(ids) > _SHOWN else ""))
    lines.append("all consistent" if report.ok else
                 f"repaired {report.total} item(s)" if not (report.undecodable or
                                                          report.unreadable_conversations)
                 else f"repaired {report.total} item(s); what cannot be read is listed above "
                      "(kept as it is, never guessed at)")
    emit(args, {"ok": report.ok, "repaired": report.repaired,
                "undecodable": report.undecodable,
                "unreadable_conversations": report.unreadable_conversations,
                "pending_receipts": report.pending_receipts}, lines)
    return 0


_SHOWN = 10  # ids `verify` prints of each kind of unreadable row


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(verbose=not args.quiet, as_json=args.json, matrix_url=args.matrix)


