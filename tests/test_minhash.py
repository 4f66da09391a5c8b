"""MinHash signatures, band keys and connected components as plain functions."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import LeanMinHash, MinHash
from datatrove.utils.text import simplify_text
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.dedup import kernels, near
from tasks.dedup.minhash import (
    MinHashParams,
    candidate_probability,
    char_shingle_hash32,
    normalize_for_dedup,
    permutations,
    shingle_hash32,
    signatures,
    to_lean_minhash,
)
from tasks.kernels import utf8_buffers
from tests.conftest import shared
from tests.graphs import distributed_cc


def _shingles(norm: str, n: int) -> list[bytes]:
    toks = [t for t in norm.split(" ") if t]
    if not toks:
        return []
    return [" ".join(toks[i:i + n]).encode() for i in range(max(len(toks) - n + 1, 1))]


def _random_docs(k: int, seed: int) -> list[str]:
    """Random documents made of real words (from the shared corpora), with punctuation,
    digits, accents and odd whitespace mixed in."""
    rng = random.Random(seed)
    words = " ".join(pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).column("text")
                     .to_pylist()[:300]).split()
    extras = ["Café", "naïve", "1,234.5", "—", "(x)", "\u00a0", "\t", "ÅNGSTRÖM", "2024", "it's", "e.g."]
    docs = []
    for _ in range(k):
        n = rng.choice([0, 1, 3, 4, 5, 6, 20, 200])
        docs.append(" ".join(rng.choice(words + extras) for _ in range(n)))
    return docs


def _datatrove_words(text: str) -> str:
    """What datatrove's MinHash shingles: simplify_text, split by its whitespace tokenizer."""
    return " ".join(simplify_text(text).split())


def test_normalization_equals_datatrove_on_all_shared_text():
    for f, col in [("cc_web_samples/cc_web_samples.parquet", "text"),
                   ("web_pages_readability/web_pages_readability.parquet", "page_text"),
                   ("redpajama_cc_simplified/redpajama_cc_simplified.parquet", "original"),
                   ("conversations_hh_rlhf/conversations_hh_rlhf.parquet", "chosen")]:
        texts = pq.read_table(shared(f)).column(col).combine_chunks()
        ours = normalize_for_dedup(texts).to_pylist()
        assert ours == [_datatrove_words(t) for t in texts.to_pylist()], f


# every byte class of the compiled normalizer: ASCII letters, digits with separators,
# punctuation, control characters, ASCII and Unicode whitespace, accents, other scripts, digits
# of other scripts, final sigma, characters that lower-case to ASCII or to two characters
_ALPHABET = st.sampled_from(list("aZ09.,;-_'\"()\t\n\r\x0b\x1c\x00 ") + [
    "\u00a0", "\u2003", "\u3000", "\u0085", "é", "Å", "\u0301", "ß", "İ", "K", "Σ", "ΟΔΟΣ", "٣", "٫", "日本",
    "—", "…", "€", "\U0001F600"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_ALPHABET, max_size=40).map("".join), min_size=1, max_size=8))
def test_normalization_equals_datatrove_on_generated_text(texts):
    assert normalize_for_dedup(pa.array(texts)).to_pylist() == [_datatrove_words(t) for t in texts]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(_ALPHABET, max_size=40).map("".join), min_size=1, max_size=8))
def test_words_normalization_equals_regex_form(texts):
    import regex

    expected = [" ".join(regex.findall(r"[\p{L}\p{N}_]+", t.lower())) for t in texts]
    assert normalize_for_dedup(pa.array(texts), "words").to_pylist() == expected


def test_normalization_of_sliced_and_large_string_arrays():
    docs = _random_docs(50, 5)
    whole = normalize_for_dedup(pa.array(docs)).to_pylist()
    assert normalize_for_dedup(pa.array(docs).slice(10, 20)).to_pylist() == whole[10:30]
    assert normalize_for_dedup(pa.array(docs, pa.large_string())).to_pylist() == whole
    assert normalize_for_dedup(pa.chunked_array([docs[:7], docs[7:]])).to_pylist() == whole


