"""Issue 19 on Synapse: imstore meets Matrix clients it did not write (matrix-nio plays them).

Each test is one numbered failure of the issue, marked ``xfail(strict=True)`` while it fails: a
fix turns it red until its marker is removed. Only public names are used (`MatrixAdapter.login`,
`ChatClient`, the store), so the tests hold across refactors of the adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imstore import ChatType, FetchOptions, Message

from .conftest import Harness

nio_peer = pytest.importorskip("tests.conformance.nio_peer",
                               reason="matrix-nio is not installed: pip install '.[test]'")

pytestmark = pytest.mark.slow


def localpart(mxid: str) -> str:
    return mxid[1:].partition(":")[0]


@pytest.fixture
def world(synapse: dict[str, Any], tmp_path: Path) -> Harness:
    return Harness("synapse", tmp_path, synapse)


# --------------------------------------------------------------------- 2. DMs of other clients


@pytest.mark.xfail(strict=True, reason="issue 19: a DM from a normal Matrix client (is_direct, "
                   "m.direct) becomes a GROUP_CHAT named after the room id")
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

    nio_peer.run(world, main)


# ------------------------------------------------------------------------ 3. the alias squat


@pytest.mark.xfail(strict=True, reason="issue 19: a public room holding the predictable alias "
                   "#imstore.dm.<a>.<b> receives the first private message")
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


@pytest.mark.xfail(strict=True, reason="issue 19: an m.replace from another member rewrites "
                   "someone else's message")
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
