"""The fast quality engine decides exactly as datatrove's classes: same pass/fail, same reason,
same C4 lines and text, for every document of every shared corpus with text, a sample of the
standard corpus and generated text over every character class. A difference names the document.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.quality import heuristics
from tasks.quality.fast.tokenizer import fast_tokenizer
from tasks.quality.verify_fast import compare, default_specs
from tests.conftest import shared

# every text column of ../shared/data (file, id column, text columns); HTML is left to the
# hypothesis test and the bench
TEXT_CORPORA = [
    ("cc_web_samples/cc_web_samples.parquet", "id", ["text"]),
    ("code_humaneval/code_humaneval.parquet", "task_id", ["text", "prompt"]),
    ("conversations_hh_rlhf/conversations_hh_rlhf.parquet", "id", ["chosen", "rejected"]),
    ("dclm_human_quality_dev/dclm_human_quality_dev.parquet", "id", ["text"]),
    ("redpajama_cc_simplified/redpajama_cc_simplified.parquet", "id", ["original", "simplified"]),
    ("simple_wikipedia/simple_wikipedia.parquet", "title", ["text"]),
    ("web_pages_readability/web_pages_readability.parquet", "id", ["page_text", "main_text"]),
    ("web_pages_scrapinghub/web_pages_scrapinghub.parquet", "id", ["page_text", "gold_text"]),
]


def corpus_docs(file: str, id_col: str, columns: list[str]) -> tuple[list[str], list[str]]:
    t = pq.read_table(shared(file), columns=[id_col, *columns])
    texts, ids = [], []
    for c in columns:
        for i, x in zip(t.column(id_col).to_pylist(), t.column(c).to_pylist(), strict=True):
            if x is not None:
                texts.append(x)
                ids.append(f"{file}:{c}:{i}")
    return texts, ids


def assert_same(texts: list[str], ids: list[str], **kw) -> None:
    res = compare(texts, ids, **kw)
    assert not res.differences, f"{len(res.differences)} differences:\n{res.describe()}"
    return res


@pytest.mark.parametrize("file,id_col,columns", TEXT_CORPORA, ids=[c[0].split("/")[0] for c in TEXT_CORPORA])
def test_shared_corpus_identical(file: str, id_col: str, columns: list[str]) -> None:
    texts, ids = corpus_docs(file, id_col, columns)
    assert texts, f"{file}: no text"
    res = assert_same(texts, ids)
    print(f"{file}: {res.documents} docs, fallback share {res.fallback_share:.4f}")


def test_tinyhelen_identical() -> None:
    from tests.corpora import tinyhelen_pairs

    pairs = tinyhelen_pairs()
    texts = [p["original"] for p in pairs] + [p["rewrite"] for p in pairs]
    ids = [f"tinyhelen:original:{k}" for k in range(len(pairs))] + [f"tinyhelen:leaner:{k}" for k in range(len(pairs))]
    assert_same(texts, ids)


def test_short_circuit_and_tag_mode_identical() -> None:
    """With short_circuit a dropped document is hidden from later filters; C4 in tag mode."""
    texts, ids = corpus_docs(*TEXT_CORPORA[0])
    specs = [heuristics.TaggerSpec(n, {}, modify=False, drop=True) for n in heuristics.TAGGERS]
    assert_same(texts, ids, specs=specs, short_circuit=True)


def test_custom_parameters_identical() -> None:
    """Non-default constructor arguments are read from the classes' instances."""
    texts, ids = corpus_docs(*TEXT_CORPORA[5])
    texts, ids = texts[:600], ids[:600]
    specs = [
        heuristics.TaggerSpec("gopher_repetition", {"top_n_grams": [(2, 0.05), (5, 0.1)],
                                                   "dup_n_grams": [(3, 0.05), (12, 0.02)]}),
        heuristics.TaggerSpec("gopher_quality", {"min_doc_words": 20, "stop_words": ["the", "a", "is"],
                                                "min_stop_words": 3, "max_avg_word_length": 6}),
        heuristics.TaggerSpec("c4_quality", {"min_num_sentences": 3, "min_words_per_line": 5}, modify=True),
        heuristics.TaggerSpec("fineweb_quality", {"line_punct_thr": 0.5, "short_line_length": 60}),
    ]
    assert_same(texts, ids, specs=specs)


