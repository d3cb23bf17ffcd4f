"""The SQLite schema as peewee models, built from the message row, and its migrations.

Rules kept here:
- the ``message`` table and the conversation's copy of its last message (``lm_*`` columns) are
  built from `MessageRow`: a column added there appears here, in the upgrade of older stores
  (as a nullable column) and in the triggers that keep the copy;
- models are built per database (`build_models`), so several stores (and ``:memory:`` tests) live
  in one process without sharing a binding;
- ``conversation.unread_count`` and ``conversation.last_rowid`` are derived state, kept in the
  same transaction as the message change and checked by verify;
- the schema version lives in ``meta``; a database from a newer imstore is refused, not guessed
  at. Version 2 added ``edited_at`` and ``recalled_at`` (and the copy of ``local_id``), and the
  time a pending receipt arrived. Version 3 added rich messages and conversation state: the
  message's ``reply_to``, ``thread_id`` and ``local_ext``; the conversation's ``title``,
  ``pinned_at``, ``marks`` and ``draft`` (a title an importer kept in ``ext["title"]`` moves to
  ``title``); the tables ``reaction``, ``reaction_count``, ``thread`` and ``pinned_message``;
- ``thread`` (reply count and newest reply per root) is derived state kept by triggers on the
  message table, so every insert, delete and change of a reply's root keeps it; ``reaction_count`` is kept by
  `_reactions`; both are checked by verify. Reactions and pins belong to a message row and go
  with it (``ON DELETE CASCADE``);
- the store's `Limits` live in ``meta`` too: a store keeps the limits it was opened with.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from types import SimpleNamespace
from typing import Any

import peewee as pw

from ..codec import Limits, decode_ext, encode_ext
from ..errors import ErrorCode, IMError
from ._adapter_state import TABLES as _ADAPTER_STATE_TABLES
from ._gaps import TABLES as _STRETCH_TABLES
from ._rows import (
    IN_PROGRESS,
    LAST_COPY,
    LIST_ORDER,
    MESSAGE_COLUMNS,
    NOT_ROOMS,
    UNREAD,
    MessageRow,
)
from ._tombstones import TABLES as _TOMBSTONE_TABLES

__all__ = ["DATABASE_FILE", "SCHEMA_VERSION", "build_models", "migrate", "read_meta", "read_owner",
           "settle_limits"]

SCHEMA_VERSION = 3
DATABASE_FILE = "imstore.db"  # in the store's directory

# Indexes peewee cannot express (partial, or ordered for keyset paging), created after the tables.
_EXTRA_INDEXES = (
    # keyset pages; thread_id last so that a page of the main timeline skips thread replies in
    # the index, without reading their rows
    "CREATE INDEX IF NOT EXISTS message_conv_sort ON message (conv_id, sort_time, id, thread_id)",
    "CREATE INDEX IF NOT EXISTS message_conv_type_sort ON message (conv_id, type, sort_time, id)",
    "CREATE INDEX IF NOT EXISTS message_type_sort ON message (type, sort_time, id)",
    "CREATE INDEX IF NOT EXISTS message_sort ON message (sort_time, id)",
    f"CREATE INDEX IF NOT EXISTS message_unread ON message (conv_id) WHERE {UNREAD}",
    f"CREATE INDEX IF NOT EXISTS message_inprogress ON message (status) WHERE {IN_PROGRESS}",
    "CREATE INDEX IF NOT EXISTS message_local_id ON message (local_id) WHERE local_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS conversation_activity ON conversation (last_activity)",
    "CREATE INDEX IF NOT EXISTS conversation_unread ON conversation (unread_count) "
    f"WHERE unread_count > 0 AND {NOT_ROOMS}",
    # the conversation list's order (pins first), and the same for the conversations with marks
    f"CREATE INDEX IF NOT EXISTS conversation_list ON conversation ({LIST_ORDER})",
    f"CREATE INDEX IF NOT EXISTS conversation_marked ON conversation ({LIST_ORDER}) "
    "WHERE marks IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS message_thread ON message (thread_id, sort_time, id) "
    "WHERE thread_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS thread_conv ON thread (conv_id, last_sort, last_rowid)",
    # the replies to a message (a sent message's local id becomes its server id in them)
    "CREATE INDEX IF NOT EXISTS message_reply ON message (reply_to) WHERE reply_to IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS reaction_order ON reaction (message_id, key, created_at, sender)",
    "CREATE INDEX IF NOT EXISTS reaction_server_id ON reaction (reaction_id) "
    "WHERE reaction_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS pinned_message_conv ON pinned_message (conv_id, pinned_at)",
)

_NEWER = "(NEW.sort_time, NEW.id) > (last_sort, last_rowid)"
# Recompute a thread's newest reply (``root`` is the thread's id, ``when`` which rows need it).
_THREAD_LAST = """UPDATE thread SET (last_rowid, last_sort) =
            (SELECT id, sort_time FROM message WHERE thread_id = {root}
             ORDER BY sort_time DESC, id DESC LIMIT 1)
          WHERE root = {root} AND {when};"""
_LM_SRC = ", ".join(LAST_COPY)
_LM_DST = ", ".join(LAST_COPY.values())
# The conversation's copy of its last message follows the message row: when last_rowid moves,
# and when the last message itself changes (read flags, receipts, the server's id, edits).
# Made again whenever the columns change, so that they always list the current ones.
_TRIGGERS = {
    "conversation_last_moved": f"""
        AFTER UPDATE OF last_rowid ON conversation FOR EACH ROW
        BEGIN
          UPDATE conversation SET ({_LM_DST}) =
            (SELECT {_LM_SRC} FROM message WHERE id = NEW.last_rowid)
          WHERE conv_id = NEW.conv_id;
        END""",
    "message_last_changed": f"""
        AFTER UPDATE ON message FOR EACH ROW
        WHEN EXISTS (SELECT 1 FROM conversation WHERE conv_id = NEW.conv_id
                     AND last_rowid = NEW.id)
        BEGIN
          UPDATE conversation SET ({_LM_DST}) = ({", ".join("NEW." + c for c in LAST_COPY)})
          WHERE conv_id = NEW.conv_id;
        END""",
    # A thread's reply count and newest reply follow its replies (a root need not be stored).
    "thread_reply_added": f"""
        AFTER INSERT ON message FOR EACH ROW WHEN NEW.thread_id IS NOT NULL
        BEGIN
          INSERT INTO thread (root, conv_id, reply_count, last_rowid, last_sort)
            VALUES (NEW.thread_id, NEW.conv_id, 1, NEW.id, NEW.sort_time)
          ON CONFLICT (root) DO UPDATE SET reply_count = reply_count + 1,
            last_rowid = CASE WHEN {_NEWER} THEN NEW.id ELSE last_rowid END,
            last_sort = CASE WHEN {_NEWER} THEN NEW.sort_time ELSE last_sort END;
        END""",
    "thread_reply_removed": f"""
        AFTER DELETE ON message FOR EACH ROW WHEN OLD.thread_id IS NOT NULL
        BEGIN
          UPDATE thread SET reply_count = reply_count - 1 WHERE root = OLD.thread_id;
          DELETE FROM thread WHERE root = OLD.thread_id AND reply_count <= 0;
          {_THREAD_LAST.format(when="last_rowid = OLD.id", root="OLD.thread_id")}
        END""",
    "thread_reply_renamed": f"""
        AFTER UPDATE OF thread_id ON message FOR EACH ROW
        WHEN NEW.thread_id IS NOT OLD.thread_id
        BEGIN
          UPDATE thread SET reply_count = reply_count - 1 WHERE root = OLD.thread_id;
          DELETE FROM thread WHERE root = OLD.thread_id AND reply_count <= 0;
          {_THREAD_LAST.format(when="last_rowid = OLD.id", root="OLD.thread_id")}
          INSERT INTO thread (root, conv_id, reply_count, last_rowid, last_sort)
            SELECT NEW.thread_id, NEW.conv_id, 1, NEW.id, NEW.sort_time
            WHERE NEW.thread_id IS NOT NULL
          ON CONFLICT (root) DO UPDATE SET reply_count = reply_count + 1,
            last_rowid = CASE WHEN {_NEWER} THEN NEW.id ELSE last_rowid END,
            last_sort = CASE WHEN {_NEWER} THEN NEW.sort_time ELSE last_sort END;
        END""",
    "thread_reply_moved": f"""
        AFTER UPDATE OF sort_time ON message FOR EACH ROW
        WHEN NEW.thread_id IS NOT NULL AND NEW.sort_time IS NOT OLD.sort_time
        BEGIN
          {_THREAD_LAST.format(when="1", root="NEW.thread_id")}
        END""",
}

# A `MessageRow` annotation -> the peewee field that stores it.
_FIELDS: dict[str, Any] = {
    "str": pw.TextField,
    "str | None": lambda **kw: pw.TextField(**{"null": True, **kw}),
    "int": pw.IntegerField,
    "int | None": lambda **kw: pw.IntegerField(**{"null": True, **kw}),
    "bytes": pw.BlobField,
    "bytes | None": lambda **kw: pw.BlobField(**{"null": True, **kw}),
}


def _field(column: str, **kw: Any) -> Any:
    """The peewee field for a `MessageRow` column, from its annotation."""
    hint = MessageRow.__annotations__[column]
    kind = str(getattr(hint, "__forward_arg__", hint))
    return _FIELDS[kind](**kw)


def _message_fields() -> dict[str, Any]:
    out: dict[str, Any] = {"id": pw.AutoField(), "msg_id": pw.TextField(unique=True)}
    for name in MESSAGE_COLUMNS:
        if name not in out:
            out[name] = _field(name)
    return out


def _copy_fields() -> dict[str, Any]:
    """The conversation's copy of its last message: every copied column, nullable."""
    return {dst: _field(src, null=True) for src, dst in LAST_COPY.items()}


