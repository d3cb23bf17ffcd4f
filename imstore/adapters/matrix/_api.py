"""A thin Matrix client-server API over httpx: one request function, errors as `IMError`.

Rules kept here:
- every failure leaves as an `IMError` (subclass `MatrixError` when the server answered) with the
  httpx exception or the server's ``errcode`` kept: network failures are NETWORK_ERROR, time-outs
  SERVER_TIMEOUT, 429 SERVER_BUSY, 5xx SERVER_UNKNOWN_ERROR, 401 USER_NOT_LOGIN, 413
  FILE_TOO_LARGE, other 4xx INVALID_PARAM (callers narrow them where they know better);
- nothing here keeps state but the base URL and the access token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote

import httpx

from ...errors import ErrorCode, IMError

__all__ = ["Api", "MatrixError", "q"]


def q(part: str) -> str:
    """Quote one path segment (room ids, event ids, aliases and txn ids contain ``!$#:``)."""
    return quote(part, safe="")


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


class Api:
    """Requests to one homeserver with one access token."""

    def __init__(self, base_url: str, http: httpx.AsyncClient, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.token = token

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: dict[str, Any] | None = None, content: bytes | None = None,
                      headers: dict[str, str] | None = None, timeout: float | None = None,
                      raw: bool = False) -> Any:
        """Call ``path`` (``/_matrix/...`` or ``/_synapse/...``); returns the JSON answer, or the
        `httpx.Response` when ``raw``."""
        hdrs = dict(headers or {})
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        kw: dict[str, Any] = {"params": params, "headers": hdrs}
        if body is not None:
            kw["content"] = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif content is not None:
            kw["content"] = content
        if timeout is not None:
            kw["timeout"] = timeout
        try:
            resp = await self.http.request(method, self.base_url + path, **kw)
        except httpx.TimeoutException as exc:
            raise IMError(ErrorCode.SERVER_TIMEOUT,
                          f"the homeserver did not answer {method} {path} in time") from exc
        except httpx.HTTPError as exc:
            raise IMError(ErrorCode.NETWORK_ERROR,
                          f"cannot reach the homeserver at {self.base_url}: {exc!r}") from exc
        if resp.status_code >= 400:
            errcode, error, data = "", resp.text[:300], {}
            try:
                data = resp.json()
                errcode, error = str(data.get("errcode", "")), str(data.get("error", error))
            except (ValueError, AttributeError):
                data = {}
            raise MatrixError(_code_for(resp.status_code, errcode),
                              f"{method} {path.split('?')[0]}: {resp.status_code} {errcode} {error}",
                              resp.status_code, errcode, data if isinstance(data, dict) else {})
        if raw:
            return resp
        return resp.json() if resp.content else {}


async def register_with_secret(api: Api, username: str, password: str, shared_secret: str, *,
                               admin: bool = False) -> dict[str, Any]:
    """Synapse's shared-secret registration (admin API): returns user_id, access_token, device_id."""
    nonce = (await api.request("GET", "/_synapse/admin/v1/register"))["nonce"]
    mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(),
                             b"admin" if admin else b"notadmin"]))
    answer: dict[str, Any] = await api.request(
        "POST", "/_synapse/admin/v1/register",
        body={"nonce": nonce, "username": username, "password": password, "admin": admin,
              "mac": mac.hexdigest()})
    return answer