def _standard_sample(n: int) -> tuple[list[str], list[str]] | None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.common import CACHE

    found = sorted(CACHE.glob("corpus-*-7/docs/part-00000.parquet"))
    if not found:
        return None
    t = pq.read_table(found[0], columns=["id", "text"]).slice(0, n)
    return t.column("text").to_pylist(), [str(x) for x in t.column("id").to_pylist()]


def test_standard_corpus_sample_identical() -> None:
    """2,000 documents of the standard corpus (../shared/bench/make_corpus.py); the whole corpus
    is checked by bench/quality_vs_datatrove.py --verify."""
    sample = _standard_sample(2000)
    if sample is None:  # build it here (a small one) rather than skip
        from bench.common import standard_corpus

        standard_corpus(2000, 1)
        sample = _standard_sample(2000)
    assert sample is not None
    res = assert_same(*sample)
    assert res.fallback_share <= 0.05, f"fallback share {res.fallback_share:.3f} above the 5% target"


def test_unicode_whitespace_is_spacy_whitespace() -> None:
    """The tokenizer splits chunks with str.split and the regex engine's \\s: both must be the
    isspace that spaCy's tokenizer loop tests."""
    ws = re.compile(r"\s")
    for c in range(0x110000):
        ch = chr(c)
        assert bool(ws.fullmatch(ch)) == ch.isspace(), f"U+{c:04X}"
        if ch.isspace():
            assert ("a" + ch + "b").split() == ["a", "b"], f"U+{c:04X}"


def test_words_equal_datatrove_words() -> None:
    from datatrove.utils.text import split_into_sentences, split_into_words

    tok = fast_tokenizer("en")
    texts, _ = corpus_docs(*TEXT_CORPORA[2])
    for t in texts[:300]:
        assert tok.words(t) == split_into_words(t), t[:200]
        for line in t.splitlines()[:5]:
            line = line.strip()
            assert tok.sentence_count(line) == len(split_into_sentences(line)), line


def test_another_spacy_version_leaves_new_chunks_to_spacy_and_stays_equal(monkeypatch) -> None:
    """``_shape`` copies spaCy 3.8's private affix loop: under another spaCy it must not run."""
    from datatrove.utils.text import split_into_words

    import tasks.quality.fast.tokenizer as fast_tok

    assert fast_tok.spacy_internals_known()  # the installed spaCy is the one the copy follows
    monkeypatch.setattr(fast_tok, "spacy_internals_known", lambda: False)
    tok = fast_tok.FastTokenizer("en")
    assert tok._plain_alphabets == frozenset() and tok._shape("well-known;") is None
    texts, _ = corpus_docs(*TEXT_CORPORA[2])
    for t in texts[:100]:
        assert tok.words(t) == split_into_words(t), t[:200]
    assert tok.shaped_chunks == 0


# -- generated text over every character class --------------------------------------------------

_SPECIALS = [":)", ":-)", "(:", "):", ":*", ":1", "=[", "''", "'s", "n't", "e.g.", "U.S.", "a.m.", "10a.m.",
             "C++", "(._.)", "<3", "o.O", ":D", "--", "...", "…", "#", "•", "- ", "{", "}", "[1]", "[edit]",
             "[citation needed]", "lorem ipsum", "javascript", "cookie policy", "IS_ALPHA", "the", "and", "of",
             "be", "to", "that", "have", "with", "!", "?", ".", "\u3002", "\uff01", "\"", "'"]
_WS = [" ", "  ", "\n", "\n\n", "\t", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\u3000",
       " \n", "\n ", "   \n\n  "]
