"""Several keywords (all / any), counts per conversation exact against a full scan, common
words and lone CJK characters, and the arguments of both calls."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hs

import imstore
from imstore import (
    ConversationHits,
    ErrorCode,
    IMError,
    Message,
    MessageStore,
    MessageType,
    SearchScope,
)
from imstore.text import content_text, ext_text, keyword_words, matches

_WORDS = ["apple", "pear", "plum", "fig", "的", "是", "我", "北京", "臺灣", "台湾", "發", "发",
          "🎂", "time", "meeting", "cafe"]


def _corpus(seed: int, n: int) -> list[Message]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        text = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(1, 4)))
        out.append(Message.text("me", f"{text} n{i}", sender=f"c{rnd.randrange(7)}",
                                msg_id=f"m{i}", timestamp=1000 + rnd.randrange(5000)))
    return out


def _truth(msgs: list[Message], groups: list[str], *, any_: bool = False,
           sender: str | None = None) -> dict[str, Any]:
    """msg_id -> message, for every message matching (a full scan with `text.matches`)."""
    words = [keyword_words(g) for g in groups]
    if not any_:
        words = [[w for ws in words for w in ws]]
    return {m.msg_id: m for m in msgs
            if (sender is None or m.sender == sender)
            and any(matches(ws, m.body.text) for ws in words)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("q") / "s"
    msgs = _corpus(3, 1500)
    st = imstore.open(path, user_id="me")
    st.import_messages(msgs[:1200])
    st.flush_index()
    with st.pause_indexing():  # the last 300 stay pending: counted by the scan of the outbox
        st.import_messages(msgs[1200:])
        recalled = st.apply_recall(["m5", "m1300"], recalled_at=99_999)
        yield st, [m for m in msgs if m.msg_id not in {r.msg_id for r in recalled}]
    st.close()


@pytest.mark.parametrize("keyword", [["apple"], ["apple", "pear"], ["北京", "time"], ["的"],
                                     ["发"], ["台湾"], ["🎂", "fig"], ["cafe", "的", "是"]])
@pytest.mark.parametrize("match", ["all", "any"])
def test_counts_per_conversation_equal_a_full_scan(corpus, keyword: list[str], match: str):
    st, msgs = corpus
    truth = _truth(msgs, keyword, any_=match == "any")
    hits = st.search_counts(keyword, match=match)
    assert all(isinstance(h, ConversationHits) and not h.capped for h in hits)
    assert {h.conv_id: h.count for h in hits} == dict(Counter(m.conv_id for m in truth.values()))
    for h in hits:  # the newest match of each conversation
        mine = [m for m in truth.values() if m.conv_id == h.conv_id]
        assert h.newest.msg_id in {m.msg_id for m in mine}
        assert h.newest.server_time == max(m.server_time for m in mine)
    assert [h.newest.server_time for h in hits] == sorted(
        (h.newest.server_time for h in hits), reverse=True)


@pytest.fixture(scope="module")
def settled(tmp_path_factory: pytest.TempPathFactory):
    """The corpus with nothing waiting for the index: counts of one- and two-character CJK
    words come from the index's hits without reading the rows."""
    path = tmp_path_factory.mktemp("settled") / "s"
    msgs = _corpus(4, 1500)
    for i in range(0, 1500, 7):  # the scope ALL reads ext too
        msgs[i].ext = {"note": random.Random(i).choice(["北京", "是 time", "plain"])}
    st = imstore.open(path, user_id="me")
    st.import_messages(msgs)
    gone = {r.msg_id for r in st.apply_recall(["m5", "m1300"], recalled_at=99_999)}
    st.delete_message("m7")
    edited = st.get_message("m8")
    assert edited is not None
    edited.body.text = "nothing common here"
    st.update_message(edited)
    st.flush_index()
    assert st.index_status().pending == 0
    live = [st.get_message(m.msg_id) for m in msgs if m.msg_id not in gone | {"m7"}]
    yield st, [m for m in live if m is not None]
    st.close()


