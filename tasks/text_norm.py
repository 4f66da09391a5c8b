"""The project's text normal form (Unicode normalization, LF line endings) and exact dedup's
comparison key: core, shared by ingest, extract and exact dedup."""

from __future__ import annotations

import functools
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import text_norm_ranges
from tasks.kernels import aligned_words, flag_code_points, utf8_buffers

FORMS = ("NFC", "NFKC", "NFD", "NFKD")
# conjoining jungseong (V) and jongseong (T) jamo: they compose with a preceding choseong (L) or
# LV syllable by the algorithm of Unicode 3.12, so no decomposition mapping names them
_HANGUL_V = range(0x1161, 0x1176)
_HANGUL_T = range(0x11A8, 0x11C3)
_SURROGATES = range(0xD800, 0xE000)


def content_key(text: str, mode: str) -> str:
    """The text that exact dedup compares (documented in docs/stages.md)."""
    if mode == "text":
        return text
    if mode == "stripped":
        return "\n".join(line.strip() for line in text.strip().split("\n"))
    return " ".join(text.lower().split())


def quick_check_ranges(form: str) -> list[tuple[int, int]]:
    """The code points (inclusive ranges, ascending) that may make a text not be in ``form``,
    computed from this interpreter's ``unicodedata``: a text with none of them is in ``form``,
    and ``unicodedata.normalize`` returns it unchanged. Scans every code point (about 0.2 CPU-s
    a form); ``scripts/gen_text_norm_ranges.py`` writes the result to
    ``tasks/text_norm_ranges.py`` so that workers do not pay that.

    The set must hold every character that is not "quick check Yes with canonical combining
    class 0" (UAX #15, section 9: a text whose every character has ``<form>_QC=Yes`` and whose
    combining classes are in canonical order is in ``form``; CPython's ``normalize`` returns
    its very input exactly when its own quick check says so). Taken as the union of:

    - every character ``c`` with ``normalize(form, c) != c``, which covers ``<form>_QC=No``
      (such a character never occurs in ``form``, so its normalization differs from it): for
      NFD/NFKD the decomposable characters; for NFC/NFKC singletons, composition exclusions and
      non-starter decompositions, and for NFKC compatibility characters too;
    - every character with a non-zero canonical combining class: a text of them may need
      reordering (``Yes`` for NFD alone does not make a sequence of them ordered), and under
      NFC a mark may compose with the base before it;
    - for NFC/NFKC, the ``Maybe`` characters, which compose with the character before them:
      the second character of every canonical two-character decomposition of a character that
      is its own NFC (a primary composite; others never recompose), and the conjoining Hangul
      V and T jamo, which compose with L jamo and LV syllables algorithmically and so appear
      in no decomposition mapping (``unicodedata.decomposition('가')`` is empty; without them
      ``'\\u1100\\u1161'`` would pass for NFC, though its NFC is ``'가'``);
    - characters whose full decomposition (canonical, or compatibility for the K forms)
      starts with a non-starter or a ``Maybe`` character: once decomposed they could reorder
      with, or compose onto, what precedes them. In Unicode 14 every such character already
      changes under its form (they are composition exclusions, or compatibility characters
      under the K forms), so this adds nothing there; it is kept so that a future Unicode
      version cannot quietly break the argument.

    The generator's script also checks the set against CPython's own quick check (see
    ``cpython_quick_check_misses``): nothing that check does not answer Yes for is missing."""
    if form not in FORMS:
        raise ValueError(f"unknown normal form {form!r} (one of {', '.join(FORMS)})")
    compose = form in ("NFC", "NFKC")
    maybe: set[int] = set()
    if compose:
        maybe.update(_HANGUL_V, _HANGUL_T)
        for cp in range(0x110000):
            mapping = unicodedata.decomposition(chr(cp))
            if mapping and not mapping.startswith("<"):
                parts = mapping.split()
                if len(parts) == 2 and unicodedata.normalize("NFC", chr(cp)) == chr(cp):
                    maybe.add(int(parts[1], 16))
    decompose = "NFKD" if form in ("NFKC", "NFKD") else "NFD"
    points = set(maybe)
    for cp in range(0x110000):
        if cp in _SURROGATES:  # never in a valid UTF-8 text
            continue
        c = chr(cp)
        if unicodedata.combining(c) or unicodedata.normalize(form, c) != c:
            points.add(cp)
            continue
        d = unicodedata.normalize(decompose, c)
        if d != c and (unicodedata.combining(d[0]) or ord(d[0]) in maybe):
            points.add(cp)
    points.difference_update(_SURROGATES)
    ranges: list[tuple[int, int]] = []
    for cp in sorted(points):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return ranges


