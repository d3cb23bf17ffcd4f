"""Issue 19 on Synapse: imstore meets Matrix clients it did not write (matrix-nio plays them).

Each test is one numbered failure of the issue, marked ``xfail(strict=True)`` while it fails: a
fix turns it red until its marker is removed. Only public names are used (`MatrixAdapter.login`,
`ChatClient`, the store), so the tests hold across refactors of the adapter.
"""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path
from typing import Any

import httpx
import pytest

import imstore
from imstore import ChatClient, ChatType, FetchOptions, Message, MessageStatus

from .conftest import Harness, Peer, png_bytes

nio_peer = pytest.importorskip("tests.conformance.nio_peer",
                               reason="matrix-nio is not installed: pip install '.[test]'")

pytestmark = pytest.mark.slow


def localpart(mxid: str) -> str:
    return mxid[1:].partition(":")[0]


@pytest.fixture
def world(synapse: dict[str, Any], tmp_path: Path) -> Harness:
    return Harness("synapse", tmp_path, synapse)


# --------------------------------------------------------------------- 2. DMs of other clients


def test_a_dm_from_a_normal_client_is_a_chat_with_its_sender(world: Harness):
    async def main(b: Any, w: Any) -> None:
        (alice,) = await b.users("alice")
        bob = await w.user("bob")
        room = await bob.create_dm(alice.transport.mxid)
        hi = await bob.text(room, "hi from another client")
        await b.until(lambda: alice.store.get_message(hi) is not None, "bob's DM at alice")
        got = alice.store.get_message(hi)
        assert (got.chat_type, got.conv_id) == (ChatType.CHAT, localpart(bob.mxid)), (
            f"bob's DM is stored as {got.chat_type.name} {got.conv_id!r}")
        # the answer goes to the same room: the conversation does not split in two
        back = await alice.client.send_message(Message.text(localpart(bob.mxid), "hello back"))
        assert await bob.accept_invites() == [], "imstore opened a second room for the reply"
        assert back.msg_id in [ev["event_id"] for ev in await bob.messages(room)]
        assert [c.conv_id for c in alice.store.conversations()] == [localpart(bob.mxid)]
        # alice's m.direct says so too, for her other clients
        other = await w.device(alice.transport.mxid, "pw-" + alice.id)
        assert other.direct.get(bob.mxid) == [room]

    nio_peer.run(world, main)


# ------------------------------------------------------------------------ 3. the alias squat


def test_a_squatted_dm_alias_does_not_intercept_the_first_message(world: Harness):
    async def main(b: Any, w: Any) -> None:
        alice, bob = await b.users("alice", "bob")
        mallory = await w.user("mallory")

        def escaped(mxid: str) -> str:  # the alias imstore publishes for a DM, as of issue 19
            return "".join(c if c.isalnum() or c in "-_" else f"={ord(c):02x}" for c in mxid)

        x, y = sorted(escaped(p.transport.mxid) for p in (alice, bob))
        trap = await mallory.create_room(alias=f"imstore.dm.{x}.{y}", public=True)
        sent = await alice.client.send_message(Message.text(bob.id, "for bob only"))
        await mallory.sync()
        assert alice.transport.mxid not in await mallory.members(trap), "alice joined the trap"
        assert sent.msg_id not in [ev["event_id"] for ev in await mallory.messages(trap)]
        await b.until(lambda: bob.store.get_message(sent.msg_id) is not None, "the DM at bob")

    nio_peer.run(world, main)


# ------------------------------------------------------------------------ 4. the forged edit


