"""A message workload drawn from real chat: lengths, gaps and conversation sizes from the English
chitchat corpus, Chinese text from KdConv, with a fixed seed.

Shape (per the benchmark issue): one-to-one conversations with a long tail of sizes (median taken
from the corpus) and one conversation holding a fifth of all messages; 40% Chinese text; about
20% media messages; a few locations and custom messages; 30% unread received messages.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imstore import Message
from imstore.message import FileBody, ImageBody, MessageType, VideoBody, VoiceBody

OWNER = "me"
START_MS = 1_700_000_000_000


@dataclass
class Corpus:
    english: list[str]
    chinese: list[str]
    gaps_s: list[float]
    sizes: list[int]
    source: str


def load_corpus(data: Path) -> Corpus:
    chit = data / "corpora" / "chitchat" / "chitchat_every9th.json"
    kd = data / "corpora" / "kdconv"
    if not chit.is_file() or not kd.is_dir():
        return _builtin()
    english, gaps, sizes = [], [], []
    for conv in json.loads(chit.read_text(encoding="utf-8")).values():
        msgs = [m for turn in conv["messages"] for m in turn]
        sizes.append(len(msgs))
        times = [datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")).timestamp()
                 for m in msgs]
        gaps += [max(b - a, 0.0) for a, b in itertools.pairwise(times)]
        english += [m["text"] for m in msgs if m["text"].strip()]
    chinese = []
    for f in sorted(kd.glob("*.json")):
        for dialog in json.loads(f.read_text(encoding="utf-8")):
            chinese += [m["message"] for m in dialog["messages"] if m["message"].strip()]
    return Corpus(english, chinese, gaps, sizes, f"chitchat + KdConv from {data}")


def _builtin() -> Corpus:
    rnd = random.Random(0)
    words = ["meet", "lunch", "tomorrow", "project", "deadline", "coffee", "weekend", "movie",
             "music", "travel", "photo", "call", "later", "today", "great", "thanks", "sorry",
             "maybe", "sure", "plan", "ticket", "hotel", "train"]
    hanzi = "我们明天一起去北京上海吃饭电影音乐旅行照片电话今天谢谢好的可以时间地方朋友工作学习"
    english = [" ".join(rnd.choice(words) for _ in range(rnd.randint(2, 14))) for _ in range(5000)]
    chinese = ["".join(rnd.choice(hanzi) for _ in range(rnd.randint(4, 30))) for _ in range(5000)]
    gaps = [rnd.expovariate(1 / 15) for _ in range(5000)]
    sizes = [max(1, int(rnd.lognormvariate(math.log(6), 1.2))) for _ in range(800)]
    return Corpus(english, chinese, gaps, sizes, "built-in generator (../shared/data not found)")


def plan_sizes(total: int, conversations: int, corpus: Corpus, rnd: random.Random) -> list[int]:
    """Conversation sizes: the first holds a fifth of all; the rest follow a lognormal tail
    whose median is the corpus's, scaled to add up."""
    big = total // 5
    rest = total - big
    n = max(conversations - 1, 1)
    median = sorted(corpus.sizes)[len(corpus.sizes) // 2] if corpus.sizes else 6
    mean = rest / n
    sigma = math.sqrt(2 * math.log(mean / median)) if mean > median else 0.5
    raw = [rnd.lognormvariate(math.log(median), sigma) for _ in range(n)]
    scale = rest / sum(raw)
    sizes = [max(1, round(r * scale)) for r in raw]
    diff = rest - sum(sizes)
    i = 0
    while diff:
        step = 1 if diff > 0 else -1
        if sizes[i % n] + step >= 1:
            sizes[i % n] += step
            diff -= step
        i += 1
    return [big, *sizes]


def generate(total: int, conversations: int, seed: int, corpus: Corpus) -> Iterator[Message]:
    """The workload's messages, conversation by conversation, each in time order."""
    rnd = random.Random(seed)
    sizes = plan_sizes(total, conversations, corpus, rnd)
    n = 0
    for ci, size in enumerate(sizes):
        peer = f"user{ci:06d}"
        t = START_MS + rnd.randrange(0, 86_400_000 * 30)
        for _ in range(size):
            t += int(rnd.choice(corpus.gaps_s) * 1000) + 1 if corpus.gaps_s else 15_000
            received = rnd.random() < 0.5
            kw = dict(sender=peer if received else None, msg_id=f"b{n:09d}", timestamp=t,
                      is_read=(rnd.random() >= 0.6) if received else None)
            to = OWNER if received else peer
            r = rnd.random()
            if r < 0.2:
                msg = _media(to, rnd, n, kw)
            elif r < 0.21:
                msg = Message.location(to, rnd.uniform(-80, 80), rnd.uniform(-170, 170),
                                       address=rnd.choice(corpus.chinese)[:30], **kw)
            elif r < 0.22:
                msg = Message.custom(to, rnd.choice(["red_packet", "sticker", "poll"]),
                                     {"v": str(n)}, **kw)
            else:
                pool = corpus.chinese if rnd.random() < 0.4 else corpus.english
                msg = Message.text(to, rnd.choice(pool)[:1000], **kw)
            n += 1
            yield msg


def _media(to: str, rnd: random.Random, n: int, kw: dict) -> Message:
    kind = rnd.choice([MessageType.IMAGE, MessageType.VOICE, MessageType.VIDEO, MessageType.FILE])
    name = {MessageType.IMAGE: f"IMG_{n}.jpg", MessageType.VOICE: f"voice_{n}.ogg",
            MessageType.VIDEO: f"VID_{n}.mp4", MessageType.FILE: f"report_{n}.pdf"}[kind]
    common = dict(display_name=name, remote_url=f"https://files.example/{n}/{name}",
                  size=rnd.randint(10_000, 9_000_000))
    body: FileBody
    if kind == MessageType.IMAGE:
        body = ImageBody(width=1080, height=1440, thumbnail_url=f"https://files.example/{n}/t",
                         **common)
    elif kind == MessageType.VOICE:
        body = VoiceBody(duration_ms=rnd.randint(1000, 60000), **common)
    elif kind == MessageType.VIDEO:
        body = VideoBody(duration_ms=rnd.randint(1000, 120000), **common)
    else:
        body = FileBody(**common)
    msg = Message.file(to, name, **kw)
    msg.type, msg.body = kind, body
    return msg


def common_queries(msgs: list[Message]) -> list[str]:
    """The "common words" set: the 20 most frequent words (3+ letters) and the 20 most frequent
    Chinese characters of the workload's text messages, 20 pairs of them (a word and a
    character, two words, two characters) and a lone 的."""
    import re
    from collections import Counter

    words: Counter[str] = Counter()
    chars: Counter[str] = Counter()
    for m in msgs:
        text = getattr(m.body, "text", None)
        if isinstance(text, str):
            words.update(w.lower() for w in re.findall(r"[A-Za-z]{3,}", text))
            chars.update(re.findall(r"[\u4e00-\u9fff]", text))
    w = [x for x, _ in words.most_common(20)]
    c = [x for x, _ in chars.most_common(20)]
    pairs = [f"{w[i]} {c[i]}" for i in range(0, 20, 3)] + \
        [f"{w[i]} {w[i + 1]}" for i in range(0, 19, 3)] + \
        [f"{c[i]} {c[i + 1]}" for i in range(0, 19, 3)]
    return [*w, *c, *pairs, "的"]