def _conversation_fields() -> dict[str, Any]:
    return {
        "__module__": __name__,
        "conv_id": pw.TextField(primary_key=True),
        "chat_type": pw.IntegerField(),
        "unread_count": pw.IntegerField(default=0),
        "last_rowid": pw.IntegerField(null=True),
        "last_sort": pw.IntegerField(default=0),
        "last_activity": pw.IntegerField(default=0),
        "ext": pw.BlobField(null=True),
        "title": pw.TextField(null=True),
        "pinned_at": pw.IntegerField(null=True),  # ms; NULL: not pinned
        "marks": pw.TextField(null=True),  # see _rows.MARK_SEPARATOR; NULL: no mark
        "draft": pw.TextField(null=True),
        **_copy_fields(),
    }


def build_models(db: pw.Database) -> SimpleNamespace:
    """Model classes bound to ``db``."""

    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Meta(Base):
        key = pw.TextField(primary_key=True)
        value = pw.TextField()

    conversation = type("Conversation", (Base,), _conversation_fields())
    message_model = type("Message", (Base,), {"__module__": __name__, **_message_fields()})

    class Attachment(Base):
        """Where each attachment's file stands on this device."""

        message = pw.ForeignKeyField(message_model, primary_key=True, on_delete="CASCADE")
        remote_url = pw.TextField(default="")
        local_path = pw.TextField(default="")
        size = pw.IntegerField(default=0)
        file_status = pw.IntegerField()
        thumb_status = pw.IntegerField(null=True)

    class GroupAck(Base):
        msg_id = pw.TextField()
        reader = pw.TextField()
        ack_time = pw.IntegerField()

        class Meta:
            indexes = ((("msg_id", "reader"), True),)

    class PendingReceipt(Base):
        """Receipts that arrived before the message they refer to."""

        msg_id = pw.TextField()
        kind = pw.IntegerField()
        received_at = pw.IntegerField(null=True)  # ms; pruned when the message never comes

        class Meta:
            primary_key = pw.CompositeKey("msg_id", "kind")

    class SearchOutbox(Base):
        """Index work written with each message change; removed only after the index commit."""

        id = pw.AutoField()
        rowid = pw.IntegerField()
        op = pw.IntegerField()

    class Reaction(Base):
        """One sender's reaction with one key on one message; ``reaction_id`` is the server's id
        of the reaction (to remove it by that id)."""

        message = pw.ForeignKeyField(message_model, on_delete="CASCADE")
        key = pw.TextField()
        sender = pw.TextField()
        reaction_id = pw.TextField(null=True)
        created_at = pw.IntegerField()

        class Meta:
            primary_key = pw.CompositeKey("message", "key", "sender")

    class ReactionCount(Base):
        """Per message and key: how many senders reacted (derived from ``reaction``)."""

        message = pw.ForeignKeyField(message_model, on_delete="CASCADE")
        key = pw.TextField()
        count = pw.IntegerField()
        first_at = pw.IntegerField()  # orders a message's keys: the oldest first

        class Meta:
            primary_key = pw.CompositeKey("message", "key")

    class Thread(Base):
        """Per thread root id: its conversation, reply count and newest reply (derived from the
        message rows by triggers)."""

        root = pw.TextField(primary_key=True)
        conv_id = pw.TextField()
        reply_count = pw.IntegerField()
        last_rowid = pw.IntegerField(null=True)
        last_sort = pw.IntegerField(null=True)

    class PinnedMessage(Base):
        message = pw.ForeignKeyField(message_model, primary_key=True, on_delete="CASCADE")
        conv_id = pw.TextField()
        pinned_at = pw.IntegerField()
        pinned_by = pw.TextField(null=True)

    models = [Meta, conversation, message_model, Attachment, GroupAck, PendingReceipt, SearchOutbox,
              Reaction, ReactionCount, Thread, PinnedMessage]
    return SimpleNamespace(Meta=Meta, Conversation=conversation, Message=message_model,
                           Attachment=Attachment, GroupAck=GroupAck,
                           PendingReceipt=PendingReceipt, SearchOutbox=SearchOutbox,
                           Reaction=Reaction, ReactionCount=ReactionCount, Thread=Thread,
                           PinnedMessage=PinnedMessage, all=models)


