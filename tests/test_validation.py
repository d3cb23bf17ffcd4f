"""Values validate themselves at the boundary: every public MessageStore method, given wrong
types or out-of-range values, raises `IMError` and nothing else, and writes nothing."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imstore
from imstore import ChatType, ErrorCode, GroupReadAck, IMError, Message, MessageStore, MessageType
from imstore.message import FileBody, TextBody


def _deep(n: int) -> Any:
    out: Any = "leaf"
    for _ in range(n):
        out = {"k": out}
    return out


# Values no public method should ever choke on (beyond an IMError).
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**70),
    st.integers(max_value=-(2**63)), st.floats(allow_nan=True, allow_infinity=True),
    st.text(), st.sampled_from(["", "\ud800", "a\udfffb", "x" * 300, "🙂" * 257]),
    st.binary(max_size=20), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.integers(), st.text(max_size=3), max_size=2),
    st.sampled_from([_deep(40), {"x": object()}, object(), 1.5, -1, 2**53 + 1, [None], {"a": []}]),
)

VALID: dict[str, Any] = {
    "msg_id": "m1", "conv_id": "bob", "limit": 5, "start_msg_id": None, "types": MessageType.TEXT,
    "start_time": 0, "end_time": 10, "keyword": "hello", "status": imstore.MessageStatus.FAIL,
    "local_id": "m1", "server_id": "S9", "server_time": 5, "kind": 1, "msg_ids": ["m1"],
    "up_to": None, "chat_type": imstore.ChatType.CHAT, "ext": {"a": "b"}, "last_activity": 1,
    "recalled_at": 5, "edited_at": 5, "body": TextBody("edited"), "older_than_ms": 0,
    "messages": [], "batch_size": 10, "acks": [], "delete_messages": True, "timestamp": None,
    "sender": None, "direction": imstore.Direction.UP, "scope": imstore.SearchScope.CONTENT,
    "progress": None, "up_to_msg_id": None, "match": "all", "max_hits": 100, "text": "bob",
}

# method -> the parameters it takes (positional first), all checked one at a time.
CALLS: dict[str, tuple[str, ...]] = {
    "get_message": ("msg_id",),
    "messages": ("conv_id", "start_msg_id", "limit", "direction"),
    "message_count": ("conv_id",),
    "messages_by_type": ("conv_id", "types", "start_msg_id", "timestamp", "limit", "sender",
                         "direction"),
    "messages_between": ("conv_id", "start_time", "end_time", "limit"),
    "search_messages": ("keyword", "match", "conv_id", "sender", "types", "start_time",
                        "end_time", "scope", "limit", "direction"),
    "search_counts": ("keyword", "match", "sender", "types", "start_time", "end_time", "scope",
                      "max_hits"),
    "search_conversations": ("text", "limit"),
    "unread_count": ("conv_id",),
    "mark_message_read": ("msg_id",),
    "mark_conversation_read": ("conv_id", "up_to_msg_id"),
    "delete_message": ("msg_id",),
    "delete_messages": ("conv_id", "start_time", "end_time"),
    "delete_message_ids": ("msg_ids",),
    "delete_conversation": ("conv_id", "delete_messages"),
    "conversation": ("conv_id",),
    "conversations": ("chat_type", "limit"),
    "save_conversation": ("conv_id", "chat_type", "last_activity", "ext"),
    "set_conversation_ext": ("conv_id", "ext"),
    "set_status": ("msg_id", "status"),
    "mark_sent": ("local_id", "server_id", "server_time"),
    "apply_receipts": ("kind", "msg_ids"),
    "mark_conversation_read_acked": ("conv_id", "up_to"),
    "add_group_acks": ("acks",),
    "apply_recall": ("msg_ids", "recalled_at"),
    "apply_edit": ("msg_id", "body", "edited_at"),
    "prune_pending_receipts": ("older_than_ms",),
    "import_messages": ("messages", "batch_size", "progress"),
    "save_history": ("messages",),
    "save_received": ("messages",),
    "insert_message": ("msg",),
    "update_message": ("msg",),
    "rebuild_search_index": ("progress",),
}
POSITIONAL = {"get_message": 1, "messages": 1, "message_count": 1, "messages_by_type": 2,
              "messages_between": 3, "search_messages": 1, "search_counts": 1,
              "search_conversations": 1, "unread_count": 1,
              "mark_message_read": 1, "mark_conversation_read": 1, "delete_message": 1,
              "delete_messages": 1, "delete_message_ids": 1, "delete_conversation": 1,
              "conversation": 1, "conversations": 0, "save_conversation": 2,
              "set_conversation_ext": 2, "set_status": 2, "mark_sent": 3, "apply_receipts": 2,
              "mark_conversation_read_acked": 2, "add_group_acks": 1, "apply_recall": 2,
              "apply_edit": 3, "prune_pending_receipts": 1, "import_messages": 1,
              "save_history": 1, "save_received": 1, "insert_message": 1, "update_message": 1,
              "rebuild_search_index": 1}
PAIRS = [(m, p) for m, ps in CALLS.items() for p in ps if p != "msg"]


@pytest.fixture(scope="module")
def shared() -> MessageStore:
    s = imstore.open(":memory:", user_id="alice")
    s.insert_message(Message.text("alice", "hello", sender="bob", msg_id="m1", timestamp=1))
    yield s
    s.close()


def _call(store: MessageStore, method: str, param: str, value: Any) -> Any:
    names = CALLS[method]
    args = {n: (value if n == param else VALID.get(n)) for n in names}
    if "msg" in args:
        args["msg"] = value
    npos = POSITIONAL[method]
    pos = [args[n] for n in names[:npos]]
    kw = {n: args[n] for n in names[npos:]}
    fn: Callable[..., Any] = getattr(store, method)
    return fn(*pos, **kw)


@pytest.mark.parametrize(("method", "param"), PAIRS)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=HOSTILE)
def test_a_hostile_argument_raises_only_imerror(shared: MessageStore, method: str, param: str,
                                                value: Any) -> None:
    try:
        _call(shared, method, param, value)
    except IMError:
        pass


@pytest.mark.parametrize("method, found", [
    ("search_messages", lambda r: [m.msg_id for m in r] == ["m1"]),
    ("search_counts", lambda r: [(h.conv_id, h.count, h.newest.msg_id) for h in r] == [
        ("bob", 1, "m1")]),
    ("search_conversations", lambda r: [c.conv_id for c in r] == ["bob"]),
])
def test_the_valid_arguments_of_a_search_find_the_message(
        store: MessageStore, method: str, found: Callable[[Any], bool]) -> None:
    # The hostile values above replace one of these at a time: the rest must be a working call.
    store.insert_message(Message.text("alice", "hello", sender="bob", msg_id="m1", timestamp=1))
    assert found(_call(store, method, "", None)), method


MESSAGE_FIELDS = [f.name for f in dataclasses.fields(Message)]


def _with(field: str, value: Any) -> Message:
    m = Message.text("alice", "hi", sender="bob", timestamp=5)
    setattr(m, field, value)
    return m


@pytest.mark.parametrize("method", ["insert_message", "update_message"])
@pytest.mark.parametrize("field", MESSAGE_FIELDS)
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=HOSTILE)
def test_a_hostile_message_field_raises_only_imerror(shared: MessageStore, method: str,
                                                     field: str, value: Any) -> None:
    try:
        getattr(shared, method)(_with(field, value))
    except IMError:
        pass


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(FileBody)])
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=HOSTILE)
def test_a_hostile_body_field_raises_only_imerror(shared: MessageStore, field: str,
                                                  value: Any) -> None:
    m = Message.file("alice", "/nonexistent", sender="bob")
    m.body.remote_url = "https://x/y"
    setattr(m.body, field, value)
    try:
        shared.insert_message(m)
    except IMError:
        pass


# ------------------------------------------------------- the issue's named cases, one per test

def _insert_error(store: MessageStore, m: Message) -> IMError:
    with pytest.raises(IMError) as err:
        store.insert_message(m)
    return err.value


@pytest.mark.parametrize(("field", "value"), [
    ("status", 9), ("status", "SUCCESS"), ("server_time", "5"), ("server_time", float("inf")),
    ("server_time", 2**53 + 1), ("server_time", -1), ("msg_id", "\ud800"), ("msg_id", "x" * 257),
    ("to", "a\udfffb"), ("sender", 5), ("ext", _deep(40)), ("ext", {1: "x"}),
    ("local_time", True), ("is_read", "yes"), ("group_ack_count", -1), ("chat_type", 0),
    ("type", 99), ("local_id", ""), ("recalled_at", 1.5),
])
def test_bad_message_fields_name_the_field(store: MessageStore, field: str, value: Any):
    err = _insert_error(store, _with(field, value))
    assert err.code in (ErrorCode.INVALID_PARAM, ErrorCode.MESSAGE_INVALID)
    assert field in err.description
    assert store.stats()["messages"] == 0


def test_a_body_field_of_the_wrong_type_names_it(store: MessageStore):
    m = Message.file("alice", "/nonexistent", sender="bob")
    m.body.remote_url, m.body.display_name = "https://x/y", 5
    err = _insert_error(store, m)
    assert "body.display_name" in err.description


def test_text_with_a_lone_surrogate_is_refused(store: MessageStore):
    err = _insert_error(store, Message.text("alice", "bad \ud800", sender="bob"))
    assert "body.text" in err.description


def test_validation_does_not_change_the_message(store: MessageStore):
    m = Message.text("alice", "hi", sender="bob", timestamp=5)
    m.type = 1  # an int, not a MessageType
    before = dataclasses.replace(m)
    store.insert_message(m)
    assert m.type is before.type and m.body == before.body and m.ext == before.ext


def test_import_skips_a_bad_message_with_its_reason_and_imports_the_rest(store: MessageStore):
    bad = _with("server_time", "soon")
    res = store.import_messages([Message.text("alice", "ok", sender="bob"), bad])
    assert (res.imported, res.skipped) == (1, 1)
    assert any("server_time" in r for r in res.reasons)


def test_group_acks_of_the_wrong_type_are_refused(store: MessageStore):
    with pytest.raises(IMError):
        store.add_group_acks([GroupReadAck("m", "g", "bob", "not a time")])  # type: ignore[arg-type]


# ------------------------------------------------------------------ factories (Message.text, ...)

# factory -> its arguments with a valid value each (positional first; ``None`` path: a real file);
# carol writes to the store's owner, alice
FACTORY_ARGS: dict[str, dict[str, Any]] = {
    "text": {"to": "alice", "text": "hi"},
    "image": {"to": "alice", "path": None, "width": 4, "height": 3, "thumbnail": None,
              "display_name": "a.png"},
    "voice": {"to": "alice", "path": None, "duration_ms": 1500, "display_name": "v.ogg"},
    "video": {"to": "alice", "path": None, "duration_ms": 1500, "thumbnail": None, "width": 4,
              "height": 3, "display_name": "v.mp4"},
    "file": {"to": "alice", "path": None, "display_name": "f.bin"},
    "location": {"to": "alice", "latitude": 39.9, "longitude": 116.4, "address": "a",
                 "building_name": "b"},
    "cmd": {"to": "alice", "action": "typing", "params": {"a": 1}},
    "custom": {"to": "alice", "event": "gift", "params": {"a": "1"}},
}
FACTORY_POSITIONAL = {"text": 2, "image": 2, "voice": 3, "video": 3, "file": 2, "location": 3,
                      "cmd": 2, "custom": 2}
COMMON_ARGS: dict[str, Any] = {
    "chat_type": imstore.ChatType.CHAT, "ext": {"k": "v"}, "sender": "carol", "msg_id": "m9",
    "timestamp": 1_600_000_000_000, "is_read": False, "need_group_ack": False,
    "local_id": "L1", "edited_at": None, "recalled_at": None,
}
FACTORY_PAIRS = [(f, p) for f, ps in FACTORY_ARGS.items() for p in [*ps, *COMMON_ARGS]]


@pytest.fixture(scope="module")
def attachment(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("factory") / "file.bin"
    path.write_bytes(b"data")
    return str(path)


def _make(factory: str, attachment: str, param: str | None = None, value: Any = None) -> Message:
    args = {**FACTORY_ARGS[factory], **COMMON_ARGS}
    for name in ("path", "thumbnail"):
        if name in args:
            args[name] = attachment
    if param is not None:
        args[param] = value
    names = list(args)
    npos = FACTORY_POSITIONAL[factory]
    fn: Callable[..., Message] = getattr(Message, factory)
    return fn(*[args[n] for n in names[:npos]], **{n: args[n] for n in names[npos:]})


@pytest.mark.parametrize("factory", FACTORY_ARGS)
def test_a_factory_given_valid_arguments_makes_a_message_the_store_takes(
        store: MessageStore, attachment: str, factory: str) -> None:
    m = _make(factory, attachment)
    assert m.sender == "carol" and m.msg_id == "m9" and m.timestamp == 1_600_000_000_000
    if factory == "cmd":  # commands are sent, never stored
        return
    store.insert_message(m)
    assert store.get_message("m9") == m


@pytest.mark.parametrize(("factory", "param"), FACTORY_PAIRS)
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=HOSTILE)
def test_a_hostile_factory_argument_raises_only_imerror_naming_it(
        attachment: str, factory: str, param: str, value: Any) -> None:
    try:
        _make(factory, attachment, param, value)
    except IMError as exc:
        assert exc.code == ErrorCode.INVALID_PARAM
        assert param in exc.description or (param == "mtype"), exc.description


@pytest.mark.parametrize(("make", "field"), [
    (lambda: Message.text("g", "x", chat_type="group"), "chat_type"),
    (lambda: Message.image("bob", None), "path"),
    (lambda: Message.voice("bob", "/tmp/v.ogg", "3s"), "duration_ms"),
    (lambda: Message.location("bob", "north", 0), "latitude"),
    (lambda: Message.text("bob", "x", timestamp=1_615_000_000), "timestamp"),
    (lambda: Message.text("bob", "x", ext=["a"]), "ext"),
    (lambda: Message.file("bob", "/tmp/f", display_name=3), "display_name"),
])
def test_the_issue_s_factory_calls_raise_imerror_naming_the_field(
        make: Callable[[], Message], field: str) -> None:
    with pytest.raises(IMError) as err:
        make()
    assert err.value.code == ErrorCode.INVALID_PARAM and field in err.value.description


def test_a_timestamp_in_seconds_is_refused_with_the_fix_and_small_test_clocks_are_not() -> None:
    with pytest.raises(IMError) as err:
        Message.text("bob", "x", timestamp=1_615_000_000)
    assert "1615000000000" in err.value.description and "seconds" in err.value.description
    assert Message.text("bob", "x", timestamp=5).timestamp == 5
    assert Message.text("bob", "x", timestamp=978_307_200_000).timestamp == 978_307_200_000


@pytest.mark.parametrize("path", ["a\x00b", "/tmp/x\ud800", "/tmp/x\udc80", "", b"bytes", 5])
def test_open_with_a_path_the_file_system_cannot_take_raises_imerror(path: Any) -> None:
    for call in (lambda: imstore.open(path, user_id="a"),
                 lambda: MessageStore.stored_owner(path),
                 lambda: MessageStore.check_writable(path)):
        with pytest.raises(IMError) as err:
            call()
        assert err.value.code == ErrorCode.INVALID_PARAM and "path" in err.value.description


def test_open_with_a_non_ascii_path_works(tmp_path: Any) -> None:
    """The pair: any path of valid Unicode is a store."""
    path = os.path.join(str(tmp_path), "store-日本 ü")
    with imstore.open(path, user_id="a") as s:
        s.insert_message(Message.text("bob", "hi"))
    assert MessageStore.stored_owner(path) == "a"


# ------------------------------------------- one answer for an unknown conversation (docs/api.md)

UNKNOWN_CONVERSATION: list[tuple[str, Callable[[MessageStore], Any], Any]] = [
    ("conversation", lambda s: s.conversation("ghost"), None),
    ("messages", lambda s: s.messages("ghost"), []),
    ("timeline", lambda s: s.timeline("ghost").messages, []),
    ("messages_by_type", lambda s: s.messages_by_type("ghost", MessageType.TEXT), []),
    ("messages_between", lambda s: s.messages_between("ghost", 0, 10**13), []),
    ("message_count", lambda s: s.message_count("ghost"), 0),
    ("unread_count", lambda s: s.unread_count("ghost"), 0),
    ("search_messages", lambda s: s.search_messages("hello", conv_id="ghost"), []),
    ("stretches", lambda s: s.stretches("ghost"), []),
    ("mark_conversation_read", lambda s: s.mark_conversation_read("ghost"), 0),
    ("delete_conversation", lambda s: s.delete_conversation("ghost"), False),
    ("delete_messages", lambda s: s.delete_messages("ghost", start_time=0, end_time=10), 0),
]


@pytest.mark.parametrize(("name", "call", "empty"), UNKNOWN_CONVERSATION,
                         ids=[n for n, _c, _e in UNKNOWN_CONVERSATION])
def test_an_unknown_conversation_reads_as_an_empty_one(store: MessageStore, name: str,
                                                       call: Callable[[MessageStore], Any],
                                                       empty: Any) -> None:
    store.insert_message(Message.text("alice", "hello", sender="bob"))
    assert call(store) == empty
    assert store.conversation("ghost") is None  # asking created nothing


def test_the_documented_table_lists_every_unknown_conversation_answer() -> None:
    from .conftest import REPO

    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    table = text[text.index("### An unknown conversation"):]
    for name, _call, _empty in UNKNOWN_CONVERSATION:
        assert f"`{name}" in table, name
    assert "`set_conversation_ext" in table


def test_setting_attributes_of_an_unknown_conversation_is_conversation_not_exist(
        store: MessageStore) -> None:
    with pytest.raises(IMError) as err:
        store.set_conversation_ext("ghost", {"draft": "x"})
    assert err.value.code == ErrorCode.CONVERSATION_NOT_EXIST


@pytest.mark.parametrize("call", [
    lambda s, a: s.messages("bob", start_msg_id=a),
    lambda s, a: s.timeline("bob", start_msg_id=a),
    lambda s, a: s.messages_by_type("bob", MessageType.TEXT, start_msg_id=a),
    lambda s, a: s.messages_between("bob", 0, 10**13, start_msg_id=a),
    lambda s, a: s.search_messages("hello", conv_id="bob", start_msg_id=a),
    lambda s, a: s.mark_conversation_read("bob", up_to_msg_id=a),
])
def test_an_anchor_that_is_not_a_message_of_the_conversation_is_invalid_param(
        store: MessageStore, call: Callable[[MessageStore, str], Any]) -> None:
    store.insert_message(Message.text("alice", "hello bob", sender="bob", msg_id="b1"))
    store.insert_message(Message.text("alice", "hello carol", sender="carol", msg_id="c1"))
    for anchor in ("c1", "nowhere"):  # another conversation's message, or none at all
        with pytest.raises(IMError) as err:
            call(store, anchor)
        assert err.value.code == ErrorCode.INVALID_PARAM and anchor in err.value.description
    call(store, "b1")  # the pair: its own message anchors


def test_messages_between_pages(store: MessageStore) -> None:
    store.import_messages([Message.text("alice", f"m{i}", sender="bob", msg_id=f"m{i}",
                                        timestamp=1_000 + i // 3) for i in range(10)])
    seen: list[str] = []
    anchor = None
    while True:
        page = store.messages_between("bob", 1_000, 1_002, limit=2, start_msg_id=anchor)
        if not page:
            break
        seen += [m.msg_id for m in page]
        anchor = page[-1].msg_id
    assert seen == [f"m{i}" for i in range(9)]  # times 1000..1002, none twice


def test_a_one_to_one_message_between_two_other_people_is_refused(store: MessageStore) -> None:
    with pytest.raises(IMError) as err:
        store.insert_message(Message.text("carol", "psst", sender="bob"))
    assert err.value.code == ErrorCode.INVALID_PARAM and "'alice'" in err.value.description
    res = store.import_messages([Message.text("carol", "psst", sender="bob"),
                                 Message.text("alice", "to me", sender="bob"),
                                 Message.text("bob", "as an export writes it", sender="bob"),
                                 Message.text("carol", "mine")])
    assert (res.imported, res.skipped) == (3, 1)
    assert res.reasons == {"a one-to-one message between two other people": 1}
    assert store.message_count("bob") == 2 and store.message_count("carol") == 1


def test_opening_another_user_s_store_says_whose_it_is(tmp_path: Any) -> None:
    imstore.open(tmp_path / "s", user_id="alice").close()
    with pytest.raises(IMError) as err:
        imstore.open(tmp_path / "s", user_id="bob")
    assert "belongs to 'alice', not 'bob'" in err.value.description
    assert "user_id='alice'" in err.value.description


@pytest.mark.parametrize("ext", [{}, {"k": "v"}, {"k": "v" * 2900}])
def test_the_size_error_says_how_much_text_fits_and_that_is_exact(store: MessageStore,
                                                                 ext: dict[str, str]) -> None:
    with pytest.raises(IMError) as err:
        store.insert_message(Message.text("alice", "x" * 4000, sender="bob", ext=ext))
    assert err.value.code == ErrorCode.MESSAGE_SIZE_LIMIT and "3072" in err.value.description
    fits = int(err.value.description.split("up to ")[1].split()[0])
    store.insert_message(Message.text("alice", "x" * fits, sender="bob", ext=ext))
    with pytest.raises(IMError):
        store.insert_message(Message.text("alice", "x" * (fits + 1), sender="bob", ext=ext))


@pytest.mark.parametrize("call", [
    lambda s: s.save_conversation("bob", ChatType.CHAT, last_activity=-5),
    lambda s: s.add_group_acks([GroupReadAck("m1", "g", "bob", -5)]),
], ids=["a conversation's activity", "a group ack's time"])
def test_a_time_a_record_carries_is_not_a_filter(store, call):
    """Stamps are 0..2^53 (lifecycle.MAX_TIME); only filters take any int64."""
    with pytest.raises(IMError) as err:
        call(store)
    assert err.value.code == ErrorCode.INVALID_PARAM


@pytest.mark.parametrize("path", ["a\x00b.txt", "x\udc80.txt"], ids=["NUL", "lone surrogate"])
def test_a_factory_and_an_importer_refuse_a_path_no_file_system_takes(path):
    """One path rule (checks.check_path) for open, the factories and the importers."""
    from imstore import importers
    for call in (lambda: Message.file("bob", path), lambda: importers.find_exports(path)):
        with pytest.raises(IMError) as err:
            call()
        assert err.value.code == ErrorCode.INVALID_PARAM