@pytest.mark.parametrize("hash_function", ["fnv1a", "sha1"])
@pytest.mark.parametrize("num_perm, seed, ngram", [(112, 1, 5), (64, 42, 3), (128, 7, 1)])
def test_signatures_equal_datasketch(hash_function, num_perm, seed, ngram):
    docs = _random_docs(120, seed)
    params = MinHashParams(num_perm=num_perm, bands=num_perm // 8, rows=8, seed=seed, ngram=ngram,
                           hash_function=hash_function)
    sigs = signatures(pa.array(docs), params)
    norm = normalize_for_dedup(pa.array(docs)).to_pylist()
    for doc, sig in zip(norm, sigs, strict=True):
        kwargs = {} if hash_function == "sha1" else {"hashfunc": shingle_hash32}
        m = MinHash(num_perm=num_perm, seed=seed, **kwargs)  # datasketch's default scheme (affine32)
        m.update_batch(_shingles(doc, ngram))
        assert np.array_equal(m.hashvalues, sig)
        lean = to_lean_minhash(sig, seed)
        assert isinstance(lean, LeanMinHash) and lean.jaccard(LeanMinHash(m)) == 1.0


def _normalized_then_hashed(texts: pa.Array, params: MinHashParams) -> np.ndarray:
    """Word-shingle signatures the two-step way: write the normalized texts, then hash them."""
    data, offsets = utf8_buffers(normalize_for_dedup(texts, params.normalization))
    a, b = permutations(params.num_perm, params.seed)
    return kernels.signatures(data, offsets, params.ngram, False, a, b)


_SHARED_TEXT = [("cc_web_samples/cc_web_samples.parquet", "text"),
                ("web_pages_readability/web_pages_readability.parquet", "page_text"),
                ("web_pages_scrapinghub/web_pages_scrapinghub.parquet", "html"),
                ("redpajama_cc_simplified/redpajama_cc_simplified.parquet", "original"),
                ("conversations_hh_rlhf/conversations_hh_rlhf.parquet", "chosen"),
                ("simple_wikipedia/simple_wikipedia.parquet", "text")]


@pytest.mark.parametrize("normalization, ngram", [("datatrove", 5), ("datatrove", 1), ("words", 3)])
def test_signatures_hashed_while_normalizing_equal_normalized_then_hashed_on_shared_text(normalization, ngram):
    """signatures() hashes each word as the normalizer reads it (kernels.raw_word_signatures);
    the two-step path writes the normalized text first. Same signatures on every shared text."""
    params = MinHashParams(ngram=ngram, normalization=normalization)
    for f, col in _SHARED_TEXT:
        texts = pq.read_table(shared(f)).column(col).combine_chunks().cast(pa.string())
        assert np.array_equal(signatures(texts, params), _normalized_then_hashed(texts, params)), f


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_ALPHABET, max_size=40).map("".join), min_size=1, max_size=8),
       st.sampled_from(["datatrove", "words"]), st.sampled_from([1, 2, 5]))
def test_signatures_hashed_while_normalizing_equal_normalized_then_hashed_on_generated_text(texts, mode, ngram):
    params = MinHashParams(ngram=ngram, normalization=mode)
    arr = pa.array(texts)
    assert np.array_equal(signatures(arr, params), _normalized_then_hashed(arr, params))
    # and on a slice, whose bytes start inside a larger buffer
    assert np.array_equal(signatures(arr.slice(1), params), _normalized_then_hashed(arr.slice(1), params))


@pytest.mark.parametrize("hash_function", ["fnv1a", "sha1"])
def test_character_shingles_equal_datasketch(hash_function):
    docs = _random_docs(60, 11)
    params = MinHashParams(num_perm=64, bands=8, rows=8, ngram=4, shingle="char", hash_function=hash_function)
    sigs = signatures(pa.array(docs), params)
    for doc, sig in zip(normalize_for_dedup(pa.array(docs)).to_pylist(), sigs, strict=True):
        chars = list(doc)
        grams = ["".join(chars[i:i + 4]).encode() for i in range(max(len(chars) - 3, 1))] if chars else []
        kwargs = {} if hash_function == "sha1" else {"hashfunc": char_shingle_hash32}
        m = MinHash(num_perm=64, seed=1, **kwargs)
        m.update_batch(grams)
        assert np.array_equal(m.hashvalues, sig)


def test_verification_keeps_pairs_by_estimated_jaccard():
    docs = pq.read_table(shared("conversations_hh_rlhf/conversations_hh_rlhf.parquet")).slice(0, 40)
    texts = docs.column("chosen").to_pylist() + docs.column("rejected").to_pylist()
    sigs = signatures(pa.array(texts), MinHashParams())
    u = np.arange(40, dtype=np.int64)
    v = u + 40  # chosen vs rejected of the same conversation
    est = (sigs[u] == sigs[v]).mean(axis=1)
    sig_of = {i: sigs[i] for i in range(80)}
    for threshold in (0.3, 0.6, 0.9):
        assert np.array_equal(near.verify_edges(u, v, sig_of, threshold), est >= threshold)
    assert 0 < (est >= 0.6).sum() < 40  # the shared data has both kinds of pairs


