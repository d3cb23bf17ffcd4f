"""Writing messages: insert, import, received and history batches, update, delete, read state,
local ext.

Rules kept here:
- every call is one write transaction (`Connection.tx`): a call that fails leaves nothing written;
- a message is validated and encoded once (`Writes.prepare`), and the store settles the fields
  that depend on its owner: ``sender`` (None: the owner), ``direction``, ``conv_id``, ``status``
  (CREATE becomes SUCCESS for a stored copy) and ``is_read`` (None: unread when received live,
  read when imported); nothing else of the caller's message is changed;
- each change keeps the conversation's unread counter and last message (`ConversationTable`) and
  enqueues its search work (`SearchWriter`) in the same transaction;
- attachment rows mirror each attachment's download state;
- reading a conversation (or one of its messages) clears its `ConversationMark.UNREAD`;
- a one-to-one message between two other people is refused (insert) or skipped (import).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

from ..codec import Limits, encode_local_ext, validate_message
from ..errors import ErrorCode, IMError
from ..kinds import ATTACHMENT_TYPES, KINDS, blank_body
from ..lifecycle import (
    INT64_MAX,
    INT64_MIN,
    RECALLED_BY,
    is_mine,
    send_move,
    settled_status,
)
from ..message import (
    Body,
    ChatType,
    Direction,
    FileBody,
    ImageBody,
    ImportResult,
    Message,
    MessageStatus,
    MessageType,
    VideoBody,
    conversation_id,
)
from ._checks import stranger_chat
from ._connection import Connection, chunks, marks
from ._conversations import ConversationTable
from ._indexer import SearchWriter
from ._rows import (
    INSERT_SQL,
    SELECT_COLUMNS,
    UNREAD,
    UPDATABLE,
    UPDATE_SQL,
    MessageRow,
    message_row,
    row_to_message,
)
from ._tombstones import Tombstones

__all__ = ["Mode", "Screen", "Writes"]

# Called inside a batch's write transaction with its valid rows and the ids already stored;
# returns the ids to leave out (see `_merge.Merger`).
Screen = Callable[[list[MessageRow], set[str]], set[str]]

_NOT_STORED = "CMD messages are never stored; send them with ChatClient.send_message"
_ATTACH_INTS = frozenset(int(t) for t in ATTACHMENT_TYPES)
_ATTACH_UPSERT = ("INSERT OR REPLACE INTO attachment (message_id, remote_url, local_path, size, "
                  "file_status, thumb_status) VALUES (?, ?, ?, ?, ?, ?)")


class Mode(Enum):
    """How a batch treats a received message's read flag."""

    IMPORT = "import"  # unread only when it says is_read=False
    HISTORY = "history"  # the server's history: unread only when the server says is_read=False
    RECEIVED = "received"  # unread unless it says otherwise: it just arrived


def attachment_row(rowid: int, msg: Message) -> tuple[Any, ...]:
    b = msg.body
    assert isinstance(b, FileBody)
    thumb = int(b.thumbnail_status) if isinstance(b, ImageBody | VideoBody) else None
    return (rowid, b.remote_url, b.local_path, b.size, int(b.download_status), thumb)


def upsert_attachment(conn: Connection, rowid: int, msg: Message) -> None:
    conn.run(_ATTACH_UPSERT, attachment_row(rowid, msg))


def _skip_reason(msg: Message, exc: IMError) -> str:
    """Why an import leaves a message out: its kind is never stored, or what was wrong with it."""
    mtype = getattr(msg, "type", None)
    if type(mtype) is MessageType and not KINDS[mtype].stored:
        return f"{mtype.name} messages are never stored"
    return f"{exc.code.name}: {exc.description}"


