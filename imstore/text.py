"""Pure text rules of search: folding, tokens, literal keyword matching, and what search sees
of a message. No whoosh here (that is `search`), no storage.

Rules kept here:
- one fold for every script: case, accents and full-width forms are folded; a traditional
  Chinese character becomes its simplified form (`_hanzi`, generated from OpenCC's table by
  scripts/opencc_table.py), so 臺灣 and 台湾, 發 and 发 find each other; other CJK is kept;
- one tokenization: alphabetic words; for a CJK run, the bigram at each position plus the run's
  last character alone (so a one-character query is a prefix, two characters a term, three or more
  a phrase of bigrams); each symbol or emoji character (`SYMBOLS`) is a term of its own, so
  "birthday 🎂" is asked of the index like any other words; ASCII punctuation is not indexed;
- a keyword is literal text: it is split on white space into words, and `matches` decides, on the
  folded stored text, whether every word stands there (at the start of a word, or anywhere when
  it starts with a CJK character or a symbol). The index only proposes candidates; this is the
  judge, for rows the index does not hold yet too: `needles` gives the characters a raw stored
  text must contain for `matches` to hold (a cheap SQL pre-filter, sound under folding), and
  `found_exactly` the words whose index hits need no judge (one token: a word, a symbol, one
  or two CJK characters);
- `content_text` and `ext_text` are what scopes CONTENT and EXT see of a message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from operator import add
from typing import Any

from ._hanzi import SIMPLIFIED, TRADITIONAL
from .kinds import searchable_text
from .message import MessageType

__all__ = ["SYMBOLS", "TOKEN_RE", "TRADITIONAL_CHARACTERS",
           "content_text", "ext_text", "fold", "found_exactly", "indexable", "keyword_words",
           "matches", "needles",
           "terms", "tokens"]

_CJK = (
    "\u1100-\u11ff\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0003134f"
)
# Symbols and emoji: currency, arrows, mathematical and technical symbols, dingbats, emoji.
SYMBOLS = "\u00a9\u00ae\u20a0-\u20cf\u2190-\u2bff\U0001f000-\U0001faff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
TOKEN_RE = re.compile(f"([{_CJK}]+)|((?:(?![{_CJK}])\\w)+)|([{SYMBOLS}])")
_TO_SIMPLIFIED = dict(zip(TRADITIONAL, SIMPLIFIED, strict=True))
TRADITIONAL_CHARACTERS = frozenset(TRADITIONAL)
# CJK and symbol characters that some other character folds into by NFKD ("⼀" -> "一", "㈠" ->
# "(一)"; a test recomputes these from unicodedata) or as its simplified form (_hanzi).
_NFKD_TARGETS = frozenset(
    "ᄀᄁᄂᄃᄄᄅᄆᄇᄈᄉᄊᄋᄌᄍᄎᄏᄐᄑᄒᄚᄡᅠᅡᅢᅣᅤᅥᅦᅧᅨᅩᅪᅫᅬᅭᅮᅯᅰᅱᅲ"
    "ᅳᅴᅵᆪᆫᆬᆭᆰᆱᆲᆳᆴᆵᆷ₩←↑→↓↔⇐⇒⇔∂∃∇∈∋∑−∕∣∥∫∮∼≃≅≈≍"
    "≡≤≥≲≳≶≷≺≻≼≽⊂⊃⊆⊇⊑⊒⊢⊨⊩⊫⊲⊳⊴⊵│■○⦅⦆⫝かほァアィイウェエ"
    "ォオカキクケコサシスセソタチッツテトナニヌネノハヒフヘホマミムメモヤュユョヨラリ"
    "ルレロワヰヱヲン・ー一丁七三上下丙丨中丶丿乙九亅二五亠交人代令企休会優儿入八六冂"
    "再冖写冫几凵刀初前割力労勝勹匕匚匸医十卄卅協卜卩印厂厶又双口可右合名吹呼和問営囗"
    "四土地士声夂夊夕多夜大天女子字学宀安宗寸小尢尸屮山巛工左己巾干平幺幼广廴廾弋式弓"
    "彐彡彳後得心戈成戶手打投指捕支攴敗文斗料斤新方无日明映昭曰月有木本株欠止正歹殳毋"
    "母比毛氏气水治注満演火点無爪父爻爿片牙牛特犬玄玉瓜瓦甘生用田甲申男疋疒癶白皮皿盗"
    "監目矛矢石示社祝祭禁禸禾秘穴空立竹箏米糸終缶网羊羽老而耒耳聿肉臣自至臼舌舛舟艮色"
    "艸虍虫血行衣襾見角解言谷豆豕豸貝財販資赤走足身車辛辰辵遊適邑酉配釆里金長門阜隶隹"
    "雨靑非面革韋韭音頁項風飛食首香馬骨高髟鬥鬯鬲鬼魚鳥鹵鹿麥麻黃黍黑黹黽鼎鼓鼠鼻齊齒"
    "龍龜龟龠"
)
_FOLD_TARGETS = frozenset(_TO_SIMPLIFIED.get(c, c) for c in _NFKD_TARGETS) | frozenset(SIMPLIFIED)
_NEEDLE = re.compile(f"[{_CJK}{SYMBOLS}]")


def _fold_once(ch: str) -> str:
    if _CJK_CHAR.match(ch):
        return _TO_SIMPLIFIED.get(ch, ch)
    decomposed = unicodedata.normalize("NFKD", ch)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _fold_char(ch: str) -> str:
    """One character folded until folding changes nothing more (a Kangxi radical becomes a
    traditional character, then a simplified one): `fold` is idempotent, so folded text can be
    kept and folded again (the index does) with the same result."""
    out = _fold_once(ch)
    while True:
        again = "".join(_fold_once(c) for c in out)
        if again == out:
            return out
        out = again


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
    """Lower-case, strip accents and width; traditional Chinese characters become simplified,
    other CJK characters are kept as they are."""
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
        run, word = m.group(1), m.group(2) or m.group(3)
        if word:
            yield pos, word, False
            pos += 1
        else:
            last = len(run) - 1
            for i in range(last):
                yield pos + i, run[i:i + 2], True
            yield pos + last, run[last], True
            pos += len(run)


def terms(folded: str) -> list[str]:
    """The terms of `tokens`, in order: a term's position is its index in the list. The same
    rules in one pass at C speed where possible, for bulk indexing."""
    out: list[str] = []
    for run, word, symbol in TOKEN_RE.findall(folded):
        if run:
            if len(run) > 1:
                out += map(add, run, run[1:])
            out.append(run[-1])
        else:
            out.append(word or symbol)
    return out


def keyword_words(keyword: str) -> list[str]:
    """The folded, white-space separated words of a keyword, each to be matched literally."""
    return [w for w in fold(keyword).split() if w]


def indexable(word: str) -> bool:
    """Whether the index holds anything of a folded word (letters, digits or CJK in it)."""
    return TOKEN_RE.search(word) is not None


def found_exactly(word: str) -> bool:
    """Whether every text the index finds a folded word in holds it as `matches` means, so its
    hits need no judge. True for a word that is one token of `TOKEN_RE`:
    - one or two CJK characters: the pair is a term, a lone character every pair or run end it
      starts (a CJK word matches anywhere); a longer run is a phrase of pairs, judged;
    - a run of word characters: the index finds the terms it starts, which begin where a word
      character follows a non-word one (or CJK, or the start), and `matches` wants exactly
      that (``\\w`` is `str.isalnum` or ``_``);
    - one symbol: a term of its own, matched anywhere.
    A word of several tokens ("e-mail", "🎂🎂") is an AND of them, judged."""
    m = TOKEN_RE.fullmatch(word)
    return m is not None and (m.group(1) is None or len(m.group(1)) <= 2)


def needles(word: str) -> list[str]:
    """Characters of a folded keyword word that a stored text must contain verbatim (before
    folding) for `matches` to find the word there: its CJK and symbol characters that no other
    character folds into (``_FOLD_TARGETS`` lists those that some do). Empty when the word has
    none (plain letters: "cafe" stands in "CAFÉ"); then only `matches` on the folded text can
    tell."""
    return [c for c in dict.fromkeys(word) if _NEEDLE.match(c) and c not in _FOLD_TARGETS]


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
