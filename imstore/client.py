"""ChatClient: the server side of the store — sending, receiving, receipts, history, attachments.

Rules kept here:
- the client orchestrates; it talks to servers only through the adapters and to the database only
  through `MessageStore` (never SQL);
- a send validates first and writes nothing when the message is bad; then the message is stored
  as INPROGRESS, its attachments are uploaded, and it is sent with a time-out; a time-out gets one
  reconnect and one more try; every status change is stored and told to the listeners;
- what arrives (messages, receipts) is stored before listeners hear of it; receipts that arrive
  twice or early are harmless (the store keeps them until their message is there);
- history fetched with ``save=True`` is merged without duplicates and never raises unread counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from .adapters import ConnectionState, ProgressFn, SyncAdapter, Transport, check_page_size
from .codec import validate_message
from .errors import ErrorCode, IMError
from .message import (
    ChatType,
    Conversation,
    CursorResult,
    Direction,
    DownloadStatus,
    FetchOptions,
    FileBody,
    GroupReadAck,
    ImageBody,
    Message,
    MessageStatus,
    MessageType,
    VideoBody,
    conversation_id,
)
from .store import RECEIPT_DELIVERED, RECEIPT_READ, MessageStore

__all__ = ["ChatClient", "MessageListener", "safe_file_name"]

log = logging.getLogger("imstore.client")
T = TypeVar("T")


class MessageListener:
    """Override what you need; every method does nothing by default."""

    def on_messages_received(self, messages: list[Message]) -> None:
        """Messages arrived and are stored (CMD messages go to `on_cmd_messages_received`)."""

    def on_cmd_messages_received(self, messages: list[Message]) -> None:
        """Commands arrived (never stored)."""

    def on_messages_delivered(self, messages: list[Message]) -> None:
        """Sent messages reached the peer's device."""

    def on_messages_read(self, messages: list[Message]) -> None:
        """The peer read these sent messages."""

    def on_conversation_read(self, conv_id: str, reader: str) -> None:
        """The peer read the whole conversation."""

    def on_group_message_read(self, acks: list[GroupReadAck]) -> None:
        """Members read group messages sent with ``need_group_ack``."""

    def on_message_status_changed(self, message: Message, status: MessageStatus) -> None:
        """A sent message changed status (INPROGRESS, SUCCESS, FAIL)."""

    def on_connection_state_changed(self, state: ConnectionState) -> None:
        """The transport's connection changed state."""


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def safe_file_name(name: str, fallback: str = "file") -> str:
    """A file name that cannot leave its directory: no separators, no ``..``, no NUL bytes."""
    base = name.replace("\\", "/").split("/")[-1]
    base = _UNSAFE.sub("_", base).strip().lstrip(".")
    return base[:120] or fallback




