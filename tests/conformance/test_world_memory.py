"""Issue 19 on MemoryServer alone: the device rules the conformance tests do not reach (queues
per device, who hears what, a group read on another device, what a delete for everyone takes
back). The reference server is in the process, so these run without a backend fixture."""

from __future__ import annotations

import asyncio
from typing import Any

import imstore
from imstore import ChatClient, ChatType, Direction, MemoryServer, Message, MessageListener


class Heard(MessageListener):
    def __init__(self) -> None:
        self.received: list[str] = []
        self.read: list[tuple[str, str]] = []

    def on_messages_received(self, messages):  # type: ignore[no-untyped-def]
        self.received += [m.msg_id for m in messages]

    def on_conversation_read(self, conv_id, reader):  # type: ignore[no-untyped-def]
        self.read.append((conv_id, reader))


class Device:
    def __init__(self, server: MemoryServer, user: str, device: str | None) -> None:
        self.conn = server.connect(user, device_id=device)
        self.store = imstore.open(":memory:", user_id=user)
        self.client: ChatClient | None = None
        self.heard = Heard()

    def start(self) -> ChatClient:
        self.client = ChatClient(self.store, self.conn, send_timeout=0.5)
        self.client.add_listener(self.heard)
        return self.client

    def texts(self, conv_id: str) -> list[str]:
        return [m.body.text for m in self.store.messages(conv_id)]


def run(main: Any) -> None:
    asyncio.run(main())


def test_each_device_has_its_own_connection_and_queue():
    async def main() -> None:
        server = MemoryServer()
        assert server.connect("alice", device_id="phone") is server.connect("alice", "phone")
        assert server.connect("alice") is not server.connect("alice", "phone")
        desktop, phone = Device(server, "alice", None), Device(server, "alice", "phone")
        bob = Device(server, "bob", None)
        desktop.start()
        cb = bob.start()
        await cb.send_message(Message.text("alice", "one"))
        await cb.send_message(Message.text("alice", "two"))
        assert desktop.texts("bob") == ["one", "two"]
        phone.start()  # the phone was connected but away: its queue comes now
        await phone.client.wait_idle()
        assert phone.texts("bob") == ["one", "two"]
        assert phone.store.unread_count("bob") == desktop.store.unread_count("bob") == 2

    run(main)


def test_a_users_first_device_takes_what_came_before_any_and_a_new_one_starts_from_history():
    async def main() -> None:
        server = MemoryServer()
        bob = Device(server, "bob", None)
        cb = bob.start()
        await cb.send_message(Message.text("carol", "before any device"))
        tablet = Device(server, "carol", "tablet")
        tablet.start()
        assert tablet.texts("bob") == ["before any device"]
        late = Device(server, "carol", "late")
        late.start()
        assert late.texts("bob") == []  # not the tablet's queue: the history has it
        await late.client.fetch_history_messages("bob", ChatType.CHAT)
        assert late.texts("bob") == ["before any device"]

    run(main)


def test_a_device_never_hears_back_what_it_did_and_the_others_hear_it_all():
    async def main() -> None:
        server = MemoryServer()
        server.create_group("team", ["alice", "bob"])
        desktop, phone, bob = (Device(server, "alice", None), Device(server, "alice", "phone"),
                               Device(server, "bob", None))
        cd, cp, cb = desktop.start(), phone.start(), bob.start()
        sent = await cd.send_message(Message.text("bob", "from the desktop"))
        got = phone.store.get_message(sent.msg_id)
        assert (got.direction, got.body.text) == (Direction.SEND, "from the desktop")
        assert desktop.heard.received == phone.heard.received == []  # own sends: not "received"
        asked = Message.text("team", "read me", chat_type=ChatType.GROUP_CHAT)
        asked.need_group_ack = True
        g = await cb.send_message(asked)
        assert desktop.store.unread_count("team") == phone.store.unread_count("team") == 1
        await cp.ack_group_message_read(g.msg_id)  # read on the phone
        assert desktop.store.unread_count("team") == 0
        assert ("team", "alice") in desktop.heard.read and phone.heard.read == []

    run(main)


def test_a_delete_for_everyone_takes_back_queued_reads_and_receipts():
    async def main() -> None:
        server = MemoryServer()
        alice, bob = Device(server, "alice", None), Device(server, "bob", None)
        ca, cb = alice.start(), bob.start()
        sent = await ca.send_message(Message.text("bob", "hi"))
        server.disconnect("alice")  # what bob does now waits in alice's queue
        await cb.ack_conversation_read("alice")
        await cb.send_message(Message.text("alice", "answer"))
        await cb.delete_conversation_from_server("alice", ChatType.CHAT)
        server.restore("alice")
        await ca.wait_idle()
        assert alice.heard.read == [] and alice.texts("bob") == ["hi"]
        assert not alice.store.get_message(sent.msg_id).is_read_acked

    run(main)