_words = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=6),  # every Unicode category
    st.text(st.characters(max_codepoint=0x7F), min_size=1, max_size=8),  # every ASCII byte
    st.sampled_from(_SPECIALS),
    st.from_regex(r"[A-Za-z]{1,10}[.,;:!?'\")\]]{0,2}", fullmatch=True),
)
_docs = st.lists(st.tuples(_words, st.sampled_from(_WS + [" "] * 12)), min_size=0, max_size=120).map(
    lambda parts: "".join(w + s for w, s in parts))


def test_is_alpha_documents_fall_back() -> None:
    """datatrove's answer on a text with "IS_ALPHA" depends on the process's history (its spaCy
    tokenizer returns the word the first time and raises on later calls, after which datatrove
    retries without it), so there is no fixed answer to reproduce: the fast engine hands such
    documents to datatrove's classes."""
    res = heuristics.tag_all(default_specs(), ["An IS_ALPHA document. " * 20, "An ordinary document. " * 20],
                             ["is-alpha", "ordinary"], engine="fast")
    assert res.fallbacks == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_docs, min_size=1, max_size=8))
def test_generated_text_identical(texts: list[str]) -> None:
    # a text with "IS_ALPHA" has no fixed datatrove answer (test_is_alpha_documents_fall_back)
    texts = [t for t in texts if "IS_ALPHA" not in t] or ["no text at all"]
    ids = [f"generated-{k}:{t[:60]!r}" for k, t in enumerate(texts)]
    # low thresholds, so that generated documents reach every check, and the defaults
    loose = [heuristics.TaggerSpec("gopher_repetition", {}),
             heuristics.TaggerSpec("gopher_quality", {"min_doc_words": 1, "min_stop_words": 1}),
             heuristics.TaggerSpec("c4_quality", {"min_num_sentences": 1, "min_words_per_line": 1}, modify=True),
             heuristics.TaggerSpec("fineweb_quality", {"line_punct_thr": 0.0})]
    assert_same(texts, ids, specs=loose)
    assert_same(texts, ids, specs=default_specs())


def test_engine_config_and_stage_counts() -> None:
    """quality.engine defaults to fast, rejects other names, and the stage counts documents and
    fallbacks (the quality marker's ``engine``)."""
    import pyarrow as pa
    from pydantic import ValidationError

    from tasks.config import QualityConfig
    from tasks.quality import stage

    assert QualityConfig().engine == "fast"
    with pytest.raises(ValidationError):
        QualityConfig(engine="spacy")
    texts, ids = corpus_docs(*TEXT_CORPORA[4])
    docs = pa.table({"id": ids, "text": texts, "source": ["rp"] * len(ids)})
    cfgs = {e: QualityConfig(enabled=True, engine=e, language_id={"enabled": False}, combined={"enabled": False})
            for e in ("fast", "datatrove")}
    tagged = {e: stage.tag(docs, c) for e, c in cfgs.items()}
    assert tagged["fast"].engine["documents"] == len(texts)
    assert 0 < tagged["fast"].engine["fallbacks"] < len(texts)  # RedPajama has documents that need datatrove
    assert tagged["datatrove"].engine == {"name": "datatrove", "documents": len(texts), "fallbacks": 0}
    for name, col in tagged["datatrove"].attributes.items():
        assert tagged["fast"].attributes[name].equals(col), name
    figures = stage.engine_figures([{"engine": tagged["fast"].engine}])
    assert figures["fallback_share"] == tagged["fast"].engine["fallbacks"] / len(texts)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=120), st.lists(st.integers(1, 4), min_size=1, max_size=4),
       st.lists(st.integers(1, 11), min_size=1, max_size=6))
