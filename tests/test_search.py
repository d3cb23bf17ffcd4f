"""Keyword search: real Chinese and English text, literal queries, scopes, consistency."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import imstore
from imstore import (
    ChatType,
    Direction,
    ErrorCode,
    IMError,
    IndexPolicy,
    IndexStatus,
    Message,
    MessageStore,
    MessageType,
    SearchScope,
)
from imstore.message import FileBody
from imstore.text import fold

from .conftest import DATA


def kdconv_texts() -> list[list[str]]:
    convs = []
    for f in sorted((DATA / "corpora" / "kdconv").glob("*.json")):
        for dialog in json.loads(f.read_text(encoding="utf-8")):
            convs.append([m["message"] for m in dialog["messages"]])
    return convs


@pytest.fixture(scope="module")
def kdconv() -> Iterator[tuple[MessageStore, dict[str, str], list[str]]]:
    if not (DATA / "corpora" / "kdconv").is_dir():
        pytest.skip(f"the KdConv corpus is absent from {DATA}")
    store = imstore.open(":memory:", user_id="me")
    texts: dict[str, str] = {}
    entities: set[str] = set()
    msgs = []
    for i, conv in enumerate(kdconv_texts()):
        for j, text in enumerate(conv):
            mid = f"k{i}-{j}"
            texts[mid] = text
            msgs.append(Message.text("me", text, sender=f"user{i % 40}", msg_id=mid,
                                     timestamp=1_600_000_000_000 + len(msgs)))
    for f in sorted((DATA / "corpora" / "kdconv").glob("*.json")):
        for dialog in json.loads(f.read_text(encoding="utf-8")):
            for m in dialog["messages"]:
                for a in m.get("attrs", []):
                    entities.add(re.sub(r"（.*?）", "", a["name"]).strip())
    res = store.import_messages(msgs, batch_size=2000)
    assert res.imported == len(msgs)
    yield store, texts, sorted(e for e in entities if e)
    store.close()


def all_hits(store: MessageStore, keyword: str, **kw) -> set[str]:
    """Every hit, paging past the 400 limit with time windows."""
    out: set[str] = set()
    end = None
    while True:
        page = store.search_messages(keyword, limit=400, end_time=end, **kw)
        out |= {m.msg_id for m in page}
        if len(page) < 400:
            return out
        end = page[0].timestamp - 1


def test_kdconv_entities_and_common_words_exact(kdconv):
    store, texts, entities = kdconv
    rnd = random.Random(7)
    words: set[str] = set()
    for text in rnd.sample(list(texts.values()), 150):
        cjk = re.findall(r"[\u4e00-\u9fff]{2,}", text)
        for run in cjk:
            i = rnd.randrange(len(run) - 1)
            words.add(run[i:i + 2])
            if len(run) >= 4:
                words.add(run[i:i + 3] if i + 3 <= len(run) else run[:3])
    # Names as users type them: Chinese, with digits or a middle dot at most. (Latin names follow
    # the word rules instead, tested on English text below.)
    names = [e for e in entities if re.fullmatch(r"[\u4e00-\u9fff][\u4e00-\u9fff0-9·]*", e)]
    queries = rnd.sample(names, min(150, len(names))) + sorted(words)
    queries += ["的", "我", "吗", "电影", "音乐", "北京"]
    checked = 0
    for q in queries:
        truth = {mid for mid, t in texts.items() if q in t}
        got = all_hits(store, q)
        assert got == truth, f"{q!r}: missing {len(truth - got)}, extra {len(got - truth)}"
        checked += bool(truth)
    assert checked > 150


def test_kdconv_names_with_middle_dots_and_mixed_text(kdconv):
    store, texts, _ = kdconv
    for q in ("尼古拉斯·斯帕克斯", "2004年", "798艺术", "小说家尼古拉斯"):
        truth = {mid for mid, t in texts.items() if q in t}
        assert truth, q
        assert all_hits(store, q) == truth


def test_chitchat_words_found_with_no_false_hits(data_dir):
    raw = json.loads((data_dir / "corpora" / "chitchat" / "chitchat_every9th.json").read_text())
    texts: dict[str, str] = {}
    msgs = []
    for ci, conv in enumerate(list(raw.values())[:300]):
        for turn in conv["messages"]:
            for m in turn:
                mid = f"c{len(texts)}"
                texts[mid] = m["text"]
                msgs.append(Message.text("me", m["text"], sender=f"u{ci}", msg_id=mid,
                                         timestamp=1_500_000_000_000 + len(msgs)))
    with imstore.open(":memory:", user_id="me") as store:
        store.import_messages(msgs)
        rnd = random.Random(3)
        vocab = sorted({w for t in texts.values() for w in re.findall(r"[A-Za-z]{4,}", t)})
        for word in rnd.sample(vocab, 80):
            w = word.lower()
            whole = {mid for mid, t in texts.items()
                     if re.search(rf"(?<![A-Za-z0-9_]){re.escape(w)}(?![A-Za-z0-9_])", t.lower())}
            prefix = {mid for mid, t in texts.items()
                      if re.search(rf"(?<![A-Za-z0-9_]){re.escape(w)}", fold(t))}
            got = all_hits(store, word)
            assert whole <= got, f"{word!r}: whole-word hits missing"
            assert got == prefix, f"{word!r}: {len(got ^ prefix)} differ"


@pytest.fixture
def s(store: MessageStore) -> MessageStore:
    rows = [
        ("bob", "Are we still meeting tomorrow?", {}),
        ("bob", "I'll bring the iPhone电池 charger", {"tag": "shopping list"}),
        ("carol", "汤姆·汉克斯的新电影很好看", {}),
        ("carol", "Café au lait, s'il vous plaît", {}),
        ("bob", "Use AND/OR * wildcards: a:b (quotes\") [brackets]", {}),
        ("dave", "東京で会いましょう", {}),
        ("dave", "내일 서울에서 만나요", {}),
        ("erin", "Party at 8 🙂", {}),
    ]
    for i, (peer, text, ext) in enumerate(rows):
        store.insert_message(Message.text("alice", text, sender=peer, ext=ext,
                                          timestamp=1000 + i * 10))
    return store


def texts_of(msgs) -> list[str]:
    return [m.body.text for m in msgs]


@pytest.mark.parametrize("keyword, expected", [
    ("meet", ["Are we still meeting tomorrow?"]),
    ("MEETING tomorrow", ["Are we still meeting tomorrow?"]),
    ("eeting", []),
    ("电池", ["I'll bring the iPhone电池 charger"]),
    ("iphone电池", ["I'll bring the iPhone电池 charger"]),
    ("汤姆·汉克斯", ["汤姆·汉克斯的新电影很好看"]),
    ("汉克", ["汤姆·汉克斯的新电影很好看"]),
    ("影", ["汤姆·汉克斯的新电影很好看"]),
    ("克汤", []),
    ("cafe", ["Café au lait, s'il vous plaît"]),
    ("PLAIT", ["Café au lait, s'il vous plaît"]),
    ("東京", ["東京で会いましょう"]),
    ("서울", ["내일 서울에서 만나요"]),
    ("AND", ["Use AND/OR * wildcards: a:b (quotes\") [brackets]"]),
    ("a:b", ["Use AND/OR * wildcards: a:b (quotes\") [brackets]"]),
    ("(quotes\")", ["Use AND/OR * wildcards: a:b (quotes\") [brackets]"]),
    ("[brackets", ["Use AND/OR * wildcards: a:b (quotes\") [brackets]"]),
    ("*", ["Use AND/OR * wildcards: a:b (quotes\") [brackets]"]),
    ('"', ["Use AND/OR * wildcards: a:b (quotes\") [brackets]"]),
    ("🙂", ["Party at 8 🙂"]),
    ("%", []),
    ("meet zebra", []),
])
def test_literal_keywords(s: MessageStore, keyword, expected):
    assert texts_of(s.search_messages(keyword)) == expected


@pytest.mark.parametrize("keyword", ["AND", "OR", "NOT", "*", "?", "a:b", '"unbalanced', "(", ")",
                                     "[", "]", "{", "}", "~2", "^3", "x" * 10_000, "\x00\x01\x1f",
                                     "meet\x00ing", "电" * 5000, "🙂", "a AND OR NOT b",
                                     "content:meet", "TO", "[a TO b]", "'", "\\"])
def test_hostile_keywords_are_literal_text(s: MessageStore, keyword):
    assert isinstance(s.search_messages(keyword), list)  # no error: every keyword is literal


@pytest.mark.parametrize("keyword", ["", " ", "\t\n", None, 5])
def test_empty_keyword_is_invalid_param(s: MessageStore, keyword):
    with pytest.raises(IMError) as err:
        s.search_messages(keyword)
    assert err.value.code == ErrorCode.INVALID_PARAM


@pytest.mark.parametrize("limit", [0, 401])
def test_search_limit(s: MessageStore, limit):
    with pytest.raises(IMError) as err:
        s.search_messages("meet", limit=limit)
    assert err.value.code == ErrorCode.QUERY_PARAM_REACHES_LIMIT


def test_scopes_filters_and_direction(store: MessageStore, tmp_path: Path):
    f = tmp_path / "quarterly report.pdf"
    f.write_bytes(b"x")
    store.insert_message(Message.file("alice", f, sender="bob", timestamp=100))
    store.insert_message(Message.location("alice", 1, 2, address="1 Report Street",
                                          building_name="报告大楼", sender="bob", timestamp=200))
    store.insert_message(Message.custom("alice", "report_card", sender="carol", timestamp=300))
    store.insert_message(Message.text("alice", "see attached", sender="carol",
                                      ext={"note": "report draft", "n": 3}, timestamp=400))
    store.insert_message(Message.text("bob", "my report", timestamp=500))
    assert len(store.search_messages("report")) == 4
    assert texts_of(store.search_messages("report", scope=SearchScope.EXT)) == ["see attached"]
    assert len(store.search_messages("report", scope=SearchScope.ALL)) == 5
    assert len(store.search_messages("报告")) == 1
    assert [m.timestamp for m in store.search_messages("report", conv_id="bob")] == [100, 200, 500]
    assert [m.timestamp for m in store.search_messages("report", sender="bob")] == [100, 200]
    assert [m.timestamp for m in store.search_messages("report", sender=["carol", "alice"],
                                                       scope=SearchScope.ALL)] == [300, 400, 500]
    assert [m.type for m in store.search_messages("report", types=[MessageType.FILE])] == \
        [MessageType.FILE]
    assert [m.timestamp for m in store.search_messages("report", start_time=200,
                                                       end_time=300)] == [200, 300]
    assert [m.timestamp for m in store.search_messages("report", limit=2)] == [300, 500]
    assert [m.timestamp for m in store.search_messages("report", limit=2,
                                                       direction=Direction.DOWN)] == [100, 200]


def test_writes_are_searchable_at_once_and_deletes_remove_hits(store: MessageStore):
    m1 = store.insert_message(Message.text("alice", "pineapple pizza", sender="bob", timestamp=1))
    assert texts_of(store.search_messages("pineapple")) == ["pineapple pizza"]
    m1.body.text = "mango salad"
    store.update_message(m1)
    assert store.search_messages("pineapple") == []
    assert texts_of(store.search_messages("mango")) == ["mango salad"]
    store.delete_message(m1.msg_id)
    assert store.search_messages("mango") == []
    store.import_messages([Message.text("alice", f"kiwi {i}", sender="bob", timestamp=10 + i)
                           for i in range(5)])
    store.delete_messages("bob", start_time=10, end_time=11)
    assert len(store.search_messages("kiwi")) == 3
    store.insert_message(Message.text("g", "kiwi in group", chat_type=ChatType.GROUP_CHAT,
                                      sender="x", timestamp=50))
    store.delete_conversation("bob")
    assert texts_of(store.search_messages("kiwi")) == ["kiwi in group"]
    store.delete_message_ids([m.msg_id for m in store.messages("g")])
    assert store.search_messages("kiwi") == []


def test_missing_or_corrupt_index_is_rebuilt_on_open(tmp_path: Path):
    path = tmp_path / "s"
    with imstore.open(path, user_id="alice") as st:
        st.import_messages([Message.text("alice", f"needle {i}", sender="bob") for i in range(30)])
    shutil.rmtree(path / "search")
    with imstore.open(path, user_id="alice") as st:
        assert len(st.search_messages("needle", limit=100)) == 30
    for f in (path / "search").iterdir():
        if f.suffix in (".seg", ".toc") or f.name.endswith(".toc"):
            f.write_bytes(b"garbage")
    with imstore.open(path, user_id="alice") as st:
        assert len(st.search_messages("needle", limit=100)) == 30
        assert st.verify().ok


def _lose_documents(st: MessageStore, rowids: range) -> int:
    """Remove documents from a store's index behind its back (as a damaged index would lose
    them); returns how many documents the index holds then."""
    from imstore._crypto import index_key
    from imstore.index import SearchIndex
    from imstore.index._sealed import Sealing

    assert st.directory is not None
    key = st.connection.store_key  # an encrypted store's index is sealed under its index key
    ix = SearchIndex(os.path.join(st.directory, "search"), workers=1,
                     sealing=None if key is None else Sealing(index_key(key)))
    try:
        ix.apply([], list(rowids))
        return ix.doc_count()
    finally:
        ix.close()


def test_rebuild_and_verify_repair_a_stale_index(disk_store: MessageStore):
    disk_store.import_messages([Message.text("alice", f"apple {i}", sender="bob") for i in range(50)])
    disk_store.flush_index()
    with disk_store.pause_indexing():  # the indexer thread is idle now; keep it out meanwhile
        _lose_documents(disk_store, range(1, 11))
    report = disk_store.verify()
    assert report.repaired["search_index"] == 10
    assert len(disk_store.search_messages("apple", limit=100)) == 50
    seen = []
    assert disk_store.rebuild_search_index(progress=seen.append) == 50 and seen[-1] == 50


def test_search_disabled_store(tmp_path: Path):
    with imstore.open(tmp_path / "s", user_id="a") as st:
        st.insert_message(Message.text("a", "before", sender="b"))
    with imstore.open(tmp_path / "s", user_id="a", search=False) as st:
        st.insert_message(Message.text("a", "written without the index", sender="b"))
        with pytest.raises(IMError) as err:
            st.search_messages("x")
        assert err.value.code == ErrorCode.SERVICE_NOT_ENABLED
    with imstore.open(tmp_path / "s", user_id="a") as st:  # the index catches up on open
        assert [m.body.text for m in st.search_messages("without")] == ["written without the index"]
        assert len(st.search_messages("before")) == 1
        assert st.verify().ok


def _import_and_index_forever(path: str, ready) -> None:  # in a child process
    st = imstore.open(path, user_id="alice")
    i = 0
    while True:  # imports of 300: each one ends by indexing what it wrote
        batch = [Message.text("alice", f"token{k}x 中文{k % 97} shared", sender=f"p{k % 5}",
                              msg_id=f"id{k}", timestamp=1000 + k) for k in range(i, i + 300)]
        st.import_messages(batch, batch_size=100)
        i += 300
        if i >= 1200:
            ready.set()


def test_sigkill_while_indexing_leaves_everything_searchable(tmp_path: Path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_import_and_index_forever, args=(str(tmp_path / "s"), ready))
    p.start()
    assert ready.wait(120)
    time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    with imstore.open(tmp_path / "s", user_id="alice") as st:
        total = st.stats()["messages"]
        assert total >= 1200 and total % 100 == 0
        stored = {f"id{i}" for i in range(total)}
        for i in random.Random(1).sample(range(total), 40):
            hits = st.search_messages(f"token{i}x")
            assert [m.msg_id for m in hits] == [f"id{i}"]
        hits = all_hits(st, "shared")
        assert hits == stored
        assert st.verify().ok


# -- the direct segment writer against whoosh's own writer -----------------------------------

def _corpus_docs(n: int, seed: int) -> list:
    from imstore.index import Doc

    rnd = random.Random(seed)
    words = ["meet", "meeting", "lunch", "Café", "CAFÉ", "naïve", "iPhone电池", "北京", "北京大学",
             "电影很好看", "東京で", "서울에서", "x" * 40, "a_b", "42", "🎂", "🙂", "—", "的", "我"]
    docs = []
    for i in range(n):
        k = rnd.randint(0, 25)
        content = " ".join(rnd.choice(words) for _ in range(k))
        if i % 10 == 0:
            content += f" unique{i} 独{chr(0x4e00 + i)}"
        if i % 50 == 0:
            content = ""
        ext = rnd.choice(["", "", "shopping list", "报告 draft 报告"])
        docs.append(Doc(rowid=10 + 3 * i, sort_time=1_000_000 + rnd.randint(-5, 5) * 1000 + i,
                        conv_id=f"conv{i % 7}", sender="s", type=1, content=content, ext=ext))
    return docs


def _postings(reader) -> dict:
    out = {}
    for fieldname, btext in reader.all_terms():
        m = reader.postings(fieldname, btext)
        plist = []
        while m.is_active():
            plist.append((m.id(), m.weight(), m.value() or b""))
            m.next()
        out[(fieldname, btext)] = plist
    return out


def test_direct_segments_equal_whoosh_own_writer(tmp_path: Path):
    from whoosh.filedb.filestore import FileStorage
    from whoosh.index import FileIndex
    from whoosh.reading import SegmentReader

    from imstore.index import ImCodec, key_of, schema, write_segment

    docs = _corpus_docs(700, 5)
    sch = schema()
    (tmp_path / "theirs").mkdir()
    theirs = FileIndex.create(FileStorage(str(tmp_path / "theirs")), sch)
    w = theirs.writer()  # stock whoosh: W3Codec, add_document, PostingPool
    for d in docs:
        w.add_document(key=key_of(d.rowid), conv=d.conv_id, content=d.content, ext=d.ext,
                       rowid=d.rowid, sort=d.sort_time)
    w.commit()
    (seg_theirs,) = theirs._segments()
    (tmp_path / "mine").mkdir()
    storage = FileStorage(str(tmp_path / "mine"))
    seg_mine, skipped = write_segment(storage, "MAIN", sch, docs, ImCodec())
    assert skipped == [] and seg_mine is not None
    a = SegmentReader(theirs.storage, sch, seg_theirs)
    b = SegmentReader(storage, sch, seg_mine)
    try:
        assert b.doc_count_all() == a.doc_count_all() == len(docs)
        pa, pb = _postings(a), _postings(b)
        assert pa.keys() == pb.keys()
        assert any(len(p) > 128 for p in pa.values())  # several blocks
        assert any(len(p) == 1 for p in pa.values())  # kept in the term info
        for term, plist in pa.items():
            assert pb[term] == plist, term
            assert b.doc_frequency(*term) == a.doc_frequency(*term)
            assert b.frequency(*term) == a.frequency(*term)
        for field in ("content", "ext"):
            assert b.field_length(field) == a.field_length(field)
            assert b.max_field_length(field) == a.max_field_length(field)
            assert b.min_field_length(field) == a.min_field_length(field)
            for doc in range(len(docs)):
                assert b.doc_field_length(doc, field) == a.doc_field_length(doc, field)
        for col in ("rowid", "sort"):
            assert list(b.column_reader(col)) == list(a.column_reader(col))
        assert list(b.column_reader("rowid")) == [d.rowid for d in docs]
        assert [b.stored_fields(i) for i in range(3)] == [{}, {}, {}]
    finally:
        a.close()
        b.close()


def test_direct_segments_are_read_and_merged_by_stock_whoosh(tmp_path: Path):
    from whoosh import index as windex
    from whoosh.qparser import QueryParser

    from imstore.index import SearchIndex

    ix = SearchIndex(str(tmp_path / "ix"), workers=1)
    docs = _corpus_docs(300, 6)
    ix.apply([], [], new=docs[:150])
    ix.apply([], [], new=docs[150:])
    ix.close()
    stock = windex.open_dir(str(tmp_path / "ix"))  # the schema and codec as pickled on disk
    truth = {d.rowid for d in docs if "meeting" in d.content.lower().split()}
    with stock.searcher() as s:
        hits = s.search(QueryParser("content", stock.schema).parse("meeting"), limit=None)
        rowids = s.reader().column_reader("rowid")
        assert {rowids[h.docnum] for h in hits} == truth
    stock.optimize()  # whoosh's own merge of our segments
    with stock.searcher() as s:
        hits = s.search(QueryParser("content", stock.schema).parse("meeting"), limit=None)
        rowids = s.reader().column_reader("rowid")
        assert {rowids[h.docnum] for h in hits} == truth
    ix = SearchIndex(str(tmp_path / "ix"))
    assert not ix.rebuilt and ix.doc_count() == 300
    ix.close()


# -- storage, failures, the helper process --------------------------------------------------

def test_memory_index_writes_nothing_to_the_temp_dir(tmp_path: Path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with imstore.open(":memory:", user_id="me") as st:
        st.import_messages([Message.text("me", f"word{i} common", sender="p") for i in range(300)])
        for i in range(30):  # many small commits, then merges through whoosh's writer
            st.insert_message(Message.text("me", f"late{i} common", sender="p"))
            assert len(st.search_messages(f"late{i}")) == 1
        assert st.verify().ok  # the small commits were merged on the way (tiers of 8)
        assert len(st.search_messages("common", limit=400)) == 330
    assert list(tmp_path.iterdir()) == []


def _index_with(tmp_path: Path, n: int = 400):
    from imstore.index import SearchIndex

    ix = SearchIndex(str(tmp_path / "ix"), workers=1)
    docs = _corpus_docs(n, 9)
    ix.apply([], [], new=docs)
    return ix, docs


def test_a_full_disk_during_a_commit_releases_the_lock(tmp_path: Path, monkeypatch):
    import errno

    from imstore.index import SearchIndexError

    ix, docs = _index_with(tmp_path)
    real = type(ix._storage).create_file
    calls = {"n": 0}

    def full(self, name, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, *a, **kw)

    monkeypatch.setattr(type(ix._storage), "create_file", full)
    with pytest.raises(SearchIndexError) as err:
        ix.apply([], [docs[0].rowid], new=_corpus_docs(50, 10))
    assert err.value.damaged is False and err.value.code == ErrorCode.DATABASE_ERROR
    monkeypatch.setattr(type(ix._storage), "create_file", real)
    ix.apply([], [docs[0].rowid])  # the next write gets the lock and succeeds
    assert ix.doc_count() == len(docs) - 1
    ix.close()


@pytest.mark.parametrize("suffix", [".pst", ".trm", ".col", ".toc"])
@pytest.mark.parametrize("damage", ["truncate", "zero", "garble"])
def test_damaged_files_raise_one_error_type_or_are_rebuilt(tmp_path: Path, suffix, damage):
    from imstore.index import SearchIndex, SearchIndexError

    ix, _ = _index_with(tmp_path)
    ix.close()
    rnd = random.Random(4)
    for f in (tmp_path / "ix").iterdir():
        if not f.name.endswith(suffix):
            continue
        data = bytearray(f.read_bytes())
        if damage == "truncate":
            data = data[:len(data) // 3]
        elif damage == "zero":
            data = bytearray(len(data))
        else:
            for _ in range(max(1, len(data) // 20)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        f.write_bytes(bytes(data))
    ix = SearchIndex(str(tmp_path / "ix"), workers=1)
    try:
        for words in (["meeting"], ["北京"], ["unique10"], ["电影很好看"], ["x"]):
            try:
                ix.hits(words, ["content", "ext"], conv_id="conv1", start_time=None,
                        end_time=None)
                ix.is_common(words, ["content"], 20, 4000)
                ix.doc_count()
            except SearchIndexError as exc:
                assert exc.damaged and exc.__cause__ is not None
    finally:
        ix.close()


def test_a_hostile_document_is_left_out_and_the_rest_indexed(tmp_path: Path):
    from imstore.index import Doc, SearchIndex

    ix = SearchIndex(str(tmp_path / "ix"), workers=1)
    docs = _corpus_docs(20, 3)
    bad = [Doc(1, 1, "conv\ud800", "s", 1, "surrogate conv", ""),
           Doc(2, 1 << 70, "c", "s", 1, "huge time", ""),
           Doc(3, 5, "c", "s", 1, ["not", "text"], {"x": 1}),  # type: ignore[arg-type]
           Doc(4, 6, "c", "s", 1, "lone \udc80 surrogate ok", "")]
    assert sorted(ix.apply([], [], new=[*bad, *docs])) == [1, 2]
    assert ix.doc_count() == len(docs) + 2
    assert ix.hits(["surrogate"], ["content"], conv_id=None, start_time=None,
                   end_time=None) == [(6, 4)]
    ix.close()


def _index_in_child(directory: str, out) -> None:  # in a child process
    from imstore.index import SearchIndex

    ix = SearchIndex(directory, workers=2)
    ix.apply([], [], new=_corpus_docs(5000, 2))
    assert ix._split.helper is not None
    out.send(ix._split.helper.proc.pid)
    out.recv()  # until killed


def test_the_helper_process_dies_with_its_parent(tmp_path: Path):
    import psutil

    ctx = multiprocessing.get_context("spawn")
    a, b = ctx.Pipe()
    p = ctx.Process(target=_index_in_child, args=(str(tmp_path / "ix"), b))
    p.start()
    try:
        assert a.poll(120)
        helper = a.recv()
        assert psutil.pid_exists(helper)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    try:
        psutil.Process(helper).wait(timeout=30)
    except psutil.NoSuchProcess:
        pass
    assert not psutil.pid_exists(helper) or psutil.Process(helper).status() == "zombie"
    from imstore.index import SearchIndex

    ix = SearchIndex(str(tmp_path / "ix"), workers=1)  # the lock died with its holder
    ix.apply([], [1])
    ix.close()


def test_fold_targets_are_what_unicodedata_says():
    import unicodedata

    from imstore import text

    eligible = re.compile(f"[{text._CJK}{text.SYMBOLS}]")
    targets = set()
    for i in range(0x110000):
        ch = chr(i)
        if 0xD800 <= i < 0xE000 or not (unicodedata.decomposition(ch) or ch.casefold() != ch
                                         or ch in text.TRADITIONAL_CHARACTERS):
            continue
        folded = fold(ch)
        if folded != ch:
            targets.update(c for c in folded if eligible.match(c))
    assert targets == set(text._FOLD_TARGETS)


@pytest.mark.parametrize("stored, keyword", [
    ("Happy Birthday 🎂", "birthday 🎂"),
    ("Happy Birthday 🎂", "🎂 HAPPY"),
    ("café☕", "CAFÉ☕"),
    ("Ｃａｆé ☕ time", "cafe ☕"),
    ("price 100€ only", "100€"),
    ("thumbs 👍🏽 up", "👍🏽"),
    ("→ arrow", "→"),
])
def test_symbol_and_emoji_words_match_like_other_words(store: MessageStore, stored, keyword):
    store.insert_message(Message.text("alice", "nothing here 🙂", sender="bob"))
    store.insert_message(Message.text("alice", stored, sender="bob"))
    assert texts_of(store.search_messages(keyword)) == [stored]
    from imstore.text import keyword_words, matches, needles

    words = keyword_words(keyword)
    assert matches(words, stored)
    raw = stored.encode()
    for w in words:  # the pre-filter never loses a match
        assert all(n.encode() in raw for n in needles(w))


def test_needles_are_characters_nothing_else_folds_into():
    from imstore.text import needles

    assert needles("🎂") == ["🎂"]
    assert needles("cafe☕") == ["☕"]
    assert needles("birthday") == []
    assert needles("北京") == ["北", "京"] or needles("北京") == ["京"]
    assert "一" not in needles("一个")  # "㈠" folds to "(一)"


def test_an_index_of_an_older_format_is_rebuilt(tmp_path: Path):
    from imstore.index import SearchIndex

    ix = SearchIndex(str(tmp_path / "ix"), workers=1)
    ix.apply([], [], new=_corpus_docs(20, 1))
    ix.close()
    ix = SearchIndex(str(tmp_path / "ix"))
    assert not ix.rebuilt
    ix.close()
    (tmp_path / "ix" / "FORMAT").write_text("imstore index 1\n")
    ix = SearchIndex(str(tmp_path / "ix"))
    assert ix.rebuilt and ix.doc_count() == 0
    ix.close()


def test_a_direct_merge_equals_writing_the_live_documents_at_once(tmp_path: Path):
    from whoosh.filedb.filestore import FileStorage
    from whoosh.reading import SegmentReader

    from imstore.index import ImCodec, merge_segments, schema, write_segment

    docs = _corpus_docs(900, 11)
    sch, codec = schema(), ImCodec()
    storage = FileStorage(str(tmp_path))
    parts = [docs[:300], docs[300:310], docs[310:700], docs[700:]]
    segs = [write_segment(storage, "MAIN", sch, p, codec)[0] for p in parts]
    deleted = set(random.Random(2).sample(range(900), 150)) | set(range(300, 310))
    offset = 0
    for seg, part in zip(segs, parts, strict=True):
        for d in range(len(part)):
            if offset + d in deleted:
                seg.delete_document(d)
        offset += len(part)
    merged = merge_segments(storage, "MAIN", sch, segs, codec)
    live = [d for i, d in enumerate(docs) if i not in deleted]
    direct, _ = write_segment(storage, "MAIN", sch, live, codec)
    a, b = SegmentReader(storage, sch, direct), SegmentReader(storage, sch, merged)
    try:
        assert b.doc_count_all() == len(live)
        assert _postings(b) == _postings(a)
        for field in ("content", "ext"):
            for doc in range(len(live)):
                assert b.doc_field_length(doc, field) == a.doc_field_length(doc, field)
        for col in ("rowid", "sort"):
            assert list(b.column_reader(col)) == list(a.column_reader(col))
    finally:
        a.close()
        b.close()


def test_many_commits_are_merged_into_few_segments(tmp_path: Path):
    from imstore.index import SearchIndex

    ix = SearchIndex(str(tmp_path / "ix"), workers=1)
    docs = _corpus_docs(1200, 12)
    for i in range(0, 1200, 40):
        ix.apply([], [d.rowid for d in docs[max(0, i - 40):i:7]], new=docs[i:i + 40])
    assert ix.segment_count() < 16  # fewer than 8 per tier
    deleted = {d.rowid for i in range(40, 1200, 40) for d in docs[i - 40:i:7]}
    truth = sorted((d.sort_time, d.rowid) for d in docs
                   if "meeting" in d.content.lower().split() and d.rowid not in deleted)
    assert ix.hits(["meeting"], ["content"], conv_id=None, start_time=None,
                   end_time=None) == truth
    assert ix.doc_count() == 1200 - len(deleted)
    ix.close()


def _memory_store_work(seed: int) -> None:  # in a child process
    rnd = random.Random(seed)
    with imstore.open(":memory:", user_id="me") as st:
        for round_ in range(3):
            msgs = [Message.text("me", f"w{seed}x{round_}x{i}z common 共同 🎂", sender=f"p{i % 3}")
                    for i in range(400)]
            st.import_messages(msgs)
            for _ in range(5):
                i = rnd.randrange(400)
                assert len(st.search_messages(f"w{seed}x{round_}x{i}z")) == 1
        assert len(st.search_messages("共同 🎂", limit=400)) == 400
        st.rebuild_search_index()
        assert len(st.search_messages("common", limit=400)) == 400


def test_four_processes_with_memory_stores_at_once():
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_memory_store_work, args=(seed,)) for seed in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]


def test_a_search_that_meets_a_damaged_index_answers_exactly_and_rebuilds(tmp_path: Path,
                                                                          caplog):
    texts = [f"needle{i % 7} shared 共同文本 Birthday 🎂" if i % 3 else f"other{i} Café"
             for i in range(600)]
    with imstore.open(tmp_path / "s", user_id="alice") as st:
        st.import_messages([Message.text("alice", t, sender="bob", timestamp=1000 + i)
                            for i, t in enumerate(texts)])
        st.flush_index()
        truth = sorted(i for i, t in enumerate(texts) if "needle3" in t)
        for f in (tmp_path / "s" / "search").iterdir():
            if f.suffix == ".pst":
                f.write_bytes(b"\0" * f.stat().st_size)
        hits = st.search_messages("needle3 birthday", limit=400)
        assert sorted(m.timestamp - 1000 for m in hits) == truth
        assert "damaged; rebuilding" in caplog.text
        assert len(st.search_messages("cafe", limit=400)) == 200  # the rebuilt index
        assert st.verify().ok


# -- several processes on one store directory: one indexer, exact searches everywhere ---------

_ROOT = str(Path(__file__).resolve().parent.parent)

_IMPORTER = """
import os, sys
import imstore
from imstore import Message
path, n, mark, mark_at = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def progress(seen):
    if seen >= mark_at and not os.path.exists(mark):
        with open(mark, "w") as f:
            f.write("started")

