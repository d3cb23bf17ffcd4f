"""Stretches and gaps: which parts of each conversation are known to be contiguous with the server.

A *stretch* is a closed range of server times of one conversation, [start, end], for which the
store holds every message the server would show its user (or a tombstone of it): matrix-rust-sdk's
event chunks, MSC3871's "gappy timeline". ``start`` None means "from the beginning of the
server's history", ``end`` None "up to the live edge" (everything newer arrives by live delivery).
A *gap* is what lies between two stretches, or before the first and after the last.

Rules kept here:
- what proves contiguity is a `Span`: a history page (from its oldest message, or from the
  beginning when the server said there is no more, up to its newest, or to the live edge when it
  was the newest page), the conversation list's last message (after it to the live edge), a batch
  of live messages (from its oldest to the live edge); the caller (the client, which knows what it
  asked the server) builds it, the store only keeps it;
- a stretch's ends are server times, and a server may stamp several messages with one time
  (bridged or imported history) and cut a page among them: so a page's edge where more may follow
  (its cursor's side, and the side a cursor it was fetched with came from, unless the caller
  vouches for a bound there) proves nothing at that edge's time, and its span stops short of it
  (`Span.of_page`, `Span.after`); the messages of that time are fetched again with the rest of
  their tie (the store orders ties by arrival, so a tie stored in one piece keeps the server's
  order);
- a client without live delivery cannot know the live edge stays where a fetch found it:
  `Stretches.forget_live_edge` ends the live stretch before its newest server time, so the
  next read of the newest page fetches it (and that time's tie) again;
- stretches of a conversation never overlap or touch: a span that overlaps or touches one (times
  are whole milliseconds, so [a, b] and [b + 1, c] touch) merges with it; the merged stretch keeps
  the cursors of its outer ends;
- local deletes do not open gaps (tombstones keep deleted messages out of later merges), and local
  messages (unsent, imported, inserted) neither prove nor break contiguity.

Every method that writes runs inside the caller's open write transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..lifecycle import INT64_MAX, INT64_MIN
from ..message import Direction, Message
from ._connection import Connection
from ._reads import Reads

__all__ = ["TABLES", "Gap", "Span", "Stretches", "TimelinePage"]

TABLES = (
    "CREATE TABLE IF NOT EXISTS stretch (id INTEGER PRIMARY KEY, conv_id TEXT NOT NULL, "
    "start_time INTEGER, end_time INTEGER, older_cursor TEXT, newer_cursor TEXT)",
    "CREATE INDEX IF NOT EXISTS stretch_conv ON stretch (conv_id)",
)

_LO, _HI = INT64_MIN, INT64_MAX


@dataclass(frozen=True, slots=True)
class Span:
    """What a fetch from the server proves: every message of ``conv_id`` the server shows this
    user with a server time in [start, end] is now stored here (or was deleted here).

    Attributes:
        conv_id: the conversation.
        start: the oldest time covered (ms); None: from the beginning of the server's history.
        end: the newest time covered (ms); None: up to the live edge (the fetch returned the
            server's newest, and live delivery brings everything after it).
        older_cursor: a server cursor that continues towards older messages from ``start``
            (the cursor of an UP history page: it continues after that page's messages of time
            ``start - 1``, so it holds only where they were stored), when known.
        newer_cursor: a server cursor that continues towards newer messages from ``end`` (the
            cursor of a DOWN history page, likewise after its messages of time ``end + 1``),
            when known.
    """

    conv_id: str
    start: int | None
    end: int | None
    older_cursor: str | None = None
    newer_cursor: str | None = None

    @classmethod
    def after(cls, conv_id: str, time: int) -> Span:
        """What the newest messages prove when the oldest of them has server time ``time``:
        everything after it up to the live edge (others may share ``time`` and lie before it)."""
        return cls(conv_id, time + 1, None)

    def holds(self, time: int) -> bool:
        """Whether server time ``time`` lies in the span."""
        return (self.start is None or time >= self.start) and (self.end is None or time <= self.end)

    @classmethod
    def of_page(cls, conv_id: str, messages: Sequence[Message], *, direction: Direction,
                cursor: str | None, first: bool, start_time: int | None = None,
                end_time: int | None = None) -> Span | None:
        """The span of one history page fetched without type or sender filters (those prove
        nothing about contiguity).

        Args:
            conv_id: the conversation.
            messages: the page.
            direction: the direction it was fetched in.
            cursor: the cursor the server returned with it (None: nothing more that way). Its
                side of the page proves nothing at the time of the page's last message there
                (more may share it beyond the cursor): the span stops short of that time, and
                keeps the cursor, which continues after the page's messages of that time.
            first: it was fetched with no cursor, so it starts at the end of the conversation it
                reads from (UP: the newest, or ``end_time``; DOWN: the oldest, or
                ``start_time``). A page fetched with a cursor and no such bound proves nothing
                at the time of its first message either (the page before it may hold only part
                of that time's messages).
            start_time, end_time: the time window it was fetched with (inclusive, ms), if any.
                A page fetched with a cursor that continues from a known time may pass that
                time as the bound it starts from (``end_time`` going UP, ``start_time`` going
                DOWN): the caller vouches that nothing lies between.

        Returns None when the page proves nothing (it is empty and more may follow, or all its
        messages share the time at a cut).
        """
        times = [m.server_time for m in messages if m.server_time is not None]
        up = direction != Direction.DOWN
        entry = end_time if up else start_time  # the bound of the side the page starts from
        if entry is None and not first:
            if not times:
                return None
            entry = max(times) - 1 if up else min(times) + 1
        if cursor is None:
            far = start_time if up else end_time
        elif times:
            far = min(times) + 1 if up else max(times) - 1
        else:
            return None
        lo, hi = (far, entry) if up else (entry, far)
        if lo is not None and hi is not None and lo > hi:
            return None
        if cursor is None:
            return cls(conv_id, lo, hi)
        return cls(conv_id, lo, hi, older_cursor=cursor) if up else cls(
            conv_id, lo, hi, newer_cursor=cursor)


@dataclass(frozen=True, slots=True)
class Gap:
    """Server messages of a conversation that may be missing here: those with a server time
    strictly between ``after_time`` and ``before_time``.

    Fetch it from above with ``FetchOptions(direction=Direction.UP, end_time=before_time - 1,
    start_time=after_time + 1)`` (leave out a bound that is None), or with ``older_cursor``.

    Attributes:
        conv_id: the conversation.
        after_time: the newest time known below the gap (the end of the stretch under it); None
            when the gap reaches back to the beginning of the conversation.
        before_time: the oldest time known above the gap (the start of the stretch over it); None
            when the gap reaches up to the newest messages (no live stretch).
        older_msg_id: the newest stored message at or before ``after_time`` (None: none), the
            message just under the gap.
        newer_msg_id: the oldest stored message at or after ``before_time`` (None: none), the
            message just over the gap: an app draws "load more" above it.
        older_cursor: a server cursor that pages UP from ``before_time`` into the gap, when known.
        newer_cursor: a server cursor that pages DOWN from ``after_time`` into the gap, when known.
    """

    conv_id: str
    after_time: int | None
    before_time: int | None
    older_msg_id: str | None = None
    newer_msg_id: str | None = None
    older_cursor: str | None = None
    newer_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class TimelinePage:
    """A page of a conversation read up to the first gap (`MessageStore.timeline`).

    Attributes:
        messages: oldest first, what `MessageStore.messages` returns for the same arguments,
            except that it stops where a gap begins.
        gap: None when ``messages`` is exactly the page the whole conversation would give (the
            page is full, or it reached the conversation's end with nothing missing); else the gap
            the page ran into: fetch it from the server, save it with its `Span`, read again.
    """

    messages: list[Message]
    gap: Gap | None


@dataclass(slots=True)
class _Stretch:
    id: int
    start: int | None
    end: int | None
    older_cursor: str | None
    newer_cursor: str | None

    @property
    def lo(self) -> int:
        return _LO if self.start is None else self.start

    @property
    def hi(self) -> int:
        return _HI if self.end is None else self.end


class Stretches:
    def __init__(self, conn: Connection, reads: Reads) -> None:
        self._conn = conn
        self._reads = reads

    def _load(self, conv_id: str, *, in_tx: bool = False) -> list[_Stretch]:
        sql = ("SELECT id, start_time, end_time, older_cursor, newer_cursor FROM stretch "
               "WHERE conv_id = ?")
        rows = (self._conn.run(sql, (conv_id,)).fetchall() if in_tx
                else self._conn.query(sql, (conv_id,)))
        out = [_Stretch(*r) for r in rows]
        out.sort(key=lambda s: s.lo)
        return out

    # ------------------------------------------------------------------------------ writing

    def add(self, span: Span) -> None:
        """Keep what ``span`` proves, merged with the stretches it overlaps or touches."""
        new = _Stretch(0, span.start, span.end, span.older_cursor, span.newer_cursor)
        if new.lo > new.hi:
            return
        merged = [new]
        for s in self._load(span.conv_id, in_tx=True):
            if s.lo <= new.hi + (new.hi < _HI) and new.lo - (new.lo > _LO) <= s.hi:
                merged.append(s)
        if len(merged) == 2:
            old = merged[1]
            if (old.lo <= new.lo and new.hi <= old.hi
                    and not (new.lo == old.lo and new.older_cursor)
                    and not (new.hi == old.hi and new.newer_cursor)):
                return  # nothing new (e.g. a live message inside the live stretch)
        low = min(merged, key=lambda s: (s.lo, s is not new))
        high = max(merged, key=lambda s: (s.hi, s is new))
        run = self._conn.run
        for s in merged[1:]:
            run("DELETE FROM stretch WHERE id = ?", (s.id,))
        run("INSERT INTO stretch (conv_id, start_time, end_time, older_cursor, newer_cursor) "
            "VALUES (?, ?, ?, ?, ?)",
            (span.conv_id, low.start, high.end, low.older_cursor if low.start is not None else None,
             high.newer_cursor if high.end is not None else None))

    def forget_live_edge(self, conv_id: str) -> None:
        """End the stretch that reaches the live edge before the newest server time it holds
        (messages may have reached the server since, and may share that time); a stretch left
        holding no server message goes."""
        for s in self._load(conv_id, in_tx=True):
            if s.end is not None:
                continue
            row = self._conn.run("SELECT max(server_time) FROM message WHERE conv_id = ? AND "
                                 "server_time >= ?", (conv_id, s.lo)).fetchone()
            if row[0] is None or row[0] - 1 < s.lo:
                self._conn.run("DELETE FROM stretch WHERE id = ?", (s.id,))
            else:
                self._conn.run("UPDATE stretch SET end_time = ?, newer_cursor = NULL WHERE id = ?",
                               (row[0] - 1, s.id))

    # ------------------------------------------------------------------------------ reading

    def spans(self, conv_id: str) -> list[Span]:
        """The stretches of a conversation, oldest first."""
        return [Span(conv_id, s.start, s.end, s.older_cursor, s.newer_cursor)
                for s in self._load(conv_id)]

    def _edge_msg(self, conv_id: str, time: int, newer: bool) -> str | None:
        if newer:
            sql = ("SELECT msg_id FROM message WHERE conv_id = ? AND sort_time >= ? "
                   "ORDER BY sort_time, id LIMIT 1")
        else:
            sql = ("SELECT msg_id FROM message WHERE conv_id = ? AND sort_time <= ? "
                   "ORDER BY sort_time DESC, id DESC LIMIT 1")
        row = self._conn.one(sql, (conv_id, time))
        return row[0] if row else None

    def _gap(self, conv_id: str, below: _Stretch | None, above: _Stretch | None) -> Gap:
        after = below.end if below is not None else None
        before = above.start if above is not None else None
        return Gap(conv_id, after, before,
                   older_msg_id=None if after is None else self._edge_msg(conv_id, after, False),
                   newer_msg_id=None if before is None else self._edge_msg(conv_id, before, True),
                   older_cursor=above.older_cursor if above is not None else None,
                   newer_cursor=below.newer_cursor if below is not None else None)

    def gaps(self, conv_id: str) -> list[Gap]:
        stretches = self._load(conv_id)
        out = []
        prev: _Stretch | None = None
        for s in stretches:
            if s.start is not None:
                out.append(self._gap(conv_id, prev, s))
            prev = s
        if prev is None or prev.end is not None:
            out.append(self._gap(conv_id, prev, None))
        return out

    def timeline(self, conv_id: str, start_msg_id: str | None, limit: int,
                 direction: Direction) -> TimelinePage:
        """The page `Reads.page` gives, cut where it leaves the stretch of its anchor."""
        page = self._reads.page(conv_id, start_msg_id, limit, direction)  # checks the anchor
        stretches = self._load(conv_id)
        up = direction == Direction.UP
        if start_msg_id is None:
            anchor = _HI if up else _LO
        else:
            anchor = int(self._reads.find_row(start_msg_id, "sort_time")[0])
        here = next((i for i, s in enumerate(stretches) if s.lo <= anchor <= s.hi), None)
        if here is None:
            # the anchor lies in a gap: the messages next to it may be missing
            if up:
                below = [s for s in stretches if s.hi < anchor]
                gap = self._gap(conv_id, below[-1] if below else None, None)
                return TimelinePage([], Gap(
                    conv_id, gap.after_time, None if anchor == _HI else anchor + 1,
                    older_msg_id=gap.older_msg_id, newer_msg_id=start_msg_id,
                    newer_cursor=gap.newer_cursor))
            above = [s for s in stretches if s.lo > anchor]
            gap = self._gap(conv_id, None, above[0] if above else None)
            return TimelinePage([], Gap(
                conv_id, None if anchor == _LO else anchor - 1, gap.before_time,
                older_msg_id=start_msg_id, newer_msg_id=gap.newer_msg_id,
                older_cursor=gap.older_cursor))
        s = stretches[here]
        if up:
            kept = [m for m in page if m.timestamp >= s.lo]
            if s.start is None or len(kept) == limit:
                return TimelinePage(kept, None)
            return TimelinePage(kept, self._gap(conv_id, stretches[here - 1] if here else None, s))
        kept = [m for m in page if m.timestamp <= s.hi]
        if s.end is None or len(kept) == limit:
            return TimelinePage(kept, None)
        nxt = stretches[here + 1] if here + 1 < len(stretches) else None
        return TimelinePage(kept, self._gap(conv_id, s, nxt))