class Writes:
    def __init__(self, conn: Connection, owner: str, limits: Limits,
                 conversations: ConversationTable, indexer: SearchWriter,
                 tombstones: Tombstones) -> None:
        self._conn = conn
        self._tombstones = tombstones
        self._owner = owner
        self._limits = limits
        self._convs = conversations
        self._indexer = indexer

    # ------------------------------------------------------------------------------ preparing

    def _settle(self, msg: Message, *, mode: Mode | None) -> None:
        """Settle what depends on the owner (``msg`` is valid): sender, direction, conversation,
        read flag and status. These are the only fields of the caller's message the store sets."""
        imported = mode in (Mode.IMPORT, Mode.HISTORY)
        if is_mine(msg.sender, self._owner):
            msg.sender = self._owner
            msg.direction = Direction.SEND
            msg.is_read = True
        else:
            msg.direction = Direction.RECEIVE
            msg.is_read = imported if msg.is_read is None else bool(msg.is_read)
        msg.conv_id = conversation_id(msg.chat_type, msg.to, msg.sender, self._owner)
        msg.status = settled_status(msg.status, imported=imported)

    def prepare(self, msg: Message, *, mode: Mode | None = None) -> MessageRow:
        """Validate, settle and encode a message, once: its row, without a row id yet."""
        if not isinstance(msg, Message):
            raise IMError(ErrorCode.INVALID_PARAM, f"expected a Message, got {type(msg).__name__}")
        body, ext = validate_message(msg, self._limits)
        if not KINDS[msg.type].stored:
            raise IMError(ErrorCode.MESSAGE_INVALID, _NOT_STORED)
        self._settle(msg, mode=mode)
        return message_row(msg, body, ext)

    def _existing_ids(self, msg_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for part in chunks(msg_ids):
            found.update(r[0] for r in self._conn.run(
                f"SELECT msg_id FROM message WHERE msg_id IN ({marks(len(part))})",
                tuple(part)).fetchall())
        return found

    def _write_rows(self, rows: list[MessageRow], msgs: list[Message]) -> None:
        """Insert prepared rows (ids new, conversation types checked) in the open transaction:
        messages, attachments, conversation counters and last messages, the search outbox."""
        conn = self._conn
        first = (conn.run("SELECT max(id) FROM message").fetchone()[0] or 0) + 1
        conn.run_many(INSERT_SQL, [r[1:] for r in rows])  # ids first, first + 1, ... in order
        self._tombstones.lift_ids(r.msg_id for r in rows)
        # conv_id -> [chat_type, unread, best_sort, best_rowid]; the best of the main timeline
        # (a thread reply is never a conversation's last message)
        convs: dict[str, list[Any]] = {}
        attach = []
        for rowid, row, msg in zip(range(first, first + len(rows)), rows, msgs, strict=True):
            c = convs.get(row.conv_id)
            if c is None:
                c = convs[row.conv_id] = [row.chat_type, 0, None, None]
            if row.direction == Direction.RECEIVE and not row.is_read:
                c[1] += 1
            if row.thread_id is None and (c[3] is None or (row.sort_time, rowid) > (c[2], c[3])):
                c[2], c[3] = row.sort_time, rowid
            if row.type in _ATTACH_INTS:
                attach.append(attachment_row(rowid, msg))
        if attach:
            conn.run_many(_ATTACH_UPSERT, attach)
        for conv_id, (chat_type, unread, sort, rowid) in convs.items():
            self._convs.add_messages(conv_id, chat_type, unread, sort, rowid)
        self._indexer.enqueue([first + i for i in range(len(rows))], new=True, messages=msgs)

    # -------------------------------------------------------------------------------- writing

    def insert(self, msg: Message) -> Message:
        err = stranger_chat(msg, self._owner)
        if err is not None:
            raise err
        with self._conn.tx():
            row = self.prepare(msg)
            if self._existing_ids([row.msg_id]):
                raise IMError(ErrorCode.MESSAGE_INVALID,
                              f"a message with id {row.msg_id!r} is already stored; use "
                              "update_message to change it")
            self._convs.check_type(row.conv_id, msg.chat_type)
            self._write_rows([row], [msg])
        return msg

    def import_all(self, messages: Iterable[Message], batch_size: int,
                   progress: Callable[[int], None] | None) -> ImportResult:
        result = ImportResult()
        seen = 0
        batch: list[Message] = []
        self._indexer.begin_bulk()
        try:
            for msg in messages:
                seen += 1
                if stranger_chat(msg, self._owner) is not None:
                    result.skip("a one-to-one message between two other people")
                    continue
                batch.append(msg)
                if len(batch) >= batch_size:
                    self.write_batch(batch, result, mode=Mode.IMPORT)
                    batch = []
                    if progress:
                        progress(seen)
            if batch:
                self.write_batch(batch, result, mode=Mode.IMPORT)
                if progress:
                    progress(seen)
        finally:
            self._indexer.end_bulk()
        if result.imported:
            self._indexer.finish_bulk()
        return result

    def _prepare_batch(self, batch: list[Message], result: ImportResult,
                       mode: Mode) -> tuple[list[MessageRow], list[Message]]:
        rows: list[MessageRow] = []
        msgs: list[Message] = []
        ids: set[str] = set()
        for msg in batch:
            try:
                row = self.prepare(msg, mode=mode)
            except IMError as exc:
                result.skip(_skip_reason(msg, exc))
                continue
            if row.msg_id in ids:
                result.duplicates += 1
                continue
            ids.add(row.msg_id)
            rows.append(row)
            msgs.append(msg)
        return rows, msgs

    def write_batch(self, batch: list[Message], result: ImportResult, *,
                    mode: Mode, screen: Screen | None = None) -> list[Message]:
        """Store a batch in one transaction, skipping (and counting) invalid messages and
        duplicates, and the messages ``screen`` leaves out. Returns the messages written."""
        if mode != Mode.IMPORT:  # (an import left them out already, counting them as read)
            kept = [m for m in batch if stranger_chat(m, self._owner) is None]
            for _ in range(len(batch) - len(kept)):  # a server's message not for this user
                result.skip("a one-to-one message between two other people")
            batch = kept
        with self._conn.tx():
            rows, msgs = self._prepare_batch(batch, result, mode)
            existing = self._existing_ids([r.msg_id for r in rows])
            left_out = screen(rows, set(existing)) if screen is not None else set()
            types = self._convs.types(r.conv_id for r in rows)
            keep_rows, keep_msgs = [], []
            for row, msg in zip(rows, msgs, strict=True):
                if row.msg_id in existing:
                    result.duplicates += 1
                    continue
                if row.msg_id in left_out:
                    continue
                known = types.setdefault(row.conv_id, row.chat_type)
                if known != row.chat_type:
                    result.skip(f"INVALID_PARAM: conversation {row.conv_id!r} is a "
                                f"{ChatType(known).name}, not a {ChatType(row.chat_type).name}")
                    continue
                keep_rows.append(row)
                keep_msgs.append(msg)
            if keep_rows:
                self._write_rows(keep_rows, keep_msgs)
            result.imported += len(keep_rows)
        self._indexer.settle(bulk=mode == Mode.IMPORT)
        return keep_msgs

    def update(self, msg: Message) -> Message:
        """Write back a changed message. The stored conversation, chat type, sender and
        direction win: they are set back on ``msg`` (so is ``is_read`` of a sent message)."""
        body, ext = validate_message(msg, self._limits)
        with self._conn.tx():
            old = self.find_row(msg.msg_id, "id, conv_id, type, direction, is_read, sender, "
                                            "chat_type, sort_time, status")
            if old is None:
                raise IMError(ErrorCode.MESSAGE_INVALID,
                              f"no stored message has id {msg.msg_id!r}; insert it first")
            rowid, conv_id, mtype, direction, was_read, sender, chat_type, old_sort, status = old
            if int(msg.type) != mtype:
                raise IMError(ErrorCode.INVALID_PARAM, "the type of a stored message cannot change")
            if msg.status != status:
                send_move(MessageStatus(status), msg.status)  # refuses an illegal move
            msg.conv_id, msg.direction, msg.sender = conv_id, Direction(direction), sender
            msg.chat_type = ChatType(chat_type)
            msg.is_read = True if direction == Direction.SEND else bool(msg.is_read)
            row = message_row(msg, body, ext, rowid)
            self._rewrite(row, msg, was_read=bool(was_read), old_sort=old_sort)
        return msg

    def _rewrite(self, row: MessageRow, msg: Message, *, was_read: bool, old_sort: int) -> None:
        """Write a changed row over the stored one (in the open transaction), keeping the
        unread counter, the attachment row, the last message and the index."""
        assert row.id is not None
        self._conn.run(UPDATE_SQL, (*(getattr(row, c) for c in UPDATABLE), row.id))
        if row.direction == Direction.RECEIVE:
            self._convs.add_unread(row.conv_id, int(not row.is_read) - int(not was_read))
        if row.type in _ATTACH_INTS:
            upsert_attachment(self._conn, row.id, msg)
        if row.sort_time != old_sort:
            self._convs.refresh_last(row.conv_id)
        self._indexer.enqueue([row.id])

    def _stored(self, msg_id: str) -> Message | None:
        row = self.find_row(msg_id, SELECT_COLUMNS)
        return None if row is None else row_to_message(row)

    def apply_recall(self, msg_ids: Sequence[str], recalled_at: int,
                     recalled_by: Mapping[str, str] | None = None) -> list[Message]:
        """Turn messages into recall notices: same ids, type, sender and times, the type's blank
        body, ``recalled_at`` set, and who recalled it in ``ext`` (`RECALLED_BY`) where
        ``recalled_by`` names someone; read state unchanged; they leave the search index.
        Unknown and already recalled ids are skipped. Returns the messages recalled now."""
        out = []
        with self._conn.tx():
            for msg_id in dict.fromkeys(msg_ids):
                msg = self._stored(msg_id)
                if msg is None or msg.recalled_at is not None:
                    continue
                msg.body, msg.recalled_at, msg.edited_at = blank_body(msg.type), recalled_at, None
                by = (recalled_by or {}).get(msg_id)
                if by:
                    msg.ext = {**(msg.ext or {}), RECALLED_BY: by}
                self._rewrite_decoded(msg)
                out.append(msg)
        return out

    def apply_edit(self, msg_id: str, body: Body, edited_at: int) -> Message | None:
        """Replace the content of a TEXT or CUSTOM message (the server's edit at ``edited_at``).
        An edit older than the stored one, or of a recalled message, changes nothing. Returns the
        stored message, or None when there is none with that id."""
        with self._conn.tx():
            msg = self._stored(msg_id)
            if msg is None:
                return None
            if not KINDS[msg.type].editable:
                raise IMError(ErrorCode.MESSAGE_INVALID,
                              f"a {msg.type.name} message cannot be edited (only "
                              f"{', '.join(t.name for t, k in KINDS.items() if k.editable)})")
            if msg.recalled_at is not None or (msg.edited_at or 0) > edited_at:
                return msg
            msg.body, msg.edited_at = body, edited_at
            self._rewrite_decoded(msg)
        return msg

    def _rewrite_decoded(self, msg: Message) -> None:
        body, ext = validate_message(msg, self._limits)
        old = self.find_row(msg.msg_id, "id, is_read, sort_time")
        self._rewrite(message_row(msg, body, ext, old[0]), msg, was_read=bool(old[1]),
                      old_sort=old[2])

    def find_row(self, msg_id: str, cols: str) -> Any:
        """Columns of a message row by its id, or by its local id from before the server renamed
        it (inside the open transaction)."""
        row = self._conn.run(f"SELECT {cols} FROM message WHERE msg_id = ?", (msg_id,)).fetchone()
        if row is None:
            row = self._conn.run(f"SELECT {cols} FROM message WHERE local_id = ?",
                                 (msg_id,)).fetchone()
        return row

    def set_status(self, msg_id: str, status: MessageStatus) -> bool:
        """Move a message's send status along the lifecycle's table (an illegal move raises
        INVALID_PARAM and changes nothing); False when no message has that id."""
        with self._conn.tx():
            row = self.find_row(msg_id, "id, status")
            if row is None:
                return False
            send_move(MessageStatus(row[1]), status)
            self._conn.run("UPDATE message SET status = ? WHERE id = ?", (int(status), row[0]))
        return True

    # ------------------------------------------------------------------------------- deleting

    def delete_where(self, where: str, params: Sequence[Any], conv_ids: Iterable[str]) -> int:
        """Delete the rows matching ``where`` in the open transaction, keeping the counters, the
        last messages of ``conv_ids`` and the index."""
        run = self._conn.run
        unread = run(f"SELECT conv_id, count(*) FROM message WHERE ({where}) AND {UNREAD} "
                     "GROUP BY conv_id", params).fetchall()
        self._indexer.enqueue_deletes(where, params)
        n = int(run(f"DELETE FROM message WHERE {where}", params).rowcount)
        for conv_id, count in unread:
            self._convs.add_unread(conv_id, -count)
        for conv_id in set(conv_ids):
            self._convs.refresh_last(conv_id)
        return n

    def delete_message(self, msg_id: str) -> bool:
        with self._conn.tx():
            row = self.find_row(msg_id, "id, conv_id")
            if row is None:
                return False
            self._tombstones.bury_where("id = ?", (row[0],))
            self.delete_where("id = ?", (row[0],), [row[1]])
        return True

    def delete_range(self, conv_id: str, start_time: int, end_time: int) -> int:
        with self._conn.tx():
            where = "conv_id = ? AND sort_time BETWEEN ? AND ?"
            params = (conv_id, start_time, end_time)
            self._tombstones.bury_where(where, params)
            self._tombstones.bury_range(conv_id, start_time, end_time)
            return self.delete_where(where, params, [conv_id])

    def delete_ids(self, msg_ids: Sequence[str]) -> int:
        with self._conn.tx():
            n = 0
            for part in chunks(list(msg_ids)):
                m = marks(len(part))
                params = tuple(part) + tuple(part)
                where = f"msg_id IN ({m}) OR local_id IN ({m})"
                convs = [r[0] for r in self._conn.run(
                    f"SELECT DISTINCT conv_id FROM message WHERE {where}", params).fetchall()]
                self._tombstones.bury_where(where, params)
                n += self.delete_where(where, params, convs)
            return n

    def delete_conversation(self, conv_id: str, delete_messages: bool) -> bool:
        with self._conn.tx():
            if delete_messages:
                # the range covers what the server stamped; unsent copies leave their ids too
                self._tombstones.bury_range(conv_id, INT64_MIN, INT64_MAX)
                self._tombstones.bury_where("conv_id = ? AND (server_time IS NULL OR local_id "
                                            "IS NOT NULL)", (conv_id,))
                self.delete_where("conv_id = ?", (conv_id,), [])
            else:
                self._conn.run(f"UPDATE message SET is_read = 1 WHERE conv_id = ? AND {UNREAD}",
                               (conv_id,))
            return self._convs.delete(conv_id)

    # ---------------------------------------------------------------------------- read state

    def mark_message_read(self, msg_id: str) -> bool:
        with self._conn.tx():
            row = self.find_row(msg_id, "id, conv_id")
            if row is None:
                raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
            changed = self._conn.run(f"UPDATE message SET is_read = 1 WHERE id = ? AND {UNREAD}",
                                     (row[0],)).rowcount
            self._convs.add_unread(row[1], -changed)
            self._convs.clear_unread_mark([row[1]])
            return bool(changed)

    def mark_conversation_read(self, conv_id: str, up_to_msg_id: str | None = None) -> int:
        with self._conn.tx():
            if not self._convs.exists(conv_id):
                return 0  # as for an empty conversation
            if up_to_msg_id is None:
                n = self._conn.run(f"UPDATE message SET is_read = 1 WHERE conv_id = ? AND "
                                   f"{UNREAD}", (conv_id,)).rowcount
            else:
                anchor = self.find_row(up_to_msg_id, "sort_time, id, conv_id")
                if anchor is None or anchor[2] != conv_id:
                    raise IMError(ErrorCode.INVALID_PARAM,
                                  f"conversation {conv_id!r} has no message {up_to_msg_id!r}")
                n = self._conn.run(f"UPDATE message SET is_read = 1 WHERE conv_id = ? AND {UNREAD} "
                                   "AND (sort_time, id) <= (?, ?)",
                                   (conv_id, anchor[0], anchor[1])).rowcount
            self._convs.add_unread(conv_id, -n)
            self._convs.clear_unread_mark([conv_id])
            return int(n)

    def mark_all_read(self) -> int:
        with self._conn.tx():
            n = self._conn.run(f"UPDATE message SET is_read = 1 WHERE {UNREAD}").rowcount
            self._conn.run("UPDATE conversation SET unread_count = 0 WHERE unread_count != 0")
            self._convs.clear_unread_mark(None)
            return int(n)

    def set_local_ext(self, msg_id: str, data: dict[str, Any]) -> Message:
        """Replace a stored message's ``local_ext`` (its own limit, not the payload's)."""
        blob = encode_local_ext(data, self._limits)
        with self._conn.tx():
            row = self.find_row(msg_id, "id")
            if row is None:
                raise IMError(ErrorCode.MESSAGE_INVALID,
                              f"no stored message has id {msg_id!r}; insert it first")
            self._conn.run("UPDATE message SET local_ext = ? WHERE id = ?", (blob, row[0]))
        msg = self._stored(msg_id)
        assert msg is not None
        return msg