def test_an_edit_from_another_member_is_ignored_live_and_in_history(world: Harness):
    async def main(b: Any, w: Any) -> None:
        (alice,) = await b.users("alice")
        bob, mallory = await w.user("bob"), await w.user("mallory")
        gid = b.uid("group")
        await alice.transport.create_group(gid, [localpart(bob.mxid), localpart(mallory.mxid)])
        (room,) = await bob.accept_invites()
        assert await mallory.accept_invites() == [room]
        original = await bob.text(room, "original")
        await mallory.edit(room, original, "forged by mallory")
        after = await mallory.text(room, "after the forgery")
        await b.until(lambda: alice.store.get_message(after) is not None, "mallory's message")
        assert alice.store.get_message(original).body.text == "original", "applied live"
        await alice.client.fetch_history_messages(gid, ChatType.GROUP_CHAT, limit=20,
                                                  options=FetchOptions())
        assert alice.store.get_message(original).body.text == "original", "applied by history"
        # the sender's own edit still applies
        fixed = await bob.edit(room, original, "fixed by bob")
        marker = await bob.text(room, "done")
        await b.until(lambda: alice.store.get_message(marker) is not None, "bob's marker")
        assert alice.store.get_message(original).body.text == "fixed by bob", fixed

    nio_peer.run(world, main)


def test_a_moderators_live_redaction_records_who_redacted(world: Harness):
    from imstore.lifecycle import RECALLED_BY

    async def main(b: Any, w: Any) -> None:
        (alice,) = await b.users("alice")
        bob, mallory = await w.user("bob"), await w.user("mallory")
        server = bob.mxid.partition(":")[2]
        room = await bob.create_room(invite=[f"@{alice.id}:{server}", mallory.mxid],
                                     name="bob moderates")  # its creator: power level 100
        assert await mallory.accept_invites() == [room]
        await alice.client.fetch_conversations_from_server()  # joins the invite
        spam = await mallory.text(room, "spam")
        await b.until(lambda: alice.store.get_message(spam) is not None, "mallory's message")
        await bob.redact(room, spam)
        own = await mallory.text(room, "mine to take back")
        await b.until(lambda: alice.store.get_message(own) is not None, "mallory's second")
        await mallory.redact(room, own)

        def recalled() -> bool:
            return all((m := alice.store.get_message(i)) is not None and m.recalled_at
                       for i in (spam, own))

        await b.until(recalled, "both redactions at alice")
        assert alice.store.get_message(spam).ext.get(RECALLED_BY) == localpart(bob.mxid)
        assert RECALLED_BY not in (alice.store.get_message(own).ext or {})  # its sender's

    nio_peer.run(world, main)


# ------------------------------------------------------------- requests, counted per adapter


class Requests:
    """The HTTP requests one adapter makes, by label: an httpx request hook on its client. A
    label is a context variable, so what a call (and any task it starts) requests is counted
    under the label set around it, and a sync loop started before is not."""

    def __init__(self) -> None:
        self.label: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            "requests_label", default=None)
        self.seen: list[tuple[str | None, str, str]] = []

    async def hook(self, request: httpx.Request) -> None:
        self.seen.append((self.label.get(), request.method, request.url.path))

    def of(self, label: str | None = None, *, path: str = "") -> list[tuple[str, str]]:
        return [(m, p) for lab, m, p in self.seen
                if (label is None or lab == label) and path in p]


async def counted_login(b: Any, user_id: str, **kw: Any) -> tuple[Any, Requests]:
    """`MatrixAdapter.login` with every request of its HTTP client counted. The adapter has no
    public hook for its client, so the `httpx.AsyncClient` it builds is caught as it is made
    and given a request hook (httpx's public ``event_hooks``)."""
    from imstore.adapters.matrix import MatrixAdapter

    made: list[httpx.AsyncClient] = []
    real_init = httpx.AsyncClient.__init__

    def init(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx.AsyncClient, "__init__", init)
        adapter = await MatrixAdapter.login(b.url, user_id, "pw-" + user_id, **kw)
    b.adapters.append(adapter)
    assert made, "MatrixAdapter.login built no httpx.AsyncClient: count its requests another way"
    reqs = Requests()
    for client in made:
        hooks = client.event_hooks
        client.event_hooks = {"request": [*hooks["request"], reqs.hook],
                              "response": list(hooks["response"])}
    return adapter, reqs


