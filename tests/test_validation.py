"""Values validate themselves at the boundary: every public MessageStore method, given wrong
types or out-of-range values, raises `IMError` and nothing else, and writes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imstore
from imstore import ErrorCode, GroupReadAck, IMError, Message, MessageStore, MessageType
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
    "progress": None, "up_to_msg_id": None,
}

# method -> the parameters it takes (positional first), all checked one at a time.
CALLS: dict[str, tuple[str, ...]] = {
    "get_message": ("msg_id",),
    "messages": ("conv_id", "start_msg_id", "limit", "direction"),
    "message_count": ("conv_id",),
    "messages_by_type": ("conv_id", "types", "start_msg_id", "timestamp", "limit", "sender",
                         "direction"),
    "messages_between": ("conv_id", "start_time", "end_time", "limit"),
    "search_messages": ("keyword", "conv_id", "sender", "types", "start_time", "end_time",
                        "scope", "limit", "direction"),
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
              "messages_between": 3, "search_messages": 1, "unread_count": 1,
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


# ------------------------------------------------------- the named cases, one per test

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
