"""History as this user sees it: pages of a room, the conversation list, one-way deletes.

Rules kept here:
- history cursors are Matrix pagination tokens wrapped in the shared cursor format; they stay
  valid while the room grows; pages are filtered by the shared `FetchOptions` filter (the sender
  also server-side, through the ``/messages`` filter) and start just past the time bound of
  the direction they page in (``/timestamp_to_event``), so events sharing the bound's time are
  all reached: pages follow the server's order (its tokens), never times alone; a page carries
  every event live sync would store (messages, stickers, encrypted and unknown events: the
  ``/messages`` filter leaves out only `_mapping.HISTORY_NOT_TYPES`);
- one-way deletes live in this user's room account data (``io.imstore.hidden``: ids, ``before``,
  ``deleted_at``) and are applied here, to pages and to the conversation list;
- a conversation this user left or that was deleted reads as empty (one-to-one) or
  CONVERSATION_NOT_EXIST (groups), after one fresh look-up of its room;
- the conversation list is the joined rooms with their newest visible message, newest first, and
  the server's unread (notification) count: one filtered ``/sync`` answers it for every room
  (a page of 20 costs that request and the invites check, not three requests per room), and
  the next pages of a listing page through what it answered for `LIST_KEPT_SECONDS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import ErrorCode, IMError
from ...message import ChatType, Conversation, CursorResult, FetchOptions, Message
from .. import check_page_size, check_remove_args
from .._cursor import decode_cursor, encode_cursor
from .._filter import goes_up, keeps, past_window
from . import _mapping as mp
from . import _requests as rq
from ._api import Api, MatrixError
from ._events import EventCache
from ._link import log
from ._reads import ReadPositions
from ._rich import RichRooms, conversation_state
from ._rooms import Rooms

__all__ = ["History"]

MAX_PAGES = 20  # /messages calls for one history page (filtered-out events make pages short)
LIST_MESSAGES = 10  # newest messages per room in the list's sync (edits and hidden ones skipped)
LIST_KEPT_SECONDS = 60.0  # the next pages of a listing page through it for this long


class History:
    """The `SyncAdapter` calls, for one user."""

    def __init__(self, api: Api, rooms: Rooms, events: EventCache, reads: ReadPositions,
                 rich: RichRooms, now: Callable[[], int]) -> None:
        self.rich = rich
        self.api = api
        self.rooms = rooms
        self.events = events
        self.reads = reads
        self.now = now
        self.mxid = rooms.mxid
        self._listed: tuple[float, list[tuple[int, str, Conversation]]] | None = None

    async def hidden(self, room_id: str) -> dict[str, Any]:
        try:
            return await self.api.call(rq.room_account_data(self.mxid, room_id, mp.HIDDEN))
        except MatrixError as exc:
            if exc.status == 404:
                return {}
            raise

    async def _put_hidden(self, room_id: str, data: dict[str, Any]) -> None:
        await self.api.call(rq.room_account_data(self.mxid, room_id, mp.HIDDEN, data))

    @staticmethod
    def is_hidden(msg: Message, hidden: dict[str, Any]) -> bool:
        ids = hidden.get("ids")
        ids = ids if isinstance(ids, list) else ()
        return (msg.msg_id in ids or (msg.local_id is not None and msg.local_id in ids)
                or (msg.server_time or 0) < mp.as_int(hidden.get("before")))

    async def _start_token(self, room: str, options: FetchOptions) -> tuple[bool, str | None]:
        """(whether anything lies in the window, the token to start paging from)."""
        up = goes_up(options)
        edge = options.end_time if up else options.start_time
        if edge is None:
            return True, None
        # one past the edge: the bounds are inclusive, and of several events sharing the edge's
        # time the server may name any one; paging from past them reaches them all
        event_id = await self.events.at_time(room, edge + 1 if up else max(0, edge - 1),
                                             "b" if up else "f")
        if event_id is None:
            return False, None
        ctx = await self.api.call(rq.context(room, event_id))
        token = ctx.get("end") if up else ctx.get("start")
        return True, token if isinstance(token, str) else None

    async def page(self, conv_id: str, chat_type: ChatType, cursor: str | None, limit: int,
                   options: FetchOptions, *, retried: bool = False) -> CursorResult[Message]:
        check_page_size(limit)
        room = await self.rooms.room_for(conv_id, chat_type, create=False)
        if room is None:
            return self._none(conv_id, chat_type)
        info = await self.rooms.info(room)
        up = goes_up(options)
        token: str | None = decode_cursor(cursor, "h", str)[0] if cursor else None
        if token is None:
            anything, token = await self._start_token(room, options)
            if not anything:
                return CursorResult([], None)
        hidden = await self.hidden(room)
        read_ts = await self.reads.position(room)
        filt = mp.messages_filter(**({"senders": [self.rooms.mx(options.sender)]}
                                     if options.sender else {}))
        items: list[Message] = []
        done = False
        for _ in range(MAX_PAGES):
            try:
                page = await self.api.call(rq.messages(room, "b" if up else "f", limit - len(items),
                                                       from_=token, filter_=filt))
            except MatrixError as exc:
                if exc.status != 403 or cursor is not None or items or retried:
                    raise
                self.rooms.forget(room)  # this user left, or the room was deleted
                if await self.rooms.room_for(conv_id, chat_type, create=False) is None:
                    return self._none(conv_id, chat_type, exc)
                return await self.page(conv_id, chat_type, cursor, limit, options, retried=True)
            chunk = page.get("chunk")
            chunk = chunk if isinstance(chunk, list) else []
            for ev in chunk:
                msg = self._message(room, info, ev, read_ts)
                if msg is None or self.is_hidden(msg, hidden):
                    continue
                if past_window(msg, options):
                    done = True
                    break
                if keeps(msg, options):
                    items.append(msg)
            end = page.get("end")
            token = end if isinstance(end, str) and end else None
            if done or token is None or not chunk:
                done = True
                break
            if len(items) >= limit:
                break
        if up:
            items.reverse()
        return CursorResult(items, None if done or token is None else encode_cursor("h", token))

    def _message(self, room: str, info: mp.RoomInfo, ev: Any,
                 read_ts: int | None) -> Message | None:
        """A history event as a message; None (and logged) when it is bad."""
        if not isinstance(ev, dict):
            return None
        self.events.see(room, ev)
        try:
            return mp.event_to_message(ev, info, self.mxid, self.rooms.server_name, history=True,
                                       read_up_to=read_ts)
        except (mp.BadEventError, ValueError, TypeError) as exc:
            log.warning("ignored a bad history event in %s: %s", room, exc)
            return None

    @staticmethod
    def _none(conv_id: str, chat_type: ChatType,
              cause: Exception | None = None) -> CursorResult[Message]:
        if chat_type == ChatType.CHAT:
            return CursorResult([], None)
        raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                      f"there is no {chat_type.name} {conv_id!r} on the server") from cause

    async def conversations(self, cursor: str | None, limit: int) -> CursorResult[Conversation]:
        """Joined rooms with their newest visible message, newest first: one filtered
        ``/sync`` lists them all (`rq.list_filter`); the next pages of that listing, asked
        within `LIST_KEPT_SECONDS`, page through it without asking again."""
        check_page_size(limit)
        bound = decode_cursor(cursor, "c", int, str) if cursor else None
        kept = self._listed
        if bound is None or kept is None or time.monotonic() - kept[0] > LIST_KEPT_SECONDS:
            kept = self._listed = (time.monotonic(), await self._list())
        rows = kept[1]
        if bound is not None:
            rows = [r for r in rows if (-r[0], r[1]) > (-bound[0], bound[1])]
        page_rows = rows[:limit]
        more = len(rows) > limit
        return CursorResult([c for _, _, c in page_rows],
                            encode_cursor("c", page_rows[-1][0], page_rows[-1][1]) if more
                            else None)

    async def _list(self) -> list[tuple[int, str, Conversation]]:
        """Every listed conversation as ``(last message time, room, conversation)``, sorted."""
        answer = await self.api.call(rq.sync(
            rq.list_filter(LIST_MESSAGES, [mp.CONV_STATE, "m.room.name", "m.room.topic"],
                           [mp.HIDDEN, "m.fully_read", *rq.ROOM_STATE_DATA],
                           mp.HISTORY_NOT_TYPES), None,
            rq.fresh_timeout(self.now())))
        for ev in mp.events_of(answer.get("account_data")):
            if mp.as_obj(ev).get("type") == "m.direct":
                self.rooms.set_direct(mp.as_obj(ev).get("content"))
        rows: list[tuple[int, str, Conversation]] = []
        for room_id, room in mp.as_obj(mp.as_obj(answer.get("rooms")).get("join")).items():
            if not isinstance(room, dict):
                continue
            timeline = mp.as_obj(room.get("timeline"))
            events = mp.events_of(timeline)
            info = await self.rooms.info(room_id, mp.events_of(room.get("state")) + events,
                                         ask=False)
            extra = {e.get("type"): mp.as_obj(e.get("content"))
                     for e in mp.events_of(room.get("account_data")) if isinstance(e, dict)}
            hidden = extra.get(mp.HIDDEN, {})
            read_ts = _read_position(self.mxid, events, room, extra.get("m.fully_read", {}))
            msgs = [m for m in (self._message(room_id, info, ev, read_ts) for ev in events)
                    if m is not None and not self.is_hidden(m, hidden)]
            # the server's count leaves out what came before this user joined (a DM's first
            # message): the messages after the read position in hand count too
            unread = max(mp.as_int(mp.as_obj(room.get("unread_notifications")).get(
                "notification_count")), sum(m.is_read is False for m in msgs), 0)
            self.rooms.unread[room_id] = unread
            last = msgs[-1] if msgs else None
            if last is None and timeline.get("limited") is True:
                last = await self._last_message(room_id, info, hidden)  # edits, hidden ones
            if last is None or (last.server_time or 0) <= mp.as_int(hidden.get("deleted_at")):
                continue
            if unread == 0 and last.is_read is False:
                last.is_read = True  # the server counts nothing unread
            self.rich.take_account_data(room_id, mp.events_of(room.get("account_data")))
            pinned_at, marks = conversation_state(self.rich.tags.get(room_id, {}),
                                                  self.rich.unread.get(room_id, False))
            rows.append((last.server_time or 0, room_id, Conversation(
                info.conv_id, info.chat_type, unread, last, last.timestamp,
                title=_title(mp.events_of(room.get("state"))) if info.chat_type != ChatType.CHAT
                else None, pinned_at=pinned_at, marks=marks)))
        rows.sort(key=lambda r: (-r[0], r[1]))
        return rows

    async def _last_message(self, room: str, info: mp.RoomInfo,
                            hidden: dict[str, Any]) -> Message | None:
        """The newest visible message of a room, from one ``/messages`` page."""
        page = await self.api.call(rq.messages(room, "b", 50, filter_=mp.messages_filter()))
        read_ts = await self.reads.position(room)
        for ev in mp.events_of(page, "chunk"):
            msg = self._message(room, info, ev, read_ts)
            if msg is not None and not self.is_hidden(msg, hidden):
                return msg
        return None

    async def remove(self, conv_id: str, chat_type: ChatType, msg_ids: Sequence[str] | None,
                     before: int | None) -> None:
        """One-way delete: kept in this user's room account data and applied here."""
        check_remove_args(msg_ids, before)
        room = await self.rooms.existing(conv_id, chat_type)
        hidden = await self.hidden(room)
        if msg_ids is not None:
            old = hidden.get("ids")
            hidden["ids"] = sorted(set(old if isinstance(old, list) else ()) | set(msg_ids))
        else:
            hidden["before"] = max(mp.as_int(hidden.get("before")), int(before or 0))
        await self._put_hidden(room, hidden)

    async def delete(self, conv_id: str, chat_type: ChatType, delete_messages: bool) -> None:
        """With ``delete_messages``: Synapse's admin room delete (purge), for everyone. Without:
        the conversation leaves this user's list and its history stays."""
        room = await self.rooms.existing(conv_id, chat_type)
        if not delete_messages:
            hidden = await self.hidden(room)
            hidden["deleted_at"] = self.now()
            await self._put_hidden(room, hidden)
            return
        try:
            await self.api.call(rq.admin_delete_room(room))
        except MatrixError as exc:
            if exc.status in (403, 404) and exc.errcode in ("M_FORBIDDEN", "M_UNRECOGNIZED"):
                raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                              "deleting a conversation for everyone needs a Synapse server "
                              "admin account") from exc
            raise
        self.rooms.forget(room)
        if chat_type == ChatType.CHAT:
            return  # a chat has no alias; a new one gets a new room
        try:  # a new conversation with the same id gets a new room
            await self.api.call(rq.delete_alias(self.rooms.alias(conv_id, chat_type)))
        except MatrixError:
            pass  # the room delete took it already