st = imstore.open(path, user_id="alice")
st.import_messages((Message.text("alice", f"imp{k}x shared words", sender=f"p{k % 7}",
                                 msg_id=f"imp{k}", timestamp=10_000 + 2 * k)
                    for k in range(n)), batch_size=1000, progress=progress)
st.close()
"""

_INSERTER = """
import os, sys
import imstore
from imstore import Message
path, mark = sys.argv[1], sys.argv[2]
st = imstore.open(path, user_id="alice")
for k in range(25):
    st.insert_message(Message.text("bob", f"ins{k}y shared words", msg_id=f"ins{k}",
                                   timestamp=10_001 + 2 * k))
    found = [m.msg_id for m in st.search_messages(f"ins{k}y")]
    assert found == [f"ins{k}"], (k, found)
    assert len(st.search_messages("shared", limit=5)) == 5
st.close()
"""


def _spawn(script: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own copy of the file
        return subprocess.Popen([sys.executable, "-c", script, *args],
                                env={**os.environ, "PYTHONPATH": _ROOT},
                                stdout=out, stderr=subprocess.STDOUT)


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Path,
                   bound: float = 300) -> None:
    """Poll (bounded) until ``path`` exists; fail at once if ``proc`` ended first."""
    deadline = time.monotonic() + bound
    while not path.exists():
        assert proc.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, "the child never got going"
        time.sleep(0.02)


def _stop(procs: list) -> None:
    """Stop exactly these processes (by their Popen objects) and reap them."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_two_processes_import_and_insert_on_one_store(tmp_path: Path):
    path = tmp_path / "s"
    imstore.open(path, user_id="alice").close()
    mark = tmp_path / "importing"
    procs = []
    try:
        logs = [tmp_path / "importer.log", tmp_path / "inserter.log"]
        importer = _spawn(_IMPORTER, str(path), "40000", str(mark), "1000", log=logs[0])
        procs.append(importer)
        _wait_for_file(mark, importer, logs[0])
        inserter = _spawn(_INSERTER, str(path), str(mark), log=logs[1])
        procs.append(inserter)
        codes = [p.wait(timeout=600) for p in procs]
        assert codes == [0, 0], [log.read_text(errors="replace") for log in logs]
    finally:
        _stop(procs)
    with imstore.open(path, user_id="alice") as st:
        assert st.stats()["messages"] == 40_025
        expected = {f"imp{k}" for k in range(40_000)} | {f"ins{k}" for k in range(25)}
        assert all_hits(st, "shared") == expected
        for k in range(25):
            assert [m.msg_id for m in st.search_messages(f"ins{k}y")] == [f"ins{k}"]
        for k in [*random.Random(3).sample(range(40_000), 200), 0, 39_999]:
            assert [m.msg_id for m in st.search_messages(f"imp{k}x")] == [f"imp{k}"]
        assert st.verify().ok