def test_repetition_kernel_equals_datatrove_functions(ids: list[int], top_ns: list[int], dup_ns: list[int]) -> None:
    """The one-pass repetition kernel gives, for every n, what datatrove's own
    ``find_top_duplicate(get_n_grams(words, n))`` and ``find_all_duplicate(words, n)`` give on
    the words; -1 for the second only when two different token sequences of the document join
    to the same string (then the engine falls back to datatrove). A vocabulary of 7 tokens
    whose texts collide when joined ("a"+"b" = "ab") makes repeated n-grams, ties and such
    ambiguities frequent."""
    import numpy as np
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_top_duplicate,
        get_n_grams,
    )

    from tasks.quality.fast import kernels

    texts = ["a", "b", "ab", "ba", "aba", "c", "bab"]
    base = int(kernels.HASH_BASE)
    tok_len = np.array([len(t) for t in texts], np.int64)
    tok_hash = np.zeros(len(texts), np.uint64)
    for i, t in enumerate(texts):
        h = 0
        for ch in t:
            h = (h * base + ord(ch)) & ((1 << 64) - 1)
        tok_hash[i] = h
    tok_pow = np.array([pow(base, len(t), 1 << 64) for t in texts], np.uint64)
    tok_pow_inv = np.array([pow(int(kernels.HASH_BASE_INV), len(t), 1 << 64) for t in texts], np.uint64)
    arr = np.array(ids, np.int64)
    props = kernels.pack_props(tok_len, tok_hash, tok_pow, tok_pow_inv)
    top, dup = kernels.repetition_stats(arr, props, np.array(top_ns, np.int64), np.array(dup_ns, np.int64))
    words = [texts[i] for i in ids]
    assert top.tolist() == [find_top_duplicate(get_n_grams(words, n)) if len(words) >= n else -1 for n in top_ns]
    for n, got in zip(dup_ns, dup.tolist(), strict=True):
        if got == -1:
            spellings: dict[str, set[tuple[int, ...]]] = {}
            for i in range(len(ids) - n + 1):
                spellings.setdefault("".join(words[i:i + n]), set()).add(tuple(ids[i:i + n]))
            assert any(len(v) > 1 for v in spellings.values()), (n, words)
        else:
            assert got == find_all_duplicate(words, n), (n, words)


def _index_chunks(text: str, known: set[str]) -> tuple[list[str], list[int]]:
    from tasks.quality.fast.chunks import ChunkIndex, encode

    index, ids = ChunkIndex(), {}
    for c in sorted(known):
        ids[c] = len(ids)
        index.add(c, ids[c])
    buf = encode(text)
    cids, starts, ends = index.lookup(buf)
    chunks = [bytes(buf[a:b]).decode("utf-8", "surrogatepass") for a, b in zip(starts, ends, strict=True)]
    assert cids.tolist() == [ids.get(c, -1) for c in chunks]
    return chunks, cids.tolist()


def test_chunk_lookup_splits_as_str_split_over_every_code_point() -> None:
    """The compiled chunker cuts at exactly the code points str.split cuts at: every code point
    of Unicode (lone surrogates included) between letters, and all of them in one chunk."""
    text = "x".join(chr(c) for c in range(0x110000))
    chunks, _ = _index_chunks(text, set())
    assert chunks == text.split()
    dense = "".join(chr(c) for c in range(0x110000) if not chr(c).isspace())
    assert _index_chunks(dense, {dense})[0] == [dense]


_any_char = st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                      st.sampled_from([c for c in map(chr, range(0x3001)) if c.isspace()]))


@settings(max_examples=300, deadline=None)
@given(st.text(_any_char, max_size=200), st.data())
def test_chunk_lookup_finds_known_chunks(text: str, data: st.DataObject) -> None:
    """Known chunks get their ids, unknown ones -1, spans decode to str.split()'s chunks."""
    words = text.split()
    known = set(data.draw(st.lists(st.sampled_from(words), unique=True))) if words else set()
    chunks, _ = _index_chunks(text, known)
    assert chunks == words