def _scope_truth(msgs: list[Message], groups: list[str], scope: SearchScope,
                 any_: bool, sender: str | None = None) -> Counter[str]:
    words = [keyword_words(g) for g in groups]
    if not any_:
        words = [[w for ws in words for w in ws]]

    def texts(m: Message) -> list[str]:
        return [t for s, t in ((SearchScope.CONTENT, content_text(m.type, m.body)),
                               (SearchScope.EXT, ext_text(m.ext)))
                if scope in (s, SearchScope.ALL)]
    return Counter(m.conv_id for m in msgs if (sender is None or m.sender == sender)
                   and any(matches(ws, t) for ws in words for t in texts(m)))


@pytest.mark.parametrize("keyword", [["的"], ["发"], ["台湾"], ["北京", "是"], ["的", "apple"],
                                     ["是", "time"]])
@pytest.mark.parametrize("match", ["all", "any"])
@pytest.mark.parametrize("scope", [SearchScope.CONTENT, SearchScope.ALL])
def test_counts_read_from_the_index_alone_equal_a_full_scan(settled, keyword: list[str],
                                                            match: str, scope: SearchScope):
    st, msgs = settled
    truth = _scope_truth(msgs, keyword, scope, match == "any")
    assert {h.conv_id: h.count for h in st.search_counts(keyword, match=match, scope=scope)} \
        == dict(truth)
    by_c1 = _scope_truth(msgs, keyword, scope, match == "any", sender="c1")
    assert {h.conv_id: h.count for h in st.search_counts(keyword, match=match, scope=scope,
                                                         sender="c1")} == dict(by_c1)


def test_counts_follow_the_sender_filter_and_stop_at_max_hits(corpus):
    st, msgs = corpus
    truth = _truth(msgs, ["apple"], sender="c1")
    hits = st.search_counts("apple", sender="c1")
    assert sum(h.count for h in hits) == len(truth) > 0
    capped = st.search_counts("apple", max_hits=10)
    assert sum(h.count for h in capped) == 10 and all(h.capped for h in capped)


@pytest.mark.parametrize("keyword", [["apple", "pear"], ["北京", "🎂"], ["的", "time", "fig"]])
@pytest.mark.parametrize("match", ["all", "any"])
def test_several_keywords_search_like_a_full_scan(corpus, keyword: list[str], match: str):
    st, msgs = corpus
    truth = _truth(msgs, keyword, any_=match == "any")
    found = st.search_messages(keyword, match=match, limit=400)
    newest = sorted(truth.values(), key=lambda m: (m.server_time, int(m.msg_id[1:])))[-400:]
    assert {m.msg_id for m in found} == {m.msg_id for m in newest}
    if match == "all":  # a list of keywords, all wanted, is their words in one string
        assert [m.msg_id for m in found] == [
            m.msg_id for m in st.search_messages(" ".join(keyword), limit=400)]


@pytest.mark.parametrize("bad", [[], ["a"] * 6, [""], ["ok", " "], ["ok", 3], b"apple", 7,
                                 {"apple": 1}])
def test_bad_keywords_are_refused(corpus, bad: Any):
    st, _ = corpus
    for call in (st.search_messages, st.search_counts):
        with pytest.raises(IMError) as err:
            call(bad)
        assert err.value.code == ErrorCode.INVALID_PARAM


@pytest.mark.parametrize("kw", [{"match": "some"}, {"match": None}, {"max_hits": 0},
                                {"max_hits": True}, {"max_hits": "10"}])
def test_bad_match_and_max_hits_are_refused(corpus, kw: dict[str, Any]):
    st, _ = corpus
    with pytest.raises(IMError) as err:
        st.search_counts("apple", **kw)
    assert err.value.code == ErrorCode.INVALID_PARAM


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(keyword=hs.one_of(hs.text(max_size=8), hs.lists(hs.text(max_size=6), max_size=7),
                         hs.integers(), hs.none(), hs.binary(max_size=4)),
       match=hs.sampled_from(["all", "any", "x", None, 1]))