class ChatClient:
    """Connects a `MessageStore` to a server through a `SyncAdapter` and a `Transport`.

    Args:
        store: the local store.
        adapter: the server's history API.
        transport: real-time delivery; when None, ``adapter`` is used if it is a `Transport` too.
        send_timeout: seconds to wait for the server's answer to a send.
        require_delivery_ack: send delivery receipts for one-to-one messages received.
        require_read_ack: send read receipts when messages are marked read here.
        auto_download: download thumbnails of images and videos and the audio of voice messages
            as they arrive.
        download_dir: where attachments land (default: ``files/`` in the store's directory, or a
            temporary directory for an in-memory store).
    """

    def __init__(self, store: MessageStore, adapter: SyncAdapter, *,
                 transport: Transport | None = None, send_timeout: float = 10.0,
                 require_delivery_ack: bool = True, require_read_ack: bool = True,
                 auto_download: bool = True, download_dir: str | None = None) -> None:
        if send_timeout <= 0:
            raise IMError(ErrorCode.INVALID_PARAM, "send_timeout must be positive")
        self.store = store
        self.adapter = adapter
        if transport is None and isinstance(adapter, Transport):
            transport = adapter
        self.transport = transport
        self.send_timeout = send_timeout
        self.require_delivery_ack = require_delivery_ack
        self.require_read_ack = require_read_ack
        self.auto_download = auto_download
        if download_dir is None:
            download_dir = (os.path.join(store.directory, "files") if store.directory
                            else tempfile.mkdtemp(prefix="imstore-files-"))
        self.download_dir = os.path.abspath(download_dir)
        self._listeners: list[MessageListener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deferred: list[Callable[[], Coroutine[Any, Any, Any]]] = []
        self._state_changed: asyncio.Event | None = None
        if transport is not None:
            transport.attach(self)

    # ---------------------------------------------------------------------------- listeners

    def add_listener(self, listener: MessageListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: MessageListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, name: str, *args: Any) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, name)(*args)
            except Exception:  # a listener's bug must not break the client
                log.exception("listener %r failed in %s", listener, name)

    def _spawn(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run background work now, or, outside an event loop, at the client's next async call."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._deferred.append(make)
            return
        while self._deferred:
            self._start(loop, self._deferred.pop(0))
        self._start(loop, make)

    def _start(self, loop: asyncio.AbstractEventLoop,
               make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        task = loop.create_task(self._quiet(make()))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)

    async def wait_idle(self) -> None:
        """Wait until background work (receipts, automatic downloads) is done."""
        loop = asyncio.get_running_loop()
        while self._deferred:
            self._start(loop, self._deferred.pop(0))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _need_transport(self) -> Transport:
        if self.transport is None:
            raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                          "this client has no transport; pass transport= to ChatClient")
        return self.transport

    async def _call(self, aw: Awaitable[T]) -> T:
        """Await an adapter call; anything but an IMError becomes one, keeping the cause."""
        try:
            return await aw
        except IMError:
            raise
        except TimeoutError as exc:
            raise IMError(ErrorCode.SERVER_TIMEOUT, "the server did not answer in time") from exc
        except (ConnectionError, OSError) as exc:
            raise IMError(ErrorCode.NETWORK_ERROR, f"network error: {exc}") from exc
        except Exception as exc:
            raise IMError(ErrorCode.SERVER_UNKNOWN_ERROR,
                          f"the adapter failed: {exc!r}") from exc

    # ------------------------------------------------------------------------------ sending

    def _set_status(self, msg: Message, status: MessageStatus) -> None:
        msg.status = status
        if msg.type != MessageType.CMD:
            self.store.set_status(msg.msg_id, status)
        self._emit("on_message_status_changed", msg, status)

    async def send_message(self, msg: Message, *, progress: ProgressFn | None = None) -> Message:
        """Send a message; returns it with the server's id and time and status SUCCESS.
        ``progress(done, total)`` hears how the attachment's upload goes.

        Raises `IMError`: the codec's codes for a bad message (nothing is stored), 402 when an
        upload fails, 510 when the connection is down and not reconnecting, 300 when the server
        did not answer twice (once before and once after reconnecting). On failure the stored
        message is FAIL; `resend_message` tries again.
        """
        transport = self._need_transport()
        validate_message(msg, self.store.limits, need_file=self._needs_upload(msg))
        if msg.type == MessageType.CMD:
            if msg.sender is None:
                msg.sender = self.store.user_id
            msg.conv_id = conversation_id(msg.chat_type, msg.to, msg.sender, self.store.user_id)
            return await self._deliver(transport, msg)
        msg.status = MessageStatus.INPROGRESS
        self.store.insert_message(msg)
        self._emit("on_message_status_changed", msg, MessageStatus.INPROGRESS)
        return await self._deliver(transport, msg, progress)

    async def resend_message(self, msg_id: str, *, progress: ProgressFn | None = None) -> Message:
        """Send again a message that failed."""
        transport = self._need_transport()
        msg = self.store.get_message(msg_id)
        if msg is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
        if msg.direction != Direction.SEND or msg.status not in (MessageStatus.FAIL,
                                                                  MessageStatus.CREATE):
            raise IMError(ErrorCode.INVALID_PARAM,
                          f"only failed messages of your own can be resent; this one is "
                          f"{msg.status.name}")
        self._set_status(msg, MessageStatus.INPROGRESS)
        return await self._deliver(transport, msg, progress)

    @staticmethod
    def _needs_upload(msg: Message) -> bool:
        return isinstance(msg.body, FileBody) and not msg.body.remote_url

    async def _deliver(self, transport: Transport, msg: Message,
                       progress: ProgressFn | None = None) -> Message:
        try:
            if self._needs_upload(msg) or (isinstance(msg.body, VideoBody)
                                           and msg.body.thumbnail_path and not msg.body.thumbnail_url):
                await self._upload(transport, msg, progress)
            await self._wait_for_connection(transport)
            result = await self._send_with_retry(transport, msg)
        except IMError:
            self._set_status(msg, MessageStatus.FAIL)
            raise
        except BaseException:
            self._set_status(msg, MessageStatus.FAIL)
            raise
        if msg.type == MessageType.CMD:
            msg.msg_id, msg.server_time = result.msg_id, result.server_time
            msg.status = MessageStatus.SUCCESS
        else:
            stored, early = self.store.mark_sent(msg.msg_id, result.msg_id, result.server_time)
            msg.msg_id, msg.server_time, msg.status = stored.msg_id, stored.server_time, stored.status
            msg.is_delivered, msg.is_read_acked = stored.is_delivered, stored.is_read_acked
            msg.group_ack_count = stored.group_ack_count
        self._emit("on_message_status_changed", msg, MessageStatus.SUCCESS)
        if msg.type != MessageType.CMD:
            # receipts that came in before the server's answer
            if RECEIPT_DELIVERED in early:
                self._emit("on_messages_delivered", [stored])
            if RECEIPT_READ in early:
                self._emit("on_messages_read", [stored])
        return msg

    async def _upload(self, transport: Transport, msg: Message,
                      progress: ProgressFn | None = None) -> None:
        body = msg.body
        assert isinstance(body, FileBody)
        if not body.remote_url:
            remote = await self._call(transport.upload(body.local_path, progress=progress))
            body.remote_url = remote.url
            body.secret = remote.secret or ""
            if isinstance(body, ImageBody) and remote.thumbnail_url and not body.thumbnail_url:
                body.thumbnail_url = remote.thumbnail_url
            body.download_status = DownloadStatus.SUCCEEDED
        if isinstance(body, VideoBody) and body.thumbnail_path and not body.thumbnail_url:
            thumb = await self._call(transport.upload(body.thumbnail_path))
            body.thumbnail_url = thumb.url
            body.thumbnail_status = DownloadStatus.SUCCEEDED
        if msg.type != MessageType.CMD:
            self.store.update_message(msg)

    async def _wait_for_connection(self, transport: Transport) -> None:
        if transport.state == ConnectionState.DISCONNECTED:
            raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                          "the connection is down and not reconnecting; reconnect, then resend")
        if transport.state == ConnectionState.RECONNECTING:
            event = self._event()
            deadline = asyncio.get_running_loop().time() + self.send_timeout * 3
            while transport.state == ConnectionState.RECONNECTING:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise IMError(ErrorCode.SERVER_NOT_REACHABLE,
                                  "the connection did not come back in time; resend later")
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), left)
                except TimeoutError:
                    continue
            if transport.state != ConnectionState.CONNECTED:
                raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                              "the connection could not be re-established; resend later")

    def _event(self) -> asyncio.Event:
        if self._state_changed is None:
            self._state_changed = asyncio.Event()
        return self._state_changed

    async def _send_with_retry(self, transport: Transport, msg: Message) -> Any:
        try:
            return await asyncio.wait_for(transport.send(msg), self.send_timeout)
        except TimeoutError:
            log.info("send of %s timed out; reconnecting and trying once more", msg.msg_id)
        try:
            await asyncio.wait_for(transport.reconnect(), self.send_timeout)
            return await asyncio.wait_for(transport.send(msg), self.send_timeout)
        except (TimeoutError, IMError) as exc:
            raise IMError(ErrorCode.SERVER_NOT_REACHABLE,
                          "the server did not answer, before or after reconnecting; the message "
                          "is FAIL: resend it later") from exc

    # ------------------------------------------------------------------ transport handler

    def on_messages(self, messages: list[Message]) -> None:
        cmds = [m for m in messages if m.type == MessageType.CMD]
        others = [m for m in messages if m.type != MessageType.CMD]
        if cmds:
            self._emit("on_cmd_messages_received", cmds)
        if not others:
            return
        new = self.store.save_received(others)
        for m in new:
            transport = self.transport
            if self.require_delivery_ack and m.chat_type == ChatType.CHAT and transport:
                self._spawn(lambda t=transport, m=m: t.send_delivery_ack(m))  # type: ignore[misc]
            if self.auto_download and isinstance(m.body, FileBody):
                if isinstance(m.body, ImageBody | VideoBody) and m.body.thumbnail_url:
                    self._spawn(lambda i=m.msg_id: self.download_thumbnail(i))  # type: ignore[misc]
                if m.type == MessageType.VOICE:
                    self._spawn(lambda i=m.msg_id: self.download_attachment(i))  # type: ignore[misc]
        if new:
            self._emit("on_messages_received", new)

    @staticmethod
    async def _quiet(coro: Awaitable[Any]) -> None:
        try:
            await coro
        except IMError as exc:
            log.warning("background work failed: %s", exc)

    def _receipts(self, kind: int, msg_ids: list[str], event: str) -> None:
        changed = self.store.apply_receipts(kind, msg_ids)
        msgs = [m for m in (self.store.get_message(i) for i in changed) if m is not None]
        if msgs:
            self._emit(event, msgs)

    def on_delivery_acks(self, msg_ids: list[str]) -> None:
        self._receipts(RECEIPT_DELIVERED, msg_ids, "on_messages_delivered")

    def on_read_acks(self, msg_ids: list[str]) -> None:
        self._receipts(RECEIPT_READ, msg_ids, "on_messages_read")

    def on_conversation_read(self, conv_id: str, reader: str) -> None:
        self.store.mark_conversation_read_acked(conv_id)
        self._emit("on_conversation_read", conv_id, reader)

    def on_group_read_acks(self, acks: list[GroupReadAck]) -> None:
        if self.store.add_group_acks(acks):
            self._emit("on_group_message_read", acks)

    def on_connection_state_changed(self, state: ConnectionState) -> None:
        if self._state_changed is not None:
            self._state_changed.set()
        self._emit("on_connection_state_changed", state)

    # ----------------------------------------------------------------------------- receipts

    def _stored(self, msg_id: str) -> Message:
        msg = self.store.get_message(msg_id)
        if msg is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
        return msg

    async def ack_message_read(self, msg_id: str) -> None:
        """Mark a received message read here and tell its sender (when read receipts are on)."""
        msg = self._stored(msg_id)
        self.store.mark_message_read(msg.msg_id)
        if self.require_read_ack and msg.direction == Direction.RECEIVE:
            await self._call(self._need_transport().send_read_ack(msg))

    async def ack_conversation_read(self, conv_id: str) -> None:
        """Mark a whole conversation read here (its unread count goes to 0) and tell the peer."""
        conv = self.store.conversation(conv_id)
        if conv is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST, f"there is no conversation {conv_id!r}")
        self.store.mark_conversation_read(conv_id)
        if self.require_read_ack:
            await self._call(self._need_transport().send_conversation_ack(conv_id, conv.chat_type))

    async def ack_group_message_read(self, msg_id: str) -> None:
        """Read receipt for a group message sent with ``need_group_ack``."""
        msg = self._stored(msg_id)
        if msg.chat_type != ChatType.GROUP_CHAT or not msg.need_group_ack:
            raise IMError(ErrorCode.INVALID_PARAM,
                          "group read receipts are for group messages sent with need_group_ack")
        self.store.mark_message_read(msg.msg_id)
        await self._call(self._need_transport().send_group_read_ack(msg))

    async def fetch_group_read_acks(self, msg_id: str, *, cursor: str | None = None,
                                    limit: int = 20) -> CursorResult[GroupReadAck]:
        """A page of a group message's readers; the stored ``group_ack_count`` follows them."""
        check_page_size(limit)
        page = await self._call(self._need_transport().fetch_group_read_acks(msg_id, cursor, limit))
        self.store.add_group_acks(page.items)
        return page

    # -------------------------------------------------------------------------- attachments

    def _dest(self, msg: Message, name: str, prefix: str) -> str:
        folder = os.path.join(self.download_dir, safe_file_name(msg.conv_id, "conversation"))
        os.makedirs(folder, exist_ok=True)
        path = os.path.abspath(os.path.join(
            folder, f"{prefix}{safe_file_name(msg.msg_id, 'msg')}_{safe_file_name(name)}"))
        if os.path.commonpath([path, self.download_dir]) != self.download_dir:
            raise IMError(ErrorCode.FILE_INVALID, f"refusing to write outside {self.download_dir}")
        return path

    async def download_attachment(self, msg_id: str, *,
                                  progress: ProgressFn | None = None) -> Message:
        """Download a message's file (image, voice, video, file); returns the updated message
        with ``body.local_path`` and ``body.download_status``."""
        msg = self._stored(msg_id)
        body = msg.body
        if not isinstance(body, FileBody) or not body.remote_url:
            raise IMError(ErrorCode.MESSAGE_INVALID, "this message has no file to download")
        dest = self._dest(msg, body.display_name or "file", "")
        body.download_status = DownloadStatus.DOWNLOADING
        self.store.update_message(msg)
        try:
            await self._call(self._need_transport().download(body.remote_url, dest,
                                                             progress=progress))
        except IMError as exc:
            body.download_status = DownloadStatus.FAILED
            self.store.update_message(msg)
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED, exc.description) from exc
        body.local_path, body.download_status = dest, DownloadStatus.SUCCEEDED
        body.size = os.path.getsize(dest)
        return self.store.update_message(msg)

    async def download_thumbnail(self, msg_id: str) -> Message:
        """Download the thumbnail of an image or video message."""
        msg = self._stored(msg_id)
        body = msg.body
        if not isinstance(body, ImageBody | VideoBody) or not body.thumbnail_url:
            raise IMError(ErrorCode.MESSAGE_INVALID, "this message has no thumbnail")
        dest = self._dest(msg, body.display_name or "thumb", "thumb_")
        body.thumbnail_status = DownloadStatus.DOWNLOADING
        self.store.update_message(msg)
        try:
            await self._call(self._need_transport().download(body.thumbnail_url, dest))
        except IMError as exc:
            body.thumbnail_status = DownloadStatus.FAILED
            self.store.update_message(msg)
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED, exc.description) from exc
        body.thumbnail_path, body.thumbnail_status = dest, DownloadStatus.SUCCEEDED
        return self.store.update_message(msg)

    # ------------------------------------------------------------------------------ history

    async def fetch_conversations_from_server(self, *, cursor: str | None = None,
                                              limit: int = 20) -> CursorResult[Conversation]:
        """A page of the user's server conversations, merged into the store (with their last
        messages); returns the local view of them."""
        check_page_size(limit)
        page = await self._call(self.adapter.fetch_conversations(cursor, limit))
        lasts = [c.last_message for c in page.items if c.last_message is not None]
        self.store.save_history(lasts)
        out = []
        for c in page.items:
            out.append(self.store.save_conversation(c.conv_id, c.chat_type,
                                                    last_activity=c.last_activity))
        return CursorResult(out, page.cursor)

    async def fetch_history_messages(self, conv_id: str, chat_type: ChatType, *,
                                     cursor: str | None = None, limit: int = 20,
                                     options: FetchOptions | None = None
                                     ) -> CursorResult[Message]:
        """A page of a conversation's server history (oldest first within the page). With
        ``options.save`` the page is merged into the store in one transaction: no duplicates,
        local read state kept, unread counts unchanged."""
        check_page_size(limit)
        options = options or FetchOptions()
        page = await self._call(self.adapter.fetch_history(conv_id, ChatType(chat_type), cursor,
                                                           limit, options))
        if not options.save:
            return page
        self.store.save_history(page.items)
        items = [self.store.get_message(m.msg_id) or m for m in page.items]
        return CursorResult(items, page.cursor)

    async def remove_messages_from_server(self, conv_id: str, chat_type: ChatType, *,
                                          msg_ids: Sequence[str] | None = None,
                                          before: int | None = None) -> int:
        """Delete messages from this user's server history (other members keep them) and from
        the store: by ids, or every message older than ``before`` (ms). Returns how many were
        removed locally."""
        if (msg_ids is None) == (before is None):
            raise IMError(ErrorCode.INVALID_PARAM, "give either msg_ids or before")
        await self._call(self.adapter.remove_messages(conv_id, ChatType(chat_type),
                                                      list(msg_ids) if msg_ids else msg_ids,
                                                      before))
        if msg_ids is not None:
            return self.store.delete_message_ids(list(msg_ids))
        assert before is not None
        return self.store.delete_messages(conv_id, start_time=-(2**62), end_time=before - 1)

    async def delete_conversation_from_server(self, conv_id: str, chat_type: ChatType, *,
                                              delete_messages: bool = True) -> None:
        """Delete a conversation on the server (with its history unless ``delete_messages`` is
        False) and locally."""
        await self._call(self.adapter.delete_conversation(conv_id, ChatType(chat_type),
                                                          delete_messages))
        self.store.delete_conversation(conv_id, delete_messages=delete_messages)