@pytest.mark.parametrize("kill_at", [3000, 19000])
def test_sigkill_during_a_large_import_leaves_nothing_locked(tmp_path: Path, kill_at: int):
    path = tmp_path / "s"
    mark = tmp_path / "importing"
    log = tmp_path / "importer.log"
    proc = _spawn(_IMPORTER, str(path), "60000", str(mark), str(kill_at), log=log)
    try:
        _wait_for_file(mark, proc, log)
        proc.kill()
        proc.wait()
    finally:
        _stop([proc])
    # The kernel dropped the indexer lock with the process: it can be taken at once.
    from imstore.index import LOCK_FILE, try_lock
    fd = try_lock(str(path / LOCK_FILE))
    assert fd is not None
    os.close(fd)
    with imstore.open(path, user_id="alice") as st:
        total = st.stats()["messages"]
        assert total >= kill_at and total % 1000 == 0
        assert all_hits(st, "shared") == {f"imp{k}" for k in range(total)}
        assert st.verify().ok
        st.insert_message(Message.text("bob", "afterwards zebra", msg_id="after",
                                       timestamp=1))
        assert [m.msg_id for m in st.search_messages("zebra")] == ["after"]
        assert st.verify().ok


def test_a_search_right_after_an_import_sees_the_pending_rows(tmp_path: Path):
    path = tmp_path / "s"
    owner = imstore.open(path, user_id="alice")  # holds the indexer lock
    other = imstore.open(path, user_id="alice")  # so this one only reads the index
    try:
        words = ["apple", "pear", "plum", "fig"]
        texts = {f"m{k}": f"w{k}q {words[k % 4]} {words[(k * 7) % 4]}" for k in range(30_000)}
        expected = {mid for mid, t in texts.items() if "plum" in t}
        with owner.pause_indexing():  # the indexer's thread is held back: everything stays pending
            other.import_messages(Message.text("bob", t, msg_id=mid, timestamp=1000 + k)
                                  for k, (mid, t) in enumerate(texts.items()))
            assert other.stats()["search_pending"] >= 30_000
            status = other.index_status()
            assert status.pending >= 30_000 and not status.indexer and status.seconds_left is None
            assert [m.msg_id for m in other.search_messages("w29999q")] == ["m29999"]
            assert all_hits(other, "plum") == expected
            assert all_hits(other, "plum", conv_id="bob") == expected
            newest = other.search_messages("pear", limit=7, direction=Direction.UP)
            assert [m.msg_id for m in newest] == [
                mid for mid, t in texts.items() if "pear" in t][-7:]
            # the indexer's own searches do not wait for it either
            assert owner.search_messages("w29999q")[0].msg_id == "m29999"
        # the indexer drains it in the background; the other process's searches stay the same
        assert owner.flush_index() >= 30_000
        assert other.stats()["search_pending"] == 0
        status = owner.index_status()
        assert status.indexer and status.pending == 0 and status.seconds_left == 0.0
        assert status.docs_per_second > 0
        assert isinstance(status, imstore.IndexStatus)
        assert all_hits(other, "plum") == expected
        # when the indexer closes, the next search elsewhere takes over and drains
        other.import_messages([Message.text("bob", "late kiwi", msg_id="late", timestamp=99_999)])
        owner.close()
        assert [m.msg_id for m in other.search_messages("kiwi")] == ["late"]
        other.flush_index()
        assert other.index_status().indexer and other.index_status().pending == 0
        assert all_hits(other, "plum") == expected
    finally:
        other.close()
        owner.close()
    with imstore.open(path, user_id="alice") as st:
        assert st.verify().ok