def test_hostile_keywords_raise_only_imerror(corpus, keyword: Any, match: Any):
    st, _ = corpus
    for call in (st.search_messages, st.search_counts):
        try:
            out = call(keyword, match=match)
        except IMError:
            continue
        assert isinstance(out, list)


def test_valid_keyword_lists_are_accepted(corpus):
    st, _ = corpus
    assert st.search_messages(["apple"], match="any")
    assert st.search_counts(("apple", "pear", "plum", "fig", "cafe"), match="any")


def test_counts_in_a_store_in_memory_and_with_types(tmp_path: Path):
    st: MessageStore
    with imstore.open(":memory:", user_id="me") as st:
        st.import_messages(_corpus(5, 300))
        msgs = [st.get_message(f"m{i}") for i in range(300)]
        truth = _truth([m for m in msgs if m is not None], ["plum"])
        hits = st.search_counts("plum", types=[MessageType.TEXT])
        assert sum(h.count for h in hits) == len(truth)
        assert st.search_counts("plum", types=[MessageType.IMAGE]) == []


def test_pending_rows_are_found_through_their_kept_text_and_it_leaves_with_them(tmp_path: Path):
    with imstore.open(tmp_path / "s", user_id="me") as st:
        with st.pause_indexing():
            st.import_messages([Message.text("p", f"Café {w} n{i}", sender="p", msg_id=f"m{i}",
                                             timestamp=1000 + i)
                                for i, w in enumerate(["臺灣", "apple", "pear", "apple"])])
            edited = st.get_message("m1")
            assert edited is not None
            edited.body.text = "banana now"
            st.update_message(edited)  # its kept text is replaced
            st.apply_recall(["m3"], recalled_at=5000)  # no longer searchable
            st.delete_message("m2")
            kept = st.connection.query("SELECT count(*) FROM search_text")[0][0]
            assert kept >= 2  # the rows' folded texts, beside their outbox entries
            assert [m.msg_id for m in st.search_messages("cafe")] == ["m0"]  # m1 was edited
            assert [m.msg_id for m in st.search_messages("台湾")] == ["m0"]
            assert [m.msg_id for m in st.search_messages("banana")] == ["m1"]
            assert st.search_messages("apple") == [] and st.search_messages("pear") == []
            assert st.search_counts("n1") == []  # edited away
            assert {h.conv_id: h.count for h in st.search_counts("cafe")} == {"p": 1}
        st.flush_index()
        assert st.connection.query("SELECT count(*) FROM search_text")[0][0] == 0
        assert [m.msg_id for m in st.search_messages("cafe")] == ["m0"]
        assert st.verify().ok


def test_rows_queued_without_a_kept_text_get_one_at_open(tmp_path: Path):
    path = tmp_path / "s"
    app = imstore.open(path, user_id="me")  # the indexer, held back
    try:
        with app.pause_indexing():
            app.insert_message(Message.text("p", "Gruß aus 臺灣", sender="p", msg_id="old"))
            app.connection.execute("DELETE FROM search_text")  # as an older imstore queued it
            with imstore.open(path, user_id="me") as other:  # its open keeps the text
                assert other.connection.query("SELECT count(*) FROM search_text")[0][0] == 1
                assert [m.msg_id for m in other.search_messages("gruss 台湾")] == ["old"]
        app.flush_index()
        assert [m.msg_id for m in app.search_messages("gruss")] == ["old"]
    finally:
        app.close()


def test_a_search_of_an_empty_index_finds_nothing_and_reports_no_damage(caplog):
    with imstore.open(":memory:", user_id="me") as st:
        for kw in ("的", "apple", "apple 的", "🎂"):
            assert st.search_messages(kw) == [] and st.search_counts(kw) == []
    assert "damaged" not in caplog.text


