"""Importers for the chat exports people have: Telegram Desktop JSON, WhatsApp text (``.txt``,
``.zip`` or its folder), Slack (``.zip`` or its folder), and imstore's own JSON lines.

Rules kept here:
- the format is told by the content (zip members, JSON keys, WhatsApp's headers), never by the
  file name;
- an export is read twice: `scan` checks it whole and learns what the import needs (chat
  headers, the date order, who "me" is, how many entries) before anything is written -- a
  malformed file raises one `IMError` naming the file and the place; `read` then streams
  `Message` values in bounded memory;
- message ids are derived from the export's own ids or, where it has none, from the content, so
  importing the same export (or a later export of the same chat) again adds only what is new;
- nothing is dropped silently: what has no imstore field is kept in ``ext``; what cannot be
  imported at all is counted with its reason (`ImportResult.reasons`);
- conversation titles go to the conversation's ``title``, sender display names to the
  message's ``ext["sender_name"]``;
- replies, thread replies and formatted text are message fields; reactions and pins need their
  message stored, so a reader queues them in ``info.state["relations"]`` (as
  `jsonl.restore_relations` takes them) and `save_titles` applies them after the messages;
- the library API (`scan`, `read`, `import_file`) raises only `IMError`: a malformed export is
  INVALID_PARAM naming the file, an unreadable one FILE_INVALID; one malformed entry is skipped
  with its reason.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from ..checks import check_path
from ..errors import ErrorCode, IMError
from ..message import ChatType, ImportResult, Message
from ._archive import MAX_TEXT_BYTES, open_member
from ._common import (
    MALFORMED,
    ExportInfo,
    ImportOptions,
    Skipped,
    decode_lines,
    detect_encoding,
)

__all__ = ["FORMATS", "ExportInfo", "ImportOptions", "conversations", "detect_format",
           "find_exports", "import_file", "read", "read_file", "scan"]

FORMATS = ("telegram", "whatsapp", "slack", "jsonl")
_SLACK_LISTINGS = ("channels.json", "groups.json", "mpims.json", "dms.json")


def _cannot_tell(path: str) -> IMError:
    return IMError(ErrorCode.INVALID_PARAM,
                   f"{path}: not a chat export this version reads (Telegram JSON, WhatsApp "
                   f".txt/.zip, Slack .zip, imstore JSON lines); pass --format if it is one of "
                   f"{', '.join(FORMATS)}")


def detect_format(path: str) -> str:
    """Tell an export's format from its content. Raises `IMError` when it is none of them."""
    from .slack import is_slack_dir
    from .whatsapp import HEADER, chat_member

    path = _path_arg(path)
    if not os.path.exists(path):
        raise IMError(ErrorCode.FILE_NOT_FOUND, f"{path}: no such file or folder")
    if os.path.isdir(path):
        if is_slack_dir(path):
            return "slack"
        if os.path.isfile(os.path.join(path, "_chat.txt")):
            return "whatsapp"
        raise _cannot_tell(path)
    with open(path, "rb") as f:
        head = f.read(8192)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                if names & set(_SLACK_LISTINGS):
                    return "slack"
                member = chat_member(z)
                if member is not None:
                    with open_member(z, member, path, MAX_TEXT_BYTES) as raw:
                        first = next(iter(decode_lines(raw, path, None)), "")
                    if HEADER.match(first.lstrip("\ufeff")):
                        return "whatsapp"
        except (zipfile.BadZipFile, OSError) as exc:
            raise IMError(ErrorCode.INVALID_PARAM, f"{path}: a damaged zip file ({exc})") from exc
        raise _cannot_tell(path)
    enc = detect_encoding(head[:4])
    text = head.decode(enc, errors="ignore").lstrip("\ufeff \t\r\n")
    if text.startswith("{"):
        first = text.split("\n", 1)[0]
        from .jsonl import is_record

        try:
            obj = json.loads(first)
        except ValueError:
            return "telegram"
        return "jsonl" if is_record(obj) else "telegram"
    first_line = text.split("\n", 1)[0].rstrip("\r")
    if HEADER.match(first_line):
        return "whatsapp"
    raise _cannot_tell(path)


def find_exports(folder: str) -> tuple[list[str], list[str]]:
    """The exports in a folder (searched to any depth; an export that is a folder -- Slack,
    WhatsApp's unzipped ``_chat.txt`` -- counts as one), and the files that are none."""
    from .slack import is_slack_dir

    folder = _path_arg(folder, "folder")
    found: list[str] = []
    others: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if root != folder and (is_slack_dir(root) or "_chat.txt" in files):
            found.append(root)
            dirs[:] = []
            continue
        for name in sorted(files):
            p = os.path.join(root, name)
            try:
                detect_format(p)
            except IMError:
                others.append(p)
            else:
                found.append(p)
    return found, others


