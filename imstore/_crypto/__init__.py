"""Key material and sealed files: what the store and its index need to keep data encrypted.

Rules kept here:
- a store key is 32 raw bytes; a passphrase becomes one with PBKDF2-HMAC-SHA512 (256,000
  rounds, SQLCipher 4's own choice) over its UTF-8 in Unicode form NFC (the same passphrase
  typed on any system) and the 16-byte salt kept in the database's first bytes, once per open —
  never per connection;
- every other key is derived from the store key with HKDF-SHA256 and a purpose label
  (`subkey`): the index key is ``subkey(store_key, INDEX_PURPOSE)``, so a new store key makes
  every index file unreadable (the index is a cache: it is rebuilt);
- a sealed file is authenticated encryption (AES-256-GCM) under a key of its own, derived from
  the index key and a fresh random 16-byte salt, with a fresh random nonce: no two files share
  a key and nonce, however many are written. A file that does not open (another key, a bit
  flipped, cut short) raises `IMError(DATABASE_ERROR)`, never returns garbage;
- the cipher library (``cryptography``) and SQLCipher (``sqlcipher3``) are optional: without
  them, asking for encryption says which extra to install.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import unicodedata
from types import ModuleType
from typing import Any

from ..errors import ErrorCode, IMError

__all__ = ["INDEX_PURPOSE", "KEY_BYTES", "SALT_BYTES", "check_key", "cipher_driver",
           "derive_key", "index_key", "seal", "sealed_length", "subkey", "unseal"]

KEY_BYTES = 32
SALT_BYTES = 16
KDF_ROUNDS = 256_000
INDEX_PURPOSE = b"imstore search index v1"
_EXTRA = "pip install 'imstore[crypto]'"
_MAGIC = b"IMS1"  # sealed file, version 1
_NONCE = 12
_TAG = 16
_HEADER = len(_MAGIC) + SALT_BYTES + _NONCE
OVERHEAD = _HEADER + _TAG  # bytes a sealed file has over its plaintext


def check_key(key: Any, field: str = "key") -> bytes | str:
    """``key`` when it is a raw 32-byte key or a non-empty passphrase; else IMError."""
    if isinstance(key, bytes | bytearray):
        if len(key) != KEY_BYTES:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{field} must be {KEY_BYTES} raw bytes (got {len(key)}) or a "
                          "passphrase (str)")
        return bytes(key)
    if isinstance(key, str):
        if not key:
            raise IMError(ErrorCode.INVALID_PARAM, f"{field} is an empty passphrase")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"{field} is a passphrase that is not valid text") from exc
        return key
    raise IMError(ErrorCode.INVALID_PARAM,
                  f"{field} must be {KEY_BYTES} raw bytes or a passphrase (str), "
                  f"not {type(key).__name__}")


def derive_key(key: bytes | str, salt: bytes) -> bytes:
    """The raw store key: ``key`` itself when raw, else the passphrase stretched with ``salt``."""
    if isinstance(key, bytes):
        return key
    text = unicodedata.normalize("NFC", key)  # é typed as one character or as e + accent
    return hashlib.pbkdf2_hmac("sha512", text.encode("utf-8"), salt, KDF_ROUNDS, KEY_BYTES)


def subkey(key: bytes, purpose: bytes, salt: bytes = b"") -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``key`` for ``purpose``: 32 bytes."""
    prk = hmac.new(salt or b"\0" * 32, key, hashlib.sha256).digest()
    return hmac.new(prk, purpose + b"\x01", hashlib.sha256).digest()


def index_key(store_key: bytes) -> bytes:
    """The key of the search index's files, from the store's raw key."""
    return subkey(store_key, INDEX_PURPOSE)


def _aead() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                      f"encryption needs the 'cryptography' package: {_EXTRA}") from exc
    return AESGCM


def cipher_driver() -> ModuleType:
    """The SQLCipher driver (``sqlcipher3``), or IMError saying what to install."""
    try:
        import sqlcipher3
    except ImportError as exc:
        raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                      f"an encrypted store needs SQLCipher, which is not installed: {_EXTRA}"
                      ) from exc
    _aead()  # the index needs the cipher library too: say so now, not at the first commit
    driver: ModuleType = sqlcipher3
    return driver


def seal(key: bytes, plaintext: bytes | memoryview) -> bytes:
    """``plaintext`` encrypted and authenticated under a fresh file key and nonce."""
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(_NONCE)
    box = _aead()(subkey(key, b"file", salt))
    return b"".join((_MAGIC, salt, nonce, box.encrypt(nonce, bytes(plaintext), _MAGIC)))


def unseal(key: bytes, sealed: bytes | memoryview, name: str = "a file") -> bytes:
    """The plaintext of a sealed file; IMError(DATABASE_ERROR) when it does not open."""
    data = memoryview(sealed)
    if len(data) < OVERHEAD or bytes(data[:len(_MAGIC)]) != _MAGIC:
        raise IMError(ErrorCode.DATABASE_ERROR,
                      f"{name} is not an encrypted imstore file (plaintext, or cut short)")
    salt = bytes(data[len(_MAGIC):len(_MAGIC) + SALT_BYTES])
    nonce = bytes(data[len(_MAGIC) + SALT_BYTES:_HEADER])
    AESGCM = _aead()
    from cryptography.exceptions import InvalidTag

    try:
        return bytes(AESGCM(subkey(key, b"file", salt)).decrypt(nonce, data[_HEADER:], _MAGIC))
    except InvalidTag as exc:
        raise IMError(ErrorCode.DATABASE_ERROR,
                      f"{name} does not decrypt: another key, or the file was changed") from exc


def sealed_length(stored: int) -> int:
    """The plaintext length of a sealed file of ``stored`` bytes."""
    return max(stored - OVERHEAD, 0)
