"""The ``imstore`` command: the demo, importing exports, reading, searching and checking a store.

Rules kept here:
- text output is for people (names next to ids, times in the local zone with the zone shown,
  ``--utc`` to switch), ``--json`` for scripts: one JSON document, or NDJSON (one object a line)
  for the commands that stream messages (``messages``, ``search``, ``export``);
- every failure is one line on stderr and exit status 2 -- bad input, a missing or foreign store,
  permissions, locks, encodings, a closed pipe -- never a traceback; Ctrl-C is exit 130 after a
  clean stop (an import keeps every batch written before it);
- a file the command writes (``export -o``) appears whole or not at all;
- the global options (``--store``, ``--json``, ``--utc``) go before or after the subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from types import FrameType
from typing import IO, Any, NoReturn

from . import __version__
from .codec import Limits
from .errors import ErrorCode, IMError
from .message import Conversation, Direction, Message, MessageType, SearchScope
from .store import IndexStatus, MessageStore

__all__ = ["build_parser", "main"]

DEFAULT_STORE = os.environ.get("IMSTORE_DIR", "imstore-data")
_STREAMS = ("messages", "search", "export")


class Progress:
    """Progress of long work on stderr: a tqdm bar (total, rate, time left) on a terminal, else a
    plain counter line every few seconds (none at all for work that ends sooner)."""

    EVERY = 2.0

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total = label, total or None
        self.done = 0
        self.bar: Any = None
        self.started = self.last = time.monotonic()
        self.printed = False
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:  # installed without the cli extra: the plain counter
                return
            self.bar = tqdm(total=self.total, desc=label, unit=" msg", unit_scale=True,
                            file=sys.stderr, dynamic_ncols=True, leave=False)

    def __call__(self, done: int) -> None:
        self.done = done
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        now = time.monotonic()
        if now - self.last >= self.EVERY:
            self.last = now
            self.printed = True
            of = f"/{self.total:,}" if self.total else ""
            rate = done / max(now - self.started, 1e-6)
            print(f"{self.label}: {done:,}{of} ({rate:,.0f}/s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------- the store


def stored_owner(path: str) -> str | None:
    """The owner of the store in ``path``, or None when there is none; creates nothing."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise IMError(ErrorCode.INVALID_PARAM, f"{path} is a file, not a store directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise IMError(ErrorCode.DATABASE_ERROR, f"permission denied: cannot read {path}")
    fn = getattr(MessageStore, "stored_owner", None)
    if fn is not None:
        owner: str | None = fn(path)
        return owner
    db = os.path.join(path, "imstore.db")
    if not os.path.isfile(db):
        return None
    if not os.access(db, os.R_OK):
        raise IMError(ErrorCode.DATABASE_ERROR, f"permission denied: cannot read {db}")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'user_id'").fetchone()
    except sqlite3.Error as exc:
        raise IMError(ErrorCode.DATABASE_ERROR, f"{db} is not an imstore database ({exc})") from exc
    finally:
        con.close()
    return str(row[0]) if row else None


def _writable(path: str) -> None:
    for p in (path, os.path.join(path, "imstore.db"), os.path.join(path, "search")):
        if os.path.exists(p) and not os.access(p, os.W_OK):
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"permission denied: cannot write {p} (a store needs write access, "
                          "even to be read)")


def _not_locked(path: str) -> None:
    """Wait a few seconds (``$IMSTORE_LOCK_TIMEOUT``, default 5) for another process's write to
    end, rather than the store's long wait, and say plainly when the store stays locked."""
    db = os.path.join(path, "imstore.db")
    if not os.path.isfile(db):
        return
    wait = float(os.environ.get("IMSTORE_LOCK_TIMEOUT", "5"))
    con = sqlite3.connect(db, timeout=wait, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"the store {path} is locked by another process (an import?); try again "
                          "when it is done") from exc
        if "readonly" in str(exc):
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"permission denied: cannot write {db} (read-only)") from exc
        raise IMError(ErrorCode.DATABASE_ERROR, f"{db}: {exc}") from exc
    finally:
        con.close()