def scan(path: str, options: ImportOptions | None = None, fmt: str = "auto") -> ExportInfo:
    """Check an export whole and learn what importing it needs. Raises `IMError`."""
    path = _path_arg(path)
    opts = _options_arg(options)
    if not isinstance(fmt, str) or fmt not in ("auto", *FORMATS):
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"fmt must be 'auto' or one of {', '.join(FORMATS)}, not {fmt!r}")
    if not os.path.exists(path):
        raise IMError(ErrorCode.FILE_NOT_FOUND, f"{path}: no such file or folder")
    fmt = detect_format(path) if fmt == "auto" else fmt
    try:
        if fmt == "telegram":
            try:
                from .telegram import scan_telegram
            except ImportError as exc:
                raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                              f"reading Telegram exports needs ijson ({exc}): "
                              "pip install 'imstore[cli]'") from exc
            return scan_telegram(path, opts)
        if fmt == "whatsapp":
            from .whatsapp import scan_whatsapp
            return scan_whatsapp(path, opts)
        if fmt == "slack":
            from .slack import scan_slack
            return scan_slack(path, opts)
        if fmt == "jsonl":
            info = ExportInfo("jsonl", state={"convs": {}})
            for _ in _read_jsonl(path, opts, info):
                info.total += 1
            info.state["counted"] = True
            return info
    except IsADirectoryError as exc:
        raise IMError(ErrorCode.INVALID_PARAM, f"{path}: a folder, not a {fmt} export") from exc
    except (OSError, *_MALFORMED) as exc:
        raise _unreadable(path, fmt, exc) from exc
    raise IMError(ErrorCode.INVALID_PARAM, f"unknown format {fmt!r}; use one of {FORMATS}")


_MALFORMED = tuple(e for e in MALFORMED if e is not IMError)


def _unreadable(path: str, fmt: str, exc: BaseException) -> IMError:
    """What a reader met that it did not foresee, as the one error the library raises."""
    if isinstance(exc, OSError):
        return IMError(ErrorCode.FILE_INVALID, f"{path}: cannot read the export "
                                               f"({exc.strerror or exc})")
    return IMError(ErrorCode.INVALID_PARAM, f"{path}: not a valid {fmt} export (a part of it has "
                                            f"the wrong type or value: {type(exc).__name__})")


def _guarded(path: str, fmt: str, messages: Iterator[Message]) -> Iterator[Message]:
    try:
        yield from messages
    except IMError:
        raise
    except (OSError, *_MALFORMED) as exc:
        raise _unreadable(path, fmt, exc) from exc


def _read_jsonl(path: str, opts: ImportOptions, info: ExportInfo) -> Iterator[Message]:
    """The messages of an imstore export; its store and conversation records go to ``info``
    (the owner, and each conversation's fields for `finish`)."""
    from .jsonl import read_lines

    def record(kind: str, fields: dict[str, Any]) -> None:
        if kind == "store":
            info.owner = fields["owner"]
        elif kind == "conversation":
            info.state.setdefault("convs", {})[fields["conv_id"]] = fields
        elif "counted" not in info.state:  # reactions and pins: kept once, on the first pass
            info.state.setdefault("relations", []).append((kind, fields))

    with open(path, "rb") as raw:
        yield from read_lines(decode_lines(raw, path, opts.encoding), path, record)


def read(path: str, options: ImportOptions, info: ExportInfo,
         skipped: Skipped | None = None) -> Iterator[Message]:
    """The messages of an export that `scan` checked, streamed."""
    note = skipped or (lambda reason: None)
    messages: Iterator[Message]
    if info.format == "telegram":
        from .telegram import read_telegram
        messages = read_telegram(path, options, info, note)
    elif info.format == "whatsapp":
        from .whatsapp import read_whatsapp
        messages = read_whatsapp(path, options, info, note)
    elif info.format == "slack":
        from .slack import read_slack
        messages = read_slack(path, options, info, note)
    else:
        messages = _read_jsonl(path, options, info)
    return _guarded(path, info.format, messages)


def conversations(path: str, info: ExportInfo) -> dict[str, tuple[ChatType, str]]:
    """The conversations an export names, with their titles."""
    if info.format == "telegram":
        from .telegram import conversations as tg
        return tg(info, path)
    if info.format == "whatsapp":
        return {info.state["conv"]: (info.state["ctype"], info.state["title"])}
    if info.format == "slack":
        return dict(info.state["convs"])
    if info.format == "jsonl":
        return {c: (f["chat_type"], str(f.get("title") or (f.get("ext") or {}).get("title") or ""))
                for c, f in info.state.get("convs", {}).items()}
    return {}