def _add_missing_columns(db: pw.Database, models: SimpleNamespace) -> bool:
    """Upgrade tables made by an older version: add the (nullable) columns they lack. Returns
    whether any was added."""
    added = False
    for model in models.all:
        table = model._meta.table_name
        have = {r[1] for r in db.execute_sql(f"PRAGMA table_info({table})").fetchall()}
        for fld in model._meta.sorted_fields:
            if fld.column_name not in have:
                kind = "BLOB" if isinstance(fld, pw.BlobField) else (
                    "TEXT" if isinstance(fld, pw.TextField) else "INTEGER")
                db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {fld.column_name} {kind}")
                added = True
    return added


def read_meta(db: pw.Database) -> dict[str, str]:
    """The ``meta`` table as a dict (empty for a new database)."""
    if not db.execute_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
                          ).fetchone():
        return {}
    return dict(db.execute_sql("SELECT key, value FROM meta").fetchall())


def migrate(db: pw.Database, models: SimpleNamespace, user_id: str) -> None:
    """Create or upgrade the schema. Raises ValueError for a database this version cannot read."""
    with db.atomic():
        rows = read_meta(db)
        version = int(rows.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise ValueError(f"the database has schema version {version}; this imstore reads up "
                             f"to {SCHEMA_VERSION}: upgrade imstore")
        owner = rows.get("user_id")
        if owner is not None and owner != user_id:
            raise ValueError(f"the store belongs to user {owner!r}, not {user_id!r}")
        db.create_tables(models.all, safe=True)
        added = _add_missing_columns(db, models)
        for name, body in _TRIGGERS.items():
            if added or version < SCHEMA_VERSION:  # triggers list the columns: make them again
                db.execute_sql(f"DROP TRIGGER IF EXISTS {name}")
            db.execute_sql(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
        if added:  # the trigger copies the new columns of each last message
            db.execute_sql("UPDATE conversation SET last_rowid = last_rowid")
        if 0 < version < 3:  # the page index gained thread_id
            db.execute_sql("DROP INDEX IF EXISTS message_conv_sort")
        for sql in (*_EXTRA_INDEXES, *_TOMBSTONE_TABLES, *_STRETCH_TABLES,
                    *_ADAPTER_STATE_TABLES):
            db.execute_sql(sql)
        if 0 < version < 3:
            _titles_out_of_ext(db)
        db.execute_sql("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
        db.execute_sql("INSERT OR IGNORE INTO meta (key, value) VALUES ('user_id', ?)", (user_id,))


def _titles_out_of_ext(db: pw.Database) -> None:
    """Version 3: a title an importer kept in a conversation's ``ext["title"]`` becomes its
    ``title`` (and leaves ext). An ext that does not decode is left as it is (verify reports
    it)."""
    rows = db.execute_sql("SELECT conv_id, ext FROM conversation WHERE ext IS NOT NULL "
                          "AND title IS NULL").fetchall()
    for conv_id, blob in rows:
        try:
            ext = decode_ext(blob)
        except IMError:
            continue
        title = ext.get("title")
        if not isinstance(title, str) or not title:
            continue
        del ext["title"]
        db.execute_sql("UPDATE conversation SET title = ?, ext = ? WHERE conv_id = ?",
                       (title, encode_ext(ext) or None, conv_id))


_LIMIT_KEYS = ("max_payload_bytes", "max_file_bytes", "max_local_ext_bytes")


def settle_limits(db: pw.Database, limits: Limits | None) -> Limits:
    """The store's limits: ``limits`` when given (and then kept in ``meta``), else the ones kept
    there, else the product's defaults."""
    with db.atomic():
        if limits is not None:
            for key in _LIMIT_KEYS:
                db.execute_sql("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                               (f"limits.{key}", str(getattr(limits, key))))
            return limits
        meta = read_meta(db)
        kept = {k: int(meta[f"limits.{k}"]) for k in _LIMIT_KEYS if f"limits.{k}" in meta}
        return Limits(**kept)


def read_owner(directory: str) -> str | None:
    """The owner kept in the store database of ``directory``, read-only; None when there is no
    store there."""
    path = os.path.join(directory, DATABASE_FILE)
    if directory == ":memory:" or not os.path.isfile(path):
        return None
    try:
        con = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro",
                              uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'user_id'").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise IMError(ErrorCode.DATABASE_ERROR,
                      f"cannot read the store in {directory!r}: {exc}") from exc
    return None if row is None else str(row[0])
