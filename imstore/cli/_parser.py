"""The command line: the arguments of every command, and `main`, which keeps the failure rule.

Rules kept here:
- every failure is one line on stderr and exit status 2 (usage errors included), never a
  traceback; Ctrl-C is exit 130 at any moment: while the command runs (`main`), while the process
  exits (`command`), and while Python loads imstore (the console script's ``_imstore_cli``);
- the global options (``--store``, ``--json``, ``--utc``) go before or after the subcommand
  (after wins).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import NoReturn

from .. import __version__
from ..errors import IMError
from ..message import MessageType
from ._commands import (
    cmd_conversations,
    cmd_demo,
    cmd_export,
    cmd_messages,
    cmd_reindex,
    cmd_search,
    cmd_stats,
    cmd_verify,
)
from ._crypt_commands import add_crypt_commands
from ._importing import cmd_import, one_line
from ._keys import add_key_options, keys_from
from ._preflight import DEFAULT_STORE

__all__ = ["build_parser", "command", "main"]

_STREAMS = ("messages", "search", "export")


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
    add_key_options(p, sub=sub)


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
    sp.add_argument("keyword", metavar="KEYWORD", nargs="+",
                    help="1-5 keywords; a message needs every one (each keyword's own words too)")
    sp.add_argument("--any", action="store_true",
                    help="a message needs only one of the keywords (quote a phrase to keep it one)")
    sp.add_argument("--counts", action="store_true",
                    help="how many hits per conversation, newest first, instead of the hits")
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
    add_crypt_commands(add)
    return p


def _fail(message: str) -> int:
    print("imstore: error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 fine, 2 an error, 130 interrupted)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:  # at any moment, a handler's own output included
        print("imstore: interrupted", file=sys.stderr)
        return 130


def command() -> int:
    """`main` as the whole life of a process (the console script, ``python -m imstore.cli``):
    Ctrl-C is a KeyboardInterrupt while the command runs, and ends the process at once, quietly,
    while it exits (threads, exit hooks)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return main()
    finally:
        signal.signal(signal.SIGINT, _interrupted)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    sys.stderr.write("imstore: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        with keys_from(args):
            return int(args.fn(args))
    except IMError as exc:
        print(f"imstore: error {one_line(exc)}", file=sys.stderr)
        return 2
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


