"""A Matrix client imstore did not write (matrix-nio 0.26, no end-to-end encryption), for the
conformance tests on Synapse: it plays a third-party peer and the user's second device.

It sends what a normal Matrix client (Element and the like) sends, and nothing imstore-specific:
- a DM is a private room created with ``is_direct`` and the ``trusted_private_chat`` preset,
  listed in the creator's ``m.direct`` account data (and in the joiner's, when it joins one);
- text is ``m.text``; an edit is an ``m.replace`` relation with ``m.new_content``; a reply is an
  ``m.in_reply_to`` relation; a recall is a redaction; reading moves ``m.fully_read`` and the
  public ``m.read`` receipt together (``/read_markers``), unthreaded;
- its second device is a password login of the same account with another device id.

Every call raises `AssertionError` with the server's answer when the server refuses it: the tests
use this module to set a scene, and a scene that could not be set is the test's failure, never a
silent pass. Nothing here knows imstore's internals: only the Matrix client-server API.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinedMembersResponse,
    JoinResponse,
    LoginResponse,
    MessageDirection,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomPreset,
    RoomReadMarkersResponse,
    RoomRedactResponse,
    RoomSendResponse,
    RoomVisibility,
    SyncResponse,
)

from imstore.adapters.matrix import MatrixAdapter

__all__ = ["NioPeer", "register"]


async def register(url: str, secret: str, name: str, *, admin: bool = False) -> str:
    """A new account through Synapse's shared-secret registration (the harness's path); returns
    its Matrix id. The password is ``"pw-" + name``, as for the harness's users."""
    return await MatrixAdapter.register(url, name, "pw-" + name, shared_secret=secret,
                                        admin=admin)


def _ok(answer: Any, kind: type, what: str) -> Any:
    assert isinstance(answer, kind), f"nio: {what} failed: {answer}"
    return answer