def cpython_quick_check_misses(form: str, ranges: list[tuple[int, int]]) -> list[int]:
    """Code points for which CPython's quick check does not answer Yes but that ``ranges``
    leave out (empty when the ranges are sound). ``normalize`` returns its very input only
    when the quick check answers Yes, which a doubled character shows (one character may come
    back as CPython's cached one-character string whatever the check said; a doubled one keeps
    the combining classes in order, so only the quick-check property decides)."""
    covered = np.zeros(0x110000, dtype=bool)
    for a, b in ranges:
        covered[a:b + 1] = True
    misses = []
    for cp in range(0x110000):
        if covered[cp] or cp in _SURROGATES:
            continue
        twice = chr(cp) * 2
        if unicodedata.normalize(form, twice) is not twice:
            misses.append(cp)
    return misses


@functools.cache
def active_ranges(form: str) -> tuple[tuple[int, int], ...]:
    """The ranges of :func:`quick_check_ranges` that this process uses: the generated table
    when it was made from this interpreter's Unicode version, else computed (once per process)."""
    if unicodedata.unidata_version == text_norm_ranges.UNIDATA_VERSION:
        return text_norm_ranges.RANGES[form]
    return tuple(quick_check_ranges(form))


@functools.cache
def _bitset(form: str) -> np.ndarray:
    """``active_ranges(form)`` as a bitset over code points (139 KB), as the kernel reads it."""
    flags = np.zeros(0x110000, dtype=bool)
    for a, b in active_ranges(form):
        flags[a:b + 1] = True
    return np.packbits(flags, bitorder="little")


def scan_texts(texts: pa.Array, form: str) -> tuple[np.ndarray, bool]:
    """Which texts (a boolean mask) hold a character of :func:`quick_check_ranges` (every
    other text is in ``form`` already), and whether any holds a carriage return: one compiled
    pass over the UTF-8 bytes. ``form`` "none" flags no text."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    data, offsets = utf8_buffers(texts)
    first, words = aligned_words(data)
    table = _bitset(form) if form != "none" else np.zeros(0x110000 // 8, np.uint8)
    maybe, cr = flag_code_points(data, offsets, first, words, table)
    return maybe, bool(cr)


def normalize_texts(texts: pa.Array, form: str) -> pa.Array:
    """Unicode normalization and LF line endings over a column without nulls. A text with no
    character of :func:`quick_check_ranges` (ASCII text, and nearly all of the rest) is in
    ``form`` already: it is left as it is, which is what ``unicodedata.normalize`` returns for
    it. Only the others go through CPython's ``unicodedata`` (measured 1.7x faster than
    pyarrow's ``utf8_normalize`` on the benchmark corpus), found by a compiled scan that also
    looks for carriage returns (docs/design.md, Normalization)."""
    if not len(texts):
        return texts
    maybe, cr = scan_texts(texts, form)
    if form != "none" and maybe.any():
        wide = np.flatnonzero(maybe)
        # unicodedata returns the very same object for a text that is already normalized
        changed = [(k, n) for k, t in zip(wide.tolist(), texts.take(pa.array(wide)).to_pylist(), strict=True)
                   if (n := unicodedata.normalize(form, t)) is not t]
        if changed:
            mask = np.zeros(len(texts), dtype=bool)
            mask[[k for k, _ in changed]] = True
            texts = pc.replace_with_mask(texts, pa.array(mask), pa.array([n for _, n in changed], texts.type))
    if cr:
        texts = pc.replace_substring(pc.replace_substring(texts, "\r\n", "\n"), "\r", "\n")
    return texts


def normalize_text(text: str, form: str) -> str:
    """:func:`normalize_texts` for one text."""
    return normalize_texts(pa.array([text], pa.string()), form)[0].as_py()
