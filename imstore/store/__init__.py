"""MessageStore: every local operation on conversations and messages, as a facade over composed
parts. Each part owns one rule and receives what it uses; none calls back into the facade. The
parts, what each owns and how they are wired: docs/architecture.md, "The store's parts".

Rules kept here: every public method checks its arguments (`_checks`) before any part reads or
writes, then calls one part; nothing else lives here (opening is `_open`'s); no network I/O (the
store does not know servers exist).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import peewee as pw

from ..checks import check_recalled_by
from ..codec import Limits
from ..errors import ErrorCode, IMError
from ..lifecycle import ReceiptKind
from ..message import (
    Body,
    ChatType,
    Conversation,
    Direction,
    GroupReadAck,
    ImportResult,
    Message,
    MessageStatus,
    MessageType,
    PinRecord,
    Reaction,
    ReactionRecord,
    SearchScope,
    ThreadSummary,
    now_ms,
)
from ._adapter_state import AdapterState
from ._changes import ChangeFeed, Changes
from ._checks import (
    MAX_DRAFT,
    MAX_TITLE,
    as_types,
    check_callable,
    check_chat_type,
    check_direction,
    check_flag,
    check_group_acks,
    check_id,
    check_ids,
    check_import,
    check_limit,
    check_list_limit,
    check_marks,
    check_page,
    check_path,
    check_range,
    check_reaction,
    check_receipt_kind,
    check_short_text,
    check_span,
    check_stamp,
    check_status,
    check_text,
    check_time,
    check_timeout,
    check_type_page,
    conversation_ext,
    invalid,
    message_list,
    optional,
)
from ._cipher import change_key, encrypt_store, is_encrypted
from ._connection import Connection
from ._conversations import ConversationTable
from ._counts import ConversationHits, Counter, keyword_groups
from ._gaps import Gap, Span, Stretches, TimelinePage
from ._indexer import IndexPolicy, IndexStatus, SearchWriter
from ._merge import Merger, MergeResult
from ._names import Names
from ._open import check_options, check_writable, connect_store, prepare, stored_owner
from ._pins import Pins
from ._query import Query, Searcher
from ._reactions import Reactions
from ._reads import Reads
from ._receipts import RECEIPT_DELIVERED, RECEIPT_READ, Receipts
from ._rows import CONVERSATION_LIST_SQL
from ._threads import Threads
from ._tombstones import Tombstones
from ._verify import Verifier, VerifyReport
from ._writes import Writes

__all__ = ["CONVERSATION_LIST_SQL", "RECEIPT_DELIVERED", "RECEIPT_READ", "Changes",
           "ConversationHits", "Gap",
           "IndexPolicy", "IndexStatus", "MergeResult", "MessageStore", "Span", "TimelinePage",
           "VerifyReport", "change_key", "encrypt_store", "is_encrypted", "open_store"]


class MessageStore:
    """The local message store of one user. Open it with `imstore.open` (or `MessageStore.open`).

    Safe to use from several threads. Local operations are synchronous.

    Attributes:
        user_id: the owner.
        directory: where the database and index live (None in memory).
        limits: the size limits messages are checked against.
        connection: the SQLite connection, for tools and tests that need raw SQL (outside the
            store's rules: what it writes is not checked).
    """

    def __init__(self, db: pw.SqliteDatabase, *, user_id: str, directory: str | None,
                 limits: Limits | None, search: bool,
                 index_policy: IndexPolicy | None = None) -> None:
        self.user_id = user_id
        self.directory = directory
        self.connection = conn = Connection(db, shared=directory is None)
        self.models, self.limits = prepare(conn, db, user_id, limits)
        self._indexer = SearchWriter.open(conn, directory, search=search, policy=index_policy)
        self._convs = ConversationTable(conn)
        self._tombstones = Tombstones(conn)
        self._writes = Writes(conn, user_id, self.limits, self._convs, self._indexer,
                              self._tombstones)
        self._reads = Reads(conn)
        self._stretches = Stretches(conn, self._reads)
        self._merger = Merger(conn, self._writes, self._convs, self._tombstones, self._stretches,
                              user_id)
        self._receipts = Receipts(conn, self._convs, self._indexer, self._writes)
        self._searcher = Searcher(conn, self._indexer)
        self._counter = Counter(conn, self._indexer)
        self._names = Names(conn)
        self._threads = Threads(conn, self._reads)
        self._reactions = Reactions(conn, user_id)
        self._pins = Pins(conn)
        self._verifier = Verifier(conn, self._convs, self._indexer, self._threads,
                                  self._reactions, self._tombstones, self._receipts)
        self._changes = ChangeFeed(conn, self._reads.total_unread_count)
        self._adapter_state = AdapterState(conn)

    # ------------------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, user_id: str, limits: Limits | None = None,
             search: bool = True, key: bytes | str | None = None,
             index_policy: IndexPolicy | None = None) -> MessageStore:
        """Open (or create) the store of ``user_id``.

        Args:
            path: a directory (created if missing; the database and the search index live in it)
                or ``":memory:"`` for a store that lives in memory only.
            user_id: the owner; messages with no sender are the owner's.
            limits: size limits, kept with the store; None: the ones kept with it (the
                product's defaults for a new store).
            search: keep a keyword index (`search_messages`); False skips its cost.
            key: for an encrypted store (SQLCipher, the extra ``imstore[crypto]``): the raw
                32-byte key (``bytes``) or a passphrase (``str``, derived once per open). A new
                store opened with a key is created encrypted. A missing key, a wrong key and a
                key for a plain store each raise their own `IMError`.
            index_policy: how the indexer batches its work (`IndexPolicy`; None: the measured
                defaults).
        """
        check_id(user_id, "user_id")
        path = check_path(path, "a directory path or ':memory:'")
        check_options(limits, index_policy)
        db, directory = connect_store(path, user_id, key)
        return cls(db, user_id=user_id, directory=directory, limits=limits, search=bool(search),
                   index_policy=index_policy)

    @staticmethod
    def stored_owner(path: str | os.PathLike[str], *,
                     key: bytes | str | None = None) -> str | None:
        """The owner of the store in directory ``path``, or None when there is no store there.
        Reads without creating or changing anything; an encrypted store needs its ``key``."""
        return stored_owner(path, key)

    @staticmethod
    def check_writable(path: str | os.PathLike[str], *, timeout: float = 5.0,
                       key: bytes | str | None = None) -> None:
        """Raise `IMError(DATABASE_ERROR)` saying why the store in directory ``path`` cannot be
        written now: a file of it is not writable, or another process keeps its write lock for
        more than ``timeout`` seconds (`open` itself waits 30). An encrypted store's lock is
        probed with its ``key`` (without one, `open` says the key is missing). Creates and
        changes nothing; a directory without a store passes."""
        check_writable(path, timeout, key)

    def close(self) -> None:
        """Stop the indexer thread after its current batch and close the database (index work
        not done yet stays queued; the next open goes on with it). Closing twice is harmless."""
        if self.connection.closed:
            return
        try:
            self._indexer.close()
        finally:
            self.connection.close()

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------- writing

    def insert_message(self, msg: Message) -> Message:
        """Store one message (e.g. a simulated notification or a message received elsewhere).
        Inserting a message deleted earlier (same id) lifts its tombstone.

        A received message (``sender`` is someone else) counts as unread unless ``is_read`` is
        set. The store settles ``sender``, ``direction``, ``conv_id``, ``status`` and ``is_read``
        on ``msg`` (see docs/architecture.md) and changes nothing else of it. Raises `IMError`:
        MESSAGE_INVALID for a CMD message or a duplicate ``msg_id``, INVALID_PARAM when the
        conversation id is taken by another chat type, and the codec's errors for bad payloads.
        Returns the stored message.
        """
        return self._writes.insert(msg)

    def import_messages(self, messages: Iterable[Message], *, batch_size: int = 1000,
                        progress: Callable[[int], None] | None = None) -> ImportResult:
        """Import messages in bulk, in bounded memory, one transaction per batch.

        ``messages`` may be any iterable (a generator too). Messages already stored (same
        ``msg_id``) are counted as duplicates and left as they are; CMD messages and messages that
        fail validation are skipped and counted with their reason. Imported received messages
        count as unread only when they say ``is_read=False``. ``progress`` is called after each
        batch with the number of messages read so far.
        """
        check_import(messages, batch_size, progress)
        return self._writes.import_all(messages, batch_size, progress)

    def save_history(self, messages: Sequence[Message], *,
                     span: Span | None = None) -> list[Message]:
        """Merge messages fetched from a server; returns the messages that were new (see
        `merge_history`)."""
        return self.merge_history(messages, span=span).new

    def merge_history(self, messages: Sequence[Message], *,
                      span: Span | None = None) -> MergeResult:
        """Merge messages fetched from a server (a history page, the conversation list's last
        messages) in one transaction.

        A message already stored (same ``msg_id``) keeps its local state, except that a received
        one the server says is read (``is_read=True``) becomes read. A new received message counts
        as unread only when the server says so (``is_read=False``). Messages deleted on this
        device (tombstones) stay out and are listed in ``suppressed``. ``span``, when given, is
        what the page proves about the conversation's contiguity with the server (see `gaps`).
        """
        msgs = message_list(messages)
        spans = [] if span is None else [check_span(span)]
        return self._merger.merge(msgs, live=False, spans=spans)

    def save_received(self, messages: Sequence[Message]) -> list[Message]:
        """Store messages that just arrived; returns the messages that were new (see
        `merge_received`)."""
        return self.merge_received(messages).new

    def merge_received(self, messages: Sequence[Message]) -> MergeResult:
        """Merge messages that just arrived by live delivery (or the offline queue) in one
        transaction: new received ones are unread unless they say otherwise; ones already stored
        are left as they are (a server saying ``is_read=True`` makes an unread one read); ones
        deleted on this device stay out (``suppressed``). Each conversation becomes contiguous
        with the server from the oldest server-stamped message received up to the live edge."""
        return self._merger.merge(message_list(messages), live=True)

    def update_message(self, msg: Message) -> Message:
        """Write back a changed message (body, ext, status, flags, server time).

        The conversation, type, sender and direction of a stored message do not change (the store
        sets them back on ``msg``). Raises `IMError(MESSAGE_INVALID)` when no message has
        ``msg.msg_id``.
        """
        return self._writes.update(msg)

    def set_status(self, msg_id: str, status: MessageStatus) -> None:
        """Move a message's send status (found by its id or its local id) along the lifecycle's
        table (`lifecycle.SEND_TRANSITIONS`): e.g. FAIL to INPROGRESS for a resend. An illegal
        move (SUCCESS to CREATE, ...) raises `IMError(INVALID_PARAM)` and changes nothing; an
        unknown id changes nothing."""
        self._writes.set_status(check_id(msg_id, "msg_id"), check_status(status))

    # ------------------------------------------------------------------------------- deleting

    def delete_message(self, msg_id: str) -> bool:
        """Delete one message (by its id or the local id it had before sending). It leaves a
        tombstone: history merges never bring it back. Returns False when there was none."""
        return self._writes.delete_message(check_id(msg_id, "msg_id"))

    def delete_messages(self, conv_id: str, *, start_time: int, end_time: int) -> int:
        """Delete a conversation's messages whose time lies in [start_time, end_time] (ms).
        Returns how many were deleted. It leaves a tombstone over that range (cut at the
        newest message stored), so history merges bring back nothing from it."""
        check_id(conv_id, "conv_id")
        check_range(start_time, end_time)
        return self._writes.delete_range(conv_id, start_time, end_time)

    def delete_message_ids(self, msg_ids: Sequence[str]) -> int:
        """Delete several messages by id in one transaction, leaving tombstones. Returns how many
        were deleted."""
        return self._writes.delete_ids(check_ids(msg_ids, "msg_ids"))

    def delete_conversation(self, conv_id: str, *, delete_messages: bool = True) -> bool:
        """Remove a conversation from the list, with its messages unless ``delete_messages`` is
        False (then its messages stay readable and count as read). Returns False when there was
        no such conversation.

        Deleting the messages clears the conversation "up to" its newest stored message: history
        merges bring back nothing at or before it; newer messages come in as usual.
        """
        return self._writes.delete_conversation(check_id(conv_id, "conv_id"),
                                                bool(delete_messages))

    def is_deleted(self, msg_id: str) -> bool:
        """Whether a message id was deleted on this device (has a tombstone)."""
        return self._tombstones.is_buried(check_id(msg_id, "msg_id"))

    # -------------------------------------------------------------------------------- unread

    def unread_count(self, conv_id: str) -> int:
        """Unread received messages of one conversation (0 for an unknown one)."""
        return self._reads.unread_count(check_id(conv_id, "conv_id"))

    def total_unread_count(self) -> int:
        """Unread received messages of all conversations except chat rooms."""
        return self._reads.total_unread_count()

    def mark_message_read(self, msg_id: str) -> bool:
        """Mark one received message read (its conversation loses `ConversationMark.UNREAD`).
        Returns True when it was unread."""
        return self._writes.mark_message_read(check_id(msg_id, "msg_id"))

    def mark_conversation_read(self, conv_id: str, *, up_to_msg_id: str | None = None) -> int:
        """Mark a conversation's messages read (all, or up to and including ``up_to_msg_id``),
        thread replies included, and clear its `ConversationMark.UNREAD`; returns how many were
        unread (0 for an unknown conversation, as for an empty one). Raises INVALID_PARAM when
        ``up_to_msg_id`` is not one of its messages."""
        check_id(conv_id, "conv_id")
        self._reads.anchor_in(conv_id, up_to_msg_id, "up_to_msg_id")
        return self._writes.mark_conversation_read(conv_id, up_to_msg_id)

    def mark_all_conversations_read(self) -> int:
        """Mark every message read and clear every `ConversationMark.UNREAD`; returns how many
        messages were unread."""
        return self._writes.mark_all_read()

    # ------------------------------------------------------------------------------- reading

    def get_message(self, msg_id: str) -> Message | None:
        """A message by its id (the server's, or the local one it had before sending)."""
        return self._reads.get(check_id(msg_id, "msg_id"))

    def messages(self, conv_id: str, *, start_msg_id: str | None = None, limit: int = 20,
                 direction: Direction = Direction.UP) -> list[Message]:
        """A page of a conversation's messages, oldest first.

        UP reads towards older messages: without ``start_msg_id`` the newest ``limit``, with it the
        ``limit`` just before it (exclusive). DOWN reads towards newer ones the same way.
        """
        direction = check_page(conv_id, limit, direction)
        self._reads.anchor_in(conv_id, start_msg_id)
        return self._reads.page(conv_id, start_msg_id, limit, direction)

    def timeline(self, conv_id: str, *, start_msg_id: str | None = None, limit: int = 20,
                 direction: Direction = Direction.UP) -> TimelinePage:
        """The page `messages` gives for the same arguments, stopped where it would cross a gap
        (see `gaps`), with that gap. ``gap`` is None when the page is exactly what the whole
        conversation would give. `ChatClient.load_messages` fills the gap from the server and
        reads again."""
        direction = check_page(conv_id, limit, direction)
        self._reads.anchor_in(conv_id, start_msg_id)
        return self._stretches.timeline(conv_id, start_msg_id, limit, direction)

    def gaps(self, conv_id: str) -> list[Gap]:
        """Where a conversation may be missing server messages, oldest first: before its oldest
        stretch known to be contiguous with the server (unless that reaches back to the beginning),
        between stretches, and after the newest (unless it reaches the live edge). A
        conversation the store knows nothing about from the server is one gap,
        ``Gap(conv_id, None, None)``; one fully known has none."""
        return self._stretches.gaps(check_id(conv_id, "conv_id"))

    def stretches(self, conv_id: str) -> list[Span]:
        """The stretches of a conversation known to be contiguous with the server, oldest
        first (the complement of `gaps`)."""
        return self._stretches.spans(check_id(conv_id, "conv_id"))

    def forget_live_edge(self, conv_id: str) -> None:
        """Stop trusting that a conversation is contiguous up to the live edge: its stretch that
        reaches it ends before the newest server time it holds, so `timeline` shows a gap above
        (and that time's messages, which others may share, are fetched again). A client without
        live delivery calls it before reading the newest page."""
        with self.connection.tx():
            self._stretches.forget_live_edge(check_id(conv_id, "conv_id"))

    def message_count(self, conv_id: str) -> int:
        """How many messages of a conversation are stored."""
        return self._reads.count(check_id(conv_id, "conv_id"))

    def messages_by_type(self, conv_id: str | None,
                         types: MessageType | Iterable[MessageType], *,
                         start_msg_id: str | None = None, timestamp: int | None = None,
                         limit: int = 20, sender: str | None = None,
                         direction: Direction = Direction.UP) -> list[Message]:
        """Messages of the given types (in one conversation, or all when ``conv_id`` is None),
        oldest first. ``start_msg_id`` anchors the page on a message (exclusive) and pages on
        (sort time, row id) as `messages` does, so messages that share a timestamp are never
        lost; ``timestamp`` is a filter: only messages before it (UP) or after it (DOWN)."""
        tlist, direction = check_type_page(conv_id, types, start_msg_id, timestamp, limit,
                                           sender, direction)
        if conv_id is not None:
            self._reads.anchor_in(conv_id, start_msg_id)
        return self._reads.by_type(conv_id, tlist, start_msg_id=start_msg_id,
                                   timestamp=timestamp, limit=limit, sender=sender,
                                   direction=direction)

    def messages_between(self, conv_id: str, start_time: int, end_time: int, *,
                         limit: int = 20, start_msg_id: str | None = None) -> list[Message]:
        """The first ``limit`` messages of a conversation with a time in [start_time, end_time]
        (ms, inclusive), oldest first; with ``start_msg_id`` (the last message of the previous
        page) the next ``limit`` after it, paging on (sort time, row id) as `messages` does."""
        check_id(conv_id, "conv_id")
        check_limit(limit)
        check_range(start_time, end_time)
        after = self._reads.anchor_in(conv_id, start_msg_id)
        return self._reads.between(conv_id, start_time, end_time, limit, after)

    # ------------------------------------------------------------------------- conversations

    def conversations(self, *, chat_type: ChatType | None = None,
                      marks: str | Iterable[str] | None = None,
                      limit: int | None = None) -> list[Conversation]:
        """Local conversations with their unread counts, last messages and state: pinned ones
        first (newest pin first), then by newest activity (all of them, or the first
        ``limit``). ``marks`` (a mark or several) keeps the conversations that have every one
        of them."""
        chat_type = None if chat_type is None else check_chat_type(chat_type)
        optional(limit, "limit", check_list_limit)
        wanted = () if marks is None else check_marks(marks, "marks")
        return self._reads.conversations(chat_type, limit, wanted)

    def conversation(self, conv_id: str) -> Conversation | None:
        """One conversation, or None."""
        return self._reads.conversation(check_id(conv_id, "conv_id"))

    def save_conversation(self, conv_id: str, chat_type: ChatType, *, last_activity: int = 0,
                          ext: dict[str, Any] | None = None) -> Conversation:
        """Create a conversation (or update its ext and activity), e.g. from the server's list."""
        check_id(conv_id, "conv_id")
        chat_type = check_chat_type(chat_type)
        check_stamp(last_activity, "last_activity")
        blob = None if ext is None else conversation_ext(ext)
        with self.connection.tx():
            self._convs.save(conv_id, chat_type, last_activity, blob)
        conv = self.conversation(conv_id)
        assert conv is not None
        return conv

    def set_conversation_ext(self, conv_id: str, ext: dict[str, Any]) -> None:
        """Replace a conversation's app-defined attributes (drafts, pins, ...)."""
        check_id(conv_id, "conv_id")
        conversation_ext(ext)
        with self.connection.tx():
            self._convs.set_ext(conv_id, ext)

    def pin_conversation(self, conv_id: str, pinned: bool = True, *,
                         timestamp: int | None = None) -> bool:
        """Pin a conversation (it lists first, newest pin first) or unpin it, on this device
        only (`ChatClient.pin_conversation` tells the server too). ``timestamp`` (ms) is when it
        was pinned (default now; a pin synced from another device passes its time). Returns
        whether anything changed; CONVERSATION_NOT_EXIST for an unknown conversation."""
        check_id(conv_id, "conv_id")
        check_flag(pinned, "pinned")
        optional(timestamp, "timestamp", check_stamp)
        at = (now_ms() if timestamp is None else timestamp) if pinned else None
        with self.connection.tx():
            return self._convs.pin(conv_id, at, keep=timestamp is None)

    def set_conversation_marks(self, conv_id: str, *, add: str | Iterable[str] = (),
                               remove: str | Iterable[str] = ()) -> frozenset[str]:
        """Add and remove marks of a conversation (`ConversationMark.UNREAD`, or any str of
        the app's: at most 64 characters, no control characters); returns its marks after.
        A conversation has at most 32 marks. CONVERSATION_NOT_EXIST for an unknown one."""
        check_id(conv_id, "conv_id")
        plus, minus = check_marks(add, "add"), check_marks(remove, "remove")
        with self.connection.tx():
            return self._convs.set_marks(conv_id, plus, minus)

    def mark_conversation_unread(self, conv_id: str) -> bool:
        """Show a conversation as unread without an unread message (it gets
        `ConversationMark.UNREAD`; its ``unread_count`` and `total_unread_count`, which count
        messages, do not change). Reading the conversation clears the mark. Returns whether
        the mark was new."""
        check_id(conv_id, "conv_id")
        with self.connection.tx():
            return self._convs.mark_unread(conv_id)

    def set_draft(self, conv_id: str, text: str | None) -> bool:
        """Keep the text being written in a conversation (None or "": no draft); this device
        only. Returns whether it changed; CONVERSATION_NOT_EXIST for an unknown one."""
        check_id(conv_id, "conv_id")
        check_short_text(text, "text", MAX_DRAFT)
        with self.connection.tx():
            return self._convs.set_draft(conv_id, text or None)

    def set_conversation_title(self, conv_id: str, title: str | None) -> bool:
        """Name a conversation (None or "": no title). Returns whether it changed;
        CONVERSATION_NOT_EXIST for an unknown one."""
        check_id(conv_id, "conv_id")
        check_short_text(title, "title", MAX_TITLE)
        with self.connection.tx():
            return self._convs.set_title(conv_id, title or None)

    # --------------------------------------------------------------------- rich messages

    def thread_messages(self, root_msg_id: str, *, start_msg_id: str | None = None,
                        limit: int = 20, direction: Direction = Direction.UP) -> list[Message]:
        """A page of a thread's replies (messages whose ``thread_id`` is ``root_msg_id``),
        oldest first, paged as `messages` pages. Thread replies are not in `messages`."""
        direction = check_page(root_msg_id, limit, direction, "root_msg_id")
        optional(start_msg_id, "start_msg_id", check_id)
        return self._threads.page(root_msg_id, start_msg_id, limit, direction)

    def threads(self, conv_id: str, *, limit: int = 20) -> list[ThreadSummary]:
        """A conversation's threads, the one with the newest reply first: each root's id, its
        reply count and newest reply."""
        check_id(conv_id, "conv_id")
        check_limit(limit)
        return self._threads.of_conversation(conv_id, limit)

    def reactions(self, msg_id: str) -> list[Reaction]:
        """A message's reactions, one `Reaction` per key, the oldest key first ([] when it has
        none or is not stored)."""
        return self._reactions.of(check_id(msg_id, "msg_id"))

    def apply_reaction(self, msg_id: str, key: str, sender: str | None = None, *,
                       reaction_id: str | None = None,
                       timestamp: int | None = None) -> list[Reaction] | None:
        """Record that ``sender`` (None: the store's user) reacted with ``key`` to a stored
        message; ``reaction_id`` is the server's id of the reaction, kept so that a removal
        naming only it finds it. Returns the message's reactions after, or None when nothing
        changed (already there, or the message is not stored here)."""
        who = check_reaction(msg_id, key, sender, self.user_id)
        optional(reaction_id, "reaction_id", check_id)
        optional(timestamp, "timestamp", check_stamp)
        with self.connection.tx():
            return self._reactions.add(msg_id, key, who, reaction_id,
                                       now_ms() if timestamp is None else timestamp)

    def apply_reaction_removal(self, msg_id: str, key: str,
                               sender: str | None = None) -> list[Reaction] | None:
        """Remove ``sender``'s (None: the store's user) reaction ``key`` from a message; returns
        the message's reactions after, or None when there was no such reaction."""
        who = check_reaction(msg_id, key, sender, self.user_id)
        with self.connection.tx():
            return self._reactions.remove(msg_id, key, who)

    def apply_reaction_removal_by_id(self, reaction_id: str
                                     ) -> tuple[str, list[Reaction]] | None:
        """Remove the reaction the server knows as ``reaction_id``; returns (its message's id,
        the message's reactions after), or None when no stored reaction has that id."""
        check_id(reaction_id, "reaction_id")
        with self.connection.tx():
            return self._reactions.remove_by_id(reaction_id)

    def reaction_records(self, msg_ids: Sequence[str]) -> list[ReactionRecord]:
        """Every sender's reaction to the stored messages among ``msg_ids``, as kept: key,
        sender, the server's id of the reaction and its time; each message's oldest first.
        What `reactions` summarises (it lists 20 senders a key), in full -- for exports and
        tools. Ids of messages not stored here are left out."""
        return self._reactions.records(check_ids(msg_ids, "msg_ids"))

    def reaction_id(self, msg_id: str, key: str, sender: str | None = None) -> str | None:
        """The server's id of ``sender``'s (None: the store's user) reaction ``key`` to a
        message (None when it is not there or its id is not known)."""
        return self._reactions.reaction_id(msg_id, key,
                                           check_reaction(msg_id, key, sender, self.user_id))

    def pinned_messages(self, conv_id: str) -> list[Message]:
        """The messages pinned in a conversation, the newest pin first."""
        return self._pins.of(check_id(conv_id, "conv_id"))

    def pin_records(self, conv_id: str) -> list[PinRecord]:
        """The pins of a conversation as kept: each pinned message's id, when it was pinned and
        by whom; the newest pin first (the order of `pinned_messages`)."""
        return self._pins.records(check_id(conv_id, "conv_id"))

    def apply_message_pin(self, msg_id: str, *, pinned: bool = True, pinned_by: str | None = None,
                          timestamp: int | None = None) -> bool:
        """Pin (or unpin) a stored message in its conversation, as the server (or this user)
        said; ``timestamp`` (ms, default now) orders the pins. Returns whether anything
        changed (False as well for a message not stored here)."""
        check_id(msg_id, "msg_id")
        check_flag(pinned, "pinned")
        optional(pinned_by, "pinned_by", check_id)
        optional(timestamp, "timestamp", check_stamp)
        with self.connection.tx():
            return self._pins.apply(msg_id, pinned, pinned_by,
                                    now_ms() if timestamp is None else timestamp) is not None

    def set_local_ext(self, msg_id: str, data: dict[str, Any] | None) -> Message:
        """Replace a message's ``local_ext``: app data kept on this device only (never sent,
        outside the payload limit; its own limit is `Limits.max_local_ext_bytes`, else
        MESSAGE_SIZE_LIMIT). None or {} clears it. Returns the stored message;
        MESSAGE_INVALID when no message has ``msg_id``."""
        check_id(msg_id, "msg_id")
        if data is not None and not isinstance(data, dict):
            raise invalid("data", "a dict or None", data)
        return self._writes.set_local_ext(msg_id, data or {})

    # --------------------------------------------------------------------- change listeners

    def add_change_listener(self, listener: Callable[[Changes], None]) -> None:
        """Call ``listener(changes)`` after each write transaction that changed conversations
        commits: `Changes.conversations` (the ids whose unread count, last message, activity,
        title, pin, marks, draft or ext changed, or that were created or deleted) and
        `Changes.total_unread` (the new `total_unread_count`, None when it did not change). It
        runs in the writing thread, after the commit; what it raises is logged, not raised."""
        self._changes.subscribe(check_callable(listener, "listener"))

    def remove_change_listener(self, listener: Callable[[Changes], None]) -> None:
        """Stop calling ``listener`` (nothing happens when it was not added)."""
        self._changes.unsubscribe(listener)

    # ---------------------------------------------------------------------- client support

    def adapter_state(self, name: str) -> dict[str, Any]:
        """The document a server adapter kept under ``name`` (`save_adapter_state`); an empty
        dict when there is none."""
        return self._adapter_state.load(check_id(name, "name"))

    def save_adapter_state(self, name: str, state: dict[str, Any]) -> None:
        """Keep ``state``, a JSON object, under ``name`` in one transaction, replacing what was
        there: what a server adapter needs after a restart (its sync position, its room
        directory). The store never reads inside it. INVALID_PARAM for what is not plain JSON
        or is larger than 4 MiB."""
        check_id(name, "name")
        if not isinstance(state, dict):
            raise invalid("state", "a dict (a JSON object)", state)
        self._adapter_state.save(name, state)

    def mark_sent(self, local_id: str, server_id: str, server_time: int
                  ) -> tuple[Message, list[ReceiptKind]]:
        """A send succeeded: the message takes the server's id and time (its local id still finds
        it) and status SUCCESS, and receipts that arrived early are applied. Returns the message
        and the kinds of receipt applied (`ReceiptKind`, equal to `RECEIPT_DELIVERED`,
        `RECEIPT_READ`)."""
        check_id(local_id, "local_id")
        check_id(server_id, "server_id")
        check_stamp(server_time, "server_time")
        kinds = self._receipts.mark_sent(local_id, server_id, server_time)
        msg = self._reads.get(server_id)
        assert msg is not None
        return msg, kinds

    def apply_receipts(self, kind: ReceiptKind | int, msg_ids: Sequence[str]) -> list[str]:
        """Set ``is_delivered`` (`ReceiptKind.DELIVERED`, 1) or ``is_read_acked`` (and
        ``is_delivered``: `ReceiptKind.READ`, 2) on sent messages; returns the ids that changed.
        Receipts for messages not stored yet are kept until they are."""
        return self._receipts.apply(check_receipt_kind(kind), check_ids(msg_ids, "msg_ids"))

    def mark_conversation_read_acked(self, conv_id: str, up_to: int | None = None) -> list[str]:
        """The peer read a conversation: its sent messages with a time up to ``up_to`` (all when
        None) are read-acked. Returns their ids."""
        check_id(conv_id, "conv_id")
        optional(up_to, "up_to", check_time)
        return self._receipts.conversation_read(conv_id, up_to)

    def add_group_acks(self, acks: Sequence[Any]) -> dict[str, int]:
        """Record group read receipts (`GroupReadAck`); returns msg_id -> distinct readers, for
        the stored messages whose count changed."""
        return self._receipts.add_group_acks(check_group_acks(acks))

    def group_read_acks(self, msg_id: str) -> list[GroupReadAck]:
        """The group read receipts kept for a message (by its server id; also ones that came
        before it did), oldest first."""
        return self._receipts.group_acks(check_id(msg_id, "msg_id"))

    def prune_pending_receipts(self, older_than_ms: int) -> int:
        """Forget receipts that have waited more than ``older_than_ms`` for a message that never
        came; returns how many were forgotten."""
        check_time(older_than_ms, "older_than_ms", lo=0)
        return self._receipts.prune_pending(older_than_ms)

    def apply_recall(self, msg_ids: Sequence[str], recalled_at: int, *,
                     recalled_by: Mapping[str, str] | None = None) -> list[Message]:
        """The server recalled messages (by id): each becomes a recall notice, keeping its ids,
        type, sender, times and read state, with its type's blank body and ``recalled_at`` set;
        it leaves the search index. ``recalled_by`` maps the ids of messages recalled by someone
        other than their sender (a moderator) to who did: their notices say so in ``ext``
        (`lifecycle.RECALLED_BY`). Returns the messages recalled now (unknown or already
        recalled ids are skipped)."""
        ids = check_ids(msg_ids, "msg_ids")
        check_stamp(recalled_at, "recalled_at")
        return self._writes.apply_recall(ids, recalled_at, check_recalled_by(recalled_by))

    def apply_edit(self, msg_id: str, body: Body, edited_at: int) -> Message | None:
        """The server replaced a TEXT or CUSTOM message's content: the stored message takes
        ``body`` and ``edited_at`` (an older edit, or an edit of a recalled message, changes
        nothing). Returns the stored message, or None when there is none with that id."""
        check_id(msg_id, "msg_id")
        check_stamp(edited_at, "edited_at")
        return self._writes.apply_edit(msg_id, body, edited_at)

    # ---------------------------------------------------------------------------- search

    def search_messages(self, keyword: str | Sequence[str], *, match: str = "all",
                        conv_id: str | None = None,
                        sender: str | Sequence[str] | None = None,
                        types: MessageType | Iterable[MessageType] | None = None,
                        start_time: int | None = None, end_time: int | None = None,
                        scope: SearchScope = SearchScope.CONTENT, limit: int = 20,
                        direction: Direction = Direction.UP,
                        start_msg_id: str | None = None) -> list[Message]:
        """Messages containing ``keyword``, oldest first.

        The keyword is literal text (never query syntax); its white-space separated words must all
        match, each at the start of a word or, for Chinese, Japanese and Korean, anywhere
        (traditional and simplified characters find each other). A list of 1-5 keywords
        wants every one (``match="all"``) or at least one (``match="any"``). UP
        returns the newest ``limit`` matches, DOWN the oldest; with ``start_msg_id`` the ``limit``
        matches just before (UP) or after (DOWN) that message, exclusive, paging on (sort time,
        row id) as `messages` does, so matches that share a timestamp are never lost.
        ``start_time`` and ``end_time`` (inclusive, ms) are filters. Raises `IMError`:
        INVALID_PARAM for an empty keyword, more than 5 keywords, an unknown ``match`` or
        ``start_msg_id``, QUERY_PARAM_REACHES_LIMIT for a limit outside 1-400.
        """
        check_limit(limit)
        direction = check_direction(direction)
        optional(conv_id, "conv_id", check_id)
        optional(start_msg_id, "start_msg_id", check_id)
        groups = keyword_groups(keyword, match)  # checked before the anchor is looked up
        queries = self._search_queries(
            groups, conv_id=conv_id, sender=sender, types=types, start_time=start_time,
            end_time=end_time, scope=scope, limit=limit, newest_first=direction == Direction.UP,
            anchor=None if start_msg_id is None else (
                self._reads.anchor(start_msg_id) if conv_id is None
                else self._reads.anchor_in(conv_id, start_msg_id)))
        return self._searcher.search_any(queries)

    def search_counts(self, keyword: str | Sequence[str], *, match: str = "all",
                      sender: str | Sequence[str] | None = None,
                      types: MessageType | Iterable[MessageType] | None = None,
                      start_time: int | None = None, end_time: int | None = None,
                      scope: SearchScope = SearchScope.CONTENT,
                      max_hits: int = 10_000) -> list[ConversationHits]:
        """How many messages match, per conversation, newest conversation first: each a
        `ConversationHits` (``count``, the ``newest`` match, ``capped``). The keyword(s) and
        filters mean what they mean for `search_messages`. Counting stops after ``max_hits``
        matches (1 to 1,000,000): the counts are then lower bounds, every entry ``capped``."""
        if isinstance(max_hits, bool) or not isinstance(max_hits, int) or \
                not 1 <= max_hits <= 1_000_000:
            raise invalid("max_hits", "an integer from 1 to 1,000,000", max_hits)
        queries = self._search_queries(
            keyword_groups(keyword, match), conv_id=None, sender=sender, types=types,
            start_time=start_time, end_time=end_time, scope=scope, limit=1, newest_first=True,
            anchor=None)
        return self._counter.counts(queries, max_hits)

    def search_conversations(self, text: str, *, limit: int = 20) -> list[Conversation]:
        """Conversations whose title or id matches ``text``, newest first: as keyword search
        matches words (folded, traditional and simplified alike), and by pinyin, full or
        initials ("beijing", "bj" find 北京). Works with search=False too (no index needed)."""
        if not isinstance(text, str) or not text.strip():
            raise IMError(ErrorCode.INVALID_PARAM, "the search text is empty; type some text")
        check_text(text, "text")
        check_limit(limit)
        found = [self._reads.conversation(c) for c in self._names.search(text, limit)]
        return [c for c in found if c is not None]

    def _search_queries(self, groups: list[list[str]], *, conv_id: Any, sender: Any,
                        types: Any, start_time: Any, end_time: Any, scope: Any, limit: int,
                        newest_first: bool, anchor: tuple[int, int] | None) -> list[Query]:
        """The checked `Query` of each keyword group of a search (one unless ``match="any"``)."""
        optional(conv_id, "conv_id", check_id)
        optional(start_time, "start_time", check_time)
        optional(end_time, "end_time", check_time)
        if isinstance(scope, bool) or scope not in tuple(SearchScope):
            raise invalid("scope", "a SearchScope", scope)
        senders = None if sender is None else (
            [check_id(sender, "sender")] if isinstance(sender, str) else check_ids(sender, "sender"))
        if not self._indexer.enabled:
            raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                          "this store was opened with search=False; open it with search=True")
        return [Query(words=words, scope=SearchScope(scope), conv_id=conv_id, senders=senders,
                      types=as_types(types), start_time=start_time, end_time=end_time,
                      newest_first=newest_first, limit=limit, anchor=anchor)
                for words in groups]

    def flush_index(self, *, progress: Callable[[IndexStatus], None] | None = None,
                    timeout: float | None = None) -> int:
        """Wait until the search index holds every change made so far (indexed by this process's
        indexer thread, or by the process that indexes the store); returns how many outbox
        entries were pending when called. Searches never need this: they are exact while work
        is pending. ``progress`` hears an `IndexStatus` about five times a second;
        ``timeout`` (seconds) bounds the wait: then IMError(DATABASE_ERROR) says what is left
        (nothing is lost; the work stays queued)."""
        optional(progress, "progress", check_callable)
        check_timeout(timeout)
        if not self._indexer.enabled:
            return 0
        pending = self._indexer.pending()
        tell = None if progress is None else (lambda _done: progress(self.index_status()))
        if not self._indexer.wait(tell, timeout):
            raise IMError(ErrorCode.DATABASE_ERROR,
                          f"the search index is still {self._indexer.pending()} changes behind "
                          f"after {timeout} s; searches stay exact, and the work stays queued")
        return pending

    def pause_indexing(self) -> AbstractContextManager[None]:
        """A context manager that holds this process's indexer back (its current batch
        finishes first) until the block ends: for a latency-critical phase, or a test that
        needs rows to stay pending. Searches stay exact meanwhile; nothing is lost."""
        return self._indexer.pause()

    def index_status(self) -> IndexStatus:
        """How far the search index is behind: pending outbox entries, indexing speed, and an
        estimate of the time left. Searches are exact whatever it says."""
        with self.connection.guard():
            return self._indexer.status()

    def rebuild_search_index(self, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild the keyword index from the database; returns how many messages it indexed.
        ``progress`` is called with the number indexed so far. Crash-safe: an interrupted rebuild
        finishes when the store is next opened."""
        optional(progress, "progress", check_callable)
        return self._indexer.rebuild(progress)

    # ---------------------------------------------------------------------------- verify

    def verify(self, *, timeout: float | None = None) -> VerifyReport:
        """Recount derived state (unread counters, last messages, group ack counts, attachment
        rows, the search index, tombstones of stored messages), repair any drift, and report
        what was repaired; report too the stored messages that cannot be decoded and the
        receipts still waiting for a message. ``timeout`` (seconds) bounds the wait for the
        search index to catch up (a full disk stops it); without one, verify waits while the
        index moves and gives up once it has not for 60 s (a backlog being indexed is waited
        for, a full disk is not). Giving up is IMError(DATABASE_ERROR), after the database's
        own counters were checked and repaired."""
        check_timeout(timeout)
        return self._verifier.verify(timeout)

    def stats(self) -> dict[str, int]:
        """Counts for tools: conversations, messages, unread, attachments, pending index work."""
        return self._reads.stats()


def open_store(path: str | os.PathLike[str], *, user_id: str, limits: Limits | None = None,
               search: bool = True, key: bytes | str | None = None,
               index_policy: IndexPolicy | None = None) -> MessageStore:
    """Same as `MessageStore.open`."""
    return MessageStore.open(path, user_id=user_id, limits=limits, search=search, key=key,
                             index_policy=index_policy)