@pytest.mark.parametrize("bad", [{"batch": 0}, {"live_batch": -1}, {"bulk_apply": 1.5},
                                 {"yield_until": True}, {"poll": 0}, {"coalesce": "0"},
                                 {"poll": 3600}, {"coalesce": -1}])
def test_a_bad_index_policy_is_refused(bad: dict[str, Any]):
    with pytest.raises(IMError) as err:
        imstore.IndexPolicy(**bad)
    assert err.value.code == ErrorCode.INVALID_PARAM


def test_a_valid_index_policy_is_accepted(tmp_path: Path):
    policy = imstore.IndexPolicy(batch=10, live_batch=5, poll=0.05, coalesce=0)
    with imstore.open(tmp_path / "s", user_id="me", index_policy=policy) as st:
        st.import_messages(_corpus(9, 40))
        st.flush_index(timeout=60)
        assert st.index_status().pending == 0 and st.verify().ok


def test_a_batch_leaving_the_outbox_keeps_the_texts_of_rows_queued_again_after_it(
        tmp_path: Path):
    with imstore.open(tmp_path / "s", user_id="me") as st:
        outbox = st._indexer.outbox
        with st.pause_indexing():
            st.import_messages([Message.text("p", f"plum {i}", sender="p", msg_id=f"m{i}",
                                             timestamp=1000 + i) for i in range(6)])
            last, count, ops = outbox.next_batch(6)  # the import's six entries
            edited = st.get_message("m2")
            assert edited is not None and count == 6
            edited.body.text = "quince now"
            st.update_message(edited)  # m2 queued again, after the batch
            outbox.remove_through(last, list(ops))
            texts = st.connection.query("SELECT id, content FROM search_text")
            assert [c for _, c in texts] == ["quince now"]  # only m2's, the new one
            assert [m.msg_id for m in st.search_messages("quince")] == ["m2"]
        st.flush_index()
        assert st.connection.query("SELECT count(*) FROM search_text")[0][0] == 0
        assert [m.msg_id for m in st.search_messages("quince")] == ["m2"]


def test_a_rebuild_folds_texts_in_two_processes_as_one_would(tmp_path: Path):
    from imstore.index._outbox import fold_rows

    with imstore.open(tmp_path / "s", user_id="me") as st:
        st.import_messages([Message.text("p", f"Café 臺灣 {i}", sender="p", msg_id=f"m{i}",
                                         timestamp=1000 + i, ext={"tag": f"t{i}"})
                            for i in range(5000)])
        rows = st.connection.query("SELECT type, CAST(body AS BLOB), CAST(ext AS BLOB) FROM "
                                   "message ORDER BY id")
        rows[7] = (rows[7][0], b"\x01\xc1", None)  # a corrupt payload folds to None
        st.flush_index()
        with st.pause_indexing():  # the indexer's thread leaves its index (and helper) alone
            index = st._indexer._worker.writer
            assert index.fold_rows(rows) == fold_rows(rows)
            assert fold_rows(rows)[7] is None and fold_rows(rows)[4999] is not None
            assert index._split.helper is not None  # the helper folded half of them
            index._split.helper.proc.kill()
            index._split.helper.proc.wait()
            assert index.fold_rows(rows) == fold_rows(rows)  # a dead helper: folded here
        assert st.rebuild_search_index() == 5000
        st.flush_index()
        assert [m.msg_id for m in st.search_messages("台湾 4999")] == ["m4999"]