def open_store(path: str, owner: str, limits: Limits | None = None) -> MessageStore:
    _writable(path)
    _not_locked(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path) and os.path.isdir(parent) and not os.access(parent, os.W_OK):
        raise IMError(ErrorCode.DATABASE_ERROR, f"permission denied: cannot create {path}")
    return MessageStore.open(path, user_id=owner, limits=limits)


def _open(args: argparse.Namespace) -> MessageStore:
    owner = stored_owner(args.store)
    if owner is None:
        raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                      f"{args.store} holds no store; import something first "
                      "(imstore import FILE --store DIR)")
    return open_store(args.store, owner)


# ------------------------------------------------------------------------------- output


def _zone_of(args: argparse.Namespace) -> Any:
    return UTC if getattr(args, "utc", False) else None


def when(ms: int | None, args: argparse.Namespace) -> str:
    """A time for people: local (or UTC) with the zone shown."""
    if ms is None:
        return "-"
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    dt = dt if _zone_of(args) is UTC else dt.astimezone()
    return dt.strftime("%Y-%m-%d %H:%M ") + (dt.tzname() or "")


def summary(msg: Message) -> str:
    """One line of a message for people."""
    from .text import content_text

    ext = msg.ext if isinstance(msg.ext, dict) else {}
    if ext.get("deleted") or getattr(msg, "recalled_at", None):
        return "[deleted]"
    text = content_text(msg.type, msg.body).replace("\n", " ")
    params = getattr(msg.body, "params", None)
    if msg.type == MessageType.CUSTOM and isinstance(params, dict) and params:
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if k != "action")
        text += f" ({shown[:80]}{'...' if len(shown) > 80 else ''})" if shown else ""
    label = "" if msg.type == MessageType.TEXT else f"[{msg.type.name.lower()}] "
    if ext.get("caption"):
        text += " -- " + str(ext["caption"]).replace("\n", " ")
    marks = "".join(f" [{m}]" for m, on in (("edited", ext.get("edited")),) if on)
    reply = "[reply] " if ext.get("reply_to") else ""
    return f"{reply}{label}{text}{marks}"


def who(msg: Message) -> str:
    ext = msg.ext if isinstance(msg.ext, dict) else {}
    if ext.get("system"):
        return "(system)"
    name = ext.get("sender_name")
    if msg.direction == Direction.SEND:
        return f"{name} (me)" if name else "me"
    return f"{name} ({msg.sender})" if name and name != msg.sender else str(msg.sender)


def title_of(conv: Conversation | None) -> str:
    if conv is None or not isinstance(conv.ext, dict):
        return ""
    return str(conv.ext.get("title") or "")


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=1, default=str))


def _emit(args: argparse.Namespace, data: Any, lines: Sequence[str]) -> None:
    if args.json:
        _print_json(data)
    else:
        for line in lines:
            print(line)


def _msg_json(m: Message) -> dict[str, Any]:
    from .importers.jsonl import to_dict

    return to_dict(m)


def _print_messages(args: argparse.Namespace, msgs: list[Message], titles: dict[str, str],
                    *, conv_column: bool) -> None:
    if args.json:
        for m in msgs:
            d = _msg_json(m)
            d["title"] = titles.get(m.conv_id, "")
            print(json.dumps(d, ensure_ascii=False, default=str))
        return
    if not msgs:
        print("(no messages)")
        return
    for m in msgs:
        conv = ""
        if conv_column:
            t = titles.get(m.conv_id)
            conv = f"  {m.conv_id}" + (f" ({t})" if t and t != m.conv_id else "")
        print(f"{m.msg_id}  {when(m.timestamp, args)}{conv}  {who(m)}: {summary(m)}")


def _titles(store: MessageStore, conv_ids: Sequence[str]) -> dict[str, str]:
    return {c: title_of(store.conversation(c)) for c in dict.fromkeys(conv_ids)}


# ------------------------------------------------------------------------------- arguments


