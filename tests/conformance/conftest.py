"""Backends for the conformance suite: the same tests run against `MemoryServer` and a live Synapse.

A test receives ``backend`` (a `Harness`) and runs its scenario with ``backend.run(main)``, where
``main(b)`` gets a fresh `Backend` inside one event loop; every client, adapter and store is closed
when ``main`` ends, pass or fail.

Synapse is used when one is available: ``IMSTORE_SYNAPSE_URL`` and ``IMSTORE_SYNAPSE_SECRET`` (its
registration shared secret), or the state file that ``scripts/synapse.py start`` writes
(``.synapse/state.json``, or under ``IMSTORE_SYNAPSE_DIR``). Without one the Synapse tests are
skipped, and fail instead when ``IMSTORE_REQUIRE_SYNAPSE=1`` (CI). Faults on Synapse come from its
PID (SIGSTOP/SIGCONT, stop and start through the script), so only a server the script started
can be paused; a test that needs what a backend cannot do skips with the reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import imstore
from imstore import ChatClient, ChatType, ConnectionState, MemoryServer, MessageListener

from ..conftest import REPO, Clock, settle

SCENARIO_TIMEOUT = 90.0
WAIT = 15.0  # the bound on waiting for something a server delivers asynchronously


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("imstore_synapse_script",
                                                  REPO / "scripts" / "synapse.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synapse_info() -> dict[str, Any] | None:
    """url, secret and (when the script started it) pid and dir of a live Synapse."""
    url, secret = os.environ.get("IMSTORE_SYNAPSE_URL"), os.environ.get("IMSTORE_SYNAPSE_SECRET")
    if url and secret:
        return {"url": url.rstrip("/"), "secret": secret}
    script = _load_script()
    base = Path(os.environ.get("IMSTORE_SYNAPSE_DIR", REPO / ".synapse"))
    info: dict[str, Any] | None = script.state(base)
    if info is not None:
        info["script"] = script
        info["base"] = base
    return info


class Recorder(MessageListener):
    """Every listener event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_messages_received(self, messages):  # type: ignore[no-untyped-def]
        self.events.append(("received", [m.msg_id for m in messages]))

    def on_cmd_messages_received(self, messages):  # type: ignore[no-untyped-def]
        self.events.append(("cmd", [m.body.action for m in messages]))

    def on_messages_delivered(self, messages):  # type: ignore[no-untyped-def]
        self.events.append(("delivered", [m.msg_id for m in messages]))

    def on_messages_read(self, messages):  # type: ignore[no-untyped-def]
        self.events.append(("read", [m.msg_id for m in messages]))

    def on_conversation_read(self, conv_id, reader, *rest):  # type: ignore[no-untyped-def]
        self.events.append(("conversation_read", (conv_id, reader)))

    def on_group_message_read(self, acks):  # type: ignore[no-untyped-def]
        self.events.append(("group_read", [(a.msg_id, a.reader) for a in acks]))

    def on_messages_recalled(self, messages):  # type: ignore[no-untyped-def]
        self.events.append(("recalled", [getattr(m, "msg_id", m) for m in messages]))

    def on_messages_edited(self, messages):  # type: ignore[no-untyped-def]
        self.events.append(("edited", [m.msg_id for m in messages]))

    def on_connection_state_changed(self, state):  # type: ignore[no-untyped-def]
        self.events.append(("state", state))

    def kinds(self, kind: str) -> list[Any]:
        return [v for k, v in self.events if k == kind]

    def received_ids(self) -> list[str]:
        return [i for ids in self.kinds("received") for i in ids]


class Peer:
    """One user: its store, client, transport and a recorder of what its listeners heard."""

    def __init__(self, user_id: str, store: imstore.MessageStore, client: ChatClient,
                 transport: Any) -> None:
        self.id = user_id
        self.store = store
        self.client = client
        self.transport = transport
        self.rec = Recorder()
        client.add_listener(self.rec)


