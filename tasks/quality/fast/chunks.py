"""A document's whitespace chunks looked up in one compiled pass over its UTF-8 bytes.

``str.split()`` and a Python dictionary lookup per chunk cost about as much as everything else
the warm engine does. Here the chunks of the document's bytes (``surrogatepass``, so that every
Python string, lone surrogates included, has exactly one byte string) are cut at the code points
``str.isspace`` accepts, hashed and found in an open-addressing table over a byte arena, all in
numba; only chunks never seen before come back to Python to be tokenized and added.
"""

from __future__ import annotations

import re
import sys

import numpy as np
from numba import njit


def _space_points() -> np.ndarray:
    """Every non-ASCII code point ``str.isspace`` accepts, from Python itself: the regex engine's
    ``\\s`` on a str pattern is ``Py_UNICODE_ISSPACE`` too (a test compares the result with
    ``chr(c).isspace()`` over every code point), and one search over all code points decoded at
    once costs about a third of calling ``isspace`` 1.1 million times, paid by every worker."""
    every = np.arange(128, sys.maxunicode + 1, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    return np.array([m.start() + 128 for m in re.finditer(r"\s", every)], np.int64)


SPACE_POINTS = _space_points()
if SPACE_POINTS.max() >= 0x10000:  # _space_len reads 2- and 3-byte sequences only
    raise ImportError("tasks.quality.fast.chunks: this Python has whitespace beyond the BMP; unsupported")
_ASCII_SPACE = np.array([chr(c).isspace() for c in range(128)], np.bool_)


def encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8)


@njit(cache=True, nogil=True)
def _fnv(buf: np.ndarray, a: int, b: int) -> np.uint64:
    h = np.uint64(0xCBF29CE484222325)
    for i in range(a, b):
        h = (h ^ np.uint64(buf[i])) * np.uint64(0x100000001B3)
    h ^= h >> np.uint64(29)
    return h


