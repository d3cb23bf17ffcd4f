"""How the reference server reaches each user's devices: one ordered event queue per device.

Rules kept here:
- a user has one connection per device (``device_id``; None is the user's default device);
  everything for a user — messages, receipts of every kind, recalls, edits, reactions, pins,
  conversation states, its own sends and reads from another device — is one handler call
  (``handler.<name>(*args)``) per device, made at once while that device is CONNECTED with a
  handler attached, else kept and made when it comes back, in the order it happened;
- what arrives for a user that has no device yet is kept for its first device (a new device of
  a user that has others starts from the server's history, not from their queues);
- the device that caused an event (its send, edit, recall, read) does not hear it back;
- on reconnection runs of the same call with one list argument are merged into one call;
- `purge` takes back what was kept and not delivered yet (a conversation deleted for everyone);
- a handler that lacks an optional method (`OPTIONAL_HANDLER_METHODS`) is not told those
  events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import OPTIONAL_HANDLER_METHODS, ConnectionState, TransportHandler

if TYPE_CHECKING:
    from ._connection import MemoryConnection

__all__ = ["Delivery"]

Event = tuple[str, tuple[Any, ...]]  # a handler method name and its arguments


class Delivery:
    """The users' device connections and the events kept for devices that are away."""

    def __init__(self) -> None:
        self.connections: dict[str, dict[str | None, MemoryConnection]] = {}
        # (user, device) -> events not delivered yet, oldest first; (user, None) also holds
        # what came before the user had any device
        self.offline: dict[tuple[str, str | None], list[Event]] = {}
        self._unclaimed: dict[str, list[Event]] = {}

    def devices(self, user: str) -> dict[str | None, MemoryConnection]:
        return self.connections.get(user, {})

    def add(self, user: str, device: str | None, conn: MemoryConnection) -> None:
        """A new device: the user's first one takes what was kept for the user."""
        mine = self.connections.setdefault(user, {})
        if not mine and user in self._unclaimed:
            self.offline[(user, device)] = self._unclaimed.pop(user)
        mine[device] = conn

    def emit(self, user: str | None, name: str, *args: Any,
             skip: MemoryConnection | None = None) -> None:
        """Call ``handler.<name>(*args)`` on every device of ``user`` but the connection
        ``skip`` (the device that caused it), now when it is CONNECTED, else when it comes
        back."""
        if not user:
            return
        devices = self.devices(user)
        if not devices:
            self._unclaimed.setdefault(user, []).append((name, args))
            return
        for device, conn in devices.items():
            if conn is skip:
                continue
            if conn.state != ConnectionState.CONNECTED or conn.handler is None:
                self.offline.setdefault((user, device), []).append((name, args))
            else:
                _call(conn.handler, name, args)

    def flush(self, user: str, device: str | None, handler: TransportHandler) -> None:
        """Hand a device the events kept while it was away, in order (runs of one kind
        batched)."""
        pending = self.offline.pop((user, device), [])
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

    def purge(self, concerns: Callable[[str, Any], bool],
              conversation: Callable[[str], str | None]) -> None:
        """Take back kept events: list items for which ``concerns(user, item)`` is true (events
        left empty go), and ``on_conversation_read`` of the conversation ``conversation(user)``
        names for that user."""
        queues = [(user, q) for (user, _), q in self.offline.items()]
        queues += list(self._unclaimed.items())
        for user, queue in queues:
            kept: list[Event] = []
            for name, args in queue:
                if len(args) == 1 and isinstance(args[0], list):
                    items = [x for x in args[0] if not concerns(user, x)]
                    if items:
                        kept.append((name, (items,)))
                elif not (name == "on_conversation_read" and args
                          and args[0] == conversation(user)):
                    kept.append((name, args))
            queue[:] = kept


def _call(handler: TransportHandler, name: str, args: tuple[Any, ...]) -> None:
    if name in OPTIONAL_HANDLER_METHODS and getattr(handler, name, None) is None:
        return  # a handler written before the method was added
    getattr(handler, name)(*args)