def test_plain_alphabet_proof_reads_patterns_soundly() -> None:
    import re as _re

    from tasks.quality.fast.tokenizer import PLAIN_ALPHABETS, never_within

    letters, digits = PLAIN_ALPHABETS["letters"], PLAIN_ALPHABETS["digits"]
    assert never_within(_re.compile(r"^\(|^\"|\.$|(?<=[0-9])(?:km|m)$"), letters)
    assert not never_within(_re.compile(r"(?<=[0-9])(?:km|m)$"), digits | letters)
    assert not never_within(_re.compile(r"[a-z]+"), letters)
    assert not never_within(_re.compile(r"(?<![0-9])km"), letters)  # a negative lookaround restricts nothing here
    assert not never_within(_re.compile("\u212a", _re.IGNORECASE), letters)  # KELVIN SIGN folds to k
    assert not never_within(_re.compile(r"x?"), letters)  # an empty match
    assert not never_within(_re.compile(r"[^,]"), letters)
    # the installed spaCy's English affix patterns are proven for both, so the shortcut is live
    assert fast_tokenizer("en")._plain_alphabets == {"letters", "digits"}


def _shaped_equal_spacy(chunks: set[str]) -> int:
    tok = fast_tokenizer("en")
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    ref = SpaCyTokenizer("en").tokenizer  # a pipeline of its own, as datatrove builds it
    shaped = 0
    for c in sorted(chunks):
        toks = tok._shape(c)
        if toks is None or tok._chunk_has_match(c, toks):
            continue
        shaped += 1
        want = [(t.text, bool(t.is_punct)) for t in ref(c)]
        assert [(t, bool(tok._is_punct_attr(t))) for t in toks] == want, c
    return shaped


def test_shaped_chunks_equal_spacy_on_every_corpus_chunk() -> None:
    """Every whitespace chunk of every shared corpus that the shape shortcut takes: spaCy's own
    tokens (and is_punct) for that chunk."""
    chunks: set[str] = set()
    for file, id_col, columns in TEXT_CORPORA:
        for text in corpus_docs(file, id_col, columns)[0]:
            chunks.update(text.split())
    shaped = _shaped_equal_spacy(chunks)
    assert shaped > len(chunks) // 3, (shaped, len(chunks))  # the common shapes are common


_shape_char = st.sampled_from(list("aZqK09.,;:!?()[]{}\"'`-_/\\#$%&*+<>=@^|~…“”‘’–—§°¿¡\u00a0\u200b") + ["n't"])


@settings(max_examples=600, deadline=None)
@given(st.lists(_shape_char, max_size=5),
       st.one_of(st.text(st.sampled_from(list("abcXYZ019")), min_size=1, max_size=8),
                 # cores with spaCy's infixes (hyphens, slashes, dots, operators) and URL shapes
                 st.text(st.sampled_from(list("abXY09-/.,:+*^~<>=_'’–—…é")), min_size=1, max_size=10),
                 st.sampled_from(["Mr", "can", "don", "Jan", "cannot", "gonna", "Ms", "i", "s", "m", "km", "em", "ll",
                                  "well-known", "and/or", "www.example.com", "http://a.b/c-d", "e.g", "U.S",
                                  "3-4", "x--y", "a.B"])),
       st.lists(_shape_char, max_size=5))
def test_shaped_chunks_equal_spacy_generated(pre: list[str], core: str, post: list[str]) -> None:
    chunk = "".join(pre) + core + "".join(post)
    _shaped_equal_spacy({c for c in chunk.split() if c})


def test_ascii_pruned_affix_patterns_equal_spacy_on_corpus_chunks() -> None:
    """On every ASCII whitespace chunk of every shared corpus (and its suffixes, which the affix
    loop also searches), the pruned prefix, suffix and infix patterns find what spaCy's do."""
    tok = fast_tokenizer("en")
    sp = tok.nlp.tokenizer
    assert tok._ascii_suffix is not None  # spaCy's English patterns are proven
    chunks: set[str] = set()
    for file, id_col, columns in TEXT_CORPORA:
        for text in corpus_docs(file, id_col, columns)[0]:
            chunks.update(c for c in text.split() if c.isascii())
    _ascii_hooks_equal(tok, sp, {c[i:] for c in chunks for i in range(min(len(c), 3))})


