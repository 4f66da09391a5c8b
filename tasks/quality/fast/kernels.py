"""Compiled n-gram statistics of datatrove's Gopher repetition filter over token ids.

``find_top_duplicate`` counts n-grams joined by ``" "``; tokens hold no whitespace, so two such
n-grams are equal exactly when their token ids are, and counting by ids is exact. The top entry
is ``Counter.most_common(1)``'s: the highest count, ties to the n-gram seen first.

``find_all_duplicate`` compares n-grams joined by ``""``, where different token sequences can
make the same string ("ab"+"c" and "a"+"bc"). The set is keyed by a polynomial hash of the
joined characters (a function of the string alone, composed from per-token hashes); when two
entries share hash and length, equal ids prove the strings equal; different ids (another
tokenization of the same string, or a hash collision) make the result ambiguous, and the caller
falls back to datatrove for that document.
"""

from __future__ import annotations

import numpy as np
from numba import njit

HASH_BASE = np.uint64(0x100000001B3)  # odd, so that multiplying by its powers never loses bits
HASH_BASE_INV = np.uint64(pow(int(HASH_BASE), -1, 1 << 64))  # exists because the base is odd


@njit(cache=True, nogil=True)
def token_hashes(points: np.ndarray, lens: np.ndarray, out_hash: np.ndarray, out_pow: np.ndarray,
                 out_pow_inv: np.ndarray) -> None:
    """Per token (``lens[k]`` code points of ``points`` each, in order): the polynomial hash of
    its characters (``h = h * HASH_BASE + ord(ch)`` mod 2**64), ``HASH_BASE`` and
    ``HASH_BASE_INV`` to its length."""
    pos = 0
    for k in range(len(lens)):
        h = np.uint64(0)
        p = np.uint64(1)
        q = np.uint64(1)
        for j in range(pos, pos + lens[k]):
            h = h * HASH_BASE + np.uint64(points[j])
            p = p * HASH_BASE
            q = q * HASH_BASE_INV
        pos += lens[k]
        out_hash[k] = h
        out_pow[k] = p
        out_pow_inv[k] = q


LEN_MASK = np.uint64(0xFFFFFFFF)
NON_SYMBOL = np.uint64(1 << 32)
ALPHA = np.uint64(1 << 33)


def pack_props(tok_len: np.ndarray, tok_hash: np.ndarray, tok_pow: np.ndarray, tok_pow_inv: np.ndarray,
               non_symbol: np.ndarray | None = None, alpha: np.ndarray | None = None) -> np.ndarray:
    """Per token, side by side (one cache line holds two tokens' rows): its hash, ``HASH_BASE``
    and ``HASH_BASE_INV`` to its length, and its length with the ``NON_SYMBOL`` and ``ALPHA``
    flags. The kernels read a document's tokens at random places of a large vocabulary; one row
    per token costs one miss where separate arrays cost one each."""
    if len(tok_len) and tok_len.max() > LEN_MASK:
        raise ValueError("fast quality engine: a token longer than 2**32 - 1 characters")
    out = np.empty((len(tok_len), 4), np.uint64)
    out[:, 0] = tok_hash
    out[:, 1] = tok_pow
    out[:, 2] = tok_pow_inv
    last = tok_len.astype(np.uint64)
    if non_symbol is not None:
        last |= np.where(non_symbol, NON_SYMBOL, np.uint64(0))
    if alpha is not None:
        last |= np.where(alpha, ALPHA, np.uint64(0))
    out[:, 3] = last
    return out


@njit(cache=True, nogil=True)
def sentence_events(ids: np.ndarray, in_punct_chars: np.ndarray, is_punct: np.ndarray) -> int:
    """spaCy's sentencizer (``Sentencizer.predict``) over tokens: the number of new sentences
    after the first."""
    seen = False
    events = 0
    for t in ids:
        p = in_punct_chars[t]
        if seen and not is_punct[t] and not p:
            events += 1
            seen = False
        elif p:
            seen = True
    return events


