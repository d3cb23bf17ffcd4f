"""One user's connection to a `MemoryServer`: the `SyncAdapter` and `Transport` in one object.

Rules kept here:
- every call is one network round trip: the injected latency, then the server's answer;
- calls that need the connection raise `IMError(MESSAGE_WEBSOCKET_DISCONNECTED)` unless it is
  CONNECTED; a state change is reported to the handler, and CONNECTED hands it what was kept;
- a lost answer means the server took the send but the caller never hears back;
- what this device does (sends, edits, recalls, reads) reaches the user's other devices, never
  this one (the server is told which connection acted).
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...errors import ErrorCode, IMError
from ...message import Body, ChatType, Conversation, CursorResult, FetchOptions, GroupReadAck, Message
from .. import ConnectionState, ProgressFn, RemoteFile, SendResult, TransportHandler

if TYPE_CHECKING:
    from ._server import MemoryServer

__all__ = ["MemoryConnection"]


class MemoryConnection:
    """One device of a user connected to a `MemoryServer`: implements `SyncAdapter` and
    `Transport`. ``device_id`` is None for the user's default device."""

    def __init__(self, server: MemoryServer, user_id: str, device_id: str | None = None) -> None:
        self.server = server
        self.user_id = user_id
        self.device_id = device_id
        self.state = ConnectionState.CONNECTED
        self.handler: TransportHandler | None = None

    def _set_state(self, state: ConnectionState) -> None:
        if state == self.state:
            return
        self.state = state
        if self.handler is not None:
            self.handler.on_connection_state_changed(state)
            if state == ConnectionState.CONNECTED:
                self.server.delivery.flush(self.user_id, self.device_id, self.handler)

    async def _wire(self) -> None:
        """One network round trip: the injected latency."""
        if self.server.faults.latency:
            await asyncio.sleep(self.server.faults.latency)
        else:
            await asyncio.sleep(0)

    def _require_connection(self) -> None:
        if self.state != ConnectionState.CONNECTED:
            raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                          f"the connection of {self.user_id!r} is {self.state.name.lower()}")

    async def _online(self) -> None:
        self._require_connection()
        await self._wire()

    # -- SyncAdapter ----------------------------------------------------------------------

    async def fetch_conversations(self, cursor: str | None, limit: int
                                  ) -> CursorResult[Conversation]:
        await self._wire()
        return self.server.conversations(self.user_id, cursor, limit)

    async def fetch_history(self, conv_id: str, chat_type: ChatType, cursor: str | None,
                            limit: int, options: FetchOptions) -> CursorResult[Message]:
        await self._wire()
        return self.server.history(self.user_id, conv_id, ChatType(chat_type), cursor, limit,
                                   options)

    async def remove_messages(self, conv_id: str, chat_type: ChatType,
                              msg_ids: Sequence[str] | None, before: int | None) -> None:
        await self._wire()
        self.server.remove(self.user_id, conv_id, ChatType(chat_type),
                           list(msg_ids) if msg_ids is not None else None, before)

    async def delete_conversation(self, conv_id: str, chat_type: ChatType,
                                  delete_messages: bool) -> None:
        await self._wire()
        self.server.delete(self.user_id, conv_id, ChatType(chat_type), delete_messages)

    # -- Transport ------------------------------------------------------------------------

    def attach(self, handler: TransportHandler) -> None:
        self.handler = handler
        if self.state == ConnectionState.CONNECTED:
            self.server.delivery.flush(self.user_id, self.device_id, handler)

    async def send(self, message: Message) -> SendResult:
        await self._online()
        self._require_connection()
        faults = self.server.faults
        if faults.lost_answers > 0:
            faults.lost_answers -= 1
            self.server.accept(self.user_id, message, by=self)  # it arrived; the answer never comes back
            await asyncio.Event().wait()
        return self.server.accept(self.user_id, message, by=self)[0]

    async def reconnect(self) -> None:
        await self._wire()
        if self.server.faults.unreachable:
            self._set_state(ConnectionState.DISCONNECTED)
            raise IMError(ErrorCode.SERVER_NOT_REACHABLE, "the server cannot be reached")
        self._set_state(ConnectionState.CONNECTED)

    async def send_delivery_ack(self, message: Message) -> None:
        await self._online()
        self.server.delivery_ack(self.user_id, message.msg_id)

    async def send_read_ack(self, message: Message) -> None:
        await self._online()
        self.server.read_ack(self.user_id, message.msg_id, by=self)

    async def send_conversation_ack(self, conv_id: str, chat_type: ChatType,
                                    up_to: int | None = None) -> None:
        await self._online()
        self.server.conversation_ack(self.user_id, conv_id, ChatType(chat_type), up_to, by=self)

    async def send_group_read_ack(self, message: Message) -> None:
        await self._online()
        self.server.group_ack(self.user_id, message.msg_id, by=self)

    async def recall_message(self, message: Message) -> int:
        await self._online()
        return self.server.recall(self.user_id, message.msg_id, by=self)

    async def edit_message(self, message: Message, body: Body) -> int:
        await self._online()
        return self.server.edit(self.user_id, message.msg_id, body, by=self)

    async def fetch_group_read_acks(self, msg_id: str, cursor: str | None, limit: int
                                    ) -> CursorResult[GroupReadAck]:
        await self._wire()
        return self.server.group_acks(msg_id, cursor, limit)

    async def upload(self, path: str, *, progress: ProgressFn | None = None) -> RemoteFile:
        await self._online()
        faults = self.server.faults
        if faults.failed_uploads > 0:
            faults.failed_uploads -= 1
            raise IMError(ErrorCode.FILE_UPLOAD_FAILED, f"the server refused {path!r}; try again")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise IMError(ErrorCode.FILE_NOT_FOUND, f"cannot read {path!r}: {exc}") from exc
        chunk = 256 * 1024
        for done in range(0, len(data), chunk):
            if progress:
                progress(min(done + chunk, len(data)), len(data))
            await asyncio.sleep(0)
        if progress and not data:
            progress(0, 0)
        url = self.server.put_file(os.path.basename(path), data)
        return RemoteFile(url=url, secret=base64.b32encode(os.urandom(5)).decode(),
                          thumbnail_url=url)

    async def download(self, url: str, dest: str, *, progress: ProgressFn | None = None) -> None:
        await self._online()
        data = self.server.get_file(url)
        if data is None:
            raise IMError(ErrorCode.FILE_DOWNLOAD_FAILED, f"the server has no file at {url!r}")
        tmp = dest + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
        if progress:
            progress(len(data), len(data))

    # -- Transport: rich messages (the server's `_rich` part) -------------------------------

    async def send_reaction(self, message: Message, key: str) -> str:
        await self._online()
        return self.server.rich.react(self.user_id, message.msg_id, key, self)

    async def remove_reaction(self, message: Message, reaction_id: str) -> None:
        await self._online()
        self.server.rich.unreact(self.user_id, message.msg_id, reaction_id, self)

    async def pin_message(self, message: Message, pinned: bool) -> int:
        await self._online()
        return self.server.rich.pin(self.user_id, message.msg_id, pinned, self)

    async def pin_conversation(self, conv_id: str, chat_type: ChatType, pinned: bool
                               ) -> int | None:
        await self._online()
        return self.server.rich.pin_conversation(self.user_id, conv_id, ChatType(chat_type),
                                                 pinned, self)

    async def set_conversation_marks(self, conv_id: str, chat_type: ChatType,
                                     add: Sequence[str], remove: Sequence[str]
                                     ) -> frozenset[str]:
        await self._online()
        return self.server.rich.set_marks(self.user_id, conv_id, ChatType(chat_type),
                                          list(add), list(remove), self)
