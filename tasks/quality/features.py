"""Per-document statistics that the combined quality score is built from.

Few and monotone on purpose (each one's direction is known before any label is seen, and the
shipped model is checked to keep it): the human-labelled data to weigh them is small, and a
feature that only helps on it would not help elsewhere. All are cheap: one compiled pass over
the text's code points for the statistics and one for the article classifier (a linear fastText
model: :mod:`tasks.quality.fast.linear`), and the language-ID probability the stage already has;
none tokenizes with spaCy as datatrove's filters do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tasks.quality.fast.linear import LinearForm

# name -> (direction a higher value should move the score, what it is)
FEATURES: dict[str, tuple[int, str]] = {
    "article_classifier": (+1, "logit of the fastText article-vs-boilerplate classifier's probability of article text"),
    "log_words": (+1, "log(1 + words)"),
    "terminal_punctuation_lines": (+1, "share of non-empty lines ending in terminal punctuation (C4's set, plus "
                                       "typographic quotes)"),
    "english_score": (+1, "language-ID probability of English (0 when English is not the top language)"),
    "stopword_share": (+1, "share of words that are English stop words (spaCy's list)"),
    "symbol_share": (-1, "share of non-space characters that are neither letters nor digits"),
}

# \w minus the underscore, with inner apostrophes and hyphens kept, as a reader counts words
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
_SYMBOL = re.compile(r"[^\w\s]|_")
_SPACE = re.compile(r"\s")
TERMINAL = (".", "?", "!", '"', "'", "”", "’")
_LOGIT_CLIP = 1e-4


@cache
def stop_words() -> frozenset[str]:
    """English stop words: spaCy's list (read once per process)."""
    from spacy.lang.en.stop_words import STOP_WORDS  # a plain word list; no spaCy model is loaded

    return frozenset(STOP_WORDS)


def text_statistics(text: str) -> tuple[float, float, float, float]:
    """log_words, terminal_punctuation_lines, stopword_share, symbol_share of one text (the
    definition; :func:`compute` gets the same figures from a compiled pass,
    ``tasks.quality.fast.stats``)."""
    stop_set = stop_words()
    words = _WORD.findall(text)
    n = len(words)
    lines = [s for s in (line.rstrip() for line in text.splitlines()) if s]
    terminal = sum(1 for s in lines if s.endswith(TERMINAL)) / len(lines) if lines else 0.0
    stop = sum(1 for w in words if w.lower() in stop_set) / n if n else 0.0
    non_space = len(text) - len(_SPACE.findall(text))
    symbols = len(_SYMBOL.findall(text)) / non_space if non_space else 0.0
    return math.log1p(n), terminal, stop, symbols


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    return np.log(p / (1 - p))


def compute(texts: list[str], classifier: Callable[[list[str]], np.ndarray],
            english: np.ndarray, linear: LinearForm | None = None) -> np.ndarray:
    """The feature matrix (documents × FEATURES, in that order). ``classifier`` gives the
    article probability of each text; when the classifier has a ``linear`` form its words are
    summed in the statistics' own pass instead. ``english`` is each text's language-ID probability of
    English."""
    out = np.zeros((len(texts), len(FEATURES)), dtype=np.float64)
    if not texts:
        return out
    from tasks.quality.fast.stats import CodePoints, walk_batch  # numba: loaded when scoring

    points = CodePoints(texts)
    stats, *sums = walk_batch(points, stop_words(), TERMINAL, linear.table if linear is not None else None)
    out[:, 0] = logit(linear.from_sums(*sums) if linear is not None else classifier(texts))
    out[:, 3] = np.asarray(english, dtype=np.float64)
    out[:, [1, 2, 4, 5]] = stats
    return out