@njit(cache=True, nogil=True)
def repetition_stats(ids: np.ndarray, props: np.ndarray, top_ns: np.ndarray,
                     dup_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every n of ``top_n_grams`` and ``dup_n_grams`` in one call (``props``: ``pack_props``'s
    rows), the same results as
    datatrove's ``find_top_duplicate(get_n_grams(words, n))`` and ``find_all_duplicate(words, n)``
    for each n (a test compares them on generated token sequences).

    Faster because the per-token properties are gathered once into the document's own
    contiguous arrays (the vocabulary tables are large, so reading them once per n-gram position
    and per n missed the cache) and one hash table serves every n, cleared through the list of
    slots it used rather than allocated again."""
    w = len(ids)
    length = np.empty(w, np.int64)
    th = np.empty(w, np.uint64)
    tp = np.empty(w, np.uint64)
    tpi = np.empty(w, np.uint64)
    key = np.empty(w, np.uint64)
    for i in range(w):
        t = ids[i]
        length[i] = np.int64(props[t, 3] & LEN_MASK)
        th[i] = props[t, 0]
        tp[i] = props[t, 1]
        tpi[i] = props[t, 2]
        key[i] = np.uint64(t + 1)
    size = 16
    while size < 2 * w:
        size *= 2
    mask = size - 1
    keys = np.zeros(size, np.uint64)
    lens = np.zeros(size, np.int64)
    first = np.full(size, -1, np.int64)
    count = np.zeros(size, np.int64)
    used = np.empty(max(w, 1), np.int64)
    top = np.empty(len(top_ns), np.int64)
    dup = np.empty(len(dup_ns), np.int64)
    for k in range(len(top_ns)):
        n = top_ns[k]
        m = w - n + 1
        if m <= 0:
            top[k] = -1
            continue
        n_used = 0
        for i in range(m):
            h = np.uint64(n)
            for j in range(n):
                h = h * np.uint64(0x9E3779B97F4A7C15) + key[i + j]
            h ^= h >> np.uint64(33)  # a 64-bit mix, inline: a call per n-gram costs more than it
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
            slot = np.int64(h & np.uint64(mask))
            while True:
                p = first[slot]
                if p == -1:
                    keys[slot] = h
                    first[slot] = i
                    count[slot] = 1
                    used[n_used] = slot
                    n_used += 1
                    break
                if keys[slot] == h:
                    same = True
                    for j in range(n):
                        if key[p + j] != key[i + j]:
                            same = False
                            break
                    if same:
                        count[slot] += 1
                        break
                slot = (slot + 1) & mask
        # slots were used in order of first occurrence, so a strict ">" keeps ties to the
        # n-gram seen first, as Counter.most_common(1) does
        best_c = 0
        best_p = 0
        for u in range(n_used):
            s = used[u]
            if count[s] > best_c:
                best_c = count[s]
                best_p = first[s]
            first[s] = -1
        chars = n - 1
        for j in range(n):
            chars += length[best_p + j]
        top[k] = chars * best_c
    # prefix hashes: the n-gram from i to j (tokens) has hash P[j] - P[i] * B^(C[j] - C[i]),
    # the same value the per-n kernel folds token by token (mod 2**64, B invertible), in two
    # multiplications instead of n
    pre = np.zeros(w + 1, np.uint64)
    cum = np.zeros(w + 1, np.int64)
    bpow = np.ones(w + 1, np.uint64)  # B^C[k]
    binv = np.ones(w + 1, np.uint64)  # B^-C[k]
    for i in range(w):
        pre[i + 1] = pre[i] * tp[i] + th[i]
        cum[i + 1] = cum[i] + length[i]
        bpow[i + 1] = bpow[i] * tp[i]
        binv[i + 1] = binv[i] * tpi[i]
    for k in range(len(dup_ns)):
        n = dup_ns[k]
        m = w - n + 1
        if m <= 0:
            dup[k] = 0
            continue
        n_used = 0
        repeated = 0
        idx = 0
        while idx < m:
            h = pre[idx + n] - pre[idx] * (bpow[idx + n] * binv[idx])
            chars = cum[idx + n] - cum[idx]
            g = h ^ (h >> np.uint64(33))
            g *= np.uint64(0xFF51AFD7ED558CCD)
            g ^= g >> np.uint64(33)
            slot = np.int64(g & np.uint64(mask))
            found = False
            while True:
                p = first[slot]
                if p == -1:
                    break
                if keys[slot] == h and lens[slot] == chars:
                    for j in range(n):
                        if key[p + j] != key[idx + j]:
                            repeated = -1
                            break
                    found = True
                    break
                slot = (slot + 1) & mask
            if repeated < 0:
                break
            if found:
                repeated += chars
                idx += n
            else:
                keys[slot] = h
                lens[slot] = chars
                first[slot] = idx
                used[n_used] = slot
                n_used += 1
                idx += 1
        for u in range(n_used):
            first[used[u]] = -1
        dup[k] = repeated
    return top, dup


@njit(cache=True, nogil=True)
def word_stats(ids: np.ndarray, props: np.ndarray, stop_ids: np.ndarray) -> tuple[int, int, int, int]:
    """Gopher quality's word counts (``props``: ``pack_props``'s rows): non-symbol words, their
    characters, words with a letter, distinct stop words present."""
    n_non_symbol = 0
    chars = 0
    n_alpha = 0
    for t in ids:
        last = props[t, 3]
        if last & NON_SYMBOL:
            n_non_symbol += 1
            chars += np.int64(last & LEN_MASK)
        if last & ALPHA:
            n_alpha += 1
    present = 0
    for s in stop_ids:
        for t in ids:
            if t == s:
                present += 1
                break
    return n_non_symbol, chars, n_alpha, present
