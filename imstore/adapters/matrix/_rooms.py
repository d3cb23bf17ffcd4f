"""Which room is which conversation: the adapter's room directory.

Rules kept here:
- a one-to-one chat is a room whose invite said ``is_direct`` or that the user's ``m.direct``
  lists for the peer — what every Matrix client does; nothing else makes a room a chat (not its
  alias, not a state event a member could forge). A chat's room is found in the cache, else in
  ``m.direct`` (the first listed room this user is in or can join, in room id order, so both
  sides settle on the same one), else — when it is being written to — created with
  ``is_direct`` and no alias, so no one can squat it;
- ``m.direct`` is kept current: read before it is first written (never overwritten blind), and
  a DM this user creates or joins is added to it;
- a group or chat room is found by its alias ``#imstore.g.<id>`` and joined; its room's
  conversation comes from its ``io.imstore.conversation`` state, else it is a group keyed by the
  room id (`_mapping.room_info`). The state is its creator's word: a room met any other way
  (an invite, a sync) is the group its state names only when that group's alias names this
  room; otherwise it is a group of its own, keyed by its room id, so no one can make a room
  that pours messages into another group's conversation;
- invites are joined as they come (a DM invite also goes into ``m.direct``); a room this user
  left is forgotten;
- the directory (rooms, their conversations) can be exported and restored (`export`,
  `restore`), so a restarted adapter knows every room before its first sync.
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


POWER_EVENTS = {  # Synapse's defaults, and every member may pin messages
    "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
    "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
    "m.room.server_acl": 100, "m.room.encryption": 100, "m.room.pinned_events": 0}


class Rooms:
    """The rooms of one user and the conversations they are."""

    def __init__(self, api: Api, mxid: str) -> None:
        self.api = api
        self.mxid = mxid
        self.server_name = mxid.partition(":")[2]
        self.rooms: dict[str, mp.RoomInfo] = {}
        self.by_conv: dict[tuple[ChatType, str], str] = {}
        self.direct: dict[str, list[str]] = {}
        self.direct_known = False  # m.direct was read (from a sync or asked)
        self.unread: dict[str, int] = {}  # room: the sync's notification count
        self.power: dict[str, dict[str, Any]] = {}  # room: its m.room.power_levels content
        self.creators: dict[str, frozenset[str]] = {}  # room: its privileged creators (v12+)

    def mx(self, user_id: str) -> str:
        return mp.to_mxid(user_id, self.server_name)

    def im(self, mxid: str) -> str:
        return mp.from_mxid(mxid, self.server_name)

    def remember(self, info: mp.RoomInfo) -> None:
        self.rooms[info.room_id] = info
        key = (info.chat_type, info.conv_id)
        known = self.by_conv.get(key)
        # two DMs with one peer (both opened one at once): both sides keep the lower room id
        if known is None or info.chat_type != ChatType.CHAT or info.room_id < known:
            self.by_conv[key] = info.room_id

    def forget(self, room_id: str) -> None:
        info = self.rooms.pop(room_id, None)
        if info is not None and self.by_conv.get((info.chat_type, info.conv_id)) == room_id:
            self.by_conv.pop((info.chat_type, info.conv_id), None)

    def export(self) -> list[list[str]]:
        """The directory as plain data: ``[room id, conversation id, chat type name]`` rows."""
        return [[i.room_id, i.conv_id, i.chat_type.name] for i in self.rooms.values()]

    def restore(self, rows: Any) -> None:
        """Take a directory `export` made (rows that are not one are skipped)."""
        for row in rows if isinstance(rows, list) else ():
            if (isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row)
                    and row[2] in ChatType.__members__ and row[0] not in self.rooms):
                self.remember(mp.RoomInfo(row[0], row[1], ChatType[row[2]]))

    def alias(self, conv_id: str, chat_type: ChatType) -> str:
        """The alias of a group or chat room (a one-to-one chat has none it relies on)."""
        return mp.group_alias(conv_id, self.server_name)

    def set_direct(self, content: Any) -> None:
        """Take the user's ``m.direct`` account data (peer: rooms)."""
        if isinstance(content, dict):
            self.direct = {k: [r for r in v if isinstance(r, str)]
                           for k, v in content.items() if isinstance(k, str) and isinstance(v, list)}
            self.direct_known = True

    async def load_direct(self) -> None:
        """Read ``m.direct`` unless a sync brought it already."""
        if self.direct_known:
            return
        try:
            content = await self.api.call(rq.account_data(self.mxid, "m.direct"))
        except MatrixError as exc:
            if exc.status != 404:
                raise
            content = {}
        if not self.direct_known:  # a sync may have brought a newer one meanwhile
            self.set_direct(content)

    def direct_peer(self, room_id: str) -> str | None:
        """The peer ``m.direct`` lists the room under, if any."""
        return next((p for p, rooms in self.direct.items() if room_id in rooms), None)

    async def add_direct(self, peer: str, room_id: str) -> None:
        await self.load_direct()
        rooms = self.direct.setdefault(peer, [])
        if room_id in rooms:
            return
        rooms.append(room_id)
        await self.api.call(rq.account_data(self.mxid, "m.direct", self.direct))

    async def create(self, chat_type: ChatType, key: str, members: Sequence[str]) -> str:
        mxids = sorted({self.mx(m) for m in members} | {self.mxid})
        public = chat_type == ChatType.CHAT_ROOM
        body: dict[str, Any] = {
            "preset": "public_chat" if public else (
                "trusted_private_chat" if chat_type == ChatType.CHAT else "private_chat"),
            "visibility": "private",
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
            body["power_level_content_override"] = {"events": POWER_EVENTS}
            body["name"] = key
            body["room_alias_name"] = self.alias(key, chat_type)[1:].rsplit(":", 1)[0]
        try:
            answer = await self.api.call(rq.create_room(body))
        except MatrixError as exc:
            if exc.errcode == "M_ROOM_IN_USE" and chat_type != ChatType.CHAT:
                raise IMError(ErrorCode.INVALID_PARAM, f"{key!r} exists already") from exc
            if chat_type == ChatType.CHAT and (exc.status == 404 or exc.errcode == "M_NOT_FOUND"):
                raise IMError(ErrorCode.INVALID_PARAM,
                              f"there is no user {key!r} on the server") from exc
            raise
        room_id = need(answer, "room_id", str, "POST /createRoom")
        peer = next((m for m in mxids if m != self.mxid), self.mxid)
        conv_id = key if chat_type != ChatType.CHAT else self.im(peer)
        self.remember(mp.RoomInfo(room_id, conv_id, chat_type))
        if chat_type == ChatType.CHAT:
            await self.add_direct(peer, room_id)
        return room_id

    async def room_for(self, conv_id: str, chat_type: ChatType, *, create: bool) -> str | None:
        """The joined room of a conversation: cached; for a chat, listed in ``m.direct`` (joined
        if need be) or created; for a group or room, by its alias (joining it)."""
        room = self.by_conv.get((chat_type, conv_id))
        if room is not None:
            return room
        if chat_type == ChatType.CHAT:
            return await self._direct_room(conv_id, create)
        try:
            found = await self.api.call(rq.resolve_alias(self.alias(conv_id, chat_type)))
        except MatrixError as exc:
            if exc.status != 404:
                raise
            return None
        room = need(found, "room_id", str, "GET /directory/room")
        await self._join(room, conv_id)
        self.remember(mp.RoomInfo(room, conv_id, chat_type))
        return room

    async def _direct_room(self, conv_id: str, create: bool) -> str | None:
        peer = self.mx(conv_id)
        await self.load_direct()
        for room in sorted(self.direct.get(peer, ())):
            if room not in self.rooms:
                try:
                    await self._join(room, conv_id)
                except IMError:
                    continue  # a DM this user left, or the peer's that was deleted
            self.remember(mp.RoomInfo(room, conv_id, ChatType.CHAT))
            return self.by_conv[(ChatType.CHAT, conv_id)]
        if not create:
            return None
        return await self.create(ChatType.CHAT, conv_id, [conv_id])

    async def _join(self, room: str, conv_id: str) -> None:
        try:
            await self.api.call(rq.join(room))
        except MatrixError as exc:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{self.im(self.mxid)!r} cannot join the room of {conv_id!r}: "
                          f"{exc.description}") from exc

    async def existing(self, conv_id: str, chat_type: ChatType) -> str:
        """The room of a conversation this user has; else CONVERSATION_NOT_EXIST."""
        room = await self.room_for(conv_id, chat_type, create=False)
        if room is None:
            raise IMError(ErrorCode.CONVERSATION_NOT_EXIST,
                          f"{self.im(self.mxid)!r} has no {chat_type.name} {conv_id!r} on the "
                          "server")
        return room

    async def info(self, room_id: str, state: list[Any] | None = None, *,
                   ask: bool = True) -> mp.RoomInfo:
        """What conversation a room is (from ``state`` events when given, else asked; with
        ``ask=False`` the state given is all there is: a room without imstore state in it is
        not asked about)."""
        info = self.rooms.get(room_id)
        if info is not None:
            return info
        await self.load_direct()
        peer = self.direct_peer(room_id)
        content: Any = None
        for ev in state or ():
            if (isinstance(ev, dict) and ev.get("type") == mp.CONV_STATE
                    and ev.get("state_key") == ""):
                content = ev.get("content")
        if content is None and peer is None and ask:
            try:
                content = await self.api.call(rq.room_state(room_id, mp.CONV_STATE))
            except MatrixError:
                content = None
        info = mp.room_info(room_id, content if isinstance(content, dict) else None, self.mxid,
                            self.server_name, peer)
        if info.chat_type != ChatType.CHAT and info.conv_id != room_id \
                and not await self._holds_alias(room_id, info):
            log.warning("room %s claims to be %s %r, whose alias names another room or none; it "
                        "is a conversation of its own", room_id, info.chat_type.name, info.conv_id)
            info = mp.RoomInfo(room_id, room_id, ChatType.GROUP_CHAT)
        self.remember(info)
        return info

    async def _holds_alias(self, room_id: str, info: mp.RoomInfo) -> bool:
        """Whether the server's alias of the group or room ``info`` names (``#imstore.g.<id>``,
        given to the room that created it) is ``room_id``: a room's state is whatever its
        creator wrote, the alias is the server's. An answer other than "no such alias" leaves
        the claim as it is (the server could not say)."""
        try:
            found = await self.api.call(rq.resolve_alias(self.alias(info.conv_id,
                                                                    info.chat_type)))
        except MatrixError as exc:
            return exc.status != 404
        return bool(mp.as_obj(found).get("room_id") == room_id)

    def note_state(self, room_id: str, events: list[Any]) -> None:
        """Take the state a sync carries for a room (its power levels, for now)."""
        for ev in events:
            if (isinstance(ev, dict) and ev.get("type") == "m.room.power_levels"
                    and ev.get("state_key") == "" and isinstance(ev.get("content"), dict)):
                self.power[room_id] = ev["content"]

    async def may_redact(self, room_id: str, user: str) -> bool:
        """Whether ``user``'s power level in the room reaches the level that redacts other
        members' events (a moderator); the levels are asked once when no sync carried them."""
        levels = self.power.get(room_id)
        if levels is None:
            try:
                levels = await self.api.call(rq.room_state(room_id, "m.room.power_levels"))
            except MatrixError:
                levels = {}
            self.power[room_id] = levels
        users = mp.as_obj(levels.get("users"))
        level = mp.as_int(users.get(user), mp.as_int(levels.get("users_default"), 0))
        return level >= mp.as_int(levels.get("redact"), 50) or user in await self._creators(room_id)

    async def _creators(self, room_id: str) -> frozenset[str]:
        """From room version 12 on, a room's creators (the create event's sender and its
        ``additional_creators``) outrank every power level and are not listed in them."""
        if room_id not in self.creators:
            path = rq.room_state(room_id, "m.room.create").path + "?format=event"
            try:
                create = mp.as_obj(await self.api.call(rq.Request("GET", path)))
            except MatrixError:
                create = {}
            content = mp.as_obj(create.get("content"))
            found: set[str] = set()
            if str(content.get("room_version", "1")) not in {str(v) for v in range(1, 12)}:
                extra = content.get("additional_creators")
                found = {c for c in extra if isinstance(c, str)} if isinstance(extra, list) else set()
                if isinstance(create.get("sender"), str):
                    found.add(create["sender"])
            self.creators[room_id] = frozenset(found)
        return self.creators[room_id]

    async def join_invites(self, invites: Any) -> None:
        """Join every invite; one that says ``is_direct`` is a chat with its inviter, recorded
        in ``m.direct``."""
        for room_id, invite in invites.items() if isinstance(invites, dict) else ():
            try:
                await self.api.call(rq.join(room_id))
            except MatrixError as exc:
                log.warning("could not join %s: %s", room_id, exc)
                continue
            peer = mp.direct_inviter(invite, self.mxid)
            if peer is not None:
                self.remember(mp.RoomInfo(room_id, self.im(peer), ChatType.CHAT))
                await self.add_direct(peer, room_id)
