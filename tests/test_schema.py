"""Schema 3 and its migrations, and stored rows that cannot be read (issue 24, item 3): each
comes back as a value that says so, no page or list fails because of it, verify reports it and
repairs what is certain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import imstore
from imstore import ChatType, Message, MessageStore, MessageType
from imstore.message import UndecodableBody
from imstore.store._schema import SCHEMA_VERSION

V2_DUMP = Path(__file__).parent / "data" / "store_v2.sql"


def v2_store(path: Path) -> Path:
    """A store directory holding the database the schema-2 imstore wrote (its index is gone:
    the index is a cache, rebuilt from SQLite)."""
    path.mkdir()
    con = sqlite3.connect(path / "imstore.db")
    con.executescript(V2_DUMP.read_text(encoding="utf-8"))
    con.close()
    return path


def test_a_version_2_store_migrates_with_everything(tmp_path: Path):
    with imstore.open(v2_store(tmp_path / "old"), user_id="alice") as s:
        assert s.connection.one("SELECT value FROM meta WHERE key = 'schema_version'")[0] == \
            str(SCHEMA_VERSION)
        assert [m.msg_id for m in s.messages("bob")] == ["m1", "m2", "m3", "m4", "m5"]
        assert [m.msg_id for m in s.messages("team")] == ["g1", "g2", "g3"]
        assert s.get_message("g3").recalled_at == 8500
        assert s.get_message("m4").ext == {"note": "meet here"}
        assert s.get_message("m5").body.display_name == "beach.png"
        assert (s.unread_count("bob"), s.unread_count("team"), s.total_unread_count()) == (3, 3, 6)
        assert [c.conv_id for c in s.conversations()] == ["team", "bob", "empty"]
        assert s.is_deleted("g4")
        assert [m.msg_id for m in s.search_messages("lunch")] == ["m2"]
        assert [m.msg_id for m in s.search_messages("午饭")] == ["m3"]
        assert [m.msg_id for m in s.search_messages("rivoli")] == ["m4"]
        assert s.search_messages("recalled") == []
        report = s.verify()
        assert report.ok, report
        assert report.pending_receipts == 1


def test_importer_titles_move_out_of_ext(tmp_path: Path):
    with imstore.open(v2_store(tmp_path / "old"), user_id="alice") as s:
        team = s.conversation("team")
        assert (team.title, team.ext) == ("Team 团队", {"color": "blue"})
        assert (s.conversation("empty").title, s.conversation("empty").ext) == ("Nobody", {})
        assert s.conversation("bob").title is None


def test_a_migrated_store_takes_the_new_state(tmp_path: Path):
    with imstore.open(v2_store(tmp_path / "old"), user_id="alice") as s:
        s.insert_message(Message.text("team", "in a thread", chat_type=ChatType.GROUP_CHAT,
                                      sender="carol", thread_id="g1", timestamp=9000))
        s.apply_reaction("g1", "👍", "bob")
        s.pin_conversation("empty", timestamp=1)
        assert s.threads("team")[0].reply_count == 1
        assert s.conversations()[0].conv_id == "empty"
        assert s.verify().ok


def test_migrating_twice_changes_nothing(tmp_path: Path):
    path = v2_store(tmp_path / "old")
    imstore.open(path, user_id="alice").close()
    with imstore.open(path, user_id="alice") as s:
        assert s.conversation("team").title == "Team 团队"
        assert s.verify().ok


# --------------------------------------------------------------------- rows that cannot be read


def corrupt(store: MessageStore, sql: str, *params: object) -> None:
    store.connection.execute(sql, params)


def test_a_corrupt_conversation_row_lists_as_a_value_that_says_so(store: MessageStore):
    for peer in ("bob", "carol"):
        store.insert_message(Message.text("alice", "hi", sender=peer))
    corrupt(store, "UPDATE conversation SET ext = X'C1FF', chat_type = 9 WHERE conv_id = 'bob'")
    convs = {c.conv_id: c for c in store.conversations()}
    assert set(convs) == {"bob", "carol"}
    assert "chat type" in convs["bob"].error and "ext" in convs["bob"].error
    assert convs["bob"].last_message.body.text == "hi"
    assert convs["carol"].error is None
    assert store.conversation("bob").error is not None


def test_verify_reports_a_corrupt_conversation_and_repairs_its_type(store: MessageStore):
    store.insert_message(Message.text("alice", "hi", sender="bob"))
    corrupt(store, "UPDATE conversation SET ext = X'C1FF', chat_type = 9")
    report = store.verify()
    assert report.unreadable_conversations == ["bob"]
    assert report.repaired["conversation_types"] == 1
    assert store.conversation("bob").chat_type == ChatType.CHAT
    assert not report.ok


@pytest.mark.parametrize("value, raw", [
    ("'some text'", b"some text"), ("42", b"42"), ("4.5", b"4.5"),
    ("CAST(X'C1FF00' AS TEXT)", b"\xc1\xff\x00"),  # not UTF-8: the driver cannot read it as str
])
def test_a_body_of_the_wrong_sql_type_reads_as_undecodable(store: MessageStore, value, raw):
    store.insert_message(Message.text("alice", "good", sender="bob", timestamp=1))
    bad = store.insert_message(Message.text("alice", "bad", sender="bob", timestamp=2))
    corrupt(store, f"UPDATE message SET body = {value} WHERE msg_id = ?", bad.msg_id)
    page = store.messages("bob")
    assert [type(m.body) for m in page] == [type(page[0].body), UndecodableBody]
    assert "corrupt" in page[1].body.error or "not a map" in page[1].body.error
    assert page[1].body.raw == raw
    assert isinstance(store.get_message(bad.msg_id).body, UndecodableBody)
    assert isinstance(store.conversation("bob").last_message.body, UndecodableBody)
    assert store.messages_by_type("bob", MessageType.TEXT)[1].msg_id == bad.msg_id
    assert store.verify().undecodable == [bad.msg_id]
    store.rebuild_search_index()  # raised TypeError before
    assert [m.body.text for m in store.search_messages("good")] == ["good"]


def test_verify_stores_back_a_text_body_that_decodes(store: MessageStore):
    m = store.insert_message(Message.text("alice", "recoverable", sender="bob"))
    blob = store.connection.one("SELECT body FROM message")[0]
    corrupt(store, "UPDATE message SET body = CAST(? AS TEXT)", blob)
    assert store.get_message(m.msg_id).body.text == "recoverable"  # read as the bytes it holds
    report = store.verify()
    assert report.repaired["text_bodies"] == 1 and report.undecodable == []
    assert store.connection.one("SELECT typeof(body) FROM message")[0] == "blob"
    assert store.verify().ok


def test_a_message_with_an_unknown_type_and_corrupt_local_ext_still_pages(store: MessageStore):
    store.insert_message(Message.text("alice", "a", sender="bob", timestamp=1))
    b = store.insert_message(Message.text("alice", "b", sender="bob", timestamp=2))
    corrupt(store, "UPDATE message SET local_ext = X'C1' WHERE msg_id = ?", b.msg_id)
    got = store.messages("bob")[1]
    assert isinstance(got.body, UndecodableBody) and "local_ext" in got.body.error
    assert got.type == MessageType.TEXT


def test_an_undecodable_body_has_no_plain_form():
    from imstore import ErrorCode, IMError
    from imstore.codec import body_to_dict

    with pytest.raises(IMError) as err:
        body_to_dict(UndecodableBody(b"\xc1", "corrupt"))
    assert err.value.code == ErrorCode.MESSAGE_INVALID
