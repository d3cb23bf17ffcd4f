"""The references: what a user could get by hand from the same machine, on the same rows.

- raw ``sqlite3`` with imstore's own table layout and indexes (copied from an imstore database),
  rows encoded with msgpack as imstore does, imported by ``executemany`` in one transaction;
- SQLite FTS5 (``unicode61``, with Chinese/Japanese/Korean text pre-split into the same bigrams
  imstore indexes) for keyword search;
- a naive whoosh writer (one writer, one commit, the default analyzer) for index throughput.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from imstore import Message
from imstore.codec import body_to_dict
from imstore.store import CONVERSATION_LIST_SQL as _CONV_LIST
from imstore.text import content_text

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")


def rows_of(msgs: Sequence[Message]) -> list[tuple[Any, ...]]:
    """imstore's message row for each message, encoded as imstore encodes it."""
    out = []
    for m in msgs:
        body = b"\x01" + msgpack.packb(body_to_dict(m.body), use_bin_type=True)
        ext = msgpack.packb(m.ext, use_bin_type=True) if m.ext else None
        out.append((m.msg_id, m.conv_id, int(m.chat_type), int(m.type), m.sender or "me", m.to,
                    int(m.direction), 3, m.local_time, m.server_time, m.timestamp,
                    int(bool(m.is_read)), 0, 0, 0, 0, body, ext))
    return out


