"""The lifecycle's tables, row by row, and the store obeying them (`imstore.lifecycle`)."""

from __future__ import annotations

import itertools

import pytest

from imstore import Direction, ErrorCode, IMError, Message, MessageStatus
from imstore.lifecycle import (
    DOWNLOAD_TRANSITIONS,
    SEND_TRANSITIONS,
    DownloadEvent,
    ReceiptKind,
    SendEvent,
    download_move,
    is_mine,
    next_status,
    send_move,
    settled_status,
)
from imstore.message import DownloadStatus
from imstore.store import RECEIPT_DELIVERED, RECEIPT_READ, MessageStore

S = MessageStatus
D = DownloadStatus

# The send table as the design states it. A change to a row of SEND_TRANSITIONS fails here.
SEND_TABLE = {
    (S.CREATE, SendEvent.SEND): S.INPROGRESS,
    (S.FAIL, SendEvent.SEND): S.INPROGRESS,
    (S.CREATE, SendEvent.ACCEPT): S.SUCCESS,
    (S.INPROGRESS, SendEvent.ACCEPT): S.SUCCESS,
    (S.FAIL, SendEvent.ACCEPT): S.SUCCESS,
    (S.SUCCESS, SendEvent.ACCEPT): S.SUCCESS,
    (S.INPROGRESS, SendEvent.FAIL): S.FAIL,
    (S.INPROGRESS, SendEvent.INTERRUPT): S.FAIL,
    (S.CREATE, SendEvent.STORE): S.SUCCESS,
    (S.CREATE, SendEvent.IMPORT): S.SUCCESS,
    (S.INPROGRESS, SendEvent.IMPORT): S.SUCCESS,
}

# Which targets `set_status` accepts from each status: the table's targets, nothing else.
LEGAL = {(s, to) for (s, _), to in SEND_TABLE.items()}


def test_the_send_table_is_the_designed_one():
    assert SEND_TRANSITIONS == SEND_TABLE


@pytest.mark.parametrize(("start", "event"), list(itertools.product(S, SendEvent)),
                         ids=lambda v: v.name)
def test_next_status_follows_the_table_or_refuses(start, event):
    if (start, event) in SEND_TABLE:
        assert next_status(start, event) is SEND_TABLE[start, event]
    else:
        with pytest.raises(IMError) as err:
            next_status(start, event)
        assert err.value.code == ErrorCode.INVALID_PARAM


def _stored_with(store: MessageStore, status: MessageStatus) -> Message:
    """A sent message stored with ``status`` (through the legal moves from INPROGRESS)."""
    msg = Message.text("bob", "hi")
    msg.status = S.INPROGRESS if status in (S.INPROGRESS, S.FAIL, S.SUCCESS) else S.CREATE
    if status == S.CREATE:  # a CREATE insert is stored as SUCCESS: reach CREATE by raw SQL
        store.insert_message(msg)
        store.connection.execute("UPDATE message SET status = ? WHERE msg_id = ?",
                                 (int(S.CREATE), msg.msg_id))
        return msg
    store.insert_message(msg)
    if status != S.INPROGRESS:
        store.set_status(msg.msg_id, status)
    return msg


@pytest.mark.parametrize(("start", "to"), list(itertools.product(S, S)),
                         ids=lambda v: v.name)
def test_set_status_takes_exactly_the_tables_moves(store: MessageStore, start, to):
    msg = _stored_with(store, start)
    assert store.get_message(msg.msg_id).status == start
    if (start, to) in LEGAL:
        store.set_status(msg.msg_id, to)
        assert store.get_message(msg.msg_id).status == to
    else:
        with pytest.raises(IMError) as err:
            store.set_status(msg.msg_id, to)
        assert err.value.code == ErrorCode.INVALID_PARAM
        assert start.name in err.value.description and to.name in err.value.description
        assert store.get_message(msg.msg_id).status == start  # nothing changed


def test_the_move_the_issue_found_is_refused(store: MessageStore):
    msg = _stored_with(store, S.SUCCESS)
    with pytest.raises(IMError):
        store.set_status(msg.msg_id, S.CREATE)
    assert store.get_message(msg.msg_id).status == S.SUCCESS


def test_update_message_cannot_make_an_illegal_move(store: MessageStore):
    msg = store.insert_message(Message.text("bob", "hi"))  # stored SUCCESS
    msg.status = S.INPROGRESS
    msg.ext = {"changed": True}
    with pytest.raises(IMError) as err:
        store.update_message(msg)
    assert err.value.code == ErrorCode.INVALID_PARAM
    got = store.get_message(msg.msg_id)
    assert (got.status, got.ext) == (S.SUCCESS, {})


