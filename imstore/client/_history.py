"""History: the server's conversation list and history pages, merged into the store, and the
pages `load_messages` reads with every gap in their way filled first.

Rules kept here:
- history fetched with ``save=True`` is merged without duplicates (`MessageStore.merge_history`);
  a local CREATE or FAIL copy of a send that reached the server becomes the server's copy
  (the lifecycle's ACCEPT; a server id that is another message's keeps both apart); recalls and
  edits the stored copies missed are applied and announced; received messages new here and
  unread are announced once (`Inbound.arrived`); what a page carries beside its messages
  (reactions, pins) and the pins and marks of the conversation list are `Rich`'s to apply;
- which stretch of a conversation a page proves contiguous, and so where the gaps are, is the
  store's (`Span`, `MessageStore.timeline`); this part only fetches into the gaps it is shown,
  from the side the reading comes from, by the gap's inclusive time bounds. A gap is filled with
  whole ties: while every message fetched shares one time and the server has more, the fill
  follows the server's cursor; it then merges only what the page's span holds, leaving the
  messages of the time at its cut to the next fill, which brings them with the rest of their tie
  (so the store, which orders ties by arrival, holds them in the server's order). Without live
  delivery, reading the newest page forgets the live edge first (`forget_live_edge`), so that
  page is fetched again;
- when the server cannot be reached, `load_messages` returns the local page, marked incomplete;
- the conversation list's unread count is the server's: where it counts more unread messages than
  the store holds (a fresh device, a long absence), the newest history is fetched with the list
  (at most `UNREAD_FETCH_PAGES` pages of 50) so that every unread message is one the store holds,
  counted once whatever loads it later. A count the store cannot reach (messages read here
  without a receipt, or deleted here) is fetched for once: the next listings fetch again only
  when the server's count or its last message changes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..adapters import SyncAdapter, check_page_size, transport_method
from ..errors import ErrorCode, IMError
from ..lifecycle import INT64_MIN, RECALLED_BY, awaits_send, is_mine
from ..message import (
    ChatType,
    Conversation,
    CursorResult,
    Direction,
    FetchOptions,
    Message,
)
from ..store import Gap, MergeResult, MessageStore, Span
from ._gate import call
from ._inbound import Inbound
from ._listeners import Listeners
from ._rich import Rich

__all__ = ["History", "MessagePage"]

log = logging.getLogger("imstore.client")

UNREAD_FETCH_PAGES = 4

_OFFLINE = frozenset({ErrorCode.NETWORK_ERROR, ErrorCode.SERVER_NOT_REACHABLE,
                      ErrorCode.SERVER_TIMEOUT, ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED})


class MessagePage(list[Message]):
    """A page of messages from `ChatClient.load_messages`, oldest first. ``complete`` is False
    when the server could not be reached and the page holds only what is local."""

    def __init__(self, messages: Sequence[Message] = (), *, complete: bool = True) -> None:
        super().__init__(messages)
        self.complete = complete


class History:
    """History of one client."""

    def __init__(self, store: MessageStore, adapter: SyncAdapter, listeners: Listeners,
                 inbound: Inbound, rich: Rich, live: bool) -> None:
        self._store = store
        self._adapter = adapter
        self._listeners = listeners
        self._inbound = inbound
        self._rich = rich
        self._live = live  # a transport delivers live: a page may reach the live edge
        # conversation -> (the server's unread count, its last message) when a fetch for that
        # count brought all the store can hold (the rest was read or deleted here)
        self._reached: dict[str, tuple[int, str | None]] = {}

    def _api(self, name: str) -> Any:
        """The adapter's method ``name``; SERVICE_NOT_ENABLED when it has none."""
        return transport_method(self._adapter, name)

    async def conversations(self, cursor: str | None, limit: int) -> CursorResult[Conversation]:
        check_page_size(limit)
        page = await call(self._api("fetch_conversations")(cursor, limit))
        out = []
        for c in page.items:
            new_here = self._store.conversation(c.conv_id) is None
            last = c.last_message
            if last is not None:
                t = last.server_time
                span = None if t is None else Span.after(c.conv_id, t)
                result = self.merge([last], span)
                if result.suppressed and self._store.conversation(c.conv_id) is None:
                    continue
            conv = self._store.save_conversation(c.conv_id, c.chat_type,
                                                 last_activity=c.last_activity)
            if c.title and c.title != conv.title:  # the server's name (a room's m.room.name)
                self._store.set_conversation_title(c.conv_id, c.title)
            if new_here:
                self._rich.listed(c)
            said = (c.unread_count, None if last is None else last.msg_id)
            if c.unread_count > conv.unread_count and self._reached.get(c.conv_id) != said:
                conv = await self._fetch_unread(conv, c.unread_count)
                if conv.unread_count < c.unread_count:
                    self._reached[c.conv_id] = said
            out.append(self._store.conversation(c.conv_id) or conv)
        return CursorResult(out, page.cursor)

    async def _fetch_unread(self, conv: Conversation, server_unread: int) -> Conversation:
        """Fetch the newest history until the store holds the ``server_unread`` unread
        messages, the server has no more, or a page brings none (deleted here)."""
        cursor = None
        for _ in range(UNREAD_FETCH_PAGES):
            page = await self.fetch(conv.conv_id, conv.chat_type, cursor,
                                    min(50, server_unread - conv.unread_count + 1), None)
            cursor = page.cursor
            now = self._store.conversation(conv.conv_id)
            if now is None:
                break
            gained, conv = now.unread_count > conv.unread_count, now
            if cursor is None or conv.unread_count >= server_unread or not gained:
                break
        return conv

    async def fetch(self, conv_id: str, chat_type: ChatType, cursor: str | None, limit: int,
                    options: FetchOptions | None) -> CursorResult[Message]:
        check_page_size(limit)
        options = options or FetchOptions()
        page: CursorResult[Message] = await call(self._api("fetch_history")(
            conv_id, ChatType(chat_type), cursor, limit, options))
        if not options.save:
            return page
        span = None
        if options.types is None and options.sender is None:
            span = Span.of_page(conv_id, page.items, direction=options.direction,
                                cursor=page.cursor, first=cursor is None,
                                start_time=options.start_time, end_time=options.end_time)
        self.merge(page.items, span)
        self._rich.history_page(page, conv_id)
        items = [self._store.get_message(m.msg_id) or m for m in page.items]
        return CursorResult(items, page.cursor)

    async def load(self, conv_id: str, chat_type: ChatType, start_msg_id: str | None,
                   limit: int, direction: Direction) -> MessagePage:
        self._store.messages(conv_id, start_msg_id=start_msg_id, limit=limit,
                             direction=direction)  # checks the arguments
        chat_type = ChatType(chat_type)
        if not self._live and start_msg_id is None and direction == Direction.UP:
            self._store.forget_live_edge(conv_id)
        for _ in range(1000):  # each fill closes the gap or moves its edge
            page = self._store.timeline(conv_id, start_msg_id=start_msg_id, limit=limit,
                                        direction=direction)
            if page.gap is None:
                return MessagePage(page.messages)
            try:
                await self._fill(conv_id, chat_type, page.gap, direction, limit)
            except IMError as exc:
                if exc.code not in _OFFLINE:
                    raise
                log.info("load_messages: %s; returning the local page", exc)
                return MessagePage(self._store.messages(conv_id, start_msg_id=start_msg_id,
                                                        limit=limit, direction=direction),
                                   complete=False)
        raise IMError(ErrorCode.SERVER_UNKNOWN_ERROR,
                      "the server's history does not close the gap; check its time filters")

    async def _fill(self, conv_id: str, chat_type: ChatType, gap: Gap, direction: Direction,
                    limit: int) -> None:
        """Fetch into a gap from the side the reading comes from, in whole ties (the module's
        rules), and merge what the fetch proves."""
        up = direction != Direction.DOWN
        options = FetchOptions(
            direction=direction, save=False,
            start_time=None if gap.after_time is None else gap.after_time + 1,
            end_time=None if gap.before_time is None else gap.before_time - 1)
        items: list[Message] = []
        cursor = None
        for _ in range(1000):
            page = await call(self._api("fetch_history")(conv_id, chat_type, cursor,
                                                          min(50, max(limit, 20)), options))
            items = page.items + items if up else items + page.items
            cursor = page.cursor
            times = {m.server_time for m in items if m.server_time is not None}
            if cursor is None or len(times) > 1:
                break
        else:
            raise IMError(ErrorCode.SERVER_UNKNOWN_ERROR,
                          "the server's history pages never leave one time; check its cursors")
        span = Span.of_page(conv_id, items, direction=direction, cursor=cursor, first=True,
                            start_time=options.start_time, end_time=options.end_time)
        if span is None:
            return
        # the messages of the time at the cut come with their tie, and the cursor lies past them
        self.merge([m for m in items if m.server_time is None or span.holds(m.server_time)],
                   Span(conv_id, span.start, span.end))

    def _accept_sent(self, items: Sequence[Message]) -> None:
        """Local copies of sends the server's page shows it has: they become the server's."""
        for m in items:
            if not (m.local_id and m.local_id != m.msg_id
                    and is_mine(m.sender, self._store.user_id)):
                continue
            local = self._store.get_message(m.local_id)
            if local is None or local.msg_id != m.local_id or not awaits_send(local.status):
                continue  # none here, already the server's, or a send under way settles it
            try:
                stored, _ = self._store.mark_sent(m.local_id, m.msg_id, m.server_time or 0)
            except IMError as exc:  # the server's id is another message's: keep both
                log.warning("history: %s stays apart: %s", m.local_id, exc)
                continue
            self._listeners.emit("on_message_status_changed", stored, stored.status)

    def merge(self, items: Sequence[Message], span: Span | None = None) -> MergeResult:
        """Merge server messages (the module's rules)."""
        self._accept_sent(items)
        known: dict[str, Message] = {}
        for m in items:
            if m.recalled_at is not None or m.edited_at is not None:
                here = self._store.get_message(m.msg_id)
                if here is not None:
                    known[m.msg_id] = here
        result = self._store.merge_history(items, span=span)
        self._inbound.arrived([m for m in result.new if not m.is_read])
        for m in items:
            here = known.get(m.msg_id)
            if here is None:
                continue
            if m.recalled_at is not None and here.recalled_at is None:
                by = (m.ext or {}).get(RECALLED_BY)
                done = self._store.apply_recall([m.msg_id], m.recalled_at, recalled_by=(
                    {m.msg_id: by} if isinstance(by, str) and by else None))
                if done:
                    self._listeners.emit("on_messages_recalled", done)
            elif m.recalled_at is None and (m.edited_at or 0) > (here.edited_at or 0):
                edited = self._store.apply_edit(m.msg_id, m.body, m.edited_at or 0)
                if edited is not None:
                    self._listeners.emit("on_messages_edited", [edited])
        return result

    async def remove(self, conv_id: str, chat_type: ChatType, msg_ids: Sequence[str] | None,
                     before: int | None) -> int:
        server_ids = None
        if msg_ids is not None:  # local ids become the server's ids of what was sent
            server_ids = list(dict.fromkeys(
                (m.msg_id if (m := self._store.get_message(i)) is not None else i)
                for i in msg_ids))
        await call(self._api("remove_messages")(conv_id, ChatType(chat_type), server_ids,
                                                before))
        if msg_ids is not None:
            return self._store.delete_message_ids(list(msg_ids))
        assert before is not None
        return self._store.delete_messages(conv_id, start_time=INT64_MIN, end_time=before - 1)

    async def delete_conversation(self, conv_id: str, chat_type: ChatType,
                                  delete_messages: bool) -> None:
        await call(self._api("delete_conversation")(conv_id, ChatType(chat_type),
                                                    delete_messages))
        self._store.delete_conversation(conv_id, delete_messages=delete_messages)
