"""Compiled segmentation for token counting (numba): cut texts where no token of the
tokenizer can cross, and hash the pieces, so that each distinct piece is tokenized once."""

from __future__ import annotations

import numpy as np
from numba import njit

from tasks.kernels import fmix64

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True, inline="always")
def _cut(data, i, first, prev, glue):
    """Whether a piece ends before byte ``i`` (``first``: the text's first byte)."""
    c = data[i]
    if prev == 10:
        return c != 10 and i > first
    if c == 10:
        return True
    return c == 32 and prev != 32 and glue[prev] == 0


@njit(cache=True)
def segments(data, offsets, glue):
    """Pieces of every text: a cut before each space whose previous byte is not a space, a
    newline or a byte with ``glue[b]`` set, and before and after each run of newlines.
    Returns (hash, start, stop) per piece (byte positions; no empty pieces) and the int64
    offsets of each text's pieces."""
    docs = len(offsets) - 1
    doc_off = np.zeros(docs + 1, np.int64)
    for d in range(docs):  # pass 1: how many pieces
        first, end = offsets[d], offsets[d + 1]
        k = 1 if end > first else 0
        prev = np.uint8(10)
        for i in range(first, end):
            if _cut(data, i, first, prev, glue):
                k += 1
            prev = data[i]
        doc_off[d + 1] = doc_off[d] + k
    total = doc_off[docs]
    h_out = np.empty(total, np.uint64)
    s_out = np.empty(total, np.int64)
    e_out = np.empty(total, np.int64)
    for d in range(docs):  # pass 2: the pieces
        first, end = offsets[d], offsets[d + 1]
        if end == first:
            continue
        pos = doc_off[d]
        start = first
        h = _FNV_OFFSET
        prev = np.uint8(10)
        for i in range(first, end):
            if _cut(data, i, first, prev, glue):
                h_out[pos] = fmix64(h ^ np.uint64(i - start))
                s_out[pos] = start
                e_out[pos] = i
                pos += 1
                start = i
                h = _FNV_OFFSET
            c = data[i]
            h = (h ^ np.uint64(c)) * _FNV_PRIME
            prev = c
        h_out[pos] = fmix64(h ^ np.uint64(end - start))
        s_out[pos] = start
        e_out[pos] = end
    return h_out, s_out, e_out, doc_off


@njit(cache=True, inline="always")
def _slot_key(h):
    return h if h != 0 else np.uint64(1)  # 0 marks an empty slot


@njit(cache=True)
def table_get(keys, vals, hashes):
    """The stored count of every hash, -1 where it is not in the open-addressing table."""
    mask = np.uint64(len(keys) - 1)
    out = np.empty(len(hashes), np.int64)
    for i in range(len(hashes)):
        k = _slot_key(hashes[i])
        j = (k >> np.uint64(20)) & mask
        while True:
            kk = keys[j]
            if kk == 0:
                out[i] = -1
                break
            if kk == k:
                out[i] = vals[j]
                break
            j = (j + np.uint64(1)) & mask
    return out


@njit(cache=True)
def table_put(keys, vals, hashes, counts):
    """Store ``counts`` under ``hashes`` (the table must have room); the number added."""
    mask = np.uint64(len(keys) - 1)
    added = 0
    for i in range(len(hashes)):
        k = _slot_key(hashes[i])
        j = (k >> np.uint64(20)) & mask
        while True:
            kk = keys[j]
            if kk == 0:
                keys[j] = k
                vals[j] = counts[i]
                added += 1
                break
            if kk == k:
                break
            j = (j + np.uint64(1)) & mask
    return added


@njit(cache=True, inline="always")
def _get(keys, vals, h):
    mask = np.uint64(len(keys) - 1)
    k = _slot_key(h)
    j = (k >> np.uint64(20)) & mask
    while True:
        kk = keys[j]
        if kk == 0:
            return -1
        if kk == k:
            return vals[j]
        j = (j + np.uint64(1)) & mask


@njit(cache=True)
def known_counts(data, offsets, glue, keys, vals):
    """:func:`segments` and :func:`table_get` without writing every piece: per text the summed
    counts of its pieces found in the table, and the pieces that are not (hash, start, stop,
    text), for the caller to tokenize and add. Same cuts and hashes. The texts holding a
    missing piece are walked a second time to list them (growing arrays inside the one walk
    made it 10x slower)."""
    docs = len(offsets) - 1
    out = np.zeros(docs, np.int64)
    missing = np.zeros(docs, np.int64)
    for d in range(docs):
        first, end = offsets[d], offsets[d + 1]
        if end == first:
            continue
        start = first
        h = _FNV_OFFSET
        prev = np.uint8(10)
        total = 0
        miss = 0
        for i in range(first, end):
            if _cut(data, i, first, prev, glue):
                v = _get(keys, vals, fmix64(h ^ np.uint64(i - start)))
                if v >= 0:
                    total += v
                else:
                    miss += 1
                start = i
                h = _FNV_OFFSET
            c = data[i]
            h = (h ^ np.uint64(c)) * _FNV_PRIME
            prev = c
        v = _get(keys, vals, fmix64(h ^ np.uint64(end - start)))
        if v >= 0:
            total += v
        else:
            miss += 1
        out[d] = total
        missing[d] = miss
    nm = missing.sum()
    m_hash = np.empty(nm, np.uint64)
    m_start = np.empty(nm, np.int64)
    m_stop = np.empty(nm, np.int64)
    m_doc = np.empty(nm, np.int64)
    k = 0
    for d in range(docs):
        if missing[d] == 0:
            continue
        first, end = offsets[d], offsets[d + 1]
        start = first
        h = _FNV_OFFSET
        prev = np.uint8(10)
        for i in range(first, end + 1):
            if i == end or _cut(data, i, first, prev, glue):
                ph = fmix64(h ^ np.uint64(i - start))
                if _get(keys, vals, ph) < 0:
                    m_hash[k], m_start[k], m_stop[k], m_doc[k] = ph, start, i, d
                    k += 1
                if i == end:
                    break
                start = i
                h = _FNV_OFFSET
            c = data[i]
            h = (h ^ np.uint64(c)) * _FNV_PRIME
            prev = c
    return out, m_hash, m_start, m_stop, m_doc