def time_arg(value: str | None, option: str, args: argparse.Namespace, *,
             end_of_day: bool = False) -> int | None:
    """An option's time in ms: ms since the epoch, a date (with ``end_of_day``: the last ms of
    that day), or an ISO date-time; dates and times without a zone are local (UTC with --utc)."""
    if value is None:
        return None
    v = value.strip()
    if v.isdigit():
        return int(v)
    zone = _zone_of(args)
    try:
        if len(v) == 10:
            d = date.fromisoformat(v)
            start = datetime(d.year, d.month, d.day, tzinfo=zone)
            if zone is None:
                start = start.astimezone()
            if end_of_day:
                nxt = datetime.combine(d + timedelta(days=1), datetime.min.time(), tzinfo=zone)
                return int((nxt if zone else nxt.astimezone()).timestamp() * 1000) - 1
            return int(start.timestamp() * 1000)
        dt = datetime.fromisoformat(v)
    except ValueError as exc:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"{option} {value!r} is not a date: use YYYY-MM-DD, an ISO date-time "
                      "(2021-03-22T17:16) or milliseconds since the epoch") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone) if zone else dt.astimezone()
    return int(dt.timestamp() * 1000)


def _positive(what: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, not {value!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{what} must be at least 1")
        return n
    return parse


# ------------------------------------------------------------------------------- commands


class _Stop:
    """Ctrl-C during an import: the first asks for a clean stop after the current message (the
    batches written so far stay), a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Stop]:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, self.previous)


class _StopWaiting(Exception):
    pass


def _wait_for_index(store: MessageStore, stop: _Stop) -> bool:
    """After an import, show the search index catching up (it is built in the background);
    False when Ctrl-C ended the wait (the work stays queued for the next open)."""
    total = store.index_status().pending
    if not total:
        return True
    bar = Progress("indexing", total)

    def tell(status: IndexStatus) -> None:
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
    from .importers import detect_format, find_exports

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
    from .importers import ImportOptions, import_file, scan

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
    stop = _Stop()
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
                        store = open_store(args.store, owner, limits)
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
                    results[src] = {"error": _one_line(exc)}
                    continue
                from .importers import conversations

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
        _print_json(results)
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


def cmd_conversations(args: argparse.Namespace) -> int:
    with _open(args) as store:
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
    _emit(args, data, lines)
    return 0


def cmd_messages(args: argparse.Namespace) -> int:
    with _open(args) as store:
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
    _print_messages(args, msgs, {conv.conv_id: title_of(conv)}, conv_column=False)
    if not args.json and len(msgs) == args.limit:
        nxt = f"--after {msgs[-1].msg_id}" if args.after else f"--before {msgs[0].msg_id}"
        print(f"(more: {nxt})")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    types = [MessageType[t.upper()] for t in args.type] if args.type else None
    start = time_arg(args.since, "--since", args)
    end = time_arg(args.until, "--until", args, end_of_day=True)
    with _open(args) as store:
        msgs = _search(store, args.keyword, before=args.before, conv_id=args.conv,
                       sender=args.sender, types=types, start_time=start, end_time=end,
                       scope=SearchScope[args.scope.upper()], limit=args.limit)
        titles = _titles(store, [m.conv_id for m in msgs])
    _print_messages(args, msgs, titles, conv_column=True)
    if not args.json and len(msgs) == args.limit:
        print(f"(more: --before {msgs[0].msg_id})")
    return 0


def _search(store: MessageStore, keyword: str, *, before: str | None, limit: int,
            **filters: Any) -> list[Message]:
    """A page of search hits, the page older than ``before`` when given."""
    import inspect

    search: Callable[..., list[Message]] = store.search_messages
    if before is None:
        return search(keyword, limit=limit, **filters)
    if "start_msg_id" in inspect.signature(search).parameters:
        return search(keyword, limit=limit, start_msg_id=before, **filters)
    # A store without keyset paging in search: hits up to the anchor's time, cut at the anchor.
    anchor = store.get_message(before)
    if anchor is None:
        raise IMError(ErrorCode.INVALID_PARAM, f"--before: no message has the id {before!r}")
    end = anchor.timestamp if filters.get("end_time") is None else min(anchor.timestamp,
                                                                          filters["end_time"])
    filters["end_time"] = end
    hits = search(keyword, limit=min(400, limit + 50), **filters)
    ids = [m.msg_id for m in hits]
    if anchor.msg_id in ids:
        hits = hits[:ids.index(anchor.msg_id)]
    else:
        hits = [m for m in hits if m.timestamp < anchor.timestamp]
    return hits[-limit:]


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        stats: dict[str, Any] = {"owner": store.user_id, **store.stats()}
    _emit(args, stats, [f"{k:<16} {v:,}" if isinstance(v, int) else f"{k:<16} {v}"
                        for k, v in stats.items()])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .importers.jsonl import write_jsonl

    n = 0
    with _open(args) as store:
        if args.conv and store.conversation(args.conv) is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST, f"there is no conversation {args.conv!r}")
        convs = [args.conv] if args.conv else [c.conv_id for c in store.conversations()]
        with _output(args.output) as out:
            bar = Progress("exporting", sum(store.message_count(c) for c in convs))
            try:
                for conv in convs:
                    page = store.messages(conv, limit=400, direction=Direction.DOWN)
                    while page:
                        n += write_jsonl(page, out)
                        bar(n)
                        page = store.messages(conv, start_msg_id=page[-1].msg_id, limit=400,
                                              direction=Direction.DOWN)
            finally:
                bar.close()
    if args.output and args.output != "-":
        if args.json:
            _print_json({"exported": n, "file": args.output})
        else:
            print(f"{n} messages written to {args.output}")
    return 0


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """Standard output, or a file that appears whole (written beside it, then renamed)."""
    if not path or path == "-":
        yield sys.stdout
        return
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".part",
                                   dir=folder)
    except FileNotFoundError as exc:
        raise IMError(ErrorCode.FILE_NOT_FOUND, f"cannot write {path}: no folder {folder}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def cmd_reindex(args: argparse.Namespace) -> int:
    with _open(args) as store:
        bar = Progress("indexing", store.stats()["messages"])
        try:
            n = store.rebuild_search_index(progress=bar)
        finally:
            bar.close()
    _emit(args, {"indexed": n}, [f"{n} messages indexed"])
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _open(args) as store:
        report = store.verify()
    lines = [f"{k:<24} {v}" for k, v in report.repaired.items()]
    lines.append("all consistent" if report.ok else f"repaired {report.total} item(s)")
    _emit(args, {"ok": report.ok, "repaired": report.repaired}, lines)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(verbose=not args.quiet, as_json=args.json, matrix_url=args.matrix)


# ------------------------------------------------------------------------------- the parser


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"imstore: error: {message} (see {self.prog} --help)\n")


def _globals(p: argparse.ArgumentParser, *, sub: bool) -> None:
    """The options every command takes, before or after its name (after wins)."""
    d = argparse.SUPPRESS if sub else None
    p.add_argument("--store", metavar="DIR", default=d if sub else DEFAULT_STORE,
                   help=f"the store's directory (default: $IMSTORE_DIR or {DEFAULT_STORE})")
    p.add_argument("--json", action="store_true", default=d if sub else False,
                   help="print JSON for scripts (NDJSON, one object a line, for "
                        + ", ".join(_STREAMS) + ")")
    p.add_argument("--utc", action="store_true", default=d if sub else False,
                   help="show and read times in UTC instead of this machine's zone")
    p.add_argument("--version", action="version", version=f"imstore {__version__}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="imstore", description="The local message store of an IM client: import "
                "chat exports, read, search and check them.")
    _globals(p, sub=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        _globals(sp, sub=True)
        return sp

    d = add("demo", cmd_demo, "two users on an embedded server, showing every capability")
    d.add_argument("--quiet", action="store_true", help="print only the summary")
    d.add_argument("--matrix", metavar="URL", help="run the walkthrough against a Matrix homeserver "
                   "instead (two new users are registered; needs imstore[matrix])")

    sp = add("import", cmd_import, "import chat exports (Telegram JSON, WhatsApp .txt/.zip, Slack "
             ".zip, imstore JSON lines): files, export folders or folders of exports")
    sp.add_argument("files", nargs="+", metavar="PATH")
    sp.add_argument("--user", metavar="ID", help="the owner of a new store (default: the person "
                    "the export says made it); on an existing store, read as --me")
    sp.add_argument("--me", action="append", metavar="NAME",
                    help="your name or id as the export writes it (repeatable)")
    sp.add_argument("--format", default="auto",
                    choices=["auto", "telegram", "whatsapp", "slack", "jsonl"],
                    help="the export's format (default: told from the content)")
    sp.add_argument("--tz", metavar="ZONE", help="the zone of times an export writes as local "
                    "(WhatsApp, old Telegram), e.g. Europe/Berlin (default: this machine's)")
    sp.add_argument("--date-order", choices=["dmy", "mdy", "ymd", "DMY", "MDY", "YMD"],
                    help="WhatsApp dates: day or month first, when the file cannot tell")
    sp.add_argument("--encoding", metavar="NAME", help="the export's text encoding (default: "
                    "UTF-8 or UTF-16, told from the file)")
    sp.add_argument("--max-payload", type=_positive("--max-payload"), metavar="BYTES",
                    help="the message size limit (body plus ext, default 3072) for this store")
    sp.add_argument("--keep-going", action="store_true",
                    help="go on with the next export when one fails")

    add("conversations", cmd_conversations,
        "list conversations, newest first, with titles, message and unread counts")

    sp = add("messages", cmd_messages, "show a conversation's messages (with their ids), newest "
             "page first")
    sp.add_argument("conv", metavar="CONV")
    sp.add_argument("--limit", type=int, default=20, help="how many (1-400, default 20)")
    sp.add_argument("--before", metavar="MSG_ID", help="the page before this message")
    sp.add_argument("--after", metavar="MSG_ID", help="the page after this message")

    sp = add("search", cmd_search, "search messages by keyword (any language)")
    sp.add_argument("keyword", metavar="KEYWORD")
    sp.add_argument("--conv", help="only this conversation")
    sp.add_argument("--type", action="append", help="only this message type (repeatable)",
                    choices=[t.name.lower() for t in MessageType])
    sp.add_argument("--sender", help="only this sender (an id as `messages` shows it)")
    sp.add_argument("--scope", default="content", choices=["content", "ext", "all"],
                    help="search the content (default), the ext values, or both")
    sp.add_argument("--since", metavar="WHEN", help="from this date/time (YYYY-MM-DD, ISO, or ms)")
    sp.add_argument("--until", metavar="WHEN",
                    help="up to this date/time; a date includes that whole day")
    sp.add_argument("--before", metavar="MSG_ID", help="the page of hits older than this one")
    sp.add_argument("--limit", type=int, default=20, help="how many (1-400, default 20)")

    add("stats", cmd_stats, "the owner and counts of conversations, messages, unread and pending "
        "index work")

    sp = add("export", cmd_export, "export messages as imstore JSON lines (lossless)")
    sp.add_argument("conv", nargs="?", metavar="CONV", help="only this conversation")
    sp.add_argument("--format", default="jsonl", choices=["jsonl"])
    sp.add_argument("--output", "-o", metavar="FILE",
                    help="file to write, whole or not at all (default: standard output)")

    add("reindex", cmd_reindex, "rebuild the keyword index from the database")
    add("verify", cmd_verify, "recount unread counters and derived state, repair drift")
    return p


def _one_line(exc: IMError) -> str:
    return f"{int(exc.code)} {exc.code.name}: " + " ".join(str(exc.description).split())


def _fail(message: str) -> int:
    print("imstore: error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 fine, 2 an error, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        return int(args.fn(args))
    except IMError as exc:
        print(f"imstore: error {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imstore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop writing, and keep Python's exit flush quiet.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return _fail("the output was closed before everything was written (broken pipe)")
    except PermissionError as exc:
        return _fail(f"permission denied: {exc.filename or exc}")
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}")
    except Exception as exc:  # the promise: one line, never a traceback
        if os.environ.get("IMSTORE_DEBUG"):
            raise
        text = str(exc)
        if "locked" in text or "busy" in text:
            return _fail(f"the store {args.store} is locked by another process ({text}); try "
                         "again when it is done")
        if "readonly" in text or "read-only" in text:
            return _fail(f"permission denied: the store {args.store} is read-only ({text})")
        return _fail(f"{type(exc).__name__}: {text} (set IMSTORE_DEBUG=1 for the details)")


if __name__ == "__main__":
    sys.exit(main())
