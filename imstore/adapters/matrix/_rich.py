"""Rich messages over Matrix: reactions, pinned messages, and this user's conversation pin and
marks, both ways (the optional `Transport` methods, and what a sync says others did).

Rules kept here:
- a reaction is an ``m.reaction`` event with an ``m.annotation`` relation (its key); its own
  event id is the reaction's id, kept (`MAX_REACTIONS`, oldest forgotten first) with its message,
  key and sender so that its redaction can be told as a removal; a user reacting twice with one
  key gets the first reaction's id (the homeserver refuses the second);
- attribution: a reaction is its event's sender's; this user takes back only its own reactions
  (someone else's is `IMError(INVALID_PARAM)` and nothing is sent), and a redaction of a reaction
  by anyone else than its sender (a moderator, or a forgery) is not told as a removal;
- the pinned messages of a room are its ``m.room.pinned_events`` state (every member may set it
  in the rooms imstore creates); a change is told as one `PinEvent` per message that came or
  went, by the state event's sender;
- this user's pin of a conversation is the ``m.favourite`` room tag (the pin's time kept in its
  content), its marks ``u.<mark>`` tags, and `ConversationMark.UNREAD` is ``m.marked_unread``
  (the unstable ``com.famedly.marked_unread`` is read too); a change of either is told as the
  conversation's whole `ConversationState`; a read receipt of this user clears ``UNREAD``;
- this user's own changes are in the cache before their request, and the sync's echoes of them
  (which may come after a newer change) are expected: not told back and not written over the
  newer cache; a failed request puts the cache back;
- drafts and local data are not sent: Matrix has no place for them here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from ...errors import ErrorCode, IMError
from ...message import ChatType, ConversationMark, Message
from .. import ConversationState, PinEvent, ReactionEvent
from . import _mapping as mp
from . import _requests as rq
from ._api import Api, MatrixError, need
from ._events import EventCache
from ._link import log
from ._rooms import Rooms

__all__ = ["MAX_REACTIONS", "RichRooms", "RichTransport"]

T = TypeVar("T")

MAX_REACTIONS = 20_000
PINNED = "m.room.pinned_events"
FAVOURITE = "m.favourite"
MARK_TAG = "u."
MARKED_UNREAD = "m.marked_unread"
_UNREAD_TYPES = (MARKED_UNREAD, "com.famedly.marked_unread")
PINNED_AT = f"{mp.NS}.pinned_at"


def annotation(ev: dict[str, Any]) -> tuple[str, str] | None:
    """``(message event id, key)`` of an ``m.reaction`` event; None when it is none."""
    if ev.get("type") != "m.reaction":
        return None
    rel = mp.as_obj(mp.as_obj(ev.get("content")).get("m.relates_to"))
    target, key = rel.get("event_id"), rel.get("key")
    if rel.get("rel_type") != "m.annotation" or not isinstance(target, str) or not target:
        return None
    if not isinstance(key, str) or not key:
        return None
    return target, key


def pinned_ids(content: Any) -> list[str]:
    """The event ids an ``m.room.pinned_events`` content lists, in its order, once each."""
    got = mp.as_obj(content).get("pinned")
    out: list[str] = []
    for eid in got if isinstance(got, list) else ():
        if isinstance(eid, str) and eid and eid not in out:
            out.append(eid)
    return out


def conversation_state(tags: dict[str, Any], unread: bool) -> tuple[int | None, frozenset[str]]:
    """``(pinned_at, marks)`` of a room's tags and ``m.marked_unread`` flag."""
    fav = tags.get(FAVOURITE)
    pinned_at = None
    if isinstance(fav, dict):
        pinned_at = mp.as_int(fav.get(PINNED_AT), 0)
    marks = {t[len(MARK_TAG):] for t in tags if isinstance(t, str) and t.startswith(MARK_TAG)
             and len(t) > len(MARK_TAG)}
    if unread:
        marks.add(ConversationMark.UNREAD)
    return pinned_at, frozenset(marks)


def _unread_flag(content: Any) -> bool:
    return mp.as_obj(content).get("unread") is True