# -- indexing in the background ------------------------------------------------------------

_MIXED = ["Meeting at the CAFÉ", "meeting at the cafe", "Café society", "ПРИВЕТ мир", "привет",
          "naïve plan", "NAIVE PLAN", "北京 cafe", "ﬁne print", "fine PRINT", "x", "ǅemal",
          "Ｃａｆｅ fullwidth", "CAFEteria", "the cafe's menu", "🎂 cake", "cake!"]


def _pending_truth(texts: dict[str, str], keyword: str) -> set[str]:
    from imstore.text import keyword_words, matches

    words = keyword_words(keyword)
    return {mid for mid, t in texts.items() if matches(words, t)}


def test_searches_over_pending_rows_equal_python_matching(tmp_path: Path):
    # rows still waiting for the index are found by a scan; all-ASCII rows are pre-filtered in
    # SQL: neither may lose a match, in either scope, with any mix of scripts
    rnd = random.Random(7)
    texts = {f"m{i}": f"{rnd.choice(_MIXED)} {rnd.choice(_MIXED)} n{i}" for i in range(3000)}
    files = {f"f{i}": f"{rnd.choice(_MIXED)}.pdf" for i in range(40)}
    with imstore.open(tmp_path / "s", user_id="me") as st:
        with st.pause_indexing():  # the indexer thread is held back: every row stays pending
            st.import_messages([Message.text("p", t, sender="p", msg_id=mid, timestamp=i)
                                for i, (mid, t) in enumerate(texts.items())])
            st.import_messages([Message.of(MessageType.FILE, "p",
                                           FileBody(display_name=name, remote_url="u", size=1),
                                           sender="p", msg_id=mid, timestamp=5000 + i)
                                for i, (mid, name) in enumerate(files.items())])
            assert st.index_status().pending == 3040
            for kw in ["cafe", "CAFÉ", "café society", "привет", "naive", "naïve plan", "fine",
                       "print", "北京", "x", "dzemal", "cafeteria", "cafe's", "🎂", "cake",
                       "meeting cafe", "n2999"]:
                truth = _pending_truth({**texts, **files}, kw)
                assert all_hits(st, kw) == truth, kw
                assert all_hits(st, kw, scope=SearchScope.ALL) == truth, kw
        st.flush_index()
        assert all_hits(st, "cafe") == _pending_truth({**texts, **files}, "cafe")


