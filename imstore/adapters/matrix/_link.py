"""The adapter's side of the `TransportHandler`: the connection state and every call made to it.

Rules kept here:
- ``state`` changes only through `set_state`, and every change is reported to the handler;
- a handler's own failure is logged and never stops the caller (the sync loop goes on);
- a handler without a method is told nothing of that kind (logged once per call, not raised);
- whether the handler's ``on_conversation_read`` takes ``up_to`` is learned once, on `attach`.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from .. import ConnectionState, TransportHandler

__all__ = ["Link", "log"]

log = logging.getLogger("imstore.matrix")


class Link:
    """The handler attached to the adapter, and the state it was last told."""

    def __init__(self) -> None:
        self.state = ConnectionState.CONNECTED
        self.handler: TransportHandler | None = None
        self.up_to_ok = False
        self.failures = 0  # handler calls that raised: a batch with one is not kept as done

    def attach(self, handler: TransportHandler) -> None:
        self.handler = handler
        fn = getattr(handler, "on_conversation_read", None)
        try:
            self.up_to_ok = fn is not None and "up_to" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            self.up_to_ok = False

    def set_state(self, state: ConnectionState) -> None:
        if state == self.state:
            return
        self.state = state
        self.emit("on_connection_state_changed", state)

    def emit(self, name: str, *args: Any) -> None:
        fn = getattr(self.handler, name, None) if self.handler is not None else None
        if fn is None:
            if self.handler is not None:
                log.warning("the handler has no %s; dropped %d item(s)", name, len(args))
            return
        try:
            fn(*args)
        except Exception:  # the handler's bug must not stop the sync loop
            self.failures += 1
            log.exception("handler %s failed", name)

    def offer(self, name: str, *args: Any) -> None:
        """Call an optional handler method when the handler has it; say nothing otherwise."""
        if getattr(self.handler, name, None) is not None:
            self.emit(name, *args)
