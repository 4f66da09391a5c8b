"""fastText's language ID (``predict`` with k=1) computed from the ``.ftz`` file by compiled code.

fastText spends about 1.3 µs a word on the lid.176 model, most of it building the line (a
Python string copied into C++, split again) and walking its ``std::vector``s; the arithmetic is
small (dim 16). Here the model file is read once (the layout of fastText's ``loadModel``:
arguments, dictionary with its prune index, product-quantized input matrix, dense or quantized
output matrix) and one numba pass over the prepared texts' UTF-8 bytes repeats fastText's
steps in fastText's order and in single precision:

- words split at fastText's white space bytes (space, ``\\t``, ``\\v``, ``\\f``, ``\\r``, NUL);
  the line ends with the end-of-line token ``</s>`` (the Python API appends a newline), and a
  literal ``</s>`` word ends the line there; a word starting with ``__label__`` is a label to
  fastText and adds nothing;
- a known word adds its own row, then (known or not) the rows of the character n-grams of
  ``<word>`` (minn..maxn UTF-8 characters, counted as fastText does by skipping continuation
  bytes), each hashed with fastText's 32-bit FNV-1a (which XORs each byte sign-extended),
  taken modulo ``bucket`` and mapped through the prune index (dropped when absent);
- the hidden vector is the float32 sum of the dequantized rows, times ``float32(1 / count)``;
- hierarchical softmax: the Huffman tree built from the label counts exactly as
  ``HierarchicalSoftmaxLoss::buildTree`` does, and its depth-first search with fastText's
  pruning, kept to k=1 (the best leaf whose log-probability sum is above ``log(1e-5)``).

``tests/test_quality_lid_fast.py`` compares the result with fastText's on every shared text and
on generated text. A model of another kind (another loss, word n-grams, a file version or
layout this reader does not know) gets ``None`` from :func:`compiled_lid` and is run by fastText.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from numba import njit

from tasks.process_cache import load_once

_MAGIC = 793712314  # fastText's file format magic (FASTTEXT_FILEFORMAT_MAGIC_INT32)
_VERSION = 12
_LOSS_HS = 1
_MODEL_SUP = 3
_KSUB = 256  # centroids per sub-quantizer (ProductQuantizer::ksub_)
_LABEL = b"__label__"  # Args::label; not saved in the file, so fastText's default applies
_EOS = b"</s>"
_MAX_DENSE_BUCKET = 1 << 25  # the prune index is built as a dense array of this many entries at most


MAX_WORDS_SEEN = 1 << 18  # distinct words whose rows a process keeps (some 40 MB for web text)
# Only words this short are kept, and the kept row lists and word bytes are capped, so that a
# worker's table stays bounded whatever it reads (base64 or minified text is one long "word"
# after another): at most 64 MB of row lists, 16 MB of words and the slots.
MAX_WORD_BYTES_SEEN = 64
MAX_ROWS_SEEN = 1 << 24
MAX_ARENA_SEEN = 1 << 24


class _WordsSeen:
    """The per-process table of words already read and their input rows (see ``_predict``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Forget every word (a fresh worker's table)."""
        self.seen = np.full((1 << 12, 4), -1, np.int32)
        self.arena = np.empty(1 << 16, np.uint8)
        self.buf = np.empty(1 << 16, np.int32)
        self.arena_used = self.used = self.n_seen = 0


class LidModel(NamedTuple):
    """The arrays the compiled pass reads (built once per process and model file)."""

    words: np.ndarray  # uint8: the dictionary's words, concatenated
    word_starts: np.ndarray  # int64[size + 1]
    table: np.ndarray  # int32 open-addressing table of word ids (-1 empty), power-of-two size
    nwords: int
    eos: int  # the id of "</s>" (-1 when the dictionary lacks it)
    minn: int
    maxn: int
    bucket: int
    prune_bits: np.ndarray  # uint64 per 32 buckets: rows before them << 32 | which of them have a row
    prune_rows: np.ndarray  # int32: the kept buckets' rows (minus nwords), in bucket order
    rows: np.ndarray  # float32[rows, dim]: the input matrix, dequantized as fastText adds its rows
    output: np.ndarray  # float32[nlabels - 1, dim]: the tree's inner nodes
    left: np.ndarray  # int32[2 * nlabels - 1]
    right: np.ndarray
    labels: list[str]
    words_seen: _WordsSeen


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.path}: truncated fastText model (ended at byte {self.pos})")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def array(self, dtype: type, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if count < 0 or self.pos + size > len(self.data):
            raise ValueError(f"{self.path}: truncated fastText model (ended at byte {self.pos})")
        out = np.frombuffer(self.data, dtype, count, self.pos).copy()
        self.pos += size
        return out

    def pq(self) -> tuple[int, int, int, int, np.ndarray]:
        dim, nsubq, dsub, lastdsub = self.take("<4i")
        return dim, nsubq, dsub, lastdsub, self.array(np.float32, dim * _KSUB)


def fasttext_hash(word: bytes) -> int:
    """fastText's ``Dictionary::hash``: 32-bit FNV-1a over the bytes taken as signed chars."""
    h = 2166136261
    for b in word:
        h = ((h ^ ((b - 256 if b > 127 else b) & 0xFFFFFFFF)) * 16777619) & 0xFFFFFFFF
    return h


def _centroid(pq: tuple[int, int, int, int, np.ndarray], m: int, i: int) -> np.ndarray:
    _, nsubq, dsub, lastdsub, c = pq
    start = m * _KSUB * dsub + i * lastdsub if m == nsubq - 1 else (m * _KSUB + i) * dsub
    return c[start:]


def read_model(path: Path) -> LidModel | None:
    """The model at ``path`` in compiled form; None when it is not a supervised
    hierarchical-softmax model without word n-grams (fastText then runs it)."""
    r = _Reader(Path(path).read_bytes(), Path(path))
    magic, version = r.take("<2i")
    if magic != _MAGIC:
        raise ValueError(f"{path}: not a fastText model (magic {magic})")
    if version != _VERSION:
        return None
    dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model, bucket, minn, maxn, _lr_rate = r.take("<12i")
    r.take("<d")
    size, nwords, nlabels, _ntokens, prune_size = r.take("<3iqq")
    words: list[bytes] = []
    counts: list[int] = []
    types: list[int] = []
    for _ in range(size):
        end = r.data.find(b"\0", r.pos)
        if end < 0:
            raise ValueError(f"{path}: truncated fastText model (a dictionary word has no end)")
        words.append(r.data[r.pos:end])
        r.pos = end + 1
        count, kind = r.take("<qb")
        counts.append(count)
        types.append(kind)
    pairs = r.array(np.int32, 2 * max(prune_size, 0)).reshape(-1, 2)
    if (loss != _LOSS_HS or model != _MODEL_SUP or word_ngrams > 1 or nlabels < 1 or bucket > _MAX_DENSE_BUCKET
            or types != [0] * nwords + [1] * nlabels or len(set(words)) != size):
        return None
    (quant_input,) = r.take("<?")
    if not quant_input:
        return None  # a dense input matrix has no prune index to read: left to fastText
    qnorm, rows, cols, codesize = r.take("<?qqi")
    codes = r.array(np.uint8, codesize)
    pq = r.pq()
    norms = np.ones(rows, np.float32)
    if qnorm:
        norm_codes = r.array(np.uint8, rows)
        npq = r.pq()
        norms = np.array([_centroid(npq, 0, int(c))[0] for c in range(_KSUB)], np.float32)[norm_codes]
    (qout,) = r.take("<?")
    if qout:
        return None  # a quantized output matrix (quantize -qout): left to fastText
    orows, ocols = r.take("<qq")
    output = r.array(np.float32, orows * ocols).reshape(orows, ocols)
    _, nsubq, dsub, lastdsub, centroids = pq
    if (cols != dim or ocols != dim or orows != nlabels or codesize != rows * nsubq or pq[0] != dim
            or (nsubq - 1) * dsub + lastdsub != dim or rows < nwords):
        raise ValueError(f"{path}: inconsistent fastText model (matrix shapes do not match dim {dim})")
    if r.pos != len(r.data):
        raise ValueError(f"{path}: {len(r.data) - r.pos} bytes after the fastText model's end")
    prune = np.full(bucket, -1, np.int64)
    if prune_size < 0:
        if rows < nwords + bucket:
            raise ValueError(f"{path}: inconsistent fastText model ({rows} input rows for {nwords} words and "
                             f"{bucket} buckets)")
        prune = np.arange(bucket, dtype=np.int64)  # not pruned: every bucket is its own row
    elif len(pairs):
        if (pairs[:, 0].min() < 0 or pairs[:, 0].max() >= bucket or pairs[:, 1].min() < 0
                or pairs[:, 1].max() + nwords >= rows):
            raise ValueError(f"{path}: prune index outside the model's buckets or rows")
        prune[pairs[:, 0]] = pairs[:, 1]
    prune_bits, prune_rows = _rank_table(prune)
    word_starts = np.zeros(size + 1, np.int64)
    word_starts[1:] = np.cumsum([len(w) for w in words])
    cap = 1 << max(4, (2 * size).bit_length())
    table = np.full(cap, -1, np.int32)
    for i, w in enumerate(words):
        slot = fasttext_hash(w) & (cap - 1)
        while table[slot] != -1:
            slot = (slot + 1) & (cap - 1)
        table[slot] = i
    left, right = _huffman(counts[nwords:])
    return LidModel(
        np.frombuffer(b"".join(words), np.uint8).copy(), word_starts, table, nwords,
        words.index(_EOS) if _EOS in words else -1, minn, maxn, bucket, prune_bits, prune_rows,
        _dequantize(codes.reshape(rows, nsubq), centroids, norms, dsub, lastdsub), output, left, right,
        [w.decode("utf-8", "replace").removeprefix(_LABEL.decode()) for w in words[nwords:]], _WordsSeen())


def _rank_table(prune: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The prune index as a rank bitmap: one 64-bit word per 32 buckets holds which of them have
    a row and how many rows come before them. About 0.25 bytes a bucket instead of 4, so that
    the table (0.5 MB for lid.176's 2M buckets) stays in a core's cache: the dense array's
    lookups, some 20 a new word, missed it."""
    kept = prune >= 0
    padded = np.zeros(-(-len(prune) // 32) * 32, bool)
    padded[: len(prune)] = kept
    bits = np.packbits(padded.reshape(-1, 32)[:, ::-1], axis=1).view(">u4").ravel().astype(np.uint64)
    before = np.concatenate([[0], np.cumsum(padded.reshape(-1, 32).sum(axis=1))[:-1]]).astype(np.uint64)
    return (before << np.uint64(32)) | bits, prune[kept].astype(np.int32)


def _huffman(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``HierarchicalSoftmaxLoss::buildTree``'s children arrays (leaves are the labels)."""
    osz = len(counts)
    n = 2 * osz - 1
    count = [10**15] * n
    count[:osz] = counts
    left = np.full(n, -1, np.int32)
    right = np.full(n, -1, np.int32)
    leaf, node = osz - 1, osz
    for i in range(osz, n):
        mini = [0, 0]
        for j in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                mini[j], leaf = leaf, leaf - 1
            else:
                mini[j], node = node, node + 1
        left[i], right[i] = mini
        count[i] = count[mini[0]] + count[mini[1]]
    return left, right


@njit(cache=True, inline="always")
def _is_space(b: int) -> bool:
    return b == 32 or b == 10 or b == 13 or b == 9 or b == 11 or b == 12 or b == 0


@njit(cache=True, inline="always")
def _is_label(data, ws):  # noqa: ANN001, ANN202
    # b"__label__"
    return (data[ws] == 95 and data[ws + 1] == 95 and data[ws + 2] == 108 and data[ws + 3] == 97
            and data[ws + 4] == 98 and data[ws + 5] == 101 and data[ws + 6] == 108 and data[ws + 7] == 95
            and data[ws + 8] == 95)


@njit(cache=True)
def _lookup(data, start, end, h, words, word_starts, table):  # noqa: ANN001, ANN202
    mask = len(table) - 1
    slot = h & mask
    n = end - start
    while True:
        wid = table[slot]
        if wid < 0:
            return -1
        a = word_starts[wid]
        if word_starts[wid + 1] - a == n and _same_bytes(words, a, data, start, n):
            return wid
        slot = (slot + 1) & mask


@njit(cache=True, inline="always")
def _same_bytes(x, xi, y, yi, n):  # noqa: ANN001, ANN202
    for k in range(n):  # noqa: SIM110  (numba compiles no all() over a generator)
        if x[xi + k] != y[yi + k]:
            return False
    return True


@njit(cache=True, inline="always")
def _fnv_step(h: np.uint32, b: np.uint8) -> np.uint32:
    sb = np.int32(np.int8(b))  # fastText XORs the byte as a signed char, sign-extended
    return np.uint32((h ^ np.uint32(sb & 0xFFFFFFFF)) * np.uint32(16777619))


def _dequantize(codes: np.ndarray, centroids: np.ndarray, norms: np.ndarray, dsub: int, lastdsub: int) -> np.ndarray:
    """Every input row as ``ProductQuantizer::addcode`` adds it: ``float32(norm * centroid)``
    per component, so adding a row of this matrix adds the very same numbers."""
    rows, nsubq = codes.shape
    out = np.empty((rows, (nsubq - 1) * dsub + lastdsub), np.float32)
    for m in range(nsubq):
        d = lastdsub if m == nsubq - 1 else dsub
        base = m * _KSUB * dsub
        table = centroids[base: base + _KSUB * d].reshape(_KSUB, d)
        out[:, m * dsub: m * dsub + d] = norms[:, None] * table[codes[:, m]]
    return out


@njit(cache=True, inline="always")
def _gram_byte(data, ws, i, total):  # noqa: ANN001, ANN202
    # byte i of "<" + word + ">"
    if i == 0:
        return 60
    if i == total - 1:
        return 62
    return data[ws + i - 1]


@njit(cache=True, inline="always")
def _mod(h, bucket, inv_bucket):  # noqa: ANN001, ANN202
    # h % bucket for a 32-bit h without an integer division (tens of cycles, some 20 a word):
    # the double quotient is off by at most one, which the remainder's range check corrects
    a = np.int64(h)
    r = a - np.int64(a * inv_bucket) * bucket
    if r < 0:
        r += bucket
    elif r >= bucket:
        r -= bucket
    return r


@njit(cache=True, inline="always")
def _prune(b, prune_bits, prune_rows):  # noqa: ANN001, ANN202
    w = prune_bits[b >> 5]
    bit = np.uint64(b & 31)
    bits = w & np.uint64(0xFFFFFFFF)
    if not (bits >> bit) & np.uint64(1):
        return -1
    x = bits & ((np.uint64(1) << bit) - np.uint64(1))
    # population count of the 32-bit x
    x = x - ((x >> np.uint64(1)) & np.uint64(0x55555555))
    x = (x & np.uint64(0x33333333)) + ((x >> np.uint64(2)) & np.uint64(0x33333333))
    x = (((x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F)) * np.uint64(0x01010101)) & np.uint64(0xFFFFFFFF)
    return prune_rows[np.int64(w >> np.uint64(32)) + np.int64(x >> np.uint64(24))]


@njit(cache=True)
def _word_rows(data, ws, we, h, words, word_starts, table, nwords, minn, maxn, bucket, inv_bucket,  # noqa: ANN001, ANN202
               prune_bits, prune_rows, buf, at):
    """The input rows fastText adds for the word data[ws:we], in its order, written to buf
    from ``at``; returns their number."""
    k = at
    wid = _lookup(data, ws, we, h, words, word_starts, table)
    if wid >= 0:
        buf[k] = wid
        k += 1
    if maxn > 0:
        # Dictionary::computeSubwords over "<" + word + ">"
        total = we - ws + 2
        for i in range(total):
            if (_gram_byte(data, ws, i, total) & 0xC0) == 0x80:
                continue  # not the first byte of a UTF-8 character
            gh = np.uint32(2166136261)
            j = i
            chars = 1
            while j < total and chars <= maxn:
                gh = _fnv_step(gh, _gram_byte(data, ws, j, total))
                j += 1
                while j < total and (_gram_byte(data, ws, j, total) & 0xC0) == 0x80:
                    gh = _fnv_step(gh, _gram_byte(data, ws, j, total))
                    j += 1
                if chars >= minn and not (chars == 1 and (i == 0 or j == total)):
                    r = _prune(_mod(gh, bucket, inv_bucket), prune_bits, prune_rows)
                    if r >= 0:
                        buf[k] = nwords + r
                        k += 1
                chars += 1
    return k - at


@njit(cache=True)
def _grow(seen, cap):  # noqa: ANN001, ANN202
    new_cap = 2 * cap
    mask = new_cap - 1
    out = np.full((new_cap, 4), -1, np.int32)
    for i in range(cap):
        if seen[i, 3] >= 0:
            slot = np.int64(np.uint32(seen[i, 0])) & mask
            while out[slot, 3] >= 0:
                slot = (slot + 1) & mask
            out[slot, :] = seen[i, :]
    return out, new_cap


@njit(cache=True)
def _predict(data, starts, words, word_starts, table, nwords, eos, minn, maxn, bucket, prune_bits,  # noqa: ANN001, ANN202, PLR0913
             prune_rows, rows, output, left, right, seen, arena, arena_used, buf, used, n_seen, max_seen, max_word,
             max_arena, max_rows):
    n_texts = len(starts) - 1
    dim = output.shape[1]
    osz = output.shape[0]
    best_label = np.full(n_texts, -1, np.int32)
    best_score = np.zeros(n_texts, np.float32)
    hidden = np.zeros(dim, np.float32)
    stack_node = np.empty(2 * osz + 2, np.int32)
    stack_score = np.empty(2 * osz + 2, np.float32)
    log_thr = np.float32(np.log(np.float64(np.float32(0.0)) + 1e-5))
    inv_bucket = 1.0 / bucket
    # the rows of each distinct word, found once per process (up to ``max_seen`` words): most
    # words repeat, and their n-gram hashing and prune lookups are most of the work. One row of
    # ``seen`` per slot (word hash, start in ``arena``, length, where its rows are in ``buf``),
    # so that a probe touches one cache line; the table doubles when half full
    cap = len(seen)
    mask = cap - 1
    for t in range(n_texts):
        hidden[:] = 0
        count = 0
        pos = starts[t]
        end = starts[t + 1]
        while True:
            while pos < end and _is_space(data[pos]):
                pos += 1
            if pos >= end:
                # the newline the Python API appends: the end-of-line token
                if eos >= 0:
                    for k in range(dim):
                        hidden[k] += rows[eos, k]
                    count += 1
                break
            ws = pos
            h = np.uint32(2166136261)
            while pos < end and not _is_space(data[pos]):
                h = _fnv_step(h, data[pos])
                pos += 1
            we = pos
            n = we - ws
            if n >= 9 and _is_label(data, ws):
                continue  # a label to fastText (getType): no row at all
            if n == 4 and data[ws] == 60 and data[ws + 1] == 47 and data[ws + 2] == 115 and data[ws + 3] == 62:
                # a literal end-of-line word: its own row (no n-grams), and the line ends
                if eos >= 0:
                    for k in range(dim):
                        hidden[k] += rows[eos, k]
                    count += 1
                break
            slot = np.int64(h) & mask
            hs = np.int32(np.int64(h) - (np.int64(1) << 32) if h >= np.uint32(1 << 31) else np.int64(h))
            at = -1
            while seen[slot, 3] >= 0:
                if seen[slot, 0] == hs and seen[slot, 2] == n and _same_bytes(arena, seen[slot, 1], data, ws, n):
                    at = seen[slot, 3]
                    break
                slot = (slot + 1) & mask
            if at < 0:
                need = used + 2 + (n + 2) * (maxn - minn + 1 if maxn > 0 else 0)
                if need > len(buf):
                    grown = np.empty(max(2 * len(buf), need), np.int32)
                    grown[:used] = buf[:used]
                    buf = grown
                at = used
                buf[at] = _word_rows(data, ws, we, h, words, word_starts, table, nwords, minn, maxn, bucket,
                                     inv_bucket, prune_bits, prune_rows, buf, at + 1)
                # else found each time: a full table stops remembering, not working (the int32
                # offsets bound the arena and the row lists too)
                if (n_seen < max_seen and n <= max_word and arena_used + n <= max_arena
                        and used + 1 + buf[at] <= max_rows):
                    if arena_used + n > len(arena):
                        grown_arena = np.empty(max(2 * len(arena), arena_used + n), np.uint8)
                        grown_arena[:arena_used] = arena[:arena_used]
                        arena = grown_arena
                    arena[arena_used: arena_used + n] = data[ws:we]
                    seen[slot, 0] = hs
                    seen[slot, 1] = arena_used
                    seen[slot, 2] = n
                    seen[slot, 3] = at
                    arena_used += n
                    used += 1 + buf[at]
                    n_seen += 1
                    if 2 * n_seen > cap:
                        seen, cap = _grow(seen, cap)
                        mask = cap - 1
            got = buf[at]
            at += 1
            for q in range(at, at + got):
                r = buf[q]
                for k in range(dim):
                    hidden[k] += rows[r, k]
            count += got
        if count == 0:
            continue  # fastText predicts nothing for an empty line
        scale = np.float32(1.0 / count)
        for k in range(dim):
            hidden[k] = hidden[k] * scale
        # depth-first search, left child first, pruned as fastText's dfs with k=1
        top = 0
        stack_node[0] = 2 * osz - 2  # the root
        stack_score[0] = 0.0
        found = False
        best = np.float32(0.0)
        while top >= 0:
            node = stack_node[top]
            score = stack_score[top]
            top -= 1
            if score < log_thr:
                continue
            if found and score < best:
                continue
            if left[node] == -1 and right[node] == -1:
                # a later leaf of equal score replaces the kept one in fastText's heap of one
                # (push_heap leaves the older one in front, pop_heap drops it)
                if not found or score >= best:
                    best = score
                    best_label[t] = node
                    found = True
                continue
            f = np.float32(0.0)
            row = node - osz
            for k in range(dim):
                f += output[row, k] * hidden[k]
            f = np.float32(1.0 / (np.float32(1.0) + np.exp(-f)))
            s_left = score + np.float32(np.log(np.float64(np.float32(1.0 - np.float64(f))) + 1e-5))
            s_right = score + np.float32(np.log(np.float64(f) + 1e-5))
            # right pushed first so that the left subtree is searched first
            top += 1
            stack_node[top] = right[node]
            stack_score[top] = s_right
            top += 1
            stack_node[top] = left[node]
            stack_score[top] = s_left
        if found:
            best_score[t] = np.exp(best)
    return best_label, best_score, seen, arena, arena_used, buf, used, n_seen


def _utf8(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    arr = pa.array(texts, pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], np.int64, len(arr) + 1, arr.offset * 8)
    data = arr.buffers()[2]
    return (np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)), offsets


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def predict_prepared(model: LidModel, texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Top label (without ``__label__``, "unknown" when fastText predicts none) and its
    probability (float32, as fastText returns it) for each prepared (one-line) text."""
    if not texts:
        return [], np.zeros(0, np.float32)
    try:
        data, offsets = _utf8(texts)
    except (UnicodeEncodeError, pa.ArrowInvalid):
        bad = next(i for i, t in enumerate(texts) if not _encodes(t))
        raise ValueError(f"language ID: text {bad} is not UTF-8 (it holds a lone surrogate)") from None
    if len(data) and (data == 10).any():
        # fastText ends a line at a newline (its Python API refuses one): lid.prepare joins lines
        bad = next(i for i, t in enumerate(texts) if "\n" in t)
        raise ValueError(f"language ID: text {bad} holds a newline (prepare it with lid.prepare first)")
    with model.words_seen.lock:
        w = model.words_seen
        ids, scores, w.seen, w.arena, w.arena_used, w.buf, w.used, w.n_seen = _predict(
            data, offsets, model.words, model.word_starts, model.table, model.nwords, model.eos, model.minn,
            model.maxn, model.bucket, model.prune_bits, model.prune_rows, model.rows, model.output, model.left,
            model.right, w.seen, w.arena, w.arena_used, w.buf, w.used, w.n_seen, MAX_WORDS_SEEN, MAX_WORD_BYTES_SEEN,
            MAX_ARENA_SEEN, MAX_ROWS_SEEN)
    labels = model.labels
    return [labels[i] if i >= 0 else "unknown" for i in ids.tolist()], scores


def compiled_lid(path: str | Path) -> LidModel | None:
    """The compiled form of the model at ``path``, read once per process (None: fastText runs it)."""
    return load_once(("fasttext-lid-compiled", str(path)), lambda: read_model(Path(path)))
