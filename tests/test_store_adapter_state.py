"""The store's adapter state: named JSON documents a server adapter keeps between runs."""

from __future__ import annotations

import pytest

import imstore
from imstore import ErrorCode, IMError


def test_a_document_is_kept_replaced_whole_and_survives_a_reopen(tmp_path):
    with imstore.open(tmp_path, user_id="alice") as store:
        assert store.adapter_state("matrix @alice:hs") == {}
        store.save_adapter_state("matrix @alice:hs", {"since": "s1", "rooms": [["!a", "bob"]]})
        store.save_adapter_state("other", {"n": 1})
        store.save_adapter_state("matrix @alice:hs", {"since": "s2"})
    with imstore.open(tmp_path, user_id="alice") as store:
        assert store.adapter_state("matrix @alice:hs") == {"since": "s2"}
        assert store.adapter_state("other") == {"n": 1}


@pytest.mark.parametrize("name, state", [
    ("", {}), (5, {}), ("x", []), ("x", {"nan": float("nan")}), ("x", {"set": {1}}),
    ("x", {"big": "x" * (4 * 1024 * 1024)})])
def test_what_is_no_json_object_is_refused_and_nothing_is_written(name, state):
    with imstore.open(":memory:", user_id="alice") as store:
        store.save_adapter_state("x", {"kept": True})
        with pytest.raises(IMError) as err:
            store.save_adapter_state(name, state)
        assert err.value.code == ErrorCode.INVALID_PARAM
        assert store.adapter_state("x") == {"kept": True}


def test_an_unreadable_document_reads_as_none_kept():
    with imstore.open(":memory:", user_id="alice") as store:
        store.connection.execute("INSERT INTO adapter_state VALUES ('x', '[1, 2')")
        store.connection.execute("INSERT INTO adapter_state VALUES ('y', '[1, 2]')")
        assert store.adapter_state("x") == {} and store.adapter_state("y") == {}
