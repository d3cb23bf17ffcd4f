"""``imstore import``: chat exports into a store, with a bar, a clean Ctrl-C and a summary.

Rules kept here:
- the store is created on the first export that says (or is told, ``--user``) who its owner is;
  on an existing store, ``--user`` naming someone else is read as ``--me``;
- each export is one `import_file` call; with ``--keep-going`` a failed one is reported and the
  next goes on, else the first failure ends the command (what was imported stays);
- after the import, the command waits for the search index with a bar of documents indexed
  (the store indexes in commits of about a twentieth of the import, `_progress_policy`); Ctrl-C
  leaves that work queued for the next open.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..codec import Limits
from ..errors import ErrorCode, IMError
from ..store import IndexPolicy, IndexStatus, MessageStore
from ._output import print_json
from ._preflight import open_store, stored_owner
from ._progress import Progress, Stop

__all__ = ["cmd_import", "one_line"]


def one_line(exc: IMError) -> str:
    """An IMError as the one line the CLI prints."""
    return f"{int(exc.code)} {exc.code.name}: " + " ".join(str(exc.description).split())


class _StopWaiting(Exception):
    pass


def _progress_policy(total: int) -> IndexPolicy:
    """Index commits of about a twentieth of the import (5,000 to the default 50,000
    entries): the outbox then empties in steps the "indexing" bar can show (one commit of a
    whole backlog would keep it at 0 % until the end), at no measurable cost."""
    default = IndexPolicy()
    return dataclasses.replace(default, batch=max(5_000, min(default.batch, total // 20)))


def _wait_for_index(store: MessageStore, stop: Stop) -> bool:
    """After an import, show the search index catching up (it is built in the background);
    False when Ctrl-C ended the wait (the work stays queued for the next open)."""
    total = store.index_status().pending
    if not total:
        return True
    bar = Progress("indexing", total)

    def tell(status: IndexStatus) -> None:
        bar.estimate(status.seconds_left)
        bar(max(total - status.pending, 0))
        if stop.requested:
            raise _StopWaiting

    try:
        store.flush_index(progress=tell)
        return True
    except _StopWaiting:
        return False
    finally:
        bar.close()


def _sources(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """The exports named on the command line: files, export folders, folders of exports."""
    from ..importers import detect_format, find_exports

    found: list[str] = []
    ignored: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            try:
                detect_format(p)
            except IMError:
                f, i = find_exports(p)
            else:
                f, i = [p], []
            if not f:
                raise IMError(ErrorCode.FILE_NOT_FOUND, f"{p}: no chat export in this folder")
            found += f
            ignored += i
            continue
        found.append(p)
    return found, ignored


def cmd_import(args: argparse.Namespace) -> int:
    from ..importers import ImportOptions, import_file, scan

    if args.date_order is not None:
        args.date_order = args.date_order.lower()
    stored = stored_owner(args.store)
    me = tuple(args.me or ())
    notes: list[str] = []
    if stored is not None and args.user and args.user != stored:
        me += (args.user,)
        notes.append(f"the store belongs to {stored}; --user {args.user!r} is read as your name in "
                     "these exports (--me)")
    limits = Limits(max_payload_bytes=args.max_payload) if args.max_payload else None
    sources, ignored = _sources(args.files)
    results: dict[str, dict[str, Any]] = {}
    store: MessageStore | None = None
    failed = 0
    stop = Stop()
    try:
        with stop.installed():
            for src in sources:
                if stop.requested:
                    break
                opts = ImportOptions(me=me, owner=stored or args.user or "", tz=args.tz,
                                     date_order=args.date_order, encoding=args.encoding)
                try:
                    info = scan(src, opts, args.format)
                    if store is None:
                        owner = stored or args.user or info.owner
                        if owner is None:
                            raise IMError(ErrorCode.INVALID_PARAM,
                                          f"{src}: the export does not say who you are; pass "
                                          "--user ID to create the store (and --me NAME, your "
                                          "name in the export)")
                        store = open_store(args.store, owner, limits,
                                           index_policy=_progress_policy(info.total))
                        if stored is None:
                            notes.append(f"created the store {args.store} for {owner}")
                    bar = Progress(f"importing {os.path.basename(src.rstrip('/'))}", info.total)
                    try:
                        res = import_file(store, src, options=opts, info=info, progress=bar,
                                          stop=stop)
                    finally:
                        bar.close()
                except IMError as exc:
                    if not args.keep_going:
                        raise
                    failed += 1
                    results[src] = {"error": one_line(exc)}
                    continue
                from ..importers import conversations

                results[src] = {
                    "format": info.format, "imported": res.imported, "skipped": res.skipped,
                    "duplicates": res.duplicates, "reasons": res.reasons, "notes": info.notes,
                    "conversations": {c: t for c, (_ct, t) in conversations(src, info).items()},
                }
                if stop.requested:
                    results[src]["interrupted"] = True
            if store is not None and not stop.requested and not _wait_for_index(store, stop):
                notes.append("indexing was interrupted: the search index catches up the next "
                             "time the store is opened (searches are exact meanwhile)")
    finally:
        if store is not None:
            store.close()
    if args.json:
        print_json(results)
    else:
        for line in notes:
            print(line)
        for path, r in results.items():
            if "error" in r:
                print(f"{path}: FAILED: {r['error']}")
                continue
            print(f"{path} ({r['format']}): {r['imported']} imported, {r['duplicates']} already "
                  f"there, {r['skipped']} skipped" + (" -- interrupted" if r.get("interrupted")
                                                      else ""))
            print(*(f"  {n}" for n in r["notes"]), sep="\n") if r["notes"] else None
            for why, n in r["reasons"].items():
                print(f"  skipped {n}: {why}")
        if ignored:
            print(f"left out {len(ignored)} file(s) that are not chat exports "
                  f"(e.g. {ignored[0]})")
    if stop.requested:
        print("imstore: interrupted: the messages imported before the stop are kept",
              file=sys.stderr)
        return 130
    if failed:
        print(f"imstore: error: {failed} of {len(sources)} export(s) failed (see above)",
              file=sys.stderr)
        return 2
    return 0


