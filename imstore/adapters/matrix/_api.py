"""The one place the Matrix adapter does HTTP: a `Request` in, a checked JSON object out.

Rules kept here:
- every failure leaves as an `IMError` (subclass `MatrixError` when the server answered with an
  error) with the httpx exception or the server's ``errcode`` kept: network failures are
  NETWORK_ERROR, time-outs SERVER_TIMEOUT, 429 SERVER_BUSY, 5xx SERVER_UNKNOWN_ERROR, 401
  USER_NOT_LOGIN, 413 FILE_TOO_LARGE, other 4xx INVALID_PARAM (callers narrow them where they
  know better);
- the server is not trusted: an answer is read as a stream and refused (SERVER_UNKNOWN_ERROR) the
  moment it passes `Bounds.max_answer_bytes`; a whole exchange, headers to last byte, is bounded
  in time (`Bounds.answer_timeout`, or the caller's); a 2xx answer that is not a JSON object is
  SERVER_UNKNOWN_ERROR naming the call — never a raw ``ValueError`` or ``KeyError``;
- nothing here keeps state but the base URL, the bounds and the access token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from ...codec import Limits
from ...errors import ErrorCode, IMError
from ._requests import Request

__all__ = ["Api", "Bounds", "MatrixError", "malformed", "need", "wire_errors"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the adapter accepts from a homeserver (configure through `MatrixAdapter.login`)."""

    max_answer_bytes: int = 64 * 1024 * 1024  # one JSON answer, a /sync included
    max_media_bytes: int = Limits().max_file_bytes  # one downloaded file or thumbnail
    answer_timeout: float = 60.0  # seconds for one exchange (a sync: its poll time + this)
    media_timeout: float = 600.0  # seconds for one download
    sync_slice: int = 200  # events handled between two yields to the event loop


