"""verify/repair: recount the store's derived state, repair any drift, report what was repaired.

Rules kept here:
- SQLite's message rows are the truth; unread counters, last messages (and their copies), group
  ack counts, attachment rows, thread summaries (`_threads`), reaction counts (`_reactions`) and
  the search index are derived from them and rebuilt when they disagree;
- a stored row that cannot be decoded is reported, never repaired by guessing; what is certain
  is repaired: a body stored as TEXT whose bytes decode is stored back as a BLOB, and a
  conversation with an unknown chat type takes the type its messages have;
- the index is never emptied of a history SQLite cannot see: an index with documents over a
  database without messages (the database was replaced or lost) is reported, not "repaired";
- verify never blocks for ever: it gives up waiting for the indexer (a full disk stops it) at
  its ``timeout``, or without one once the index has not moved for `STALL_SECONDS`, with an
  `IMError` saying what was and was not checked.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..codec import decode_body
from ..errors import ErrorCode, IMError
from ..kinds import ATTACHMENT_TYPES
from ..message import ChatType, MessageType, UndecodableBody
from ._connection import Connection, marks
from ._conversations import ConversationTable
from ._indexer import SearchWriter
from ._reactions import Reactions
from ._receipts import Receipts
from ._rows import (
    CONVERSATION_LIST_SQL,
    MAIN,
    SELECT_COLUMNS,
    UNREAD,
    row_to_message,
    to_conversation,
)
from ._threads import Threads
from ._tombstones import Tombstones
from ._writes import upsert_attachment

__all__ = ["Verifier", "VerifyReport"]

log = logging.getLogger("imstore.store")

_ATTACH_INTS = tuple(sorted(int(t) for t in ATTACHMENT_TYPES))
_TRUE_UNREAD = f"(SELECT count(*) FROM message m WHERE m.conv_id = conversation.conv_id AND {UNREAD})"
_TRUE_LAST = (f"(SELECT id FROM message m WHERE m.conv_id = conversation.conv_id AND {MAIN} "
              "ORDER BY sort_time DESC, id DESC LIMIT 1)")
STALL_SECONDS = 60.0  # verify() without a timeout gives up on an index that stopped moving
_CHAT_TYPES = tuple(int(t) for t in ChatType)
_MTYPE = {int(t): t for t in MessageType}
_TRUE_ACKS = "(SELECT count(*) FROM group_ack g WHERE g.msg_id = message.msg_id)"


class _Stalled(Exception):
    """The search index has not moved for `STALL_SECONDS`."""


@dataclass(slots=True)
class VerifyReport:
    """What `MessageStore.verify` found wrong and repaired, by kind (0 everywhere: all was well),
    the messages it found undecodable (reported, never guessed at) and the receipts waiting."""

    repaired: dict[str, int] = field(default_factory=dict)
    undecodable: list[str] = field(default_factory=list)  # ids of messages that cannot be decoded
    pending_receipts: int = 0  # receipts waiting for a message not stored (yet)
    # ids of conversations whose stored row cannot be read in full (`Conversation.error`)
    unreadable_conversations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing was repaired and every stored message and conversation reads."""
        return (not any(self.repaired.values()) and not self.undecodable
                and not self.unreadable_conversations)

    @property
    def total(self) -> int:
        return sum(self.repaired.values())