def test_close_does_not_wait_for_the_index_and_the_next_open_goes_on(tmp_path: Path,
                                                                    monkeypatch):
    from imstore.index import SearchIndex

    slow_apply = SearchIndex.apply

    def slow(self, *a, **kw):  # an indexer far slower than the import
        time.sleep(0.3)
        return slow_apply(self, *a, **kw)

    monkeypatch.setattr(SearchIndex, "apply", slow)
    path = tmp_path / "s"
    # small batches, a backlog's as well: one batch is far less than the whole outbox
    st = imstore.open(path, user_id="me", index_policy=IndexPolicy(batch=500, live_batch=500))
    st.import_messages(Message.text("p", f"w{i}q common", sender="p", msg_id=f"m{i}")
                       for i in range(20_000))
    assert st.index_status().pending > 0  # import_messages returned before the index
    assert [m.msg_id for m in st.search_messages("w19999q")] == ["m19999"]
    started = time.monotonic()
    st.close()
    assert time.monotonic() - started < 5  # one batch at most, not the whole outbox
    monkeypatch.setattr(SearchIndex, "apply", slow_apply)
    with imstore.open(path, user_id="me") as st:
        assert st.index_status().pending > 0  # left for this process's indexer
        assert [m.msg_id for m in st.search_messages("w7q")] == ["m7"]
        seen: list[IndexStatus] = []
        st.flush_index(progress=seen.append)
        assert st.index_status().pending == 0
        assert seen and seen[-1].pending == 0 and seen[-1].indexer
        assert st.verify().ok


