"""Hostile input to `ChatClient`: its constructor, every public method (async ones awaited) and
every setting, given wrong types, None, NaN/inf, huge or negative numbers, bad strings, unknown
ids, other users' messages, bodies of the wrong class, enums out of range or lists of junk, raise
only `IMError` with a fitting code and a sentence naming what to fix, and leave the store as it
was. Each fuzzed method is paired with a call with valid input that must be accepted, so a client
that refused everything would fail here too."""

from __future__ import annotations

import asyncio
import inspect
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import imstore
from imstore import ChatClient, ChatType, ErrorCode, IMError, Message, MessageStore
from imstore.adapters import MAX_PAGE, ConnectionState
from imstore.message import (
    Direction,
    FetchOptions,
    GroupReadAck,
    ImageBody,
    MessageStatus,
    TextBody,
)

from .conftest import Clock
from .test_validation import HOSTILE as STORE_HOSTILE


class Junk:
    """An object no method expects."""

    def __repr__(self) -> str:
        return "Junk()"


HOSTILE = st.one_of(
    STORE_HOSTILE,
    st.sampled_from([
        math.nan, math.inf, -math.inf, 1e308, -0.0, 0, -5, 2**64, "a\x00b", "\x00", Junk(),
        TextBody("wrong place"), ImageBody(remote_url="https://x/y"), ChatType.CHAT,
        MessageStatus.SUCCESS, Direction.DOWN, 99, [Junk()], ["ok", None], ("x",), {"m": 1},
        Message.text("carol", "a message of another conversation", sender="dave", msg_id="X1"),
        FetchOptions(types=(99,)),  # type: ignore[arg-type]
        FetchOptions(start_time=math.nan), FetchOptions(direction=7),  # type: ignore[arg-type]
        FetchOptions(sender="\ud800"), FetchOptions(save="yes"),  # type: ignore[arg-type]
        GroupReadAck("G1", "g1", "bob", -1),
        GroupReadAck(5, "g1", "bob", 1),  # type: ignore[arg-type]
        # ids that are well formed but no stored message, or not one this call may take
        "no-such-id", "S1", "R1", "G1", "F1", "FAIL1", "carol",
    ]),
)


# ----------------------------------------------------------------------------- the world

class World:
    """alice's store and client on a MemoryServer, with one of each kind of stored message:
    R1 a received one-to-one text (unread), S1 her own sent text, G1 a group message of bob's
    with need_group_ack, F1 a received image with a file and a thumbnail, FAIL1 her own failed
    send; bob's connection sends to her."""

    def __init__(self, tmp: Path) -> None:
        self.server = imstore.MemoryServer(clock=Clock())
        self.server.create_group("g1", ["alice", "bob"])
        self.store = imstore.open(":memory:", user_id="alice")
        self.conn = self.server.connect("alice")
        self.client = ChatClient(self.store, self.conn, send_timeout=0.5,
                                 download_dir=str(tmp / "files"), auto_download=False,
                                 require_delivery_ack=False)
        self.bob = self.server.connect("bob")
        asyncio.run(self._seed())

    async def _seed(self) -> None:
        url = self.server.put_file("cat.png", b"\x89PNG" + b"x" * 40)
        thumb = self.server.put_file("thumb.png", b"\x89PNG" + b"t" * 10)
        image = Message.image("alice", "/nonexistent.png", sender="bob", msg_id="F1")
        assert isinstance(image.body, ImageBody)
        image.body.remote_url, image.body.thumbnail_url = url, thumb
        image.body.thumbnail_path = ""
        self.ids: dict[str, str] = {}  # the names above -> the ids the store has
        for m in (Message.text("alice", "hello", sender="bob", msg_id="R1"),
                  Message.text("g1", "group hello", sender="bob", msg_id="G1",
                               chat_type=ChatType.GROUP_CHAT, need_group_ack=True), image):
            self.ids[m.msg_id] = self.server.accept("bob", m)[0].msg_id
        sent = await self.client.send_message(Message.text("bob", "mine"))
        self.ids["S1"] = sent.msg_id
        failed = Message.text("bob", "did not leave", msg_id="FAIL1")
        failed.status = MessageStatus.FAIL
        self.ids["FAIL1"] = self.store.insert_message(failed).msg_id
        await self.client.wait_idle()
        for name, msg_id in self.ids.items():
            assert self.store.get_message(msg_id) is not None, name

    def real(self, value: Any) -> Any:
        """A name of the seeded messages becomes its stored id."""
        return self.ids.get(value, value) if type(value) is str else value

    def close(self) -> None:
        self.client.close()
        self.store.close()


