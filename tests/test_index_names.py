"""search_conversations: titles and ids, folded words, full pinyin and initials."""

from __future__ import annotations

from typing import Any

import pytest

import imstore
from imstore import ChatType, ErrorCode, IMError


@pytest.fixture()
def named() -> imstore.MessageStore:
    st = imstore.open(":memory:", user_id="me", search=False)  # no index needed
    for i, (conv, title) in enumerate([("g1", "北京大学同学"), ("g2", "臺灣旅遊"),
                                       ("bob", None), ("g3", "Café Crew"), ("g4", "上海")]):
        st.save_conversation(conv, ChatType.GROUP_CHAT if conv.startswith("g") else ChatType.CHAT,
                             last_activity=1000 + i)
        if title:
            st.set_conversation_title(conv, title)
    yield st
    st.close()


@pytest.mark.parametrize("text, found", [
    ("北京", ["g1"]), ("beijing", ["g1"]), ("bj", ["g1"]), ("bjdx", ["g1"]), ("jing", ["g1"]),
    ("daxue", ["g1"]), ("台湾", ["g2"]), ("taiwan", ["g2"]), ("tw", ["g2"]), ("cafe", ["g3"]),
    ("CREW", ["g3"]), ("bob", ["bob"]), ("sh", ["g4"]), ("shanghai", ["g4"]),
    ("tokyo", []), ("bjx", [])])
def test_names_are_found_by_words_and_pinyin(named, text: str, found: list[str]):
    assert [c.conv_id for c in named.search_conversations(text)] == found


def test_newest_first_and_limited(named):
    named.set_conversation_title("g4", "北京分部")
    assert [c.conv_id for c in named.search_conversations("bj")] == ["g4", "g1"]
    assert [c.conv_id for c in named.search_conversations("bj", limit=1)] == ["g4"]


@pytest.mark.parametrize("bad", [{"text": ""}, {"text": "  "}, {"text": 3}, {"text": None},
                                 {"text": "ok", "limit": 0}, {"text": "ok", "limit": "5"}])
def test_bad_arguments_are_refused(named, bad: dict[str, Any]):
    with pytest.raises(IMError) as err:
        named.search_conversations(**bad)
    assert err.value.code in (ErrorCode.INVALID_PARAM, ErrorCode.QUERY_PARAM_REACHES_LIMIT)