def test_a_signature_does_not_depend_on_its_batch():
    docs = _random_docs(200, 3)
    p = MinHashParams()
    batch = signatures(pa.array(docs), p)
    alone = np.vstack([signatures(pa.array([d]), p) for d in docs[::7]])
    assert np.array_equal(batch[::7], alone)


def test_s_curve_matches_a_simulation_over_random_signatures():
    """The banding probability checked against what actually happens: for pairs of random
    signatures in which each of the 112 values agrees with probability J (what MinHash gives a
    pair of Jaccard J), the share of pairs that share at least one of the 14 bands of 8 rows
    is the S-curve's value (within 4 binomial standard errors)."""
    from tasks.dedup.minhash import MinHashParams, band_keys

    rng = np.random.default_rng(7)
    bands, rows, n = 14, 8, 4000
    params = MinHashParams(num_perm=bands * rows, bands=bands, rows=rows)
    for j in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9):
        a = rng.integers(0, 2**32, size=(n, bands * rows), dtype=np.uint64).astype(np.uint32)
        b = rng.integers(0, 2**32, size=(n, bands * rows), dtype=np.uint64).astype(np.uint32)
        b = np.where(rng.random(a.shape) < j, a, b)
        ka, kb = band_keys(a, params), band_keys(b, params)
        observed = float((ka == kb).any(axis=1).mean())
        expected = candidate_probability(j, bands, rows)
        se = max(np.sqrt(expected * (1 - expected) / n), 1e-3)
        assert abs(observed - expected) <= 4 * se, (j, observed, expected)


def _reference_components(u: np.ndarray, v: np.ndarray) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(u.tolist(), v.tolist(), strict=True):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}




@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=150),
       st.integers(1, 5))
def test_connected_components_equal_union_find(pairs, partitions):
    pairs = [(a, b) for a, b in pairs if a != b] or [(0, 1)]
    u = np.array([a for a, _ in pairs], dtype=np.int64)
    v = np.array([b for _, b in pairs], dtype=np.int64)
    assert distributed_cc(u, v, partitions) == _reference_components(u, v)


def test_long_chain_converges():
    n = 3000
    perm = np.random.default_rng(1).permutation(n).astype(np.int64)
    u, v = perm[:-1], perm[1:]  # a path in random order: the worst case for label propagation
    labels = distributed_cc(u, v, 4)
    assert set(labels.values()) == {0} and len(labels) == n


def test_candidate_edges_link_bucket_members_to_the_smallest():
    rows = pa.table({"band": pa.array([0, 0, 0, 1, 1, 2], pa.int32()),
                     "key": pa.array([5, 5, 5, 9, 9, 3], pa.uint64()),
                     "node": pa.array([30, 10, 20, 40, 10, 50], pa.int64())})
    u, v = near.candidate_edges(rows)
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(20, 10), (30, 10), (40, 10)]
    # buckets holding only documents of earlier releases produce nothing
    old = near.OLD_BIT
    rows = pa.table({"band": pa.array([0, 0], pa.int32()), "key": pa.array([1, 1], pa.uint64()),
                     "node": pa.array([old + 1, old + 2], pa.int64())})
    assert len(near.candidate_edges(rows)[0]) == 0


def test_survivor_policies():
    members = pa.table({
        "node": pa.array([1, 2, 3, near.OLD_BIT + 5], pa.int64()), "id": ["a", "b", "c", "old"],
        "release": pa.array([None, None, None, "r0"], pa.string()),
        "old": pa.array([1, 1, 1, 0], pa.int8()), "rank": pa.array([-10.0, -30.0, -20.0, 0.0]),
        "order": pa.array([1, 2, 3, 0], pa.int64()), "cluster": pa.array([1, 1, 1, 9], pa.int64())})
    d = near.choose_survivors(members).to_pylist()
    by_id = {r["id"]: r for r in d}
    assert by_id["b"]["survivor_id"] is None  # lowest rank (longest) wins
    assert by_id["a"]["survivor_id"] == "b" and by_id["c"]["survivor_id"] == "b"
    assert by_id["a"]["size"] == 3
    # an earlier release's document always survives its cluster
    members = members.set_column(members.schema.get_field_index("cluster"), "cluster",
                                 pa.array([1, 1, 1, 1], pa.int64()))
    by_id = {r["id"]: r for r in near.choose_survivors(members).to_pylist()}
    assert by_id["old"]["survivor_id"] is None
    assert {by_id[x]["survivor_release"] for x in "abc"} == {"r0"}