def read_file(path: str, *, owner: str = "", fmt: str = "auto", me: tuple[str, ...] = (),
              tz: str | None = None, date_order: str | None = None,
              skipped: Skipped | None = None) -> Iterator[Message]:
    """Messages of one export, checked and streamed (for tools and tests)."""
    opts = ImportOptions(me=me, owner=owner, tz=tz, date_order=date_order)
    info = scan(path, opts, fmt)
    return read(path, opts, info, skipped)


def save_titles(store: Any, path: str, info: ExportInfo, skipped: Skipped | None = None
                ) -> None:
    """Once the messages are in: give the export's conversations that are in the store their
    titles (an imstore export's conversations get back every field it kept), and put back the
    reactions and pins the readers collected in ``info.state["relations"]`` (those of messages
    that are not stored change nothing; one the store refuses goes to ``skipped``)."""
    from .jsonl import restore_conversation, restore_relations

    if info.format == "jsonl":
        for fields in info.state.get("convs", {}).values():
            restore_conversation(store, fields)
    else:
        for conv_id, (_ctype, title) in conversations(path, info).items():
            conv = store.conversation(conv_id)
            if conv is not None and title and conv.title != title:
                store.set_conversation_title(conv_id, title)
    for kind, fields in info.state.get("relations", ()):
        restore_relations(store, kind, fields, skipped)


def import_file(store: Any, path: str, *, fmt: str = "auto", options: ImportOptions | None = None,
                info: ExportInfo | None = None, batch_size: int = 1000,
                progress: Callable[[int], None] | None = None,
                stop: Callable[[], bool] | None = None) -> ImportResult:
    """Check an export whole, then import it into ``store``; returns what was imported/skipped.

    ``options.owner`` is set to the store's owner. ``stop()`` is asked before each message: when
    it says True the import ends after the messages read so far (whole batches are kept).
    """
    from ..store import MessageStore

    if not isinstance(store, MessageStore):
        raise IMError(ErrorCode.INVALID_PARAM, f"store must be a MessageStore, not {store!r:.60}")
    path = _path_arg(path)
    opts = _options_arg(options)
    opts.owner = store.user_id
    if info is None:
        info = scan(path, opts, fmt)
    elif not isinstance(info, ExportInfo):
        raise IMError(ErrorCode.INVALID_PARAM, "info must be what scan() returned, or None")
    for name, fn in (("progress", progress), ("stop", stop)):
        if fn is not None and not callable(fn):
            raise IMError(ErrorCode.INVALID_PARAM, f"{name} must be a callable or None")
    reasons: dict[str, int] = {}

    def skipped(reason: str) -> None:
        reasons[reason] = reasons.get(reason, 0) + 1

    messages = read(path, opts, info, skipped)
    if stop is not None:
        messages = _until(messages, stop)
    try:
        result: ImportResult = store.import_messages(messages, batch_size=batch_size,
                                                     progress=progress)
    finally:
        save_titles(store, path, info, skipped)
    for reason, n in reasons.items():
        if not reason.startswith(("reactions:", "pins:")):  # not messages: reasons only
            result.skipped += n
        result.reasons[reason] = result.reasons.get(reason, 0) + n
    return result


def _path_arg(path: Any, name: str = "path") -> str:
    """A path argument as a str, or the IMError naming it (the codec's one path rule)."""
    return check_path(path, "a file or folder path (str or os.PathLike)", name)


def _options_arg(options: Any) -> ImportOptions:
    """The options of an import, checked field by field (a str for ``me`` is one name)."""
    if options is None:
        return ImportOptions()
    if not isinstance(options, ImportOptions):
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"options must be an ImportOptions or None, not {options!r:.60}")
    if isinstance(options.me, str):
        options.me = (options.me,)
    wants = {"tz": "a zone name (str) or None", "date_order": "'dmy', 'mdy' or 'ymd', or None",
             "encoding": "an encoding name (str) or None", "owner": "a user id (str)"}
    for name, what in wants.items():
        value = getattr(options, name)
        if not (isinstance(value, str) or (value is None and name != "owner")):
            raise IMError(ErrorCode.INVALID_PARAM, f"options.{name} must be {what}, not "
                                                   f"{value!r:.60}")
    if not isinstance(options.me, tuple | list) or not all(isinstance(m, str) for m in options.me):
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"options.me must be a list of names (str), not {options.me!r:.60}")
    options.me = tuple(options.me)
    return options


def _until(messages: Iterator[Message], stop: Callable[[], bool]) -> Iterator[Message]:
    for m in messages:
        if stop():
            return
        yield m
