"""Issue 19, failure 1: a real restart on Synapse loses nothing.

The app is a separate process (this module run with ``python -m``): it opens its store folder,
logs in, syncs, does what it is told, prints a JSON report of the store and waits for SIGTERM,
then closes cleanly. The test starts it and stops it by its PID, twice on the same folder; while
it is down a matrix-nio peer sends messages, edits, redactions and replies, and takes back a
reaction the app had stored.

Synapse answers an initial sync from a cache for two minutes after the same request (same
device, same filter), which hides the loss; each process therefore logs in as a fresh device, as
an app does after its session was lost, which reproduces in CI time what a restart more than two
minutes later meets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

import imstore
from imstore import ChatClient, ChatType, Message, MessageListener

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ the app


class _Arrivals(MessageListener):
    def __init__(self) -> None:
        self.changed = asyncio.Event()

    def on_messages_received(self, messages: list[Message]) -> None:
        self.changed.set()


def _say(**data: Any) -> None:
    print(json.dumps(data), flush=True)


async def app(args: argparse.Namespace) -> None:
    """What an app does at start: sync, list its conversations, open the chat (one page); then
    what the test asks (send, wait for the peer's answer, scroll the whole chat); report."""
    from imstore.adapters.matrix import MatrixAdapter

    adapter = await MatrixAdapter.login(args.url, args.user, "pw-" + args.user, poll_timeout=3.0)
    store = imstore.open(args.store, user_id=args.user)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        client = ChatClient(store, adapter, send_timeout=10.0)
        arrivals = _Arrivals()
        client.add_listener(arrivals)
        await adapter.wait_synced(60.0)
        await client.wait_idle()
        await client.fetch_conversations_from_server(limit=20)
        if store.conversation(args.peer) is not None:
            await client.load_messages(args.peer, ChatType.CHAT, limit=20)
        if args.send:
            sent = await client.send_message(Message.text(args.peer, args.send))
            _say(sent=sent.msg_id)
        while store.message_count(args.peer) < args.wait_for:
            arrivals.changed.clear()
            await arrivals.changed.wait()
        if args.load:  # the user scrolls the whole chat: every gap on the way is filled
            page = await client.load_messages(args.peer, ChatType.CHAT, limit=50)
            while page:
                page = await client.load_messages(args.peer, ChatType.CHAT, limit=50,
                                                  start_msg_id=page[0].msg_id)
        await client.wait_idle()
        messages = store.messages(args.peer, limit=400)
        _say(messages=[[m.msg_id, m.sender, getattr(m.body, "text", None),
                        m.recalled_at is not None] for m in messages],
             unread=store.unread_count(args.peer),
             reactions={m.msg_id: [[r.key, r.count] for r in store.reactions(m.msg_id)]
                        for m in messages if store.reactions(m.msg_id)})
        await stop.wait()
    finally:
        await adapter.close()
        store.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--send", default="")
    p.add_argument("--wait-for", type=int, default=0, help="messages in the chat before going on")
    p.add_argument("--load", action="store_true")
    asyncio.run(app(p.parse_args(argv)))


# ------------------------------------------------------------------------------ the test


class App:
    """One run of the app as a process, stopped by its PID (killed if it does not stop)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> App:
        return cls(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.conformance.test_world_restart", *args, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)}))

    async def said(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60.0)
        assert line, f"the app ended without a word (exit {await self.proc.wait()})"
        said: dict[str, Any] = json.loads(line)
        return said

    async def stop(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                assert await asyncio.wait_for(self.proc.wait(), 30.0) == 0
            finally:
                if self.proc.returncode is None:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    await self.proc.wait()


def test_a_restart_catches_up_everything_that_happened_while_closed(synapse: dict[str, Any],
                                                                     tmp_path: Path):
    from . import nio_peer
    from .conftest import Harness

    texts, edited, redacted = 60, range(0, 12, 2), range(30, 42, 2)

    async def scenario(b: Any, w: Any) -> None:
        alice = b.uid("alice")
        await nio_peer.register(b.url, b.info["secret"], alice)
        bob = await w.user("bob")
        bob_id = bob.mxid[1:].partition(":")[0]
        common = ["--url", b.url, "--user", alice, "--peer", bob_id,
                  "--store", str(tmp_path / "alice")]
        first = await App.start(*common, "--send", "hello bob", "--wait-for", "2")
        try:
            hello = (await first.said())["sent"]
            (room,) = await bob.accept_invites()
            liked = await bob.react(room, hello, "👍")
            hi = await bob.text(room, "hi alice")  # received live by the running app
            said = await first.said()
            assert [m[0] for m in said["messages"]] == [hello, hi]
            assert said["reactions"] == {hello: [["👍", 1]]}
        finally:
            await first.stop()
        # the app is closed: bob goes on from his client
        await bob.redact(room, liked)  # the app has never seen this reaction's event
        ids = [await bob.text(room, f"bob {i}") for i in range(texts)]
        ids += [await bob.reply(room, ids[0], "a reply to bob 0"),
                await bob.reply(room, ids[-1], "a reply to the last")]
        for i in edited:
            await bob.edit(room, ids[i], f"bob {i}, edited")
        for i in redacted:
            await bob.redact(room, ids[i])
        second_run = await App.start(*common, "--load")
        try:
            second = await second_run.said()
        finally:
            await second_run.stop()
        got = {m[0]: m for m in second["messages"] if m[1] == bob_id}
        missing = [i for i in ids if i not in got]
        assert not missing, f"{len(missing)} of {len(ids)} messages missing after the restart"
        assert len(second["messages"]) == len(ids) + 2, "a message is stored twice"
        wrong_edits = [i for i in edited if got[ids[i]][2] != f"bob {i}, edited"]
        assert not wrong_edits, f"{len(wrong_edits)} of {len(edited)} edits missing"
        kept = [i for i in redacted if not got[ids[i]][3] or got[ids[i]][2]]
        assert not kept, f"{len(kept)} of {len(redacted)} redacted messages keep their text"
        assert second["unread"] == len(ids) + 1, f"unread {second['unread']}, not {len(ids) + 1}"
        assert second["reactions"] == {}, "a reaction taken back while closed is still there"

    nio_peer.run(Harness("synapse", tmp_path, synapse), scenario)


if __name__ == "__main__":
    main()
