"""Opaque cursors, the one format every adapter makes and reads.

Rules kept here:
- a cursor is the URL-safe base64 (unpadded) of a JSON list ``[kind, part, ...]``; ``kind`` names
  what the cursor pages (history, conversations, group acks), so a cursor made for one list is
  refused by another;
- reading a cursor checks the kind, the number of parts and each part's type: a cursor that was
  not made here (or was damaged) is `IMError(INVALID_PARAM)` telling the caller to start again
  with ``None``, never a raw ``ValueError`` or a half-read position.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..errors import ErrorCode, IMError

__all__ = ["decode_cursor", "encode_cursor"]

MAX_CURSOR = 4096
"""The longest cursor read (a Matrix pagination token fits many times over)."""


def encode_cursor(kind: str, *parts: str | int) -> str:
    """The cursor of ``kind`` holding ``parts`` (strings and ints)."""
    raw = json.dumps([kind, *parts], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: object, kind: str, *types: type) -> list[Any]:
    """The parts of a cursor made by `encode_cursor` for ``kind``, one per type in ``types``
    (each checked); `IMError(INVALID_PARAM)` for anything else."""
    try:
        if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR:
            raise ValueError("not a cursor string")
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, list) or not data or data[0] != kind:
            raise ValueError("another kind")
        parts = data[1:]
        if len(parts) != len(types) or not all(
                isinstance(p, t) and not isinstance(p, bool) for p, t in zip(parts, types, strict=True)):
            raise ValueError("wrong parts")
        return parts
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"cursor {str(cursor)[:80]!r} was not made by this server for {kind}; "
                      "pass None to start again") from exc