def snapshot(store: MessageStore) -> Any:
    """What a refused call must leave as it was: counts, unread, statuses, bodies, receipts."""
    convs = store.conversations(limit=100)
    return (store.stats(), store.total_unread_count(),
            [(c.conv_id, c.chat_type, c.unread_count) for c in convs],
            [(m.msg_id, m.status, m.is_read, m.is_delivered, m.is_read_acked, m.group_ack_count,
              m.recalled_at, m.edited_at, repr(m.body))
             for c in convs for m in store.messages(c.conv_id, limit=400)])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("hostile"))
    yield w
    w.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


# ----------------------------------------------------------------- the methods and their args

# method -> (the valid arguments by name, how many are positional). Each argument is fuzzed in
# turn with the others valid. The valid ones change nothing in the world (or are never reached).
CALLS: dict[str, tuple[dict[str, Any], int]] = {
    "send_message": ({"msg": Message.text("bob", "x"), "progress": None}, 1),
    "resend_message": ({"msg_id": "FAIL1", "progress": None}, 1),
    "recall_message": ({"msg_id": "S1"}, 1),
    "edit_message": ({"msg_id": "S1", "body": TextBody("edited")}, 2),
    "ack_message_read": ({"msg_id": "R1"}, 1),
    "ack_conversation_read": ({"conv_id": "bob", "up_to_msg_id": None}, 1),
    "ack_group_message_read": ({"msg_id": "G1"}, 1),
    "fetch_group_read_acks": ({"msg_id": "G1", "cursor": None, "limit": 5}, 1),
    "download_attachment": ({"msg_id": "F1", "progress": None}, 1),
    "download_thumbnail": ({"msg_id": "F1"}, 1),
    "fetch_conversations_from_server": ({"cursor": None, "limit": 5}, 0),
    "fetch_history_messages": ({"conv_id": "bob", "chat_type": ChatType.CHAT, "cursor": None,
                                "limit": 5, "options": FetchOptions(save=False)}, 2),
    "load_messages": ({"conv_id": "bob", "chat_type": ChatType.CHAT, "start_msg_id": None,
                       "limit": 5, "direction": Direction.UP}, 2),
    "remove_messages_from_server": ({"conv_id": "bob", "chat_type": ChatType.CHAT,
                                     "msg_ids": ["no-such-id"], "before": None}, 2),
    "delete_conversation_from_server": ({"conv_id": "nobody", "chat_type": ChatType.CHAT,
                                         "delete_messages": True}, 2),
    "prune_pending_receipts": ({"older_than_ms": 10**12}, 1),
    "add_listener": ({"listener": imstore.MessageListener()}, 1),
    "remove_listener": ({"listener": imstore.MessageListener()}, 1),
    # what the transport hands the client
    "on_messages": ({"messages": []}, 1),
    "on_delivery_acks": ({"msg_ids": ["no-such-id"]}, 1),
    "on_read_acks": ({"msg_ids": ["no-such-id"]}, 1),
    "on_conversation_read": ({"conv_id": "nobody", "reader": "bob", "up_to": None}, 2),
    "on_group_read_acks": ({"acks": []}, 1),
    "on_messages_recalled": ({"msg_ids": ["no-such-id"]}, 1),
    "on_messages_edited": ({"messages": []}, 1),
    "on_connection_state_changed": ({"state": ConnectionState.CONNECTED}, 1),
    "on_reactions": ({"events": []}, 1),
    "on_message_pins": ({"events": []}, 1),
    "on_conversation_states": ({"states": []}, 1),
    # rich messages (issue 20): the valid calls change no message, count or status
    "add_reaction": ({"msg_id": "R1", "key": "👍"}, 2),
    "remove_reaction": ({"msg_id": "R1", "key": "👍"}, 2),
    "pin_message": ({"msg_id": "R1", "pinned": False}, 1),
    "pin_conversation": ({"conv_id": "bob", "pinned": False}, 1),
    "set_conversation_marks": ({"conv_id": "bob", "add": (), "remove": ()}, 1),
    "mark_conversation_unread": ({"conv_id": "bob"}, 1),
}
# Valid calls that change the world (the fuzz's valid arguments are kept to ones that do not).
ACCEPTED: dict[str, dict[str, Any]] = {"delete_conversation_from_server": {"conv_id": "bob"}}
NO_ARGS = {"close", "wait_idle"}  # nothing to fuzz (both are called by every test's world)
PAIRS = [(m, p) for m, (args, _) in CALLS.items() for p in args]