class NioPeer:
    """One logged-in nio device. ``mxid`` is the full Matrix id; ``device_id`` the device."""

    def __init__(self, client: AsyncClient, mxid: str, device_id: str) -> None:
        self.client = client
        self.mxid = mxid
        self.device_id = device_id
        self.direct: dict[str, list[str]] = {}

    @classmethod
    async def login(cls, url: str, mxid: str, password: str, *,
                    device_id: str | None = None) -> NioPeer:
        """Log in (a new device unless ``device_id`` names one)."""
        device = device_id or "NIO" + secrets.token_hex(4).upper()
        client = AsyncClient(url, mxid, device_id=device,
                             config=AsyncClientConfig(encryption_enabled=False,
                                                      store_sync_tokens=False))
        try:
            answer = await client.login(password, device_name="nio peer")
            _ok(answer, LoginResponse, f"login of {mxid}")
        except BaseException:
            await client.close()
            raise
        peer = cls(client, answer.user_id, answer.device_id)
        await peer.sync()  # the initial sync: rooms, invites and m.direct as they are now
        return peer

    @classmethod
    async def new_user(cls, url: str, secret: str, name: str) -> NioPeer:
        """Register ``name`` and log it in."""
        mxid = await register(url, secret, name)
        return await cls.login(url, mxid, "pw-" + name)

    async def close(self) -> None:
        await self.client.close()

    # ---------------------------------------------------------------------------------- sync

    async def sync(self) -> SyncResponse:
        """One ``/sync`` (no long-poll) from the last position."""
        answer = _ok(await self.client.sync(timeout=0), SyncResponse, f"sync of {self.mxid}")
        for ev in answer.account_data_events:  # nio keeps m.direct as an unknown event
            if getattr(ev, "type", None) == "m.direct":
                self.direct = {k: list(v) for k, v in (getattr(ev, "content", None)
                                                       or {}).items()}
        return answer

    async def _raw(self, method: str, path: str, body: Any) -> dict[str, Any]:
        """A request nio 0.26 has no method for (account data), authenticated like its own."""
        resp = await self.client.send(
            method, path, json.dumps(body),
            headers={"Authorization": f"Bearer {self.client.access_token}",
                     "Content-Type": "application/json"})
        data: dict[str, Any] = await resp.json()
        assert resp.status == 200, f"nio: {method} {path} failed: {resp.status} {data}"
        return data

    async def _add_direct(self, peer: str, room_id: str) -> None:
        rooms = self.direct.setdefault(peer, [])
        if room_id not in rooms:
            rooms.append(room_id)
        await self._raw("PUT", f"/_matrix/client/v3/user/{self.mxid}/account_data/m.direct",
                        self.direct)

    # ---------------------------------------------------------------------------------- rooms

    async def create_dm(self, peer_mxid: str) -> str:
        """Open a DM the way Element does: ``is_direct``, trusted private preset, ``m.direct``."""
        answer = _ok(await self.client.room_create(
            visibility=RoomVisibility.private, is_direct=True,
            preset=RoomPreset.trusted_private_chat, invite=[peer_mxid]),
            RoomCreateResponse, f"DM {self.mxid} -> {peer_mxid}")
        await self._add_direct(peer_mxid, answer.room_id)
        return str(answer.room_id)

    async def create_room(self, *, invite: Sequence[str] = (), alias: str | None = None,
                          public: bool = False, name: str | None = None) -> str:
        """A room (``alias`` is the local part of a published alias)."""
        answer = _ok(await self.client.room_create(
            visibility=RoomVisibility.public if public else RoomVisibility.private,
            alias=alias, name=name, invite=list(invite),
            preset=RoomPreset.public_chat if public else RoomPreset.private_chat),
            RoomCreateResponse, f"room by {self.mxid}")
        return str(answer.room_id)

    async def join(self, room_id: str) -> None:
        _ok(await self.client.join(room_id), JoinResponse, f"{self.mxid} joining {room_id}")

    async def accept_invites(self) -> list[str]:
        """Join every pending invite (a DM invite also goes into ``m.direct``, as clients do)."""
        answer = await self.sync()
        joined = []
        for room_id, info in answer.rooms.invite.items():
            await self.join(room_id)
            joined.append(room_id)
            direct_from = next((ev.source.get("sender") for ev in info.invite_state
                                if ev.source.get("type") == "m.room.member"
                                and ev.source.get("state_key") == self.mxid
                                and (ev.source.get("content") or {}).get("is_direct")), None)
            if direct_from:
                await self._add_direct(direct_from, room_id)
        await self.sync()
        return joined

    async def members(self, room_id: str) -> list[str]:
        answer = _ok(await self.client.joined_members(room_id), JoinedMembersResponse,
                     f"members of {room_id}")
        return sorted(m.user_id for m in answer.members)

    async def events(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's newest ``limit`` events, oldest first, as the server sent them."""
        answer = _ok(await self.client.room_messages(room_id, direction=MessageDirection.back,
                                                     limit=limit),
                     RoomMessagesResponse, f"history of {room_id}")
        return [ev.source for ev in reversed(answer.chunk)]

    async def messages(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The ``m.room.message`` events of the room, oldest first."""
        return [ev for ev in await self.events(room_id, limit)
                if ev.get("type") == "m.room.message"]

    # ------------------------------------------------------------------------------ sending

    async def _send(self, room_id: str, content: dict[str, Any]) -> str:
        answer = _ok(await self.client.room_send(room_id, "m.room.message", content),
                     RoomSendResponse, f"send by {self.mxid} in {room_id}")
        return str(answer.event_id)

    async def text(self, room_id: str, text: str) -> str:
        return await self._send(room_id, {"msgtype": "m.text", "body": text})

    async def reply(self, room_id: str, event_id: str, text: str) -> str:
        return await self._send(room_id, {
            "msgtype": "m.text", "body": text,
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}}})

    async def edit(self, room_id: str, event_id: str, text: str) -> str:
        return await self._send(room_id, {
            "msgtype": "m.text", "body": "* " + text,
            "m.new_content": {"msgtype": "m.text", "body": text},
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id}})

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        answer = _ok(await self.client.room_send(room_id, "m.reaction", {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": event_id, "key": key}}),
            RoomSendResponse, f"reaction by {self.mxid} in {room_id}")
        return str(answer.event_id)

    async def redact(self, room_id: str, event_id: str) -> str:
        answer = _ok(await self.client.room_redact(room_id, event_id, reason="deleted"),
                     RoomRedactResponse, f"redaction of {event_id}")
        return str(answer.event_id)

    async def read(self, room_id: str, event_id: str) -> None:
        """Read up to ``event_id``: the fully-read marker and the public read receipt."""
        _ok(await self.client.room_read_markers(room_id, fully_read_event=event_id,
                                                read_event=event_id),
            RoomReadMarkersResponse, f"read markers in {room_id}")


class World:
    """The nio side of one Synapse scenario: new users, second devices of harness users; every
    nio device is closed when the scenario ends (see `run`)."""

    def __init__(self, b: Any) -> None:
        self.b = b
        self.devices: list[NioPeer] = []

    async def user(self, name: str) -> NioPeer:
        """A new Matrix user on nio, named like the harness's users (unique per scenario)."""
        peer = await NioPeer.new_user(self.b.url, self.b.info["secret"], self.b.uid(name))
        self.devices.append(peer)
        return peer

    async def device(self, mxid: str, password: str) -> NioPeer:
        """Another device of an existing account (its second phone)."""
        peer = await NioPeer.login(self.b.url, mxid, password)
        self.devices.append(peer)
        return peer

    async def close(self) -> None:
        for d in self.devices:
            await d.close()


def run(harness: Any, main: Any) -> None:
    """``harness.run`` with a `World` as the scenario's second argument."""
    async def wrapped(b: Any) -> None:
        world = World(b)
        try:
            await main(b, world)
        finally:
            await world.close()

    harness.run(wrapped)