class Backend:
    """What a conformance test may ask of a server. Subclasses: memory, synapse."""

    name = ""
    server_faults = False  # pause/stop the server process

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.peers: list[Peer] = []

    def _peer(self, user_id: str, transport: Any, send_timeout: float) -> Peer:
        store = imstore.open(":memory:", user_id=user_id)
        client = ChatClient(store, transport, send_timeout=send_timeout,
                            download_dir=str(self.tmp / f"files-{user_id}"))
        peer = Peer(user_id, store, client, transport)
        self.peers.append(peer)
        return peer

    async def users(self, *names: str) -> list[Peer]:
        raise NotImplementedError

    async def create_group(self, creator: Peer, group_id: str, members: list[Peer],
                           chat_type: ChatType = ChatType.GROUP_CHAT) -> str:
        """Create a group (or chat room) and make every member able to receive in it; returns
        the conversation id (the group id)."""
        raise NotImplementedError

    async def offline(self, peer: Peer) -> None:
        raise NotImplementedError

    async def online(self, peer: Peer) -> None:
        raise NotImplementedError

    async def pause_server(self) -> None:
        raise NotImplementedError

    async def resume_server(self) -> None:
        raise NotImplementedError

    async def restart_server(self, while_down: Callable[[], Awaitable[None]]) -> None:
        raise NotImplementedError

    async def expire_history(self, owner: Peer, conv_id: str, chat_type: ChatType) -> None:
        """Make the conversation's whole history older than the server keeps it."""
        raise NotImplementedError

    async def settle(self) -> None:
        await settle(p.client for p in self.peers)

    async def until(self, check: Callable[[], object], what: str, timeout: float = WAIT) -> None:
        """Poll ``check`` (settling the clients between tries) until it is true, within a bound."""
        deadline = time.monotonic() + timeout
        while True:
            await self.settle()
            if check():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for p in self.peers:
            p.store.close()


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.clock = Clock()
        self.server = MemoryServer(clock=self.clock)

    async def users(self, *names: str) -> list[Peer]:
        return [self._peer(n, self.server.connect(n), 0.5) for n in names]

    async def create_group(self, creator: Peer, group_id: str, members: list[Peer],
                           chat_type: ChatType = ChatType.GROUP_CHAT) -> str:
        ids = [creator.id, *(m.id for m in members)]
        if chat_type == ChatType.CHAT_ROOM:
            self.server.create_chat_room(group_id, ids)
        else:
            self.server.create_group(group_id, ids)
        return group_id

    async def offline(self, peer: Peer) -> None:
        self.server.disconnect(peer.id, reconnect=True)

    async def online(self, peer: Peer) -> None:
        self.server.restore(peer.id)

    async def pause_server(self) -> None:
        # the in-process analogue of a frozen server: sends arrive, answers never come back,
        # and reconnecting fails
        self.server.lose_answers(1000)
        self.server.set_reachable(False)

    async def resume_server(self) -> None:
        self.server.lose_answers(0)
        self.server.set_reachable(True)
        for p in self.peers:
            if p.transport.state != ConnectionState.CONNECTED:
                self.server.restore(p.id)

    async def restart_server(self, while_down: Callable[[], Awaitable[None]]) -> None:
        for p in self.peers:
            self.server.disconnect(p.id, reconnect=True)
        await while_down()
        for p in self.peers:
            self.server.restore(p.id)

    async def expire_history(self, owner: Peer, conv_id: str, chat_type: ChatType) -> None:
        self.clock.advance_days(4)  # past the free plan's 3 days


