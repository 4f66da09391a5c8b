"""Compiled token counting (numba): cut texts where no token of the tokenizer can cross and
hash the pieces, so that each distinct piece is counted once (:func:`known_counts`), and count
the pieces never seen with the converted tokenizer's own rules (:func:`piece_counts`)."""

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


@njit(cache=True, inline="always")
def _slot_key(h):
    return h if h != 0 else np.uint64(1)  # 0 marks an empty slot


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
    """The one walk over the texts' pieces: per text the summed counts of its pieces found in
    the open-addressing table (``keys``/``vals``), and the pieces that are not (hash, start,
    stop, text), for the caller to count and add. The texts holding a missing piece are walked
    a second time to list them (growing arrays inside the one walk made it 10x slower)."""
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


def segments(data: np.ndarray, offsets: np.ndarray, glue: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every piece of every text: (hash, start, stop, text), the walk of :func:`known_counts`
    with nothing known (one walker for both, so the cuts and hashes cannot drift apart)."""
    _, *pieces = known_counts(data, offsets, glue, np.zeros(1, np.uint64), np.zeros(1, np.int32))
    return tuple(pieces)


# --- the converted tokenizer itself, compiled -------------------------------------------------
# What HF tokenizers does for one piece of a converted SentencePiece tokenizer (gguf_to_hf's
# layout: spaces replaced by "▁", added tokens matched leftmost-longest, the Split pre-tokenizer
# "▁*(?:G|[^▁])+|▁+" with G the pieces that cross a "▁", BPE with ignore_merges and byte
# fallback), re-done over arrays so that a piece never seen costs about a microsecond instead of
# a trip through the HF tokenizer (about 10 µs a piece, and a CPU-second to load it per process).

@njit(cache=True, inline="always")
def _bytes_hash(buf, s, e):
    h = _FNV_OFFSET
    for i in range(s, e):
        h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
    return fmix64(h ^ np.uint64(e - s))


@njit(cache=True)
def string_table(blob, offs, size):
    """An open-addressing table (``size`` slots, a power of two) of the strings
    ``blob[offs[i]:offs[i+1]]``: slot -> string number, -1 where empty. The first of equal
    strings wins."""
    slots = np.full(size, -1, np.int32)
    mask = np.uint64(size - 1)
    for t in range(len(offs) - 1):
        j = _bytes_hash(blob, offs[t], offs[t + 1]) & mask
        while slots[j] >= 0:
            if _same(blob, offs[slots[j]], offs[slots[j] + 1], blob, offs[t], offs[t + 1]):
                break
            j = (j + np.uint64(1)) & mask
        if slots[j] < 0:
            slots[j] = t
    return slots


@njit(cache=True, inline="always")
def _same(a, a0, a1, b, b0, b1):
    if a1 - a0 != b1 - b0:
        return False
    for k in range(a1 - a0):  # noqa: SIM110 (numba compiles no generator expressions)
        if a[a0 + k] != b[b0 + k]:
            return False
    return True


@njit(cache=True)
def _find(slots, blob, offs, buf, s, e, h):
    """String number of ``buf[s:e]`` (hash ``h``) in a :func:`string_table`, -1 if absent."""
    mask = np.uint64(len(slots) - 1)
    j = h & mask
    while True:
        t = slots[j]
        if t < 0:
            return -1
        if _same(blob, offs[t], offs[t + 1], buf, s, e):
            return t
        j = (j + np.uint64(1)) & mask


_PAIR = np.uint64(1) << np.uint64(63)  # set in every pair key, so that 0 marks an empty slot


@njit(cache=True)
def merge_table(left, right, merged, size):
    """An open-addressing table (``size`` slots, a power of two) of the merges: per slot the
    pair key and ``rank << 32 | merged token``, side by side so that a lookup touches one
    cache line (the table is 24 MB for Gemma's 513k merges; lookups are cache misses)."""
    table = np.zeros((size, 2), np.uint64)
    mask = np.uint64(size - 1)
    for r in range(len(left)):
        k = (np.uint64(left[r]) << np.uint64(32)) | np.uint64(right[r]) | _PAIR
        j = fmix64(k) & mask
        while table[j, 0] != 0 and table[j, 0] != k:
            j = (j + np.uint64(1)) & mask
        if table[j, 0] == 0:
            table[j, 0] = k
            table[j, 1] = (np.uint64(r) << np.uint64(32)) | np.uint64(merged[r])
    return table


@njit(cache=True, inline="always")
def _merge(mtable, a, b):
    """``rank << 32 | merged token`` of the pair (a, b), -1 if it does not merge."""
    if a < 0 or b < 0:
        return np.int64(-1)
    k = (np.uint64(a) << np.uint64(32)) | np.uint64(b) | _PAIR
    mask = np.uint64(len(mtable) - 1)
    j = fmix64(k) & mask
    while True:
        kk = mtable[j, 0]
        if kk == k:
            return np.int64(mtable[j, 1])
        if kk == 0:
            return np.int64(-1)
        j = (j + np.uint64(1)) & mask


@njit(cache=True, inline="always")
def _heap_push(heap, n, key):
    i = n
    heap[i] = key
    while i > 0:
        p = (i - 1) >> 1
        if heap[p] <= heap[i]:
            break
        heap[p], heap[i] = heap[i], heap[p]
        i = p
    return n + 1


@njit(cache=True, inline="always")
def _heap_pop(heap, n):
    top = heap[0]
    n -= 1
    heap[0] = heap[n]
    i = 0
    while True:
        lft = 2 * i + 1
        if lft >= n:
            break
        c = lft
        if lft + 1 < n and heap[lft + 1] < heap[lft]:
            c = lft + 1
        if heap[i] <= heap[c]:
            break
        heap[i], heap[c] = heap[c], heap[i]
        i = c
    return top, n


@njit(cache=True)
def _bpe(buf, s, e, vslots, vblob, voffs, single, mtable, sym, nxt, prv, heap):
    """Tokens of the BPE word ``buf[s:e]``: HF's merge order (lowest rank first, then leftmost),
    characters outside the vocabulary as one token per UTF-8 byte (``single``: the token of
    each one-byte character, -1 if none)."""
    if _find(vslots, vblob, voffs, buf, s, e, _bytes_hash(buf, s, e)) >= 0:
        return 1  # ignore_merges: a word that is a token is that token
    n = 0
    i = s
    while i < e:
        c = buf[i]
        w = 1 if c < 0xC0 else (2 if c < 0xE0 else (3 if c < 0xF0 else 4))
        w = min(w, e - i)
        t = single[c] if w == 1 else _find(vslots, vblob, voffs, buf, i, i + w, _bytes_hash(buf, i, i + w))
        if t >= 0:
            sym[n] = t
            n += 1
        else:
            for _ in range(w):  # byte fallback: these never merge
                sym[n] = -1
                n += 1
        i += w
    for k in range(n):
        nxt[k] = k + 1 if k + 1 < n else -1
        prv[k] = k - 1
    hn = 0
    for k in range(n - 1):
        m = _merge(mtable, sym[k], sym[k + 1])
        if m >= 0:
            hn = _heap_push(heap, hn, (m & np.int64(-4294967296)) | k)
    count = n
    while hn > 0:
        key, hn = _heap_pop(heap, hn)
        r = key >> np.int64(32)
        k = key & np.int64(0xFFFFFFFF)
        if sym[k] == -2 or nxt[k] < 0:
            continue  # merged into its left neighbour, or last
        q = nxt[k]
        m = _merge(mtable, sym[k], sym[q])
        if m < 0 or (m >> np.int64(32)) != r:
            continue  # the pair changed since it was queued
        sym[k] = m & np.int64(0xFFFFFFFF)
        sym[q] = -2
        nxt[k] = nxt[q]
        if nxt[q] >= 0:
            prv[nxt[q]] = k
        count -= 1
        if prv[k] >= 0:
            m2 = _merge(mtable, sym[prv[k]], sym[k])
            if m2 >= 0:
                hn = _heap_push(heap, hn, (m2 & np.int64(-4294967296)) | prv[k])
        if nxt[k] >= 0:
            m2 = _merge(mtable, sym[k], sym[nxt[k]])
            if m2 >= 0:
                hn = _heap_push(heap, hn, (m2 & np.int64(-4294967296)) | k)
    return count


@njit(cache=True)
def _glue_at(buf, i, e, gblob, goffs):
    """Length of the first crossing piece that starts at ``buf[i]`` (in their order), 0 if none."""
    for g in range(len(goffs) - 1):
        a, b = goffs[g], goffs[g + 1]
        if b - a <= e - i and _same(gblob, a, b, buf, i, i + b - a):
            return b - a
    return 0


@njit(cache=True)
def _pretokenized(buf, s, e, gblob, goffs, vslots, vblob, voffs, single, mtable, sym, nxt, prv, heap):
    """Tokens of ``buf[s:e]`` (no added token inside) after the Split pre-tokenizer
    ``▁*(?:G|[^▁])+|▁+`` (isolated: the text between matches is a word too)."""
    total = 0
    i = s
    gap = s  # start of text no match covered
    while i < e:
        j = i
        while j + 2 < e + 0 and buf[j] == 0xE2 and buf[j + 1] == 0x96 and buf[j + 2] == 0x81:
            j += 3
        k = j
        while k < e:
            g = _glue_at(buf, k, e, gblob, goffs)
            if g:
                k += g
            elif k + 2 < e and buf[k] == 0xE2 and buf[k + 1] == 0x96 and buf[k + 2] == 0x81:
                break
            else:
                c = buf[k]
                k += 1 if c < 0xC0 else (2 if c < 0xE0 else (3 if c < 0xF0 else 4))
        k = min(k, e)
        if k == j and j == i:  # no match here (cannot happen on valid UTF-8): a gap byte
            i += 1
            continue
        if gap < i:
            total += _bpe(buf, gap, i, vslots, vblob, voffs, single, mtable, sym, nxt, prv, heap)
        total += _bpe(buf, i, k, vslots, vblob, voffs, single, mtable, sym, nxt, prv, heap)
        i = k
        gap = k
    if gap < e:
        total += _bpe(buf, gap, e, vslots, vblob, voffs, single, mtable, sym, nxt, prv, heap)
    return total


@njit(cache=True)
def _tokens(data, s, e, buf, sym, nxt, prv, heap, aslots, ablob, aoffs, afull, afirst, gblob, goffs, vslots, vblob,
            voffs, single, mtable):
    """Tokens of the piece ``data[s:e]`` (scratch arrays of at least 3 (e - s) + 1 items,
    ``heap`` three times that)."""
    n = 0
    for i in range(s, e):
        c = data[i]
        if c == 32:
            buf[n], buf[n + 1], buf[n + 2] = 0xE2, 0x96, 0x81
            n += 3
        else:
            buf[n] = c
            n += 1
    total = 0
    seg = 0
    i = 0
    while i < n:
        # the longest added token starting here (leftmost-longest: the first such position
        # wins), walking the table of their prefixes while the text still is one
        best = 0
        h = _FNV_OFFSET
        for ln in range(1, (n - i + 1) if afirst[buf[i]] else 1):
            h = (h ^ np.uint64(buf[i + ln - 1])) * _FNV_PRIME
            t = _find(aslots, ablob, aoffs, buf, i, i + ln, fmix64(h ^ np.uint64(ln)))
            if t < 0:
                break
            if afull[t]:
                best = ln
        if best:
            if seg < i:
                total += _pretokenized(buf, seg, i, gblob, goffs, vslots, vblob, voffs, single, mtable, sym, nxt,
                                       prv, heap)
            total += 1
            i += best
            seg = i
        else:
            i += 1
    if seg < n:
        total += _pretokenized(buf, seg, n, gblob, goffs, vslots, vblob, voffs, single, mtable, sym, nxt, prv, heap)
    return total


@njit(cache=True)
def piece_counts(data, starts, stops, aslots, ablob, aoffs, afull, afirst, gblob, goffs, vslots, vblob, voffs, single,
                 mtable):
    """Tokens of every piece ``data[starts[p]:stops[p]]``, as the converted tokenizer counts the
    piece's text alone: spaces normalized to "▁", then added tokens matched leftmost-longest
    (their normalized text: ``ablob``/``aoffs`` hold every prefix of one, ``afull`` marks the
    whole ones, ``afirst`` their first bytes), the rest pre-tokenized and BPE-encoded."""
    longest = 0
    for p in range(len(starts)):
        longest = max(longest, stops[p] - starts[p])
    buf = np.empty(3 * longest + 1, np.uint8)
    sym = np.empty(3 * longest + 1, np.int32)
    nxt = np.empty(3 * longest + 1, np.int64)
    prv = np.empty(3 * longest + 1, np.int64)
    heap = np.empty(9 * longest + 3, np.int64)
    out = np.zeros(len(starts), np.int64)
    for p in range(len(starts)):
        out[p] = _tokens(data, starts[p], stops[p], buf, sym, nxt, prv, heap, aslots, ablob, aoffs, afull, afirst,
                         gblob, goffs, vslots, vblob, voffs, single, mtable)
    return out


NEW = np.int32(1 << 30)  # marks a count learned in this call of count_texts (to be saved)


@njit(cache=True)
def count_texts(data, offsets, d0, out, glue, keys, vals, stored, buf, sym, nxt, prv, heap, aslots, ablob, aoffs, afull, afirst,
                gblob, goffs, vslots, vblob, voffs, single, mtable):
    """Tokens per text (into ``out``) in one walk, from text ``d0`` on: each piece's count from
    the table (``keys``/``vals``, as :func:`known_counts`), or, for a piece never seen, from
    :func:`_tokens`, stored in the table at once with the ``NEW`` bit (the caller saves and
    clears those). Returns (next text, stored, need): need 0 when every text is done, else the
    walk stopped before text ``next`` because the table is half full (need -1) or a piece is
    longer than the scratch arrays allow (need: its length); the caller makes room and calls
    again. (Growing the arrays here made every lookup of the walk 30 times slower.)"""
    docs = len(offsets) - 1
    cap = (len(heap) - 3) // 9
    mask = np.uint64(len(keys) - 1)
    for d in range(d0, docs):
        first, end = offsets[d], offsets[d + 1]
        if end == first:
            continue
        start = first
        h = _FNV_OFFSET
        prev = np.uint8(10)
        total = 0
        for i in range(first, end + 1):
            if i == end or _cut(data, i, first, prev, glue):
                k = _slot_key(fmix64(h ^ np.uint64(i - start)))
                j = (k >> np.uint64(20)) & mask
                while keys[j] != 0 and keys[j] != k:
                    j = (j + np.uint64(1)) & mask
                if keys[j] == k:
                    total += vals[j] & ~NEW
                else:
                    if i - start > cap:
                        return d, stored, i - start
                    if 2 * (stored + 1) > len(keys):
                        return d, stored, -1
                    v = _tokens(data, start, i, buf, sym, nxt, prv, heap, aslots, ablob, aoffs, afull, afirst, gblob,
                                goffs, vslots, vblob, voffs, single, mtable)
                    total += v
                    keys[j] = k
                    vals[j] = np.int32(v) | NEW
                    stored += 1
                if i == end:
                    break
                start = i
                h = _FNV_OFFSET
            c = data[i]
            h = (h ^ np.uint64(c)) * _FNV_PRIME
            prev = c
        out[d] = total
    return docs, stored, 0
