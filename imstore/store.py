"""MessageStore: every local operation on conversations and messages.

Rules kept here:
- one writer at a time (a lock), every multi-row change in one SQLite transaction; a call that
  fails leaves nothing written;
- ``conversation.unread_count`` changes by SQL arithmetic in the same transaction as the message
  change, so it always equals the number of received, unread, stored messages of the conversation;
- every message change writes its search work to ``search_outbox`` in that same transaction; the
  outbox is applied to the index in batches (one index commit each), emptied only after the index
  commit, replayed on open, and applied before every search;
- hot reads (pages, unread counts, the conversation list) run prepared SQL on the peewee
  connection; rows become `Message` values here and nowhere else;
- no network I/O: this module does not know servers exist.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import peewee as pw

from .codec import Limits, decode_ext, encode_ext, validate_message
from .errors import ErrorCode, IMError
from .message import (
    ATTACHMENT_TYPES,
    ChatType,
    Conversation,
    Direction,
    FileBody,
    ImageBody,
    ImportResult,
    Message,
    MessageStatus,
    MessageType,
    VideoBody,
)
from .rows import (
    _COLS,
    _CONV_LIST,
    _CTYPE,
    _HISTORY,
    _IMPORT,
    _IMPORT_INDEX_BATCH,
    _INSERT,
    _OP_ADD,
    _OP_DELETE,
    _OP_INDEX,
    _PAGE,
    _RECEIVED,
    RECEIPT_DELIVERED,
    RECEIPT_READ,
    _as_types,
    _check_direction,
    _check_limit,
    _chunks,
    _marks,
    row_to_message,
)
from .schema import build_models, migrate
from .store_search import SearchMixin

__all__ = ["MessageStore", "VerifyReport", "open_store"]

log = logging.getLogger("imstore.store")


@dataclass(slots=True)
class VerifyReport:
    """What `MessageStore.verify` found wrong and repaired, by kind (0 everywhere: all was well)."""

    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.repaired.values())

    @property
    def total(self) -> int:
        return sum(self.repaired.values())


class MessageStore(SearchMixin):
    """The local message store of one user. Open it with `imstore.open` (or `MessageStore.open`).

    Safe to use from several threads. Local operations are synchronous.
    """

    def __init__(self, db: pw.SqliteDatabase, *, user_id: str, directory: str | None,
                 limits: Limits, search: bool) -> None:
        self._db = db
        self.user_id = user_id
        self.directory = directory
        self.limits = limits
        self._lock = threading.RLock()
        self._rlock: Any = self._lock if directory is None else nullcontext()
        self.models = build_models(db)
        self._closed = False
        self._index: Any = None
        try:
            migrate(db, self.models, user_id)
        except ValueError as exc:
            db.close()
            raise IMError(ErrorCode.DATABASE_ERROR, str(exc)) from exc
        # A crash mid-send leaves INPROGRESS rows: they did not go out, so they failed.
        self._sql("UPDATE message SET status = ? WHERE status = ?",
                  (int(MessageStatus.FAIL), int(MessageStatus.INPROGRESS)))
        # Row ids above this were never handed to the index: their documents need no replacing.
        self._index_high = 1 << 62
        if not search:
            # Writes made now skip the index: the next open with search rebuilds it.
            self._sql("INSERT OR REPLACE INTO meta (key, value) VALUES ('index_stale', '1')")
        else:
            from .search import SearchIndex

            index_dir = None if directory is None else os.path.join(directory, "search")
            self._index = SearchIndex(index_dir)
            stale = self._one("SELECT 1 FROM meta WHERE key = 'index_stale'") is not None
            if (self._index.rebuilt and directory is not None) or stale:
                if stale and not self._index.rebuilt:
                    log.info("the store was used without search; rebuilding its index")
                    self._index.reset()
                with self._tx() as db_:
                    db_.execute_sql("DELETE FROM search_outbox")
                    db_.execute_sql("INSERT INTO search_outbox (rowid, op) SELECT id, 1 FROM message")
                    db_.execute_sql("DELETE FROM meta WHERE key = 'index_stale'")
            self._flush_index()  # replays what a crash left (ADD rows are replaced, not added)
            self._index_high = self._one("SELECT coalesce(max(id), 0) FROM message")[0]

    # ------------------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, user_id: str, limits: Limits | None = None,
             search: bool = True) -> MessageStore:
        """Open (or create) the store of ``user_id``.

        Args:
            path: a directory (created if missing; the database and the search index live in it)
                or ``":memory:"`` for a store that lives in memory only.
            user_id: the owner; messages with no sender are the owner's.
            limits: size limits (the product's defaults when None).
            search: keep a keyword index (`search_messages`); False skips its cost.
        """
        if not isinstance(user_id, str) or not user_id:
            raise IMError(ErrorCode.INVALID_PARAM, "user_id must be a non-empty string")
        path = os.fspath(path)
        pragmas = {"foreign_keys": 1, "cache_size": -32000, "temp_store": "memory"}
        if path == ":memory:":
            db = pw.SqliteDatabase(":memory:", pragmas=pragmas, thread_safe=False,
                                   check_same_thread=False)
            directory = None
        else:
            directory = os.path.abspath(path)
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise IMError(ErrorCode.DATABASE_ERROR,
                              f"cannot create the store directory {directory!r}: {exc}") from exc
            pragmas |= {"journal_mode": "wal", "synchronous": "normal"}
            db = pw.SqliteDatabase(os.path.join(directory, "imstore.db"), pragmas=pragmas,
                                   timeout=30, lock_type="IMMEDIATE")
        try:
            db.connect(reuse_if_open=True)
        except (pw.DatabaseError, sqlite3.Error) as exc:
            raise IMError(ErrorCode.DATABASE_ERROR, f"cannot open the database in {path!r}: "
                                                    f"{exc}") from exc
        return cls(db, user_id=user_id, directory=directory, limits=limits or Limits(),
                   search=search)

    def close(self) -> None:
        """Apply pending index work and close the database. Closing twice is harmless."""
        if self._closed:
            return
        try:
            self._flush_index()
        finally:
            self._closed = True
            if self._index is not None:
                self._index.close()
            self._db.close()

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------- writing

    def _normalize(self, msg: Message, *, imported: bool) -> None:
        """Settle direction, conversation, read flag and status now that the owner is known."""
        try:
            msg.chat_type = ChatType(msg.chat_type)
        except ValueError as exc:
            raise IMError(ErrorCode.INVALID_PARAM, f"unknown chat type {msg.chat_type!r}") from exc
        if not isinstance(msg.msg_id, str) or not msg.msg_id:
            raise IMError(ErrorCode.INVALID_PARAM, "a message needs a non-empty msg_id")
        if msg.sender is None or msg.sender == self.user_id:
            msg.sender = self.user_id
            msg.direction = Direction.SEND
            msg.conv_id = msg.to
            msg.is_read = True
        else:
            if not isinstance(msg.sender, str) or not msg.sender:
                raise IMError(ErrorCode.INVALID_PARAM, "sender must be a user id or None")
            msg.direction = Direction.RECEIVE
            msg.conv_id = msg.sender if msg.chat_type == ChatType.CHAT else msg.to
            if msg.is_read is None:
                msg.is_read = imported
            msg.is_read = bool(msg.is_read)
        if msg.status == MessageStatus.CREATE or (imported and msg.status == MessageStatus.INPROGRESS):
            msg.status = MessageStatus.SUCCESS

    def _prepare(self, msg: Message, *, imported: bool, force_read: bool = False) -> tuple[Any, ...]:
        if not isinstance(msg, Message):
            raise IMError(ErrorCode.INVALID_PARAM, f"expected a Message, got {type(msg).__name__}")
        if msg.type == MessageType.CMD:
            raise IMError(ErrorCode.MESSAGE_INVALID,
                          "CMD messages are never stored; send them with ChatClient.send_message")
        body, ext = validate_message(msg, self.limits)
        self._normalize(msg, imported=imported)
        if force_read:
            msg.is_read = True
        return (msg.msg_id, msg.conv_id, int(msg.chat_type), int(msg.type), msg.sender, msg.to,
                int(msg.direction), int(msg.status), int(msg.local_time), msg.server_time,
                msg.timestamp, int(bool(msg.is_read)), int(msg.is_delivered),
                int(msg.is_read_acked), int(msg.need_group_ack), int(msg.group_ack_count),
                body, ext or None)

    def _conv_types(self, conv_ids: Iterable[str]) -> dict[str, int]:
        ids = list(set(conv_ids))
        out: dict[str, int] = {}
        for part in _chunks(ids):
            out.update(self._db.execute_sql(
                f"SELECT conv_id, chat_type FROM conversation WHERE conv_id IN ({_marks(len(part))})",
                tuple(part)).fetchall())
        return out

    def _existing_ids(self, msg_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in _chunks(msg_ids):
            found.update(r[0] for r in self._db.execute_sql(
                f"SELECT msg_id FROM message WHERE msg_id IN ({_marks(len(part))})",
                tuple(part)).fetchall())
        return found

    def _write_rows(self, rows: list[tuple[Any, ...]], msgs: list[Message]) -> None:
        """Insert prepared rows (ids new, conversation types checked) in the open transaction:
        messages, attachments, conversation counters and last messages, and the search outbox."""
        db = self._db
        first = (db.execute_sql("SELECT max(id) FROM message").fetchone()[0] or 0) + 1
        db.cursor().executemany(_INSERT, rows)
        rowids = range(first, first + len(rows))
        convs: dict[str, list[Any]] = {}  # conv_id -> [chat_type, unread, best_sort, best_rowid]
        attach = []
        for rowid, row, msg in zip(rowids, rows, msgs, strict=True):
            c = convs.get(row[1])
            if c is None:
                c = convs[row[1]] = [row[2], 0, row[10], rowid]
            if row[6] == Direction.RECEIVE and not row[11]:
                c[1] += 1
            if (row[10], rowid) > (c[2], c[3]):
                c[2], c[3] = row[10], rowid
            if row[3] in _ATTACH_INTS:
                attach.append(_attachment_row(rowid, msg))
        if attach:
            db.cursor().executemany(_ATTACH_UPSERT, attach)
        for conv_id, (chat_type, unread, sort, rowid) in convs.items():
            created = db.execute_sql(
                "INSERT OR IGNORE INTO conversation (conv_id, chat_type, unread_count, last_sort, "
                "last_activity) VALUES (?, ?, 0, 0, 0)", (conv_id, chat_type)).rowcount
            if unread:
                db.execute_sql("UPDATE conversation SET unread_count = unread_count + ? "
                               "WHERE conv_id = ?", (unread, conv_id))
            if created:
                self._refresh_last(conv_id, recount=True)
            else:
                db.execute_sql(
                    "UPDATE conversation SET last_rowid = ?, last_sort = ?, "
                    "last_activity = max(last_activity, ?) WHERE conv_id = ? AND "
                    "(last_rowid IS NULL OR (last_sort, last_rowid) < (?, ?))",
                    (rowid, sort, sort, conv_id, sort, rowid))
        if self._index is not None:
            op = _OP_ADD if first > self._index_high else _OP_INDEX
            db.cursor().executemany("INSERT INTO search_outbox (rowid, op) VALUES (?, ?)",
                                    [(r, op) for r in rowids])
            self._index_high = max(self._index_high, rowids[-1] if rowids else 0)

    def _refresh_last(self, conv_id: str, *, recount: bool = False) -> None:
        """Recompute a conversation's last message (and, if asked, its unread count)."""
        db = self._db
        last = db.execute_sql("SELECT id, sort_time FROM message WHERE conv_id = ? "
                              "ORDER BY sort_time DESC, id DESC LIMIT 1", (conv_id,)).fetchone()
        if last is None:
            db.execute_sql("UPDATE conversation SET last_rowid = NULL WHERE conv_id = ?", (conv_id,))
        else:
            db.execute_sql("UPDATE conversation SET last_rowid = ?, last_sort = ?, "
                           "last_activity = ? WHERE conv_id = ?", (last[0], last[1], last[1], conv_id))
        if recount:
            db.execute_sql(
                "UPDATE conversation SET unread_count = (SELECT count(*) FROM message WHERE "
                "conv_id = ? AND direction = 2 AND is_read = 0) WHERE conv_id = ?",
                (conv_id, conv_id))

    def _outbox(self, rowids: Iterable[int], op: int) -> None:
        if self._index is not None:
            self._db.cursor().executemany("INSERT INTO search_outbox (rowid, op) VALUES (?, ?)",
                                          [(r, op) for r in rowids])

    def insert_message(self, msg: Message) -> Message:
        """Store one message (e.g. a simulated notification or a message received elsewhere).

        A received message (``sender`` is someone else) counts as unread unless ``is_read`` is
        set. Raises `IMError`: MESSAGE_INVALID for a CMD message or a duplicate ``msg_id``,
        INVALID_PARAM when the conversation id is taken by another chat type, and the codec's
        errors for bad payloads. Returns the stored message.
        """
        with self._tx():
            row = self._prepare(msg, imported=False)
            if self._existing_ids([msg.msg_id]):
                raise IMError(ErrorCode.MESSAGE_INVALID,
                              f"a message with id {msg.msg_id!r} is already stored; use "
                              "update_message to change it")
            known = self._conv_types([msg.conv_id]).get(msg.conv_id)
            if known is not None and known != msg.chat_type:
                raise IMError(ErrorCode.INVALID_PARAM,
                              f"conversation {msg.conv_id!r} is a {ChatType(known).name}, not a "
                              f"{msg.chat_type.name}; conversation ids are unique across types")
            self._write_rows([row], [msg])
        return msg

    def import_messages(self, messages: Iterable[Message], *, batch_size: int = 1000,
                        progress: Callable[[int], None] | None = None) -> ImportResult:
        """Import messages in bulk, in bounded memory, one transaction per batch.

        ``messages`` may be any iterable (a generator too). Messages already stored (same
        ``msg_id``) are counted as duplicates and left as they are; CMD messages and messages that
        fail validation are skipped and counted with their reason. Imported received messages
        count as unread only when they say ``is_read=False``. ``progress`` is called after each
        batch with the number of messages read so far.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise IMError(ErrorCode.INVALID_PARAM, "batch_size must be a positive integer")
        result = ImportResult()
        seen = 0
        batch: list[Message] = []
        for msg in messages:
            seen += 1
            batch.append(msg)
            if len(batch) >= batch_size:
                self._import_batch(batch, result, mode=_IMPORT)
                batch = []
                if progress:
                    progress(seen)
        if batch:
            self._import_batch(batch, result, mode=_IMPORT)
            if progress:
                progress(seen)
        if self._index is not None and result.imported:
            with self._lock:
                self._flush_index(merge=False)
                self._index.merge_if_fragmented()
        return result

    def _import_batch(self, batch: list[Message], result: ImportResult, *,
                      mode: int) -> list[Message]:
        written: list[Message] = []
        with self._tx():
            rows: list[tuple[Any, ...]] = []
            ids: set[str] = set()
            for msg in batch:
                try:
                    row = self._prepare(msg, imported=mode != _RECEIVED,
                                        force_read=mode == _HISTORY)
                except IMError as exc:
                    if isinstance(msg, Message) and msg.type == MessageType.CMD:
                        result.skip("CMD messages are never stored")
                    else:
                        result.skip(f"{exc.code.name}: {exc.description}")
                    continue
                if msg.msg_id in ids:
                    result.duplicates += 1
                    continue
                ids.add(msg.msg_id)
                rows.append(row)
                written.append(msg)
            existing = self._existing_ids([r[0] for r in rows])
            types = self._conv_types(r[1] for r in rows)
            keep_rows, keep_msgs = [], []
            for row, msg in zip(rows, written, strict=True):
                if row[0] in existing:
                    result.duplicates += 1
                    continue
                known = types.setdefault(row[1], row[2])
                if known != row[2]:
                    result.skip(f"INVALID_PARAM: conversation {row[1]!r} is a "
                                f"{ChatType(known).name}, not a {ChatType(row[2]).name}")
                    continue
                keep_rows.append(row)
                keep_msgs.append(msg)
            if keep_rows:
                self._write_rows(keep_rows, keep_msgs)
            result.imported += len(keep_rows)
        if mode != _IMPORT:
            self._flush_index()
        elif self._index is not None:
            # Bulk imports hand the index large batches (both cores, one segment each); what is
            # still pending is applied at the end of the import, or by the next search.
            pending = self._one("SELECT count(*) FROM search_outbox")[0]
            if pending >= _IMPORT_INDEX_BATCH:
                self._flush_index(merge=False)
                self._index.merge_if_fragmented()
        return keep_msgs

    def save_history(self, messages: Sequence[Message]) -> list[Message]:
        """Merge messages fetched from a server in one transaction: new ones are stored as read,
        known ones (same ``msg_id``) keep their local state. Returns the messages that were new."""
        return self._import_batch(list(messages), ImportResult(), mode=_HISTORY)

    def save_received(self, messages: Sequence[Message]) -> list[Message]:
        """Store messages that just arrived (unread unless they say otherwise), skipping any
        already stored. Returns the messages that were new."""
        return self._import_batch(list(messages), ImportResult(), mode=_RECEIVED)

    def update_message(self, msg: Message) -> Message:
        """Write back a changed message (body, ext, status, flags, server time).

        The conversation, type, sender and direction of a stored message do not change. Raises
        `IMError(MESSAGE_INVALID)` when no message has ``msg.msg_id``.
        """
        with self._tx() as db:
            row = self._find_row(msg.msg_id, "id, conv_id, type, direction, is_read, sender, "
                                             "chat_type, sort_time")
            if row is None:
                raise IMError(ErrorCode.MESSAGE_INVALID,
                              f"no stored message has id {msg.msg_id!r}; insert it first")
            rowid, conv_id, mtype, direction, was_read, sender, chat_type, old_sort = row
            if int(msg.type) != mtype:
                raise IMError(ErrorCode.INVALID_PARAM, "the type of a stored message cannot change")
            body, ext = validate_message(msg, self.limits)
            msg.conv_id, msg.direction, msg.sender = conv_id, Direction(direction), sender
            msg.chat_type = ChatType(chat_type)
            is_read = True if direction == Direction.SEND else bool(msg.is_read)
            msg.is_read = is_read
            db.execute_sql(
                "UPDATE message SET status = ?, server_time = ?, sort_time = ?, is_read = ?, "
                "is_delivered = ?, is_read_acked = ?, need_group_ack = ?, group_ack_count = ?, "
                "body = ?, ext = ?, local_time = ? WHERE id = ?",
                (int(msg.status), msg.server_time, msg.timestamp, int(is_read),
                 int(msg.is_delivered), int(msg.is_read_acked), int(msg.need_group_ack),
                 int(msg.group_ack_count), body, ext or None, int(msg.local_time), rowid))
            delta = int(not was_read) - int(not is_read) if direction == Direction.RECEIVE else 0
            if delta:
                db.execute_sql("UPDATE conversation SET unread_count = unread_count - ? "
                               "WHERE conv_id = ?", (delta, conv_id))
            if mtype in _ATTACH_INTS:
                db.cursor().execute(_ATTACH_UPSERT, _attachment_row(rowid, msg))
            if msg.timestamp != old_sort:
                self._refresh_last(conv_id)
            self._outbox([rowid], _OP_INDEX)
        return msg

    # ------------------------------------------------------------------------------- deleting

    def delete_message(self, msg_id: str) -> bool:
        """Delete one message. Returns False when there was none with that id."""
        with self._tx():
            row = self._find_row(msg_id, "id, conv_id")
            if row is None:
                return False
            self._delete_where("id = ?", (row[0],), [row[1]])
        return True

    def _delete_where(self, where: str, params: Sequence[Any], conv_ids: Iterable[str]) -> int:
        db = self._db
        unread = db.execute_sql(
            f"SELECT conv_id, count(*) FROM message WHERE ({where}) AND direction = 2 "
            "AND is_read = 0 GROUP BY conv_id", params).fetchall()
        if self._index is not None:
            db.execute_sql(f"INSERT INTO search_outbox (rowid, op) SELECT id, {_OP_DELETE} "
                           f"FROM message WHERE {where}", params)
        n = int(db.execute_sql(f"DELETE FROM message WHERE {where}", params).rowcount)
        for conv_id, count in unread:
            db.execute_sql("UPDATE conversation SET unread_count = unread_count - ? "
                           "WHERE conv_id = ?", (count, conv_id))
        for conv_id in set(conv_ids):
            self._refresh_last(conv_id)
        return n

    def delete_messages(self, conv_id: str, *, start_time: int, end_time: int) -> int:
        """Delete a conversation's messages whose time lies in [start_time, end_time] (ms).
        Returns how many were deleted."""
        if start_time > end_time:
            raise IMError(ErrorCode.INVALID_PARAM, "start_time is after end_time")
        with self._tx():
            return self._delete_where("conv_id = ? AND sort_time BETWEEN ? AND ?",
                                      (conv_id, start_time, end_time), [conv_id])

    def delete_message_ids(self, msg_ids: Sequence[str]) -> int:
        """Delete several messages by id in one transaction. Returns how many were deleted."""
        ids = list(msg_ids)
        with self._tx():
            n = 0
            for part in _chunks(ids):
                m = _marks(len(part))
                params = tuple(part) + tuple(part)
                convs = [r[0] for r in self._db.execute_sql(
                    f"SELECT DISTINCT conv_id FROM message WHERE msg_id IN ({m}) OR local_id IN ({m})",
                    params).fetchall()]
                n += self._delete_where(f"msg_id IN ({m}) OR local_id IN ({m})", params, convs)
            return n

    def delete_conversation(self, conv_id: str, *, delete_messages: bool = True) -> bool:
        """Remove a conversation from the list, with its messages unless ``delete_messages`` is
        False (then its messages stay readable and count as read). Returns False when there was
        no such conversation."""
        with self._tx() as db:
            if delete_messages:
                self._delete_where("conv_id = ?", (conv_id,), [])
            else:
                db.execute_sql("UPDATE message SET is_read = 1 WHERE conv_id = ? AND "
                               "direction = 2 AND is_read = 0", (conv_id,))
            return bool(db.execute_sql("DELETE FROM conversation WHERE conv_id = ?",
                                       (conv_id,)).rowcount)

    # -------------------------------------------------------------------------------- unread

    def unread_count(self, conv_id: str) -> int:
        """Unread received messages of one conversation (0 for an unknown one)."""
        row = self._one("SELECT unread_count FROM conversation WHERE conv_id = ?", (conv_id,))
        return int(row[0]) if row else 0

    def total_unread_count(self) -> int:
        """Unread received messages of all conversations except chat rooms."""
        row = self._one("SELECT total(unread_count) FROM conversation "
                        "WHERE unread_count > 0 AND chat_type != 3")
        return int(row[0])

    def mark_message_read(self, msg_id: str) -> bool:
        """Mark one received message read. Returns True when it was unread."""
        with self._tx() as db:
            row = self._find_row(msg_id, "id, conv_id")
            if row is None:
                raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
            changed = db.execute_sql("UPDATE message SET is_read = 1 WHERE id = ? AND "
                                     "direction = 2 AND is_read = 0", (row[0],)).rowcount
            if changed:
                db.execute_sql("UPDATE conversation SET unread_count = unread_count - 1 "
                               "WHERE conv_id = ?", (row[1],))
            return bool(changed)

    def mark_conversation_read(self, conv_id: str) -> int:
        """Mark every message of a conversation read; returns how many were unread.
        Raises `IMError(CONVERSATION_NOT_EXIST)` for an unknown conversation."""
        with self._tx() as db:
            if db.execute_sql("SELECT 1 FROM conversation WHERE conv_id = ?",
                              (conv_id,)).fetchone() is None:
                raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                              f"there is no conversation {conv_id!r}; list them with "
                              "store.conversations()")
            n = db.execute_sql("UPDATE message SET is_read = 1 WHERE conv_id = ? AND "
                               "direction = 2 AND is_read = 0", (conv_id,)).rowcount
            db.execute_sql("UPDATE conversation SET unread_count = 0 WHERE conv_id = ?", (conv_id,))
            return int(n)

    def mark_all_conversations_read(self) -> int:
        """Mark every message read; returns how many were unread."""
        with self._tx() as db:
            n = db.execute_sql("UPDATE message SET is_read = 1 WHERE direction = 2 AND is_read = 0"
                               ).rowcount
            db.execute_sql("UPDATE conversation SET unread_count = 0 WHERE unread_count != 0")
            return int(n)

    # ----------------------------------------------------------------------------- reading

    def get_message(self, msg_id: str) -> Message | None:
        """A message by its id (the server's, or the local one it had before sending)."""
        row = self._find_row(msg_id)
        return row_to_message(row) if row else None

    def _anchor(self, msg_id: str) -> tuple[int, int]:
        row = self._find_row(msg_id, "sort_time, id")
        if row is None:
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"no stored message has id {msg_id!r}; page from a stored message")
        return row[0], row[1]

    def messages(self, conv_id: str, *, start_msg_id: str | None = None, limit: int = 20,
                 direction: Direction = Direction.UP) -> list[Message]:
        """A page of a conversation's messages, oldest first.

        UP reads towards older messages: without ``start_msg_id`` the newest ``limit``, with it the
        ``limit`` just before it (exclusive). DOWN reads towards newer ones the same way.
        """
        _check_limit(limit)
        direction = _check_direction(direction)
        if start_msg_id is None:
            rows = self._q(_PAGE[direction, False], (conv_id, limit))
        else:
            sort, rowid = self._anchor(start_msg_id)
            rows = self._q(_PAGE[direction, True], (conv_id, sort, rowid, limit))
        if direction == Direction.UP:
            rows.reverse()
        return [row_to_message(r) for r in rows]

    def message_count(self, conv_id: str) -> int:
        """How many messages of a conversation are stored."""
        return int(self._one("SELECT count(*) FROM message WHERE conv_id = ?", (conv_id,))[0])

    def messages_by_type(self, conv_id: str | None,
                         types: MessageType | Iterable[MessageType], *,
                         timestamp: int | None = None, limit: int = 20, sender: str | None = None,
                         direction: Direction = Direction.UP) -> list[Message]:
        """Messages of the given types (in one conversation, or all when ``conv_id`` is None),
        oldest first; ``timestamp`` is an exclusive starting point in the reading direction."""
        _check_limit(limit)
        direction = _check_direction(direction)
        tlist = _as_types(types) or []
        if not tlist:
            raise IMError(ErrorCode.INVALID_PARAM, "give at least one message type")
        where = [f"type IN ({_marks(len(tlist))})"]
        params: list[Any] = list(tlist)
        if conv_id is not None:
            where.append("conv_id = ?")
            params.append(conv_id)
        if sender is not None:
            where.append("sender = ?")
            params.append(sender)
        up = direction == Direction.UP
        if timestamp is not None:
            where.append("sort_time < ?" if up else "sort_time > ?")
            params.append(timestamp)
        order = "DESC" if up else "ASC"
        rows = self._q(f"SELECT {_COLS} FROM message WHERE {' AND '.join(where)} "
                       f"ORDER BY sort_time {order}, id {order} LIMIT ?", (*params, limit))
        if up:
            rows.reverse()
        return [row_to_message(r) for r in rows]

    def messages_between(self, conv_id: str, start_time: int, end_time: int, *,
                         limit: int = 20) -> list[Message]:
        """The first ``limit`` messages of a conversation with a time in [start_time, end_time]
        (ms, inclusive), oldest first."""
        _check_limit(limit)
        if start_time > end_time:
            raise IMError(ErrorCode.INVALID_PARAM, "start_time is after end_time")
        rows = self._q(f"SELECT {_COLS} FROM message WHERE conv_id = ? AND sort_time BETWEEN ? "
                       "AND ? ORDER BY sort_time, id LIMIT ?", (conv_id, start_time, end_time, limit))
        return [row_to_message(r) for r in rows]

    # ------------------------------------------------------------------------ conversations

    def conversations(self, *, chat_type: ChatType | None = None,
                      limit: int | None = None) -> list[Conversation]:
        """Local conversations with their unread counts and last messages, newest activity first
        (all of them, or the first ``limit``)."""
        where, params = ("", ()) if chat_type is None else ("WHERE chat_type = ?",
                                                             (int(chat_type),))
        sql = _CONV_LIST.format(where=where)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise IMError(ErrorCode.QUERY_PARAM_REACHES_LIMIT, "limit must be a positive integer")
            sql += f" LIMIT {limit}"
        return [self._to_conversation(r) for r in self._q(sql, params)]

    def conversation(self, conv_id: str) -> Conversation | None:
        """One conversation, or None."""
        rows = self._q(_CONV_LIST.format(where="WHERE conv_id = ?"), (conv_id,))
        return self._to_conversation(rows[0]) if rows else None

    @staticmethod
    def _to_conversation(r: Sequence[Any]) -> Conversation:
        return Conversation.lazy(r[0], _CTYPE[r[1]], r[2], r[3], decode_ext(r[4]) if r[4] else {},
                                 r[5:] if r[5] is not None else None, row_to_message)

    def save_conversation(self, conv_id: str, chat_type: ChatType, *, last_activity: int = 0,
                          ext: dict[str, Any] | None = None) -> Conversation:
        """Create a conversation (or update its ext and activity), e.g. from the server's list."""
        chat_type = ChatType(chat_type)
        with self._tx() as db:
            known = self._conv_types([conv_id]).get(conv_id)
            if known is not None and known != chat_type:
                raise IMError(ErrorCode.INVALID_PARAM,
                              f"conversation {conv_id!r} is a {ChatType(known).name}")
            db.execute_sql("INSERT OR IGNORE INTO conversation (conv_id, chat_type, unread_count, "
                           "last_sort, last_activity) VALUES (?, ?, 0, 0, ?)",
                           (conv_id, int(chat_type), last_activity))
            db.execute_sql("UPDATE conversation SET last_activity = max(last_activity, ?) "
                           "WHERE conv_id = ?", (last_activity, conv_id))
            if ext is not None:
                db.execute_sql("UPDATE conversation SET ext = ? WHERE conv_id = ?",
                               (encode_ext(ext) or None, conv_id))
            self._refresh_last(conv_id, recount=known is None)
        conv = self.conversation(conv_id)
        assert conv is not None
        return conv

    def set_conversation_ext(self, conv_id: str, ext: dict[str, Any]) -> None:
        """Replace a conversation's app-defined attributes (drafts, pins, ...)."""
        blob = encode_ext(ext) if isinstance(ext, dict) else None
        if blob is None and ext:
            raise IMError(ErrorCode.INVALID_PARAM, "ext must be a dict")
        if not self._sql("UPDATE conversation SET ext = ? WHERE conv_id = ?", (blob or None, conv_id)):
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST, f"there is no conversation {conv_id!r}")

    # ------------------------------------------------------------------- client support

    def set_status(self, msg_id: str, status: MessageStatus) -> None:
        """Change a message's send status."""
        self._sql("UPDATE message SET status = ? WHERE msg_id = ?", (int(status), msg_id))

    def mark_sent(self, local_id: str, server_id: str, server_time: int
                  ) -> tuple[Message, list[int]]:
        """A send succeeded: the message takes the server's id and time (its local id still finds
        it), and receipts that arrived early are applied. Returns the message and the kinds of
        receipt applied (`RECEIPT_DELIVERED`, `RECEIPT_READ`)."""
        with self._tx() as db:
            row = self._find_row(local_id, "id, conv_id, msg_id")
            if row is None:
                raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {local_id!r}")
            rowid, conv_id, current = row
            if server_id != current and self._existing_ids([server_id]):
                # The server's copy came in first (e.g. with history): keep ours, drop the twin.
                self._delete_where("msg_id = ?", (server_id,), [])
            db.execute_sql("UPDATE message SET msg_id = ?, local_id = CASE WHEN msg_id != ? THEN "
                           "msg_id ELSE local_id END, server_time = ?, sort_time = ?, status = ? "
                           "WHERE id = ?", (server_id, server_id, server_time, server_time,
                                            int(MessageStatus.SUCCESS), rowid))
            kinds = sorted(k for (k,) in db.execute_sql(
                "SELECT kind FROM pending_receipt WHERE msg_id = ?", (server_id,)).fetchall())
            for kind in kinds:
                col = "is_delivered" if kind == RECEIPT_DELIVERED else "is_read_acked"
                db.execute_sql(f"UPDATE message SET {col} = 1 WHERE id = ?", (rowid,))
            db.execute_sql("DELETE FROM pending_receipt WHERE msg_id = ?", (server_id,))
            db.execute_sql("UPDATE message SET group_ack_count = (SELECT count(*) FROM group_ack "
                           "WHERE group_ack.msg_id = ?) WHERE id = ?", (server_id, rowid))
            self._refresh_last(conv_id)
            self._outbox([rowid], _OP_INDEX)
        msg = self.get_message(server_id)
        assert msg is not None
        return msg, kinds

    def apply_receipts(self, kind: int, msg_ids: Sequence[str]) -> list[str]:
        """Set ``is_delivered`` (kind 1) or ``is_read_acked`` (kind 2) on sent messages; returns
        the ids that changed. Receipts for messages not stored yet are kept until they are."""
        col = "is_delivered" if kind == RECEIPT_DELIVERED else "is_read_acked"
        changed = []
        with self._tx() as db:
            for msg_id in dict.fromkeys(msg_ids):
                row = self._find_row(msg_id, f"id, {col}")
                if row is None:
                    db.execute_sql("INSERT OR IGNORE INTO pending_receipt (msg_id, kind) VALUES "
                                   "(?, ?)", (msg_id, kind))
                elif not row[1]:
                    extra = ", is_delivered = 1" if kind == RECEIPT_READ else ""
                    db.execute_sql(f"UPDATE message SET {col} = 1{extra} WHERE id = ?", (row[0],))
                    changed.append(msg_id)
        return changed

    def mark_conversation_read_acked(self, conv_id: str, before: int | None = None) -> list[str]:
        """The peer read the whole conversation: every sent message there is read-acked."""
        cond = "" if before is None else " AND sort_time <= ?"
        params: tuple[Any, ...] = (conv_id,) if before is None else (conv_id, before)
        with self._tx() as db:
            ids = [r[0] for r in db.execute_sql(
                f"SELECT msg_id FROM message WHERE conv_id = ? AND direction = 1 AND "
                f"is_read_acked = 0{cond}", params).fetchall()]
            db.execute_sql(f"UPDATE message SET is_read_acked = 1, is_delivered = 1 WHERE "
                           f"conv_id = ? AND direction = 1 AND is_read_acked = 0{cond}", params)
        return ids

    def add_group_acks(self, acks: Sequence[Any]) -> dict[str, int]:
        """Record group read receipts (`GroupReadAck`); returns msg_id -> distinct readers, for
        the stored messages whose count changed."""
        out: dict[str, int] = {}
        with self._tx() as db:
            for ack in acks:
                if db.execute_sql("INSERT OR IGNORE INTO group_ack (msg_id, reader, ack_time) "
                                  "VALUES (?, ?, ?)", (ack.msg_id, ack.reader, ack.timestamp)
                                  ).rowcount:
                    out[ack.msg_id] = 0
            for msg_id in out:
                db.execute_sql("UPDATE message SET group_ack_count = (SELECT count(*) FROM "
                               "group_ack WHERE msg_id = ?) WHERE msg_id = ?", (msg_id, msg_id))
                row = db.execute_sql("SELECT group_ack_count FROM message WHERE msg_id = ?",
                                     (msg_id,)).fetchone()
                out[msg_id] = row[0] if row else -1
        return {k: v for k, v in out.items() if v >= 0}

    # ---------------------------------------------------------------------------- verify

    def verify(self) -> VerifyReport:
        """Recount derived state (unread counters, last messages, group ack counts, attachment
        rows, the search index), repair any drift, and report what was repaired."""
        rep: dict[str, int] = {}
        with self._tx() as db:
            rep["orphan_unread_messages"] = db.execute_sql(
                "INSERT OR IGNORE INTO conversation (conv_id, chat_type, unread_count, last_sort, "
                "last_activity) SELECT conv_id, chat_type, 0, 0, 0 FROM message WHERE direction = 2 "
                "AND is_read = 0 AND conv_id NOT IN (SELECT conv_id FROM conversation) "
                "GROUP BY conv_id").rowcount
            rep["unread_counts"] = db.execute_sql(
                "UPDATE conversation SET unread_count = (SELECT count(*) FROM message m WHERE "
                "m.conv_id = conversation.conv_id AND m.direction = 2 AND m.is_read = 0) WHERE "
                "unread_count != (SELECT count(*) FROM message m WHERE m.conv_id = "
                "conversation.conv_id AND m.direction = 2 AND m.is_read = 0)").rowcount
            true_last = ("(SELECT id FROM message m WHERE m.conv_id = conversation.conv_id "
                         "ORDER BY sort_time DESC, id DESC LIMIT 1)")
            bad = [r[0] for r in db.execute_sql(
                f"SELECT conv_id FROM conversation WHERE last_rowid IS NOT {true_last}").fetchall()]
            for conv_id in bad:
                self._refresh_last(conv_id)
            rep["last_messages"] = len(bad)
            # the trigger re-copies the row when last_rowid is set
            rep["last_message_copies"] = db.execute_sql(
                "UPDATE conversation SET last_rowid = last_rowid WHERE lm_msg_id IS NOT "
                "(SELECT msg_id FROM message WHERE id = conversation.last_rowid)").rowcount
            rep["group_ack_counts"] = db.execute_sql(
                "UPDATE message SET group_ack_count = (SELECT count(*) FROM group_ack g WHERE "
                "g.msg_id = message.msg_id) WHERE need_group_ack = 1 AND group_ack_count != "
                "(SELECT count(*) FROM group_ack g WHERE g.msg_id = message.msg_id)").rowcount
            missing = db.execute_sql(
                f"SELECT {_COLS} FROM message WHERE type IN ({_marks(len(_ATTACH_INTS))}) AND id "
                "NOT IN (SELECT message_id FROM attachment)", tuple(_ATTACH_INTS)).fetchall()
            for r in missing:
                try:
                    db.cursor().execute(_ATTACH_UPSERT, _attachment_row(r[0], row_to_message(r)))
                except IMError:
                    log.warning("message row %s has a corrupt payload", r[0])
            rep["attachment_rows"] = len(missing)
        rep["search_index"] = 0
        if self._index is not None:
            self._flush_index()
            stored = self._one("SELECT count(*) FROM message")[0]
            if self._index.doc_count() != stored:
                rep["search_index"] = abs(self._index.doc_count() - stored)
                self.rebuild_search_index()
        return VerifyReport(rep)

    def stats(self) -> dict[str, int]:
        """Counts for tools: conversations, messages, unread, attachments, pending index work."""
        one = self._one
        return {
            "conversations": one("SELECT count(*) FROM conversation")[0],
            "messages": one("SELECT count(*) FROM message")[0],
            "unread": self.total_unread_count(),
            "attachments": one("SELECT count(*) FROM attachment")[0],
            "search_pending": one("SELECT count(*) FROM search_outbox")[0],
        }


_ATTACH_INTS = frozenset(int(t) for t in ATTACHMENT_TYPES)
_ATTACH_UPSERT = ("INSERT OR REPLACE INTO attachment (message_id, remote_url, local_path, size, "
                  "file_status, thumb_status) VALUES (?, ?, ?, ?, ?, ?)")


def _attachment_row(rowid: int, msg: Message) -> tuple[Any, ...]:
    b = msg.body
    assert isinstance(b, FileBody)
    thumb = int(b.thumbnail_status) if isinstance(b, ImageBody | VideoBody) else None
    return (rowid, b.remote_url, b.local_path, b.size, int(b.download_status), thumb)


def open_store(path: str | os.PathLike[str], *, user_id: str, limits: Limits | None = None,
               search: bool = True) -> MessageStore:
    """Same as `MessageStore.open`."""
    return MessageStore.open(path, user_id=user_id, limits=limits, search=search)