class Verifier:
    def __init__(self, conn: Connection, conversations: ConversationTable,
                 indexer: SearchWriter, threads: Threads, reactions: Reactions,
                 tombstones: Tombstones, receipts: Receipts) -> None:
        self._conn = conn
        self._convs = conversations
        self._indexer = indexer
        self._threads = threads
        self._reactions = reactions
        self._tombstones = tombstones
        self._receipts = receipts

    def verify(self, timeout: float | None = None) -> VerifyReport:
        deadline = None if timeout is None else time.monotonic() + timeout
        rep: dict[str, int] = {}
        with self._conn.tx():
            rep["text_bodies"] = self._text_bodies()
            rep["conversation_types"] = self._conversation_types()
            self._counters(rep)
            self._attachments(rep)
            rep["thread_summaries"] = self._threads.verify()
            rep["reaction_counts"] = self._reactions.verify()
        undecodable = self._undecodable()
        rep["search_index"] = self._search_index(len(undecodable), deadline)
        with self._conn.tx():
            rep["tombstones_of_stored_messages"] = self._tombstones.verify()
        return VerifyReport(rep, undecodable=undecodable,
                            pending_receipts=self._receipts.pending_count(),
                            unreadable_conversations=self._unreadable_conversations())

    def _text_bodies(self) -> int:
        """Bodies stored as TEXT whose bytes decode as a body of their type go back to BLOB
        (the form every reader expects); returns how many."""
        fixed = 0
        for rowid, mtype, blob in self._conn.run(
                "SELECT id, type, CAST(body AS BLOB) FROM message "
                "WHERE typeof(body) = 'text'").fetchall():
            try:
                decode_body(_MTYPE[mtype], blob)
            except (IMError, KeyError):
                continue
            self._conn.run("UPDATE message SET body = ? WHERE id = ?", (blob, rowid))
            fixed += 1
        return fixed

    def _conversation_types(self) -> int:
        """A conversation whose chat type is unknown takes the one type its messages have (none,
        or several: left as it is and reported); returns how many were repaired."""
        fixed = 0
        for (conv_id,) in self._conn.run(
                "SELECT conv_id FROM conversation WHERE chat_type NOT IN "
                f"({marks(len(_CHAT_TYPES))})", _CHAT_TYPES).fetchall():
            found = self._conn.run("SELECT DISTINCT chat_type FROM message WHERE conv_id = ? "
                                   "LIMIT 2", (conv_id,)).fetchall()
            if len(found) == 1 and found[0][0] in _CHAT_TYPES:
                self._conn.run("UPDATE conversation SET chat_type = ? WHERE conv_id = ?",
                               (found[0][0], conv_id))
                fixed += 1
        return fixed

    def _unreadable_conversations(self) -> list[str]:
        return [c.conv_id for c in map(to_conversation, self._conn.query(
            CONVERSATION_LIST_SQL.format(where="")))
            if c.error is not None]

    def _undecodable(self) -> list[str]:
        """Ids of stored messages whose payload does not decode (read in pages of 1000 rows)."""
        out: list[str] = []
        after = 0
        while True:
            rows = self._conn.query(f"SELECT {SELECT_COLUMNS} FROM message WHERE id > ? "
                                    "ORDER BY id LIMIT 1000", (after,))
            out += [m.msg_id for m in map(row_to_message, rows)
                    if isinstance(m.body, UndecodableBody)]
            if len(rows) < 1000:
                return out
            after = rows[-1][0]

    def _counters(self, rep: dict[str, int]) -> None:
        run = self._conn.run
        rep["orphan_unread_messages"] = run(
            "INSERT OR IGNORE INTO conversation (conv_id, chat_type, unread_count, last_sort, "
            f"last_activity) SELECT conv_id, chat_type, 0, 0, 0 FROM message WHERE {UNREAD} "
            "AND conv_id NOT IN (SELECT conv_id FROM conversation) GROUP BY conv_id").rowcount
        rep["unread_counts"] = run(f"UPDATE conversation SET unread_count = {_TRUE_UNREAD} "
                                   f"WHERE unread_count != {_TRUE_UNREAD}").rowcount
        bad = [r[0] for r in run(f"SELECT conv_id FROM conversation WHERE last_rowid IS NOT "
                                 f"{_TRUE_LAST}").fetchall()]
        for conv_id in bad:
            self._convs.refresh_last(conv_id)
        rep["last_messages"] = len(bad)
        # the trigger re-copies the row when last_rowid is set
        rep["last_message_copies"] = run(
            "UPDATE conversation SET last_rowid = last_rowid WHERE lm_msg_id IS NOT "
            "(SELECT msg_id FROM message WHERE id = conversation.last_rowid)").rowcount
        rep["group_ack_counts"] = run(
            f"UPDATE message SET group_ack_count = {_TRUE_ACKS} WHERE need_group_ack = 1 "
            f"AND group_ack_count != {_TRUE_ACKS}").rowcount

    def _attachments(self, rep: dict[str, int]) -> None:
        missing = self._conn.run(
            f"SELECT {SELECT_COLUMNS} FROM message WHERE type IN ({marks(len(_ATTACH_INTS))}) "
            "AND id NOT IN (SELECT message_id FROM attachment)", _ATTACH_INTS).fetchall()
        for r in missing:
            try:
                upsert_attachment(self._conn, r[0], row_to_message(r))
            except IMError:
                log.warning("message row %s has a corrupt payload", r[0])
        rep["attachment_rows"] = len(missing)

    def _caught_up(self, deadline: float | None) -> bool:
        """Wait until the indexer has caught up (True), or give up (False): at ``deadline``, or
        without one once it has indexed nothing for `STALL_SECONDS` (with nothing of the
        backlog left it is merging: that is moving)."""
        if deadline is not None:
            return self._indexer.wait(None, max(deadline - time.monotonic(), 0.0))
        start = self._indexer.pending()
        best, moved = -1, time.monotonic()

        def watch(done: int) -> None:
            nonlocal best, moved
            if done > best or done >= start:
                best, moved = done, time.monotonic()
            elif time.monotonic() - moved >= STALL_SECONDS:
                raise _Stalled

        try:
            return self._indexer.wait(watch, None, start=start)
        except _Stalled:
            return False

    def _search_index(self, undecodable: int, deadline: float | None) -> int:
        """Rebuild the index when it does not hold one document per searchable message (neither
        recalled nor undecodable); returns by how many documents it was off."""
        if not self._indexer.enabled or not self._indexer.owns():
            return 0  # another process indexes this store; it is checked there
        for _ in range(5):  # another process may write meanwhile: compare with nothing pending
            if not self._caught_up(deadline):
                why = ("when the time ran out" if deadline is not None else
                       f"and has not moved for {STALL_SECONDS:g} s")
                raise IMError(ErrorCode.DATABASE_ERROR,
                              f"verify: the search index is still {self._indexer.pending()} "
                              f"changes behind {why} (is the disk full?); the "
                              "database's counters and attachments were checked and repaired, "
                              "the search index was not: call verify again once it catches up")
            if not self._indexer.has_pending():
                break
        drift = self._indexer.drift(undecodable)  # row ids compared, not only counted
        if not drift:
            return 0
        stored = int(self._conn.one(
            "SELECT count(*) FROM message WHERE recalled_at IS NULL")[0]) - undecodable
        indexed = self._indexer.doc_count()
        if stored <= 0 < indexed:
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"verify: the search index holds {indexed} messages but the database "
                          "holds none: the database was replaced or lost, and the index is "
                          "left as it is. Restore the database from a backup, or call "
                          "rebuild_search_index() to make the index match the empty database")
        self._indexer.rebuild()
        return drift