# Arguments a value of the right type may legitimately pass (an id no message has may be
# accepted, e.g. by a delete, or refused as unknown).
_ID = {"msg_id", "conv_id", "start_msg_id", "up_to_msg_id", "reader", "key"}
_OPTIONAL = {"progress", "cursor", "start_msg_id", "up_to_msg_id", "up_to", "options",
             "msg_ids", "before", "transport", "reconnect_wait", "download_dir"}


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _well_typed(param: str, value: Any, method: str = "") -> bool:
    """Whether ``value`` is of a type ``param`` takes (it may still be refused as unknown)."""
    if value is None and param in _OPTIONAL:
        return True
    if param in _ID or param == "cursor":  # the codec's ids (NUL is a character like others)
        return type(value) is str and 0 < len(value) <= 256 and \
            ("\x00" not in value or param != "cursor") and \
            not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if param == "limit":  # a server page, or a page of the store (load_messages)
        return _int(value) and 1 <= value <= (400 if method == "load_messages" else MAX_PAGE)
    if param in ("before", "up_to"):
        return _int(value) and 0 <= value <= 2**53
    if param == "older_than_ms":
        return _int(value) and 0 <= value < 2**63
    if param == "chat_type":  # an int enum's value, as the codec takes it
        return _int(value) and value in set(ChatType)
    if param == "direction":
        return _int(value) and value in (Direction.UP, Direction.DOWN)
    if param in ("delete_messages", "pinned"):
        return type(value) is bool
    if param in ("add", "remove"):  # a conversation mark, or a list of them
        marks = [value] if isinstance(value, str) else value
        return isinstance(marks, list | tuple) and all(
            type(m) is str and 0 < len(m) <= 64 and m.isprintable()
            and not any(0xD800 <= ord(c) <= 0xDFFF for c in m) for m in marks)
    if param in ("events", "states"):  # none of the hostile values is one of these values
        return isinstance(value, list | tuple) and not value
    if param == "state":
        return _int(value) and value in set(ConnectionState)
    if param in ("messages", "acks", "msg_ids"):
        return isinstance(value, list | tuple) and all(type(v) is str for v in value)
    if param == "listener":
        return isinstance(value, imstore.MessageListener)
    if param == "msg":
        return False  # every hostile value is not a sendable message of this user
    if param == "body":
        return type(value) is TextBody
    return False


# Codes a refusal of each argument may carry.
_CODES: dict[str, set[ErrorCode]] = {
    "limit": {ErrorCode.QUERY_PARAM_REACHES_LIMIT},
    "msg_id": {ErrorCode.INVALID_PARAM, ErrorCode.MESSAGE_INVALID},
    "msg": {ErrorCode.INVALID_PARAM, ErrorCode.MESSAGE_INVALID},
    "body": {ErrorCode.INVALID_PARAM, ErrorCode.MESSAGE_INVALID},
    "conv_id": {ErrorCode.INVALID_PARAM, ErrorCode.CONVERSATION_NOT_EXIST},
    "start_msg_id": {ErrorCode.INVALID_PARAM, ErrorCode.MESSAGE_INVALID},
    "up_to_msg_id": {ErrorCode.INVALID_PARAM, ErrorCode.MESSAGE_INVALID},
    "messages": {ErrorCode.INVALID_PARAM, ErrorCode.MESSAGE_INVALID},
    "cursor": {ErrorCode.INVALID_PARAM, ErrorCode.QUERY_PARAM_REACHES_LIMIT},
}


