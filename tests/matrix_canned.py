"""A canned homeserver for offline tests of the Matrix adapter: routes answered from a table,
through the adapter's HTTP client hook (``httpx.MockTransport``); no Synapse, no network.

``hs.on(method, path_regex, *answers)``: each request matching is answered with the next answer
(a dict is a 200 JSON answer, an int a bare status, an ``httpx.Response`` itself, a callable
``request -> answer``); the last answer repeats. ``/sync`` has its own queue (`hs.sync`): once it is
empty a sync waits, as a long poll does, until another answer is queued or the adapter closes.
Every request is kept in ``hs.requests``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from imstore import ConnectionState
from imstore.adapters.matrix import MatrixAdapter

BASE = "http://hs.test"
ME = "@alice:hs.test"
BOB = "@bob:hs.test"
DM = "!dm:hs.test"
GROUP = "!g:hs.test"

Answer = Any


async def as_response(answer: Answer, request: httpx.Request) -> httpx.Response:
    if callable(answer):
        answer = answer(request)
        if inspect.isawaitable(answer):
            answer = await answer
    if isinstance(answer, httpx.Response):
        return answer
    if isinstance(answer, int):
        return httpx.Response(answer, json={"errcode": "M_UNKNOWN", "error": "canned"})
    return httpx.Response(200, json=answer)


class Homeserver:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], list[Answer]]] = []
        self.requests: list[httpx.Request] = []
        self.syncs: list[Answer] = []
        self.sync_count = 0
        self._more = asyncio.Event()
        self._served: dict[int, asyncio.Event] = {}
        self.transport = httpx.MockTransport(self._handle)

    def on(self, method: str, pattern: str, *answers: Answer) -> None:
        self.routes.insert(0, (method, re.compile(pattern), list(answers)))

    def sync(self, *answers: Answer) -> None:
        """Queue sync answers (dicts get a ``next_batch`` when they have none)."""
        for a in answers:
            if isinstance(a, dict) and "next_batch" not in a:
                a = {**a, "next_batch": f"s{len(self.syncs) + 1}"}
            self.syncs.append(a)
        self._more.set()

    async def asked_sync(self, n: int) -> None:
        """Wait until the ``n``-th sync request came (so every earlier answer was handled)."""
        if self.sync_count >= n:
            return
        await asyncio.wait_for(self._served.setdefault(n, asyncio.Event()).wait(), 10)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = unquote(request.url.path)
        if request.method == "GET" and path.endswith("/sync") and self._is_loop(request):
            return await self._sync(request)
        for method, pattern, answers in self.routes:
            if method == request.method and pattern.search(path):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                return await as_response(answer, request)
        return httpx.Response(404, json={"errcode": "M_NOT_FOUND", "error": f"no route {path}"})

    @staticmethod
    def _is_loop(request: httpx.Request) -> bool:
        filt = parse_qs(urlsplit(str(request.url)).query).get("filter", ["{}"])[0]
        return '"limit": 0' not in filt and not is_list_sync(request)

    async def _sync(self, request: httpx.Request) -> httpx.Response:
        self.sync_count += 1
        event = self._served.get(self.sync_count)
        if event is not None:
            event.set()
        else:
            self._served[self.sync_count] = asyncio.Event()
            self._served[self.sync_count].set()
        while not self.syncs:
            self._more.clear()
            await self._more.wait()
        return await as_response(self.syncs.pop(0), request)

    def calls(self, method: str, pattern: str) -> list[httpx.Request]:
        rx = re.compile(pattern)
        return [r for r in self.requests
                if r.method == method and rx.search(unquote(r.url.path))]

    @staticmethod
    def body(request: httpx.Request) -> Any:
        return json.loads(request.content) if request.content else None

    @staticmethod
    def params(request: httpx.Request) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}


def is_list_sync(request: httpx.Request) -> bool:
    """Whether a ``/sync`` is the conversation list's (its timeline leaves out reactions)."""
    filt = parse_qs(urlsplit(str(request.url)).query).get("filter", ["{}"])[0]
    timeline = json.loads(filt).get("room", {}).get("timeline", {})
    return "m.reaction" in timeline.get("not_types", ())