def test_flush_index_checks_its_arguments_and_bounds_the_wait(tmp_path: Path):
    with imstore.open(tmp_path / "s", user_id="me") as st:
        for bad in ({"progress": 3}, {"timeout": -1}, {"timeout": "soon"}):
            with pytest.raises(IMError) as err:
                st.flush_index(**bad)  # type: ignore[arg-type]
            assert err.value.code == ErrorCode.INVALID_PARAM
        with st.pause_indexing():  # an indexer that cannot make progress
            st.insert_message(Message.text("p", "hello", sender="p"))
            with pytest.raises(IMError) as err:
                st.flush_index(timeout=0.3)
            assert err.value.code == ErrorCode.DATABASE_ERROR and "behind" in str(err.value)
        assert st.flush_index() == 1
        assert [m.body.text for m in st.search_messages("hello")] == ["hello"]


def test_a_reset_index_never_reuses_a_generation(tmp_path: Path):
    # a reader in another process compares generations to notice a new index: after a rebuild
    # the index must not come back at a generation the reader already has
    from imstore.index import SearchIndex

    ix, docs = _index_with(tmp_path)
    reader = SearchIndex(str(tmp_path / "ix"), readonly=True)
    gen = ix._ix.latest_generation()
    assert reader.doc_count() == len(docs)
    ix.reset()
    for d in _corpus_docs(gen, 1):  # as many commits as the old index had
        ix.apply([], [], new=[d])
    assert ix._ix.latest_generation() > gen
    assert reader.doc_count() == gen  # the reader sees the new index, not the old one
    reader.close()
    ix.close()


