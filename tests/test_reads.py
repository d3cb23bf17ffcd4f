"""Reads that decode lazily (`_rows.StoredMessage`) and pages anchored inside their statement:
what callers see is what an eager read gave."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from imstore import Direction, ErrorCode, IMError, Message, MessageStore, MessageType
from imstore.message import FileBody, ImageBody, TextBody, UndecodableBody
from imstore.store._rows import SELECT_COLUMNS, decode_payload, row_to_message

CORRUPT = b"\x01\xc1\xc1"  # a version byte, then bytes msgpack refuses


def recv(text: str, ts: int, **kw) -> Message:
    return Message.text("alice", text, sender="bob", timestamp=ts, **kw)


def eager(store: MessageStore, msg_id: str) -> tuple[object, object, object]:
    """The body, ext and local_ext of a stored row, decoded at once."""
    row = store.connection.one(f"SELECT {SELECT_COLUMNS} FROM message WHERE msg_id = ?",
                               (msg_id,))
    return decode_payload(row[5], row[18], row[19], row[24])


@pytest.fixture
def page(store: MessageStore) -> list[Message]:
    """Three stored messages of three body types, with ext and local_ext."""
    image = Message.of(MessageType.IMAGE, "alice", ImageBody(
        display_name="a.jpg", remote_url="https://files.example/a", width=3, height=4,
        extra={"future": True}), sender="bob", timestamp=2, ext={"k": [1, 2]})
    file = Message.of(MessageType.FILE, "alice", FileBody(
        display_name="r.pdf", remote_url="https://files.example/r"), sender="bob", timestamp=3)
    assert store.import_messages([recv("one", 1, local_ext={"draft": "x"}), image,
                                  file]).imported == 3
    return store.messages("bob")


@pytest.mark.parametrize("first", ["body", "ext", "local_ext"])
def test_each_payload_field_reads_as_an_eager_decode_whichever_is_read_first(
        store: MessageStore, page: list[Message], first: str):
    for m in page:
        getattr(m, first)
        assert (m.body, m.ext, m.local_ext) == eager(store, m.msg_id)


def test_a_read_page_has_the_bodies_it_was_given(page: list[Message]):
    assert isinstance(page[0].body, TextBody) and page[0].body.text == "one"
    assert page[0].local_ext == {"draft": "x"} and page[1].ext == {"k": [1, 2]}
    assert page[1].body.extra == {"future": True} and isinstance(page[2].body, FileBody)


def test_a_stored_message_equals_its_plain_copies(page: list[Message]):
    for m in page:
        plain = Message(*(getattr(m, f) for f in Message.__dataclass_fields__))
        assert m == plain and plain == m
        assert repr(m) == repr(plain) and repr(m).startswith("Message(")


@pytest.mark.parametrize("make_copy", [copy.copy, copy.deepcopy,
                                       lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["copy", "deepcopy", "pickle"])
def test_copies_are_plain_messages_with_every_field(store: MessageStore, make_copy):
    store.insert_message(recv("kept", 1, ext={"a": 1}, local_ext={"b": 2}))
    m = store.messages("bob")[0]  # nothing decoded yet
    got = make_copy(m)
    assert type(got) is Message
    assert (got.body.text, got.ext, got.local_ext, got.msg_id) == ("kept", {"a": 1}, {"b": 2},
                                                                   m.msg_id)


def test_replace_makes_a_message_with_the_decoded_payload(page: list[Message]):
    got = dataclasses.replace(page[1], msg_id="other")
    assert (got.msg_id, got.body, got.ext) == ("other", page[1].body, page[1].ext)
    got.ext = {"new": 1}
    assert got.ext == {"new": 1} and page[1].ext == {"k": [1, 2]}


def test_a_field_set_before_reading_keeps_its_value_and_the_rest_decodes(page: list[Message]):
    m = page[1]
    m.body = TextBody("replaced")
    assert m.body == TextBody("replaced") and m.ext == {"k": [1, 2]}
    n = page[0]
    n.local_ext = {}
    assert n.local_ext == {} and n.body.text == "one"


def test_a_changed_stored_message_is_written_back(store: MessageStore, page: list[Message]):
    m = page[0]
    m.body = TextBody("edited")
    m.ext["tag"] = 1  # a decoded dict, changed in place, stays changed
    store.update_message(m)
    got = store.get_message(m.msg_id)
    assert (got.body.text, got.ext) == ("edited", {"tag": 1})


@pytest.mark.parametrize("column, reason", [("body", "corrupt"), ("ext", "ext"),
                                            ("local_ext", "local_ext")])
def test_a_payload_that_does_not_decode_reads_as_undecodable_whichever_field_is_read(
        store: MessageStore, raw_sql, column: str, reason: str):
    m = store.insert_message(recv("fine", 1, ext={"a": 1}, local_ext={"b": 2}))
    raw_sql(store, f"UPDATE message SET {column} = ? WHERE msg_id = ?", (CORRUPT, m.msg_id))
    for first in ("ext", "local_ext", "body"):
        got = store.messages("bob")[0]
        getattr(got, first)
        assert isinstance(got.body, UndecodableBody) and reason in got.body.error
        assert (got.ext, got.local_ext, got.type) == ({}, {}, MessageType.TEXT)


def test_an_unknown_type_number_keeps_the_number_in_the_body(store: MessageStore, raw_sql):
    m = store.insert_message(recv("x", 1))
    raw_sql(store, "UPDATE message SET type = 99 WHERE msg_id = ?", (m.msg_id,))
    got = store.get_message(m.msg_id)
    assert got.type == MessageType.TEXT and got.body.extra == {"type": 99}


def test_row_to_message_reads_a_message_row_tuple(store: MessageStore):
    m = store.insert_message(recv("tuple", 5))
    row = store.connection.one(f"SELECT {SELECT_COLUMNS} FROM message")
    got = row_to_message(tuple(row))
    assert got == store.get_message(m.msg_id) and got.timestamp == 5


def test_the_conversation_list_last_message_reads_as_the_stored_one(store: MessageStore):
    store.import_messages([recv("old", 1), recv("new", 2, ext={"e": 1})])
    conv = store.conversations()[0]
    assert conv.last_message == store.messages("bob")[-1]
    assert (conv.last_message.body.text, conv.last_message.ext) == ("new", {"e": 1})


# --------------------------------------------------------------------- pages from an anchor


@pytest.fixture
def ten(store: MessageStore) -> list[str]:
    msgs = [recv(f"m{i}", 100 + i // 2) for i in range(10)]  # pairs share a time
    store.import_messages(msgs)
    return [m.msg_id for m in msgs]


@pytest.mark.parametrize("direction, at, want", [
    (Direction.UP, 5, [1, 2, 3, 4]), (Direction.DOWN, 5, [6, 7, 8, 9]),
    (Direction.UP, 1, [0]), (Direction.DOWN, 8, [9]),
])
def test_a_page_from_an_anchor_reads_the_neighbours(store: MessageStore, ten: list[str],
                                                    direction, at: int, want: list[int]):
    got = store.messages("bob", start_msg_id=ten[at], limit=4, direction=direction)
    assert [m.msg_id for m in got] == [ten[i] for i in want]


@pytest.mark.parametrize("direction, at", [(Direction.UP, 0), (Direction.DOWN, 9)])
def test_a_page_past_either_end_is_empty(store: MessageStore, ten: list[str], direction, at):
    assert store.messages("bob", start_msg_id=ten[at], direction=direction) == []


def test_a_page_anchored_on_a_local_id_reads_as_on_the_server_id(store: MessageStore):
    store.import_messages([recv(f"m{i}", i) for i in range(3)])
    m = store.insert_message(Message.text("bob", "sent", timestamp=10))
    store.insert_message(recv("after", 20))
    store.mark_sent(m.msg_id, "S1", 10)
    for anchor in (m.msg_id, "S1"):
        assert [x.body.text for x in store.messages("bob", start_msg_id=anchor, limit=2)] == [
            "m1", "m2"]
        assert [x.body.text for x in store.messages(
            "bob", start_msg_id=anchor, direction=Direction.DOWN)] == ["after"]


def test_a_page_from_a_message_that_is_not_stored_is_refused(store: MessageStore,
                                                              ten: list[str]):
    reads = store._reads  # the facade checks first; the read itself still says so
    with pytest.raises(IMError) as err:
        reads.page("bob", "missing", 20, Direction.UP)
    assert err.value.code == ErrorCode.INVALID_PARAM
