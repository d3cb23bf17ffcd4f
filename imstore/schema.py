"""The SQLite schema as peewee models, and its migrations.

Rules kept here:
- models are built per database (`build_models`), so several stores (and ``:memory:`` tests) live in
  one process without sharing a binding;
- ``message.id`` is the integer row id that orders ties and joins; ``msg_id`` is unique and may
  change once, from the local id to the server's (``local_id`` keeps the old one);
- ``sort_time`` is the server time when the server stamped the message, else the local time;
- ``conversation.unread_count`` and ``conversation.last_rowid`` are derived state, kept in the same
  transaction as the message change and checked by `MessageStore.verify`; the ``lm_*`` columns
  copy the last message's row and are kept by triggers;
- the schema version lives in ``meta``; a database from a newer imstore is refused, not guessed at.
"""

from __future__ import annotations

from types import SimpleNamespace

import peewee as pw

__all__ = ["SCHEMA_VERSION", "build_models", "migrate"]

SCHEMA_VERSION = 1

# Indexes peewee cannot express (partial, or ordered for keyset paging), created after the tables.
_EXTRA_INDEXES = (
    "CREATE INDEX IF NOT EXISTS message_conv_sort ON message (conv_id, sort_time, id)",
    "CREATE INDEX IF NOT EXISTS message_conv_type_sort ON message (conv_id, type, sort_time, id)",
    "CREATE INDEX IF NOT EXISTS message_type_sort ON message (type, sort_time, id)",
    "CREATE INDEX IF NOT EXISTS message_sort ON message (sort_time, id)",
    "CREATE INDEX IF NOT EXISTS message_unread ON message (conv_id) "
    "WHERE direction = 2 AND is_read = 0",
    "CREATE INDEX IF NOT EXISTS message_inprogress ON message (status) WHERE status = 2",
    "CREATE INDEX IF NOT EXISTS message_local_id ON message (local_id) WHERE local_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS conversation_activity ON conversation (last_activity)",
    "CREATE INDEX IF NOT EXISTS conversation_unread ON conversation (unread_count) "
    "WHERE unread_count > 0 AND chat_type != 3",
)


_LM = ("msg_id", "type", "sender", "recipient", "direction", "status", "local_time", "server_time",
       "is_read", "is_delivered", "is_read_acked", "need_group_ack", "group_ack_count", "body",
       "ext")
_LM_COLS = ", ".join(f"lm_{c}" for c in _LM)
# The conversation's copy of its last message follows the message row: when last_rowid moves,
# and when the last message itself changes (read flags, receipts, the server's id, edits).
_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS conversation_last_moved
        AFTER UPDATE OF last_rowid ON conversation FOR EACH ROW
        BEGIN
          UPDATE conversation SET ({_LM_COLS}) =
            (SELECT {", ".join(_LM)} FROM message WHERE id = NEW.last_rowid)
          WHERE conv_id = NEW.conv_id;
        END""",
    f"""CREATE TRIGGER IF NOT EXISTS message_last_changed
        AFTER UPDATE ON message FOR EACH ROW
        WHEN EXISTS (SELECT 1 FROM conversation WHERE conv_id = NEW.conv_id
                     AND last_rowid = NEW.id)
        BEGIN
          UPDATE conversation SET ({_LM_COLS}) = ({", ".join("NEW." + c for c in _LM)})
          WHERE conv_id = NEW.conv_id;
        END""",
)


def build_models(db: pw.Database) -> SimpleNamespace:
    """Model classes bound to ``db``."""

    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Meta(Base):
        key = pw.TextField(primary_key=True)
        value = pw.TextField()

    class Conversation(Base):
        conv_id = pw.TextField(primary_key=True)
        chat_type = pw.IntegerField()
        unread_count = pw.IntegerField(default=0)
        last_rowid = pw.IntegerField(null=True)
        last_sort = pw.IntegerField(default=0)
        last_activity = pw.IntegerField(default=0)
        ext = pw.BlobField(null=True)
        # A copy of the last message's row (kept by triggers), so that the conversation list
        # reads one table instead of one scattered message row per conversation.
        lm_msg_id = pw.TextField(null=True)
        lm_type = pw.IntegerField(null=True)
        lm_sender = pw.TextField(null=True)
        lm_recipient = pw.TextField(null=True)
        lm_direction = pw.IntegerField(null=True)
        lm_status = pw.IntegerField(null=True)
        lm_local_time = pw.IntegerField(null=True)
        lm_server_time = pw.IntegerField(null=True)
        lm_is_read = pw.IntegerField(null=True)
        lm_is_delivered = pw.IntegerField(null=True)
        lm_is_read_acked = pw.IntegerField(null=True)
        lm_need_group_ack = pw.IntegerField(null=True)
        lm_group_ack_count = pw.IntegerField(null=True)
        lm_body = pw.BlobField(null=True)
        lm_ext = pw.BlobField(null=True)

    class Message(Base):
        id = pw.AutoField()
        msg_id = pw.TextField(unique=True)
        local_id = pw.TextField(null=True)
        conv_id = pw.TextField()
        chat_type = pw.IntegerField()
        type = pw.IntegerField()
        sender = pw.TextField()
        recipient = pw.TextField()
        direction = pw.IntegerField()
        status = pw.IntegerField()
        local_time = pw.IntegerField()
        server_time = pw.IntegerField(null=True)
        sort_time = pw.IntegerField()
        is_read = pw.IntegerField(default=0)
        is_delivered = pw.IntegerField(default=0)
        is_read_acked = pw.IntegerField(default=0)
        need_group_ack = pw.IntegerField(default=0)
        group_ack_count = pw.IntegerField(default=0)
        body = pw.BlobField()
        ext = pw.BlobField(null=True)

    class Attachment(Base):
        """Where each attachment's file stands on this device."""

        message = pw.ForeignKeyField(Message, primary_key=True, on_delete="CASCADE")
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

        class Meta:
            primary_key = pw.CompositeKey("msg_id", "kind")

    class SearchOutbox(Base):
        """Index work written with each message change; removed only after the index commit."""

        id = pw.AutoField()
        rowid = pw.IntegerField()
        op = pw.IntegerField()

    return SimpleNamespace(
        Meta=Meta, Conversation=Conversation, Message=Message, Attachment=Attachment,
        GroupAck=GroupAck, PendingReceipt=PendingReceipt, SearchOutbox=SearchOutbox,
        all=[Meta, Conversation, Message, Attachment, GroupAck, PendingReceipt, SearchOutbox],
    )


def migrate(db: pw.Database, models: SimpleNamespace, user_id: str) -> None:
    """Create or upgrade the schema. Raises ValueError for a database this version cannot read."""
    with db.atomic():
        db.create_tables(models.all, safe=True)
        for sql in (*_EXTRA_INDEXES, *_TRIGGERS):
            db.execute_sql(sql)
        rows = dict(db.execute_sql("SELECT key, value FROM meta").fetchall())
        version = int(rows.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise ValueError(f"the database has schema version {version}; this imstore reads up "
                             f"to {SCHEMA_VERSION}: upgrade imstore")
        owner = rows.get("user_id")
        if owner is not None and owner != user_id:
            raise ValueError(f"the store belongs to user {owner!r}, not {user_id!r}")
        db.execute_sql("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
        db.execute_sql("INSERT OR IGNORE INTO meta (key, value) VALUES ('user_id', ?)", (user_id,))