async def _invoke(world: World, method: str, param: str, value: Any) -> Any:
    client = world.client
    args, npos = CALLS[method]
    names = list(args)
    vals = {n: world.real(value if n == param else args[n]) for n in names}
    if method == "remove_messages_from_server" and param == "before":
        vals["msg_ids"] = None
    fn: Callable[..., Any] = getattr(client, method)
    out = fn(*[vals[n] for n in names[:npos]], **{n: vals[n] for n in names[npos:]})
    if inspect.isawaitable(out):
        out = await out
    await client.wait_idle()
    return out


# What a refusal of a badly typed argument says instead of its name.
_SAID = {"limit": "page size", "body": "body", "msg": "Message"}


def _actionable(err: IMError, param: str, well_typed: bool) -> None:
    """The sentence says what is wrong: for a value of the wrong type or range it names the
    argument; for a well-typed one (an unknown id...) it says why it was refused."""
    text = err.description
    assert isinstance(text, str) and len(text) >= 15, text
    if not well_typed:
        assert param in text or _SAID.get(param, param) in text, (param, text)


def check_refusal(world: World, method: str, param: str, value: Any) -> IMError | None:
    before = snapshot(world.store)
    try:
        asyncio.run(_invoke(world, method, param, value))
    except IMError as err:
        assert snapshot(world.store) == before, f"{method}({param}={value!r}) changed the store"
        codes = _CODES.get(param, {ErrorCode.INVALID_PARAM, ErrorCode.MESSAGE_INVALID})
        typed = _well_typed(param, value, method)
        if not typed:
            assert err.code in codes, (method, param, value, err)
        _actionable(err, param, typed)
        return err
    assert _well_typed(param, value, method), f"{method}({param}={value!r}) was accepted"
    return None


# ------------------------------------------------------------------------------ the fuzzing

@pytest.mark.parametrize(("method", "param"), PAIRS)
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=HOSTILE)
def test_a_hostile_argument_raises_only_imerror(world: World, method: str, param: str,
                                                value: Any) -> None:
    check_refusal(world, method, param, value)


@pytest.mark.parametrize("method", list(CALLS))
def test_valid_input_is_accepted(fresh: World, method: str) -> None:
    args, _ = CALLS[method]
    param, value = next(iter(ACCEPTED.get(method, args).items()))
    asyncio.run(_invoke(fresh, method, param, value))


def test_every_public_method_is_fuzzed() -> None:
    public = {n for n, v in inspect.getmembers(ChatClient) if not n.startswith("_")
              and callable(v) and not isinstance(v, property)}
    missing = public - set(CALLS) - NO_ARGS
    assert not missing, f"add these ChatClient methods to CALLS (valid arguments): {missing}"


# ----------------------------------------------------------------- the named codes, one each

