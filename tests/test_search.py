"""Keyword search: real Chinese and English text, literal queries, scopes, consistency."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import shutil
import signal
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
    Message,
    MessageStore,
    MessageType,
    SearchScope,
)
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


def test_rebuild_and_verify_repair_a_stale_index(disk_store: MessageStore):
    disk_store.import_messages([Message.text("alice", f"apple {i}", sender="bob") for i in range(50)])
    disk_store._index.apply([], list(range(1, 11)))  # an index that lost documents
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
