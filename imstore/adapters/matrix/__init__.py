"""imstore over Matrix: `MatrixAdapter` implements `SyncAdapter` and `Transport` with httpx.

Install with ``pip install 'imstore[matrix]'``. The mapping (what is native, what is emulated and
how) is documented in docs/adapters.md, section "Matrix". Modules: `_mapping` (pure: ids,
conversations, contents), `_api` (the HTTP calls and their errors), `_adapter` (state: rooms,
the sync loop, receipts).
"""

from __future__ import annotations

import secrets

from ._adapter import MatrixAdapter
from ._api import Bounds, MatrixError
from ._mapping import BadEvent, escape_localpart, unescape_localpart

__all__ = ["BadEvent", "Bounds", "MatrixAdapter", "MatrixError", "demo_users", "escape_localpart",
           "unescape_localpart"]


async def demo_users(homeserver_url: str, *, shared_secret: str | None = None,
                     names: tuple[str, str] = ("alice", "bob"), password: str | None = None
                     ) -> tuple[MatrixAdapter, MatrixAdapter]:
    """Two logged-in users for the demo: registered when the server allows it (with Synapse's
    shared secret, or open registration), else logged in with ``password`` (default:
    ``imstore-demo-<name>``). Close both adapters when done."""
    adapters = []
    for name in names:
        pw = password or f"imstore-demo-{name}"
        try:
            await MatrixAdapter.register(homeserver_url, name, pw, shared_secret=shared_secret)
        except MatrixError as exc:
            if exc.errcode not in ("M_USER_IN_USE", "M_FORBIDDEN", "M_UNKNOWN"):
                raise
        adapters.append(await MatrixAdapter.login(homeserver_url, name, pw,
                                                  device_id=f"IMSTORE{secrets.token_hex(3).upper()}"))
    return adapters[0], adapters[1]
