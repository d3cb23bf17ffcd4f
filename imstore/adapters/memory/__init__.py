"""The reference IM server, in the process, for tests, the demo and benchmarks.

A real implementation of both adapter protocols, not canned answers: `MemoryServer` keeps one
history per conversation and a per-user view of it, and `MemoryServer.connect` gives each user a
`MemoryConnection` (a `SyncAdapter` and a `Transport` in one object). Its parts: `_state` (the
directory of conversations and messages), `_history` (what each user sees: pages through the
shared `FetchOptions` filter and cursors, the conversation list, one-way deletes, read
positions), `_receipts`, `_delivery` (one ordered event queue per device of a user), `_connection`, and the
`_server` facade. It depends on `message`, `kinds` and `adapters` only, never on the store.
"""

from __future__ import annotations

from ._connection import MemoryConnection
from ._server import MemoryServer
from ._state import Faults, RetentionPlan

__all__ = ["Faults", "MemoryConnection", "MemoryServer", "RetentionPlan"]