def test_texts_kept_for_new_rows_are_those_their_stored_payloads_fold_to(tmp_path: Path):
    from imstore.index._outbox import folded_texts

    pic = tmp_path / "p.png"
    pic.write_bytes(b"\x89PNG" + bytes(40))
    msgs = [Message.text("p", "Café 臺灣 <b>", sender="p", ext={"k": ["Ünï", 3, {"n": "發"}]},
                         formatted="<i>Café</i>"),
            Message.image("p", pic, caption="Menü 發票", sender="p"),
            Message.file("p", pic, sender="p"),
            Message.location("p", 1.5, 2.5, address="北京 Straße", sender="p"),
            Message.custom("p", "order", {"id": "九"}, sender="p"),
            Message.text("p", "gone", sender="p", recalled_at=5)]
    with imstore.open(tmp_path / "s", user_id="me") as st, st.pause_indexing():
        st.import_messages(msgs[:3])
        for m in msgs[3:]:
            st.insert_message(m)
        kept = {r[0]: (r[1], r[2]) for r in st.connection.query(
            "SELECT id, content, ext FROM search_text")}
        stored = {r[0]: folded_texts(r[1], r[2], r[3]) for r in st.connection.query(
            "SELECT id, type, CAST(body AS BLOB), CAST(ext AS BLOB) FROM message WHERE "
            "recalled_at IS NULL")}
        assert kept == stored and len(kept) == 5  # the recalled one has none
        assert kept[1] == ("cafe 台湾 <b>", "uni\n3\n发")


def test_a_row_id_used_again_while_its_deleted_rows_entry_waits_gets_its_own_text(
        tmp_path: Path):
    with imstore.open(tmp_path / "s", user_id="me") as st:
        with st.pause_indexing():
            st.insert_message(Message.text("p", "apple", sender="p", msg_id="a", timestamp=1))
            st.insert_message(Message.text("p", "banana", sender="p", msg_id="b", timestamp=2))
            st.delete_message("b")  # the newest row: SQLite gives its id to the next one
            st.insert_message(Message.text("p", "cherry", sender="p", msg_id="c", timestamp=3))
            st.import_messages([Message.text("p", "date", sender="p", msg_id="d", timestamp=4)])
            st.delete_message("d")
            st.import_messages([Message.text("p", "gone", sender="p", msg_id="e", timestamp=5,
                                             recalled_at=6)])
            assert [m.msg_id for m in st.search_messages("cherry")] == ["c"]
            assert st.search_messages("banana") == [] and st.search_messages("date") == []
            assert st.connection.query("SELECT content FROM search_text ORDER BY id") == [
                ("apple",), ("cherry",)]
        st.flush_index()
        assert [m.msg_id for m in st.search_messages("cherry")] == ["c"]
        assert st.search_messages("banana") == [] and st.search_messages("date") == []
        assert st.verify().ok


_PIECES = ["meet", "meeting", "Café", "cafe", "a_b", "42", "420", "的", "是", "的是", "臺灣", "台湾",
           "🎂", "e-mail", "x", "é", "_", "-", " ", "\n", "。", "ø", "İ"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=hs.lists(hs.lists(hs.sampled_from(_PIECES), max_size=6).map("".join),
                      min_size=1, max_size=8),
       word=hs.lists(hs.sampled_from(_PIECES), min_size=1, max_size=2).map("".join))
def test_the_index_finds_a_word_it_finds_exactly_where_matches_does(texts: list[str], word: str):
    from imstore.index import Doc, SearchIndex
    from imstore.text import fold, found_exactly

    words = keyword_words(word)
    assume(len(words) == 1 and found_exactly(words[0]))
    index = SearchIndex(None)
    index.apply([], [], new=[Doc(i + 1, i, "c", "s", 1, fold(t), "") for i, t in enumerate(texts)])
    found = {rid for _, rid in index.hits(words, ("content",), conv_id=None, start_time=None,
                                           end_time=None)}
    assert found == {i + 1 for i, t in enumerate(texts) if matches(words, t)}
    index.close()


@pytest.mark.parametrize(("word", "exact"), [
    ("的", True), ("的是", True), ("台湾大学", False), ("meet", True), ("a_b", True),
    ("42", True), ("🎂", True), ("🎂🎂", False), ("e-mail", False), ("cafe的", False)])
def test_which_words_the_index_finds_exactly(word: str, exact: bool):
    from imstore.text import found_exactly

    assert found_exactly(word) is exact
