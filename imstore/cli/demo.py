"""``imstore demo``: two users on an embedded `MemoryServer`, each with a store in a temporary
directory, going through every capability. Exits 0 when every step behaved as it should."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable

from ..adapters.memory import MemoryServer
from ..client import ChatClient, MessageListener
from ..errors import ErrorCode, IMError
from ..message import (
    ChatType,
    CmdBody,
    Direction,
    FetchOptions,
    GroupReadAck,
    Message,
    MessageStatus,
    MessageType,
    Reaction,
    SearchScope,
    TextBody,
)
from ..store import MessageStore
from ..text import content_text

__all__ = ["run_demo"]


def _png(width: int, height: int) -> bytes:
    """A real (grey) PNG image, made without an imaging library."""
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class _Printer(MessageListener):
    """What a user's app would show, counted: messages by sender and type, commands, receipts;
    `flush` prints one line of it (before the next check)."""

    def __init__(self, name: str, say: Callable[[str], None]) -> None:
        self.name, self.say = name, say
        self.cmds: list[Message] = []
        self.got: dict[str, list[str]] = {}
        self.heard: dict[str, int] = {}

    def on_messages_received(self, messages: list[Message]) -> None:
        for m in messages:
            self.got.setdefault(str(m.sender), []).append(m.type.name)

    def on_cmd_messages_received(self, messages: list[Message]) -> None:
        self.cmds += messages
        for m in messages:
            assert isinstance(m.body, CmdBody)
            self._count(f"command {m.body.action!r} (not stored)")

    def _count(self, what: str, n: int = 1) -> None:
        self.heard[what] = self.heard.get(what, 0) + n

    def on_messages_delivered(self, messages: list[Message]) -> None:
        self._count("delivery receipts", len(messages))

    def on_messages_read(self, messages: list[Message]) -> None:
        self._count("read receipts", len(messages))

    def on_conversation_read(self, conv_id: str, reader: str) -> None:
        self._count(f"{reader} read the conversation")

    def on_group_message_read(self, acks: list[GroupReadAck]) -> None:
        for a in acks:
            self._count(f"group receipt from {a.reader}")

    def on_reactions_changed(self, msg_id: str, reactions: list[Reaction]) -> None:
        self._count("reactions now " + " ".join(f"{r.key}x{r.count}" for r in reactions))

    def on_pinned_messages_changed(self, conv_id: str, messages: list[Message]) -> None:
        self._count(f"{len(messages)} pinned in {conv_id}")

    def flush(self) -> str:
        """What was heard since the last flush, as one phrase ("" for nothing)."""
        parts = [f"{len(types)} message(s) from {sender} "
                 f"({', '.join(dict.fromkeys(types))})" for sender, types in self.got.items()]
        parts += [f"{n} {what}" if what.endswith("receipts") else what
                  for what, n in self.heard.items()]
        self.got.clear()
        self.heard.clear()
        return f"{self.name} <- " + "; ".join(parts) if parts else ""


def _file_maker(folder: str) -> Callable[[str, bytes], str]:
    """A function that writes a file of the walkthrough into ``folder`` and returns its path."""
    os.makedirs(folder)

    def make(name: str, data: bytes) -> str:
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    return make


def _short(m: Message) -> str:
    text = (content_text(m.type, m.body) or "").replace("\n", " ")
    return (text[:60] + "...") if len(text) > 60 else text


class _Check:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.failed = say, 0
        self.printers: list[_Printer] = []

    def __call__(self, ok: bool, what: str) -> None:
        heard = [h for h in (p.flush() for p in self.printers) if h]
        if heard:
            self.say("    " + " | ".join(heard))
        self.say(f"  {'ok ' if ok else 'FAIL'} {what}")
        self.failed += not ok


async def _demo(root: str, say: Callable[[str], None], check: _Check) -> None:
    server = MemoryServer()
    server.create_group("team", ["alice", "bob", "carol"])
    stores = {u: MessageStore.open(os.path.join(root, u), user_id=u) for u in ("alice", "bob", "carol")}
    alice, bob, carol = stores["alice"], stores["bob"], stores["carol"]
    ca = ChatClient(alice, server.connect("alice"), send_timeout=0.5)
    cb = ChatClient(bob, server.connect("bob"), send_timeout=0.5)
    cc = ChatClient(carol, server.connect("carol"), send_timeout=0.5)
    pa, pb = _Printer("alice", say), _Printer("bob", say)
    ca.add_listener(pa)
    cb.add_listener(pb)
    check.printers += [pa, pb]

    async def settle() -> None:
        for _ in range(3):
            for c in (ca, cb, cc):
                await c.wait_idle()

    make = _file_maker(os.path.join(root, "outbox"))

    say("1. alice sends bob one message of every type")
    sent = [
        await ca.send_message(Message.text("bob", "Hi Bob! Are we still meeting tomorrow? 🙂",
                                               ext={"topic": "weekly sync"})),
        await ca.send_message(Message.image("bob", make("beach.png", _png(64, 48)), width=64,
                                            height=48)),
        await ca.send_message(Message.voice("bob", make("hello.ogg", os.urandom(4000)), 2300)),
        await ca.send_message(Message.video("bob", make("clip.mp4", os.urandom(20000)), 5000,
                                            thumbnail=make("clip.png", _png(16, 9)))),
        await ca.send_message(Message.file("bob", make("agenda.pdf", b"%PDF-1.4 agenda"))),
        await ca.send_message(Message.location("bob", 39.9042, 116.4074, address="北京市东城区",
                                               building_name="天安门")),
        await ca.send_message(Message.custom("bob", "red_packet", {"amount": "8.88"})),
        await ca.send_message(Message.cmd("bob", "typing")),
    ]
    await settle()
    check(all(m.status == MessageStatus.SUCCESS for m in sent), "all eight sends succeeded")
    check(bob.message_count("alice") == 7 and len(pb.cmds) == 1,
          "bob stored 7 messages; the command was delivered but not stored")
    img = bob.get_message(sent[1].msg_id)
    check(img is not None and img.body.thumbnail_status.name == "SUCCEEDED",  # type: ignore[union-attr]
          "bob's image thumbnail downloaded automatically")
    got = await cb.download_attachment(sent[4].msg_id)
    with open(got.body.local_path, "rb") as f:  # type: ignore[union-attr]
        check(f.read() == b"%PDF-1.4 agenda", "bob downloaded the PDF on request, intact")

    say("2. unread counts and receipts")
    check(bob.unread_count("alice") == 7, "bob has 7 unread messages from alice")
    check(alice.get_message(sent[0].msg_id).is_delivered,  # type: ignore[union-attr]
          "alice sees the delivery receipt")
    await cb.ack_message_read(sent[0].msg_id)
    check(alice.get_message(sent[0].msg_id).is_read_acked,  # type: ignore[union-attr]
          "alice sees bob's read receipt for one message")
    await cb.ack_conversation_read("alice")
    check(bob.unread_count("alice") == 0, "bob read the whole conversation: unread is 0")
    check(all(m.is_read_acked for m in alice.messages("bob")), "alice sees every message read")
    g = await ca.send_message(Message.text("team", "Please read the agenda", need_group_ack=True,
                                           chat_type=ChatType.GROUP_CHAT))
    await settle()
    await cb.ack_group_message_read(g.msg_id)
    await cc.ack_group_message_read(g.msg_id)
    await cc.ack_group_message_read(g.msg_id)  # twice: still one reader
    acks = await ca.fetch_group_read_acks(g.msg_id)
    check(alice.get_message(g.msg_id).group_ack_count == 2  # type: ignore[union-attr]
          and {a.reader for a in acks.items} == {"bob", "carol"},
          "group read receipts: 2 distinct readers")

    say("3. history from the server, paged, merged into a fresh store")
    for i in range(45):
        who = "alice" if i % 2 else "bob"
        server.post(Message.text("bob" if who == "alice" else "alice", f"old message {i}",
                                 sender=who), deliver=False)
    fresh = MessageStore.open(os.path.join(root, "bob-new-phone"), user_id="bob")
    cf = ChatClient(fresh, server.connect("bob"))
    convs = await cf.fetch_conversations_from_server()
    pages, cursor = 0, None
    while True:
        page = await cf.fetch_history_messages("alice", ChatType.CHAT, cursor=cursor, limit=20)
        pages += 1
        cursor = page.cursor
        if cursor is None:
            break
    total_hist, unread = fresh.message_count("alice"), fresh.unread_count("alice")
    say(f"    server conversations: {[c.conv_id for c in convs.items]}; fetched {pages} pages, "
        f"{total_hist} messages, {unread} unread; fetched again: nothing added")
    await cf.fetch_history_messages("alice", ChatType.CHAT, limit=50)
    await cf.wait_idle()  # the delivery receipts of what came in unread
    check(fresh.message_count("alice") == total_hist == 52
          and fresh.unread_count("alice") == unread,
          "history merged without duplicates, unread counted once as the server says")

    say("4. local paging, type and time filters")
    newest = fresh.messages("alice", limit=5)
    older = fresh.messages("alice", start_msg_id=newest[0].msg_id, limit=5)
    say(f"    newest 5: {_short(newest[0])!r} .. {_short(newest[-1])!r}; the 5 before: "
        f"{_short(older[0])!r} .. {_short(older[-1])!r}")
    check(older[-1].timestamp <= newest[0].timestamp, "pages follow each other in time")
    media = bob.messages_by_type("alice", [MessageType.IMAGE, MessageType.VIDEO])
    check([m.type for m in media] == [MessageType.IMAGE, MessageType.VIDEO], "type filter")
    t0, t1 = sent[2].timestamp, sent[4].timestamp
    check(len(bob.messages_between("alice", t0, t1)) == 3, "time range filter (inclusive)")

    say("5. keyword search, English and Chinese")
    bob.insert_message(Message.text("bob", "我们明天在北京见面，好吗？", sender="alice"))
    for kw, scope in (("meet", SearchScope.CONTENT), ("北京", SearchScope.CONTENT),
                      ("agenda", SearchScope.CONTENT), ("sync", SearchScope.EXT)):
        hits = bob.search_messages(kw, scope=scope)
        say(f"    search {kw!r} in {scope.name}: {[_short(m)[:30] for m in hits]}")
    check(len(bob.search_messages("meet")) == 1, "'meet' finds 'meeting'")
    check(len(bob.search_messages("北京")) == 2, "'北京' finds the text and the location")
    check(len(bob.search_messages("weekly sync", scope=SearchScope.EXT)) == 1
          and not bob.search_messages("weekly sync"), "scope EXT searches ext values only")
    check(len(bob.search_messages("red_packet")) == 1, "custom messages are found by event")

    say("6. deletes: one-way (only alice's view) and two-way (the conversation, for everyone)")
    victim = sent[0].msg_id
    await ca.remove_messages_from_server("bob", ChatType.CHAT, msg_ids=[victim])
    mine = await ca.fetch_history_messages("bob", ChatType.CHAT, limit=50)
    theirs = await cb.fetch_history_messages("alice", ChatType.CHAT, limit=50, options=FetchOptions(
        direction=Direction.DOWN, save=False))
    check(victim not in {m.msg_id for m in mine.items} and alice.get_message(victim) is None
          and victim in {m.msg_id for m in theirs.items}, "one-way delete: bob still has it")
    await settle()  # receipts for what that fetch brought in leave before the conversation goes
    await ca.delete_conversation_from_server("bob", ChatType.CHAT)
    after = await cb.fetch_history_messages("alice", ChatType.CHAT, limit=50,
                                            options=FetchOptions(save=False))
    check(after.items == [] and alice.conversation("bob") is None,
          "two-way delete: nobody can fetch the conversation")

    say("7. failures: a lost answer (300), a dropped connection (510), a reconnection")
    server.faults.lost_answers = 2
    try:
        await ca.send_message(Message.text("bob", "this answer gets lost"))
        check(False, "expected error 300")
    except IMError as exc:
        say(f"    {exc}")
        check(exc.code == ErrorCode.SERVER_NOT_REACHABLE, "timed out, reconnected, retried: 300")
    failed = alice.messages("bob", limit=1)[0]
    check(failed.status == MessageStatus.FAIL, "the message is stored as FAIL")
    server.disconnect("alice", reconnect=False)
    try:
        await ca.send_message(Message.text("bob", "no connection"))
        check(False, "expected error 510")
    except IMError as exc:
        say(f"    {exc}")
        check(exc.code == ErrorCode.MESSAGE_WEBSOCKET_DISCONNECTED, "disconnected: 510")
    server.disconnect("alice", reconnect=True)
    pending = asyncio.ensure_future(ca.resend_message(failed.msg_id))
    await asyncio.sleep(0.05)
    server.restore("alice")
    resent = await pending
    check(resent.status == MessageStatus.SUCCESS, "a send waited through a reconnection, then went out")

    say("8. rich messages in the team group (bob on his new phone): reply, thread, reaction, pin")
    grp = ChatType.GROUP_CHAT
    q = await ca.send_message(Message.text("team", "Lunch on Friday?", chat_type=grp))
    await settle()
    await cf.send_message(Message.text("team", "Yes!", formatted="<b>Yes!</b>", reply_to=q.msg_id,
                                       chat_type=grp))
    await cf.send_message(Message.text("team", "Which place?", thread_id=q.msg_id, chat_type=grp))
    await cf.add_reaction(q.msg_id, "👍")
    await ca.pin_message(q.msg_id)
    await settle()
    check(all(s.messages("team")[-1].reply_to == q.msg_id
              and [m.body.text for m in s.thread_messages(q.msg_id)] == ["Which place?"]  # type: ignore[union-attr]
              and [(r.key, r.count) for r in s.reactions(q.msg_id)] == [("👍", 1)]
              and [m.msg_id for m in s.pinned_messages("team")] == [q.msg_id] for s in (alice, fresh)),
          "alice and bob see the reply, the thread reply in its thread only, one 👍, the pin")

    say("9. consistency")
    for name, s in stores.items():
        report = s.verify()
        check(report.ok, f"{name}: verify() found nothing to repair")
    for s in [*stores.values(), fresh]:
        s.close()


async def _matrix_demo(url: str, root: str, say: Callable[[str], None], check: _Check) -> None:
    """The walkthrough against a real Matrix homeserver: what a remote server lets a client show
    (the fault injections of sections 7 need the embedded server, so they are left out)."""
    from ..adapters.matrix import MatrixAdapter, demo_users

    tag = secrets.token_hex(3)
    ma, mb = await demo_users(url, names=(f"alice-{tag}", f"bob-{tag}"))
    a_id, b_id = ma.user_id, mb.user_id
    alice = MessageStore.open(os.path.join(root, "alice"), user_id=a_id)
    bob = MessageStore.open(os.path.join(root, "bob"), user_id=b_id)
    ca, cb = ChatClient(alice, ma), ChatClient(bob, mb)
    pa, pb = _Printer(a_id, say), _Printer(b_id, say)
    ca.add_listener(pa)
    cb.add_listener(pb)
    check.printers += [pa, pb]
    make = _file_maker(os.path.join(root, "outbox"))

    async def until(cond: Callable[[], bool], what: str) -> bool:
        for _ in range(200):  # the homeserver's /sync brings things back within a few seconds
            await ca.wait_idle()
            await cb.wait_idle()
            if cond():
                return True
            await asyncio.sleep(0.05)
        say(f"    (gave up waiting for {what})")
        return False

    try:
        say(f"\n1. {a_id} sends {b_id} one message of every type")
        sent = [
            await ca.send_message(Message.text(b_id, "Hi Bob! Are we still meeting tomorrow? 🙂")),
            await ca.send_message(Message.image(b_id, make("beach.png", _png(64, 48)), width=64,
                                                height=48)),
            await ca.send_message(Message.voice(b_id, make("hello.ogg", os.urandom(4000)), 2300)),
            await ca.send_message(Message.file(b_id, make("agenda.pdf", b"%PDF-1.4 agenda"))),
            await ca.send_message(Message.location(b_id, 39.9042, 116.4074, address="北京市东城区",
                                                   building_name="天安门")),
            await ca.send_message(Message.custom(b_id, "red_packet", {"amount": "8.88"})),
        ]
        check(all(m.status == MessageStatus.SUCCESS for m in sent), "every send succeeded")
        check(await until(lambda: bob.message_count(a_id) == len(sent), "bob's messages"),
              f"{b_id} received and stored all {len(sent)} messages")
        got = await cb.download_attachment(sent[3].msg_id)
        with open(got.body.local_path, "rb") as f:  # type: ignore[union-attr]
            check(f.read() == b"%PDF-1.4 agenda", "the PDF came back intact from the media repository")

        say("2. unread counts and receipts")
        check(bob.unread_count(a_id) == len(sent), f"{b_id} has {len(sent)} unread messages")
        await cb.ack_conversation_read(a_id)
        check(bob.unread_count(a_id) == 0, "bob read the conversation: unread is 0")
        check(await until(lambda: all(m.is_read_acked for m in alice.messages(b_id)),
                          "the read receipt"), "alice sees every message read (m.read)")

        say("3. history on a new device, paged")
        phone = await MatrixAdapter.login(url, f"bob-{tag}", f"imstore-demo-bob-{tag}")
        fresh = MessageStore.open(os.path.join(root, "bob-new-phone"), user_id=b_id)
        try:
            cf = ChatClient(fresh, phone)
            await cf.fetch_conversations_from_server()
            cursor: str | None = None
            while True:
                page = await cf.fetch_history_messages(a_id, ChatType.CHAT, cursor=cursor, limit=2)
                cursor = page.cursor
                if cursor is None:
                    break
            check(fresh.message_count(a_id) == len(sent), "history paged in without duplicates")
        finally:
            fresh.close()
            await phone.close()

        say("4. search, recall and edit")
        check(len(bob.search_messages("meet")) == 1 and len(bob.search_messages("北京")) == 1,
              "keyword search in English and Chinese")
        edited = await ca.edit_message(sent[0].msg_id, TextBody("Hi Bob! Lunch tomorrow?"))
        check(edited.edited_at is not None, "alice edited her text (m.replace)")
        check(await until(lambda: bool(bob.search_messages("lunch")), "the edit"),
              "bob sees the new text; search finds it")
        await ca.recall_message(sent[5].msg_id)
        check(await until(lambda: (bob.get_message(sent[5].msg_id) or sent[5]).recalled_at
                          is not None, "the recall"), "a recall (redaction) reached bob")

        say("5. deletes: one-way")
        await ca.remove_messages_from_server(b_id, ChatType.CHAT, msg_ids=[sent[4].msg_id])
        check(alice.get_message(sent[4].msg_id) is None and bob.get_message(sent[4].msg_id)
              is not None, "removed for alice only")
        for name, st in (("alice", alice), ("bob", bob)):
            check(st.verify().ok, f"{name}: verify() found nothing to repair")
    finally:
        alice.close()
        bob.close()
        await ma.close()
        await mb.close()


def run_demo(verbose: bool = True, as_json: bool = False, matrix_url: str | None = None) -> int:
    """Run the demo; returns the exit code (0: every check passed). ``as_json`` prints one JSON
    object (the checks and the counts) instead of text."""
    lines: list[str] = []
    verbose = verbose and not as_json

    def say(line: str) -> None:
        lines.append(line)
        if verbose:
            print(line, flush=True)

    check = _Check(say)
    root = tempfile.mkdtemp(prefix="imstore-demo-")
    try:
        if matrix_url:
            say(f"imstore demo: two new users on the Matrix homeserver {matrix_url} (stores in {root})")
            asyncio.run(_matrix_demo(matrix_url, root, say, check))
        else:
            say(f"imstore demo: alice, bob and carol on an embedded MemoryServer (stores in {root})")
            asyncio.run(_demo(root, say, check))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    passed = sum(1 for line in lines if line.startswith("  ok "))
    if as_json:
        checks = [{"ok": line.startswith("  ok "), "check": line[6:].strip()} for line in lines
                  if line.startswith(("  ok ", "  FAIL"))]
        print(json.dumps({"passed": passed, "failed": check.failed, "checks": checks},
                         ensure_ascii=False, indent=1))
    else:
        print(f"demo: {passed} checks passed, {check.failed} failed")
    return 1 if check.failed else 0


