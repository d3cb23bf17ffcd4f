"""Merging what the server sends (history pages, the conversation list's last messages, live
delivery) into the store.

Rules kept here (DESIGN §3 "Sync rules"):
- a message is stored once: one already stored (same ``msg_id``) is not written again;
- a received message counts as unread only when it is stored unread for the first time: live
  messages unless they say ``is_read=True``, history only when the server says ``is_read=False``
  (None: the server does not say, so it counts as read); never twice;
- a stored message keeps its local read state, except that a server saying ``is_read=True`` makes
  an unread one read (it was read on another device);
- nothing a tombstone covers comes back (`Tombstones.screen`); the ids left out are reported, so a
  client does not announce them;
- what the batch proves about contiguity is kept in the same transaction: a history page's `Span`
  (built by the caller), and for live messages each conversation from its oldest stamped message
  in the batch up to the live edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..lifecycle import is_mine
from ..message import Direction, ImportResult, Message
from ._connection import Connection, chunks, marks
from ._conversations import ConversationTable
from ._gaps import Span, Stretches
from ._rows import UNREAD, MessageRow
from ._tombstones import Tombstones
from ._writes import Mode, Writes

__all__ = ["MergeResult", "Merger"]


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What a merge from the server did (`MessageStore.merge_history`, `merge_received`).

    Attributes:
        new: the messages stored by this merge, as stored, in the order given (announce these).
        suppressed: ids of messages left out because they were deleted on this device.
        read: ids of stored messages that were unread here and that the server says are read.
    """

    new: list[Message] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)


class Merger:
    def __init__(self, conn: Connection, writes: Writes, conversations: ConversationTable,
                 tombstones: Tombstones, stretches: Stretches, owner: str) -> None:
        self._conn = conn
        self._writes = writes
        self._convs = conversations
        self._tombstones = tombstones
        self._stretches = stretches
        self._owner = owner

    def merge(self, messages: list[Message], *, live: bool,
              spans: Sequence[Span] = ()) -> MergeResult:
        said_read = [m.msg_id for m in messages if isinstance(m, Message) and m.is_read is True
                     and isinstance(m.msg_id, str) and not is_mine(m.sender, self._owner)]
        # the sender's local id of our own messages, when the server carries it
        local_ids = {m.msg_id: lid for m in messages if isinstance(m, Message)
                     and is_mine(m.sender, self._owner) and isinstance(m.msg_id, str)
                     and isinstance(lid := getattr(m, "local_id", None), str) and lid}
        suppressed: list[str] = []
        read: list[str] = []

        def screen(rows: list[MessageRow], existing: set[str]) -> set[str]:
            out = self._tombstones.screen([r for r in rows if r.msg_id not in existing],
                                          local_ids)
            suppressed.extend(r.msg_id for r in rows if r.msg_id in out)
            valid = {r.msg_id for r in rows if r.msg_id in existing}
            read.extend(self._mark_read([i for i in said_read if i in valid]))
            for span in (_live_spans(rows) if live else spans):
                self._stretches.add(span)
            return out

        new = self._writes.write_batch(messages, ImportResult(),
                                       mode=Mode.RECEIVED if live else Mode.HISTORY,
                                       screen=screen)
        return MergeResult(new, suppressed, read)

    def _mark_read(self, msg_ids: list[str]) -> list[str]:
        """Make these received messages read where they are stored unread."""
        out: list[str] = []
        run = self._conn.run
        for part in chunks(msg_ids):
            where = f"msg_id IN ({marks(len(part))}) AND {UNREAD}"
            rows = run(f"SELECT msg_id, conv_id FROM message WHERE {where}", tuple(part)).fetchall()
            if not rows:
                continue
            run(f"UPDATE message SET is_read = 1 WHERE {where}", tuple(part))
            per_conv: dict[str, int] = {}
            for msg_id, conv_id in rows:
                out.append(msg_id)
                per_conv[conv_id] = per_conv.get(conv_id, 0) + 1
            for conv_id, n in per_conv.items():
                self._convs.add_unread(conv_id, -n)
        return out


def _live_spans(rows: list[MessageRow]) -> list[Span]:
    """Live delivery brings every message after the oldest one it brought, per conversation
    (`Span.after`: others may share the oldest's time)."""
    oldest: dict[str, int] = {}
    for r in rows:
        if r.server_time is not None and r.direction == Direction.RECEIVE:
            oldest[r.conv_id] = min(oldest.get(r.conv_id, r.server_time), r.server_time)
    return [Span.after(conv_id, t) for conv_id, t in oldest.items()]
