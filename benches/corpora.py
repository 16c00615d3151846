"""Benchmark corpora built on the spot: nothing is downloaded.

- `stdlib_docs`: the Python standard library's own sources on this machine (code and prose).
- `multilingual_docs`: seeded synthetic documents mixing Latin, Cyrillic, Greek, CJK (no
  spaces), Arabic, emoji with ZWJ sequences, combining marks, digit runs and punctuation.
- `english_prose`: real English prose, the Python documentation's topic texts (pydoc_data).
- `cjk_prose`: real Chinese, Japanese and Korean text, the UTF-8 samples of CPython's codec
  tests (test/cjkencodings).
All are cut into documents of typical web size (1-10 KB) unless asked otherwise.
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)


def cut(blob: bytes, rng: random.Random, lo: int = 1_000, hi: int = 10_000) -> list[bytes]:
    """Cut at newlines into documents of lo..hi bytes (so no character is split)."""
    docs, start = [], 0
    while start < len(blob):
        end = min(len(blob), start + rng.randint(lo, hi))
        nl = blob.rfind(b"\n", start, end)
        end = nl + 1 if nl > start and end < len(blob) else end
        docs.append(blob[start:end])
        start = end
    return docs


def stdlib_docs(limit_bytes: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    blobs, total = [], 0
    for path in stdlib_files():
        data = path.read_bytes()
        blobs.append(data)
        total += len(data)
        if total >= limit_bytes:
            break
    return cut(b"".join(blobs)[:limit_bytes], rng)


def english_prose(seed: int = 0) -> list[bytes]:
    import pydoc_data.topics

    return cut("\n".join(pydoc_data.topics.topics.values()).encode(), random.Random(seed))


def cjk_prose() -> list[bytes]:
    """One document per sample file (a few hundred bytes to a few KB each)."""
    folder = Path(sysconfig.get_paths()["stdlib"]) / "test" / "cjkencodings"
    docs = [p.read_bytes() for p in sorted(folder.glob("*-utf8.txt"))]
    if not docs:
        raise FileNotFoundError(f"{folder}: no *-utf8.txt samples (this Python was installed without its tests)")
    return docs


WORDS = {
    "latin": ["the", "language", "model", "reads", "bytes", "Straße", "naïve", "École", "über", "déjà"],
    "cyrillic": ["язык", "модель", "читает", "байты", "Привет", "мир"],
    "greek": ["γλώσσα", "μοντέλο", "διαβάζει"],
    "cjk": ["语言模型读取字节", "日本語のテキスト", "한국어문장입니다"],
    "arabic": ["نموذج", "اللغة", "يقرأ"],
    "emoji": ["🙂", "👩\u200d👩\u200d👧", "👍🏽", "🏳️\u200d🌈"],
    "combining": ["e\u0301te\u0301", "a\u0308\u0323"],
}
PUNCT = [",", ".", "!", "?", "...", "—", "«", "»", "(", ")", ":", ";", "\"", "'"]


def multilingual_docs(limit_bytes: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    scripts = list(WORDS)
    parts, total = [], 0
    while total < limit_bytes:
        script = rng.choice(scripts)
        sentence = []
        for _ in range(rng.randint(3, 15)):
            roll = rng.random()
            if roll < 0.08:
                sentence.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
            elif roll < 0.15:
                sentence.append(rng.choice(PUNCT))
            else:
                sentence.append(rng.choice(WORDS[script]))
        sep = "" if script == "cjk" else " "
        text = sep.join(sentence) + rng.choice([". ", "! ", "\n", "\r\n", "\n\n", ".  "])
        blob = text.encode()
        parts.append(blob)
        total += len(blob)
    return cut(b"".join(parts), rng)
