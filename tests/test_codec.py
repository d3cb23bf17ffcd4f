from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imstore import ErrorCode, IMError, Limits, Message, MessageType
from imstore.codec import (
    BODY_CLASSES,
    body_from_dict,
    body_to_dict,
    decode_body,
    decode_ext,
    encode_body,
    encode_ext,
    validate_message,
)
from imstore.message import DownloadStatus

text = st.text(min_size=1, max_size=40)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
ext_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.text(max_size=8), c, max_size=3), max_leaves=8)
exts = st.dictionaries(st.text(max_size=10), ext_values, max_size=4)
statuses = st.sampled_from(list(DownloadStatus))


def file_fields() -> dict[str, st.SearchStrategy[object]]:
    return dict(local_path=st.text(max_size=30), display_name=st.text(max_size=30),
                remote_url=st.text(max_size=30), size=st.integers(0, 10**9),
                download_status=statuses)


bodies = st.one_of(
    st.builds(BODY_CLASSES[MessageType.TEXT], text=text),
    st.builds(BODY_CLASSES[MessageType.IMAGE], width=st.none() | st.integers(0, 10**4),
              height=st.none() | st.integers(0, 10**4), thumbnail_url=st.text(max_size=20),
              thumbnail_status=statuses, **file_fields()),
    st.builds(BODY_CLASSES[MessageType.VOICE], duration_ms=st.integers(0, 10**7), **file_fields()),
    st.builds(BODY_CLASSES[MessageType.VIDEO], duration_ms=st.integers(0, 10**7),
              thumbnail_path=st.text(max_size=20), **file_fields()),
    st.builds(BODY_CLASSES[MessageType.FILE], **file_fields()),
    st.builds(BODY_CLASSES[MessageType.LOCATION], latitude=st.floats(-90, 90),
              longitude=st.floats(-180, 180), address=st.text(max_size=30),
              building_name=st.text(max_size=30)),
    st.builds(BODY_CLASSES[MessageType.CMD], action=text,
              params=st.dictionaries(st.text(max_size=8), scalars, max_size=3)),
    st.builds(BODY_CLASSES[MessageType.CUSTOM], event=text,
              params=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
)
TYPE_OF = {cls: t for t, cls in BODY_CLASSES.items()}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])  # shared, busy machines
@given(bodies, exts)
def test_every_body_and_ext_round_trips(body, ext):
    mtype = TYPE_OF[type(body)]
    assert decode_body(mtype, encode_body(body)) == body
    assert decode_ext(encode_ext(ext)) == ext


@given(bodies, st.dictionaries(st.text(min_size=1, max_size=8).map(lambda s: "zz_" + s),
                               scalars, min_size=1, max_size=3))
def test_unknown_fields_from_a_newer_version_survive(body, unknown):
    mtype = TYPE_OF[type(body)]
    newer = body_to_dict(body) | unknown
    blob = bytes((2,)) + msgpack.packb(newer, use_bin_type=True)  # a newer format version
    decoded = decode_body(mtype, blob)
    assert decoded.extra == unknown
    again = msgpack.unpackb(encode_body(decoded)[1:], raw=False)
    assert again == newer
    assert body_from_dict(mtype, again) == decoded


def test_payload_limit_counts_body_and_ext():
    limits = Limits()
    ok = Message.text("bob", "x" * 3000)
    validate_message(ok, limits)
    with pytest.raises(IMError) as err:
        validate_message(Message.text("bob", "x" * 3100), limits)
    assert err.value.code == ErrorCode.MESSAGE_SIZE_LIMIT
    with pytest.raises(IMError) as err:
        validate_message(Message.text("bob", "x" * 2000, ext={"k": "v" * 1100}), limits)
    assert err.value.code == ErrorCode.MESSAGE_SIZE_LIMIT
    validate_message(Message.text("bob", "x" * 5000), Limits(max_payload_bytes=5 * 1024))


def test_file_limits(tmp_path: Path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(10 * 1024 * 1024 + 1)  # sparse: costs no disk
    with pytest.raises(IMError) as err:
        validate_message(Message.file("bob", big), Limits())
    assert err.value.code == ErrorCode.FILE_TOO_LARGE
    exact = tmp_path / "exact.bin"
    with open(exact, "wb") as f:
        f.truncate(10 * 1024 * 1024)
    msg = Message.file("bob", exact)
    validate_message(msg, Limits())
    assert msg.body.size == 10 * 1024 * 1024
    with pytest.raises(IMError) as err:
        validate_message(Message.image("bob", tmp_path / "missing.png"), Limits(), need_file=True)
    assert err.value.code == ErrorCode.FILE_NOT_FOUND


@pytest.mark.parametrize("make, code", [
    (lambda: Message.text("bob", ""), ErrorCode.MESSAGE_INVALID),
    (lambda: Message.text("", "hi"), ErrorCode.INVALID_PARAM),
    (lambda: Message.location("bob", 91, 0), ErrorCode.INVALID_PARAM),
    (lambda: Message.location("bob", float("nan"), 0), ErrorCode.INVALID_PARAM),
    (lambda: Message.custom("bob", "red_packet", {"amount": 5}), ErrorCode.INVALID_PARAM),
    (lambda: Message.custom("bob", ""), ErrorCode.MESSAGE_INVALID),
    (lambda: Message.cmd("bob", ""), ErrorCode.MESSAGE_INVALID),
    (lambda: Message.text("bob", "hi", ext={"k": object()}), ErrorCode.INVALID_PARAM),
    (lambda: Message.text("bob", "hi", ext={1: "v"}), ErrorCode.INVALID_PARAM),
])
def test_bad_messages_get_the_right_code(make, code):
    with pytest.raises(IMError) as err:
        validate_message(make(), Limits())
    assert err.value.code == code
    assert err.value.description
    assert str(int(code)) in str(err.value)


def test_unknown_type_and_mismatched_body():
    msg = Message.text("bob", "hi")
    msg.type = 99  # type: ignore[assignment]
    with pytest.raises(IMError) as err:
        validate_message(msg, Limits())
    assert err.value.code == ErrorCode.INVALID_PARAM
    msg = Message.text("bob", "hi")
    msg.type = MessageType.LOCATION
    with pytest.raises(IMError) as err:
        validate_message(msg, Limits())
    assert err.value.code == ErrorCode.MESSAGE_INVALID


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x01\xc1", b"\x01\x93\x01\x02\x03",
                                  os.urandom(1) + b"\xff" * 8])
def test_corrupt_blobs_are_message_invalid(blob):
    with pytest.raises(IMError) as err:
        decode_body(MessageType.TEXT, blob)
    assert err.value.code == ErrorCode.MESSAGE_INVALID
