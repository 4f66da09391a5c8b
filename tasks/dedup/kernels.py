"""The compiled inner loops of near dedup (numba): normalization of ASCII words and the
shingle → MinHash loop, over the raw UTF-8 buffers of Arrow string arrays.

Everything here works on ``(data, offsets)`` pairs as ``tasks/kernels.py`` describes. ASCII
bytes are decided inline in every loop and only the others go through
:func:`tasks.kernels.unicode_space_len` (one helper for both was measured 7x slower).

Arithmetic is spelled out in uint64/uint32 on purpose: numba promotes ``uint64 op int`` to
float64, which would silently break the hashes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tasks.kernels import fmix64, unicode_space_len  # fmix64: dedup's hashes, shared with tokens and decontam

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_K1 = np.uint64(0xBF58476D1CE4E5B9)  # also a band salt below, beside fmix64's use of it in tasks.kernels
_S32, _S5, _S59 = (np.uint64(s) for s in (32, 5, 59))
_MAX32 = np.uint32(0xFFFFFFFF)

# byte classes of the ASCII normalizer
SEP, KEEP, DIGIT = 0, 1, 2
SPACE = np.uint8(32)
ZERO = np.uint8(48)


@njit(cache=True)
def token_end(data, i, end, space):
    """The end of the token that starts at byte ``i``: the next whitespace character."""
    while i < end:
        c = data[i]
        if c < 0x80:
            if space[c]:
                return i
        elif unicode_space_len(data, i, end):
            return i
        i += 1
    return end


def wide_tokens(data: np.ndarray, offsets: np.ndarray, space: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(start, stop)`` byte spans of the whitespace-delimited tokens that hold a non-ASCII
    character (the rest are left to :func:`normalize`). ``space[b]`` is 1 for the ASCII
    whitespace bytes. The non-ASCII bytes (a few percent of web text) are found by numpy's
    vectorized compare; only they are visited by the compiled loop (measured 1.3-1.9x faster
    than one byte loop over the whole buffer)."""
    if len(offsets) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])  # a sliced array's bytes are part of a larger buffer
    return _wide_from_high(data, offsets, space, np.flatnonzero(data[lo:hi] >= 0x80) + lo)


@njit(cache=True)
def _wide_from_high(data, offsets, space, high):
    start = np.empty(len(high), np.int64)
    stop = np.empty(len(high), np.int64)
    count = 0
    d = 0
    ndocs = len(offsets) - 1
    bound = np.int64(0)  # every byte before it is settled; from it up to the next high byte all are ASCII
    for q in range(len(high)):
        i = high[q]
        if i < bound:  # inside a token already taken
            continue
        while d < ndocs and offsets[d + 1] <= i:
            d += 1
        begin, end = offsets[d], offsets[d + 1]
        if bound < begin:
            bound = begin
        w = unicode_space_len(data, i, end)
        if w:
            bound = i + w
            continue
        tok = i  # back to the whitespace before it: only ASCII bytes lie between bound and i
        while tok > bound and not space[data[tok - 1]]:
            tok -= 1
        j = token_end(data, i + 1, end, space)
        start[count], stop[count] = tok, j
        count += 1
        bound = j
    return start[:count].copy(), stop[:count].copy()


@njit(cache=True, inline="always")
def skip_number(data, i, end, classes):
    """Past the number starting at ``i``: digits, then once more digits after one '.' or ','
    (datatrove's number pattern, which normalization turns into a single "0")."""
    i += 1
    while i < end and classes[data[i]] == DIGIT:
        i += 1
    if i + 1 < end and (data[i] == 46 or data[i] == 44) and classes[data[i + 1]] == DIGIT:
        i += 2
        while i < end and classes[data[i]] == DIGIT:
            i += 1
    return i


