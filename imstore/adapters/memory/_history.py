"""The reference server's history as each user sees it: pages, the conversation list, one-way
deletes and read positions.

Rules kept here:
- a user sees a message unless it hid it (one-way delete) or it is older than the retention
  cutoff (``retention_days`` before the clock's now);
- history pages are filtered by the shared `FetchOptions` filter and paged by sequence number:
  cursors are sequence numbers, so they stay valid while history grows;
- the conversation list is newest first by the last visible message (thread replies aside: they
  are outside the main timeline); an entry the user removed (`delete` without
  ``delete_messages``) is listed again once a newer message arrives;
- each user's read position per conversation only moves forward; it marks history read and sets
  the unread count (visible messages of others after it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from ...lifecycle import DAY_MS, is_mine
from ...message import (
    ChatType,
    Conversation,
    CursorResult,
    Direction,
    FetchOptions,
    Message,
    MessageStatus,
    conversation_id,
)
from .. import check_page_size, check_remove_args
from .._cursor import decode_cursor, encode_cursor
from .._filter import goes_up, keeps
from ._state import Conv, Directory, Stored

__all__ = ["History"]


class History:
    """Reads of the server's history, per user. ``clock`` returns milliseconds."""

    def __init__(self, directory: Directory, clock: Callable[[], int],
                 retention_days: int) -> None:
        self.directory = directory
        self.clock = clock
        self.retention_days = retention_days
        self.read_pos: dict[tuple[str, str], int] = {}  # (user, conversation key) -> server time
        # (user, conversation key) -> the last sequence number when the user removed the entry
        self.removed_entries: dict[tuple[str, str], int] = {}

    def _cutoff(self) -> int:
        return self.clock() - self.retention_days * DAY_MS

    def visible(self, user: str, s: Stored) -> bool:
        return user not in s.hidden_for and (s.msg.server_time or 0) >= self._cutoff()

    def view(self, msg: Message, user: str, *, history: bool = False) -> Message:
        """A message as ``user`` sees it. In ``history`` a received message says whether the
        user's read position is at or after it (``is_read``); live ones say nothing."""
        m = copy.deepcopy(msg)
        mine = is_mine(m.sender, user)
        if not mine:
            m.local_id = None  # the sender's device id means nothing to others
        m.direction = Direction.SEND if mine else Direction.RECEIVE
        m.conv_id = conversation_id(m.chat_type, m.to, m.sender, user)
        m.status = MessageStatus.SUCCESS
        if mine:
            m.is_read = True
        elif history:
            key = (user, self.directory.conv_key(user, m.conv_id, m.chat_type))
            m.is_read = (m.server_time or 0) <= self.read_pos.get(key, -1)
        else:
            m.is_read = None
        m.local_time = m.server_time or m.local_time
        return m

    def move_read_position(self, user: str, conv_key: str, up_to: int) -> None:
        key = (user, conv_key)
        self.read_pos[key] = max(self.read_pos.get(key, -1), up_to)

    def page(self, user: str, conv_id: str, chat_type: ChatType, cursor: str | None,
             limit: int, options: FetchOptions) -> CursorResult[Message]:
        check_page_size(limit)
        conv = self.directory.conversation_of(user, conv_id, chat_type)
        if chat_type != ChatType.CHAT:
            self.directory.members(user, conv_id, chat_type)
        if conv is None:
            return CursorResult([], None)
        up = goes_up(options)
        bound = decode_cursor(cursor, "h", int)[0] if cursor else None
        page: list[Stored] = []
        more = False
        for s in reversed(conv.messages) if up else iter(conv.messages):
            if bound is not None and (s.seq >= bound if up else s.seq <= bound):
                continue
            if self.visible(user, s) and keeps(s.msg, options):
                if len(page) == limit:
                    more = True
                    break
                page.append(s)
        next_cursor = encode_cursor("h", page[-1].seq) if more and page else None
        if up:
            page.reverse()
        return CursorResult([self.view(s.msg, user, history=True) for s in page], next_cursor)

    def conversations(self, user: str, cursor: str | None, limit: int
                      ) -> CursorResult[Conversation]:
        check_page_size(limit)
        rows = []
        for conv in self.directory.convs.values():
            if user not in conv.members:
                continue
            # a thread reply is outside the main timeline: never the conversation's last message
            last = next((s for s in reversed(conv.messages)
                         if self.visible(user, s) and s.msg.thread_id is None), None)
            if last is None or last.seq <= self.removed_entries.get((user, conv.key), 0):
                continue
            v = self.view(last.msg, user, history=True)
            rows.append((last.seq, Conversation(v.conv_id, conv.chat_type,
                                                self.unread(user, conv), v, v.timestamp)))
        rows.sort(key=lambda r: -r[0])
        if cursor:
            bound = decode_cursor(cursor, "c", int)[0]
            rows = [r for r in rows if r[0] < bound]
        page = rows[:limit]
        more = len(rows) > limit
        return CursorResult([c for _, c in page], encode_cursor("c", page[-1][0]) if more else None)

    def unread(self, user: str, conv: Conv) -> int:
        """How many visible messages of others lie after the user's read position."""
        pos = self.read_pos.get((user, conv.key), -1)
        return sum(1 for s in conv.messages if not is_mine(s.msg.sender, user) and self.visible(user, s)
                   and (s.msg.server_time or 0) > pos)

    def remove(self, user: str, conv_id: str, chat_type: ChatType,
               msg_ids: Sequence[str] | None, before: int | None) -> None:
        """Hide messages from ``user`` only (by server ids, or the local ids of its own
        messages, or everything older than ``before``)."""
        check_remove_args(msg_ids, before)
        conv = self.directory.users_conversation(user, conv_id, chat_type)
        ids = set(msg_ids or ())
        for s in conv.messages:
            if ((before is not None and (s.msg.server_time or 0) < before) or s.msg.msg_id in ids
                    or (is_mine(s.msg.sender, user) and s.msg.local_id in ids)):
                s.hidden_for.add(user)

    def delete(self, user: str, conv_id: str, chat_type: ChatType, delete_messages: bool) -> None:
        """Delete the conversation for everyone (``delete_messages``), or only its entry in
        ``user``'s list (the history stays, and a new message lists it again)."""
        conv = self.directory.users_conversation(user, conv_id, chat_type)
        if delete_messages:
            self.directory.drop(conv)
        else:
            self.removed_entries[(user, conv.key)] = conv.messages[-1].seq if conv.messages else 0
