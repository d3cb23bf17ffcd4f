"""Errors: one exception type, `IMError`, carrying a numeric `ErrorCode`.

Rules kept here:
- the numbers follow the product's published error table and never change;
- every `IMError` has a sentence a developer can act on; a bad argument's sentence is written
  one way, here (`invalid`: "<field> must be <what>, not <value>"; the codec re-exports it);
- a wrapped driver error stays reachable as ``__cause__`` (raise ... from exc).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

__all__ = ["ErrorCode", "IMError", "invalid"]


class ErrorCode(IntEnum):
    """Error numbers of the product's published table."""

    GENERAL_ERROR = 1
    NETWORK_ERROR = 2
    DATABASE_ERROR = 3
    EXCEED_SERVICE_LIMIT = 4
    INVALID_PARAM = 110
    QUERY_PARAM_REACHES_LIMIT = 112
    USER_NOT_LOGIN = 201
    SERVER_NOT_REACHABLE = 300
    SERVER_TIMEOUT = 301
    SERVER_BUSY = 302
    SERVER_UNKNOWN_ERROR = 303
    FILE_NOT_FOUND = 400
    FILE_INVALID = 401
    FILE_UPLOAD_FAILED = 402
    FILE_DOWNLOAD_FAILED = 403
    FILE_TOO_LARGE = 405
    FILE_IS_EXPIRED = 407
    MESSAGE_INVALID = 500
    MESSAGE_INCLUDE_ILLEGAL_CONTENT = 501
    SERVICE_NOT_ENABLED = 505
    MESSAGE_EXPIRED = 506
    MESSAGE_WEBSOCKET_DISCONNECTED = 510
    MESSAGE_SIZE_LIMIT = 511
    CONVERSATION_NOT_EXIST = 1400


class IMError(Exception):
    """The one exception imstore raises for anything a caller can get wrong or meet at run time.

    Attributes:
        code: the `ErrorCode`.
        description: what went wrong and what to do about it.
    """

    def __init__(self, code: ErrorCode | int, description: str) -> None:
        self.code = ErrorCode(code)
        self.description = description
        super().__init__(code, description)

    def __str__(self) -> str:
        return f"[{int(self.code)} {self.code.name}] {self.description}"

    def __repr__(self) -> str:
        return f"IMError({self.code.name}, {self.description!r})"

    def __reduce__(self) -> tuple[type[IMError], tuple[int, str]]:
        return (IMError, (int(self.code), self.description))


def invalid(field: str, what: str, value: Any, code: ErrorCode = ErrorCode.INVALID_PARAM) -> IMError:
    """An `IMError` saying that ``field`` must be ``what``."""
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return IMError(code, f"{field} must be {what}, not {shown}")