def login_answer(user: str = ME) -> dict[str, Any]:
    return {"access_token": "tok", "user_id": user, "device_id": "DEV"}


async def adapter(hs: Homeserver, **kw: Any) -> MatrixAdapter:
    hs.on("POST", r"/login$", login_answer())
    hs.on("GET", r"/sync$", {"next_batch": "invites"})  # the invites-only sync
    return await MatrixAdapter.login(BASE, "alice", "pw", http_transport=hs.transport,
                                     poll_timeout=1.0, **kw)


async def keeping_adapter(hs: Homeserver, kept: dict[str, dict[str, Any]]) -> MatrixAdapter:
    """An `adapter` whose state (the sync position, the rooms) is kept in ``kept``, as an app
    keeps it in its store: a later one made with the same dict goes on from it."""
    a = await adapter(hs)
    a.keep_state(lambda name: kept.get(name, {}), kept.__setitem__)
    return a


def dm_rooms(hs: Homeserver, room: str = DM, peer: str = BOB) -> None:
    """A one-to-one room with ``peer``: the user's ``m.direct`` lists it (asked when no sync
    brought it), and its imstore state says so too."""
    direct: dict[str, list[str]] = hs.__dict__.setdefault("direct", {})
    direct.setdefault(peer, []).append(room)
    hs.on("GET", r"/account_data/m\.direct$", lambda request: direct)
    hs.on("GET", rf"/rooms/{re.escape(room)}/state/io\.imstore\.conversation/$",
          {"chat_type": "CHAT", "id": "", "members": sorted([ME, peer])})


def group_room(hs: Homeserver, room: str = GROUP, gid: str = "team") -> None:
    hs.on("GET", rf"/rooms/{re.escape(room)}/state/io\.imstore\.conversation/$",
          {"chat_type": "GROUP_CHAT", "id": gid, "members": [ME, BOB]})
    group_alias(hs, room, gid)


def group_alias(hs: Homeserver, room: str = GROUP, gid: str = "team") -> None:
    """The server's alias of group ``gid`` names ``room`` (which vouches for its state)."""
    hs.on("GET", rf"/directory/room/#imstore\.g\.{re.escape(gid)}:", {"room_id": room})


def msg_event(eid: str, text: str, *, sender: str = BOB, ts: int = 1_000, **content: Any
              ) -> dict[str, Any]:
    return {"type": "m.room.message", "event_id": eid, "sender": sender,
            "origin_server_ts": ts, "content": {"msgtype": "m.text", "body": text, **content}}


def joined(room: str, *events: Any, **extra: Any) -> dict[str, Any]:
    """A sync answer with ``events`` in the timeline of joined ``room``."""
    return {"rooms": {"join": {room: {"timeline": {"events": list(events)}, **extra}}}}


class Recorder:
    """A `TransportHandler` that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))

    def on_conversation_read(self, conv_id: str, reader: str, up_to: int | None = None) -> None:
        self.calls.append(("on_conversation_read", (conv_id, reader, up_to)))

    def got(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]

    def messages(self) -> list[Any]:
        return [m for args in self.got("on_messages") for m in args[0]]

    def states(self) -> list[ConnectionState]:
        return [args[0] for args in self.got("on_connection_state_changed")]


async def started(hs: Homeserver, *answers: Answer, **kw: Any) -> tuple[MatrixAdapter, Recorder]:
    """An adapter attached to a `Recorder`, its sync loop answered by ``answers``."""
    a = await adapter(hs, **kw)
    rec = Recorder()
    hs.sync(*answers)
    a.attach(rec)
    return a, rec


def run(coro: Any) -> Any:
    return asyncio.run(coro)