def test_reindex_from_a_process_that_is_not_the_indexer(tmp_path: Path):
    # `imstore reindex` while an app has the store open: the app's indexer rebuilds, both keep
    # searching exactly meanwhile, and nobody raises
    path = tmp_path / "s"
    app = imstore.open(path, user_id="me")
    texts = {f"m{i}": f"w{i}q common" for i in range(3000)}
    app.import_messages(Message.text("p", t, sender="p", msg_id=mid, timestamp=1000 + i)
                        for i, (mid, t) in enumerate(texts.items()))
    app.flush_index()
    with app.pause_indexing():  # an index that lost documents, as a reason to rebuild
        assert _lose_documents(app, range(1, 101)) == 2900
    cli = subprocess.run(
        [sys.executable, "-m", "imstore.cli", "reindex", "--store", str(path), "--json"],
        env={**os.environ, "PYTHONPATH": _ROOT}, capture_output=True, text=True, timeout=300)
    try:
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == {"indexed": 3000}
        assert app.index_status().pending == 0 and app.index_status().indexer
        assert app.verify().repaired["search_index"] == 0  # 3,000 documents again
        assert all_hits(app, "common") == set(texts)
        assert [m.msg_id for m in app.search_messages("w42q")] == ["m42"]
    finally:
        app.close()


