"""Which store a command works on, whose it is, and whether it can be written now.

Rules kept here:
- a command that reads needs a store (it says how to make one when there is none); ``import``
  makes one;
- what is wrong is said before the store is opened, in words: a file where the store should be,
  permissions, another process holding the store (waited for ``$IMSTORE_LOCK_TIMEOUT`` seconds,
  default 5, not the store's long wait);
- the store's files are the store's business: this module asks `MessageStore` (``stored_owner``,
  ``check_writable``, ``open``) and never opens the database itself.
"""

from __future__ import annotations

import argparse
import os

from ..codec import Limits
from ..errors import ErrorCode, IMError
from ..store import IndexPolicy, MessageStore
from ._keys import key_for

__all__ = ["DEFAULT_STORE", "open_store", "require_store", "stored_owner"]

DEFAULT_STORE = os.environ.get("IMSTORE_DIR", "imstore-data")


def stored_owner(path: str) -> str | None:
    """The owner of the store in ``path``, or None when there is none; creates nothing."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise IMError(ErrorCode.INVALID_PARAM, f"{path} is a file, not a store directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise IMError(ErrorCode.DATABASE_ERROR, f"permission denied: cannot read {path}")
    return MessageStore.stored_owner(path, key=key_for(path))


def open_store(path: str, owner: str, limits: Limits | None = None, *,
               index_policy: IndexPolicy | None = None) -> MessageStore:
    """The store in ``path`` (created for ``owner`` when there is none), once it can be written."""
    MessageStore.check_writable(path, timeout=float(os.environ.get("IMSTORE_LOCK_TIMEOUT", "5")),
                                key=key_for(path))
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path) and os.path.isdir(parent) and not os.access(parent, os.W_OK):
        raise IMError(ErrorCode.DATABASE_ERROR, f"permission denied: cannot create {path}")
    return MessageStore.open(path, user_id=owner, limits=limits, index_policy=index_policy,
                             key=key_for(path))


def require_store(args: argparse.Namespace) -> MessageStore:
    """The existing store named by ``--store``."""
    owner = stored_owner(args.store)
    if owner is None:
        raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                      f"{args.store} holds no store; import something first "
                      "(imstore import FILE --store DIR)")
    return open_store(args.store, owner)
