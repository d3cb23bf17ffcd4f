"""Which room is which conversation: the adapter's room directory.

Rules kept here:
- a conversation's room is found in the cache, else by its alias (``#imstore.dm.<a>.<b>`` for a
  one-to-one chat, ``#imstore.g.<id>`` for a group or room) and joined, else — for a one-to-one
  chat that is being written to — created with that alias; two users creating the same chat at
  once both end in the one room that got the alias;
- a room's conversation comes from its ``io.imstore.conversation`` state, else from the user's
  ``m.direct``, else it is a group keyed by the room id (`_mapping.room_info`);
- one-to-one rooms are recorded in ``m.direct`` as other Matrix clients expect;
- invites are joined as they come; a room this user left is forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import ErrorCode, IMError
from ...message import ChatType
from . import _mapping as mp
from . import _requests as rq
from ._api import Api, MatrixError, need
from ._link import log

__all__ = ["Rooms"]


class Rooms:
    """The rooms of one user and the conversations they are."""

    def __init__(self, api: Api, mxid: str) -> None:
        self.api = api
        self.mxid = mxid
        self.server_name = mxid.partition(":")[2]
        self.rooms: dict[str, mp.RoomInfo] = {}
        self.by_conv: dict[tuple[ChatType, str], str] = {}
        self.direct: dict[str, list[str]] = {}
        self.unread: dict[str, int] = {}  # room: the sync's notification count

    def mx(self, user_id: str) -> str:
        return mp.to_mxid(user_id, self.server_name)

    def im(self, mxid: str) -> str:
        return mp.from_mxid(mxid, self.server_name)

    def remember(self, info: mp.RoomInfo) -> None:
        self.rooms[info.room_id] = info
        self.by_conv[(info.chat_type, info.conv_id)] = info.room_id

    def forget(self, room_id: str) -> None:
        info = self.rooms.pop(room_id, None)
        if info is not None:
            self.by_conv.pop((info.chat_type, info.conv_id), None)

    def alias(self, conv_id: str, chat_type: ChatType) -> str:
        if chat_type == ChatType.CHAT:
            return mp.direct_alias(self.mxid, self.mx(conv_id), self.server_name)
        return mp.group_alias(conv_id, self.server_name)

    def set_direct(self, content: Any) -> None:
        """Take the user's ``m.direct`` account data (peer: rooms)."""
        if isinstance(content, dict):
            self.direct = {k: [r for r in v if isinstance(r, str)]
                           for k, v in content.items() if isinstance(k, str) and isinstance(v, list)}

    async def add_direct(self, peer: str, room_id: str) -> None:
        rooms = self.direct.setdefault(peer, [])
        if room_id in rooms:
            return
        rooms.append(room_id)
        await self.api.call(rq.account_data(self.mxid, "m.direct", self.direct))

    async def create(self, chat_type: ChatType, key: str, members: Sequence[str],
                     alias: str | None = None) -> str:
        mxids = sorted({self.mx(m) for m in members} | {self.mxid})
        if chat_type == ChatType.CHAT:
            alias = alias or mp.direct_alias(mxids[0], mxids[-1], self.server_name)
        else:
            alias = mp.group_alias(key, self.server_name)
        public = chat_type == ChatType.CHAT_ROOM
        body: dict[str, Any] = {
            "preset": "public_chat" if public else (
                "trusted_private_chat" if chat_type == ChatType.CHAT else "private_chat"),
            "visibility": "private",
            "room_alias_name": alias[1:].rsplit(":", 1)[0],
            "invite": [m for m in mxids if m != self.mxid],
            "is_direct": chat_type == ChatType.CHAT,
            "initial_state": [
                {"type": mp.CONV_STATE, "state_key": "",
                 "content": mp.conv_state(chat_type, key, mxids)},
                {"type": "m.room.history_visibility", "state_key": "",
                 "content": {"history_visibility": "shared"}},
            ],
        }
        if chat_type != ChatType.CHAT:
            body["name"] = key
        try:
            answer = await self.api.call(rq.create_room(body))
        except MatrixError as exc:
            if exc.errcode == "M_ROOM_IN_USE":
                if chat_type == ChatType.CHAT:
                    raise  # the caller resolves the alias another device just made
                raise IMError(ErrorCode.INVALID_PARAM, f"{key!r} exists already") from exc
            raise
        room_id = need(answer, "room_id", str, "POST /createRoom")
        peer = next((m for m in mxids if m != self.mxid), self.mxid)
        conv_id = key if chat_type != ChatType.CHAT else self.im(peer)
        self.remember(mp.RoomInfo(room_id, conv_id, chat_type))
        if chat_type == ChatType.CHAT:
            await self.add_direct(peer, room_id)
        return room_id

    async def room_for(self, conv_id: str, chat_type: ChatType, *, create: bool) -> str | None:
        """The joined room of a conversation: cached, by alias (joining it), or created."""
        room = self.by_conv.get((chat_type, conv_id))
        if room is not None:
            return room
        alias = self.alias(conv_id, chat_type)
        for _ in range(3):
            try:
                found = await self.api.call(rq.resolve_alias(alias))
            except MatrixError as exc:
                if exc.status != 404:
                    raise
                if not create or chat_type != ChatType.CHAT:
                    return None
                try:
                    return await self.create(chat_type, conv_id, [conv_id], alias)
                except MatrixError as again:
                    if again.errcode == "M_ROOM_IN_USE":
                        continue  # the peer made it at the same moment: resolve it
                    if again.status == 404 or again.errcode == "M_NOT_FOUND":
                        raise IMError(ErrorCode.INVALID_PARAM,
                                      f"there is no user {conv_id!r} on the server") from again
                    raise
            room = need(found, "room_id", str, "GET /directory/room")
            try:
                await self.api.call(rq.join(room))
            except MatrixError as exc:
                raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                              f"{self.im(self.mxid)!r} cannot join the room of {conv_id!r}: "
                              f"{exc.description}") from exc
            self.remember(mp.RoomInfo(room, conv_id, chat_type))
            if chat_type == ChatType.CHAT:
                await self.add_direct(self.mx(conv_id), room)
            return room
        return None

    async def existing(self, conv_id: str, chat_type: ChatType) -> str:
        """The room of a conversation this user has; else CONVERSATION_NOT_EXIST."""
        room = await self.room_for(conv_id, chat_type, create=False)
        if room is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{self.im(self.mxid)!r} has no {chat_type.name} {conv_id!r} on the "
                          "server")
        return room

    async def info(self, room_id: str, state: list[Any] | None = None) -> mp.RoomInfo:
        """What conversation a room is (from ``state`` events when given, else asked)."""
        info = self.rooms.get(room_id)
        if info is not None:
            return info
        content: Any = None
        for ev in state or ():
            if (isinstance(ev, dict) and ev.get("type") == mp.CONV_STATE
                    and ev.get("state_key") == ""):
                content = ev.get("content")
        if content is None:
            try:
                content = await self.api.call(rq.room_state(room_id, mp.CONV_STATE))
            except MatrixError:
                content = None
        peer = next((p for p, rooms in self.direct.items() if room_id in rooms), None)
        info = mp.room_info(room_id, content if isinstance(content, dict) else None, self.mxid,
                            self.server_name, peer)
        self.remember(info)
        return info

    async def join_invites(self, invites: Any) -> None:
        for room_id in invites if isinstance(invites, dict) else ():
            try:
                await self.api.call(rq.join(room_id))
            except MatrixError as exc:
                log.warning("could not join %s: %s", room_id, exc)
