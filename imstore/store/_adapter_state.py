"""What a server adapter keeps between runs in the store: small named JSON documents (its sync
position, its room directory), so a restarted client goes on where the last run stopped.

Rules kept here:
- one document per name, replaced whole in one transaction (`save`); a name never saved reads as
  an empty dict, and so does a document a newer or broken writer left unreadable (the adapter
  then starts as a fresh device would, never fails to start);
- a document is a JSON object of at most `MAX_STATE_BYTES` encoded; anything else is
  `IMError(INVALID_PARAM)` and nothing is written;
- the store never reads inside a document: it is the adapter's, opaque here.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ErrorCode, IMError
from ._connection import Connection

__all__ = ["MAX_STATE_BYTES", "TABLES", "AdapterState"]

MAX_STATE_BYTES = 4 * 1024 * 1024

TABLES = (
    "CREATE TABLE IF NOT EXISTS adapter_state (name TEXT PRIMARY KEY, value TEXT NOT NULL) "
    "WITHOUT ROWID",
)


class AdapterState:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def load(self, name: str) -> dict[str, Any]:
        row = self._conn.one("SELECT value FROM adapter_state WHERE name = ?", (name,))
        if row is None:
            return {}
        try:
            value = json.loads(row[0])
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def save(self, name: str, value: dict[str, Any]) -> None:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"an adapter state must be plain JSON data: {exc}") from exc
        if len(text.encode()) > MAX_STATE_BYTES:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"an adapter state is at most {MAX_STATE_BYTES} bytes as JSON; keep "
                          "less in it")
        with self._conn.tx():
            self._conn.run("INSERT OR REPLACE INTO adapter_state (name, value) VALUES (?, ?)",
                           (name, text))