@njit(cache=True, nogil=True)
def _wide_space_len(buf: np.ndarray, i: int, points: np.ndarray) -> int:
    """Byte length of the non-ASCII whitespace code point at ``i``, 0 when it is not one."""
    c = np.int64(buf[i])
    if c >= 0xF0 or c < 0xC0:
        return 0  # beyond the BMP (no whitespace there) or a continuation byte
    if c >= 0xE0:
        cp = ((c & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6) | (np.int64(buf[i + 2]) & 0x3F)
        n = 3
    else:
        cp = ((c & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F)
        n = 2
    for j in range(len(points)):
        if points[j] == cp:
            return n
    return 0


@njit(cache=True, nogil=True)
def _head(buf: np.ndarray, a: int, b: int) -> np.uint64:
    """The first (up to) 8 bytes of ``buf[a:b]``, little-endian, zero-padded."""
    h = np.uint64(0)
    for j in range(min(b - a, 8)):
        h |= np.uint64(buf[a + j]) << np.uint64(8 * j)
    return h


@njit(cache=True, nogil=True)
def split_lookup(buf: np.ndarray, ascii_space: np.ndarray, points: np.ndarray, table: np.ndarray,
                 span: np.ndarray, arena: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chunk ids of ``buf``'s chunks (``str.split()``), -1 for an unknown chunk, with every
    chunk's byte span.

    ``table``: open addressing, slot ``s`` at ``4s`` (the chunk's hash), ``4s + 1`` (its id plus
    one, 0 when empty), ``4s + 2`` (its length in bytes) and ``4s + 3`` (its first 8 bytes,
    ``_head``); ``span``: each chunk's start in ``arena`` and length, side by side. The table is
    larger than the caches: a slot holding what a candidate is compared by (the whole of a chunk
    of up to 8 bytes, most words) costs one miss, where reading its span and its bytes in the
    arena cost two more."""
    n = len(buf)
    cap = n // 2 + 1
    cids = np.empty(cap, np.int64)
    starts = np.empty(cap, np.int64)
    ends = np.empty(cap, np.int64)
    mask = len(table) // 4 - 1
    k = 0
    i = 0
    while i < n:
        # ASCII inline: a call per byte, even to a compiled function, costs more than the scan
        b = buf[i]
        if b < 128:
            if ascii_space[b]:
                i += 1
                continue
        else:
            s = _wide_space_len(buf, i, points)
            if s:
                i += s
                continue
        a = i
        while i < n:
            b = buf[i]
            if b < 128:
                if ascii_space[b]:
                    break
            elif _wide_space_len(buf, i, points):
                break
            i += 1
        h = _fnv(buf, a, i)
        head = _head(buf, a, i)
        slot = np.int64(h & np.uint64(mask))
        found = -1
        length = i - a
        while True:
            c1 = table[4 * slot + 1]
            if c1 == 0:
                break
            if table[4 * slot] == h and table[4 * slot + 2] == length and table[4 * slot + 3] == head:
                c = np.int64(c1) - 1
                same = True
                if length > 8:
                    base = span[c, 0]
                    for j in range(8, length):
                        if arena[base + j] != buf[a + j]:
                            same = False
                            break
                if same:
                    found = c
                    break
            slot = (slot + 1) & mask
        cids[k] = found
        starts[k] = a
        ends[k] = i
        k += 1
    return cids[:k], starts[:k], ends[:k]


@njit(cache=True, nogil=True)
def _insert_range(table: np.ndarray, c_hash: np.ndarray, span: np.ndarray, arena: np.ndarray, lo: int, hi: int,
                  new: bool) -> None:
    """Put chunks ``lo`` to ``hi`` in the table, hashing them first when they are ``new``."""
    mask = len(table) // 4 - 1
    for c in range(lo, hi):
        a = span[c, 0]
        b = a + span[c, 1]
        if new:
            c_hash[c] = _fnv(arena, a, b)
        slot = np.int64(c_hash[c] & np.uint64(mask))
        while table[4 * slot + 1] != 0:
            slot = (slot + 1) & mask
        table[4 * slot] = c_hash[c]
        table[4 * slot + 1] = np.uint64(c + 1)
        table[4 * slot + 2] = np.uint64(span[c, 1])
        table[4 * slot + 3] = _head(arena, a, b)


@njit(cache=True, nogil=True)
def span_hashes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The table's hash of each span ``buf[starts[i]:ends[i]]``."""
    out = np.empty(len(starts), np.uint64)
    for i in range(len(starts)):
        out[i] = _fnv(buf, starts[i], ends[i])
    return out


@njit(cache=True, nogil=True)
def same_spans(buf: np.ndarray, a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Whether ``buf[a0[i]:a1[i]]`` and ``buf[b0[i]:b1[i]]`` hold the same bytes, for each i."""
    out = np.empty(len(a0), np.bool_)
    for i in range(len(a0)):
        n = a1[i] - a0[i]
        same = n == b1[i] - b0[i]
        j = 0
        while same and j < n:
            same = buf[a0[i] + j] == buf[b0[i] + j]
            j += 1
        out[i] = same
    return out


class ChunkIndex:
    """Chunk bytes to chunk ids, in arrays the compiled lookup reads; ids are given in order."""

    def __init__(self) -> None:
        self.n = 0
        self.used = 0
        self.arena = np.zeros(1 << 20, np.uint8)
        self.span = np.zeros((1024, 2), np.int64)  # start in the arena, length
        self.c_hash = np.zeros(1024, np.uint64)
        self.table = np.zeros(4 * 4096, np.uint64)
        self._pending: list[str] = []

    def add(self, chunk: str, cid: int) -> None:
        """Queue a chunk; queued chunks enter the table in one compiled call at the next lookup
        (one call per chunk cost more than the chunk's tokenization)."""
        if cid != self.n + len(self._pending):
            raise ValueError(f"chunk index: id {cid} out of order (expected {self.n + len(self._pending)})")
        self._pending.append(chunk)

    def add_many(self, chunks: list[str], first: int) -> None:
        """``add`` for consecutive ids from ``first``."""
        if first != self.n + len(self._pending):
            raise ValueError(f"chunk index: id {first} out of order (expected {self.n + len(self._pending)})")
        self._pending.extend(chunks)

    def _flush(self) -> None:
        data = [c.encode("utf-8", "surrogatepass") for c in self._pending]
        self._pending = []
        total = sum(map(len, data))
        new_n = self.n + len(data)
        if self.used + total > len(self.arena):
            self.arena = _grown(self.arena, self.used + total)
        if new_n > len(self.span):
            self.span = _grown(self.span, new_n)
            self.c_hash = _grown(self.c_hash, new_n)
        lens = np.fromiter(map(len, data), np.int64, len(data))
        self.span[self.n:new_n, 1] = lens
        self.span[self.n:new_n, 0] = self.used + np.cumsum(lens) - lens
        self.arena[self.used:self.used + total] = np.frombuffer(b"".join(data), np.uint8)
        self.used += total
        if 8 * new_n > len(self.table):  # keep the table at most half full (four entries a slot)
            size = len(self.table) // 4
            while 2 * new_n > size:
                size *= 2
            self.table = np.zeros(4 * size, np.uint64)
            _insert_range(self.table, self.c_hash, self.span, self.arena, 0, self.n, False)
        _insert_range(self.table, self.c_hash, self.span, self.arena, self.n, new_n, True)
        self.n = new_n

    def lookup(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._pending:
            self._flush()
        return split_lookup(buf, _ASCII_SPACE, SPACE_POINTS, self.table, self.span, self.arena)


def _grown(arr: np.ndarray, need: int) -> np.ndarray:
    new = np.zeros((max(need, 2 * len(arr)), *arr.shape[1:]), arr.dtype)
    new[: len(arr)] = arr
    return new