class MatrixError(IMError):
    """The homeserver answered with an error: its HTTP ``status`` and Matrix ``errcode``."""

    def __init__(self, code: ErrorCode, description: str, status: int, errcode: str,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(code, description)
        self.status = status
        self.errcode = errcode
        self.data = data or {}

    def __reduce__(self) -> tuple[type[IMError], tuple[int, str]]:
        return (IMError, (int(self.code), self.description))


def malformed(what: str, why: str) -> IMError:
    """The error for an answer the adapter cannot use."""
    return IMError(ErrorCode.SERVER_UNKNOWN_ERROR,
                   f"the homeserver's answer to {what} is malformed ({why}); it was ignored — "
                   "check the homeserver, or report it to its operator")


def _code_for(status: int, errcode: str) -> ErrorCode:
    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        return ErrorCode.SERVER_BUSY
    if status >= 500:
        return ErrorCode.SERVER_UNKNOWN_ERROR
    if status == 401 or errcode in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
        return ErrorCode.USER_NOT_LOGIN
    if status == 413 or errcode == "M_TOO_LARGE":
        return ErrorCode.FILE_TOO_LARGE
    return ErrorCode.INVALID_PARAM


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _name(req: Request) -> str:
    return f"{req.method} {req.path.split('?')[0]}"


@contextmanager
def wire_errors(what: str) -> Iterator[None]:
    """Turn the transport's failures while ``what`` runs into `IMError`: a time-out is
    SERVER_TIMEOUT, anything else NETWORK_ERROR, the httpx exception kept as the cause."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise IMError(ErrorCode.SERVER_TIMEOUT,
                      f"the homeserver did not answer {what} in time") from exc
    except httpx.HTTPError as exc:
        raise IMError(ErrorCode.NETWORK_ERROR,
                      f"the homeserver connection broke during {what}: {exc!r}") from exc


class Api:
    """Requests to one homeserver with one access token."""

    def __init__(self, base_url: str, http: httpx.AsyncClient, token: str | None = None,
                 bounds: Bounds | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.token = token
        self.bounds = bounds or Bounds()

    def _build(self, req: Request, content: bytes | None, headers: dict[str, str] | None
               ) -> httpx.Request:
        hdrs = dict(headers or {})
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data = content
        if req.body is not None:
            data = json.dumps(req.body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        return self.http.build_request(req.method, self.base_url + req.path, content=data,
                                       headers=hdrs)

    @asynccontextmanager
    async def stream(self, req: Request, *, content: bytes | None = None,
                     headers: dict[str, str] | None = None) -> AsyncIterator[httpx.Response]:
        """The server's 2xx answer to ``req``, its body not read yet; an error answer raises."""
        with wire_errors(f"{_name(req)} at {self.base_url}"):
            resp = await self.http.send(self._build(req, content, headers), stream=True)
        try:
            if resp.status_code >= 400:
                raw = await self._read(resp, req, 64 * 1024, refuse=False)
                raise self._error(req, resp.status_code, raw)
            yield resp
        finally:
            await resp.aclose()

    async def _read(self, resp: httpx.Response, req: Request, limit: int, *,
                    refuse: bool = True) -> bytes:
        """The body, refused (or, with ``refuse=False``, cut) past ``limit`` bytes."""
        declared = resp.headers.get("content-length", "")
        if refuse and declared.isdigit() and int(declared) > limit:
            raise malformed(_name(req), f"{declared} bytes, more than the {limit} accepted")
        parts: list[bytes] = []
        size = 0
        with wire_errors(_name(req)):
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    if not refuse:
                        break
                    raise malformed(_name(req), f"more than the {limit} bytes accepted")
                parts.append(chunk)
        return b"".join(parts)[:limit]

    def _error(self, req: Request, status: int, raw: bytes) -> MatrixError:
        errcode, error, data = "", raw[:300].decode("utf-8", "replace"), {}
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            data = parsed
            errcode, error = str(parsed.get("errcode", ""))[:100], str(parsed.get("error", error))[:300]
        return MatrixError(_code_for(status, errcode), f"{_name(req)}: {status} {errcode} {error}",
                           status, errcode, data)

    async def call(self, req: Request, *, content: bytes | None = None,
                   headers: dict[str, str] | None = None,
                   timeout: float | None = None) -> dict[str, Any]:
        """Send ``req``; the JSON object it answers (``{}`` for an empty body)."""
        limit = timeout if timeout is not None else self.bounds.answer_timeout
        try:
            async with asyncio.timeout(limit):
                async with self.stream(req, content=content, headers=headers) as resp:
                    raw = await self._read(resp, req, self.bounds.max_answer_bytes)
        except TimeoutError as exc:
            raise IMError(ErrorCode.SERVER_TIMEOUT,
                          f"the homeserver did not answer {_name(req)} within {limit:g} s") from exc
        if not raw:
            return {}
        try:
            answer = json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise malformed(_name(req), "not JSON") from exc
        if not isinstance(answer, dict):
            raise malformed(_name(req), f"a JSON {type(answer).__name__}, not an object")
        return answer


def need(answer: dict[str, Any], key: str, kind: type[T], what: str) -> T:
    """``answer[key]``, which must be a ``kind``; else the malformed-answer error."""
    value = answer.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise malformed(what, f"{key!r} is {type(value).__name__}, not {kind.__name__}")
    return value


async def register_with_secret(api: Api, username: str, password: str, shared_secret: str, *,
                               admin: bool = False) -> dict[str, Any]:
    """Synapse's shared-secret registration (admin API): returns user_id, access_token, device_id."""
    path = "/_synapse/admin/v1/register"
    nonce = need(await api.call(Request("GET", path)), "nonce", str, "the registration nonce")
    mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(),
                             b"admin" if admin else b"notadmin"]))
    return await api.call(Request("POST", path, {
        "nonce": nonce, "username": username, "password": password, "admin": admin,
        "mac": mac.hexdigest()}))