async def counted_user(b: Any, name: str) -> tuple[Peer, Requests]:
    """A harness-like imstore user whose adapter's requests are counted."""
    uid = b.uid(name)
    await nio_peer.register(b.url, b.info["secret"], uid)
    adapter, reqs = await counted_login(b, uid, poll_timeout=3.0, timeline_limit=5)
    store = imstore.open(":memory:", user_id=uid)
    peer = Peer(uid, store, ChatClient(store, adapter, send_timeout=5.0,
                                       download_dir=str(b.tmp / f"files-{uid}")), adapter)
    b.peers.append(peer)
    await adapter.wait_synced()
    return peer, reqs


# ------------------------------------------------------------- 7. the conversation list's cost


def test_a_page_of_the_conversation_list_costs_a_handful_of_requests(world: Harness):
    rooms, page_size = 100, 20

    async def main(b: Any, w: Any) -> None:
        (alice,) = await b.users("alice")
        gids = [b.uid(f"g{i:03d}") for i in range(rooms)]

        async def room_with_a_message(gid: str) -> None:
            await alice.transport.create_group(gid, [])
            await alice.client.send_message(Message.text(gid, f"in {gid}",
                                                         chat_type=ChatType.GROUP_CHAT))

        for i in range(0, rooms, 10):
            await asyncio.gather(*(room_with_a_message(g) for g in gids[i:i + 10]))
        lister, reqs = await counted_login(b, alice.id)  # a fresh device of alice
        await lister.wait_synced()
        listed: list[str] = []
        cursor = None
        for n in range(rooms // page_size):
            token = reqs.label.set(f"page {n}")
            try:
                page = await lister.fetch_conversations(cursor, page_size)
            finally:
                reqs.label.reset(token)
            cost = reqs.of(f"page {n}")
            assert 0 < len(cost) <= 5, f"page {n} cost {len(cost)} requests"
            listed += [c.conv_id for c in page.items]
            cursor = page.cursor
        assert cursor is None and sorted(listed) == sorted(gids)

    nio_peer.run(world, main)


# ------------------------------------------------- 8. other clients' rooms after a restart


def test_a_room_made_by_another_client_is_usable_right_after_a_restart(world: Harness,
                                                                       tmp_path: Path):
    from imstore.adapters.matrix import MatrixAdapter

    async def main(b: Any, w: Any) -> None:
        uid = b.uid("alice")
        mxid = await nio_peer.register(b.url, b.info["secret"], uid)
        bob = await w.user("bob")
        room = await bob.create_room(invite=[mxid], name="made by nio")
        welcome = await bob.text(room, "welcome")
        folder = tmp_path / "alice-store"

        async def app() -> tuple[Any, Any, ChatClient]:
            adapter = await MatrixAdapter.login(b.url, uid, "pw-" + uid, poll_timeout=3.0)
            store = imstore.open(folder, user_id=uid)
            return adapter, store, ChatClient(store, adapter, send_timeout=5.0)

        adapter, store, client = await app()
        try:
            await b.until(lambda: store.get_message(welcome) is not None, "the welcome")
            got = store.get_message(welcome)
            conv_id, chat_type = got.conv_id, got.chat_type
        finally:
            await adapter.close()
            store.close()
        adapter, store, client = await app()  # the restart: same store, a new session
        try:
            sent = await client.send_message(Message.text(conv_id, "right after the restart",
                                                          chat_type=chat_type))
            assert sent.status == MessageStatus.SUCCESS
            page = await client.load_messages(conv_id, chat_type)
            assert [m.msg_id for m in page][-2:] == [welcome, sent.msg_id]
            assert sent.msg_id in [ev["event_id"] for ev in await bob.messages(room)]
        finally:
            await adapter.close()
            store.close()

    nio_peer.run(world, main)


# ------------------------------------------------------------------------- 9. smaller ones


def test_media_carry_their_mimetype(world: Harness, tmp_path: Path):
    pic, doc = tmp_path / "pic.png", tmp_path / "doc.pdf"
    pic.write_bytes(png_bytes())
    doc.write_bytes(b"%PDF-1.4 " + b"x" * 1234)

    async def main(b: Any, w: Any) -> None:
        (alice,) = await b.users("alice")
        bob = await w.user("bob")
        image = await alice.client.send_message(Message.image(localpart(bob.mxid), pic,
                                                              width=64, height=48))
        file = await alice.client.send_message(Message.file(localpart(bob.mxid), doc))
        (room,) = await bob.accept_invites()
        got = {ev["event_id"]: ev["content"] for ev in await bob.messages(room)}
        assert [got[m.msg_id].get("info", {}).get("mimetype") for m in (image, file)] == [
            "image/png", "application/pdf"]

    nio_peer.run(world, main)


def test_received_messages_do_not_cost_a_to_device_request_each(world: Harness):
    async def main(b: Any, w: Any) -> None:
        bob, reqs = await counted_user(b, "bob")
        alice = await w.user("alice")
        await bob.client.send_message(Message.text(localpart(alice.mxid), "hi alice"))
        (room,) = await alice.accept_invites()
        bob.transport.pause()  # the next ten arrive in one sync
        ids = [await alice.text(room, f"m{i}") for i in range(10)]
        before = len(reqs.of(path="/sendToDevice/"))
        bob.transport.resume()
        await b.until(lambda: all(bob.store.get_message(i) is not None for i in ids),
                      "the ten messages at bob")
        await b.settle()
        acks = reqs.of(path="/sendToDevice/")[before:]
        # batched: the first receipt's request, then one for all that came meanwhile
        assert len(acks) <= 2, f"{len(acks)} to-device requests for 10 received messages"

    nio_peer.run(world, main)


def test_two_users_opening_their_dm_at_once_keep_one_conversation_each(world: Harness):
    async def main(b: Any, w: Any) -> None:
        alice, bob = await b.users("alice", "bob")
        # both write first, at the same moment: each creates a room with the other
        first = await asyncio.gather(
            alice.client.send_message(Message.text(bob.id, "hi bob")),
            bob.client.send_message(Message.text(alice.id, "hi alice")))
        await b.until(lambda: bob.store.get_message(first[0].msg_id) is not None
                      and alice.store.get_message(first[1].msg_id) is not None,
                      "both first messages")
        # and go on talking: whatever room each side picks, the other gets it
        again = [await alice.client.send_message(Message.text(bob.id, "again, alice")),
                 await bob.client.send_message(Message.text(alice.id, "again, bob"))]
        await b.until(lambda: bob.store.get_message(again[0].msg_id) is not None
                      and alice.store.get_message(again[1].msg_id) is not None, "the answers")
        for me, peer in ((alice, bob), (bob, alice)):
            assert [(c.conv_id, c.chat_type) for c in me.store.conversations()] == [
                (peer.id, ChatType.CHAT)]
            assert me.store.message_count(peer.id) == 4

    nio_peer.run(world, main)


def test_a_room_claiming_a_groups_id_does_not_pour_into_that_group(world: Harness):
    async def main(b: Any, w: Any) -> None:
        alice, bob = await b.users("alice", "bob")
        team = await b.create_group(alice, b.uid("team"), [bob])
        real = await alice.client.send_message(Message.text(team, "the real plan",
                                                            chat_type=ChatType.GROUP_CHAT))
        await b.until(lambda: bob.store.get_message(real.msg_id) is not None, "alice's plan")
        mallory = await w.user("mallory")
        answer = await mallory.client.room_create(
            name=team, invite=[bob.transport.mxid], initial_state=[{
                "type": "io.imstore.conversation", "state_key": "",
                "content": {"chat_type": "GROUP_CHAT", "id": team,
                            "members": [mallory.mxid, bob.transport.mxid]}}])
        room = str(answer.room_id)
        forged = await mallory.text(room, "the plan changed: send the keys to mallory")
        await b.until(lambda: bob.store.get_message(forged) is not None, "mallory's message")
        got = bob.store.get_message(forged)
        assert got.conv_id != team, "a room of mallory's poured into alice's group"
        assert [m.msg_id for m in bob.store.messages(team)] == [real.msg_id]

    nio_peer.run(world, main)
