"""The commands of encryption at rest: ``imstore encrypt``, ``imstore rekey`` and ``imstore info``.

Rules kept here: keys come from `_keys` only (a file or the environment, never an argument);
each command says in the CLI's words what is missing (a store, a key, a new key) before the
library is asked; the rewrites themselves are the library's (`encrypt_store`, `change_key`:
atomic, on a closed store) and their refusals are printed as they are.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from ..errors import ErrorCode, IMError
from ..store import MessageStore, change_key, encrypt_store, is_encrypted
from ._keys import RefuseKeyArgument, current_key, read_key
from ._output import emit

__all__ = ["add_crypt_commands", "cmd_encrypt", "cmd_info", "cmd_rekey"]

_KEY = "--key-file FILE (or $IMSTORE_KEY_FILE, or the passphrase in $IMSTORE_KEY)"
_NEW_KEY = "--new-key-file FILE (or $IMSTORE_NEW_KEY_FILE, or the passphrase in $IMSTORE_NEW_KEY)"


def _encrypted(path: str) -> bool:
    """Whether the store in ``path`` is encrypted; IMError when there is no store there."""
    try:
        return is_encrypted(path)
    except IMError as exc:
        if exc.code == ErrorCode.FILE_NOT_FOUND:
            raise IMError(ErrorCode.FILE_NOT_FOUND, f"{path} holds no store; import something "
                          "first (imstore import FILE --store DIR)") from exc
        raise


def cmd_encrypt(args: argparse.Namespace) -> int:
    key = current_key()
    if _encrypted(args.store):
        raise IMError(ErrorCode.INVALID_PARAM, f"the store {args.store} is encrypted already; "
                      "`imstore rekey` changes its key")
    if key is None:
        raise IMError(ErrorCode.INVALID_PARAM, f"imstore encrypt needs the key to encrypt with: "
                      f"{_KEY}")
    encrypt_store(args.store, key)
    emit(args, {"store": args.store, "encrypted": True},
         [f"encrypted the store {args.store}: open it with the same key from now on (the "
          "search index is rebuilt at the next open)"])
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    if not _encrypted(args.store):
        raise IMError(ErrorCode.INVALID_PARAM, f"the store {args.store} is not encrypted; "
                      "`imstore encrypt` encrypts it")
    old = current_key()
    if old is None:
        raise IMError(ErrorCode.INVALID_PARAM, f"imstore rekey needs the store's key: {_KEY}")
    new = read_key(args, new=True)
    if new is None:
        raise IMError(ErrorCode.INVALID_PARAM, f"imstore rekey needs the new key: {_NEW_KEY}")
    change_key(args.store, old, new)
    emit(args, {"store": args.store, "encrypted": True},
         [f"the store {args.store} has its new key: the old one no longer opens it"])
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    encrypted = _encrypted(args.store)
    key = current_key()
    owner: str | None = None
    if not encrypted:
        owner = MessageStore.stored_owner(args.store)
    elif key is not None:
        owner = MessageStore.stored_owner(args.store, key=key)  # a wrong key is an error
    size = sum(os.path.getsize(p) for p in (os.path.join(args.store, n)
                                            for n in ("imstore.db", "imstore.db-wal"))
               if os.path.exists(p))
    data: dict[str, Any] = {"store": args.store, "encrypted": encrypted, "owner": owner,
                            "database_bytes": size}
    lines = [f"{'store':<12} {args.store}",
             f"{'encrypted':<12} " + ("yes (SQLCipher)" if encrypted else "no"),
             f"{'owner':<12} " + (owner if owner is not None else
                                  f"(encrypted: give its key to read it, {_KEY})"),
             f"{'database':<12} {size:,} bytes"]
    emit(args, data, lines)
    return 0


def add_crypt_commands(add: Callable[[str, Callable[[argparse.Namespace], int], str],
                                     argparse.ArgumentParser]) -> None:
    """Register the commands with the parser's ``add`` (name, function, help)."""
    add("encrypt", cmd_encrypt, "encrypt a plaintext store (closed everywhere) with the key of "
        "--key-file or the environment")
    sp = add("rekey", cmd_rekey, "re-encrypt an encrypted store (closed everywhere) under a new "
             "key: the old key from --key-file or the environment, the new one from "
             "--new-key-file or the environment")
    sp.add_argument("--new-key-file", metavar="FILE",
                    help="the new key: a file of 32 raw bytes, or a passphrase ('-': standard "
                         "input; default: $IMSTORE_NEW_KEY_FILE, or the passphrase in "
                         "$IMSTORE_NEW_KEY)")
    sp.add_argument("--new-key", nargs="?", action=RefuseKeyArgument, help=argparse.SUPPRESS)
    add("info", cmd_info, "the store's directory, whether it is encrypted, its owner and size")

