"""A document's whitespace chunks looked up in one compiled pass over its UTF-8 bytes.

``str.split()`` and a Python dictionary lookup per chunk cost about as much as everything else
the warm engine does. Here the chunks of the document's bytes (``surrogatepass``, so that every
Python string, lone surrogates included, has exactly one byte string) are cut at the code points
``str.isspace`` accepts, hashed and found in an open-addressing table over a byte arena, all in
numba; only chunks never seen before come back to Python to be tokenized and added.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

# every code point str.isspace accepts, from Python itself (a test compares with str.split)
SPACE_POINTS = np.array([c for c in range(128, sys.maxunicode + 1) if chr(c).isspace()], np.int64)
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
def split_lookup(buf: np.ndarray, ascii_space: np.ndarray, points: np.ndarray, slots: np.ndarray,
                 c_hash: np.ndarray, c_start: np.ndarray, c_len: np.ndarray,
                 arena: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chunk ids of ``buf``'s chunks (``str.split()``), -1 for an unknown chunk, with every
    chunk's byte span."""
    n = len(buf)
    cap = n // 2 + 1
    cids = np.empty(cap, np.int64)
    starts = np.empty(cap, np.int64)
    ends = np.empty(cap, np.int64)
    mask = len(slots) - 1
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
        slot = np.int64(h & np.uint64(mask))
        found = -1
        length = i - a
        while True:
            c = slots[slot]
            if c < 0:
                break
            if c_hash[c] == h and c_len[c] == length:
                same = True
                base = c_start[c]
                for j in range(length):
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
def _insert_range(slots: np.ndarray, c_hash: np.ndarray, c_start: np.ndarray, c_len: np.ndarray,
                  arena: np.ndarray, lo: int, hi: int, new: bool) -> None:
    """Put chunks ``lo`` to ``hi`` in the table, hashing them first when they are ``new``."""
    mask = len(slots) - 1
    for c in range(lo, hi):
        if new:
            c_hash[c] = _fnv(arena, c_start[c], c_start[c] + c_len[c])
        slot = np.int64(c_hash[c] & np.uint64(mask))
        while slots[slot] >= 0:
            slot = (slot + 1) & mask
        slots[slot] = c


class ChunkIndex:
    """Chunk bytes to chunk ids, in arrays the compiled lookup reads; ids are given in order."""

    def __init__(self) -> None:
        self.n = 0
        self.used = 0
        self.arena = np.zeros(1 << 20, np.uint8)
        self.c_start = np.zeros(1024, np.int64)
        self.c_len = np.zeros(1024, np.int64)
        self.c_hash = np.zeros(1024, np.uint64)
        self.slots = np.full(4096, -1, np.int64)
        self._pending: list[str] = []

    def add(self, chunk: str, cid: int) -> None:
        """Queue a chunk; queued chunks enter the table in one compiled call at the next lookup
        (one call per chunk cost more than the chunk's tokenization)."""
        if cid != self.n + len(self._pending):
            raise ValueError(f"chunk index: id {cid} out of order (expected {self.n + len(self._pending)})")
        self._pending.append(chunk)

    def _flush(self) -> None:
        data = [c.encode("utf-8", "surrogatepass") for c in self._pending]
        self._pending = []
        total = sum(map(len, data))
        new_n = self.n + len(data)
        if self.used + total > len(self.arena):
            self.arena = _grown(self.arena, self.used + total)
        if new_n > len(self.c_start):
            self.c_start = _grown(self.c_start, new_n)
            self.c_len = _grown(self.c_len, new_n)
            self.c_hash = _grown(self.c_hash, new_n)
        lens = np.fromiter(map(len, data), np.int64, len(data))
        self.c_len[self.n:new_n] = lens
        self.c_start[self.n:new_n] = self.used + np.cumsum(lens) - lens
        self.arena[self.used:self.used + total] = np.frombuffer(b"".join(data), np.uint8)
        self.used += total
        if 2 * new_n > len(self.slots):  # keep the table at most half full
            size = len(self.slots)
            while 2 * new_n > size:
                size *= 2
            self.slots = np.full(size, -1, np.int64)
            _insert_range(self.slots, self.c_hash, self.c_start, self.c_len, self.arena, 0, self.n, False)
        _insert_range(self.slots, self.c_hash, self.c_start, self.c_len, self.arena, self.n, new_n, True)
        self.n = new_n

    def lookup(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._pending:
            self._flush()
        return split_lookup(buf, _ASCII_SPACE, SPACE_POINTS, self.slots, self.c_hash, self.c_start, self.c_len,
                            self.arena)


def _grown(arr: np.ndarray, need: int) -> np.ndarray:
    new = np.zeros(max(need, 2 * len(arr)), arr.dtype)
    new[: len(arr)] = arr
    return new