def _read_position(me: str, events: list[Any], room: dict[str, Any],
                   fully_read: dict[str, Any]) -> int | None:
    """This user's read position in a listed room (server time), from its ``m.read`` receipt and
    ``m.fully_read`` marker: an event among ``events`` gives its time; a receipt on another one
    gives the time it was made. None when neither says."""
    times = {e.get("event_id"): mp.as_int(e.get("origin_server_ts"))
             for e in events if isinstance(e, dict)}
    found: list[int] = []
    marker = fully_read.get("event_id")
    if marker in times:
        found.append(times[marker])
    for ev in mp.events_of(room.get("ephemeral")):
        if mp.as_obj(ev).get("type") != "m.receipt":
            continue
        for event_id, kinds in mp.as_obj(mp.as_obj(ev).get("content")).items():
            for kind in ("m.read", "m.read.private"):
                mine = mp.as_obj(mp.as_obj(mp.as_obj(kinds).get(kind)).get(me))
                if mine:
                    found.append(times.get(event_id) or mp.as_int(mine.get("ts")))
    return max(found) if found else None


def _title(state: list[Any]) -> str | None:
    """A room's name (``m.room.name``), else its topic; None when it has neither."""
    found = {mp.as_obj(e).get("type"): mp.as_obj(mp.as_obj(e).get("content")) for e in state}
    name = mp.as_str(found.get("m.room.name", {}).get("name"))
    return name or mp.as_str(found.get("m.room.topic", {}).get("topic")) or None
