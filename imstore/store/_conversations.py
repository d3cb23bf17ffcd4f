"""The conversation table: each conversation's type, unread counter, last message and state
(title, pin, marks, draft, ext).

Rules kept here:
- ``unread_count`` changes by SQL arithmetic (`add_unread`) in the transaction that changes the
  messages, so it always equals the number of received, unread, stored messages;
- ``last_rowid`` points at the conversation's newest message of the main timeline (thread
  replies are not a conversation's last message, and do not move its activity) by (sort time,
  row id); triggers copy that row into the ``lm_*`` columns, so the conversation list reads one
  table;
- thread replies count in the conversation's unread (there is no separate thread badge; reading
  the conversation reads them);
- marks are kept sorted between separators (`_rows.MARK_SEPARATOR`), NULL when there is none;
  a conversation has at most `MAX_MARKS`;
  `ConversationMark.UNREAD` is cleared whenever the conversation is read;
- a conversation id has one chat type for good (ids are unique across types).

Every method but `types` runs inside the caller's open write transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..checks import MAX_MARKS
from ..codec import encode_ext
from ..errors import ErrorCode, IMError
from ..message import ChatType, ConversationMark
from ._connection import Connection, chunks, marks
from ._rows import MAIN, MARK_SEPARATOR, UNREAD

__all__ = ["ConversationTable"]

_CREATE = ("INSERT OR IGNORE INTO conversation (conv_id, chat_type, unread_count, last_sort, "
           "last_activity) VALUES (?, ?, 0, 0, ?)")


class ConversationTable:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def types(self, conv_ids: Iterable[str]) -> dict[str, int]:
        """conv_id -> chat type, for the conversations among ``conv_ids`` that exist."""
        ids = list(set(conv_ids))
        out: dict[str, int] = {}
        for part in chunks(ids):
            out.update(self._conn.run(
                f"SELECT conv_id, chat_type FROM conversation WHERE conv_id IN ({marks(len(part))})",
                tuple(part)).fetchall())
        return out

    def check_type(self, conv_id: str, chat_type: ChatType) -> None:
        """Raise INVALID_PARAM when ``conv_id`` is a conversation of another type."""
        known = self.types([conv_id]).get(conv_id)
        if known is not None and known != chat_type:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"conversation {conv_id!r} is a {ChatType(known).name}, not a "
                          f"{ChatType(chat_type).name}; conversation ids are unique across types")

    def add_messages(self, conv_id: str, chat_type: int, unread: int, sort: int | None,
                     rowid: int | None) -> None:
        """New messages were written: count the unread ones, move the last message if newer
        (``rowid`` None: none of them is in the main timeline)."""
        run = self._conn.run
        created = run(_CREATE, (conv_id, chat_type, 0)).rowcount
        if unread:
            self.add_unread(conv_id, unread)
        if created:
            self.refresh_last(conv_id, recount=True)
        elif rowid is not None:
            run("UPDATE conversation SET last_rowid = ?, last_sort = ?, "
                "last_activity = max(last_activity, ?) WHERE conv_id = ? AND "
                "(last_rowid IS NULL OR (last_sort, last_rowid) < (?, ?))",
                (rowid, sort, sort, conv_id, sort, rowid))

    def add_unread(self, conv_id: str, delta: int) -> None:
        if delta:
            self._conn.run("UPDATE conversation SET unread_count = unread_count + ? "
                           "WHERE conv_id = ?", (delta, conv_id))

    def refresh_last(self, conv_id: str, *, recount: bool = False) -> None:
        """Recompute a conversation's last message (and, if asked, its unread count)."""
        run = self._conn.run
        last = run(f"SELECT id, sort_time FROM message WHERE conv_id = ? AND {MAIN} "
                   "ORDER BY sort_time DESC, id DESC LIMIT 1", (conv_id,)).fetchone()
        if last is None:
            run("UPDATE conversation SET last_rowid = NULL WHERE conv_id = ?", (conv_id,))
        else:
            run("UPDATE conversation SET last_rowid = ?, last_sort = ?, last_activity = ? "
                "WHERE conv_id = ?", (last[0], last[1], last[1], conv_id))
        if recount:
            run(f"UPDATE conversation SET unread_count = (SELECT count(*) FROM message WHERE "
                f"conv_id = ? AND {UNREAD}) WHERE conv_id = ?", (conv_id, conv_id))

    def save(self, conv_id: str, chat_type: ChatType, last_activity: int,
             ext: bytes | None) -> None:
        """Create a conversation, or move its activity forward and (when given) replace its ext."""
        known = self.types([conv_id]).get(conv_id)
        self.check_type(conv_id, chat_type)
        run = self._conn.run
        run(_CREATE, (conv_id, int(chat_type), last_activity))
        run("UPDATE conversation SET last_activity = max(last_activity, ?) WHERE conv_id = ?",
            (last_activity, conv_id))
        if ext is not None:
            run("UPDATE conversation SET ext = ? WHERE conv_id = ?", (ext or None, conv_id))
        self.refresh_last(conv_id, recount=known is None)

    def set_ext(self, conv_id: str, ext: dict[str, Any]) -> None:
        self._set(conv_id, "ext", encode_ext(ext) or None)

    def _set(self, conv_id: str, column: str, value: Any) -> bool:
        """Set one state column; returns whether it changed. CONVERSATION_NOT_EXIST when there
        is no such conversation."""
        run = self._conn.run
        if run(f"UPDATE conversation SET {column} = ? WHERE conv_id = ? AND {column} IS NOT ?",
               (value, conv_id, value)).rowcount:
            return True
        if not self.exists(conv_id):
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no conversation {conv_id!r}; list them with "
                          "store.conversations()")
        return False

    def set_title(self, conv_id: str, title: str | None) -> bool:
        return self._set(conv_id, "title", title)

    def set_draft(self, conv_id: str, draft: str | None) -> bool:
        return self._set(conv_id, "draft", draft)

    def pin(self, conv_id: str, pinned_at: int | None, *, keep: bool = False) -> bool:
        """Pin at ``pinned_at`` (ms), or unpin (None); with ``keep`` a pinned conversation keeps
        its pin time. Returns whether it changed."""
        if keep and pinned_at is not None and self._conn.run(
                "SELECT 1 FROM conversation WHERE conv_id = ? AND pinned_at IS NOT NULL",
                (conv_id,)).fetchone():
            return False
        return self._set(conv_id, "pinned_at", pinned_at)

    def marks(self, conv_id: str) -> frozenset[str]:
        row = self._conn.run("SELECT marks FROM conversation WHERE conv_id = ?",
                             (conv_id,)).fetchone()
        if row is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"there is no conversation {conv_id!r}; list them with "
                          "store.conversations()")
        text = row[0] if type(row[0]) is str else ""
        return frozenset(m for m in text.split(MARK_SEPARATOR) if m)

    def set_marks(self, conv_id: str, add: Iterable[str], remove: Iterable[str]) -> frozenset[str]:
        """Add and remove marks; returns the conversation's marks after (at most `MAX_MARKS`)."""
        now = (self.marks(conv_id) - frozenset(remove)) | frozenset(add)
        if len(now) > MAX_MARKS:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"a conversation has at most {MAX_MARKS} marks; remove some first")
        text = (MARK_SEPARATOR + MARK_SEPARATOR.join(sorted(now)) + MARK_SEPARATOR) if now else None
        self._set(conv_id, "marks", text)
        return now

    def mark_unread(self, conv_id: str) -> bool:
        """Give the conversation `ConversationMark.UNREAD`; returns whether the mark was new."""
        had = ConversationMark.UNREAD in self.marks(conv_id)
        self.set_marks(conv_id, (ConversationMark.UNREAD.value,), ())
        return not had

    def clear_unread_mark(self, conv_ids: Iterable[str] | None) -> None:
        """The conversations were read: `ConversationMark.UNREAD` leaves them (all: None)."""
        needle = f"{MARK_SEPARATOR}{ConversationMark.UNREAD.value}{MARK_SEPARATOR}"
        where = "marks IS NOT NULL AND instr(marks, ?) > 0"
        if conv_ids is None:
            ids = [r[0] for r in self._conn.run(f"SELECT conv_id FROM conversation WHERE {where}",
                                                (needle,)).fetchall()]
        else:
            ids = list(conv_ids)
        for conv_id in ids:
            if self.exists(conv_id):
                self.set_marks(conv_id, (), (ConversationMark.UNREAD.value,))

    def exists(self, conv_id: str) -> bool:
        return self._conn.run("SELECT 1 FROM conversation WHERE conv_id = ?",
                              (conv_id,)).fetchone() is not None

    def delete(self, conv_id: str) -> bool:
        return bool(self._conn.run("DELETE FROM conversation WHERE conv_id = ?",
                                   (conv_id,)).rowcount)
