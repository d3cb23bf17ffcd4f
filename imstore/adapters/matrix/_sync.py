"""The ``/sync`` loop: the adapter's live connection, and the one place a sync answer becomes
state and handler calls.

Rules kept here:
- the connection state is the loop's: a failed, timed-out or malformed sync is RECONNECTING until
  a sync succeeds again (the loop never dies while the state says CONNECTED); a revoked token is
  DISCONNECTED and ends the loop; `stop` (the adapter's close) ends it too;
- the server is not trusted: an answer without a ``next_batch`` string is refused whole (an
  `IMError`, logged, retried); inside an answer every room and every event is taken on its own —
  one that cannot be used becomes a `BadEvent` (kept in `bad_events`, logged, offered to a
  handler that has ``on_bad_events``) and the rest of the batch goes in;
- a ``limited`` timeline is back-filled with ``/messages`` down to the previous sync position,
  so nothing sent while this device was away is missed; the first sync of a session delivers
  only what this user has not read (the events after its own read receipt);
- restart-safe: with `keep`, the position, the room directory and ``m.direct`` are saved (in the
  store, through the client) after every sync is handled, and a new run goes on from them — its
  first sync is an ordinary later sync, back-filled like any other, so what happened while the
  app was closed (messages, edits, redactions, receipts) arrives once;
- reactions, pin changes and this user's conversation states (`_rich`) are told after the
  batch's messages, edits and recalls, and only to a handler that has their methods;
- the handler hears messages before edits, recalls and receipts of the same batch; a big batch
  is handled and handed over in slices of `Bounds.sync_slice` events with a yield to the event
  loop between them, so nothing else starves while it goes in.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import ErrorCode, IMError
from ...message import Message
from .. import ConnectionState, ConversationState, PinEvent, ReactionEvent, takes_recalled_by
from . import _mapping as mp
from . import _requests as rq
from ._api import Api, need
from ._events import EventCache
from ._link import Link, log
from ._reads import ReadPositions
from ._rich import RichRooms
from ._rooms import Rooms

__all__ = ["BAD_EVENTS_KEPT", "SyncLoop"]

BAD_EVENTS_KEPT = 200
_FULLY_READ = "m.fully_read"
BACKFILL_PAGES = 40  # pages of 100: past that the history API fills the gap


@dataclass(slots=True)
class _Batch:
    """What one sync answer hands the handler, in this order."""

    messages: list[Message] = field(default_factory=list)
    edits: list[Message] = field(default_factory=list)
    recalls: list[str] = field(default_factory=list)
    recalled_by: dict[str, str] = field(default_factory=dict)  # a moderator's recalls: who
    receipts: list[tuple[str, Any]] = field(default_factory=list)
    bad: list[mp.BadEvent] = field(default_factory=list)
    reactions: list[ReactionEvent] = field(default_factory=list)
    pins: list[PinEvent] = field(default_factory=list)
    states: list[ConversationState] = field(default_factory=list)
    changes: list[tuple[mp.RoomInfo, dict[str, Any]]] = field(default_factory=list)  # to judge


class SyncLoop:
    """The long-poll loop of one adapter."""

    def __init__(self, api: Api, rooms: Rooms, events: EventCache, reads: ReadPositions,
                 link: Link, rich: RichRooms, *, poll_timeout: float, timeline_limit: int,
                 now: Callable[[], int]) -> None:
        self.rich = rich
        self.api = api
        self.rooms = rooms
        self.events = events
        self.reads = reads
        self.link = link
        self.mxid = rooms.mxid
        self.poll_timeout = poll_timeout
        self.timeline_limit = timeline_limit
        self.now = now
        self.since: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.paused = False
        self.synced = asyncio.Event()
        self.bad_events: deque[mp.BadEvent] = deque(maxlen=BAD_EVENTS_KEPT)
        self._handled = 0  # events handled since the last yield
        self._save: Callable[[dict[str, Any]], None] | None = None

    # ---------------------------------------------------------------------- kept between runs

    def keep(self, state: dict[str, Any], save: Callable[[dict[str, Any]], None]) -> None:
        """Go on from what an earlier run kept (its sync position, room directory and
        ``m.direct``), and keep them through ``save`` after every sync handled from now on."""
        since = state.get("since")
        if isinstance(since, str) and since and self.since is None:
            self.since = since
        self.rooms.restore(state.get("rooms"))
        if isinstance(state.get("direct"), dict) and not self.rooms.direct_known:
            self.rooms.set_direct(state["direct"])
        self._save = save

    def _kept(self) -> None:
        """Save the position the handler has everything up to (its batch is stored by now)."""
        if self._save is None or self.since is None:
            return
        try:
            self._save({"since": self.since, "rooms": self.rooms.export(),
                        "direct": self.rooms.direct if self.rooms.direct_known else None})
        except Exception:  # a closed store must not stop the loop; the next sync tries again
            log.exception("could not keep the sync position")

    # ---------------------------------------------------------------------------- control

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def ensure(self) -> None:
        """Start the loop unless it runs, is paused or closed (or no event loop runs yet)."""
        if self.closed or self.paused or self.running():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # started by the next async call
        self.task = loop.create_task(self._loop(), name=f"matrix-sync-{self.mxid}")

    async def wait_synced(self, timeout: float) -> None:
        self.ensure()
        await asyncio.wait_for(self.synced.wait(), timeout)

    def pause(self) -> None:
        self.paused = True
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        self.link.set_state(ConnectionState.RECONNECTING)

    def resume(self) -> None:
        self.paused = False
        self.synced = asyncio.Event()
        self.ensure()

    async def stop(self) -> None:
        self.closed = True
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def accept_pending_invites(self) -> None:
        """Join the rooms this user was invited to since the loop's last answer, so a
        conversation a peer opened a moment ago is listed now rather than after the loop's next
        turn (a one-shot ``/sync`` that returns invites and nothing else; the loop's position is
        not moved, and joining twice is harmless)."""
        wait = 0 if self.since else rq.fresh_timeout(self.now())
        answer = await self.api.call(rq.sync(rq.INVITES_FILTER, self.since, wait))
        await self.rooms.join_invites(mp.as_obj(answer.get("rooms")).get("invite"))

    # ------------------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        delay = 0.1
        filt = rq.sync_filter(self.timeline_limit)
        while not self.closed:
            # the first sync of a run answers at once, even from a kept position
            timeout_ms = (int(self.poll_timeout * 1000) if self.synced.is_set() else 0) \
                if self.since else rq.fresh_timeout(self.now())
            try:
                answer = await self.api.call(
                    rq.sync(filt, self.since, timeout_ms),
                    timeout=self.poll_timeout + self.api.bounds.answer_timeout)
                next_batch = need(answer, "next_batch", str, "GET /sync")
                failures = self.link.failures
                await self.process(answer, initial=self.since is None)
            except asyncio.CancelledError:
                raise
            except IMError as exc:
                if exc.code == ErrorCode.USER_NOT_LOGIN:
                    log.error("the homeserver refused the access token: %s", exc)
                    self.link.set_state(ConnectionState.DISCONNECTED)
                    return
                log.warning("sync failed (%s); retrying in %.1f s", exc, delay)
            except Exception:  # a bug here must not leave a dead loop behind a CONNECTED state
                log.exception("a sync answer could not be processed; retrying in %.1f s", delay)
            else:
                self.since = next_batch
                if self.link.failures == failures:
                    self._kept()
                else:  # the app did not take all of it (a full disk?): a restart asks again
                    log.warning("the handler failed on a sync batch: its position is not kept")
                delay = 0.1
                self.link.set_state(ConnectionState.CONNECTED)
                self.synced.set()
                continue
            self.link.set_state(ConnectionState.RECONNECTING)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _tick(self, count: int = 1) -> None:
        """Count handled events; yield to the event loop after every slice of them."""
        self._handled += count
        if self._handled >= self.api.bounds.sync_slice:
            self._handled = 0
            await asyncio.sleep(0)

    def _bad(self, batch: _Batch, source: Any, reason: str, room_id: str | None = None,
             where: str = "timeline") -> None:
        bad = mp.BadEvent(source, reason, room_id, where)
        batch.bad.append(bad)
        self.bad_events.append(bad)
        log.warning("ignored a bad %s event%s: %s", where, f" in {room_id}" if room_id else "",
                    reason)

    async def process(self, answer: dict[str, Any], *, initial: bool) -> None:
        """Take one sync answer: rooms, events, receipts, to-device; then tell the handler."""
        batch = _Batch()
        for ev in _events_of(answer.get("account_data")):
            if isinstance(ev, dict) and ev.get("type") == "m.direct":
                self.rooms.set_direct(ev.get("content"))
        rooms = mp.as_obj(answer.get("rooms"))
        await self.rooms.join_invites(rooms.get("invite"))
        for room_id in mp.as_obj(rooms.get("leave")):
            self.rooms.forget(room_id)
        for room_id, room in mp.as_obj(rooms.get("join")).items():
            if not isinstance(room, dict):
                self._bad(batch, room, "a joined room entry that is not an object", room_id,
                          "room")
                continue
            await self._room(batch, room_id, room, initial)
        for ev in _events_of(answer.get("to_device")):
            self._to_device(batch, ev)
            await self._tick()
        await self._judge(batch)
        await self._hand_over(batch)

    async def _room(self, batch: _Batch, room_id: str, room: dict[str, Any],
                    initial: bool) -> None:
        timeline = mp.as_obj(room.get("timeline"))
        events = _events_of(timeline)
        state = _events_of(room.get("state")) + events
        info = await self.rooms.info(room_id, state)
        self.rooms.note_state(room_id, state)
        for ev in _events_of(room.get("state")):  # the state before the timeline
            if isinstance(ev, dict):
                batch.pins += self.rich.pin_changes(room_id, ev)
        if self.rich.take_account_data(room_id, _events_of(room.get("account_data"))):
            batch.states.append(await self.rich.state(info))
        counts = mp.as_obj(room.get("unread_notifications"))
        self.rooms.unread[room_id] = max(0, mp.as_int(counts.get("notification_count")))
        eph = [e for e in _events_of(room.get("ephemeral"))
               if isinstance(e, dict) and e.get("type") == "m.receipt"]
        prev = timeline.get("prev_batch")
        if initial:
            for ev in events:  # place the events the receipts name without asking the server
                if isinstance(ev, dict):
                    self.events.see(room_id, ev)
            for e in eph:  # learn the read positions first: they decide what is unread
                await self.reads.note(room_id, e.get("content"))
        elif timeline.get("limited") is True and isinstance(prev, str) and self.since:
            events = await self._backfill(room_id, prev, self.since) + events
        my_read = self.reads.read_ts(room_id)
        for ev in events:
            try:
                self._event(batch, info, ev, initial, my_read)
            except (mp.BadEventError, ValueError, TypeError, KeyError, OverflowError) as exc:
                self._bad(batch, ev, str(exc) or type(exc).__name__, room_id)
            await self._tick()
        if not initial:
            batch.receipts += [(room_id, e.get("content")) for e in eph]
            batch.receipts += [(room_id, {_FULLY_READ: e.get("content")})
                               for e in _events_of(room.get("account_data"))
                               if isinstance(e, dict) and e.get("type") == _FULLY_READ]

    def _event(self, batch: _Batch, info: mp.RoomInfo, ev: Any, initial: bool,
               my_read: int | None) -> None:
        if not isinstance(ev, dict):
            raise mp.BadEventError(f"a timeline entry that is a {type(ev).__name__}")
        self.events.see(info.room_id, ev)
        pins = self.rich.pin_changes(info.room_id, ev)
        reaction = self.rich.note_reaction(ev)
        if _from_this_device(ev):
            return  # this device's own doing, applied when it was done
        batch.pins += pins
        if reaction is not None:
            batch.reactions.append(reaction)
            return
        if mp.redacted_id(ev) is not None or mp.replacement(ev) is not None:
            batch.changes.append((info, ev))  # judged once the batch's events are all seen
            return
        msg = mp.event_to_message(ev, info, self.mxid, self.rooms.server_name)
        if msg is None:
            return
        if initial and my_read is not None and (msg.server_time or 0) <= my_read:
            return
        batch.messages.append(msg)

    async def _judge(self, batch: _Batch) -> None:
        """Edits and redactions apply only from the message's sender (`mp.takes_change`); a
        redaction also from a member whose power level may redact others' events (a
        moderator). Anything else is ignored, and logged."""
        for info, ev in batch.changes:
            known, removal = self.rich.removal(ev)
            if known:
                batch.reactions += [removal] if removal is not None else []
                continue
            rid, rep = mp.redacted_id(ev), mp.replacement(ev)
            target = rid if rid is not None else rep[0] if rep is not None else ""
            actor = ev.get("sender")
            try:
                _, sender, ts = await self.events.event(info.room_id, target)
            except IMError:
                continue  # an event this user cannot see changes nothing here
            if rid is not None and self.events.is_reaction(rid):
                # a reaction this adapter has not kept (it was made before a restart): taken
                # back by its id, if by its sender (`_rich` rules)
                if mp.takes_change(actor, sender):
                    batch.reactions.append(ReactionEvent(
                        "", "", mp.from_mxid(sender, self.rooms.server_name), rid, removed=True,
                        time=mp.as_int(ev.get("origin_server_ts"))))
                else:
                    log.warning("ignored the redaction of %s's reaction %s by %s", sender, rid,
                                actor)
                continue
            if rid is None:
                if not mp.takes_change(actor, sender):
                    log.warning("ignored an edit of %s by %s, who did not send it", target, actor)
                    continue
                edited = mp.edit_to_message(ev, info, self.mxid, self.rooms.server_name,
                                            (sender, ts))
                if edited is not None:
                    batch.edits.append(edited)
            elif mp.takes_change(actor, sender):
                batch.recalls.append(rid)
            elif isinstance(actor, str) and await self.rooms.may_redact(info.room_id, actor):
                batch.recalls.append(rid)
                batch.recalled_by[rid] = mp.from_mxid(actor, self.rooms.server_name)
            else:
                log.warning("ignored a redaction of %s by %s, who neither sent it nor moderates "
                            "the room", target, actor)

    async def _backfill(self, room_id: str, token: str, until: str) -> list[Any]:
        """The events between the previous sync position and a limited timeline, oldest first."""
        got: list[Any] = []
        for _ in range(BACKFILL_PAGES):
            page = await self.api.call(rq.messages(room_id, "b", 100, from_=token, to=until))
            chunk = _events_of(page, "chunk")
            got.extend(chunk)
            end = page.get("end")
            if not isinstance(end, str) or not end or not chunk:
                break
            token = end
        got.reverse()
        return got

    def _to_device(self, batch: _Batch, ev: Any) -> None:
        kind = ev.get("type") if isinstance(ev, dict) else None
        if kind == mp.RECEIPT_EVENT:
            content = mp.as_obj(ev.get("content"))
            ids = content.get("event_ids")
            if content.get("kind") == "delivered" and isinstance(ids, list):
                found = [i for i in ids if isinstance(i, str)]
                if found:
                    self.link.emit("on_delivery_acks", found)
        elif kind == mp.CMD_EVENT:
            try:
                batch.messages.append(mp.cmd_to_message(ev, self.mxid, self.rooms.server_name,
                                                        self.now()))
            except mp.BadEventError as exc:
                self._bad(batch, ev, str(exc), where="to_device")

    async def _hand_over(self, batch: _Batch) -> None:
        step = self.api.bounds.sync_slice
        for start in range(0, len(batch.messages), step):
            if start:
                await asyncio.sleep(0)
            self.link.emit("on_messages", batch.messages[start:start + step])
        if batch.edits:
            self.link.emit("on_messages_edited", batch.edits)
        if batch.recalls:
            by = batch.recalled_by if takes_recalled_by(self.link.handler) else {}
            self.link.emit("on_messages_recalled", batch.recalls, *([by] if by else []))
        for name, items in (("on_reactions", batch.reactions), ("on_message_pins", batch.pins),
                            ("on_conversation_states", batch.states)):
            if items:
                self.link.offer(name, items)
        for room_id, content in batch.receipts:
            if _FULLY_READ in content:
                await self.reads.note_fully_read(room_id, content[_FULLY_READ])
            else:
                await self.reads.note(room_id, content, announce=True)
        if batch.bad:
            self.link.offer("on_bad_events", batch.bad)


def _from_this_device(ev: dict[str, Any]) -> bool:
    """The homeserver gives the device that sent an event its transaction id, and no one else
    (the user's other devices get the event without it)."""
    return "transaction_id" in mp.as_obj(ev.get("unsigned"))


_events_of = mp.events_of