class RichRooms:
    """Reactions, pins and conversation states of one adapter."""

    def __init__(self, api: Api, rooms: Rooms, events: EventCache, now: Callable[[], int]) -> None:
        self.api = api
        self.rooms = rooms
        self.events = events
        self.now = now
        self.mxid = rooms.mxid
        # reaction event id -> (message event id, key, sender mxid)
        self.reactions: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self.pins: dict[str, list[str]] = {}  # room: the pinned events last seen
        self.tags: dict[str, dict[str, Any]] = {}  # room: this user's tags last seen
        self.unread: dict[str, bool] = {}  # room: this user's m.marked_unread last seen
        # (room, type): what this device wrote and the sync has not echoed yet, oldest first
        self.pending: dict[tuple[str, str], list[Any]] = {}

    def _user(self, mxid: str) -> str:
        return mp.from_mxid(mxid, self.rooms.server_name)

    # ------------------------------------------------------------------------ reactions

    def note_reaction(self, ev: dict[str, Any]) -> ReactionEvent | None:
        """The `ReactionEvent` of an ``m.reaction`` timeline event (kept for its removal)."""
        found = annotation(ev)
        eid, sender, ts = ev.get("event_id"), ev.get("sender"), mp.as_int(ev.get("origin_server_ts"))
        if found is None or not isinstance(eid, str) or not isinstance(sender, str):
            return None
        self.reactions[eid] = (found[0], found[1], sender)
        self.reactions.move_to_end(eid)
        while len(self.reactions) > MAX_REACTIONS:
            self.reactions.popitem(last=False)
        return ReactionEvent(found[0], found[1], self._user(sender), eid, time=ts)

    def removal(self, ev: dict[str, Any]) -> tuple[bool, ReactionEvent | None]:
        """Whether a redaction names a known reaction, and the removal it tells: None when its
        sender is not the reaction's (a moderator's or a forged one changes nothing here)."""
        rid = mp.redacted_id(ev)
        known = self.reactions.get(rid) if rid is not None else None
        if rid is None or known is None:
            return False, None
        msg_id, key, sender = known
        if ev.get("sender") != sender:
            log.warning("ignored the redaction of %s's reaction %s by %s", sender, rid,
                        ev.get("sender"))
            return True, None
        del self.reactions[rid]
        return True, ReactionEvent(msg_id, key, self._user(sender), rid, removed=True,
                                   time=mp.as_int(ev.get("origin_server_ts")))

    async def react(self, room: str, msg_id: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg_id, "key": key}}
        try:
            answer = await self.api.call(rq.send_event(room, "m.reaction",
                                                       f"x{self.now()}.{len(self.reactions)}",
                                                       content))
        except MatrixError as exc:
            if exc.errcode != "M_DUPLICATE_ANNOTATION":
                raise
            first = await self._mine(room, msg_id, key)
            if first is None:
                raise
            return first
        eid = need(answer, "event_id", str, "PUT /send/m.reaction")
        self.reactions[eid] = (msg_id, key, self.mxid)
        return eid

    async def _mine(self, room: str, msg_id: str, key: str) -> str | None:
        """This user's reaction ``key`` to ``msg_id``, from the server's relations."""
        page = await self.api.call(rq.relations(room, msg_id, "m.annotation", "m.reaction"))
        for ev in mp.events_of(page, "chunk"):
            ev = mp.as_obj(ev)
            if ev.get("sender") == self.mxid and annotation(ev) == (msg_id, key):
                self.note_reaction(ev)
                return str(ev["event_id"])
        return None

    async def unreact(self, room: str, msg_id: str, reaction_id: str) -> None:
        known = self.reactions.get(reaction_id)
        sender = known[2] if known is not None else None
        if sender is None:
            try:
                sender = (await self.events.event(room, reaction_id))[1]
            except IMError:
                return  # gone already: nothing to take back
        if sender != self.mxid:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"the reaction {reaction_id!r} is not yours to take back")
        await self.api.call(rq.redact(room, reaction_id, f"u{reaction_id}", {}))
        self.reactions.pop(reaction_id, None)

    # ----------------------------------------------------------------------------- pins

    async def _pinned(self, room: str) -> list[str]:
        try:
            return pinned_ids(await self.api.call(rq.room_state(room, PINNED)))
        except MatrixError as exc:
            if exc.status == 404:
                return []
            raise

    async def pin(self, room: str, msg_id: str, pinned: bool) -> int:
        now = await self._pinned(room)
        if (msg_id in now) == pinned:
            return self.now()
        after = [*now, msg_id] if pinned else [e for e in now if e != msg_id]
        try:
            answer = await self.api.call(rq.room_state(room, PINNED, {"pinned": after}))
        except MatrixError as exc:
            if exc.status == 403:
                raise IMError(ErrorCode.INVALID_PARAM,
                              "this room does not let you pin messages (its power levels)") from exc
            raise
        self.pins[room] = after
        _, _, ts = await self.events.event(room, need(answer, "event_id", str, "PUT /state"))
        return ts

    def pin_changes(self, room: str, ev: dict[str, Any]) -> list[PinEvent]:
        """The pins and unpins an ``m.room.pinned_events`` state event makes (against the pins
        last seen in the room; none seen: none)."""
        if ev.get("type") != PINNED or ev.get("state_key") != "":
            return []
        after = pinned_ids(ev.get("content"))
        before = self.pins.get(room, [])
        self.pins[room] = after
        by, ts = ev.get("sender"), mp.as_int(ev.get("origin_server_ts"))
        who = self._user(by) if isinstance(by, str) else ""
        return ([PinEvent(e, True, who, ts) for e in after if e not in before]
                + [PinEvent(e, False, who, ts) for e in before if e not in after])

    # ------------------------------------------------------------- conversation states

    def take_account_data(self, room: str, events: Sequence[Any]) -> bool:
        """Take a room's account data; whether this user's state of it changed."""
        changed = False
        for ev in events:
            kind, content = mp.as_obj(ev).get("type"), mp.as_obj(mp.as_obj(ev).get("content"))
            if kind == "m.tag":
                tags = mp.as_obj(content.get("tags"))
                if not self._echo(room, "m.tag", tags):
                    changed |= self.tags.get(room) != tags
                    self.tags[room] = tags
            elif kind in _UNREAD_TYPES:
                flag = _unread_flag(content)
                if not self._echo(room, MARKED_UNREAD, flag):
                    changed |= self.unread.get(room) != flag
                    self.unread[room] = flag
        return changed

    def _echo(self, room: str, kind: str, value: Any) -> bool:
        """Whether ``value`` is the echo of this device's own write (the cache is newer, or the
        same): that write and the older ones are done. Anything else is another device's."""
        pending = self.pending.get((room, kind), [])
        if value in pending:
            del pending[:pending.index(value) + 1]
            return True
        pending.clear()
        return False

    async def _load(self, room: str) -> tuple[dict[str, Any], bool]:
        """This user's tags and ``m.marked_unread`` of a room (asked once when not seen yet)."""
        if room not in self.tags:
            self.tags[room] = mp.as_obj((await self._get(rq.tags(self.mxid, room))).get("tags"))
        return self.tags[room], await self._unread(room)

    async def _unread(self, room: str) -> bool:
        if room not in self.unread:
            flag = False
            for kind in _UNREAD_TYPES:
                flag = flag or _unread_flag(await self._get(
                    rq.room_account_data(self.mxid, room, kind)))
            self.unread[room] = flag
        return self.unread[room]

    async def _get(self, request: rq.Request) -> dict[str, Any]:
        """An account data answer; nothing when the server has none (404)."""
        try:
            return await self.api.call(request)
        except MatrixError as exc:
            if exc.status != 404:
                raise
            return {}

    async def state(self, info: mp.RoomInfo) -> ConversationState:
        tags, unread = await self._load(info.room_id)
        pinned_at, marks = conversation_state(tags, unread)
        return ConversationState(info.conv_id, info.chat_type, pinned_at, marks)

    async def pin_conversation(self, room: str, pinned: bool) -> int | None:
        tags, _ = await self._load(room)
        at, _ = conversation_state(tags, False)
        if pinned and at is None:
            at = self.now()
            await self._put_tag(room, FAVOURITE, {PINNED_AT: at})
        elif not pinned and FAVOURITE in tags:
            await self._put_tag(room, FAVOURITE, None)
        return at if pinned else None

    async def set_marks(self, room: str, add: Sequence[str], remove: Sequence[str]
                        ) -> frozenset[str]:
        await self._load(room)
        for mark, on in [(m, False) for m in remove] + [(m, True) for m in add]:
            if mark == ConversationMark.UNREAD:
                if self.unread[room] != on:
                    await self._put_unread(room, on)
            elif (MARK_TAG + mark in self.tags[room]) != on:
                await self._put_tag(room, MARK_TAG + mark, {} if on else None)
        return conversation_state(self.tags[room], self.unread[room])[1]

    async def _put_tag(self, room: str, name: str, content: dict[str, Any] | None) -> None:
        """Set (None: delete) one of this user's tags of a room. The cache says so before the
        request: the sync's echo of the change is then no change, not told back as if another
        device made it."""
        before = self.tags.get(room, {})
        after = {t: c for t, c in before.items() if t != name}
        if content is not None:
            after[name] = content
        self.tags[room] = after
        await self._write(room, "m.tag", after, before, rq.tag(self.mxid, room, name, content))

    async def _put_unread(self, room: str, flag: bool) -> None:
        """Set this user's ``m.marked_unread`` of a room (the cache first, as for tags)."""
        before = self.unread.get(room, False)
        self.unread[room] = flag
        await self._write(room, MARKED_UNREAD, flag, before, rq.room_account_data(
            self.mxid, room, MARKED_UNREAD, {"unread": flag}))

    async def _write(self, room: str, kind: str, after: Any, before: Any,
                     request: rq.Request) -> None:
        """Send one of this user's account data writes whose result the cache holds already;
        its echo is expected (`_echo`); a failure puts the cache back."""
        pending = self.pending.setdefault((room, kind), [])
        pending.append(after)
        try:
            await self.api.call(request)
        except BaseException:
            if after in pending:
                pending.remove(after)
            (self.tags if kind == "m.tag" else self.unread)[room] = before
            raise

    async def read(self, room: str) -> None:
        """This user read the room: its ``UNREAD`` mark goes. A failure is logged, never the
        read receipt's: the mark stays until the next read."""
        try:
            if await self._unread(room):
                await self._put_unread(room, False)
        except IMError as exc:
            log.warning("could not clear the unread mark of %s: %s", room, exc)


