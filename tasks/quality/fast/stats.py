"""The combined score's text statistics (:func:`tasks.quality.features.text_statistics`) for
many documents in one compiled pass over their code points.

The Python function runs three regular expressions and a per-word set lookup over every text:
about 0.3 ms a web page, a third of the whole quality stage's cost with every tagger on. Here
the same four figures come from one walk over the documents' UTF-32 code points, with the
character classes taken from Python itself (``str.isalnum`` for ``[^\\W_]``, ``str.isspace``
for ``\\s``, ``str.splitlines``'s line breaks, ``str.lower``), so the figures are equal, not
close: ``tests/test_quality_features.py`` compares them on every shared corpus and on generated
text over every character class.

The class tables cover the Basic Multilingual Plane when first used (about 0.03 s); code points
above it are looked up in Python the first time a batch holds them.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import NamedTuple

import numpy as np
from numba import njit

_KNOWN, _ALNUM, _SPACE, _BREAK = 1, 2, 4, 8
_JOINERS = ("'", "’", "-")  # features' word pattern joins word parts across these
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


class _Flags:
    """Per code point: class flags (Python's own ``str`` methods), the Basic Multilingual Plane
    when first used, code points above it the first time a batch holds them."""

    def __init__(self) -> None:
        self.flags = np.zeros(sys.maxunicode + 1, np.uint8)
        self.lock = threading.Lock()
        self.fill(np.arange(0x10000))

    def fill(self, points: np.ndarray) -> None:
        for c in points.tolist():
            ch = chr(c)
            f = _KNOWN | (_ALNUM if ch.isalnum() else 0)
            if ch.isspace():
                f |= _SPACE
                if len(("a" + ch + "b").splitlines()) == 2:  # every line break is a space
                    f |= _BREAK
            self.flags[c] = f

    def ensure(self, wide: np.ndarray) -> None:
        """Fill in the code points above the BMP (``wide``: distinct) that no batch had yet."""
        if len(wide):
            with self.lock:
                missing = wide[self.flags[wide] == 0]
                if len(missing):
                    self.fill(missing)


_FLAGS: list[_Flags] = []
_FLAGS_LOCK = threading.Lock()


def _flags() -> _Flags:
    with _FLAGS_LOCK:
        if not _FLAGS:
            _FLAGS.append(_Flags())
        return _FLAGS[0]


class CodePoints:
    """Many texts as one array of code points (UTF-32) and each text's start: encoded once and
    read by every compiled pass of the score (:func:`text_statistics_batch`, the article
    classifier's :mod:`tasks.quality.fast.linear`). ``flags`` holds every code point's class
    (``str.isalnum``, ``str.isspace``, a line break of ``str.splitlines``)."""

    def __init__(self, texts: list[str]) -> None:
        self.points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), np.uint32)
        self.offsets = np.zeros(len(texts) + 1, np.int64)
        np.cumsum([len(t) for t in texts], out=self.offsets[1:])
        # code points above the BMP, which the class tables fill in when first met (most batches
        # have none: a max is a quarter of the cost of selecting them)
        self.wide = (np.unique(self.points[self.points > 0xFFFF]) if len(self.points) and self.points.max() > 0xFFFF
                     else np.zeros(0, np.uint32))
        table = _flags()
        table.ensure(self.wide)
        self.flags = table.flags

    def __len__(self) -> int:
        return len(self.offsets) - 1


class _Tables:
    """Per code point, the lower-case letter when it is one that a stop word can hold (-1
    otherwise: a word holding such a character is no stop word); the stop words in an
    open-addressing table keyed by the FNV-1a hash of their code points (a lookup per word is
    one or two probes: a binary search over the sorted hashes cost most of the pass)."""

    def __init__(self, stop_words: frozenset[str]) -> None:
        self.alphabet = frozenset(c for w in stop_words for c in w)
        self.lower = np.full(sys.maxunicode + 1, -1, np.int32)
        self.lower_known = np.zeros(sys.maxunicode + 1, np.bool_)
        self.lock = threading.Lock()
        self.fill(np.arange(0x10000))
        words = sorted(stop_words)
        self.slots, self.keys, self.starts, self.stop_points = hash_table([[ord(c) for c in w] for w in words])
        self.longest = max((len(w) for w in words), default=0)

    def fill(self, points: np.ndarray) -> None:
        for c in points.tolist():
            low = chr(c).lower()
            if len(low) == 1 and low in self.alphabet:
                self.lower[c] = ord(low)
        self.lower_known[points] = True

    def ensure(self, wide: np.ndarray) -> None:
        """Fill in the code points above the BMP (``wide``: distinct) that no batch had yet."""
        if len(wide):
            with self.lock:
                missing = wide[~self.lower_known[wide]]
                if len(missing):
                    self.fill(missing)


def fnv1a(points: list[int]) -> int:
    """The 64-bit FNV-1a hash of a sequence of code points, as the compiled passes compute it."""
    h = int(_FNV_OFFSET)
    for c in points:
        h = ((h ^ c) * int(_FNV_PRIME)) & 0xFFFFFFFFFFFFFFFF
    return h


def hash_table(items: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An open-addressing table of code-point sequences for :func:`lookup`: ``slots`` (a power
    of two, at most a quarter full; each the item's index or -1), each item's hash, and the
    items' code points with each one's start."""
    keys = np.array([fnv1a(p) for p in items], np.uint64)
    size = 4
    while size < 4 * max(1, len(items)):
        size *= 2
    slots = np.full(size, -1, np.int32)
    for i, h in enumerate(keys.tolist()):
        k = h & (size - 1)
        while slots[k] >= 0:
            k = (k + 1) & (size - 1)
        slots[k] = i
    starts = np.zeros(len(items) + 1, np.int64)
    np.cumsum([len(p) for p in items], out=starts[1:])
    points = np.array([c for p in items for c in p], np.int32)
    return slots, keys, starts, points


@njit(cache=True, nogil=True, inline="always")
def lookup(h, seq, s, e, slots, keys, starts, points):
    """The index of the item equal to ``seq[s:e]`` (whose hash is ``h``; ``seq`` holds code
    points, or, for stop words, their lower-case forms), or -1."""
    mask = np.uint64(len(slots) - 1)
    k = h & mask
    while True:
        w = slots[k]
        if w < 0:
            return -1
        if keys[w] == h and starts[w + 1] - starts[w] == e - s:
            a = starts[w]
            same = True
            for j in range(e - s):
                if points[a + j] != seq[s + j]:
                    same = False
                    break
            if same:
                return w
        k = (k + np.uint64(1)) & mask


_TABLES: dict[frozenset[str], _Tables] = {}
_TABLES_LOCK = threading.Lock()


def _tables(stop_words: frozenset[str]) -> _Tables:
    with _TABLES_LOCK:
        if stop_words not in _TABLES:
            _TABLES[stop_words] = _Tables(stop_words)
        return _TABLES[stop_words]


@njit(cache=True, nogil=True, inline="always")
def _is_stop(points, s, e, lower, slots, keys, starts, stop_points):
    # inlined: a call with this many array arguments cost more than the lookup itself
    h = _FNV_OFFSET
    for i in range(s, e):
        c = lower[points[i]]
        if c < 0:
            return False
        h = (h ^ np.uint64(c)) * _FNV_PRIME
    mask = np.uint64(len(slots) - 1)
    k = h & mask
    while True:
        w = slots[k]
        if w < 0:
            return False
        if keys[w] == h and starts[w + 1] - starts[w] == e - s:
            a = starts[w]
            same = True
            for j in range(e - s):
                if stop_points[a + j] != lower[points[s + j]]:
                    same = False
                    break
            if same:
                return True
        k = (k + np.uint64(1)) & mask


@njit(cache=True, nogil=True, inline="always")
def _in(c, points):
    for p in points:
        if c == p:
            return 1
    return 0


@njit(cache=True, nogil=True)
def _walk(points, offsets, flags, lower, joiners, terminal, slots, keys, starts, stop_points, longest, out_counts,
          wslots, wkeys, wstarts, wpoints, weights, stop_word, out_sums, out_known, out_stopped):
    """Per document: words, stop words, non-empty lines, lines ending in terminal punctuation,
    white space and symbol code points (``out_counts``, one row each); and, in the same pass,
    the sum of the ``weights`` of its known fastText words (``out_sums``, ``out_known``: see
    :mod:`tasks.quality.fast.linear`). A fastText word is a run of code points that are neither
    white space (``str.isspace``, as ``str.split`` cuts) nor NUL (fastText cuts there too);
    reading them stops after the word ``stop_word`` (fastText's end-of-line token ends a line
    wherever it stands; ``out_stopped``). An empty word table (one empty slot) knows no word."""
    for d in range(len(offsets) - 1):
        s, e = offsets[d], offsets[d + 1]
        words = stops = lines = term = spaces = symbols = 0
        last = -1  # the last non-space code point of the current line
        total = 0.0
        known = 0
        stopped = False
        ts = -1  # where the current fastText word began
        th = _FNV_OFFSET
        i = s
        while True:
            end = i == e  # the text's end ends its last fastText word, as a NUL would
            c = points[i] if not end else 0
            f = flags[c]
            if f & 4 or c == 0:  # ends a fastText word
                if ts >= 0 and not stopped:
                    w = lookup(th, points, ts, i, wslots, wkeys, wstarts, wpoints)
                    if w >= 0:
                        total += weights[w]
                        known += 1
                        stopped = w == stop_word
                ts = -1
            if end:
                break
            if f & 8:  # a line break ends the line (an empty one, as rstrip leaves it, is not counted)
                if last >= 0:
                    lines += 1
                    term += _in(last, terminal)
                last = -1
            if f & 4:
                spaces += 1
                i += 1
                continue
            last = c
            if not f & 2:
                symbols += 1
                if c != 0:
                    if ts < 0:
                        ts = i
                        th = _FNV_OFFSET
                    th = (th ^ np.uint64(c)) * _FNV_PRIME
                i += 1
                continue
            # a word: a run of letters and digits, then (joiner, run)* while a run follows
            j = i + 1
            while j < e and flags[points[j]] & 2:
                j += 1
            while j + 1 < e and flags[points[j + 1]] & 2:
                if not _in(points[j], joiners):
                    break
                j += 2
                while j < e and flags[points[j]] & 2:
                    j += 1
            words += 1
            if j - i <= longest and _is_stop(points, i, j, lower, slots, keys, starts, stop_points):
                stops += 1
            # the word's code points are letters, digits and joiners: none is a space, a break
            # or NUL (all inside one fastText word); the joiners are symbols
            if ts < 0:
                ts = i
                th = _FNV_OFFSET
            for k in range(i, j):
                th = (th ^ np.uint64(points[k])) * _FNV_PRIME
                if not flags[points[k]] & 2:
                    symbols += 1
            last = points[j - 1]
            i = j
        if last >= 0:
            lines += 1
            term += _in(last, terminal)
        out_counts[d, 0] = words
        out_counts[d, 1] = stops
        out_counts[d, 2] = lines
        out_counts[d, 3] = term
        out_counts[d, 4] = spaces
        out_counts[d, 5] = symbols
        out_counts[d, 6] = e - s
        out_sums[d] = total
        out_known[d] = known
        out_stopped[d] = stopped


_JOINER_POINTS = np.array([ord(c) for c in _JOINERS], np.int32)


class WordTable(NamedTuple):
    """fastText words and a number for each, for the pass's word sums (:func:`hash_table`'s
    arrays; ``stop``: the index of the word that ends a line, -1 for none)."""

    slots: np.ndarray
    keys: np.ndarray
    starts: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    stop: int


_NO_WORDS = WordTable(np.full(1, -1, np.int32), np.zeros(0, np.uint64), np.zeros(1, np.int64), np.zeros(0, np.int32),
                      np.zeros(0, np.float64), -1)


def walk_batch(texts: list[str] | CodePoints, stop_words: frozenset[str], terminal: tuple[str, ...],
               vocabulary: WordTable | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One compiled pass: :func:`text_statistics_batch`'s array, and per text the sum of the
    numbers of its words that ``vocabulary`` knows, how many there are, and whether a
    line-ending word stopped them."""
    cp = texts if isinstance(texts, CodePoints) else CodePoints(texts)
    vocab = vocabulary or _NO_WORDS
    n = len(cp)
    out = np.zeros((n, 4), np.float64)
    sums, known, stopped = np.zeros(n, np.float64), np.zeros(n, np.int64), np.zeros(n, np.bool_)
    if not n:
        return out, sums, known, stopped
    tables = _tables(stop_words)
    terminal_points = np.array([ord(c) for c in terminal], np.int32)
    tables.ensure(cp.wide)
    counts = np.zeros((n, 7), np.int64)
    _walk(cp.points, cp.offsets, cp.flags, tables.lower, _JOINER_POINTS, terminal_points, tables.slots,
          tables.keys, tables.starts, tables.stop_points, tables.longest, counts, vocab.slots, vocab.keys,
          vocab.starts, vocab.points, vocab.weights, vocab.stop, sums, known, stopped)
    words, stops, lines, term, spaces, symbols, length = counts.T.astype(np.float64)
    non_space = length - spaces
    # the Python definition's float operations: IEEE division element by element, and
    # math.log1p itself (numpy's log1p differs from it in the last bit for some counts)
    out[:, 0] = [math.log1p(n) for n in counts[:, 0].tolist()]
    np.divide(term, lines, out=out[:, 1], where=lines > 0)
    np.divide(stops, words, out=out[:, 2], where=words > 0)
    np.divide(symbols, non_space, out=out[:, 3], where=non_space > 0)
    return out, sums, known, stopped


def text_statistics_batch(texts: list[str] | CodePoints, stop_words: frozenset[str],
                          terminal: tuple[str, ...]) -> np.ndarray:
    """``features.text_statistics`` of every text (given its stop words and the characters that
    end a line as a sentence): an array (texts × 4: log_words, terminal_punctuation_lines,
    stopword_share, symbol_share), equal to the Python function's."""
    return walk_batch(texts, stop_words, terminal)[0]
