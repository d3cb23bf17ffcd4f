"""Message values: the factories, the conversation rule, the kinds table, the error-code table,
and the adapters' page check."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import pytest

from imstore import ChatType, Direction, ErrorCode, IMError, Message, MessageStatus, MessageType
from imstore import kinds as kinds_module
from imstore.adapters import MAX_PAGE, check_page_size
from imstore.kinds import (
    ATTACHMENT_TYPES,
    KINDS,
    AutoDownload,
    blank_body,
    check_content,
    searchable_text,
)
from imstore.message import (
    CmdBody,
    CustomBody,
    FileBody,
    ImageBody,
    LocationBody,
    TextBody,
    ThumbnailedBody,
    VideoBody,
    VoiceBody,
    conversation_id,
)

# ------------------------------------------------------------------------------ factories

FACTORIES: list[tuple[str, Any, MessageType, type]] = [
    ("text", lambda **kw: Message.text("bob", "hi", **kw), MessageType.TEXT, TextBody),
    ("image", lambda **kw: Message.image("bob", "/p/a.png", **kw), MessageType.IMAGE, ImageBody),
    ("voice", lambda **kw: Message.voice("bob", "/p/a.ogg", 5, **kw), MessageType.VOICE, VoiceBody),
    ("video", lambda **kw: Message.video("bob", "/p/a.mp4", 5, **kw), MessageType.VIDEO, VideoBody),
    ("file", lambda **kw: Message.file("bob", "/p/a.pdf", **kw), MessageType.FILE, FileBody),
    ("location", lambda **kw: Message.location("bob", 1.0, 2.0, **kw), MessageType.LOCATION,
     LocationBody),
    ("cmd", lambda **kw: Message.cmd("bob", "typing", **kw), MessageType.CMD, CmdBody),
    ("custom", lambda **kw: Message.custom("bob", "poke", **kw), MessageType.CUSTOM, CustomBody),
]


@pytest.mark.parametrize(("name", "make", "mtype", "body"), FACTORIES)
def test_each_factory_makes_its_type_and_body(name: str, make: Any, mtype: MessageType,
                                              body: type):
    m = make()
    assert (m.type, type(m.body)) == (mtype, body)


@pytest.mark.parametrize(("name", "make", "mtype", "body"), FACTORIES)
def test_a_factory_without_sender_makes_an_outgoing_message(name: str, make: Any,
                                                            mtype: MessageType, body: type):
    m = make()
    assert (m.direction, m.status, m.sender, m.conv_id) == (Direction.SEND, MessageStatus.CREATE,
                                                           None, "bob")


@pytest.mark.parametrize(("name", "make", "mtype", "body"), FACTORIES)
def test_a_factory_with_sender_makes_a_received_message(name: str, make: Any,
                                                        mtype: MessageType, body: type):
    m = make(sender="carol", timestamp=7)
    assert (m.direction, m.conv_id, m.server_time) == (Direction.RECEIVE, "carol", 7)


def test_of_takes_a_body_made_elsewhere():
    body = ImageBody(remote_url="https://x/a.png", width=3)
    m = Message.of(MessageType.IMAGE, "bob", body, sender="carol", msg_id="m1")
    assert (m.body, m.msg_id, m.type) == (body, "m1", MessageType.IMAGE)


def test_of_carries_the_contract_fields():
    m = Message.of(MessageType.TEXT, "bob", TextBody(""), local_id="L1", edited_at=2,
                   recalled_at=3)
    assert (m.local_id, m.edited_at, m.recalled_at) == ("L1", 2, 3)


def test_new_fields_default_to_none():
    m = Message.text("bob", "x")
    assert (m.local_id, m.edited_at, m.recalled_at) == (None, None, None)


def test_messages_with_equal_fields_are_equal():
    a = Message.text("bob", "x", msg_id="m", timestamp=1)
    b = Message.text("bob", "x", msg_id="m", timestamp=1)
    assert a == b
    b.edited_at = 5
    assert a != b


# ---------------------------------------------------------------------- conversation rule

@pytest.mark.parametrize(("chat_type", "to", "sender", "owner", "conv"), [
    (ChatType.CHAT, "bob", None, None, "bob"),            # sent, owner unknown
    (ChatType.CHAT, "bob", "alice", "alice", "bob"),      # sent by the owner
    (ChatType.CHAT, "alice", "bob", "alice", "bob"),      # received: the peer
    (ChatType.CHAT, "alice", "bob", None, "bob"),         # received, owner unknown
    (ChatType.GROUP_CHAT, "g", "bob", "alice", "g"),      # groups: always `to`
    (ChatType.GROUP_CHAT, "g", None, None, "g"),
    (ChatType.CHAT_ROOM, "r", "bob", "alice", "r"),
])
def test_the_conversation_rule(chat_type: ChatType, to: str, sender: str | None,
                               owner: str | None, conv: str):
    assert conversation_id(chat_type, to, sender, owner) == conv


# -------------------------------------------------------------------------------- kinds

def test_every_type_has_a_kind():
    assert set(KINDS) == set(MessageType)


@pytest.mark.parametrize("mtype", list(MessageType))
def test_the_blank_body_is_of_the_kinds_body_class(mtype: MessageType):
    assert type(blank_body(mtype)) is KINDS[mtype].body


def test_attachment_types_come_from_the_table():
    assert {MessageType.IMAGE, MessageType.VOICE, MessageType.VIDEO,
                                MessageType.FILE} == ATTACHMENT_TYPES


@pytest.mark.parametrize(("mtype", "rule"), [
    (MessageType.IMAGE, AutoDownload.THUMBNAIL), (MessageType.VIDEO, AutoDownload.THUMBNAIL),
    (MessageType.VOICE, AutoDownload.FILE), (MessageType.FILE, AutoDownload.NOTHING),
    (MessageType.TEXT, AutoDownload.NOTHING),
])
def test_auto_download_rules(mtype: MessageType, rule: AutoDownload):
    assert KINDS[mtype].auto_download == rule


@pytest.mark.parametrize(("mtype", "body", "text"), [
    (MessageType.TEXT, TextBody("hello"), "hello"),
    (MessageType.FILE, FileBody(display_name="report.pdf"), "report.pdf"),
    (MessageType.LOCATION, LocationBody(1, 2, "Main St", "Tower"), "Main St\nTower"),
    (MessageType.CUSTOM, CustomBody("red_packet"), "red_packet"),
    (MessageType.CMD, CmdBody("typing"), ""),
])
def test_searchable_text_reads_the_searchable_fields(mtype: MessageType, body: Any, text: str):
    assert searchable_text(mtype, body) == text


def test_searchable_text_reads_raw_payload_dicts_the_same_way():
    assert searchable_text(MessageType.LOCATION, {"address": "a", "building_name": "b"}) == "a\nb"


def test_only_cmd_is_never_stored():
    assert [t for t, k in KINDS.items() if not k.stored] == [MessageType.CMD]


# --------------------------------------------------------------------------- error codes

ERROR_TABLE = [
    ("GENERAL_ERROR", 1), ("NETWORK_ERROR", 2), ("DATABASE_ERROR", 3),
    ("EXCEED_SERVICE_LIMIT", 4), ("INVALID_PARAM", 110), ("QUERY_PARAM_REACHES_LIMIT", 112),
    ("USER_NOT_LOGIN", 201), ("SERVER_NOT_REACHABLE", 300), ("SERVER_TIMEOUT", 301),
    ("SERVER_BUSY", 302), ("SERVER_UNKNOWN_ERROR", 303), ("FILE_NOT_FOUND", 400),
    ("FILE_INVALID", 401), ("FILE_UPLOAD_FAILED", 402), ("FILE_DOWNLOAD_FAILED", 403),
    ("FILE_TOO_LARGE", 405), ("FILE_IS_EXPIRED", 407), ("MESSAGE_INVALID", 500),
    ("MESSAGE_INCLUDE_ILLEGAL_CONTENT", 501), ("SERVICE_NOT_ENABLED", 505),
    ("MESSAGE_EXPIRED", 506), ("MESSAGE_WEBSOCKET_DISCONNECTED", 510),
    ("MESSAGE_SIZE_LIMIT", 511), ("CONVERSATION_NOT_EXIST", 1400),
]


@pytest.mark.parametrize(("name", "number"), ERROR_TABLE)
def test_error_code_numbers_follow_the_published_table(name: str, number: int):
    assert int(ErrorCode[name]) == number


def test_the_error_table_has_no_other_codes():
    assert {c.name for c in ErrorCode} == {n for n, _ in ERROR_TABLE}


def test_an_error_shows_its_code_and_sentence():
    assert str(IMError(ErrorCode.INVALID_PARAM, "say why")) == "[110 INVALID_PARAM] say why"


def test_an_error_survives_pickling():
    err = pickle.loads(pickle.dumps(IMError(ErrorCode.FILE_TOO_LARGE, "big")))
    assert (err.code, err.description) == (ErrorCode.FILE_TOO_LARGE, "big")


# ------------------------------------------------------------------------ adapters' page check

@pytest.mark.parametrize("limit", [1, MAX_PAGE])
def test_page_sizes_in_range_pass(limit: int):
    check_page_size(limit)


@pytest.mark.parametrize("limit", [0, MAX_PAGE + 1, -1, True, 1.5, "10", None])
def test_page_sizes_out_of_range_are_refused(limit: Any):
    with pytest.raises(IMError) as err:
        check_page_size(limit)
    assert err.value.code == ErrorCode.QUERY_PARAM_REACHES_LIMIT


# ------------------------------------------------------------------------- the KINDS table

_N, _T, _F = AutoDownload.NOTHING, AutoDownload.THUMBNAIL, AutoDownload.FILE

# type: (body, searchable, attachment, thumbnail, auto_download, stored, editable, blank body).
# The table as designed: a change to any row of KINDS fails here.
KIND_ROWS = {
    MessageType.TEXT: (TextBody, ("text",), False, False, _N, True, True, TextBody("")),
    MessageType.IMAGE: (ImageBody, ("display_name", "caption"), True, True, _T, True, False, ImageBody()),
    MessageType.VOICE: (VoiceBody, ("display_name", "caption"), True, False, _F, True, False, VoiceBody()),
    MessageType.VIDEO: (VideoBody, ("display_name", "caption"), True, True, _T, True, False, VideoBody()),
    MessageType.FILE: (FileBody, ("display_name", "caption"), True, False, _N, True, False, FileBody()),
    MessageType.LOCATION: (LocationBody, ("address", "building_name"), False, False, _N, True,
                           False, LocationBody(0.0, 0.0)),
    MessageType.CMD: (CmdBody, (), False, False, _N, False, False, CmdBody("")),
    MessageType.CUSTOM: (CustomBody, ("event",), False, False, _N, True, True, CustomBody("")),
}


def test_every_message_type_has_a_row():
    assert set(KINDS) == set(MessageType) == set(KIND_ROWS)


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
def test_a_kinds_row_is_the_designed_one(mtype):
    k = KINDS[mtype]
    assert (k.body, k.searchable, k.attachment, k.thumbnail, k.auto_download, k.stored,
            k.editable, k.blank()) == KIND_ROWS[mtype]


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
def test_the_bodies_with_a_thumbnail_share_one_group_of_fields(mtype):
    k = KINDS[mtype]
    assert issubclass(k.body, ThumbnailedBody) is k.thumbnail
    names = {f.name for f in dataclasses.fields(k.body)}
    assert {"thumbnail_path", "thumbnail_url", "thumbnail_status"} <= names or not k.thumbnail


@pytest.mark.parametrize(("mtype", "body", "code"), [
    (MessageType.TEXT, TextBody(""), ErrorCode.MESSAGE_INVALID),
    (MessageType.LOCATION, LocationBody(91.0, 0.0), ErrorCode.INVALID_PARAM),
    (MessageType.LOCATION, LocationBody(0.0, -181.0), ErrorCode.INVALID_PARAM),
    (MessageType.CMD, CmdBody(""), ErrorCode.MESSAGE_INVALID),
    (MessageType.CUSTOM, CustomBody(""), ErrorCode.MESSAGE_INVALID),
])
def test_a_kinds_content_rule_refuses_an_empty_or_impossible_body(mtype, body, code):
    with pytest.raises(IMError) as err:
        check_content(mtype, body)
    assert err.value.code == code


@pytest.mark.parametrize(("mtype", "body"), [
    (MessageType.TEXT, TextBody("hi")), (MessageType.LOCATION, LocationBody(90.0, -180.0)),
    (MessageType.CMD, CmdBody("typing")), (MessageType.CUSTOM, CustomBody("poke")),
    (MessageType.FILE, FileBody()),
])
def test_a_kinds_content_rule_accepts_a_valid_body(mtype, body):
    check_content(mtype, body)


def test_a_kinds_row_that_disagrees_with_its_body_fails_the_import():
    path = kinds_module.__file__
    source = Path(path).read_text(encoding="utf-8")
    row = 'MessageType.FILE: Kind(FileBody, ("display_name", "caption"), attachment=True,'
    assert row in source
    broken = source.replace(row, row + " thumbnail=True,")
    with pytest.raises(TypeError, match="FILE"):
        exec(compile(broken, path, "exec"), {"__name__": "imstore.kinds", "__package__": "imstore"})