class SynapseBackend(Backend):
    name = "synapse"

    def __init__(self, tmp: Path, info: dict[str, Any]) -> None:
        super().__init__(tmp)
        self.info = info
        self.url: str = info["url"]
        self.server_faults = "script" in info
        self.adapters: list[Any] = []
        self.suffix = secrets.token_hex(3)
        self._paused = False

    def uid(self, name: str) -> str:
        return f"{name}-{self.suffix}"

    async def users(self, *names: str) -> list[Peer]:
        from imstore.adapters.matrix import MatrixAdapter

        peers = []
        for name in names:
            uid = self.uid(name)
            # the first user is a server admin: deleting a conversation for everyone needs one
            await MatrixAdapter.register(self.url, uid, "pw-" + uid,
                                         shared_secret=self.info["secret"],
                                         admin=not self.adapters)
            adapter = await MatrixAdapter.login(self.url, uid, "pw-" + uid, poll_timeout=3.0,
                                                timeline_limit=5)
            self.adapters.append(adapter)
            assert adapter.user_id == uid
            peers.append(self._peer(uid, adapter, 5.0))
        for p in peers:
            await p.transport.wait_synced()
        return peers

    async def create_group(self, creator: Peer, group_id: str, members: list[Peer],
                           chat_type: ChatType = ChatType.GROUP_CHAT) -> str:
        ids = [m.id for m in members]
        if chat_type == ChatType.CHAT_ROOM:
            await creator.transport.create_chat_room(group_id, ids)
        else:
            await creator.transport.create_group(group_id, ids)
        for m in members:
            await m.transport.join(group_id, chat_type)
        return group_id

    async def offline(self, peer: Peer) -> None:
        peer.transport.pause()

    async def online(self, peer: Peer) -> None:
        peer.transport.resume()
        await peer.transport.wait_synced()

    def _pid(self) -> int:
        return int(self.info["script"].state(self.info["base"])["pid"])

    async def pause_server(self) -> None:
        os.kill(self._pid(), signal.SIGSTOP)
        self._paused = True

    async def resume_server(self) -> None:
        os.kill(self._pid(), signal.SIGCONT)
        self._paused = False

    async def restart_server(self, while_down: Callable[[], Awaitable[None]]) -> None:
        script, base = self.info["script"], self.info["base"]
        await asyncio.to_thread(script.stop, base)
        try:
            await while_down()
        finally:
            new = await asyncio.to_thread(script.start, base)
            assert new["url"] == self.url

    async def expire_history(self, owner: Peer, conv_id: str, chat_type: ChatType) -> None:
        # no fake clock on a real server: the room's retention policy becomes 1 ms instead
        await owner.transport.set_retention(conv_id, chat_type, 1)

    async def close(self) -> None:
        if self._paused:
            await self.resume_server()
        for a in self.adapters:
            await a.close()
        await super().close()


class Harness:
    """Runs one scenario against one backend, inside one event loop, cleaning up after it."""

    def __init__(self, kind: str, tmp: Path, info: dict[str, Any] | None) -> None:
        self.kind = kind
        self.tmp = tmp
        self.info = info

    def make(self) -> Backend:
        if self.kind == "memory":
            return MemoryBackend(self.tmp)
        assert self.info is not None
        return SynapseBackend(self.tmp, self.info)

    def run(self, main: Callable[[Backend], Awaitable[None]]) -> None:
        async def wrapper() -> None:
            b = self.make()
            try:
                await asyncio.wait_for(main(b), SCENARIO_TIMEOUT)
            finally:
                await b.close()

        asyncio.run(wrapper())


_INFO: list[dict[str, Any] | None] = []


def _synapse() -> dict[str, Any] | None:
    if not _INFO:
        _INFO.append(synapse_info())
    return _INFO[0]


def require_synapse() -> dict[str, Any]:
    """The live Synapse, or a skip (a failure with IMSTORE_REQUIRE_SYNAPSE=1) saying why not."""
    reason = None
    try:
        import imstore.adapters.matrix  # noqa: F401
    except ImportError as exc:
        reason = f"the Matrix adapter cannot be imported ({exc}): pip install '.[matrix]'"
    info = _synapse() if reason is None else None
    if reason is None and info is None:
        reason = ("no Synapse: run `python scripts/synapse.py install && python "
                  "scripts/synapse.py start`, or set IMSTORE_SYNAPSE_URL and "
                  "IMSTORE_SYNAPSE_SECRET")
    if reason is not None:
        if os.environ.get("IMSTORE_REQUIRE_SYNAPSE") == "1":
            pytest.fail(f"IMSTORE_REQUIRE_SYNAPSE=1 but {reason}")
        pytest.skip(reason)
    assert info is not None
    return info


@pytest.fixture
def synapse() -> dict[str, Any]:
    return require_synapse()


@pytest.fixture(params=["memory", "synapse"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    info = require_synapse() if request.param == "synapse" else None
    yield Harness(request.param, tmp_path, info)


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    """A real PNG (the server makes thumbnails of images it can decode)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + b"".join(bytes((x * 4 % 256, y * 5 % 256, 128))
                                       for x in range(width)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


__all__ = ["WAIT", "Backend", "Harness", "Peer", "Recorder", "png_bytes"]
