"""Sending: messages out, their uploads, resends, and the changes a sender may make afterwards
(recall, edit).

Rules kept here:
- a send validates first and writes nothing when the message is bad; then the message is stored
  as INPROGRESS (a CMD is only announced) and queued behind the earlier sends of its conversation
  (`SendQueue`), so sends leave in the order of the calls;
- every step (uploads, then the send) passes the connection gate with one wait budget per send;
  a send that got no answer is retried once after re-making the connection, then fails with 300
  (the gate's table);
- every status change moves along the lifecycle's table (`lifecycle.SEND_TRANSITIONS`), is stored
  and is told to the listeners; a failed send is stored FAIL and may be resent with its local id;
- what an attachment uploads is its file (unless it has a remote url) and, for the kinds with a
  thumbnail (`kinds.Kind.thumbnail`), a local thumbnail without a url;
- receipts that arrived before the server's answer (kept in the store) are announced with it;
- a reply or thread reply goes out naming its root by the server's id once the root was sent
  from here, even when it was made with the root's local id (`_name_sent_roots`);
- who may recall and edit what is the lifecycle's (`check_recall`, `check_edit`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Awaitable

from ..adapters import ProgressFn, SendResult, Transport, transport_method
from ..codec import validate_message
from ..errors import ErrorCode, IMError
from ..kinds import kind_of
from ..lifecycle import (
    DownloadEvent,
    ReceiptKind,
    SendEvent,
    check_edit,
    check_recall,
    check_resend,
    download_move,
    next_status,
)
from ..message import (
    Body,
    FileBody,
    Message,
    MessageStatus,
    MessageType,
    ThumbnailedBody,
    conversation_id,
)
from ..store import MessageStore
from ._gate import STEP_OUTCOMES, ConnectionGate, Outcome, Step, WaitBudget, call
from ._listeners import Listeners
from ._settings import Settings
from ._units import SendQueue, Units

__all__ = ["Sender"]

log = logging.getLogger("imstore.client")


def _thumbnail_to_upload(msg: Message) -> bool:
    body = msg.body
    return (kind_of(msg.type).thumbnail and isinstance(body, ThumbnailedBody)
            and bool(body.thumbnail_path) and not body.thumbnail_url)


class Sender:
    """Sends of one client."""

    def __init__(self, store: MessageStore, gate: ConnectionGate, units: Units,
                 listeners: Listeners, settings: Settings) -> None:
        self._store = store
        self._gate = gate
        self._units = units
        self._queue = SendQueue(units)
        self._listeners = listeners
        self._settings = settings

    def _move(self, msg: Message, event: SendEvent) -> None:
        """Move ``msg`` along the send table; stored (not a CMD) and announced."""
        status = next_status(msg.status, event)
        if msg.type != MessageType.CMD:
            self._store.set_status(msg.msg_id, status)
        msg.status = status
        self._listeners.emit("on_message_status_changed", msg, status)

    async def send(self, msg: Message, progress: ProgressFn | None) -> Message:
        transport = self._gate.transport()
        need_file = isinstance(msg.body, FileBody) and not msg.body.remote_url
        validate_message(msg, self._store.limits, need_file=need_file)
        # a new send starts at CREATE, whatever status the object carries (it is not stored yet)
        status = next_status(MessageStatus.CREATE, SendEvent.SEND)
        if msg.type == MessageType.CMD:
            if msg.sender is None:
                msg.sender = self._store.user_id
            msg.conv_id = conversation_id(msg.chat_type, msg.to, msg.sender, self._store.user_id)
            msg.status = status
        else:
            msg.status = status
            self._name_sent_roots(msg)
            self._store.insert_message(msg)
        self._listeners.emit("on_message_status_changed", msg, status)
        return await self._deliver(transport, msg, progress)

    def _name_sent_roots(self, msg: Message) -> None:
        """``reply_to`` and ``thread_id`` name the server's id of a message sent from here when
        they name it by its local id (peers and other clients know only the server's; the
        store renames them in stored replies when the root's send succeeds, `mark_sent`)."""
        for name in ("reply_to", "thread_id"):
            ref = getattr(msg, name)
            if ref is not None:
                root = self._store.get_message(ref)
                if root is not None and root.msg_id != ref and root.local_id == ref:
                    setattr(msg, name, root.msg_id)

    async def resend(self, msg_id: str, progress: ProgressFn | None) -> Message:
        transport = self._gate.transport()
        msg = self._store.get_message(msg_id)
        if msg is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
        check_resend(msg)
        self._move(msg, SendEvent.SEND)
        return await self._deliver(transport, msg, progress)

    async def _deliver(self, transport: Transport, msg: Message,
                       progress: ProgressFn | None) -> Message:
        async with self._units.send_unit():
            try:
                return await self._queue.in_order(
                    msg.conv_id or msg.to, lambda: self._transmit(transport, msg, progress))
            except BaseException:
                with contextlib.suppress(IMError):  # a send that already ended keeps its status
                    self._move(msg, SendEvent.FAIL)
                raise

    async def _transmit(self, transport: Transport, msg: Message,
                        progress: ProgressFn | None) -> Message:
        budget = WaitBudget(self._settings.reconnect_wait)
        body = msg.body
        if isinstance(body, FileBody) and (not body.remote_url or _thumbnail_to_upload(msg)):
            await self._upload(transport, msg, body, progress, budget)
        self._name_sent_roots(msg)  # a root sent while this message waited its turn
        result = await self._send_with_retry(transport, msg, budget)
        if msg.type == MessageType.CMD:
            msg.msg_id, msg.server_time = result.msg_id, result.server_time
            self._move(msg, SendEvent.ACCEPT)
            return msg
        local_id = msg.msg_id
        stored, early = self._store.mark_sent(local_id, result.msg_id, result.server_time)
        msg.msg_id, msg.server_time, msg.status = stored.msg_id, stored.server_time, stored.status
        if stored.msg_id != local_id:
            msg.local_id = stored.local_id or local_id
        msg.is_delivered, msg.is_read_acked = stored.is_delivered, stored.is_read_acked
        msg.group_ack_count = stored.group_ack_count
        self._listeners.emit("on_message_status_changed", msg, stored.status)
        # receipts that came in before the server's answer
        if ReceiptKind.DELIVERED in early:
            self._listeners.emit("on_messages_delivered", [stored])
        if ReceiptKind.READ in early:
            self._listeners.emit("on_messages_read", [stored])
        acks = self._store.group_read_acks(stored.msg_id) if stored.group_ack_count else []
        if acks:
            self._listeners.emit("on_group_message_read", acks)
        return msg

    async def _upload(self, transport: Transport, msg: Message, body: FileBody,
                      progress: ProgressFn | None, budget: WaitBudget) -> None:
        upload = transport_method(transport, "upload")
        timeout = self._settings.transfer_timeout
        if not body.remote_url:
            remote = await self._gate.transfer(
                lambda: upload(body.local_path, progress=progress), timeout, budget,
                ErrorCode.FILE_UPLOAD_FAILED)
            body.remote_url = remote.url
            body.secret = remote.secret or ""
            if (isinstance(body, ThumbnailedBody) and remote.thumbnail_url
                    and not body.thumbnail_url and not body.thumbnail_path):
                body.thumbnail_url = remote.thumbnail_url  # the server made one
            body.download_status = download_move(body.download_status, DownloadEvent.HAVE)
        if _thumbnail_to_upload(msg):
            assert isinstance(body, ThumbnailedBody)
            thumb = await self._gate.transfer(lambda: upload(body.thumbnail_path), timeout,
                                              budget, ErrorCode.FILE_UPLOAD_FAILED)
            body.thumbnail_url = thumb.url
            body.thumbnail_status = download_move(body.thumbnail_status, DownloadEvent.HAVE)
        if msg.type != MessageType.CMD:
            self._store.update_message(msg)

    async def _send_with_retry(self, transport: Transport, msg: Message,
                               budget: WaitBudget) -> SendResult:
        def send() -> Awaitable[SendResult]:
            return transport.send(msg)

        timeout = self._settings.send_timeout
        try:
            return await self._gate.run(send, timeout, budget)
        except TimeoutError:
            assert STEP_OUTCOMES[Step.NO_ANSWER] is Outcome.RECONNECT_RETRY
            log.info("send of %s timed out; reconnecting and trying once more", msg.msg_id)
        try:
            reconnect = getattr(transport, "reconnect", None)
            if callable(reconnect):
                await self._gate.run(lambda: call(reconnect()), timeout, budget)
            return await self._gate.run(send, timeout, budget)
        except (TimeoutError, IMError) as exc:
            assert STEP_OUTCOMES[Step.NO_ANSWER_AGAIN] is Outcome.FAIL_300
            raise IMError(ErrorCode.SERVER_NOT_REACHABLE,
                          "the server did not answer, before or after reconnecting; the message "
                          "is FAIL: resend it later") from exc

    # ------------------------------------------------------------------------- recall, edit

    def _stored(self, msg_id: str) -> Message:
        msg = self._store.get_message(msg_id)
        if msg is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
        return msg

    async def recall(self, msg_id: str) -> Message:
        msg = self._stored(msg_id)
        check_recall(msg)
        recall = self._gate.method("recall_message")
        recalled_at: int = await self._gate.request(lambda: recall(msg),
                                                    self._settings.send_timeout)
        changed = self._store.apply_recall([msg.msg_id], recalled_at)
        if changed:
            self._listeners.emit("on_messages_recalled", changed)
        return self._stored(msg.msg_id)

    async def edit(self, msg_id: str, body: Body) -> Message:
        msg = self._stored(msg_id)
        check_edit(msg, body)
        assert kind_of(msg.type).editable
        validate_message(dataclasses.replace(msg, body=body), self._store.limits)
        edit = self._gate.method("edit_message")
        edited_at: int = await self._gate.request(lambda: edit(msg, body),
                                                  self._settings.send_timeout)
        changed = self._store.apply_edit(msg.msg_id, body, edited_at)
        if changed is not None:
            self._listeners.emit("on_messages_edited", [changed])
        return self._stored(msg.msg_id)
