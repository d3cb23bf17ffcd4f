"""What the adapter knows of single events: room, sender and time by event id.

Rules kept here:
- every event the adapter sees (sync, history, back-fill, ``GET /event``) goes through `see`,
  which records its room, sender and server time (and whether it is a reaction: its type
  survives a redaction, its key and message may not), wakes a send waiting for its echo, and notes
  the newest message time per room and this user's own ``need_group_ack`` messages;
- the cache is bounded (`MAX_EVENTS`, oldest forgotten first); an event not cached is asked of
  the server, and an unknown one is `IMError(MESSAGE_INVALID)`;
- an event without an event id string is not recorded (nothing to look it up by).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from ...errors import ErrorCode, IMError
from ...lifecycle import is_mine
from . import _mapping as mp
from . import _requests as rq
from ._api import Api, MatrixError, need

__all__ = ["MAX_EVENTS", "EventCache"]

MAX_EVENTS = 20_000
ECHO_WAIT = 0.25  # seconds a send waits for its own event to come back through the sync loop


class EventCache:
    """Events by id: ``(room, sender, server time)``."""

    def __init__(self, api: Api, mxid: str) -> None:
        self.api = api
        self.mxid = mxid
        self.events: OrderedDict[str, tuple[str, str, int]] = OrderedDict()
        self.echo: dict[str, asyncio.Future[int]] = {}  # sent events awaiting their sync echo
        self.latest: dict[str, int] = {}  # room: newest message time seen
        self.group_acked: dict[str, dict[str, int]] = {}  # room: my need_group_ack event: ts
        self.reactions: OrderedDict[str, None] = OrderedDict()  # the m.reaction events seen

    def is_reaction(self, event_id: str) -> bool:
        """Whether ``event_id`` is an ``m.reaction`` event seen here (a redacted one too)."""
        return event_id in self.reactions

    def get(self, event_id: str) -> tuple[str, str, int] | None:
        return self.events.get(event_id)

    def see(self, room_id: str, ev: dict[str, Any]) -> None:
        eid = ev.get("event_id")
        if not isinstance(eid, str):
            return
        ts = mp.as_int(ev.get("origin_server_ts"))
        sender = ev.get("sender")
        self.events[eid] = (room_id, sender if isinstance(sender, str) else "", ts)
        self.events.move_to_end(eid)
        waiting = self.echo.pop(eid, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(ts)
        if ev.get("type") == "m.room.message" and ts > self.latest.get(room_id, 0):
            self.latest[room_id] = ts
        while len(self.events) > MAX_EVENTS:
            self.events.popitem(last=False)
        if ev.get("type") == "m.reaction":
            self.reactions[eid] = None
            while len(self.reactions) > MAX_EVENTS:
                self.reactions.popitem(last=False)
        ns = mp.as_obj(mp.as_obj(ev.get("content")).get(mp.NS))
        if (isinstance(sender, str) and is_mine(sender, self.mxid)
                and ns.get("need_group_ack") is True and mp.replacement(ev) is None):
            self.note_group_ack(room_id, eid, ts)

    def note_group_ack(self, room_id: str, event_id: str, ts: int) -> None:
        """This user sent ``event_id`` asking for group read receipts."""
        self.group_acked.setdefault(room_id, {})[event_id] = ts

    async def event(self, room_id: str | None, event_id: str) -> tuple[str, str, int]:
        """(room, sender, ts) of an event, from the cache or the server."""
        known = self.events.get(event_id)
        if known is not None:
            return known
        if room_id is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no message {event_id!r} is known here")
        try:
            ev = await self.api.call(rq.event(room_id, event_id))
        except MatrixError as exc:
            raise IMError(ErrorCode.MESSAGE_INVALID,
                          f"no message {event_id!r} on the server") from exc
        if ev.get("event_id") != event_id:
            raise IMError(ErrorCode.MESSAGE_INVALID,
                          f"the homeserver answered another event for {event_id!r}")
        self.see(room_id, ev)
        return self.events[event_id]

    async def at_time(self, room_id: str, ts: int, direction: str) -> str | None:
        """The event nearest ``ts`` in ``direction`` (``b`` or ``f``); None when there is none."""
        try:
            found = await self.api.call(rq.timestamp_to_event(room_id, ts, direction))
        except MatrixError as exc:
            if exc.status == 404:
                return None
            raise
        return need(found, "event_id", str, "GET /timestamp_to_event")

    async def newest(self, room_id: str) -> str | None:
        """The id of the newest message of a room (seen on the way); None when it has none."""
        page = await self.api.call(rq.messages(room_id, "b", 1, filter_=mp.messages_filter()))
        chunk = page.get("chunk")
        newest = chunk[0] if isinstance(chunk, list) and chunk else None
        if not isinstance(newest, dict) or not isinstance(newest.get("event_id"), str):
            return None
        self.see(room_id, newest)
        return str(newest["event_id"])

    async def find(self, event_id: str, rooms: list[str]) -> tuple[str, str, int] | None:
        """(room, sender, ts) of an event, from the cache or looked for in ``rooms``."""
        known = self.events.get(event_id)
        for room in rooms if known is None else ():
            try:
                return await self.event(room, event_id)
            except IMError:
                continue
        return known

    async def event_time(self, room_id: str, event_id: str, *, syncing: bool) -> int:
        """The server time of an event this device just sent: from the sync loop's echo when it
        comes within moments (``syncing``: the long-poll answers as soon as the event is
        stored), else from ``GET /event``."""
        if event_id not in self.events and syncing:
            fut = self.echo.get(event_id)
            if fut is None:
                fut = self.echo[event_id] = asyncio.get_running_loop().create_future()
            try:
                return await asyncio.wait_for(asyncio.shield(fut), ECHO_WAIT)
            except TimeoutError:
                pass
            finally:
                self.echo.pop(event_id, None)
        return (await self.event(room_id, event_id))[2]
