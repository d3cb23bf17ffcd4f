"""Importers for the chat exports people have: Telegram Desktop JSON, WhatsApp text, Slack zip,
and imstore's own JSON lines.

Rules kept here:
- each importer is a generator of `Message` values, so a large export streams in bounded memory;
- a file is read twice: once to check it (a malformed file raises one `IMError` naming the file and
  the place, before anything is written), then to import it;
- message ids are derived from the export's own ids, so importing the same export again adds nothing;
- what has no imstore equivalent becomes a CUSTOM message keeping the original, or is skipped and
  counted with its reason (`ImportResult.reasons`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ErrorCode, IMError
from ..message import ImportResult, Message

__all__ = ["FORMATS", "detect_format", "import_file", "read_file"]

FORMATS = ("telegram", "whatsapp", "slack", "jsonl")


def detect_format(path: str) -> str:
    """Guess an export's format from its name and first bytes."""
    lower = path.lower()
    if lower.endswith(".zip"):
        return "slack"
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith(".txt"):
        return "whatsapp"
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"{") and b"\n{" in head and head.count(b"\n") > 1 and b'"msg_id"' in head:
        return "jsonl"
    if head.startswith((b"{", b"[")):
        return "telegram"
    raise IMError(ErrorCode.INVALID_PARAM,
                  f"{path}: cannot tell the export's format; pass --format (one of {FORMATS})")


def read_file(path: str, *, owner: str, fmt: str = "auto",
              skipped: Callable[[str], None] | None = None) -> Iterator[Message]:
    """Messages of one export file, streamed. ``skipped(reason)`` hears what is left out."""
    if not os.path.isfile(path):
        raise IMError(ErrorCode.FILE_NOT_FOUND, f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    note = skipped or (lambda reason: None)
    if fmt == "jsonl":
        from .jsonl import read_jsonl

        def gen() -> Iterator[Message]:
            with open(path, encoding="utf-8") as f:
                yield from read_jsonl(f, path)
        return gen()
    if fmt == "telegram":
        from .telegram import read_telegram
        return read_telegram(path, owner=owner, skipped=note)
    if fmt == "whatsapp":
        from .whatsapp import read_whatsapp
        return read_whatsapp(path, owner=owner, skipped=note)
    if fmt == "slack":
        from .slack import read_slack
        return read_slack(path, owner=owner, skipped=note)
    raise IMError(ErrorCode.INVALID_PARAM, f"unknown format {fmt!r}; use one of {FORMATS}")


def import_file(store: Any, path: str, *, fmt: str = "auto", batch_size: int = 1000,
                progress: Callable[[int], None] | None = None) -> ImportResult:
    """Check an export whole, then import it into ``store``. Returns what was imported/skipped."""
    for _ in read_file(path, owner=store.user_id, fmt=fmt):  # the check: raises before any write
        pass
    reasons: dict[str, int] = {}

    def skipped(reason: str) -> None:
        reasons[reason] = reasons.get(reason, 0) + 1

    result: ImportResult = store.import_messages(
        read_file(path, owner=store.user_id, fmt=fmt, skipped=skipped),
        batch_size=batch_size, progress=progress)
    for reason, n in reasons.items():
        result.skipped += n
        result.reasons[reason] = result.reasons.get(reason, 0) + n
    return result