@njit(cache=True)
def normalize(data, offsets, space, wide_start, wide_stop, wide_index, rep_data, rep_offsets, classes, lower,
              numbers, capacity):
    """The normalized text of every value: its tokens' words joined by single spaces.

    ASCII tokens are normalized here, byte by byte: ``classes`` maps a byte to SEP (ends a
    word), KEEP (``lower[b]`` is written) or DIGIT; with ``numbers`` a digit run with at most
    one ``.``/``,``-separated digit run after it becomes one ``0`` (datatrove's number rule).
    The ``k``-th token with a non-ASCII byte (``wide_start/stop[k]``, from :func:`wide_tokens`)
    takes the replacement ``rep[wide_index[k]]`` (already normalized, words joined by single
    spaces), computed outside for the distinct ones. ``capacity`` bounds the output's bytes."""
    n = len(offsets) - 1
    out = np.empty(capacity, np.uint8)
    out_offsets = np.zeros(n + 1, np.int64)
    pos = 0
    wk = 0
    next_wide = wide_start[0] if len(wide_start) else -1
    for d in range(n):
        doc_start = pos
        i, end = offsets[d], offsets[d + 1]
        in_word = False
        while i < end:
            if i == next_wide:
                r = wide_index[wk]
                lo, hi = rep_offsets[r], rep_offsets[r + 1]
                if hi > lo:
                    if pos > doc_start:
                        out[pos] = SPACE
                        pos += 1
                    out[pos:pos + hi - lo] = rep_data[lo:hi]
                    pos += hi - lo
                i = wide_stop[wk]
                wk += 1
                next_wide = wide_start[wk] if wk < len(wide_start) else -1
                in_word = False
                continue
            c = data[i]
            cls = classes[c]  # SEP for every byte >= 0x80
            if cls == KEEP and in_word:  # the hot path: the rest of a word
                out[pos] = lower[c]
                pos += 1
                i += 1
                continue
            if cls == SEP:  # whitespace (ASCII or not: outside a wide token) and punctuation
                i += unicode_space_len(data, i, end) if c >= 0x80 else 1
                in_word = False
                continue
            if not in_word:
                if pos > doc_start:
                    out[pos] = SPACE
                    pos += 1
                in_word = True
            if cls == DIGIT and numbers:
                i = skip_number(data, i, end, classes)
                out[pos] = ZERO
            else:
                out[pos] = lower[c]
                i += 1
            pos += 1
        out_offsets[d + 1] = pos
    return out[:pos], out_offsets


@njit(cache=True, inline="always")
def _fmix32(h):
    h = h ^ (h >> np.uint32(16))
    h = np.uint32(h * np.uint32(0x85EBCA6B))
    h = h ^ (h >> np.uint32(13))
    h = np.uint32(h * np.uint32(0xC2B2AE35))
    return h ^ (h >> np.uint32(16))


@njit(cache=True, inline="always")
def _shingle32(hashes, first, n):
    """The uint32 hash of the ``n`` token hashes from ``first`` on."""
    acc = hashes[first]
    for j in range(first + 1, first + n):
        acc = ((acc << _S5) | (acc >> _S59)) ^ (hashes[j] * _MIX)
    return np.uint32(fmix64(acc) >> _S32)


@njit(cache=True, inline="always")
def _absorb(sig, h32, a, b):
    m = _fmix32(h32)
    for p in range(len(sig)):
        # an unconditional store: LLVM vectorizes the loop (12% less CPU than `if v < sig[p]`)
        sig[p] = min(sig[p], np.uint32(a[p] * m + b[p]))


@njit(cache=True, inline="always")
def _absorb_all(sig, hashes, count, ngram, a, b):
    """Every word ``ngram``-gram of the ``count`` word hashes into ``sig`` (fewer words: one
    shingle of all of them)."""
    if 0 < count < ngram:
        _absorb(sig, _shingle32(hashes, 0, count), a, b)
    for first in range(count - ngram + 1):
        _absorb(sig, _shingle32(hashes, first, ngram), a, b)


@njit(cache=True)
def signatures(data, offsets, ngram, chars, a, b):
    """MinHash signatures of normalized texts (tokens separated by single spaces; with
    ``chars`` every UTF-8 character is a token). A token's hash is FNV-1a over its bytes,
    then the splitmix64 finalizer. A value with fewer than ``ngram`` tokens is one shingle of
    all of them; an empty value keeps the all-0xFFFFFFFF signature."""
    n = len(offsets) - 1
    sigs = np.full((n, len(a)), _MAX32, np.uint32)
    hashes = np.empty(1024, np.uint64)
    for d in range(n):
        i, end = offsets[d], offsets[d + 1]
        if end - i + 1 > len(hashes):  # a value has at most one token per byte
            hashes = np.empty(2 * (end - i + 1), np.uint64)
        count = 0
        h = _FNV_OFFSET
        while i < end:
            c = data[i]
            if chars:
                h = (h ^ np.uint64(c)) * _FNV_PRIME
                if i + 1 == end or (data[i + 1] & 0xC0) != 0x80:  # the character's last byte
                    hashes[count] = fmix64(h)
                    count += 1
                    h = _FNV_OFFSET
            elif c == 32:
                hashes[count] = fmix64(h)
                count += 1
                h = _FNV_OFFSET
            else:
                h = (h ^ np.uint64(c)) * _FNV_PRIME
            i += 1
        if not chars and end > offsets[d]:
            hashes[count] = fmix64(h)
            count += 1
        _absorb_all(sigs[d], hashes, count, ngram, a, b)
    return sigs


