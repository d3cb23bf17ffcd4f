"""ChatClient: the server side of the store — sending, receiving, receipts, history, attachments.

Rules kept here:
- the client orchestrates; it talks to servers only through the adapters and to the database only
  through `MessageStore` (never SQL);
- a send validates first and writes nothing when the message is bad; then the message is stored
  as INPROGRESS (a CMD is only announced) and queued behind the earlier sends of its conversation,
  so sends leave in the order of the calls; each network step waits through RECONNECTING and is
  retried after a drop with the same local id; 510 only when DISCONNECTED; a time-out gets one
  reconnect and one more try, then 300; every status change is stored and told to the listeners
  (the send path is one section below, "sending");
- what arrives (messages, receipts, recalls, edits) is stored before listeners hear of it;
  receipts that arrive twice or early are harmless (kept until their message is there, announced
  when it is, pruned when it never comes);
- receipts that go out wait through RECONNECTING like messages; one-to-one receipts are for
  one-to-one messages only, group receipts never come from the sender;
- history fetched with ``save=True`` is merged without duplicates: a local FAIL copy of a send
  that reached the server becomes the server's copy, recalls and edits are applied.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from .adapters import (
    ConnectionState,
    ProgressFn,
    SendResult,
    SyncAdapter,
    Transport,
    check_page_size,
    is_transport,
    transport_method,
)
from .codec import validate_message
from .errors import ErrorCode, IMError
from .kinds import kind_of
from .message import (
    Body,
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
    now_ms,
)
from .store import RECEIPT_DELIVERED, RECEIPT_READ, Gap, MergeResult, MessageStore, Span

__all__ = ["ChatClient", "MessageListener", "MessagePage", "safe_file_name"]

log = logging.getLogger("imstore.client")
T = TypeVar("T")

# True inside the client's own units of work (a send, a background receipt or download): what
# `wait_idle` waits for, and what it counts as parked while it waits for the connection.
_UNIT: contextvars.ContextVar[bool] = contextvars.ContextVar("imstore_client_unit", default=False)

PENDING_RECEIPT_TTL_MS = 3 * 86_400_000
"""Receipts for messages this store does not have are kept this long (the shortest retention
plan), waiting for their message; older ones are pruned when the connection comes back."""


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

    def on_messages_recalled(self, messages: list[Message]) -> None:
        """Messages were recalled (by this user or their sender): each is now a recall notice,
        with ``recalled_at`` and a blank body."""

    def on_messages_edited(self, messages: list[Message]) -> None:
        """Messages were edited: each has its new body and ``edited_at``."""


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def safe_file_name(name: str, fallback: str = "file") -> str:
    """A file name that cannot leave its directory: no separators, no ``..``, no NUL bytes."""
    base = name.replace("\\", "/").split("/")[-1]
    base = _UNSAFE.sub("_", base).strip().lstrip(".")
    return base[:120] or fallback


class _Dropped(Exception):
    """The connection left CONNECTED while a step was in flight."""


class _WaitBudget:
    """How long one send may still wait for RECONNECTING to end, across all its steps."""

    __slots__ = ("deadline", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline: float | None = None

    def left(self, now: float) -> float:
        if self.deadline is None:
            self.deadline = now + self.seconds
        return self.deadline - now


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` accepts a keyword argument ``name`` (older transports may not)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


_OFFLINE = frozenset({ErrorCode.NETWORK_ERROR, ErrorCode.SERVER_NOT_REACHABLE,
                      ErrorCode.SERVER_TIMEOUT, ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED})


class MessagePage(list[Message]):
    """A page of messages from `ChatClient.load_messages`, oldest first. ``complete`` is False
    when the server could not be reached and the page holds only what is local."""

    def __init__(self, messages: Sequence[Message] = (), *, complete: bool = True) -> None:
        super().__init__(messages)
        self.complete = complete


class ChatClient:
    """Connects a `MessageStore` to a server through a `SyncAdapter` and a `Transport`.

    Args:
        store: the local store.
        adapter: the server's history API.
        transport: real-time delivery; when None, ``adapter`` is used if it has ``attach`` and
            ``send`` (optional transport methods it lacks raise `IMError(SERVICE_NOT_ENABLED)`
            when a feature needs them).
        send_timeout: seconds to wait for the server's answer to a send (and to a receipt).
        reconnect_wait: the longest, in seconds, one send (uploads included) waits in all for a
            RECONNECTING connection to come back before failing with 300; None (the default)
            means three times ``send_timeout``.
        transfer_timeout: seconds an upload or a download may take before failing with 402 / 403.
        require_delivery_ack: send delivery receipts for one-to-one messages received.
        require_read_ack: send read receipts when messages are marked read here.
        auto_download: download thumbnails of images and videos and the audio of voice messages
            as they arrive.
        download_dir: where attachments land (default: ``files/`` in the store's directory, or a
            temporary directory for an in-memory store).
    """

    def __init__(self, store: MessageStore, adapter: SyncAdapter, *,
                 transport: Transport | None = None, send_timeout: float = 10.0,
                 reconnect_wait: float | None = None, transfer_timeout: float = 300.0,
                 require_delivery_ack: bool = True, require_read_ack: bool = True,
                 auto_download: bool = True, download_dir: str | None = None) -> None:
        if reconnect_wait is None:
            reconnect_wait = 3 * send_timeout
        for name, value in (("send_timeout", send_timeout), ("reconnect_wait", reconnect_wait),
                            ("transfer_timeout", transfer_timeout)):
            if not value > 0:
                raise IMError(ErrorCode.INVALID_PARAM, f"{name} must be positive, not {value!r}")
        self.store = store
        self.adapter = adapter
        if transport is None and is_transport(adapter):
            transport = adapter  # type: ignore[assignment]
        elif transport is not None and not is_transport(transport):
            raise IMError(ErrorCode.INVALID_PARAM,
                          "transport= needs an object with attach() and send()")
        self.transport = transport
        self.send_timeout = send_timeout
        self.reconnect_wait = reconnect_wait
        self.transfer_timeout = transfer_timeout
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
        self._tails: dict[str, asyncio.Future[None]] = {}  # per conversation: the last send queued
        self._active: set[asyncio.Future[None]] = set()  # one per send under way
        self._parks: set[asyncio.Future[Any]] = set()  # what parked units wait for
        self._pokes: list[asyncio.Future[None]] = []  # wait_idle, woken when a unit parks
        self._waiters: list[asyncio.Future[None]] = []  # woken at the next state change
        self._generation = 0  # counts state changes
        self._early_group_acks: dict[str, list[GroupReadAck]] = {}
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
        """Wait until the client is idle: every send under way, receipt going out and automatic
        download is done, or waits for the connection to come back (RECONNECTING: then it
        returns with those parked, and a later call after the reconnection waits for them).
        Tests use it instead of sleeping; it is part of the public testing contract."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let work scheduled just now (a send's task) begin
        while True:
            while self._deferred:
                self._start(loop, self._deferred.pop(0))
            pending: list[asyncio.Future[Any]] = [t for t in self._tasks
                                                  if not t.done() and t.get_loop() is loop]
            pending += [f for f in self._active if not f.done() and f.get_loop() is loop]
            parked = sum(1 for f in self._parks if not f.done())
            if len(pending) <= parked:
                return
            poke: asyncio.Future[None] = loop.create_future()
            self._pokes.append(poke)
            try:
                await asyncio.wait([*pending, poke], return_when=asyncio.FIRST_COMPLETED)
            finally:
                poke.cancel()
                if poke in self._pokes:
                    self._pokes.remove(poke)

    async def _park(self, fut: asyncio.Future[T], timeout: float | None = None) -> T:
        """Await what a unit of work waits on that only the outside world can move (the
        connection, or an earlier send that waits for it): `wait_idle` counts it as parked."""
        if not _UNIT.get():
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        self._parks.add(fut)
        pokes, self._pokes = self._pokes, []
        for poke in pokes:
            if not poke.done():
                poke.set_result(None)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            self._parks.discard(fut)

    def _need_transport(self) -> Transport:
        if self.transport is None:
            raise IMError(ErrorCode.SERVICE_NOT_ENABLED,
                          "this client has no transport; pass transport= to ChatClient")
        return self.transport

    def _method(self, name: str) -> Any:
        """The transport's optional method ``name``, or SERVICE_NOT_ENABLED naming it."""
        return transport_method(self._need_transport(), name)

    async def _request(self, make: Callable[[], Awaitable[T]]) -> T:
        """A request to the transport (a receipt, a recall, an edit): it waits through
        RECONNECTING like a send, and must be answered within ``send_timeout``."""
        try:
            return await self._connected(self._need_transport(), make, self.send_timeout, None)
        except TimeoutError as exc:
            raise IMError(ErrorCode.SERVER_TIMEOUT, "the server did not answer in time; "
                                                    "try again") from exc

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
    #
    # The send path, one place for its rules:
    # - a message is validated, stored INPROGRESS (CMD: only announced), then queued behind the
    #   earlier sends of its conversation: uploads and sends leave in the order of the calls;
    # - each network step waits while the state is RECONNECTING (at most `reconnect_wait` in all
    #   per send), and a step the connection drops under (510 from the transport, or the state
    #   leaving CONNECTED) is retried after the reconnection, with the same local id;
    # - 510 only when the state is DISCONNECTED; a send time-out gets one reconnect and one more
    #   try, then 300; every status change is stored and told to the listeners.

    def _set_status(self, msg: Message, status: MessageStatus) -> None:
        msg.status = status
        if msg.type != MessageType.CMD:
            self.store.set_status(msg.msg_id, status)
        self._emit("on_message_status_changed", msg, status)

    async def send_message(self, msg: Message, *, progress: ProgressFn | None = None) -> Message:
        """Send a message; returns it with the server's id and time and status SUCCESS.
        ``progress(done, total)`` hears how the attachment's upload goes.

        Sends of one conversation leave in the order of the calls. While the connection is
        RECONNECTING the message (and its upload) waits and goes out after the reconnection.

        Raises `IMError`: the codec's codes for a bad message (nothing is stored), 402 when an
        upload fails or outlasts ``transfer_timeout``, 510 when the connection is down and not
        reconnecting, 300 when the server did not answer twice (once before and once after
        reconnecting) or the connection stayed RECONNECTING longer than ``reconnect_wait``,
        500 when the server's id for it is already another conversation's. On failure the stored
        message is FAIL; `resend_message` tries again.
        """
        transport = self._need_transport()
        validate_message(msg, self.store.limits, need_file=self._needs_upload(msg))
        if msg.type == MessageType.CMD:
            if msg.sender is None:
                msg.sender = self.store.user_id
            msg.conv_id = conversation_id(msg.chat_type, msg.to, msg.sender, self.store.user_id)
            msg.status = MessageStatus.INPROGRESS
            self._emit("on_message_status_changed", msg, MessageStatus.INPROGRESS)
            return await self._deliver(transport, msg, progress)
        msg.status = MessageStatus.INPROGRESS
        self.store.insert_message(msg)
        self._emit("on_message_status_changed", msg, MessageStatus.INPROGRESS)
        return await self._deliver(transport, msg, progress)

    async def resend_message(self, msg_id: str, *, progress: ProgressFn | None = None) -> Message:
        """Send again a message that failed (it keeps its local id, so a server that did get it
        the first time answers with the first result and delivers it once)."""
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

    @staticmethod
    def _has_uploads(msg: Message) -> bool:
        body = msg.body
        return isinstance(body, FileBody) and (
            not body.remote_url
            or (isinstance(body, VideoBody) and bool(body.thumbnail_path)
                and not body.thumbnail_url))

    async def _in_order(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` after every earlier call with the same ``key`` has finished (FIFO)."""
        loop = asyncio.get_running_loop()
        prev = self._tails.get(key)
        mine: asyncio.Future[None] = loop.create_future()
        self._tails[key] = mine

        def release(_: object = None) -> None:
            if not mine.done():
                mine.set_result(None)
            if self._tails.get(key) is mine:
                del self._tails[key]

        try:
            if prev is not None and not prev.done() and prev.get_loop() is loop:
                await self._park(prev)
            return await work()
        finally:
            # A caller cancelled while still queued must not let later sends overtake the
            # earlier ones: the queue moves on only once its predecessor is done too.
            if prev is not None and not prev.done() and prev.get_loop() is loop:
                prev.add_done_callback(release)
            else:
                release()

    async def _deliver(self, transport: Transport, msg: Message,
                       progress: ProgressFn | None = None) -> Message:
        key = msg.conv_id or msg.to
        active: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._active.add(active)
        token = _UNIT.set(True)
        try:
            return await self._in_order(key, lambda: self._transmit(transport, msg, progress))
        except BaseException:
            self._set_status(msg, MessageStatus.FAIL)
            raise
        finally:
            _UNIT.reset(token)
            active.set_result(None)
            self._active.discard(active)

    async def _transmit(self, transport: Transport, msg: Message,
                        progress: ProgressFn | None) -> Message:
        budget = _WaitBudget(self.reconnect_wait)
        if self._has_uploads(msg):
            await self._upload(transport, msg, progress, budget)
        result = await self._send_with_retry(transport, msg, budget)
        if msg.type == MessageType.CMD:
            msg.msg_id, msg.server_time = result.msg_id, result.server_time
            msg.status = MessageStatus.SUCCESS
            self._emit("on_message_status_changed", msg, MessageStatus.SUCCESS)
            return msg
        local_id = msg.msg_id
        stored, early = self.store.mark_sent(local_id, result.msg_id, result.server_time)
        msg.msg_id, msg.server_time, msg.status = stored.msg_id, stored.server_time, stored.status
        if stored.msg_id != local_id:
            msg.local_id = stored.local_id or local_id
        msg.is_delivered, msg.is_read_acked = stored.is_delivered, stored.is_read_acked
        msg.group_ack_count = stored.group_ack_count
        self._emit("on_message_status_changed", msg, MessageStatus.SUCCESS)
        # receipts that came in before the server's answer
        if RECEIPT_DELIVERED in early:
            self._emit("on_messages_delivered", [stored])
        if RECEIPT_READ in early:
            self._emit("on_messages_read", [stored])
        acks = self._early_group_acks.pop(stored.msg_id, None)
        if acks and stored.group_ack_count:
            self._emit("on_group_message_read", acks)
        return msg

    async def _upload(self, transport: Transport, msg: Message, progress: ProgressFn | None,
                      budget: _WaitBudget) -> None:
        body = msg.body
        assert isinstance(body, FileBody)
        upload = transport_method(transport, "upload")
        if not body.remote_url:
            remote = await self._transfer(
                transport, lambda: upload(body.local_path, progress=progress), budget,
                ErrorCode.FILE_UPLOAD_FAILED)
            body.remote_url = remote.url
            body.secret = remote.secret or ""
            if isinstance(body, ImageBody) and remote.thumbnail_url and not body.thumbnail_url:
                body.thumbnail_url = remote.thumbnail_url
            body.download_status = DownloadStatus.SUCCEEDED
        if isinstance(body, VideoBody) and body.thumbnail_path and not body.thumbnail_url:
            thumb = await self._transfer(transport, lambda: upload(body.thumbnail_path), budget,
                                         ErrorCode.FILE_UPLOAD_FAILED)
            body.thumbnail_url = thumb.url
            body.thumbnail_status = DownloadStatus.SUCCEEDED
        if msg.type != MessageType.CMD:
            self.store.update_message(msg)

    async def _transfer(self, transport: Transport, make: Callable[[], Awaitable[T]],
                        budget: _WaitBudget | None, code: ErrorCode) -> T:
        """An upload or a download: waits through RECONNECTING, at most ``transfer_timeout``."""
        try:
            return await self._connected(transport, make, self.transfer_timeout, budget)
        except TimeoutError as exc:
            raise IMError(code, f"the transfer did not finish within transfer_timeout="
                                f"{self.transfer_timeout} s; try again") from exc

    async def _send_with_retry(self, transport: Transport, msg: Message,
                               budget: _WaitBudget) -> SendResult:
        def send() -> Awaitable[SendResult]:
            return transport.send(msg)

        try:
            return await self._connected(transport, send, self.send_timeout, budget)
        except TimeoutError:
            log.info("send of %s timed out; reconnecting and trying once more", msg.msg_id)
        try:
            reconnect = getattr(transport, "reconnect", None)
            if callable(reconnect):
                await asyncio.wait_for(self._call(reconnect()), self.send_timeout)
            return await self._connected(transport, send, self.send_timeout, budget)
        except (TimeoutError, IMError) as exc:
            raise IMError(ErrorCode.SERVER_NOT_REACHABLE,
                          "the server did not answer, before or after reconnecting; the message "
                          "is FAIL: resend it later") from exc

    # -- waiting through RECONNECTING ---------------------------------------------------------

    def _state(self) -> ConnectionState:
        state = getattr(self.transport, "state", ConnectionState.CONNECTED)
        return ConnectionState(state)

    def _state_waiter(self) -> asyncio.Future[None]:
        """A future that completes at the next connection state change."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    async def _wait_connected(self, budget: _WaitBudget | None) -> None:
        """Return once the state is CONNECTED; 510 when it is DISCONNECTED, 300 when it stays
        RECONNECTING past the budget."""
        loop = asyncio.get_running_loop()
        while (state := self._state()) == ConnectionState.RECONNECTING:
            if budget is None:
                budget = _WaitBudget(self.reconnect_wait)
            left = budget.left(loop.time())
            if left <= 0:
                raise IMError(ErrorCode.SERVER_NOT_REACHABLE,
                              f"the connection did not come back within reconnect_wait="
                              f"{self.reconnect_wait} s; try again later")
            waiter = self._state_waiter()
            try:
                await self._park(waiter, left)
            except TimeoutError:
                waiter.cancel()
                continue
        if state == ConnectionState.DISCONNECTED:
            raise IMError(ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED,
                          "the connection is down and not reconnecting; reconnect, then try again")

    async def _connected(self, transport: Transport, make: Callable[[], Awaitable[T]],
                         timeout: float, budget: _WaitBudget | None) -> T:
        """Run one network step once the connection is up; a step that the connection drops
        under is run again after the reconnection. Raises TimeoutError after ``timeout``."""
        while True:
            await self._wait_connected(budget)
            generation = self._generation
            try:
                return await self._race(make, timeout)
            except _Dropped:
                continue
            except IMError as exc:
                if exc.code != ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED:
                    raise
                if self._state() == ConnectionState.CONNECTED and self._generation == generation:
                    await asyncio.sleep(0)  # a transport may report the drop just after raising
                if self._state() == ConnectionState.CONNECTED and self._generation == generation:
                    # "down", yet the connection says it never was: 510 is for DISCONNECTED only,
                    # so this counts as a step that got no answer (a send: reconnect, retry, 300)
                    raise TimeoutError("the transport raised 510 while CONNECTED") from exc
                continue

    async def _race(self, make: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Await one step; stop it with `_Dropped` when the state leaves CONNECTED meanwhile."""
        loop = asyncio.get_running_loop()
        async def step() -> T:  # the coroutine is made inside the task: never left unawaited
            return await self._call(make())

        task: asyncio.Future[T] = asyncio.ensure_future(step())
        deadline = loop.time() + timeout
        try:
            while True:
                waiter = self._state_waiter()
                left = deadline - loop.time()
                both: set[asyncio.Future[Any]] = {task, waiter}
                done, _ = await asyncio.wait(both, timeout=max(left, 0),
                                             return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if task in done:
                    return task.result()
                if not done:
                    raise TimeoutError
                if self._state() != ConnectionState.CONNECTED:
                    raise _Dropped
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------------ transport handler

    def on_messages(self, messages: list[Message]) -> None:
        cmds = [m for m in messages if m.type == MessageType.CMD]
        others = [m for m in messages if m.type != MessageType.CMD]
        if cmds:
            self._emit("on_cmd_messages_received", cmds)
        if not others:
            return
        self._arrived(self.store.merge_received(others).new)

    def _arrived(self, new: Sequence[Message]) -> None:
        """Received messages stored for the first time, by whichever path brought them (live,
        offline queue, conversation list, history): acknowledged as delivered, their automatic
        downloads started, announced once. Messages deleted here (tombstones) never get here."""
        new = [m for m in new if m.direction == Direction.RECEIVE]
        for m in new:
            if self.require_delivery_ack and m.chat_type == ChatType.CHAT and self.transport:
                self._spawn(lambda m=m: self._send_delivery_ack(m))  # type: ignore[misc]
            if self.auto_download and isinstance(m.body, FileBody):
                if isinstance(m.body, ImageBody | VideoBody) and m.body.thumbnail_url:
                    self._spawn(lambda i=m.msg_id: self.download_thumbnail(i))  # type: ignore[misc]
                if m.type == MessageType.VOICE:
                    self._spawn(lambda i=m.msg_id: self.download_attachment(i))  # type: ignore[misc]
        if new:
            self._emit("on_messages_received", new)

    async def _send_delivery_ack(self, msg: Message) -> None:
        send = self._method("send_delivery_ack")
        await self._request(lambda: send(msg))

    @staticmethod
    async def _quiet(coro: Awaitable[Any]) -> None:
        _UNIT.set(True)  # the task's own context: a background unit of work
        try:
            await coro
        except IMError as exc:
            log.warning("background work failed: %s", exc)

    def _receipts(self, kind: int, msg_ids: list[str], event: str) -> None:
        # One-to-one receipts only: a group message is read-acked by group receipts.
        ids = [i for i in msg_ids
               if (m := self.store.get_message(i)) is None or m.chat_type == ChatType.CHAT]
        changed = self.store.apply_receipts(kind, ids)
        msgs = [m for m in (self.store.get_message(i) for i in changed) if m is not None]
        if msgs:
            self._emit(event, msgs)

    def on_delivery_acks(self, msg_ids: list[str]) -> None:
        self._receipts(RECEIPT_DELIVERED, msg_ids, "on_messages_delivered")

    def on_read_acks(self, msg_ids: list[str]) -> None:
        self._receipts(RECEIPT_READ, msg_ids, "on_messages_read")

    def on_conversation_read(self, conv_id: str, reader: str, up_to: int | None = None) -> None:
        self.store.mark_conversation_read_acked(conv_id, up_to)
        self._emit("on_conversation_read", conv_id, reader)

    def on_group_read_acks(self, acks: list[GroupReadAck]) -> None:
        acks = [a for a in acks if a.reader != self.store.user_id]  # never count the sender
        if not acks:
            return
        changed = self.store.add_group_acks(acks)
        heard = [a for a in acks if a.msg_id in changed]
        for a in acks:
            if a.msg_id not in changed and self.store.get_message(a.msg_id) is None:
                # early: announced once the send's answer makes the message known
                self._early_group_acks.setdefault(a.msg_id, []).append(a)
        if heard:
            self._emit("on_group_message_read", heard)

    def on_messages_recalled(self, msg_ids: list[str]) -> None:
        changed = self.store.apply_recall(list(msg_ids), now_ms())
        if changed:
            self._emit("on_messages_recalled", changed)

    def on_messages_edited(self, messages: list[Message]) -> None:
        changed = [m for m in (self.store.apply_edit(e.msg_id, e.body, e.edited_at or now_ms())
                               for e in messages) if m is not None]
        if changed:
            self._emit("on_messages_edited", changed)

    def on_connection_state_changed(self, state: ConnectionState) -> None:
        self._generation += 1
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done() and not fut.get_loop().is_closed():
                fut.set_result(None)
        if state == ConnectionState.CONNECTED:
            self.prune_pending_receipts()
        self._emit("on_connection_state_changed", state)

    def prune_pending_receipts(self, older_than_ms: int = PENDING_RECEIPT_TTL_MS) -> None:
        """Forget receipts (group ones included) kept for messages that never arrived, once
        they are older than ``older_than_ms``. Runs at every reconnection."""
        cutoff = now_ms() - older_than_ms
        for msg_id in [i for i, acks in self._early_group_acks.items()
                       if max(a.timestamp for a in acks) < cutoff]:
            del self._early_group_acks[msg_id]
        self.store.prune_pending_receipts(older_than_ms)

    # ----------------------------------------------------------------------------- receipts

    def _stored(self, msg_id: str) -> Message:
        msg = self.store.get_message(msg_id)
        if msg is None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"no stored message has id {msg_id!r}")
        return msg

    async def ack_message_read(self, msg_id: str) -> None:
        """Mark a received one-to-one message read here and tell its sender (when read receipts
        are on). Group messages take `ack_group_message_read` (INVALID_PARAM here)."""
        msg = self._stored(msg_id)
        if msg.chat_type != ChatType.CHAT:
            raise IMError(ErrorCode.INVALID_PARAM,
                          "read receipts per message are for one-to-one chats; use "
                          "ack_group_message_read or store.mark_message_read for groups")
        self.store.mark_message_read(msg.msg_id)
        if self.require_read_ack and msg.direction == Direction.RECEIVE:
            send = self._method("send_read_ack")
            await self._request(lambda: send(msg))

    async def ack_conversation_read(self, conv_id: str, *,
                                    up_to_msg_id: str | None = None) -> None:
        """Mark a conversation read here, all of it or (``up_to_msg_id``) up to and including
        that message (Tencent's clean-up-to), and tell the server and the peer up to which
        message: the user's read position on the server moves there (never backwards)."""
        conv = self.store.conversation(conv_id)
        if conv is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST, f"there is no conversation {conv_id!r}")
        if up_to_msg_id is not None:
            last = self._stored(up_to_msg_id)
            stamped = [last.server_time] if last.server_time is not None else [
                m.server_time for m in self.store.messages(conv_id, start_msg_id=last.msg_id,
                                                           limit=20)
                if m.server_time is not None]
        else:
            # the position: the newest message here that the server stamped (not a local FAIL)
            stamped = [m.server_time for m in self.store.messages(conv_id, limit=20)
                       if m.server_time is not None]
        up_to = max(stamped, default=None)
        self.store.mark_conversation_read(conv_id, up_to_msg_id=up_to_msg_id)
        if not self.require_read_ack:
            return
        send = self._method("send_conversation_ack")
        if up_to is not None and _takes(send, "up_to"):
            await self._request(lambda: send(conv_id, conv.chat_type, up_to=up_to))
        else:
            await self._request(lambda: send(conv_id, conv.chat_type))

    async def ack_group_message_read(self, msg_id: str) -> None:
        """Read receipt for a group message someone else sent with ``need_group_ack``; it is
        marked read here either way, and the receipt goes out when ``require_read_ack``."""
        msg = self._stored(msg_id)
        if msg.chat_type != ChatType.GROUP_CHAT or not msg.need_group_ack:
            raise IMError(ErrorCode.INVALID_PARAM,
                          "group read receipts are for group messages sent with need_group_ack")
        if msg.direction == Direction.SEND:
            raise IMError(ErrorCode.INVALID_PARAM,
                          "the sender of a group message does not read-ack it")
        self.store.mark_message_read(msg.msg_id)
        if self.require_read_ack:
            send = self._method("send_group_read_ack")
            await self._request(lambda: send(msg))

    async def fetch_group_read_acks(self, msg_id: str, *, cursor: str | None = None,
                                    limit: int = 20) -> CursorResult[GroupReadAck]:
        """A page of a group message's readers; the stored ``group_ack_count`` follows them."""
        check_page_size(limit)
        fetch = self._method("fetch_group_read_acks")
        page: CursorResult[GroupReadAck] = await self._call(fetch(msg_id, cursor, limit))
        self.store.add_group_acks([a for a in page.items if a.reader != self.store.user_id])
        return page

    # ------------------------------------------------------------------------- recall, edit

    def _own_sent(self, msg_id: str) -> Message:
        msg = self._stored(msg_id)
        if msg.direction != Direction.SEND or msg.status != MessageStatus.SUCCESS:
            raise IMError(ErrorCode.INVALID_PARAM,
                          "only your own messages that the server has (SUCCESS) can be changed")
        return msg

    async def recall_message(self, msg_id: str) -> Message:
        """Recall one of your sent messages for every member (offline ones when they return):
        it becomes a recall notice (same id, type, sender and times; blank body; ``recalled_at``
        set) and leaves search. Returns the notice.

        Raises `IMError`: MESSAGE_EXPIRED past the server's recall window, INVALID_PARAM for a
        message that is not yours or not sent, SERVICE_NOT_ENABLED when the transport has no
        ``recall_message``.
        """
        msg = self._own_sent(msg_id)
        recall = self._method("recall_message")
        recalled_at: int = await self._request(lambda: recall(msg))
        changed = self.store.apply_recall([msg.msg_id], recalled_at)
        if changed:
            self._emit("on_messages_recalled", changed)
        return self._stored(msg.msg_id)

    async def edit_message(self, msg_id: str, body: Body) -> Message:
        """Replace the content of one of your sent TEXT or CUSTOM messages for every member;
        returns it with the new body and ``edited_at``. Search finds the new content only.

        Raises `IMError`: INVALID_PARAM for another type or a body of another type, the codec's
        codes for a body that breaks the limits, SERVICE_NOT_ENABLED when the transport has no
        ``edit_message``.
        """
        msg = self._own_sent(msg_id)
        if not kind_of(msg.type).editable or type(body) is not type(msg.body):
            raise IMError(ErrorCode.INVALID_PARAM,
                          "only TEXT and CUSTOM messages can be edited, with a body of their type")
        if msg.recalled_at is not None:
            raise IMError(ErrorCode.MESSAGE_INVALID, f"{msg_id!r} was recalled")
        validate_message(dataclasses.replace(msg, body=body), self.store.limits)
        edit = self._method("edit_message")
        edited_at: int = await self._request(lambda: edit(msg, body))
        changed = self.store.apply_edit(msg.msg_id, body, edited_at)
        if changed is not None:
            self._emit("on_messages_edited", [changed])
        return self._stored(msg.msg_id)

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
        download = self._method("download")
        try:
            await self._transfer(self._need_transport(),
                                 lambda: download(body.remote_url, dest, progress=progress), None,
                                 ErrorCode.FILE_DOWNLOAD_FAILED)
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
        download = self._method("download")
        try:
            await self._transfer(self._need_transport(),
                                 lambda: download(body.thumbnail_url, dest), None,
                                 ErrorCode.FILE_DOWNLOAD_FAILED)
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
        messages, unread when the server says the user has not read them, and announced like
        any message first seen); returns the local view of them. A conversation cleared on this
        device whose last message is one it deleted is not listed again."""
        check_page_size(limit)
        page = await self._call(self.adapter.fetch_conversations(cursor, limit))
        out = []
        for c in page.items:
            last = c.last_message
            if last is not None:
                t = last.server_time
                # the newest message: contiguous up to the live edge, when live delivery follows
                span = None if t is None else Span(c.conv_id, t, None if self.transport else t)
                result = self._merge_history([last], span)
                if result.suppressed and self.store.conversation(c.conv_id) is None:
                    continue
            out.append(self.store.save_conversation(c.conv_id, c.chat_type,
                                                    last_activity=c.last_activity))
        return CursorResult(out, page.cursor)

    async def fetch_history_messages(self, conv_id: str, chat_type: ChatType, *,
                                     cursor: str | None = None, limit: int = 20,
                                     options: FetchOptions | None = None
                                     ) -> CursorResult[Message]:
        """A page of a conversation's server history (oldest first within the page). With
        ``options.save`` the page is merged into the store in one transaction: no duplicates,
        local read state kept (a message the server says is read becomes read), a message new
        here unread when the server says the user has not read it (then announced, once),
        nothing deleted here brought back; an unfiltered page also records the stretch it
        proves contiguous with the server (`MessageStore.gaps`)."""
        check_page_size(limit)
        options = options or FetchOptions()
        page = await self._call(self.adapter.fetch_history(conv_id, ChatType(chat_type), cursor,
                                                           limit, options))
        if not options.save:
            return page
        span = None
        if options.types is None and options.sender is None:
            span = Span.of_page(conv_id, page.items, direction=options.direction,
                                cursor=page.cursor, first=cursor is None,
                                start_time=options.start_time, end_time=options.end_time)
        self._merge_history(page.items, span)
        items = [self.store.get_message(m.msg_id) or m for m in page.items]
        return CursorResult(items, page.cursor)

    async def load_messages(self, conv_id: str, chat_type: ChatType, *,
                            start_msg_id: str | None = None, limit: int = 20,
                            direction: Direction = Direction.UP) -> MessagePage:
        """What `MessageStore.messages` would return if the store held the whole conversation:
        the local page, with every gap in its way fetched from the server first (saved, so the
        gap closes; deleted messages stay out; read state as the server says, counted once).

        Returns a `MessagePage` (a list of messages, oldest first). When the server cannot be
        reached it holds what is local (`MessageStore.messages`) and its ``complete`` is False.
        """
        self.store.messages(conv_id, start_msg_id=start_msg_id, limit=limit,
                            direction=direction)  # checks the arguments
        chat_type = ChatType(chat_type)
        for _ in range(1000):  # each fetch closes the gap or moves its edge
            page = self.store.timeline(conv_id, start_msg_id=start_msg_id, limit=limit,
                                       direction=direction)
            if page.gap is None:
                return MessagePage(page.messages)
            try:
                await self._fill(conv_id, chat_type, page.gap, direction, limit)
            except IMError as exc:
                if exc.code not in _OFFLINE:
                    raise
                log.info("load_messages: %s; returning the local page", exc)
                return MessagePage(self.store.messages(conv_id, start_msg_id=start_msg_id,
                                                       limit=limit, direction=direction),
                                   complete=False)
        raise IMError(ErrorCode.SERVER_UNKNOWN_ERROR,
                      "the server's history does not close the gap; check its time filters")

    async def _fill(self, conv_id: str, chat_type: ChatType, gap: Gap, direction: Direction,
                    limit: int) -> None:
        """Fetch one page into a gap, from the side the reading comes from."""
        lo = None if gap.after_time is None else gap.after_time + 1
        hi = None if gap.before_time is None else gap.before_time - 1
        await self.fetch_history_messages(
            conv_id, chat_type, limit=min(50, max(limit, 20)),
            options=FetchOptions(direction=direction, start_time=lo, end_time=hi))

    def _merge_history(self, items: Sequence[Message], span: Span | None = None) -> MergeResult:
        """Merge server messages: one copy each (a local FAIL copy of a send that got through
        becomes the server's, SUCCESS); recalls and edits the stored copies missed applied;
        received messages new here and unread announced (`_arrived`)."""
        for m in items:
            if m.local_id and m.direction == Direction.SEND and m.local_id != m.msg_id:
                local = self.store.get_message(m.local_id)
                if (local is not None and local.msg_id == m.local_id
                        and local.status in (MessageStatus.FAIL, MessageStatus.CREATE)):
                    try:
                        stored, _ = self.store.mark_sent(m.local_id, m.msg_id,
                                                         m.server_time or 0)
                    except IMError as exc:  # the server's id is another message's: keep both
                        log.warning("history: %s stays apart: %s", m.local_id, exc)
                        continue
                    self._emit("on_message_status_changed", stored, MessageStatus.SUCCESS)
        known: dict[str, Message] = {}
        for m in items:
            if m.recalled_at is not None or m.edited_at is not None:
                here = self.store.get_message(m.msg_id)
                if here is not None:
                    known[m.msg_id] = here
        if span is not None and self.transport is None and span.end is None:
            # no live delivery follows: the page reaches only its newest message
            times = [m.server_time for m in items if m.server_time is not None]
            span = Span(span.conv_id, span.start, max(times), span.older_cursor) if times else None
        result = self.store.merge_history(items, span=span)
        self._arrived([m for m in result.new if not m.is_read])
        for m in items:
            here = known.get(m.msg_id)
            if here is None:
                continue
            if m.recalled_at is not None and here.recalled_at is None:
                done = self.store.apply_recall([m.msg_id], m.recalled_at)
                if done:
                    self._emit("on_messages_recalled", done)
            elif m.recalled_at is None and (m.edited_at or 0) > (here.edited_at or 0):
                edited = self.store.apply_edit(m.msg_id, m.body, m.edited_at or 0)
                if edited is not None:
                    self._emit("on_messages_edited", [edited])
        return result

    async def remove_messages_from_server(self, conv_id: str, chat_type: ChatType, *,
                                          msg_ids: Sequence[str] | None = None,
                                          before: int | None = None) -> int:
        """Delete messages from this user's server history (other members keep them) and from
        the store: by ids, or every message older than ``before`` (ms). Returns how many were
        removed locally."""
        if (msg_ids is None) == (before is None):
            raise IMError(ErrorCode.INVALID_PARAM, "give either msg_ids or before")
        server_ids = None
        if msg_ids is not None:  # local ids become the server's ids of what was sent
            server_ids = list(dict.fromkeys(
                (m.msg_id if (m := self.store.get_message(i)) is not None else i)
                for i in msg_ids))
        await self._call(self.adapter.remove_messages(conv_id, ChatType(chat_type),
                                                      server_ids, before))
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


