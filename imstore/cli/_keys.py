"""Where the command line gets a store's key: a key file or the environment, never an argument.

Rules kept here:
- a key comes from ``--key-file FILE`` (``-`` reads standard input), else ``$IMSTORE_KEY_FILE``
  (a file), else ``$IMSTORE_KEY`` (the passphrase itself); a new key (``imstore rekey``) from
  ``--new-key-file`` / ``$IMSTORE_NEW_KEY_FILE`` / ``$IMSTORE_NEW_KEY`` the same way;
- a key file of exactly 32 bytes is a raw key; anything else is a passphrase: its text (UTF-8,
  without a byte order mark), stripped of surrounding white space (the newline an editor or
  ``echo`` adds); an empty or binary file, or one over 4 KiB, is refused, and no error ever
  shows a key;
- ``--key`` and ``--new-key`` exist only to refuse a key typed on the command line (it would stay
  in the shell's history and the process list);
- the key is read once per command (`keys_from`) and every store the command opens asks
  `key_for`, which says in the CLI's words when the store wants a key it was not given, or was
  given a key it does not take.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import ErrorCode, IMError
from ..store import is_encrypted

__all__ = ["KEY_BYTES", "RefuseKeyArgument", "add_key_options", "current_key", "key_for",
           "keys_from", "read_key"]

KEY_BYTES = 32
_MAX_FILE = 4096
_HOW = "--key-file FILE (or $IMSTORE_KEY_FILE, or the passphrase in $IMSTORE_KEY)"
_CURRENT: contextvars.ContextVar[tuple[bytes | str | None, str | None]] = contextvars.ContextVar(
    "imstore_cli_key", default=(None, None))


class RefuseKeyArgument(argparse.Action):
    """``--key``/``--new-key``: a key on the command line is refused, with what to do instead."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        file_option = "--new-key-file" if option_string == "--new-key" else "--key-file"
        parser.error(f"{option_string}: a key is never given on the command line (it would "
                     f"stay in the shell's history and the process list); use {file_option} "
                     "FILE or the environment (see imstore --help)")


def add_key_options(p: argparse.ArgumentParser, *, sub: bool) -> None:
    """``--key-file`` (global: before or after the subcommand, after wins) and the refusal of
    ``--key``."""
    p.add_argument("--key-file", metavar="FILE", default=argparse.SUPPRESS if sub else None,
                   help="the key of an encrypted store: a file of 32 raw bytes, or a passphrase "
                        "('-': standard input; default: $IMSTORE_KEY_FILE, or the passphrase "
                        "in $IMSTORE_KEY)")
    p.add_argument("--key", nargs="?", action=RefuseKeyArgument, help=argparse.SUPPRESS)


def _from_file(path: str, option: str) -> bytes | str:
    """The key in file ``path`` (``-``: standard input)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(_MAX_FILE + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(_MAX_FILE + 1)
    except OSError as exc:
        raise IMError(ErrorCode.FILE_NOT_FOUND,
                      f"{option}: cannot read the key file {path!r}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig").strip()  # an editor's byte order mark is not in it
    except UnicodeDecodeError:
        text = ""
    if len(data) == KEY_BYTES and not (text and text.isprintable()):
        # raw key bytes: random bytes are never a line of printable text, and a 31-character
        # passphrase that `echo` wrote with its newline is one
        return data
    if len(data) > _MAX_FILE:
        raise IMError(ErrorCode.INVALID_PARAM, f"{option}: {path!r} is not a key file (over "
                      f"{_MAX_FILE} bytes): it must hold {KEY_BYTES} raw bytes or a passphrase")
    if not text or "\x00" in text:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"{option}: {path!r} holds no key: it must hold exactly {KEY_BYTES} raw "
                      f"bytes, or a passphrase as text (it holds {len(data)} bytes)")
    return text


def read_key(args: argparse.Namespace, *, new: bool = False) -> bytes | str | None:
    """The key (``new``: the new key of ``rekey``) the command was given, or None."""
    option = "--new-key-file" if new else "--key-file"
    prefix = "IMSTORE_NEW_KEY" if new else "IMSTORE_KEY"
    path = getattr(args, option[2:].replace("-", "_"), None)
    if new and path == "-" and getattr(args, "key_file", None) == "-":
        raise IMError(ErrorCode.INVALID_PARAM, "the old and the new key cannot both come from "
                      "standard input: put one of them in a file")
    if path:
        return _from_file(path, option)
    path = os.environ.get(f"{prefix}_FILE")
    if path:
        return _from_file(path, f"${prefix}_FILE")
    text = os.environ.get(prefix)
    if text is not None:
        if not text.strip():
            raise IMError(ErrorCode.INVALID_PARAM, f"${prefix} is set but empty: unset it, or "
                          "set it to the passphrase")
        return text.strip()
    return None


def _source(args: argparse.Namespace) -> str | None:
    if getattr(args, "key_file", None):
        return "--key-file"
    for name in ("IMSTORE_KEY_FILE", "IMSTORE_KEY"):
        if os.environ.get(name):
            return f"${name}"
    return None


@contextmanager
def keys_from(args: argparse.Namespace) -> Iterator[None]:
    """Read the command's key once; the stores it opens meanwhile get it through `key_for`."""
    token = _CURRENT.set((read_key(args), _source(args)))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_key() -> bytes | str | None:
    """The key the running command was given (None: none)."""
    return _CURRENT.get()[0]


def key_for(path: str) -> bytes | str | None:
    """The key to open the store in ``path`` with: the command's key, checked against the store
    (a new store is created encrypted when a key was given)."""
    key, source = _CURRENT.get()
    try:
        encrypted = is_encrypted(path)
    except IMError as exc:
        if exc.code == ErrorCode.FILE_NOT_FOUND:
            return key  # no store there (yet)
        raise
    if encrypted and key is None:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"the store {path} is encrypted: give its key with {_HOW}")
    if not encrypted and key is not None:
        raise IMError(ErrorCode.INVALID_PARAM,
                      f"the store {path} is not encrypted, but a key was given ({source}): "
                      "drop it, or encrypt the store first with `imstore encrypt`")
    return key