INSERT = ("INSERT INTO message (msg_id, conv_id, chat_type, type, sender, recipient, direction, "
          "status, local_time, server_time, sort_time, is_read, is_delivered, is_read_acked, "
          "need_group_ack, group_ack_count, body, ext) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


class RawSQLite:
    """A hand-written store on the same schema."""

    def __init__(self, schema_sql: list[str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="imstore-bench-raw-")
        self.db = sqlite3.connect(f"{self.dir}/raw.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=wal")
        self.db.execute("PRAGMA synchronous=normal")
        for sql in schema_sql:
            self.db.execute(sql)

    def import_rows(self, msgs: Sequence[Message]) -> float:
        """Encode and insert all rows in one transaction, then fill the conversation table;
        returns seconds."""
        t = time.perf_counter()
        rows = rows_of(msgs)
        self.db.execute("BEGIN")
        self.db.executemany(INSERT, rows)
        self.db.execute(
            "INSERT INTO conversation (conv_id, chat_type, unread_count, last_rowid, last_sort, "
            "last_activity) SELECT conv_id, chat_type, sum(direction = 2 AND is_read = 0), "
            "max(id), max(sort_time), max(sort_time) FROM message GROUP BY conv_id")
        # the schema's trigger copies each last message into its conversation row
        self.db.execute("UPDATE conversation SET last_rowid = last_rowid")
        self.db.execute("COMMIT")
        return time.perf_counter() - t

    def insert_one(self, row: tuple[Any, ...]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        rowid = self.db.execute(INSERT, row).lastrowid
        self.db.execute("UPDATE conversation SET unread_count = unread_count + ?, last_rowid = ?, "
                        "last_sort = ?, last_activity = max(last_activity, ?) WHERE conv_id = ?",
                        (int(row[6] == 2 and not row[11]), rowid, row[10], row[10], row[1]))
        self.db.execute("COMMIT")

    def page(self, conv_id: str, sort: int, rowid: int) -> list[Any]:
        return self.db.execute(
            "SELECT id, msg_id, conv_id, chat_type, type, sender, recipient, direction, status, "
            "local_time, server_time, is_read, is_delivered, is_read_acked, need_group_ack, "
            "group_ack_count, body, ext FROM message WHERE conv_id = ? AND (sort_time, id) < (?, ?) "
            "ORDER BY sort_time DESC, id DESC LIMIT 20", (conv_id, sort, rowid)).fetchall()

    def anchor(self, msg_id: str) -> tuple[int, int]:
        row = self.db.execute("SELECT sort_time, id FROM message WHERE msg_id = ?",
                              (msg_id,)).fetchone()
        return row[0], row[1]

    def conversations(self, limit: int | None = None) -> list[Any]:
        sql = _CONV_LIST.format(where="")
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.db.execute(sql).fetchall()

    def unread(self, conv_id: str) -> int:
        return int(self.db.execute("SELECT unread_count FROM conversation WHERE conv_id = ?",
                                   (conv_id,)).fetchone()[0])

    def total_unread(self) -> int:
        return int(self.db.execute("SELECT total(unread_count) FROM conversation WHERE "
                                   "unread_count > 0 AND chat_type != 3").fetchone()[0])

    def by_type(self, conv_id: str, types: Sequence[int]) -> list[Any]:
        marks = ",".join("?" * len(types))
        return self.db.execute(
            f"SELECT * FROM message WHERE conv_id = ? AND type IN ({marks}) "
            "ORDER BY sort_time DESC, id DESC LIMIT 20", (conv_id, *types)).fetchall()

    def between(self, conv_id: str, start: int, end: int) -> list[Any]:
        return self.db.execute(
            "SELECT * FROM message WHERE conv_id = ? AND sort_time BETWEEN ? AND ? "
            "ORDER BY sort_time, id LIMIT 20", (conv_id, start, end)).fetchall()

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def fts_text(text: str) -> str:
    """Text for FTS5's unicode61 tokenizer, with CJK runs written as space-separated bigrams
    (and single characters), as imstore's analyzer splits them."""
    def split(m: re.Match[str]) -> str:
        run = m.group(0)
        grams = [run[i:i + 2] for i in range(len(run) - 1)] or [run]
        return " " + " ".join(grams) + " "
    return _CJK.sub(split, text)


def fts_query(keyword: str) -> str:
    parts = []
    for word in keyword.split():
        if _CJK.fullmatch(word) and len(word) == 1:  # a bigram starting with it (or alone)
            parts.append(f'"{word}"*')
        elif _CJK.fullmatch(word):
            grams = [word[i:i + 2] for i in range(len(word) - 1)] or [word]
            parts.append('"' + " ".join(grams) + '"')
        else:
            parts.append('"' + word.replace('"', '""') + '"*')
    return " AND ".join(parts)


class Fts5:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(content, conv_id UNINDEXED, "
                   "sort_time UNINDEXED, tokenize='unicode61 remove_diacritics 2')")

    def index(self, msgs: Sequence[Message]) -> float:
        t = time.perf_counter()
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO fts (rowid, content, conv_id, sort_time) VALUES (?,?,?,?)",
                            [(i + 1, fts_text(content_text(m.type, m.body)), m.conv_id, m.timestamp)
                             for i, m in enumerate(msgs)])
        self.db.execute("COMMIT")
        return time.perf_counter() - t

    def search(self, keyword: str | Sequence[str], conv_id: str | None) -> list[Any]:
        """The newest 20 matches (a list of keywords: any of them)."""
        expr = fts_query(keyword) if isinstance(keyword, str) else fts_any(keyword)
        where = "fts MATCH ?" + (" AND conv_id = ?" if conv_id else "")
        params: tuple[Any, ...] = (expr, conv_id) if conv_id else (expr,)
        ids = self.db.execute(f"SELECT rowid FROM fts WHERE {where} ORDER BY sort_time DESC "
                              "LIMIT 20", params).fetchall()
        marks = ",".join("?" * len(ids))
        return self.db.execute(f"SELECT * FROM message WHERE id IN ({marks})",
                               [i[0] for i in ids]).fetchall()

    def counts(self, keyword: str) -> list[Any]:
        """Matches per conversation, with the newest match's time."""
        return self.db.execute("SELECT conv_id, count(*), max(sort_time) FROM fts WHERE fts "
                               "MATCH ? GROUP BY conv_id", (fts_query(keyword),)).fetchall()


def fts_any(keywords: Sequence[str]) -> str:
    return " OR ".join(f"({fts_query(k)})" for k in keywords)


def naive_whoosh(texts: Sequence[str]) -> float:
    """One whoosh writer, one commit, the default analyzer; returns seconds."""
    from whoosh import index
    from whoosh.fields import ID, TEXT, Schema

    d = tempfile.mkdtemp(prefix="imstore-bench-whoosh-")
    ix = index.create_in(d, Schema(id=ID(stored=True, unique=True), content=TEXT()))
    t = time.perf_counter()
    w = ix.writer()
    for i, text in enumerate(texts):
        w.add_document(id=str(i), content=text)
    w.commit()
    seconds = time.perf_counter() - t
    ix.close()
    shutil.rmtree(d, ignore_errors=True)
    return seconds
