"""Encryption at rest (issue 22), the search index: sealed files (AES-GCM per file), the whoosh
storage over them, and the index of an encrypted store — the segment helper's files, damage, an
index the key does not open, and another process reading it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import imstore
from imstore import ErrorCode, IMError, Message, _crypto

from .test_encryption import KEY, OTHER, _holding

pytest.importorskip("sqlcipher3", reason="encryption needs imstore[crypto]")


# ------------------------------------------------------------------- sealed files (the index)

def test_a_sealed_file_round_trips_and_never_repeats() -> None:
    key = _crypto.index_key(KEY)
    one, two = _crypto.seal(key, b"secret words"), _crypto.seal(key, b"secret words")
    assert one != two and b"secret" not in one  # a fresh salt and nonce per file
    assert _crypto.unseal(key, one) == _crypto.unseal(key, two) == b"secret words"
    assert _crypto.sealed_length(len(one)) == len(b"secret words")


@pytest.mark.parametrize("damage", ["flip", "cut", "plain", "other key"])
def test_a_sealed_file_that_was_changed_does_not_open(damage: str) -> None:
    key = _crypto.index_key(KEY)
    sealed = bytearray(_crypto.seal(key, b"x" * 100))
    if damage == "flip":
        sealed[40] ^= 1
    elif damage == "cut":
        del sealed[-5:]
    elif damage == "plain":
        sealed = bytearray(b"x" * 100)
    else:
        key = _crypto.index_key(OTHER)
    with pytest.raises(IMError) as err:
        _crypto.unseal(key, bytes(sealed))
    assert err.value.code == ErrorCode.DATABASE_ERROR


def test_keys_for_other_purposes_differ_from_the_store_key() -> None:
    assert _crypto.index_key(KEY) != KEY
    assert _crypto.index_key(KEY) != _crypto.index_key(OTHER)
    assert _crypto.subkey(KEY, b"a") != _crypto.subkey(KEY, b"b")


def test_an_encrypted_whoosh_index_holds_no_plaintext(tmp_path: Path) -> None:
    from whoosh import fields, qparser

    from imstore.index._sealed import Sealing

    key = _crypto.index_key(KEY)
    storage = Sealing(key).storage(str(tmp_path / "ix"))
    storage.create()
    ix = storage.create_index(fields.Schema(id=fields.ID(stored=True), body=fields.TEXT))
    for batch in range(3):  # several segments, then a merge
        w = ix.writer()
        for i in range(200):
            w.add_document(id=f"{batch}-{i}", body=f"zanzibar word{i}")
        w.commit(merge=False)
    ix.writer().commit(optimize=True)
    assert _holding(tmp_path / "ix", b"zanzibar") == []
    assert _holding(tmp_path / "ix", b"word1") == []
    again = Sealing(key).storage(str(tmp_path / "ix")).open_index()  # a cold cache
    query = qparser.QueryParser("body", again.schema).parse("zanzibar")
    with again.searcher() as searcher:
        assert len(searcher.search(query, limit=None)) == 600
    with pytest.raises(IMError):
        Sealing(_crypto.index_key(OTHER)).storage(str(tmp_path / "ix")).open_index()


# -------------------------------------------------------------------- the store's sealed index

def test_the_segment_helper_seals_what_it_writes(tmp_path: Path) -> None:
    from imstore.index import Doc, SearchIndex
    from imstore.index._sealed import Sealing

    ix = SearchIndex(str(tmp_path / "ix"), workers=2, sealing=Sealing(_crypto.index_key(KEY)))
    try:
        ix.apply([], [], new=[Doc(i, i, "conv-7f3e9a", "s", 1, f"helperword {i}", "")
                              for i in range(1, 9001)])
        assert ix._split.helper is not None  # half of the batch went through the helper process
        key = _crypto.index_key(KEY)
        for part in ("cmdline", "environ"):  # the key went over its stdin, nowhere else
            seen = Path(f"/proc/{ix._split.helper.proc.pid}/{part}").read_bytes()
            assert key not in seen and key.hex().encode() not in seen
        hits = ix.hits(["helperword"], ["content"], conv_id=None, start_time=None,
                       end_time=None)  # (sort time, row id), oldest first
        assert [rowid for _, rowid in hits[-5:]] == [8996, 8997, 8998, 8999, 9000]
        assert len(hits) == 9000
    finally:
        ix.close()
    assert _holding(tmp_path / "ix", b"helperword") == []
    assert _holding(tmp_path / "ix", b"conv-7f3e9a") == []


def _index_files(path: Path) -> list[Path]:
    return [p for p in (path / "search").iterdir()
            if p.is_file() and p.name not in ("FORMAT",) and not p.name.endswith("LOCK")]


def test_a_sealed_index_file_that_was_changed_is_damage_searches_stay_exact(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s"
    with imstore.open(path, user_id="alice", key=KEY) as s:
        s.import_messages(Message.text("alice", f"needle{i % 5} hay", sender="bob")
                          for i in range(500))
        s.flush_index()
        for f in _index_files(path):
            if not f.name.endswith(".toc"):
                data = bytearray(f.read_bytes())
                data[len(data) // 2] ^= 0x40  # one bit: the tag no longer matches
                f.write_bytes(bytes(data))
        assert len(s.search_messages("needle3", limit=400)) == 100
        assert "does not decrypt" in caplog.text
        s.flush_index()
        assert len(s.search_messages("hay", limit=400)) == 400
        assert s.verify().ok
    assert _holding(path, b"needle") == []


@pytest.mark.parametrize("left", ["plaintext", "another key"])
def test_an_index_the_key_does_not_open_is_rebuilt_sealed(tmp_path: Path, left: str) -> None:
    from imstore.index import Doc, SearchIndex
    from imstore.index._sealed import Sealing

    path = tmp_path / "s"
    with imstore.open(path, user_id="alice", key=KEY, search=False) as s:
        s.import_messages(Message.text("alice", f"stored {i}", sender="bob") for i in range(50))
    # what an earlier version (plaintext) or an old key (a restored backup) left behind
    sealing = None if left == "plaintext" else Sealing(_crypto.index_key(OTHER))
    old = SearchIndex(str(path / "search"), workers=1, sealing=sealing)
    old.apply([], [], new=[Doc(i, i, "c", "s", 1, f"leftword {i}", "") for i in range(1, 40)])
    old.close()
    with imstore.open(path, user_id="alice", key=KEY) as s:
        s.flush_index()
        assert len(s.search_messages("stored", limit=400)) == 50
        assert s.search_messages("leftword") == []
        assert s.verify().ok
    assert _holding(path, b"leftword") == [] and _holding(path, b"stored") == []


_INDEXES = """
import sys, imstore
from imstore import Message
with imstore.open(sys.argv[1], user_id="alice", key=bytes(range(32))) as s:
    s.import_messages(Message.text("alice", f"fromchild {i}", sender="bob") for i in range(300))
    s.flush_index()
    print("indexed", flush=True)
    sys.stdin.readline()
"""


def test_another_process_reads_the_sealed_index_of_the_one_that_indexes(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "s"
    imstore.open(path, user_id="alice", key=KEY).close()
    with subprocess.Popen([sys.executable, "-c", _INDEXES, str(path)], text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "indexed"
            with imstore.open(path, user_id="alice", key=KEY) as s:
                assert not s.index_status().indexer  # the child holds the lease
                assert len(s.search_messages("fromchild", limit=400)) == 300
            proc.communicate("", timeout=60)
        finally:
            if proc.returncode is None:  # exactly the child this test started
                proc.kill()
                proc.wait()
    assert _holding(path, b"fromchild") == []