NAMED: list[tuple[str, tuple[Any, ...], dict[str, Any], ErrorCode, str]] = [
    ("ack_message_read", ("S1",), {}, ErrorCode.INVALID_PARAM, "your own message"),
    ("ack_message_read", ("G1",), {}, ErrorCode.INVALID_PARAM, "one-to-one"),
    ("ack_message_read", ("no-such-id",), {}, ErrorCode.MESSAGE_INVALID, "no-such-id"),
    ("ack_message_read", ("",), {}, ErrorCode.INVALID_PARAM, "msg_id must be"),
    ("ack_group_message_read", ("R1",), {}, ErrorCode.INVALID_PARAM, "need_group_ack"),
    ("ack_conversation_read", ("nobody",), {}, ErrorCode.CONVERSATION_NOT_EXIST, "nobody"),
    ("ack_conversation_read", ("bob",), {"up_to_msg_id": 5}, ErrorCode.INVALID_PARAM,
     "up_to_msg_id"),
    ("fetch_group_read_acks", ("G1",), {"limit": 0}, ErrorCode.QUERY_PARAM_REACHES_LIMIT, "1"),
    ("fetch_group_read_acks", ("G1",), {"limit": MAX_PAGE + 1},
     ErrorCode.QUERY_PARAM_REACHES_LIMIT, str(MAX_PAGE)),
    ("fetch_conversations_from_server", (), {"limit": 10**9},
     ErrorCode.QUERY_PARAM_REACHES_LIMIT, "page size"),
    ("fetch_conversations_from_server", (), {"cursor": 7}, ErrorCode.INVALID_PARAM, "cursor"),
    ("load_messages", ("bob", ChatType.CHAT), {"limit": 401},
     ErrorCode.QUERY_PARAM_REACHES_LIMIT, "limit"),
    ("load_messages", ("bob", 9), {}, ErrorCode.INVALID_PARAM, "chat_type"),
    ("fetch_history_messages", ("bob", ChatType.CHAT), {"options": FetchOptions(end_time=-1)},
     ErrorCode.INVALID_PARAM, "options.end_time"),
    ("fetch_history_messages", ("\ud800", ChatType.CHAT), {}, ErrorCode.INVALID_PARAM, "conv_id"),
    ("recall_message", ("R1",), {}, ErrorCode.INVALID_PARAM, "your own"),
    ("edit_message", ("S1", ImageBody()), {}, ErrorCode.INVALID_PARAM, "TEXT and CUSTOM"),
    ("resend_message", ("S1",), {}, ErrorCode.INVALID_PARAM, "SUCCESS"),
    ("download_attachment", ("R1",), {}, ErrorCode.MESSAGE_INVALID, "no file"),
    ("download_attachment", ("F1",), {"progress": 5}, ErrorCode.INVALID_PARAM, "progress"),
    ("download_thumbnail", ("R1",), {}, ErrorCode.MESSAGE_INVALID, "no thumbnail"),
    ("send_message", (None,), {}, ErrorCode.INVALID_PARAM, "msg must be a Message"),
    ("send_message", (Message.text("carol", "not mine", sender="dave"),), {},
     ErrorCode.INVALID_PARAM, "your own messages"),
    ("send_message", (Message.text("bob", "x" * 100_000),), {}, ErrorCode.MESSAGE_SIZE_LIMIT,
     "the limit is"),
    ("remove_messages_from_server", ("bob", ChatType.CHAT), {}, ErrorCode.INVALID_PARAM,
     "either msg_ids or before"),
    ("remove_messages_from_server", ("bob", ChatType.CHAT), {"msg_ids": ["a"] * 51},
     ErrorCode.INVALID_PARAM, "1 to 50"),
    ("remove_messages_from_server", ("bob", ChatType.CHAT), {"before": math.inf},
     ErrorCode.INVALID_PARAM, "before"),
    ("delete_conversation_from_server", ("bob", ChatType.CHAT), {"delete_messages": "yes"},
     ErrorCode.INVALID_PARAM, "delete_messages"),
    ("on_connection_state_changed", (7,), {}, ErrorCode.INVALID_PARAM, "state"),
    ("on_messages", ([None],), {}, ErrorCode.INVALID_PARAM, "messages[0]"),
    ("add_listener", (object(),), {}, ErrorCode.INVALID_PARAM, "MessageListener"),
    ("add_reaction", ("R1", ""), {}, ErrorCode.INVALID_PARAM, "key"),
    ("pin_message", ("no-such-id",), {}, ErrorCode.MESSAGE_INVALID, "no-such-id"),
    ("pin_conversation", ("bob",), {"pinned": "yes"}, ErrorCode.INVALID_PARAM, "pinned"),
    ("pin_conversation", ("nobody",), {}, ErrorCode.CONVERSATION_NOT_EXIST, "nobody"),
    ("set_conversation_marks", ("bob",), {"add": ["a\nb"]}, ErrorCode.INVALID_PARAM, "add"),
    ("on_reactions", ([None],), {}, ErrorCode.INVALID_PARAM, "events[0]"),
    ("on_conversation_states", ({"bob": 1},), {}, ErrorCode.INVALID_PARAM, "states"),
]


@pytest.mark.parametrize(("method", "args", "kw", "code", "words"), NAMED,
                         ids=[f"{n[0]}-{i}" for i, n in enumerate(NAMED)])
def test_named_refusals(fresh: World, method: str, args: tuple[Any, ...], kw: dict[str, Any],
                        code: ErrorCode, words: str) -> None:
    # a fresh world each: the module's shared one is changed by whatever hostile-looking value
    # the fuzzing found valid (a huge `before` removes every message), so a case that names a
    # seeded message would depend on the order the tests ran in
    world = fresh
    before = snapshot(world.store)

    async def go() -> Any:
        out = getattr(world.client, method)(*[world.real(a) for a in args], **kw)
        return await out if inspect.isawaitable(out) else out

    with pytest.raises(IMError) as err:
        asyncio.run(go())
    assert err.value.code == code, err.value
    assert words in err.value.description
    assert snapshot(world.store) == before


