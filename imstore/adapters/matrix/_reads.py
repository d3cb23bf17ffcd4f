"""Read positions: every member's ``m.read`` receipt per room, and what they mean to imstore.

Rules kept here:
- Matrix keeps one "read up to here" position per member and room; a position never moves back
  (a receipt on an older event than the known one is ignored);
- this user's own position decides what a first sync and history call read: the newer of its
  ``m.read`` receipt and its ``m.fully_read`` marker;
- this user's own receipt or ``m.fully_read`` marker moved by another device is a conversation
  read by this user up to that event (the client marks read what it covers);
- another member's receipt in a one-to-one room is a read ack of this user's message it names
  and a conversation read up to that event; in a group it is a group read ack of every message
  this user sent with ``need_group_ack`` at or before it, each announced once per reader;
- a receipt on an event the adapter cannot place is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import IMError
from ...lifecycle import is_mine
from ...message import ChatType, CursorResult, GroupReadAck
from .. import check_page_size
from .._cursor import decode_cursor, encode_cursor
from . import _mapping as mp
from . import _requests as rq
from ._api import Api
from ._events import EventCache
from ._link import Link
from ._rooms import Rooms

__all__ = ["ReadPositions"]


class ReadPositions:
    """Receipts seen and made, per room and member."""

    def __init__(self, api: Api, rooms: Rooms, events: EventCache, link: Link,
                 now: Callable[[], int]) -> None:
        self.api = api
        self.rooms = rooms
        self.events = events
        self.link = link
        self.now = now
        self.mxid = rooms.mxid
        self.receipts: dict[str, dict[str, tuple[str, int, int]]] = {}  # room: user: (ev, ev ts, ts)
        self.reported: set[tuple[str, str]] = set()  # (event, reader) group acks announced

    def read_ts(self, room_id: str) -> int | None:
        """The server time of the event this user's own receipt is on."""
        mine = self.receipts.get(room_id, {}).get(self.mxid)
        return mine[1] if mine else None

    async def position(self, room_id: str) -> int | None:
        """The server time of the newest event this user has read in the room."""
        known = self.read_ts(room_id)
        try:
            marker = await self.api.call(rq.room_account_data(self.mxid, room_id, "m.fully_read"))
            event_id = marker.get("event_id")
            if not isinstance(event_id, str):
                return known
            _, _, ts = await self.events.event(room_id, event_id)
        except IMError:
            return known
        return max(ts, known or 0)

    def _record(self, room_id: str, reader: str, event_id: str, ev_ts: int, ts: int) -> bool:
        """Move ``reader``'s position; False when it would go back."""
        old = self.receipts.setdefault(room_id, {}).get(reader)
        if old is not None and old[1] >= ev_ts:
            return False
        self.receipts[room_id][reader] = (event_id, ev_ts, ts)
        return True

    async def note(self, room_id: str, content: Any, *, announce: bool = False) -> None:
        """Take one ``m.receipt`` content; ``announce`` tells the handler what others read."""
        if not isinstance(content, dict):
            return
        info = await self.rooms.info(room_id)
        for event_id, kinds in content.items():
            for kind in ("m.read", "m.read.private"):
                for reader, data in mp.as_obj(mp.as_obj(kinds).get(kind)).items():
                    try:
                        _, sender, ev_ts = await self.events.event(room_id, event_id)
                    except IMError:
                        continue
                    ts = mp.as_int(mp.as_obj(data).get("ts")) or self.now()
                    if not self._record(room_id, reader, event_id, ev_ts, ts):
                        continue
                    if announce and is_mine(reader, self.mxid):
                        self._announce_mine(info, ev_ts)
                    elif announce:
                        self._announce(info, reader, event_id, sender, ev_ts, ts)

    async def note_fully_read(self, room_id: str, content: Any) -> None:
        """This user's ``m.fully_read`` marker moved (on another device: this one moves its
        receipt first): what it covers is read here too."""
        event_id = mp.as_obj(content).get("event_id")
        if not isinstance(event_id, str):
            return
        try:
            _, _, ev_ts = await self.events.event(room_id, event_id)
        except IMError:
            return
        if self._record(room_id, self.mxid, event_id, ev_ts, self.now()):
            self._announce_mine(await self.rooms.info(room_id), ev_ts)

    def _announce_mine(self, info: mp.RoomInfo, ev_ts: int) -> None:
        """This user read the room up to ``ev_ts`` on another device."""
        me = self.rooms.im(self.mxid)
        if self.link.up_to_ok:
            self.link.emit("on_conversation_read", info.conv_id, me, ev_ts)
        elif ev_ts >= self.events.latest.get(info.room_id, 0):
            self.link.emit("on_conversation_read", info.conv_id, me)

    def _announce(self, info: mp.RoomInfo, reader: str, event_id: str, sender: str,
                  ev_ts: int, ts: int) -> None:
        if info.chat_type == ChatType.CHAT:
            if is_mine(sender, self.mxid):
                self.link.emit("on_read_acks", [event_id])
            if self.link.up_to_ok:
                self.link.emit("on_conversation_read", info.conv_id, self.rooms.im(reader), ev_ts)
            elif ev_ts >= self.events.latest.get(info.room_id, 0):
                # a handler without ``up_to`` takes it as "read everything": only say so when
                # the receipt is on the newest message known here
                self.link.emit("on_conversation_read", info.conv_id, self.rooms.im(reader))
            return
        acks = []
        for eid, sent in sorted(self.events.group_acked.get(info.room_id, {}).items(),
                                key=lambda kv: kv[1]):
            if sent <= ev_ts and (eid, reader) not in self.reported:
                self.reported.add((eid, reader))
                acks.append(GroupReadAck(eid, info.conv_id, self.rooms.im(reader), ts,
                                         f"R{eid}:{reader}"))
        if acks:
            self.link.emit("on_group_read_acks", acks)

    async def mark_read(self, room_id: str, event_id: str) -> None:
        """Move this user's receipt and fully-read marker to ``event_id``. The position is
        recorded before the request, so the sync's echo of it is not taken for a read on
        another device."""
        try:
            _, _, ev_ts = await self.events.event(room_id, event_id)
        except IMError:
            ev_ts = None
        if ev_ts is not None:
            self._record(room_id, self.mxid, event_id, ev_ts, self.now())
        await self.api.call(rq.read_markers(room_id, event_id))

    def readers(self, room_id: str, msg_id: str, sender: str, sent_at: int, conv_id: str,
                cursor: str | None, limit: int) -> CursorResult[GroupReadAck]:
        """The members whose position is at or after a message, in the order they read."""
        check_page_size(limit)
        readers = sorted(((u, r) for u, r in self.receipts.get(room_id, {}).items()
                          if not is_mine(u, sender) and r[1] >= sent_at), key=lambda ur: ur[1][2])
        start = decode_cursor(cursor, "a", int)[0] if cursor else 0
        page = readers[start:start + limit]
        acks = [GroupReadAck(msg_id, conv_id, self.rooms.im(u), r[2], f"R{msg_id}:{u}")
                for u, r in page]
        return CursorResult(acks, encode_cursor("a", start + limit)
                            if start + limit < len(readers) else None)
