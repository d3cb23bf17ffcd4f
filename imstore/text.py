"""Pure text rules of search: folding, tokens, literal keyword matching, and what search sees
of a message. No whoosh here (that is `search`), no storage.

Rules kept here:
- one fold for every script: case, accents and full-width forms are folded; CJK is left as is;
- one tokenization: alphabetic words; for a CJK run, the bigram at each position plus the run's
  last character alone (so a one-character query is a prefix, two characters a term, three or more
  a phrase of bigrams);
- a keyword is literal text: it is split on white space into words, and `matches` decides, on the
  folded stored text, whether every word stands there (at the start of a word, or anywhere when
  it starts with a CJK character). The index only proposes candidates; this is the judge;
- `content_text` and `ext_text` are what scopes CONTENT and EXT see of a message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

from .kinds import searchable_text
from .message import MessageType

__all__ = ["TOKEN_RE", "content_text", "ext_text", "fold", "indexable", "keyword_words", "matches",
           "tokens"]

_CJK = (
    "\u1100-\u11ff\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0003134f"
)
_CJK_CHAR = re.compile(f"[{_CJK}]")
TOKEN_RE = re.compile(f"([{_CJK}]+)|((?:(?![{_CJK}])\\w)+)")


def _fold_char(ch: str) -> str:
    if _CJK_CHAR.match(ch):
        return ch
    decomposed = unicodedata.normalize("NFKD", ch)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


class _FoldTable(dict[int, "str | int"]):
    """str.translate table that folds each character once, on first sight."""

    def __missing__(self, code: int) -> str | int:
        ch = chr(code)
        out = _fold_char(ch)
        value: str | int = code if out == ch else out
        self[code] = value
        return value


_FOLD = _FoldTable()


def fold(text: str) -> str:
    """Lower-case, strip accents and width; CJK characters are kept as they are."""
    if text.isascii():
        return text.lower()
    return text.translate(_FOLD)


def tokens(folded: str) -> Iterator[tuple[int, str, bool]]:
    """(position, term, is_cjk) for folded text: one term per word; for a CJK run, the bigram
    starting at each character and, for its last character, the character alone. A one-character
    query is then a prefix query (the bigrams it starts, or itself), a two-character one a term,
    a longer one a phrase of bigrams at consecutive positions: each character costs one posting,
    not two."""
    pos = 0
    for m in TOKEN_RE.finditer(folded):
        run, word = m.group(1), m.group(2)
        if word:
            yield pos, word, False
            pos += 1
        else:
            last = len(run) - 1
            for i in range(last):
                yield pos + i, run[i:i + 2], True
            yield pos + last, run[last], True
            pos += len(run)



def keyword_words(keyword: str) -> list[str]:
    """The folded, white-space separated words of a keyword, each to be matched literally."""
    return [w for w in fold(keyword).split() if w]


def indexable(word: str) -> bool:
    """Whether the index holds anything of a folded word (letters, digits or CJK in it)."""
    return TOKEN_RE.search(word) is not None


def _word_at_boundary(text: str, word: str) -> bool:
    start = 0
    needs_boundary = not _CJK_CHAR.match(word[0]) and (word[0].isalnum() or word[0] == "_")
    while True:
        i = text.find(word, start)
        if i < 0:
            return False
        if not needs_boundary or i == 0:
            return True
        prev = text[i - 1]
        if _CJK_CHAR.match(prev) or not (prev.isalnum() or prev == "_"):
            return True
        start = i + 1


def matches(words: Sequence[str], text: str) -> bool:
    """True when every folded keyword word stands in ``text`` (see the module rules)."""
    folded = fold(text)
    return all(_word_at_boundary(folded, w) for w in words)



def content_text(mtype: MessageType, body: Any) -> str:
    """What keyword search (scope CONTENT) sees of a message: its type's searchable fields
    (the `kinds` table)."""
    return searchable_text(mtype, body)


def ext_text(ext: Any) -> str:
    """The values of ``ext`` (nested ones too), for scope EXT."""
    if isinstance(ext, dict):
        return "\n".join(ext_text(v) for v in ext.values())
    if isinstance(ext, list | tuple):
        return "\n".join(ext_text(v) for v in ext)
    if isinstance(ext, bytes) or ext is None:
        return ""
    return str(ext)
