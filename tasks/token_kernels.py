"""Compiled token counting (numba): cut texts where no token of the tokenizer can cross and
key the pieces, so that each distinct piece is counted once (:func:`count_texts`), and count
the pieces never seen with the converted tokenizer's own rules (:func:`piece_counts`)."""

from __future__ import annotations

import numpy as np
from numba import njit

from tasks.kernels import ascii_space, fmix64, unicode_space_len

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_LONG = np.uint64(1) << np.uint64(63)  # set in the key of every piece of 8 bytes or more


def cut_classes(glue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The byte classes (0 other, 1 ``glue``, 2 space, 3 newline) and the 4x4 table of whether
    a piece ends between a byte of class ``prev`` and one of class ``c`` (``[prev * 4 + c]``):
    before a run of newlines and after it; before a space that follows an ``other`` byte. A
    table instead of branches, since a cut every six bytes or so is a branch no predictor gets."""
    cls = np.zeros(256, np.uint8)
    cls[np.asarray(glue, bool)] = 1
    cls[32], cls[10] = 2, 3
    trans = np.zeros(16, np.int64)
    for p in range(4):
        for c in range(4):
            trans[p * 4 + c] = (c != 3) if p == 3 else (c == 3 or (c == 2 and p == 0))
    return cls, trans


_SPECIAL = (0xC2, 0xE1, 0xE2, 0xE3, 0x80, 0x81, 0x85, 0x9A, 0xA0)  # the Unicode spaces' first two bytes
_SPACE_PAIRS = {(0xC2, 0x85), (0xC2, 0xA0), (0xE1, 0x9A), (0xE2, 0x80), (0xE2, 0x81), (0xE3, 0x80)}


def word_classes(glue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The byte classes and the 16x16 table (``[prev * 16 + c]``) of a walk that counts the
    whitespace words (as ``tasks.kernels.count_words``: ``len(text.split())``) in the same
    pass as the cuts: bit 0 a piece ends between the two bytes (:func:`cut_classes`' rule),
    bit 1 a word starts at the second (a blank byte, then another), bit 2 the two bytes may
    start a Unicode space (checked then by ``unicode_space_len``: rare). Classes: 0 other,
    1 ``glue``, 2 space, 3 newline, 4 other ASCII whitespace, 5-13 the bytes of ``_SPECIAL``
    (all "other" for the cuts). Empty arrays when a glue byte is one of those (no walk then
    counts words: the caller counts them apart)."""
    glue = np.asarray(glue, bool)
    space = ascii_space().astype(bool)
    if glue[space].any() or glue[list(_SPECIAL)].any():
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    cls = np.zeros(256, np.uint8)
    cls[glue] = 1
    cls[space] = 4
    cls[32], cls[10] = 2, 3
    for j, b in enumerate(_SPECIAL):
        cls[b] = 5 + j
    cut = [0, 1, 2, 3] + [0] * 12  # the class each has for the cut rule
    blank = [0, 0, 1, 1, 1] + [0] * 11
    _, cut_trans = cut_classes(glue)
    trans = np.zeros(256, np.int64)
    for p in range(16):
        for c in range(16):
            pair = 5 <= p < 5 + len(_SPECIAL) and 5 <= c < 5 + len(_SPECIAL) and (
                _SPECIAL[p - 5], _SPECIAL[c - 5]) in _SPACE_PAIRS
            trans[p * 16 + c] = cut_trans[cut[p] * 4 + cut[c]] | (int(blank[p] and not blank[c]) << 1) | (int(pair) << 2)
    return cls, trans


def words_of(data: np.ndarray) -> np.ndarray:
    """``data``'s whole 8-byte words (a view; ``data`` must start 8-byte aligned, as Arrow's
    buffers do), for :func:`piece_key`'s word loads."""
    return data[: len(data) // 8 * 8].view(np.uint64)


@njit(cache=True, inline="always")
def _load(words, data, p, n):
    """The ``n`` (1-8) bytes from ``data[p]`` as a little-endian word: two aligned loads
    spliced, or byte by byte within the last word of the buffer."""
    q = p >> 3
    if q + 1 < len(words):
        r = np.uint64(p & 7) * np.uint64(8)
        w = (words[q] >> r) | ((words[q + 1] << (np.uint64(63) - r)) << np.uint64(1))  # r = 0: no high part
        return w & (_ONES >> (np.uint64(64) - np.uint64(n) * np.uint64(8)))
    w = np.uint64(0)
    for k in range(n):
        w |= np.uint64(data[p + k]) << (np.uint64(k) * np.uint64(8))
    return w


@njit(cache=True, inline="always")
def piece_key(words, data, s, e):
    """The table key of the piece ``data[s:e]`` (never 0): a piece under 8 bytes (about three
    in four) is its own key, its bytes and its length, so two of them can never collide;
    a longer one is a 63-bit hash of its 8-byte words (bit 63 set, apart from the short ones)."""
    n = e - s
    if n < 8:
        return _load(words, data, s, n) | (np.uint64(n) << np.uint64(56))
    h = _GOLD ^ np.uint64(n)
    p = s
    while e - p > 8:
        h = fmix64(h ^ _load(words, data, p, 8))
        p += 8
    return fmix64(h ^ _load(words, data, p, e - p)) | _LONG


@njit(cache=True, inline="always")
def _slot(key, shift):
    return (key * _GOLD) >> shift  # multiplicative hashing: the short keys' high bits are their length


@njit(cache=True)
def table_put(table, keys, vals):
    """Store ``vals`` under ``keys`` in the open-addressing ``table`` (rows of key and value,
    side by side so that a lookup touches one cache line; a power of two of rows, with room);
    the number added."""
    mask = np.uint64(len(table) - 1)
    shift = np.uint64(64 - _log2(len(table)))
    added = 0
    for i in range(len(keys)):
        k = keys[i]
        j = _slot(k, shift)
        while table[j, 0] != 0 and table[j, 0] != k:
            j = (j + np.uint64(1)) & mask
        if table[j, 0] == 0:
            table[j, 0] = k
            table[j, 1] = np.uint64(vals[i])
            added += 1
    return added


@njit(cache=True, inline="always")
def _log2(n):
    b = 0
    while (1 << b) < n:
        b += 1
    return b


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


NEW = np.uint64(1 << 30)  # marks a count learned in this call of count_texts (to be saved)


@njit(cache=True)
def _words(data, i, end, wcls):
    """Whitespace words of ``data[i:end]`` as ``tasks.kernels.count_words`` counts them (for the
    rare text that holds a Unicode space; ``wcls``: :func:`word_classes`)."""
    words, in_word = 0, False
    while i < end:
        c = data[i]
        if c < 0x80:
            w = wcls[c]
            if w == 2 or w == 3 or w == 4:
                in_word = False
            elif not in_word:
                words += 1
                in_word = True
            i += 1
            continue
        w = unicode_space_len(data, i, end)
        if w:
            in_word = False
            i += w
        else:
            if not in_word:
                words += 1
                in_word = True
            i += 1
    return words


@njit(cache=True)
def count_texts(data, words, offsets, d0, out, wcls, wtrans, wout, cls, trans, table, stored, learn, m_key, m_start, m_stop,
                m_doc, buf, sym, nxt, prv, heap, aslots, ablob, aoffs, afull, afirst, gblob, goffs, vslots, vblob,
                voffs, single, mtable):
    """The one walk over the texts' pieces, from text ``d0`` on: tokens per text into ``out``,
    each piece's count from ``table`` (:func:`table_put`'s layout, keys :func:`piece_key`).
    With a non-empty ``wout``, the texts' whitespace words too (``len(text.split())``, as
    ``tasks.kernels.count_words``; ``wcls``, ``wtrans``: :func:`word_classes`), counted in the
    same pass as the cuts from a table of byte pairs, so that a step that needs both walks its
    texts' bytes once (measured on the standard corpus: 0.19 CPU-seconds for the cuts and the
    words, against 0.14 for the cuts and 0.27 for ``count_words``).
    A piece not there is, with ``learn``, counted by :func:`_tokens` and stored at once with
    the ``NEW`` bit (the caller saves and clears those); without it, listed in ``m_*`` (key,
    start, stop, text) and left out of ``out``, for the caller to count. While learning, the
    slot of each piece stored is written to ``m_start`` instead (and ``listed`` counts them),
    so that the caller saves the new pieces without scanning the table for ``NEW`` bits (a
    scan of the whole table per exchange was most of a first run's 0.16 CPU-seconds of saving).

    Each text is walked three times, all over its few kB in L1: the cuts (a branch-free table
    walk), the pieces' keys, the lookups (independent, so that their cache misses overlap).
    Returns (next text, stored, need, listed): need 0 when every text is done, else the walk
    stopped before text ``next`` (whose listed pieces are dropped) because the table is half
    full (need -1), the list (or, learning, the list of stored slots) is full (-2) or a piece is longer than the scratch arrays allow
    (need: its length); the caller makes room and calls again. (Growing the arrays here made
    every lookup of the walk 30 times slower.)"""
    docs = len(offsets) - 1
    cap = (len(heap) - 3) // 9
    mask = np.uint64(len(table) - 1)
    shift = np.uint64(64 - _log2(len(table)))
    longest = 0
    for d in range(d0, docs):
        longest = max(longest, offsets[d + 1] - offsets[d])
    cuts = np.empty(longest + 1, np.int64)
    keys = np.empty(longest, np.uint64)
    listed = 0
    with_words = len(wout) > 0
    for d in range(d0, docs):
        first, end = offsets[d], offsets[d + 1]
        if end == first:
            if with_words:
                wout[d] = 0
            continue
        k = 1
        cuts[0] = first
        pc = np.int64(cls[data[first]])
        if with_words:
            pc = np.int64(wcls[data[first]])
            nw = (wtrans[2 * 16 + pc] >> 1) & 1  # as if after a space
            spaced = False
            for i in range(first + 1, end):
                c = np.int64(wcls[data[i]])
                cuts[k] = i
                t = wtrans[pc * 16 + c]
                k += t & 1
                nw += (t >> 1) & 1
                if t & 4 and unicode_space_len(data, i - 1, end):
                    spaced = True
                pc = c
            wout[d] = _words(data, first, end, wcls) if spaced else nw
        else:
            for i in range(first + 1, end):
                c = np.int64(cls[data[i]])
                cuts[k] = i  # overwritten unless a piece ends here
                k += trans[pc * 4 + c]
                pc = c
        cuts[k] = end
        for j in range(k):
            keys[j] = piece_key(words, data, cuts[j], cuts[j + 1])
        total = np.uint64(0)
        before = listed
        for j in range(k):
            key = keys[j]
            s = _slot(key, shift)
            while table[s, 0] != key and table[s, 0] != 0:
                s = (s + np.uint64(1)) & mask
            if table[s, 0] == key:
                total += table[s, 1] & ~NEW
            elif learn:
                a, b = cuts[j], cuts[j + 1]
                if b - a > cap:
                    return d, stored, b - a, listed
                if 2 * (stored + 1) > len(table):
                    return d, stored, -1, listed
                if listed == len(m_start):
                    return d, stored, -2, listed
                v = _tokens(data, a, b, buf, sym, nxt, prv, heap, aslots, ablob, aoffs, afull, afirst, gblob, goffs,
                            vslots, vblob, voffs, single, mtable)
                total += np.uint64(v)
                table[s, 0] = key
                table[s, 1] = np.uint64(v) | NEW
                stored += 1
                m_start[listed] = np.int64(s)
                listed += 1
            else:
                if listed == len(m_key):
                    return d, stored, -2, before
                m_key[listed], m_start[listed], m_stop[listed], m_doc[listed] = key, cuts[j], cuts[j + 1], d
                listed += 1
        out[d] = np.int64(total)
    return docs, stored, 0, listed


_NO_MODEL = None


def no_model() -> tuple:
    """Empty arrays of the types of :func:`count_texts`' scratch and tokenizer arguments, for a
    walk that does not learn (one compiled version for both uses)."""
    global _NO_MODEL
    if _NO_MODEL is None:
        u8, i32, i64 = np.zeros(1, np.uint8), np.zeros(1, np.int32), np.zeros(1, np.int64)
        _NO_MODEL = (u8, i32, i64, i64, np.zeros(12, np.int64), i32, u8, i64, u8, u8, u8, i64, i32, u8, i64, i32,
                     np.zeros((2, 2), np.uint64))
    return _NO_MODEL


def no_words() -> tuple:
    """:func:`count_texts`' word arguments for a walk that counts no words."""
    return np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)


def no_list() -> tuple:
    """Empty arrays of the types of :func:`count_texts`' list of missing pieces, for a walk
    that learns (it lists nothing)."""
    return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)


def segments(data: np.ndarray, offsets: np.ndarray, glue: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every piece of every text: (key, start, stop, text), the walk of :func:`count_texts`
    with nothing known (one walker for both, so the cuts and keys cannot drift apart)."""
    n = max(1, len(data))
    m = np.empty(n, np.uint64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    out = np.zeros(len(offsets) - 1, np.int64)
    data = aligned(data)
    _, _, _, listed = count_texts(data, words_of(data), offsets, 0, out, *no_words(), *cut_classes(glue),
                                  np.zeros((2, 2), np.uint64), 0, False, *m, *no_model())
    return tuple(a[:listed] for a in m)


def aligned(data: np.ndarray) -> np.ndarray:
    """``data`` itself when it starts 8-byte aligned (Arrow's buffers do), else a copy that does;
    read-only either way, so that the walk has one compiled version whatever the buffer's flags."""
    if data.ctypes.data % 8 == 0:
        out = data.view()
    else:
        out = np.empty(len(data) + 8, np.uint8)
        off = (-out.ctypes.data) % 8
        out = out[off:off + len(data)]
        out[:] = data
    out.flags.writeable = False
    return out