def test_set_status_finds_a_sent_message_by_its_local_id(store: MessageStore):
    msg = _stored_with(store, S.INPROGRESS)
    store.mark_sent(msg.msg_id, "S1", 100)
    store.set_status(msg.msg_id, S.SUCCESS)  # ACCEPT again: legal, by the local id
    assert store.get_message("S1").status == S.SUCCESS


def test_a_store_opened_with_a_send_in_flight_fails_it(tmp_path):
    path = str(tmp_path / "s")
    with MessageStore.open(path, user_id="alice", search=False) as store:
        msg = _stored_with(store, S.INPROGRESS)
    with MessageStore.open(path, user_id="alice", search=False) as store:
        assert store.get_message(msg.msg_id).status == next_status(S.INPROGRESS,
                                                                  SendEvent.INTERRUPT)


@pytest.mark.parametrize(("given", "imported", "stored"), [
    (S.CREATE, False, S.SUCCESS), (S.INPROGRESS, False, S.INPROGRESS),
    (S.FAIL, False, S.FAIL), (S.SUCCESS, False, S.SUCCESS),
    (S.CREATE, True, S.SUCCESS), (S.INPROGRESS, True, S.SUCCESS),
    (S.FAIL, True, S.FAIL), (S.SUCCESS, True, S.SUCCESS),
])
def test_settled_status(given, imported, stored):
    assert settled_status(given, imported=imported) is stored


def test_send_move_names_the_legal_targets():
    with pytest.raises(IMError) as err:
        send_move(S.SUCCESS, S.CREATE)
    assert "SUCCESS" in err.value.description and "CREATE" in err.value.description
    assert send_move(S.FAIL, S.INPROGRESS) is SendEvent.SEND


# -------------------------------------------------------------------------------- downloads

DOWNLOAD_TABLE = {
    **{(s, DownloadEvent.START): D.DOWNLOADING for s in D},
    **{(s, DownloadEvent.HAVE): D.SUCCEEDED for s in D},
    (D.DOWNLOADING, DownloadEvent.DONE): D.SUCCEEDED,
    (D.DOWNLOADING, DownloadEvent.FAIL): D.FAILED,
}


def test_the_download_table_is_the_designed_one():
    assert DOWNLOAD_TRANSITIONS == DOWNLOAD_TABLE


@pytest.mark.parametrize(("start", "event"), list(itertools.product(D, DownloadEvent)),
                         ids=lambda v: v.name)
def test_download_move_follows_the_table_or_refuses(start, event):
    if (start, event) in DOWNLOAD_TABLE:
        assert download_move(start, event) is DOWNLOAD_TABLE[start, event]
    else:
        with pytest.raises(IMError) as err:
            download_move(start, event)
        assert err.value.code == ErrorCode.INVALID_PARAM


# --------------------------------------------------------------------------------- receipts

def test_receipt_kinds_keep_their_numbers_and_read_implies_delivered():
    assert (RECEIPT_DELIVERED, RECEIPT_READ) == (1, 2)
    assert ReceiptKind.READ.implied == (ReceiptKind.DELIVERED, ReceiptKind.READ)
    assert ReceiptKind.DELIVERED.implied == (ReceiptKind.DELIVERED,)


def test_an_early_read_receipt_marks_delivered_too(store: MessageStore):
    store.apply_receipts(ReceiptKind.READ, ["S1"])
    msg = _stored_with(store, S.INPROGRESS)
    stored, kinds = store.mark_sent(msg.msg_id, "S1", 100)
    assert kinds == [ReceiptKind.READ]
    assert stored.is_delivered and stored.is_read_acked


@pytest.mark.parametrize("kind", [0, 3, True, "1", None])
def test_apply_receipts_refuses_what_is_not_a_kind(store: MessageStore, kind):
    with pytest.raises(IMError) as err:
        store.apply_receipts(kind, ["S1"])
    assert err.value.code == ErrorCode.INVALID_PARAM


@pytest.mark.parametrize(("sender", "mine"), [(None, True), ("alice", True), ("bob", False),
                                              ("", False)])
def test_is_mine(sender, mine):
    assert is_mine(sender, "alice") is mine


def test_a_received_copy_is_not_a_send_in_flight(tmp_path):
    """The INTERRUPT move is for this user's sends: a received message whose server copy said
    INPROGRESS does not turn into "failed to send" when the store is opened again."""
    path = str(tmp_path / "s")
    with MessageStore.open(path, user_id="alice", search=False) as store:
        theirs = Message.text("alice", "from bob", sender="bob", msg_id="r1", timestamp=10**12)
        theirs.status = S.INPROGRESS
        store.merge_received([theirs])
        before = store.get_message("r1").status
    with MessageStore.open(path, user_id="alice", search=False) as store:
        got = store.get_message("r1")
        assert got.direction == Direction.RECEIVE and got.status == before != S.FAIL