def _ascii_hooks_equal(tok: object, sp: object, strings: set[str]) -> None:
    for c in sorted(strings):
        assert tok._ascii_prefix(c) == sp.find_prefix(c), c
        assert tok._ascii_suffix(c) == sp.find_suffix(c), c
        assert [m.span() for m in tok._ascii_infix(c)] == [m.span() for m in sp.find_infix(c)], c


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from([chr(c) for c in range(33, 127) if not chr(c).isalnum() or chr(c) in "aZkm09sS"]),
               max_size=10))
def test_ascii_pruned_affix_patterns_equal_spacy_generated(text: str) -> None:
    tok = fast_tokenizer("en")
    _ascii_hooks_equal(tok, tok.nlp.tokenizer, {text})


def test_ascii_pruning_keeps_order_and_refuses_what_it_cannot_prove() -> None:
    from tasks.quality.fast.tokenizer import ascii_pruned

    # alternatives that need a non-ASCII character go; the others keep their order, whatever
    # "|" sits inside their classes and groups
    kept = ascii_pruned(re.compile(r"é$|[a|é]$|(?:é|b)$|(?<=[0-9])é|\|$|a\.\.+$"))
    assert kept is not None and kept.pattern == r"[a|é]$|(?:é|b)$|\|$|a\.\.+$"
    assert ascii_pruned(re.compile(r"(a)|é")) is None  # a capturing group: numbering would shift
    # case folding (here a global flag written in the first alternative) proves nothing: all kept
    assert ascii_pruned(re.compile(r"(?i)é|k")).pattern == r"(?i)é|k"
    assert ascii_pruned(re.compile(r"é|\u212a", re.IGNORECASE)).pattern == r"é|\u212a"  # folds onto ASCII k


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("\n\r a\u2028"), max_size=12) | st.text(max_size=30))
def test_paragraph_and_line_split_shortcut_equals_regex(text: str) -> None:
    """The engine skips datatrove's paragraph and line regexes on a text they cannot match; the
    result must be the regexes' own."""
    from tasks.quality.fast.engine import split_runs

    f = heuristics.make_filter("gopher_repetition", {})
    assert split_runs(f.paragraph_exp, text, "\n\n") == f.paragraph_exp.split(text)
    assert split_runs(f._line_splitter, text, "\n") == f._line_splitter.split(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=12))
def test_token_hashes_equal_python_fold(tokens: list[str]) -> None:
    """The compiled per-token hashes and powers equal the Python fold over ``ord`` they replaced
    (lone surrogates and characters beyond the BMP included)."""
    import numpy as np

    from tasks.quality.fast import kernels

    base, inv, mask = int(kernels.HASH_BASE), int(kernels.HASH_BASE_INV), (1 << 64) - 1
    k = len(tokens)
    h, p, q = np.zeros(k, np.uint64), np.zeros(k, np.uint64), np.zeros(k, np.uint64)
    points = np.frombuffer("".join(tokens).encode("utf-32-le", "surrogatepass"), np.uint32)
    kernels.token_hashes(points, np.array([len(t) for t in tokens], np.int64), h, p, q)
    for i, t in enumerate(tokens):
        want = 0
        for ch in t:
            want = (want * base + ord(ch)) & mask
        assert (int(h[i]), int(p[i]), int(q[i])) == (want, pow(base, len(t), 1 << 64), pow(inv, len(t), 1 << 64))


