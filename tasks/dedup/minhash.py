"""MinHash signatures and LSH band keys, computed for a whole batch of documents at once.

Compatible with datasketch 2.0: the permutations are datasketch's default ``affine32`` scheme
(``a·fmix32(h) + b`` mod 2^32, ``a`` and ``b`` drawn from ``numpy.random.RandomState(seed)``
exactly as ``datasketch.MinHash`` draws them), so for the same seed, ``num_perm`` and shingle
hash function our signature of a document equals ``datasketch.MinHash``'s and converts to a
``LeanMinHash`` (:func:`to_lean_minhash`).

Shingle hashes: ``hash_function="fnv1a"`` (default) hashes every word (FNV-1a, then the
splitmix64 finalizer) and combines the word hashes of an n-gram with a fixed mixing function,
in one compiled loop with the permutations (``tasks/dedup/kernels.py``); its scalar form,
:func:`shingle_hash32`, is what to pass as ``datasketch.MinHash(hashfunc=...)``.
``hash_function="sha1"`` is datasketch's own default (``sha1_hash32`` of the shingle's UTF-8
bytes, one hashlib call per shingle: slower, bit-equal to ``MinHash()`` defaults).

Text normalization is datatrove's ``simplify_text`` (lowercase, digit runs to ``0``,
datatrove's punctuation set to spaces, whitespace runs to one space, diacritics removed),
split into words as datatrove's whitespace tokenizer splits it (:func:`normalize_for_dedup`);
shingles are word n-grams (or character n-grams) of the normalized text. A text with fewer
than n words is one shingle.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache
from math import comb

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex
from datatrove.utils.text import NUMBERS_PATTERN, PUNCTUATION, PUNCTUATION_TRANS

from tasks.dedup import kernels
from tasks.kernels import ascii_space, gather, large_strings, utf8_buffers

U32 = np.uint32
MAX32 = np.uint32(0xFFFFFFFF)


@dataclass(frozen=True)
class MinHashParams:
    num_perm: int = 112
    bands: int = 14
    rows: int = 8
    seed: int = 1
    ngram: int = 5
    shingle: str = "word"  # or "char"
    hash_function: str = "fnv1a"  # or "sha1"
    normalization: str = "datatrove"  # or "words": lower-cased \\w+ tokens only

    def __post_init__(self) -> None:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands × rows ({self.bands}×{self.rows}) exceeds num_perm ({self.num_perm})")


def signature_scheme(params: MinHashParams) -> str:
    """Everything that decides a document's signature and band keys, as one string (the
    version counts changes to the hashing code itself)."""
    return (f"minhash-v2/{params.hash_function}/{params.normalization}/{params.shingle}{params.ngram}/"
            f"perm{params.num_perm}-seed{params.seed}/bands{params.bands}x{params.rows}")


# -- normalization (datatrove's simplify_text) ----------------------------------------------

_WORD = regex.compile(r"[\p{L}\p{N}_]+")


@lru_cache(maxsize=1 << 18)
def normalize_token(token: str, mode: str) -> str:
    """The normalization of one whitespace-free token holding a non-ASCII character, in
    Python: datatrove's ``simplify_text`` step by step (its own number pattern and
    punctuation table; Python's ``lower`` for final sigma and special casing), then split
    as its whitespace tokenizer splits. Cached per process: the same tokens recur in every
    shard a worker runs."""
    if mode == "words":
        return " ".join(_WORD.findall(token.lower()))
    t = NUMBERS_PATTERN.sub("0", token.lower()).translate(PUNCTUATION_TRANS)
    if not t.isascii():
        # every nonspacing mark (category Mn, datatrove's own test) lies at U+0300 or above
        t = "".join(c for c in unicodedata.normalize("NFD", t) if c < "\u0300" or unicodedata.category(c) != "Mn")
    return " ".join(t.split())


@cache
def ascii_tables(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(byte classes, lower-case bytes) of the 128 ASCII bytes, derived
    from Python's own str methods and datatrove's punctuation set."""
    classes = np.full(256, kernels.SEP, np.uint8)
    lower = np.arange(256, dtype=np.uint8)
    for b in range(128):
        ch = chr(b)
        lower[b] = ord(ch.lower())
        keep = (ch.isalnum() or ch == "_") if mode == "words" else (not ch.isspace() and ch not in PUNCTUATION)
        if keep:
            classes[b] = kernels.DIGIT if ch.isdigit() else kernels.KEEP
    return classes, lower


def normalize_for_dedup(texts: pa.Array, mode: str = "datatrove") -> pa.Array:
    """The words that shingles are made of, joined by single spaces, for a whole column.

    ``mode="datatrove"``: the words of datatrove's ``simplify_text`` as its whitespace word
    tokenizer splits them (lowercase, digit runs to ``0``, datatrove's punctuation set to
    spaces, diacritics removed), i.e. ``" ".join(simplify_text(t).split())``.
    ``mode="words"``: lower-cased ``\\w+`` tokens (the shared ground truth's shingling).

    Every step of both is local to a whitespace-delimited token, so tokens are normalized one
    by one: ASCII tokens by a compiled byte loop, the distinct tokens holding any other
    character in Python (:func:`normalize_token`)."""
    data, offsets, start, stop, index, rep_data, rep_off, classes, lower = _normalization_inputs(texts, mode)
    rep_len = np.diff(rep_off)
    capacity = len(data) + int(rep_len[index].sum()) + len(index) + 1
    out, out_off = kernels.normalize(data, offsets, ascii_space(), start, stop, index, rep_data, rep_off, classes,
                                     lower, mode == "datatrove", capacity)
    return large_strings(out, out_off).cast(pa.string())


