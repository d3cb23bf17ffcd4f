"""The Matrix adapter: its pure mapping (user ids and contents survive the round trip), and the
demo's helper against a live Synapse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imstore import ChatType, Message, MessageType
from imstore.message import CustomBody, TextBody

mp = pytest.importorskip("imstore.adapters.matrix._mapping",
                         reason="the Matrix adapter needs httpx: pip install 'imstore[matrix]'")

ME = "@alice:example.org"
ROOM = mp.RoomInfo("!r:example.org", "bob", ChatType.CHAT)


@given(st.text(min_size=1, max_size=40))
def test_any_user_id_round_trips_through_a_valid_localpart(user_id: str):
    local = mp.escape_localpart(user_id)
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789._=-/+" for c in local)
    assert not local.startswith("_")
    assert mp.unescape_localpart(local) == user_id
    assert mp.from_mxid(mp.to_mxid(user_id, "example.org"), "example.org") == user_id


@pytest.mark.parametrize("user_id, local", [("alice", "alice"), ("Bob", "=42ob"),
                                            ("a_b", "a_b"), ("_x", "=5fx"), ("a=b", "a=3db")])
def test_plain_ids_stay_readable(user_id: str, local: str):
    assert mp.escape_localpart(user_id) == local


def test_users_of_other_servers_keep_their_full_id():
    assert mp.from_mxid("@carol:elsewhere.net", "example.org") == "@carol:elsewhere.net"
    assert mp.to_mxid("@carol:elsewhere.net", "example.org") == "@carol:elsewhere.net"


def event(content: dict, sender: str = "@bob:example.org", **unsigned) -> dict:
    return {"type": "m.room.message", "event_id": "$e1", "sender": sender,
            "origin_server_ts": 1_700_000_000_123, "content": content, "unsigned": unsigned}


MESSAGES = [
    Message.text("bob", "hello 你好", ext={"k": "v", "n": 1}),
    Message.location("bob", 48.85, 2.35, address="Paris", building_name="Louvre"),
    Message.custom("bob", "red_packet", {"amount": "5"}),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: m.type.name)
def test_contents_round_trip_with_imstore_fields(msg: Message):
    msg.sender = "alice"
    back = mp.event_to_message(event(mp.message_content(msg), sender=ME), ROOM, ME,
                               "example.org")
    assert back is not None
    assert (back.type, back.body, back.ext, back.sender, back.conv_id) == (
        msg.type, msg.body, msg.ext, "alice", "bob")
    assert getattr(back, "local_id", msg.msg_id) == msg.msg_id


def test_file_contents_keep_size_dimensions_and_duration():
    from imstore.message import ImageBody, VideoBody, VoiceBody

    for body, mtype in ((ImageBody(remote_url="mxc://s/i", display_name="p.png", size=9,
                                   width=3, height=2), MessageType.IMAGE),
                        (VoiceBody(remote_url="mxc://s/v", display_name="v.ogg", duration_ms=1500),
                         MessageType.VOICE),
                        (VideoBody(remote_url="mxc://s/m", display_name="m.mp4", duration_ms=9,
                                   thumbnail_url="mxc://s/t"), MessageType.VIDEO)):
        got = mp.body_from_content(mp.body_content(mtype, body))
        assert got is not None and got[0] == mtype
        back = got[1]
        assert (back.remote_url, back.display_name, back.size) == (
            body.remote_url, body.display_name, body.size)
    image = mp.body_from_content(mp.body_content(MessageType.IMAGE, ImageBody(
        remote_url="mxc://s/i", width=3, height=2)))[1]
    assert (image.width, image.height, image.thumbnail_url) == (3, 2, "mxc://s/i#thumbnail")


def test_messages_of_other_clients_map_to_the_nearest_type():
    assert mp.body_from_content({"msgtype": "m.notice", "body": "bot"}) == (
        MessageType.TEXT, TextBody("bot"))
    assert mp.body_from_content({"msgtype": "org.example.poll", "body": "vote"}) == (
        MessageType.TEXT, TextBody("vote"))
    assert mp.body_from_content({"no": "body"}) is None


def test_edits_redactions_and_state_are_not_messages():
    edit = mp.edit_content("$orig", MessageType.TEXT, TextBody("new"))
    assert mp.replacement(event(edit)) == ("$orig", {"msgtype": "m.text", "body": "new"})
    assert mp.event_to_message(event(edit), ROOM, ME, "example.org") is None
    assert mp.redacted_id({"type": "m.room.redaction", "content": {"redacts": "$x"}}) == "$x"
    assert mp.event_to_message({"type": "m.room.member", "content": {}}, ROOM, ME,
                               "example.org") is None


def test_a_bundled_edit_and_a_redaction_show_in_history():
    edit = {"origin_server_ts": 1_700_000_000_999, "sender": "@bob:example.org",
            "content": mp.edit_content("$e1", MessageType.CUSTOM, CustomBody("card", {"v": "2"}))}
    content = mp.message_content(Message.custom("bob", "card", {"v": "1"}))
    forged = mp.event_to_message(event(content, **{"m.relations": {"m.replace": {
        **edit, "sender": "@mallory:example.org"}}}), ROOM, ME, "example.org")
    assert forged is not None and forged.body == CustomBody("card", {"v": "1"})
    assert forged.edited_at is None, "an edit by another member is no edit"
    got = mp.event_to_message(event(content, **{"m.relations": {"m.replace": edit}}), ROOM, ME,
                              "example.org", history=True, read_up_to=None)
    assert got is not None and got.body == CustomBody("card", {"v": "2"})
    assert getattr(got, "edited_at", 1_700_000_000_999) == 1_700_000_000_999
    assert got.is_read is False
    redaction = {"origin_server_ts": 1_700_000_001_000,
                 "content": {"redacts": "$e1", "io.imstore.type": "CUSTOM"}}
    gone = mp.event_to_message(event({}, redacted_because=redaction), ROOM, ME, "example.org")
    assert gone is not None and gone.type == MessageType.CUSTOM
    assert gone.body == CustomBody("")
    assert getattr(gone, "recalled_at", 1_700_000_001_000) == 1_700_000_001_000
    assert gone.ext == {}
    moderated = mp.event_to_message(event({}, redacted_because={
        **redaction, "sender": "@mod:example.org"}), ROOM, ME, "example.org")
    assert moderated is not None and moderated.ext == {mp.RECALLED_BY: "mod"}


def test_an_edit_applies_only_from_the_sender_of_the_original():
    edit = {**event(mp.edit_content("$orig", MessageType.TEXT, TextBody("new"))),
            "event_id": "$ed", "origin_server_ts": 1_700_000_000_500}
    original = ("@bob:example.org", 1_700_000_000_000)
    got = mp.edit_to_message(edit, ROOM, ME, "example.org", original)
    assert got is not None and (got.msg_id, got.body, got.edited_at) == (
        "$orig", TextBody("new"), 1_700_000_000_500)
    assert mp.edit_to_message(edit, ROOM, ME, "example.org", ("@mallory:example.org", 1)) is None
    assert mp.edit_to_message(edit, ROOM, ME, "example.org", None) is None
    assert not mp.takes_change("", "") and not mp.takes_change(None, None)


def test_rooms_map_to_conversations():
    # a room's state is written by whoever made it: it never makes a room a chat (m.direct does)
    state = mp.conv_state(ChatType.CHAT, "", ["@alice:s", "@bob:s"])
    assert mp.room_info("!a:s", state, "@alice:s", "s") == mp.RoomInfo("!a:s", "!a:s",
                                                                       ChatType.GROUP_CHAT)
    assert mp.room_info("!a:s", state, "@alice:s", "s", "@bob:s") == mp.RoomInfo(
        "!a:s", "bob", ChatType.CHAT)
    group = mp.conv_state(ChatType.GROUP_CHAT, "team", ["@alice:s"])
    assert mp.room_info("!g:s", group, "@alice:s", "s").conv_id == "team"
    assert mp.room_info("!d:s", None, "@alice:s", "s", direct_peer="@carol:s") == mp.RoomInfo(
        "!d:s", "carol", ChatType.CHAT)
    assert mp.room_info("!x:s", None, "@alice:s", "s").chat_type == ChatType.GROUP_CHAT


def test_a_direct_invite_names_its_inviter():
    def invite(**content: object) -> dict:
        return {"invite_state": {"events": [
            {"type": "m.room.member", "state_key": "@alice:s", "sender": "@bob:s",
             "content": {"membership": "invite", **content}}]}}

    assert mp.direct_inviter(invite(is_direct=True), "@alice:s") == "@bob:s"
    assert mp.direct_inviter(invite(), "@alice:s") is None
    assert mp.direct_inviter(invite(is_direct="yes"), "@alice:s") is None
    assert mp.direct_inviter(invite(is_direct=True), "@carol:s") is None
    assert mp.direct_inviter({"invite_state": 5}, "@alice:s") is None


def test_demo_users_on_synapse_register_once_then_log_in(synapse: dict):
    import asyncio
    import secrets

    from imstore.adapters.matrix import demo_users

    names = (f"demo-a-{secrets.token_hex(3)}", f"demo-b-{secrets.token_hex(3)}")

    async def main() -> None:
        for _ in range(2):  # the second time the users exist: they log in
            a, b = await demo_users(synapse["url"], shared_secret=synapse["secret"], names=names)
            try:
                assert (a.user_id, b.user_id) == names
            finally:
                await a.close()
                await b.close()

    asyncio.run(main())


def test_demo_users_on_synapse_without_the_secret_use_open_registration(synapse: dict):
    import asyncio
    import secrets

    from imstore.adapters.matrix import demo_users

    if "script" not in synapse:
        pytest.skip("only the script's Synapse is known to allow open registration")
    names = (f"open-a-{secrets.token_hex(3)}", f"open-b-{secrets.token_hex(3)}")

    async def main() -> None:
        a, b = await demo_users(synapse["url"], names=names)
        try:
            assert (a.user_id, b.user_id) == names
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())
