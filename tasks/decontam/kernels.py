"""Compiled loops of decontamination (numba): word n-gram hashes of normalized texts and
their lookup in a sorted index, over the raw UTF-8 buffers of Arrow string arrays
(``tasks/kernels.py`` describes the ``(data, offsets)`` pairs).

Texts are already normalized (``tasks.dedup.minhash.normalize_for_dedup``: words joined by
single spaces). A word's hash is FNV-1a over its bytes then the splitmix64 finalizer, the
same word hash near dedup uses; an n-gram's hash is a polynomial rolling hash of its word
hashes (one multiply-add per word instead of n), finalized once more. Arithmetic is spelled
out in uint64 because numba promotes ``uint64 op int`` to float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tasks.dedup.kernels import skip_number, token_end
from tasks.kernels import fmix64
from tasks.kernels import unicode_space_len as _space_len

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so the rolling hash is a bijection per position


@njit(cache=True)
def _word_hashes(data, i, end, out):
    """Hashes of the space-separated words of ``data[i:end]`` into ``out``; their count."""
    count = 0
    h = _FNV_OFFSET
    in_word = False
    while i < end:
        c = data[i]
        if c == 32:
            if in_word:
                out[count] = fmix64(h)
                count += 1
            h = _FNV_OFFSET
            in_word = False
        else:
            h = (h ^ np.uint64(c)) * _FNV_PRIME
            in_word = True
        i += 1
    if in_word:
        out[count] = fmix64(h)
        count += 1
    return count


@njit(cache=True)
def _top_power(n):
    p = np.uint64(1)
    for _ in range(n - 1):
        p = p * _BASE
    return p


@njit(cache=True)
def ngram_hashes(data, offsets, n):
    """Every word n-gram hash of every text, how many of its words are numbers (the
    normalizer writes every number as ``0``), and the int64 offsets of each text's hashes.
    A text with fewer than ``n`` words has none."""
    docs = len(offsets) - 1
    counts = np.zeros(docs + 1, np.int64)
    words = np.empty(1024, np.uint64)
    top = _top_power(n)
    zero = fmix64((_FNV_OFFSET ^ np.uint64(48)) * _FNV_PRIME)
    total = 0
    out = np.empty(0, np.uint64)
    numbers = np.empty(0, np.int32)
    for pass_no in range(2):
        if pass_no == 1:
            for d in range(docs):
                counts[d + 1] += counts[d]
            out = np.empty(total, np.uint64)
            numbers = np.empty(total, np.int32)
        for d in range(docs):
            i, end = offsets[d], offsets[d + 1]
            if end - i + 1 > len(words):
                words = np.empty(2 * (end - i + 1), np.uint64)
            k = _word_hashes(data, i, end, words)
            grams = k - n + 1 if k >= n else 0
            if pass_no == 0:
                counts[d + 1] = grams
                total += grams
                continue
            pos = counts[d]
            acc = np.uint64(0)
            zeros = 0
            for j in range(k):
                if j >= n:
                    acc = acc - words[j - n] * top
                    if words[j - n] == zero:
                        zeros -= 1
                acc = acc * _BASE + words[j]
                if words[j] == zero:
                    zeros += 1
                if j >= n - 1:
                    out[pos] = fmix64(acc)
                    numbers[pos] = zeros
                    pos += 1
    return out, numbers, counts


@njit(cache=True)
def lookup(data, offsets, n, keys, bits, shift):
    """For every text: how many of its n-grams are in ``keys`` (sorted uint64) and how many
    n-grams it has. ``bits`` is a bitmap over the top bits of the keys (``key >> shift``):
    almost every n-gram of a clean text is settled by one load from it, and only the rest
    are binary-searched."""
    docs = len(offsets) - 1
    hits = np.zeros(docs, np.int64)
    grams = np.zeros(docs, np.int64)
    words = np.empty(1024, np.uint64)
    top = _top_power(n)
    last = len(keys) - 1
    for d in range(docs):
        i, end = offsets[d], offsets[d + 1]
        if end - i + 1 > len(words):
            words = np.empty(2 * (end - i + 1), np.uint64)
        k = _word_hashes(data, i, end, words)
        acc = np.uint64(0)
        found = 0
        for j in range(k):
            if j >= n:
                acc = acc - words[j - n] * top
            acc = acc * _BASE + words[j]
            if j < n - 1:
                continue
            h = fmix64(acc)
            b = h >> shift
            if (bits[b >> np.uint64(6)] >> (b & np.uint64(63))) & np.uint64(1) == 0:
                continue
            lo, hi = 0, last
            while lo <= hi:
                mid = (lo + hi) >> 1
                v = keys[mid]
                if v < h:
                    lo = mid + 1
                elif v > h:
                    hi = mid - 1
                else:
                    found += 1
                    break
        hits[d] = found
        grams[d] = k - n + 1 if k >= n else 0
    return hits, grams


def bitmap(keys: np.ndarray, bits_log2: int) -> tuple[np.ndarray, np.uint64]:
    """The prefilter of :func:`lookup` for ``keys``: 2**bits_log2 bits and the shift."""
    shift = np.uint64(64 - bits_log2)
    top = (keys >> shift).astype(np.int64)
    bits = np.zeros(max(1, (1 << bits_log2) // 64), np.uint64)
    np.bitwise_or.at(bits, top >> 6, np.left_shift(np.uint64(1), (top & 63).astype(np.uint64)))
    return bits, shift


@njit(cache=True)
def rep_word_hashes(rep_data, rep_offsets):
    """Word hashes of every replacement (a wide token's normalized words), and their offsets."""
    n = len(rep_offsets) - 1
    offs = np.zeros(n + 1, np.int64)
    buf = np.empty(max(1, len(rep_data) + n), np.uint64)
    words = np.empty(1024, np.uint64)
    pos = 0
    for r in range(n):
        i, end = rep_offsets[r], rep_offsets[r + 1]
        if end - i + 1 > len(words):
            words = np.empty(2 * (end - i + 1), np.uint64)
        k = _word_hashes(rep_data, i, end, words)
        buf[pos:pos + k] = words[:k]
        pos += k
        offs[r + 1] = pos
    return buf[:pos], offs


@njit(cache=True, inline="always")
def _roll(acc, ring, k, n, top, x):
    """The polynomial hash of the last ``n`` word hashes once word ``x`` (the ``k``-th) joins:
    the word ``n`` back leaves the window (``ring`` holds the last ``n``)."""
    if k >= n:
        acc = acc - ring[k % n] * top
    ring[k % n] = x
    return acc * _BASE + x


@njit(cache=True, inline="always")
def _probe(h, keys, bits, shift, last):
    b = h >> shift
    if (bits[b >> np.uint64(6)] >> (b & np.uint64(63))) & np.uint64(1) == 0:
        return 0
    lo, hi = 0, last
    while lo <= hi:
        mid = (lo + hi) >> 1
        v = keys[mid]
        if v < h:
            lo = mid + 1
        elif v > h:
            hi = mid - 1
        else:
            return 1
    return 0


@njit(cache=True)
def fused_lookup(data, offsets, space, wide_start, wide_stop, wide_index, rep_hashes, rep_offsets, classes, lower,
                 numbers, n, keys, bits, shift):
    """:func:`lookup` of the normalized texts without writing them: the words of
    ``tasks.dedup.kernels.normalize`` (same byte classes, number rule and wide-token
    replacements, given here as word hashes) are hashed as they are read, straight from the
    raw UTF-8 of the documents. Same results as normalizing and then :func:`lookup`."""
    docs = len(offsets) - 1
    hits = np.zeros(docs, np.int64)
    grams = np.zeros(docs, np.int64)
    ring = np.empty(n, np.uint64)
    top = _top_power(n)
    last = len(keys) - 1
    wk = 0
    next_wide = wide_start[0] if len(wide_start) else -1
    for d in range(docs):
        i, end = offsets[d], offsets[d + 1]
        k = 0
        found = 0
        acc = np.uint64(0)
        h = _FNV_OFFSET
        in_word = False
        while True:
            word_done = False
            w = np.uint64(0)
            if i >= end:
                if not in_word:
                    break
                w = fmix64(h)
                in_word = False
                word_done = True
            elif i == next_wide:
                if in_word:  # cannot happen (a wide token starts after whitespace), kept for safety
                    w = fmix64(h)
                    in_word = False
                    word_done = True
                else:
                    r = wide_index[wk]
                    for q in range(rep_offsets[r], rep_offsets[r + 1]):
                        x = rep_hashes[q]
                        acc = _roll(acc, ring, k, n, top, x)
                        k += 1
                        if k >= n:
                            found += _probe(fmix64(acc), keys, bits, shift, last)
                    i = wide_stop[wk]
                    wk += 1
                    next_wide = wide_start[wk] if wk < len(wide_start) else -1
                    continue
            else:
                c = data[i]
                cls = classes[c]
                if cls == 1:  # KEEP
                    h = (h ^ np.uint64(lower[c])) * _FNV_PRIME
                    in_word = True
                    i += 1
                    continue
                if cls == 0:  # SEP
                    if c >= 0x80:
                        sp = _space_len(data, i, end)
                        i += sp if sp else 1
                    else:
                        i += 1
                    if not in_word:
                        continue
                    w = fmix64(h)
                    in_word = False
                    word_done = True
                else:  # DIGIT
                    if numbers:
                        i = skip_number(data, i, end, classes)
                        h = (h ^ np.uint64(48)) * _FNV_PRIME
                    else:
                        h = (h ^ np.uint64(lower[c])) * _FNV_PRIME
                        i += 1
                    in_word = True
                    continue
            if word_done:
                acc = _roll(acc, ring, k, n, top, w)
                k += 1
                if k >= n:
                    found += _probe(fmix64(acc), keys, bits, shift, last)
                h = _FNV_OFFSET
        hits[d] = found
        grams[d] = k - n + 1 if k >= n else 0
    return hits, grams


@njit(cache=True)
def fused_spans(data, offsets, space, wide_start, wide_stop, wide_index, rep_hashes, rep_offsets, classes, lower,
                numbers, n, capacity):
    """The words of :func:`fused_lookup`'s walk for the few contaminated documents: every
    n-gram hash (with per-document offsets, as :func:`ngram_hashes` gives for the normalized
    text) and, for every word, the byte span of the whitespace-delimited token it comes from
    (normalization never crosses a token). The walk is :func:`fused_lookup`'s, repeated here
    rather than shared because a recording branch in that loop would tax every clean document.
    ``capacity``: an upper bound of the words (bytes plus replacement words)."""
    docs = len(offsets) - 1
    tok_start = np.empty(capacity, np.int64)
    tok_stop = np.empty(capacity, np.int64)
    word_off = np.zeros(docs + 1, np.int64)
    hashes = np.empty(capacity, np.uint64)
    hash_off = np.zeros(docs + 1, np.int64)
    ring = np.empty(n, np.uint64)
    top = _top_power(n)
    wk = 0
    nw = 0
    nh = 0
    next_wide = wide_start[0] if len(wide_start) else -1
    for d in range(docs):
        i, end = offsets[d], offsets[d + 1]
        k = 0
        acc = np.uint64(0)
        h = _FNV_OFFSET
        in_word = False
        tok, tok_end = np.int64(-1), np.int64(-1)  # the token being read (-1: between tokens)
        while True:
            word_done = False
            w = np.uint64(0)
            space_after = False
            if i >= end:
                if not in_word:
                    break
                w = fmix64(h)
                in_word = False
                word_done = True
            elif i == next_wide:
                if in_word:
                    w = fmix64(h)
                    in_word = False
                    word_done = True
                else:
                    r = wide_index[wk]
                    for q in range(rep_offsets[r], rep_offsets[r + 1]):
                        x = rep_hashes[q]
                        acc = _roll(acc, ring, k, n, top, x)
                        k += 1
                        tok_start[nw], tok_stop[nw] = wide_start[wk], wide_stop[wk]
                        nw += 1
                        if k >= n:
                            hashes[nh] = fmix64(acc)
                            nh += 1
                    i = wide_stop[wk]
                    tok = np.int64(-1)
                    wk += 1
                    next_wide = wide_start[wk] if wk < len(wide_start) else -1
                    continue
            else:
                c = data[i]
                cls = classes[c]
                if cls == 0:  # SEP: whitespace ends the token, punctuation only the word
                    sp = 0
                    if c >= 0x80:
                        sp = _space_len(data, i, end)
                    elif space[c]:
                        sp = 1
                    if sp == 0 and tok < 0:
                        tok, tok_end = np.int64(i), token_end(data, i + 1, end, space)
                    i += sp if sp else 1
                    space_after = sp > 0
                    if not in_word:
                        if space_after:
                            tok = np.int64(-1)
                        continue
                    w = fmix64(h)
                    in_word = False
                    word_done = True
                else:
                    if tok < 0:
                        tok, tok_end = np.int64(i), token_end(data, i + 1, end, space)
                    if cls == 1:  # KEEP
                        h = (h ^ np.uint64(lower[c])) * _FNV_PRIME
                        i += 1
                    elif numbers:  # DIGIT
                        i = skip_number(data, i, end, classes)
                        h = (h ^ np.uint64(48)) * _FNV_PRIME
                    else:
                        h = (h ^ np.uint64(lower[c])) * _FNV_PRIME
                        i += 1
                    in_word = True
                    continue
            if word_done:
                acc = _roll(acc, ring, k, n, top, w)
                k += 1
                tok_start[nw], tok_stop[nw] = tok, tok_end
                nw += 1
                if k >= n:
                    hashes[nh] = fmix64(acc)
                    nh += 1
                h = _FNV_OFFSET
                if space_after:
                    tok = np.int64(-1)
        word_off[d + 1] = nw
        hash_off[d + 1] = nh
    return hashes[:nh], hash_off, tok_start[:nw], tok_stop[:nw], word_off