# -- traditional and simplified Chinese -----------------------------------------------------

@pytest.mark.parametrize("stored, keyword", [("我住在臺灣", "台湾"), ("我住在台湾", "臺灣"),
                                             ("他發了消息", "发"), ("他发了消息", "發"),
                                             ("頭髮很長", "头发"), ("臺灣的發展", "台湾的发展")])
@pytest.mark.parametrize("pending", [False, True])
def test_traditional_and_simplified_find_each_other(tmp_path: Path, stored: str, keyword: str,
                                                    pending: bool):
    with imstore.open(tmp_path / "s", user_id="me") as st:
        st.insert_message(Message.text("p", "无关的消息 unrelated", sender="p", msg_id="other"))
        if pending:  # found by the scan of rows not indexed yet
            with st.pause_indexing():
                st.insert_message(Message.text("p", stored, sender="p", msg_id="m"))
                assert [m.msg_id for m in st.search_messages(keyword)] == ["m"]
        else:
            st.insert_message(Message.text("p", stored, sender="p", msg_id="m"))
            st.flush_index()
            assert [m.msg_id for m in st.search_messages(keyword)] == ["m"]


def test_fold_is_idempotent_for_every_character():
    bad = [hex(i) for i in range(0x110000)
           if not 0xD800 <= i < 0xE000 and fold(fold(chr(i))) != fold(chr(i))]
    assert bad == []


def test_the_fold_table_is_opencc_s_and_idempotent():
    from imstore._hanzi import SIMPLIFIED, TRADITIONAL

    assert len(TRADITIONAL) == len(SIMPLIFIED) > 3000
    assert not set(SIMPLIFIED) & set(TRADITIONAL)  # folding twice changes nothing
    assert fold("臺灣發髮") == "台湾发发" and fold("台湾") == "台湾"
    sample = TRADITIONAL[::7] + SIMPLIFIED[::7]
    assert fold(fold(sample)) == fold(sample)
