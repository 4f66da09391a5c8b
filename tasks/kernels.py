"""Compiled text loops shared by the stages (numba), over the raw UTF-8 buffers of Arrow
string arrays: ``data`` the uint8 bytes, ``offsets`` int64 value offsets (``offsets[i]:
offsets[i+1]`` is value ``i``; :func:`utf8_buffers` gives both without copying the bytes).
Kernels are compiled on first use and cached on disk (``cache=True``), so a Ray worker pays
the compile once per machine, not once per task.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa
from numba import njit

_K1 = np.uint64(0xBF58476D1CE4E5B9)
_K2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = (np.uint64(s) for s in (30, 27, 31))


@cache
def ascii_space() -> np.ndarray:
    """1 for the ASCII bytes that Python's ``str.isspace`` (and so ``str.split``) treats as
    whitespace."""
    return np.array([chr(b).isspace() if b < 128 else 0 for b in range(256)], np.uint8)


def utf8_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The (bytes, int64 offsets) of a string array, without copying the bytes."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, np.int64 if large else np.int32)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets.astype(np.int64)


def large_strings(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """A large_string array over the given bytes and int64 offsets."""
    return pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))


def word_counts(texts: pa.Array) -> pa.Array:
    """Whitespace-separated words per value (``len(text.split())``), nulls count 0."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    data, offsets = utf8_buffers(texts)
    counts = count_words(data, offsets, word_byte_classes())
    return pa.array(counts, mask=texts.is_null().to_numpy(zero_copy_only=False) if texts.null_count else None)


@njit(cache=True)
def unicode_space_len(data, i, end):
    """Length of the whitespace character (Python's ``str.isspace``) starting at byte ``i``,
    0 if there is none. ASCII whitespace is a byte class of its own, not handled here."""
    c = data[i]
    if c == 0xC2 and i + 1 < end and (data[i + 1] == 0x85 or data[i + 1] == 0xA0):
        return 2
    if i + 2 < end:
        c1, c2 = data[i + 1], data[i + 2]
        if c == 0xE1 and c1 == 0x9A and c2 == 0x80:
            return 3
        if c == 0xE2 and c1 == 0x80 and (c2 <= 0x8A or c2 == 0xA8 or c2 == 0xA9 or c2 == 0xAF) and c2 >= 0x80:
            return 3
        if c == 0xE2 and c1 == 0x81 and c2 == 0x9F:
            return 3
        if c == 0xE3 and c1 == 0x80 and c2 == 0x80:
            return 3
    return 0


@cache
def word_byte_classes() -> np.ndarray:
    """Per byte, for :func:`count_words`: 1 ASCII whitespace, 2 the first byte of a character
    that may be Unicode whitespace (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
    U+202F, U+205F, U+3000), 0 any other byte (a word's)."""
    out = ascii_space().copy()
    out[[0xC2, 0xE1, 0xE2, 0xE3]] = 2
    return out


@njit(cache=True)
def count_words(data, offsets, classes):
    """Words per value: the bytes that start one (not whitespace, after whitespace or at the
    start). Without a branch on the byte's class (it changes every few bytes, and the
    mispredicted branches cost 40% of the time, measured: 0.118 CPU-s a shard of 62,500
    documents branching, 0.069 this way); only a possible Unicode space branches."""
    n = len(offsets) - 1
    out = np.zeros(n, np.int64)
    for d in range(n):
        i, end = offsets[d], offsets[d + 1]
        words, in_word = 0, 0
        while i < end:
            c = classes[data[i]]
            if c == 2:
                w = unicode_space_len(data, i, end)
                if w:
                    in_word = 0
                    i += w
                    continue
                c = 0
            word = 1 - c
            words += word & (1 - in_word)
            in_word = word
            i += 1
        out[d] = words
    return out


@njit(cache=True)
def gather(data, start, stop):
    """The bytes of the given spans, concatenated, with their offsets."""
    offsets = np.empty(len(start) + 1, np.int64)
    offsets[0] = 0
    for k in range(len(start)):
        offsets[k + 1] = offsets[k] + stop[k] - start[k]
    out = np.empty(offsets[-1], np.uint8)
    for k in range(len(start)):
        out[offsets[k]:offsets[k + 1]] = data[start[k]:stop[k]]
    return out, offsets


@njit(cache=True, inline="always")
def fmix64(x):
    x = x ^ (x >> _S30)
    x = x * _K1
    x = x ^ (x >> _S27)
    x = x * _K2
    return x ^ (x >> _S31)


_HIGH_BITS = np.uint64(0x8080808080808080)
_LOW_BITS = np.uint64(0x0101010101010101)
_CR_BYTES = np.uint64(0x0D0D0D0D0D0D0D0D)


def aligned_words(data: np.ndarray) -> tuple[int, np.ndarray]:
    """``data``'s whole aligned 8-byte words as uint64 (a view) and the offset of the first."""
    first = -data.ctypes.data % 8 if len(data) else 0
    count = max(0, len(data) - first) // 8
    return first, data[first:first + 8 * count].view(np.uint64)


@njit(cache=True)
def flag_code_points(data, offsets, first, words, table):
    """Per value, whether it holds a code point whose bit is set in ``table`` (a bitset over
    code points, little-endian within each byte); and whether any value holds a carriage
    return. The values must be valid UTF-8 (ingest checks that first): a truncated sequence or
    a stray continuation or lead byte is flagged (and never read past), but an overlong form,
    an encoded surrogate or a code point above U+10FFFF is decoded leniently, not flagged. Aligned
    8-byte words of ASCII are skipped whole (measured 2.1x faster than byte by byte on the
    benchmark corpus's text, where most bytes are ASCII)."""
    n = len(offsets) - 1
    out = np.zeros(n, np.bool_)
    cr = False
    words_end = first + 8 * len(words)
    for d in range(n):
        i, end = offsets[d], offsets[d + 1]
        stop = min(end, words_end)
        hit = False
        while i < end:
            if i + 8 <= stop and i >= first and ((i - first) & 7) == 0:
                w = words[(i - first) >> 3]
                if (w & _HIGH_BITS) == 0:
                    x = w ^ _CR_BYTES  # a zero byte where w has "\r"
                    if ((x - _LOW_BITS) & ~x & _HIGH_BITS) != 0:
                        cr = True
                    i += 8
                    continue
            c = np.int64(data[i])
            if c < 0x80:
                if c == 13:
                    cr = True
                i += 1
                continue
            if hit:
                i += 1
                continue
            if 0xC2 <= c < 0xE0 and i + 2 <= end:
                cp = ((c & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F)
                i += 2
            elif 0xE0 <= c < 0xF0 and i + 3 <= end:
                cp = ((c & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6) | (np.int64(data[i + 2]) & 0x3F)
                i += 3
            elif 0xF0 <= c < 0xF5 and i + 4 <= end:
                cp = (((c & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12)
                      | ((np.int64(data[i + 2]) & 0x3F) << 6) | (np.int64(data[i + 3]) & 0x3F))
                i += 4
            else:
                hit = True
                i += 1
                continue
            if cp < 0x110000 and (table[cp >> 3] >> (cp & 7)) & 1:
                hit = True
        out[d] = hit
    return out, cr