class _Facade(Protocol):
    """What the rich methods use of `MatrixAdapter`."""

    rich: RichRooms
    rooms: Rooms

    def _require_connection(self) -> None: ...

    async def _net(self, call: Awaitable[T]) -> T: ...

    async def _room_of(self, message: Message) -> str: ...


class RichTransport:
    """The optional rich `Transport` methods of `MatrixAdapter` (a mixin over its parts)."""

    async def send_reaction(self: _Facade, message: Message, key: str) -> str:
        """An ``m.reaction`` annotation; returns its event id (the first one's when this user
        reacted so already)."""
        self._require_connection()
        room = await self._room_of(message)
        return await self._net(self.rich.react(room, message.msg_id, key))

    async def remove_reaction(self: _Facade, message: Message, reaction_id: str) -> None:
        """Redact this user's reaction; someone else's is INVALID_PARAM, and nothing is sent."""
        self._require_connection()
        room = await self._room_of(message)
        await self._net(self.rich.unreact(room, message.msg_id, reaction_id))

    async def pin_message(self: _Facade, message: Message, pinned: bool) -> int:
        """Add the message to (or take it from) the room's ``m.room.pinned_events``."""
        self._require_connection()
        room = await self._room_of(message)
        return await self._net(self.rich.pin(room, message.msg_id, pinned))

    async def pin_conversation(self: _Facade, conv_id: str, chat_type: ChatType, pinned: bool
                               ) -> int | None:
        """This user's ``m.favourite`` tag of the room."""
        self._require_connection()
        room = await self._net(self.rooms.existing(conv_id, ChatType(chat_type)))
        return await self._net(self.rich.pin_conversation(room, pinned))

    async def set_conversation_marks(self: _Facade, conv_id: str, chat_type: ChatType,
                                     add: Sequence[str], remove: Sequence[str]
                                     ) -> frozenset[str]:
        """This user's ``u.<mark>`` tags and ``m.marked_unread`` of the room."""
        self._require_connection()
        room = await self._net(self.rooms.existing(conv_id, ChatType(chat_type)))
        return await self._net(self.rich.set_marks(room, add, remove))