def test_learnt_chunks_give_the_same_words_and_need_no_fill() -> None:
    """``FastTokenizer.learn`` (a shard's new chunks tokenized before its documents are read):
    every document's words equal those of a tokenizer that learns chunk by chunk as documents
    come, and no document needs a chunk filled afterwards."""
    from tasks.quality.fast.tokenizer import FastTokenizer

    texts, ids = corpus_docs(*TEXT_CORPORA[0])
    more, more_ids = corpus_docs(*TEXT_CORPORA[4])
    texts, ids = texts + more, ids + more_ids
    ahead, by_doc = FastTokenizer(), FastTokenizer()
    filled: list[str] = []
    real_fill = ahead._fill
    learnt = 0
    for b in range(0, len(texts), 100):  # several blocks, each learnt before its documents are read
        ahead.learn(texts[b:b + 100])
        learnt = len(ahead._chunk_text)
        ahead._fill = lambda chunks: (filled.extend(chunks), real_fill(chunks))
        for text, doc_id in zip(texts[b:b + 100], ids[b:b + 100], strict=True):
            assert ahead.words(text) == by_doc.words(text), doc_id
        del ahead._fill
        assert not filled, filled[:5]
        assert len(ahead._chunk_text) == learnt
    assert learnt == len({c for t in texts for c in t.split()})


def test_chunks_known_without_a_match_have_none_in_the_shadow() -> None:
    """A chunk the shape shortcut (or the plain-alphabet test) takes is marked as holding no
    retokenizing special-case match without asking the shadow tokenizer; the shadow agrees on
    every such chunk of every shared corpus."""
    from tasks.quality.fast.tokenizer import FastTokenizer

    tok = FastTokenizer()
    texts = [t for file, id_col, columns in TEXT_CORPORA for t in corpus_docs(file, id_col, columns)[0]]
    tok.learn(texts)
    marked = [c for c, m in zip(tok._chunk_text, tok._has_match.tolist(), strict=False) if m == 0]
    assert len(marked) > len(tok._chunk_text) // 2, (len(marked), len(tok._chunk_text))
    wrong = [c for c in marked if tok._chunk_has_match(c)]
    assert not wrong, wrong[:20]


def test_learn_with_colliding_hashes_leaves_chunks_to_word_ids(monkeypatch) -> None:
    """``learn`` decodes one chunk per hash and gives another occurrence its id only when the
    bytes are equal: with every hash the same, one chunk is learnt and each document's other
    chunks are filled when it is read, with the same words."""
    import numpy as np

    from tasks.quality.fast import tokenizer as tokenizer_module
    from tasks.quality.fast.tokenizer import FastTokenizer

    texts, ids = corpus_docs(*TEXT_CORPORA[0])
    texts, ids = texts[:40], ids[:40]
    monkeypatch.setattr(tokenizer_module, "span_hashes", lambda buf, a, b: np.zeros(len(a), np.uint64))
    ahead, by_doc = FastTokenizer(), FastTokenizer()
    ahead.learn(texts)
    assert len(ahead._chunk_text) == 1
    for text, doc_id in zip(texts, ids, strict=True):
        assert ahead.words(text) == by_doc.words(text), doc_id
    assert len(ahead._chunk_text) == len({c for t in texts for c in t.split()})


def test_space_points_are_every_non_ascii_isspace_code_point() -> None:
    from tasks.quality.fast.chunks import SPACE_POINTS

    assert SPACE_POINTS.tolist() == [c for c in range(128, sys.maxunicode + 1) if chr(c).isspace()]


def _proofs_equal_uncached(tok: object, plain: frozenset[str], hooks: tuple) -> None:
    from tasks.quality.fast.tokenizer import ascii_hooks, plain_alphabets

    assert plain == plain_alphabets(tok) == {"letters", "digits"}
    ref = ascii_hooks(tok)
    assert hooks[2].__self__.pattern == ref[2].__self__.pattern
    for s in ["(well", "known).", "U.S.", "$12.50", "a-b", "'s", "...", "http://x.y", "e.g.,", "100%"]:
        assert (hooks[0](s), hooks[1](s)) == (ref[0](s), ref[1](s)) == (tok.find_prefix(s), tok.find_suffix(s)), s


