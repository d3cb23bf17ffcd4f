"""How the reference server reaches each user: one ordered event queue per user.

Rules kept here:
- everything for a user — messages, receipts of every kind, recalls, edits — is one handler call
  (``handler.<name>(*args)``) made at once while the user's connection is CONNECTED with a
  handler attached, else kept and made on reconnection, in the order it happened;
- on reconnection runs of the same call with one list argument are merged into one call;
- the connection that caused an event (``skip``) does not hear it back; a handler that lacks an
  optional method (`OPTIONAL_HANDLER_METHODS`) is not told those events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import OPTIONAL_HANDLER_METHODS, ConnectionState, TransportHandler

if TYPE_CHECKING:
    from ._connection import MemoryConnection

__all__ = ["Delivery"]


class Delivery:
    """The users' connections and the events kept for those that are away."""

    def __init__(self) -> None:
        self.connections: dict[str, MemoryConnection] = {}
        # per user: handler method names and arguments not delivered yet, oldest first
        self.offline: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}

    def emit(self, user: str | None, name: str, *args: Any,
             skip: MemoryConnection | None = None) -> None:
        """Call ``handler.<name>(*args)`` for ``user`` now when CONNECTED, else on reconnection;
        not on the connection ``skip`` (the one that caused it)."""
        if not user:
            return
        conn = self.connections.get(user)
        if conn is not None and conn is skip:
            return
        if conn is None or conn.state != ConnectionState.CONNECTED or conn.handler is None:
            self.offline.setdefault(user, []).append((name, args))
            return
        _call(conn.handler, name, args)

    def flush(self, user: str, handler: TransportHandler) -> None:
        """Hand a user the events kept while it was away, in order (runs of one kind batched)."""
        pending = self.offline.pop(user, [])
        i = 0
        while i < len(pending):
            name, args = pending[i]
            if len(args) == 1 and isinstance(args[0], list):
                batch = list(args[0])
                while (i + 1 < len(pending) and pending[i + 1][0] == name
                       and len(pending[i + 1][1]) == 1):
                    i += 1
                    batch += pending[i][1][0]
                args = (batch,)
            _call(handler, name, args)
            i += 1


def _call(handler: TransportHandler, name: str, args: tuple[Any, ...]) -> None:
    if name in OPTIONAL_HANDLER_METHODS and getattr(handler, name, None) is None:
        return  # a handler written before the method was added
    getattr(handler, name)(*args)
