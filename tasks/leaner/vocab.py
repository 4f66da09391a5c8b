"""The lean vocabulary: the N most common English words, from the ``wordfreq`` package."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def _cache_file(n: int) -> Path:
    root = os.environ.get("REFINERY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "refinery")
    path = Path(root) / "vocab"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"lean_en_{n}.txt"


@cache
def lean_vocabulary(n: int = 2000) -> frozenset[str]:
    """Built from wordfreq at first use and cached on disk (one word per line): the top ``n``
    English entries that are words (numbers and symbols left out)."""
    path = _cache_file(n)
    if path.is_file():
        return frozenset(path.read_text(encoding="utf-8").split())
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", n) if WORD.fullmatch(w)]
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text("\n".join(words) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return frozenset(words)


def words_of(text: str) -> list[str]:
    return WORD.findall(text.lower().replace("\u2019", "'"))


def lean_coverage(text: str, n: int = 2000) -> float:
    """Share of the text's word tokens that are in the lean vocabulary (1.0 for no words)."""
    words = words_of(text)
    if not words:
        return 1.0
    vocab = lean_vocabulary(n)
    return sum(1 for w in words if w in vocab) / len(words)


def oov_rate(text: str, n: int = 2000) -> float:
    return 1.0 - lean_coverage(text, n)
