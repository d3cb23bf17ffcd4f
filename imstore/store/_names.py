"""Finding conversations by name (`MessageStore.search_conversations`), pinyin too.

Rules kept here:
- a conversation's names are its ``title`` and its id (the peer's or the group's);
- a name matches when every word of the text stands in it as `text.matches` decides (folded:
  case, accents, traditional/simplified), or, for a text of plain ASCII letters, when the text
  (spaces removed) starts the name's full pinyin or its initials at one of its characters:
  北京 is found by "beijing", "bj" and "jing", 北京大学 by "bjdx" (the way WeChat finds names);
- pinyin comes from `_pinyin`, a table generated from pypinyin's data (each character's most
  common reading, no tones, ü as v), loaded on the first search by pinyin;
- the newest conversations (by last activity) come first.
"""

from __future__ import annotations

import re
from functools import cache

from ..text import fold, keyword_words, matches
from ._connection import Connection

__all__ = ["Names"]

_LETTERS = re.compile("[a-z]+")


@cache
def _readings() -> dict[str, str]:
    from .._pinyin import READINGS

    return {m.group(1): m.group(2) for m in re.finditer("([^a-z])([a-z]+)", READINGS)}


def _pinyin_starts(name: str) -> list[str]:
    """The full pinyin and the initials of ``name`` from each of its characters on (characters
    without a reading keep their folded selves)."""
    readings = _readings()
    parts = [readings.get(c, c) for c in fold(name) if not c.isspace()]
    out = []
    for i in range(len(parts)):
        out.append("".join(parts[i:]))
        out.append("".join(p[0] for p in parts[i:]))
    return out


class Names:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def search(self, text: str, limit: int) -> list[str]:
        """Ids of the conversations named by ``text``, newest first, at most ``limit``."""
        words = keyword_words(text)
        typed = "".join(words)
        by_pinyin = _LETTERS.fullmatch(typed) is not None
        found: list[str] = []
        for conv_id, title in self._conn.query(
                "SELECT conv_id, title FROM conversation ORDER BY last_activity DESC, conv_id"):
            names = [n for n in (title, conv_id) if n]
            if any(matches(words, n) for n in names) or (by_pinyin and any(
                    s.startswith(typed) for n in names for s in _pinyin_starts(n))):
                found.append(conv_id)
                if len(found) == limit:
                    break
        return found