def test_affix_proofs_cached_on_disk_keyed_and_rebuilt_when_corrupt(tmp_path: Path, monkeypatch) -> None:
    import spacy

    from tasks.quality.fast import tokenizer as tk

    monkeypatch.setenv("REFINERY_CACHE", str(tmp_path))
    tok = fast_tokenizer("en").nlp.tokenizer
    plain, hooks = tk.affix_proofs(tok)
    files = list((tmp_path / "proofs").glob("affix-*.json"))
    assert len(files) == 1 and not list((tmp_path / "proofs").glob("*.tmp"))
    _proofs_equal_uncached(tok, plain, hooks)
    good = files[0].read_text()

    # the second process reads the proof instead of proving again
    def no_proof(*_a: object) -> bool:
        raise AssertionError("proven again although cached")

    with monkeypatch.context() as m:
        m.setattr(tk, "never_within", no_proof)
        cached = tk.affix_proofs(tok)
    _proofs_equal_uncached(tok, *cached)

    # a corrupt entry (bytes, another key, an alternative that does not exist) is proven again
    import json

    bad_index = json.loads(good)
    bad_index["ascii_kept"][1] = [0, 10_000]
    other_key = dict(json.loads(good), key="0" * 64)
    for corrupt in [b"\x00\xff{not json", json.dumps(bad_index).encode(), json.dumps(other_key).encode()]:
        files[0].write_bytes(corrupt)
        _proofs_equal_uncached(tok, *tk.affix_proofs(tok))
        assert files[0].read_text() == good

    # another spaCy version is another entry
    monkeypatch.setattr(spacy, "__version__", spacy.__version__ + ".post-test")
    tk.affix_proofs(tok)
    assert len(list((tmp_path / "proofs").glob("affix-*.json"))) == 2

    # other proof code (this module's source changed) is another entry, never the old proof
    changed = tmp_path / "tokenizer_changed.py"
    changed.write_bytes(Path(tk.__file__).read_bytes() + b"\n# a change to the proof's code\n")
    monkeypatch.setattr(tk, "__file__", str(changed))
    tk.affix_proofs(tok)
    assert len(list((tmp_path / "proofs").glob("affix-*.json"))) == 3

    # an unwritable cache costs the proof, not the answer
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("REFINERY_CACHE", str(blocker))
    _proofs_equal_uncached(tok, *tk.affix_proofs(tok))


def test_learn_blocks_are_cut_by_characters_and_stay_identical(monkeypatch) -> None:
    """A shard of long pages learns in blocks bounded by characters as well as documents (the
    block's arrays peak at about 20 times its text), every document is in exactly one block, in
    order, a document longer than the bound is a block of its own, and decisions stay datatrove's."""
    from tasks.quality.fast.engine import FastFilters

    texts, ids = corpus_docs(*TEXT_CORPORA[-1])  # scrapinghub: whole pages, up to ~100 KB
    texts, ids = texts[:150], ids[:150]
    cap = 20_000
    monkeypatch.setattr(heuristics, "LEARN_CHARS", cap)
    blocks: list[list[str]] = []
    real_learn = FastFilters.learn

    def spy(self, filters, block):
        if block:
            blocks.append(list(block))
        return real_learn(self, filters, block)

    monkeypatch.setattr(FastFilters, "learn", spy)
    assert_same(texts, ids)
    fast_blocks = blocks  # compare() runs the fast engine once; the datatrove engine learns nothing
    assert [t for b in fast_blocks for t in b] == texts
    assert any(len(b) > 1 for b in fast_blocks), "no block held more than one page"
    for b in fast_blocks:
        assert len(b) == 1 or sum(map(len, b)) <= cap, [len(t) for t in b]
    assert any(len(b) == 1 and len(b[0]) > cap for b in fast_blocks), "no page longer than the cap"


def test_lone_surrogates_go_to_datatrove_with_its_reasons() -> None:
    """datatrove's Gopher filters fail on a lone surrogate with an encoding error as the reason;
    the fast engine leaves such a text to datatrove, so reasons stay the same."""
    texts = ["The cat sat on the mat and looked at the \ud800 dog. " * 30,
             "A plain sentence about a river and a town. " * 30]
    res = assert_same(texts, ["surrogate", "plain"])
    assert res.fallbacks == 1