def test_reading_ones_own_message_is_refused_not_ignored(fresh: World) -> None:
    """Issue 23 #8: it used to return quietly, doing nothing; the peer's own read receipt is
    what says an own message was read. A received message is still marked read and acked."""
    with pytest.raises(IMError, match="your own message"):
        asyncio.run(fresh.client.ack_message_read(fresh.ids["S1"]))
    asyncio.run(fresh.client.ack_message_read(fresh.ids["R1"]))
    got = fresh.store.get_message(fresh.ids["R1"])
    assert got is not None and got.is_read


# --------------------------------------------------------------------- constructor, settings

CTOR_VALID: dict[str, Any] = {
    "transport": None, "send_timeout": 1.0, "reconnect_wait": None, "transfer_timeout": 5.0,
    "require_delivery_ack": False, "require_read_ack": True, "auto_download": False,
    "download_dir": None,
}
SETTINGS = ["send_timeout", "reconnect_wait", "transfer_timeout", "require_delivery_ack",
            "require_read_ack", "auto_download"]


def _ctor_ok(param: str, value: Any) -> bool:
    if param in ("send_timeout", "reconnect_wait", "transfer_timeout"):
        if param == "reconnect_wait" and value is None:
            return True
        return isinstance(value, int | float) and not isinstance(value, bool) and \
            0 < value <= 86_400
    if param.startswith(("require_", "auto_")):
        return type(value) is bool
    if param == "download_dir":
        return value is None or (type(value) is str and "\x00" not in value and
                                 not any(0xD800 <= ord(c) <= 0xDFFF for c in value) and
                                 not os.path.exists(value))
    return param == "transport" and value is None


@pytest.mark.parametrize("param", ["store", "adapter", *CTOR_VALID])
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=HOSTILE)
def test_a_hostile_constructor_argument_raises_only_imerror(world: World, param: str,
                                                            value: Any) -> None:
    assume(not _ctor_ok(param, value))
    kw = {**CTOR_VALID, param: value} if param in CTOR_VALID else dict(CTOR_VALID)
    store = value if param == "store" else world.store
    adapter = value if param == "adapter" else world.server.connect("alice2")
    before = snapshot(world.store)
    with pytest.raises(IMError) as err:
        ChatClient(store, adapter, **kw)
    assert err.value.code == ErrorCode.INVALID_PARAM
    assert param in err.value.description
    assert snapshot(world.store) == before


@pytest.mark.parametrize("param", SETTINGS)
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=HOSTILE)
def test_a_hostile_setting_raises_only_imerror(world: World, param: str, value: Any) -> None:
    assume(not _ctor_ok(param, value) or (param == "reconnect_wait" and value is None))
    kept = getattr(world.client, param)
    with pytest.raises(IMError) as err:
        setattr(world.client, param, value)
    assert err.value.code == ErrorCode.INVALID_PARAM and param in err.value.description
    assert getattr(world.client, param) == kept


def test_valid_constructor_and_settings_are_accepted(world: World, tmp_path: Path) -> None:
    client = ChatClient(world.store, world.server.connect("alice3"), send_timeout=2,
                        reconnect_wait=3.5, transfer_timeout=60, require_delivery_ack=False,
                        require_read_ack=False, auto_download=False,
                        download_dir=str(tmp_path / "new"))
    try:
        client.send_timeout, client.auto_download = 0.25, True
        assert (client.send_timeout, client.reconnect_wait, client.auto_download) == (0.25, 3.5,
                                                                                      True)
    finally:
        client.close()


class _HistoryOnly:
    """An adapter with one method of `SyncAdapter` (tests and apps use such partial ones)."""

    async def fetch_history(self, *args: Any) -> Any:
        return imstore.CursorResult([], None)


def test_an_adapter_without_a_method_is_service_not_enabled(world: World) -> None:
    client = ChatClient(world.store, _HistoryOnly())
    try:
        with pytest.raises(IMError) as err:
            asyncio.run(client.fetch_conversations_from_server())
        assert err.value.code == ErrorCode.SERVICE_NOT_ENABLED
        assert "fetch_conversations" in err.value.description
    finally:
        client.close()