@njit(cache=True)
def raw_word_signatures(data, offsets, wide_start, wide_stop, wide_index, rep_data, rep_offsets, classes, lower,
                        numbers, ngram, a, b):
    """:func:`signatures` of word shingles of the texts :func:`normalize` would write (same
    arguments), without writing them: each normalized word is hashed as it is read from the
    raw UTF-8 (21% less CPU than normalizing and then hashing, on the 1M benchmark's shards).
    Same signatures, byte for byte (tests/test_minhash.py)."""
    n = len(offsets) - 1
    sigs = np.full((n, len(a)), _MAX32, np.uint32)
    hashes = np.empty(1024, np.uint64)
    wk = 0
    next_wide = wide_start[0] if len(wide_start) else -1
    for d in range(n):
        i, end = offsets[d], offsets[d + 1]
        # a word needs a byte, a wide token's replacement at most its bytes plus one
        need = 2 * (end - i) + 2
        if need > len(hashes):
            hashes = np.empty(2 * need, np.uint64)
        count = 0
        h = _FNV_OFFSET
        in_word = False
        any_word = False  # where normalize would write a space before the next word
        while i < end:
            if i == next_wide:
                r = wide_index[wk]
                lo, hi = rep_offsets[r], rep_offsets[r + 1]
                if hi > lo:
                    if any_word:
                        hashes[count] = fmix64(h)
                        count += 1
                        h = _FNV_OFFSET
                    for q in range(lo, hi):  # already normalized: words joined by single spaces
                        c = rep_data[q]
                        if c == 32:
                            hashes[count] = fmix64(h)
                            count += 1
                            h = _FNV_OFFSET
                        else:
                            h = (h ^ np.uint64(c)) * _FNV_PRIME
                    any_word = True
                i = wide_stop[wk]
                wk += 1
                next_wide = wide_start[wk] if wk < len(wide_start) else -1
                in_word = False
                continue
            c = data[i]
            cls = classes[c]
            if cls == KEEP and in_word:
                h = (h ^ np.uint64(lower[c])) * _FNV_PRIME
                i += 1
                continue
            if cls == SEP:
                i += unicode_space_len(data, i, end) if c >= 0x80 else 1
                in_word = False
                continue
            if not in_word:
                if any_word:
                    hashes[count] = fmix64(h)
                    count += 1
                    h = _FNV_OFFSET
                in_word = True
                any_word = True
            if cls == DIGIT and numbers:
                i = skip_number(data, i, end, classes)
                h = (h ^ np.uint64(ZERO)) * _FNV_PRIME
            else:
                h = (h ^ np.uint64(lower[c])) * _FNV_PRIME
                i += 1
        if any_word:
            hashes[count] = fmix64(h)
            count += 1
        _absorb_all(sigs[d], hashes, count, ngram, a, b)
    return sigs


@njit(cache=True)
def signatures_of_hashes(hv, offsets, a, b):
    """MinHash signatures from precomputed uint32 shingle hashes (``offsets`` per value)."""
    n = len(offsets) - 1
    sigs = np.full((n, len(a)), _MAX32, np.uint32)
    for d in range(n):
        sig = sigs[d]
        for s in range(offsets[d], offsets[d + 1]):
            _absorb(sig, hv[s], a, b)
    return sigs


@njit(cache=True)
def band_keys(sigs, bands, rows):
    """``(n, bands)`` uint64 keys: a band's key mixes its index and its ``rows`` values, the
    same combine and finalizer as the shingle hash."""
    keys = np.empty((len(sigs), bands), np.uint64)
    for d in range(len(sigs)):
        for band in range(bands):
            acc = np.uint64(band) * _K1
            for r in range(rows):
                acc = ((acc << _S5) | (acc >> _S59)) ^ ((np.uint64(sigs[d, band * rows + r]) + np.uint64(1)) * _MIX)
            keys[d, band] = fmix64(acc)
    return keys