def _normalization_inputs(texts: pa.Array, mode: str) -> tuple[np.ndarray, ...]:
    """What the compiled normalizers take: the texts' UTF-8 buffer and offsets, the spans of
    their tokens with a non-ASCII byte, each span's index into the normalized distinct tokens
    (buffer and offsets), and the ASCII byte classes and lower-case table."""
    classes, lower = ascii_tables(mode)
    data, offsets = utf8_buffers(texts)
    start, stop = kernels.wide_tokens(data, offsets, ascii_space())
    wdata, woff = gather(data, start, stop)
    enc = pc.dictionary_encode(large_strings(wdata, woff))
    rep = pa.array([normalize_token(t, mode) for t in enc.dictionary.to_pylist()], pa.large_string())
    rep_data, rep_off = utf8_buffers(rep)
    index = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return data, offsets, start, stop, index, rep_data, rep_off, classes, lower


# -- shingle hashes -------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


def _token_hash64(token: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in token:
        h = ((h ^ byte) * 0x100000001B3) & _MASK64
    return _fmix64_int(h)


def _fmix64_int(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _hash_tokens(tokens: list[bytes]) -> int:
    acc = _token_hash64(tokens[0])
    for t in tokens[1:]:
        acc = (((acc << 5) | (acc >> 59)) & _MASK64) ^ ((_token_hash64(t) * 0x9E3779B97F4A7C15) & _MASK64)
    return _fmix64_int(acc) >> 32


def shingle_hash32(shingle: bytes) -> int:
    """The shingle hash of ``hash_function="fnv1a"`` for one word shingle (its words joined by
    single spaces), written out in plain Python: pass it to ``datasketch.MinHash(hashfunc=...)``."""
    return _hash_tokens(shingle.split(b" "))


def char_shingle_hash32(shingle: bytes) -> int:
    """The same for a character shingle (its characters concatenated)."""
    return _hash_tokens([c.encode("utf-8") for c in shingle.decode("utf-8")])


# -- signatures -----------------------------------------------------------------------------

@cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch 2.0's ``affine32`` permutation parameters, drawn the same way."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=U32) * U32(2) + U32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=U32)
    return a, b


def signatures(texts: pa.Array, params: MinHashParams) -> np.ndarray:
    """``(len(texts), num_perm)`` uint32 MinHash signatures. A document with no shingle gets
    the all-``0xFFFFFFFF`` signature (datasketch's empty MinHash)."""
    a, b = permutations(params.num_perm, params.seed)
    if params.hash_function == "fnv1a" and params.shingle == "word":
        data, offsets, start, stop, index, rep_data, rep_off, classes, lower = _normalization_inputs(
            texts, params.normalization)
        return kernels.raw_word_signatures(data, offsets, start, stop, index, rep_data, rep_off, classes, lower,
                                           params.normalization == "datatrove", params.ngram, a, b)
    norm = normalize_for_dedup(texts, params.normalization)
    if params.hash_function == "sha1":
        hv, sh_off = _sha1_shingles(norm.to_pylist(), params.ngram, params.shingle)
        return kernels.signatures_of_hashes(hv, sh_off, a, b)
    data, offsets = utf8_buffers(norm)
    return kernels.signatures(data, offsets, params.ngram, params.shingle == "char", a, b)


def _sha1_shingles(docs: list[str], n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's default shingle hash (the first four bytes of SHA-1, little-endian), one
    hashlib call per shingle."""
    hv, sh_offsets = [], [0]
    for doc in docs:
        toks = (doc.split(" ") if doc else []) if kind == "word" else list(doc)
        if toks:
            sep = " " if kind == "word" else ""
            grams = [sep.join(toks[i:i + n]) for i in range(max(len(toks) - n + 1, 1))]
            hv.extend(struct.unpack("<I", hashlib.sha1(g.encode("utf-8")).digest()[:4])[0] for g in grams)
        sh_offsets.append(len(hv))
    return np.array(hv, dtype=U32), np.array(sh_offsets, dtype=np.int64)


def band_keys(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    """``(n, bands)`` uint64 keys: a band's key is a hash of its ``rows`` values and its index."""
    return kernels.band_keys(np.ascontiguousarray(sigs), params.bands, params.rows)


def empty_signature(sigs: np.ndarray) -> np.ndarray:
    return (sigs == MAX32).all(axis=1)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise share of equal signature values (datasketch's ``MinHash.jaccard``)."""
    return (a == b).mean(axis=-1)


def candidate_probability(j: float, bands: int, rows: int) -> float:
    """The LSH S-curve: probability that a pair of Jaccard ``j`` shares at least one band."""
    return 1.0 - (1.0 - j**rows) ** bands


def verified_probability(j: float, num_perm: int, threshold: float) -> float:
    """Probability that the signature estimate of a pair of Jaccard ``j`` reaches ``threshold``
    (binomial: each of ``num_perm`` values agrees with probability ``j``)."""
    need = int(np.ceil(threshold * num_perm - 1e-9))
    return sum(comb(num_perm, k) * j**k * (1 - j) ** (num_perm - k) for k in range(need, num_perm + 1))


def to_lean_minhash(signature: np.ndarray, seed: int = 1):
    """A ``datasketch.LeanMinHash`` holding one of our signatures."""
    from datasketch import LeanMinHash

    lean = LeanMinHash.__new__(LeanMinHash)
    lean._initialize_slots(seed, np.asarray(signature, dtype=U32), "affine32")
    return lean

