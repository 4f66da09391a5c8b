"""datatrove's English word and sentence tokenization, exactly, at dictionary-lookup speed.

datatrove tokenizes English with ``spacy.blank("en")`` plus spaCy's ``sentencizer``
(``datatrove.utils.word_tokenizers.SpaCyTokenizer``). spaCy's tokenizer (``tokenizer.pyx``,
``_tokenize_affixes``) first cuts the text at every change between whitespace and
non-whitespace (``str.isspace``); a single ``' '`` after a chunk is absorbed as that token's
trailing space, any other whitespace run becomes a chunk of its own. Each chunk is then split by
prefixes, suffixes, infixes and special cases with no regard to its neighbours (spaCy itself
caches the result per chunk string). The one step that sees across chunks is the special-case
``PhraseMatcher`` pass (``_apply_special_cases``): its multi-token patterns could match tokens of
two neighbouring chunks. So:

- a chunk's tokens are spaCy's own tokens for that chunk alone, computed once and cached here
  (the rules are spaCy's; nothing is copied); a chunk where no special case is met
  (``FastTokenizer._shape``) follows spaCy's affix loop and infix cut with spaCy's own affix
  functions instead of its whole tokenizer (on an ASCII chunk, its patterns without the
  alternatives proven unable to match ASCII, ``ascii_pruned``), a plain core's being one token
  proven from spaCy's compiled patterns;
- a document where two adjacent tokens of neighbouring chunks form a consecutive pair of any
  multi-token special-case pattern is tokenized by spaCy itself (``slow_docs`` counts them);
- datatrove's word list drops whitespace tokens (``strip_strings``), so a document's words are
  the concatenated tokens of its non-whitespace chunks (``str.split()`` splits at exactly the
  characters spaCy's loop tests, ``Py_UNICODE_ISSPACE``);
- the sentencizer is a two-state machine over tokens (``seen_period``); each chunk's effect on
  it is precomputed, from spaCy's own ``punct_chars`` and ``Token.is_punct``.

``tests/test_quality_fast.py`` checks all of this against datatrove on every shared corpus and on
generated text, so that a spaCy upgrade that changes a rule is caught.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import sys
import tempfile
from itertools import chain
from pathlib import Path

# the regex parser CPython's re compiles with: no public API since 3.11 deprecated sre_parse;
# reading spaCy's compiled patterns with it is what proves the shortcut below safe, and any
# failure to read them turns the shortcut off (plain_alphabets)
from re import _constants as _sre_constants
from re import _parser as _sre_parser
from typing import Any

import numpy as np
from numba import njit

from tasks.quality.fast.chunks import ChunkIndex, encode, same_spans, span_hashes
from tasks.quality.models import cache_root

# Py_UNICODE_ISSPACE in the regex engine, the same predicate as str.isspace (a test checks it
# over every code point)
_WS_RUNS = re.compile(r"(\s+)")


class FastTokenizer:
    """Word lists and sentence counts equal to datatrove's for one language (English)."""

    def __init__(self, language: str = "en"):
        from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_word_tokenizer

        ref = load_word_tokenizer(language)
        if not is_plain_english(ref):
            raise ValueError(f"fast tokenizer: language {language!r} is not datatrove's plain spaCy English")
        # a pipeline of our own, built as datatrove builds its own (blank English + sentencizer):
        # sharing datatrove's would change its state, and spaCy's answer on a text containing
        # "IS_ALPHA" depends on that state (it raises once the string is known; datatrove then
        # retries without it), so the documents that fall back must meet datatrove's pipeline as
        # a datatrove-only run leaves it
        self.reference = ref
        self.nlp = SpaCyTokenizer(ref.language, ref.config).tokenizer
        self.punct_chars = frozenset(self.nlp.get_pipe("sentencizer").punct_chars)
        self.tok_index: dict[str, int] = {}
        self.tok_text: list[str] = []
        self.tok_is_punct: list[bool] = []
        self._cache: dict[str, int] = {}  # chunk -> chunk id
        self._index = ChunkIndex()  # the same, for the compiled lookup over a document's bytes
        # per chunk id: its tokens (CSR), whether a retokenizing special case matches inside it,
        # and its sentencizer transition (state after, new sentences) from state 0 and from 1
        self._off = np.zeros(1025, np.int64)
        self._toks = np.zeros(4096, np.int64)
        # -1: not known yet (computed only for chunks at a boundary that needs it)
        self._has_match = np.full(1024, -1, np.int8)
        self._chunk_text: list[str] = []
        self._sent: list[tuple[int, int, int, int]] = []
        # per token: class of its last and of its first character among the edge characters
        self._last_class = np.zeros(1024, np.int64)
        self._first_class = np.zeros(1024, np.int64)
        # per token: one of the sentencizer's punct_chars; Token.is_punct (for transitions)
        self._tok_in_punct = np.zeros(1024, np.bool_)
        self._tok_punct = np.zeros(1024, np.bool_)
        self._special_patterns()
        from spacy.attrs import IS_PUNCT

        # the function spaCy computes Lexeme.is_punct with (lex_attr_getters)
        self._is_punct_attr = self.nlp.vocab.lex_attr_getters[IS_PUNCT]
        # this pipeline's tokens are read for ORTH and IS_PUNCT only, and spaCy computes every
        # lexical attribute of every new string in Python (most of the cost of a chunk it
        # tokenizes); the tokenizer reads none of them (its rules were loaded above), and the
        # pipeline is ours alone (datatrove's keeps its getters)
        self.nlp.vocab.lex_attr_getters = {IS_PUNCT: self._is_punct_attr}
        self.slow_docs = 0
        # what learn found: per learnt text (by id, the text kept so that the id is not reused)
        # its chunks' range in the block's arrays (bytes, chunk ids, starts, ends)
        self._ahead: dict[int, tuple[str, int, int]] = {}
        self._block: tuple[np.ndarray, ...] = ()
        # alphabets (ASCII letters, ASCII digits) over which, provably, no prefix, suffix or infix
        # pattern matches anything: a chunk of one of them is one token, and one with a single
        # affix character more splits in a known way (_shape); empty when spaCy's regexes or
        # hooks are not what the proof reads
        plain, hooks = affix_proofs(self.nlp.tokenizer)
        self._plain_alphabets = plain if spacy_internals_known() else frozenset()
        # a string of one proven alphabet, in one C call (it is asked several times a new chunk)
        self._plain_match = re.compile("|".join(
            [r"[A-Za-z]+"] * ("letters" in self._plain_alphabets) + [r"[0-9]+"] * ("digits" in self._plain_alphabets))
            or "(?!)").fullmatch
        self.shaped_chunks = 0
        # the affix patterns without their alternatives that cannot match in an ASCII string:
        # the same answers for an ASCII chunk, cheaper (docs/quality.md, branch s11-23: find_suffix
        # 3.0 -> 1.2 us on a short chunk); None: not proven, unused
        self._ascii_prefix, self._ascii_suffix, self._ascii_infix = hooks

    # -- special-case patterns that could match across chunks --------------------------------
    def _special_patterns(self) -> None:
        """What the guard needs from the special-case matcher's patterns.

        The matcher runs on the whole document after the per-chunk pass. A match across chunks
        joins tokens with whitespace between them, so its text is no special case and it never
        retokenizes; but it can displace an overlapping match inside a chunk
        (``_filter_special_spans`` keeps the longest, then the later one). So a document is done by
        spaCy itself only when, at some chunk boundary, the characters on either side could start
        such a match (the last character of a pattern token and the first of the next) and one of
        the two chunks holds a match of its own: a pattern occurring, token-aligned, in the
        chunk's tokens before the matcher pass (from a shadow tokenizer with the same rules and
        an empty matcher)."""
        from spacy.tokenizer import Tokenizer

        tok = self.nlp.tokenizer
        # a special case's pattern is its tokenization without special cases (tokenizer.pyx,
        # add_special_case: _tokenize_affixes(string, False)); only these strings are matched
        plain = Tokenizer(self.nlp.vocab, rules={}, prefix_search=tok.prefix_search,
                          suffix_search=tok.suffix_search, infix_finditer=tok.infix_finditer,
                          token_match=tok.token_match, url_match=tok.url_match)
        edges: set[tuple[str, str]] = set()
        patterns: dict[str, list[tuple[str, ...]]] = {}
        for s in tok.rules:
            if tok.faster_heuristics and not (tok.find_prefix(s) or tok.find_infix(s) or tok.find_suffix(s)
                                              or " " in s):
                continue
            pattern = [t.text for t in plain(s)]
            if any(ch.isspace() for p in pattern for ch in p):
                if len(pattern) > 1:
                    # a whitespace token inside a pattern would make whitespace boundaries unsafe too
                    raise ValueError(f"fast tokenizer: special case {s!r} has a whitespace token; unsupported")
                continue  # a whitespace token never overlaps a match of non-whitespace tokens
            from spacy.symbols import ORTH

            if [sub[ORTH] for sub in tok.rules[s]] != pattern:
                # only a match that retokenizes matters when it is displaced
                patterns.setdefault(pattern[0], []).append(tuple(pattern))
            edges.update((x[-1], y[0]) for x, y in zip(pattern[:-1], pattern[1:], strict=False))
        chars = sorted({c for e in edges for c in e})
        self._char_class = {c: k + 1 for k, c in enumerate(chars)}
        self._edge_matrix = np.zeros((len(chars) + 1, len(chars) + 1), bool)
        for x, y in edges:
            self._edge_matrix[self._char_class[x], self._char_class[y]] = True
        self._patterns = patterns
        # the shadow: special cases are loaded while its affix functions find nothing, so that
        # add_special_case gives its matcher no pattern; then they find what the real ones do
        live = [False]
        real = (tok.prefix_search, tok.suffix_search, tok.infix_finditer)
        self._shadow = Tokenizer(
            self.nlp.vocab, rules=None,
            prefix_search=lambda x: real[0](x) if live[0] and real[0] else None,
            suffix_search=lambda x: real[1](x) if live[0] and real[1] else None,
            infix_finditer=lambda x: real[2](x) if live[0] and real[2] else iter(()),
            token_match=tok.token_match, url_match=tok.url_match)
        self._shadow.rules = {k: v for k, v in tok.rules.items() if " " not in k}
        live[0] = True

    def _chunk_has_match(self, chunk: str, first_pass: list[str] | None = None) -> bool:
        """Whether the special-case matcher finds, inside this chunk alone, a match that
        retokenizes."""
        if first_pass is None:
            first_pass = [t.text for t in self._shadow(chunk)]
        for i, t in enumerate(first_pass):
            for p in self._patterns.get(t, ()):
                if tuple(first_pass[i:i + len(p)]) == p:
                    return True
        return False

    def _unsafe(self, left: int, right: int) -> bool:
        """Whether a special-case match across the boundary of these two chunks (ids) could change
        tokens."""
        t = self._toks
        if not self._edge_matrix[self._last_class[t[self._off[left + 1] - 1]], self._first_class[t[self._off[right]]]]:
            return False
        self._know_matches(np.array([left, right], np.int64))
        return bool(self._has_match[left] == 1 or self._has_match[right] == 1)

    def _know_matches(self, cids: np.ndarray) -> None:
        """Fill ``_has_match`` for these chunks (one shadow call for all of them)."""
        todo = [int(c) for c in dict.fromkeys(cids.tolist()) if self._has_match[c] < 0]
        if not todo:
            return
        groups = _groups([t.text for t in self._shadow("\n".join(self._chunk_text[c] for c in todo))], "\n")
        if len(groups) != len(todo):
            groups = [None] * len(todo)  # not expected; per chunk below
        for c, first_pass in zip(todo, groups, strict=True):
            self._has_match[c] = self._chunk_has_match(self._chunk_text[c], first_pass)

    def _intern(self, text: str, is_punct: bool | None = None) -> int:
        i = self.tok_index.get(text)
        if i is None:
            i = self.tok_index[text] = len(self.tok_text)
            self._intern_many([text], [bool(self.nlp.vocab[text].is_punct) if is_punct is None else is_punct])
        return i

    def _intern_many(self, texts: list[str], puncts: list[bool]) -> None:
        """Give these new tokens (already in ``tok_index``, in order) their per-token rows, one
        slice assignment per table (an element write per token cost more than its lookup)."""
        n0 = len(self.tok_text)
        n1 = n0 + len(texts)
        self.tok_text.extend(texts)
        self.tok_is_punct.extend(puncts)
        if n1 > len(self._last_class):
            self._last_class = _grow(self._last_class, n1)
            self._first_class = _grow(self._first_class, n1)
            self._tok_in_punct = _grow(self._tok_in_punct, n1)
            self._tok_punct = _grow(self._tok_punct, n1)
        pc, cc = self.punct_chars, self._char_class
        self._tok_in_punct[n0:n1] = [t in pc for t in texts]
        self._tok_punct[n0:n1] = puncts
        self._last_class[n0:n1] = [cc.get(t[-1], 0) for t in texts]
        self._first_class[n0:n1] = [cc.get(t[0], 0) for t in texts]

    def _fill(self, chunks: list[str]) -> None:
        """Tokenize the unseen chunks in one spaCy call: joined by newlines, whose tokens no
        special-case pattern contains, so that no match crosses from one chunk to the next and
        each chunk's tokens are its own."""
        new = []
        known: list[tuple[str, list[str]]] = []  # chunks whose tokens are known without spaCy
        rules, patterns, plain = self.nlp.tokenizer.rules, self._patterns, self._plain_match
        for c in dict.fromkeys(c for c in chunks if c not in self._cache):
            if plain(c) is not None and c not in rules and c not in patterns:
                # what _shape and _chunk_has_match conclude for a chunk of a plain alphabet (one
                # token, itself, starting no pattern), without their calls
                known.append((c, [c]))
                self.shaped_chunks += 1
                continue
            shaped = self._shape(c)
            # those are the tokens before the special-case matcher pass; a chunk in which that
            # pass would retokenize goes to spaCy
            # (a chunk _shape declines, a special case met, nothing left between the affixes or
            # no plain alphabet proven, goes to spaCy's own tokenizer)
            # a match starts at a pattern's first token: most chunks hold none
            if shaped is not None and (patterns.keys().isdisjoint(shaped) or not self._chunk_has_match(c, shaped)):
                self.shaped_chunks += 1
                known.append((c, shaped))
            else:
                new.append(c)
        if known:
            # their tokens are the shadow tokenizer's first pass (no special case met), in which
            # no retokenizing pattern occurs (checked above): _know_matches would find no match
            self._add_many([c for c, _ in known], [toks for _, toks in known], matchless=True)
        if not new:
            return
        joined = "\n".join(new)
        # the Doc's arrays, not Token objects (one Python object per token cost more than spaCy)
        from spacy.attrs import IS_PUNCT, ORTH

        strings = self.nlp.vocab.strings
        arr = self.nlp.tokenizer(joined).to_array([ORTH, IS_PUNCT]).tolist()
        real = _groups([(strings[o], bool(p)) for o, p in arr], ("\n", False))
        if len(real) != len(new):
            for c in new:  # not expected; one call per chunk is always right
                self._add(c)
            return
        self._add_many(new, [[t for t, _ in toks] for toks in real], [[p for _, p in toks] for toks in real])

    def _shape(self, chunk: str) -> list[str] | None:
        """spaCy's tokens of a chunk (before the special-case matcher pass) without running its
        tokenizer: ``Tokenizer._split_affixes`` (spaCy 3.8) step by step, with spaCy's own
        ``find_prefix`` and ``find_suffix`` and its special cases (``rules``), stopping early at
        a core of a plain alphabet (``plain_alphabets``), which ``_attach_tokens`` pushes as one
        token: not a special case, no prefix, suffix or infix can match in it (and spaCy's cache
        holds, for such a string, that same one token); any other core is cut as
        ``_attach_tokens`` cuts it (``_attach_core``). ``None`` when a special case is met or
        nothing is left between the affixes (spaCy then tokenizes the chunk)."""
        if not self._plain_alphabets:
            return None
        tok = self.nlp.tokenizer
        rules = tok.rules
        ascii_ = self._ascii_suffix is not None and chunk.isascii()
        if ascii_:
            find_prefix, find_suffix = self._ascii_prefix, self._ascii_suffix
        else:
            find_prefix, find_suffix = tok.find_prefix, tok.find_suffix
        plain = self._plain_match
        string = chunk
        prefixes: list[str] = []
        suffixes: list[str] = []
        last_size = 0
        while string and len(string) != last_size:
            if string in rules:
                return None
            if plain(string) is not None:
                break  # this round would find no prefix and no suffix: the loop ends unchanged
            last_size = len(string)
            pre_len = find_prefix(string)
            if pre_len and string[pre_len:] in rules:
                return None  # spaCy stops at a special case
            suf_len = find_suffix(string[pre_len:])
            if suf_len and string[:-suf_len] in rules:
                return None
            if pre_len and suf_len and pre_len + suf_len <= len(string):
                prefixes.append(string[:pre_len])
                suffixes.append(string[-suf_len:])
                string = string[pre_len:-suf_len]
            elif pre_len:
                prefixes.append(string[:pre_len])
                string = string[pre_len:]
            elif suf_len:
                suffixes.append(string[-suf_len:])
                string = string[:-suf_len]
        if not string or string in rules:
            return None
        if plain(string) is not None:
            return [*prefixes, string, *reversed(suffixes)]
        return [*prefixes, *self._attach_core(string, ascii_), *reversed(suffixes)]

    def _attach_core(self, string: str, ascii_: bool) -> list[str]:
        """The tokens ``Tokenizer._attach_tokens`` (spaCy 3.8) makes of the core left by the affix
        loop, when it is no special case and there is no ``token_match`` (``_shape`` checked
        both): one token when spaCy's ``url_match`` matches, else the core cut at spaCy's infix
        matches (an empty match adds no token; one at position 0 is skipped, as spaCy skips it)."""
        tok = self.nlp.tokenizer
        if tok.url_match is not None and tok.url_match(string):
            return [string]
        matches = self._ascii_infix(string) if ascii_ else tok.find_infix(string)
        out: list[str] = []
        start = 0
        for m in matches:
            a, b = m.start(), m.end()
            if a == 0:
                continue
            if a != start:
                out.append(string[start:a])
            if a != b:
                out.append(string[a:b])
            start = b
        if start < len(string):
            out.append(string[start:])
        return out

    def _add(self, chunk: str) -> int:
        toks = list(self.nlp.tokenizer(chunk))
        return self._add_many([chunk], [[t.text for t in toks]], [[bool(t.is_punct) for t in toks]])

    def _add_many(self, chunks: list[str], tokens: list[list[str]], puncts: list[list[bool]] | None = None,
                  matchless: bool = False) -> int:
        """Give these new chunks the next ids, with their tokens and sentencizer transitions, in
        one pass: per-chunk Python and numpy writes cost more than the lookups that find the
        tokens. ``puncts``: each token's ``is_punct`` as spaCy gave it; without them a token's is
        asked of spaCy's ``is_punct`` getter, only the first time it is seen. ``matchless``: no
        retokenizing special-case match inside any of these chunks is known already. Returns the
        first chunk's id."""
        n0 = len(self._sent)
        k = len(chunks)
        index = self.tok_index
        get = index.get
        next_id = len(self.tok_text)
        new_toks: list[str] = []
        new_punct: list[bool] = []
        flat: list[int] = []
        append = flat.append
        punct = self._is_punct_attr
        try:
            if puncts is None:
                for t in chain.from_iterable(tokens):
                    i = get(t)
                    if i is None:
                        i = index[t] = next_id + len(new_toks)
                        new_toks.append(t)
                        new_punct.append(bool(punct(t)))
                    append(i)
            else:
                for t, p in zip(chain.from_iterable(tokens), chain.from_iterable(puncts), strict=True):
                    i = get(t)
                    if i is None:
                        i = index[t] = next_id + len(new_toks)
                        new_toks.append(t)
                        new_punct.append(p)
                    append(i)
        except BaseException:  # no index entry may point past the token rows
            for t in new_toks:
                del index[t]
            raise
        lens = list(map(len, tokens))
        if new_toks:
            self._intern_many(new_toks, new_punct)
        self._cache.update(zip(chunks, range(n0, n0 + k), strict=True))
        self._chunk_text.extend(chunks)
        self._index.add_many(chunks, n0)
        if n0 + k + 1 > len(self._off):
            self._off = _grow(self._off, n0 + k + 1)
        if n0 + k > len(self._has_match):
            grown = np.full(max(n0 + k, 2 * len(self._has_match)), -1, np.int8)
            grown[: len(self._has_match)] = self._has_match
            self._has_match = grown
        if matchless:
            self._has_match[n0:n0 + k] = 0
        start = int(self._off[n0])
        if start + len(flat) > len(self._toks):
            self._toks = _grow(self._toks, start + len(flat))
        flat_arr = np.array(flat, np.int64)
        self._toks[start:start + len(flat)] = flat_arr
        ends = np.cumsum(np.array(lens, np.int64))
        self._off[n0 + 1:n0 + k + 1] = start + ends
        offs = np.zeros(k + 1, np.int64)
        offs[1:] = ends
        n_tok = len(self.tok_text)
        self._sent.extend(map(tuple, transitions(flat_arr, offs, self._tok_in_punct[:n_tok],
                                                 self._tok_punct[:n_tok]).tolist()))
        return n0

    # -- words ---------------------------------------------------------------------------------
    def learn(self, texts: list[str]) -> None:
        """Tokenize the chunks of these documents not seen yet, all at once, and find every
        chunk of theirs in one compiled pass; ``word_ids`` then reads a learnt document's chunk
        ids from here instead of splitting and looking it up again.

        A chunk's tokens do not depend on its neighbours, so they can be learnt before the
        documents are read one by one; what this saves is the fixed cost ``word_ids`` pays per
        document with a new chunk (a ``_fill``, an ``_add_many`` with its array writes, a flush of
        the chunk table, the token tables' update), which on a cold shard is nearly every
        document. The documents' bytes are joined by ``"\n"`` (whitespace, so the chunks found
        are exactly the documents' chunks). The caller bounds the memory held (until the next
        call) by what it passes: ``tasks.quality.heuristics`` cuts blocks at ``LEARN_DOCS``
        documents and ``LEARN_CHARS`` characters."""
        parts = [t.encode("utf-8", "surrogatepass") for t in texts]
        buf = np.frombuffer(b"\n".join(parts), np.uint8)
        cids, starts, ends = self._index.lookup(buf)
        unknown = np.flatnonzero(cids < 0)
        if len(unknown):
            us, ue = starts[unknown], ends[unknown]
            # one occurrence per hash: a frequent new word is decoded once, not at each occurrence
            _, first, inv = np.unique(span_hashes(buf, us, ue), return_index=True, return_inverse=True)
            order = np.argsort(first)  # chunk ids in order of first occurrence, as word_ids gives them
            raw = buf.tobytes()
            reps = [raw[a:b].decode("utf-8", "surrogatepass")
                    for a, b in zip(us[first].tolist(), ue[first].tolist(), strict=True)]
            self._fill([reps[u] for u in order.tolist()])
            cache = self._cache
            rep_ids = np.array([cache[r] for r in reps], np.int64)
            # an occurrence takes its representative's id only if their bytes are equal (a hash
            # collision leaves it unknown, for word_ids to fill as before)
            rs, re_ = us[first][inv.ravel()], ue[first][inv.ravel()]
            same = same_spans(buf, us, ue, rs, re_)
            cids[unknown] = np.where(same, rep_ids[inv.ravel()], -1)
        lens = np.fromiter(map(len, parts), np.int64, len(parts))
        doc_start = np.cumsum(lens + 1) - lens - 1
        lo = np.searchsorted(starts, doc_start).tolist()
        hi = np.searchsorted(starts, doc_start + lens).tolist()
        self._ahead = {id(t): (t, a, b) for t, a, b in zip(texts, lo, hi, strict=True)}
        self._block = (buf, cids, starts, ends)

    def word_ids(self, text: str) -> np.ndarray:
        """Token ids of ``datatrove.utils.text.split_into_words(text)``."""
        hit = self._ahead.get(id(text))
        if hit is not None and hit[0] is text:  # its chunks were found by learn
            buf, cids, starts, ends = self._block
            cids, starts, ends = cids[hit[1]:hit[2]].copy(), starts[hit[1]:hit[2]], ends[hit[1]:hit[2]]
        else:
            buf = encode(text)
            cids, starts, ends = self._index.lookup(buf)
        if len(cids) and cids.min() < 0:
            new = [bytes(buf[a:b]).decode("utf-8", "surrogatepass")
                   for a, b in zip(starts[cids < 0].tolist(), ends[cids < 0].tolist(), strict=True)]
            self._fill(new)
            # every new chunk now has its id: filled in here, not by a second pass over the bytes
            cache = self._cache
            cids[cids < 0] = [cache[c] for c in new]
        ids, unsafe, need = expand_chunks(cids, self._off, self._toks, self._has_match, self._last_class,
                                          self._first_class, self._edge_matrix)
        if len(need):
            self._know_matches(need)
            ids, unsafe, need = expand_chunks(cids, self._off, self._toks, self._has_match, self._last_class,
                                              self._first_class, self._edge_matrix)
        if unsafe:
            return self._slow_word_ids(buf, cids, starts, ends, ids)
        return ids

    def _slow_word_ids(self, buf: np.ndarray, cids: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                       cached: np.ndarray) -> np.ndarray:
        """The words of a document where a special-case pattern may match across chunks.

        Only the runs of chunks that such a match could join need spaCy: a match spans
        consecutive pattern tokens, so it crosses a chunk boundary only where the characters on
        either side are an edge pair of some pattern. Cutting the document at every other boundary
        gives runs that no match crosses; spaCy's span filter (``_filter_special_spans``: longest
        first, then by start, a span losing to any earlier span that holds its first or last
        token) only compares overlapping spans, so a run's matches and their outcome are the
        same whether spaCy sees the run or the whole document. A run whose chunks hold no
        retokenizing match keeps its cached tokens (``cached``: every chunk's, in order); any
        other run is tokenized by spaCy from its own text (the document from the run's first
        chunk to its last, whitespace as it is), whitespace tokens dropped as ``strip_strings``
        does."""
        self.slow_docs += 1
        off, toks = self._off, self._toks
        cut = run_starts(cids, off, toks, self._last_class, self._first_class, self._edge_matrix)
        pos = np.zeros(len(cids) + 1, np.int64)  # where each chunk's cached tokens begin
        np.cumsum(off[cids + 1] - off[cids], out=pos[1:])
        pieces: list[np.ndarray] = []
        done = 0  # chunks before this one are in pieces
        for start, end in zip(cut[:-1].tolist(), cut[1:].tolist(), strict=True):
            if end - start < 2:
                continue
            run = cids[start:end]
            self._know_matches(run)
            if (self._has_match[run] == 1).any():
                pieces.append(cached[pos[done]:pos[start]])
                run_text = bytes(buf[starts[start]:ends[end - 1]]).decode("utf-8", "surrogatepass")
                pieces.append(np.array(self._spacy_words(run_text), np.int64))
                done = end
        pieces.append(cached[pos[done]:])
        return np.concatenate(pieces)

    def _spacy_words(self, text: str) -> list[int]:
        # no memory_zone: leaving one flushes spaCy's own chunk cache, which costs more than the
        # lexemes it would free
        from spacy.attrs import ORTH

        strings = self.nlp.vocab.strings
        toks = [strings[o] for o in self.nlp.tokenizer(text).to_array(ORTH).tolist()]
        return [self._intern(w.strip()) for w in toks if w.strip()]

    def words(self, text: str) -> list[str]:
        return [self.tok_text[i] for i in self.word_ids(text)]

    # -- sentences -----------------------------------------------------------------------------
    def sentence_count(self, text: str) -> int:
        """``len(datatrove.utils.text.split_into_sentences(text))``."""
        parts = _WS_RUNS.split(text)
        # parts alternate chunk, whitespace, chunk, ...; empty chunks at either end
        sent = self._sent
        seen, events, tokens = 0, 0, 0
        prev = -1
        for k, part in enumerate(parts):
            if not part:
                continue
            if k % 2:  # whitespace run: spaCy absorbs one leading ' ' into the previous token
                rest = part[1:] if part[0] == " " and k > 0 and parts[k - 1] else part
                if rest:
                    # whitespace tokens are neither punctuation nor sentence ends
                    if seen:
                        events += 1
                        seen = 0
                    tokens += 1
                    prev = -1
                continue
            cid = self._cache.get(part)
            if cid is None:
                cid = self._add(part)
            tr = sent[cid]
            if prev >= 0 and self._unsafe(prev, cid):
                self.slow_docs += 1
                return self._slow_sentence_count(text)
            if seen:
                seen, ev = tr[2], tr[3]
            else:
                seen, ev = tr[0], tr[1]
            events += ev
            tokens += int(self._off[cid + 1] - self._off[cid])
            prev = cid
        # span_tokenize + zip in split_into_parts gives max(#sentences, 1) parts
        return 1 + events if tokens else 1

    def _slow_sentence_count(self, text: str) -> int:
        from datatrove.utils.text import split_into_sentences

        return len(split_into_sentences(text))


PLAIN_ALPHABETS = {"letters": frozenset(map(ord, string.ascii_letters)), "digits": frozenset(map(ord, string.digits))}


def spacy_internals_known() -> bool:
    """``_shape`` and ``_attach_core`` follow spaCy 3.8's ``Tokenizer._split_affixes`` and
    ``_attach_tokens`` (private, Cython): another spaCy leaves every new chunk to its own
    tokenizer, slower and still equal."""
    import spacy

    return spacy.__version__.startswith("3.8.")


def plain_alphabets(tok: object) -> frozenset[str]:
    """The alphabets of ``PLAIN_ALPHABETS`` within whose strings no prefix, suffix or infix
    pattern of this tokenizer can match at all, proven from the compiled patterns themselves
    (``never_within``); none when the tokenizer has a ``token_match`` or an affix hook that is
    not a compiled pattern's method."""
    if getattr(tok, "token_match", None) is not None:
        return frozenset()
    patterns = affix_patterns(tok)
    if patterns is None:
        return frozenset()
    return frozenset(name for name, alphabet in PLAIN_ALPHABETS.items()
                     if all(never_within(p, alphabet) for p in patterns))


# what a cached proof means: bumped whenever never_within, ascii_kept or PLAIN_ALPHABETS change
PROOF_SCHEME = 1


def affix_proofs(tok: object) -> tuple[frozenset[str], tuple[Any, Any, Any]]:
    """``plain_alphabets(tok)`` and ``ascii_hooks(tok)``, the proofs behind them (0.08-0.11 CPU-s
    measured, paid by every worker process) kept on disk under ``REFINERY_CACHE``'s ``proofs/``,
    keyed by what they depend on: the patterns' text and flags, spaCy's and Python's versions
    (the proof reads Python's regex parser), this module's source and ``PROOF_SCHEME``. An entry that is absent, unreadable or
    inconsistent with the patterns is proven again and rewritten; an unwritable cache only
    costs the proof."""
    patterns = affix_patterns(tok)
    if patterns is None or not all(isinstance(p.pattern, str) for p in patterns):
        return plain_alphabets(tok), ascii_hooks(tok)  # nothing to prove, or not worth a key
    import spacy

    # this module's own bytes are in the key: the proof's code lives here, and an entry proven by
    # other code must never decide identity (PROOF_SCHEME alone relied on someone bumping it)
    key = hashlib.sha256(json.dumps([PROOF_SCHEME, spacy.__version__, list(sys.version_info[:2]),
                                     [[p.pattern, int(p.flags)] for p in patterns],
                                     hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]).encode()).hexdigest()
    path = proof_path(key)
    proof = _read_proof(path, key, patterns)
    if proof is None:
        proof = {"key": key,
                 "plain": sorted(name for name, alphabet in PLAIN_ALPHABETS.items()
                                 if all(never_within(p, alphabet) for p in patterns)),
                 "ascii_kept": [ascii_kept(p) for p in patterns]}
        _write_atomic(path, json.dumps(proof))
    plain = frozenset() if getattr(tok, "token_match", None) is not None else frozenset(proof["plain"])
    return plain, hooks_from(patterns, proof["ascii_kept"])


def proof_path(key: str) -> Path:
    return cache_root() / "proofs" / f"affix-{key[:32]}.json"


def _read_proof(path: Path, key: str, patterns: list[re.Pattern]) -> dict | None:
    try:
        proof = json.loads(path.read_text())
        if not isinstance(proof, dict) or proof.get("key") != key:
            return None
        plain, kept = proof["plain"], proof["ascii_kept"]
        if not (isinstance(plain, list) and set(plain) <= PLAIN_ALPHABETS.keys()):
            return None
        if not (isinstance(kept, list) and len(kept) == len(patterns)):
            return None
        for k, p in zip(kept, patterns, strict=True):
            # strictly increasing indices of existing alternatives: the order is the pattern's
            n = len(_top_level_alternatives(p.pattern))
            if k is not None and not (isinstance(k, list) and all(type(i) is int for i in k)
                                      and k == sorted(set(k)) and all(0 <= i < n for i in k)):
                return None
        return proof
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    """``text`` at ``path``, whole or not at all (workers starting together may race here)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def affix_patterns(tok: object) -> list[re.Pattern] | None:
    """The compiled prefix, suffix and infix patterns behind the tokenizer's hooks, or None
    when a hook is not the ``search`` / ``search`` / ``finditer`` method of a compiled pattern
    (a custom hook: nothing can be proven about it)."""
    hooks = (getattr(tok, "prefix_search", None), getattr(tok, "suffix_search", None),
             getattr(tok, "infix_finditer", None))
    patterns = [getattr(h, "__self__", None) for h in hooks]
    if not all(isinstance(p, re.Pattern) for p in patterns) or \
            [h.__name__ for h in hooks] != ["search", "search", "finditer"]:
        return None
    return patterns


def never_within(pattern: re.Pattern, alphabet: frozenset[int]) -> bool:
    """A sufficient condition for: ``pattern`` matches nowhere (empty matches included) in a
    subject string made of ``alphabet``'s characters only. Every alternative must consume, or
    require by a positive lookaround, at least one character that cannot be one of the
    alphabet's; anything this reading does not know counts as able to match."""
    if pattern.flags & re.IGNORECASE:
        return False  # case folding maps other code points onto ASCII letters (e.g. KELVIN SIGN)
    try:
        parsed = _sre_parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # noqa: BLE001 - an unreadable pattern is simply not proven
        return False
    if parsed.state.flags & re.IGNORECASE:
        return False
    return _seq_needs_outside(list(parsed), alphabet)


ASCII = frozenset(range(128))


def ascii_pruned(pattern: re.Pattern) -> re.Pattern | None:
    """``pattern`` without the top-level alternatives that cannot match anywhere in an ASCII
    string (``never_within``): on an ASCII subject every search and finditer gives the same
    matches, since an alternative that can never match never wins (the order of the others is
    kept). ``None`` when that is not proven: a capturing group (numbering would shift), flags set
    inside one alternative, or a split at ``|`` that is not top-level (then some piece does not
    parse on its own: an unclosed group, class or escape)."""
    kept = ascii_kept(pattern)
    return None if kept is None else pruned_to(pattern, kept)


def ascii_kept(pattern: re.Pattern) -> list[int] | None:
    """The proof behind ``ascii_pruned``: the indices of ``pattern``'s top-level alternatives
    that may match in an ASCII string, or ``None`` when the cut is not proven."""
    if pattern.groups or not isinstance(pattern.pattern, str):
        return None
    pieces = _top_level_alternatives(pattern.pattern)
    try:
        base = _sre_parser.parse(pattern.pattern, pattern.flags).state.flags
        parsed = [_sre_parser.parse(p, pattern.flags) for p in pieces]
    except Exception:  # noqa: BLE001 - a piece that does not parse means the split is wrong
        return None
    if any(p.state.flags != base or p.state.groups != 1 for p in parsed):
        return None
    return [i for i, p in enumerate(pieces) if not never_within(re.compile(p, pattern.flags), ASCII)]


def pruned_to(pattern: re.Pattern, kept: list[int]) -> re.Pattern | None:
    """``pattern`` with only the top-level alternatives ``kept`` (``ascii_kept``'s answer)."""
    pieces = _top_level_alternatives(pattern.pattern)
    pruned = re.compile("|".join(pieces[i] for i in kept) if kept else "(?!)", pattern.flags)
    return pruned if pruned.flags == pattern.flags else None


def _top_level_alternatives(pattern: str) -> list[str]:
    """``pattern`` cut at each ``|`` outside groups, classes and escapes (``ascii_pruned`` checks
    the cut by parsing each piece)."""
    out: list[str] = []
    depth, in_class, start, i = 0, False, 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern.startswith("^", i + 1):
                i += 1
            if pattern.startswith("]", i + 1):
                i += 1  # a leading "]" is a member, not the end
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    out.append(pattern[start:])
    return out


def ascii_hooks(tok: object) -> tuple[Any, Any, Any]:
    """spaCy's ``find_prefix``, ``find_suffix`` (match lengths) and the infix ``finditer`` for
    ASCII strings, from ``ascii_pruned`` patterns; ``(None, None, None)`` when a hook is not a
    compiled pattern's method or a pattern is not proven."""
    patterns = affix_patterns(tok)
    if patterns is None:
        return None, None, None
    return hooks_from(patterns, [ascii_kept(p) for p in patterns])


def hooks_from(patterns: list[re.Pattern], kept: list[list[int] | None]) -> tuple[Any, Any, Any]:
    """``ascii_hooks`` from the prefix, suffix and infix patterns and ``ascii_kept``'s answers."""
    pruned = [None if k is None else pruned_to(p, k) for p, k in zip(patterns, kept, strict=True)]
    if any(p is None for p in pruned):
        return None, None, None
    pre, suf = pruned[0].search, pruned[1].search

    # spaCy's Tokenizer.find_prefix / find_suffix, on the pruned patterns
    def find_prefix(string: str) -> int:
        m = pre(string)
        return m.end() - m.start() if m is not None else 0

    def find_suffix(string: str) -> int:
        m = suf(string)
        return m.end() - m.start() if m is not None else 0

    return find_prefix, find_suffix, pruned[2].finditer


def _seq_needs_outside(items: list, alphabet: frozenset[int]) -> bool:
    return any(_item_needs_outside(op, av, alphabet) for op, av in items)


def _item_needs_outside(op: object, av: object, alphabet: frozenset[int]) -> bool:
    c = _sre_constants
    if op is c.LITERAL:
        return av not in alphabet
    if op is c.IN:
        for kind, arg in av:
            if kind is c.LITERAL:
                if arg in alphabet:
                    return False
            elif kind is c.RANGE:
                if any(arg[0] <= x <= arg[1] for x in alphabet):
                    return False
            else:  # NEGATE, CATEGORY, ...: not read
                return False
        return True
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
        lo, _hi, sub = av
        return lo >= 1 and _seq_needs_outside(list(sub), alphabet)
    if op is c.SUBPATTERN:
        _group, add_flags, _del_flags, sub = av
        if add_flags & re.IGNORECASE:
            return False
        return _seq_needs_outside(list(sub), alphabet)
    if op is c.BRANCH:
        return all(_seq_needs_outside(list(b), alphabet) for b in av[1])
    if op is getattr(c, "ATOMIC_GROUP", None):
        return _seq_needs_outside(list(av), alphabet)
    if op is c.ASSERT:
        # a lookbehind or lookahead sees only the subject string, all of the alphabet here
        return _seq_needs_outside(list(av[1]), alphabet)
    return False  # AT, ASSERT_NOT, ANY, NOT_LITERAL, GROUPREF...: consume nothing or anything


def _groups(items: list, sep: object) -> list[list]:
    out: list[list] = [[]]
    for x in items:
        if x == sep:
            out.append([])
        else:
            out[-1].append(x)
    return out


def _grow(arr: np.ndarray, need: int) -> np.ndarray:
    new = np.zeros(max(need, 2 * len(arr)), arr.dtype)
    new[: len(arr)] = arr
    return new


@njit(cache=True, nogil=True)
def transitions(flat: np.ndarray, offs: np.ndarray, in_punct: np.ndarray, is_punct: np.ndarray) -> np.ndarray:
    """Per chunk (tokens ``flat[offs[c]:offs[c + 1]]``): spaCy's sentencizer state after it and the
    sentences it starts, from state 0 and from state 1 (``Sentencizer.predict``'s ``seen_period``)."""
    k = len(offs) - 1
    out = np.zeros((k, 4), np.int64)
    for c in range(k):
        for begin in range(2):
            seen = begin
            events = 0
            for j in range(offs[c], offs[c + 1]):
                t = flat[j]
                p = in_punct[t]
                if seen and not is_punct[t] and not p:
                    events += 1
                    seen = 0
                elif p:
                    seen = 1
            out[c, 2 * begin] = seen
            out[c, 2 * begin + 1] = events
    return out


@njit(cache=True, nogil=True)
def expand_chunks(cids: np.ndarray, off: np.ndarray, toks: np.ndarray, has_match: np.ndarray,
                  last_class: np.ndarray, first_class: np.ndarray,
                  edges: np.ndarray) -> tuple[np.ndarray, bool, np.ndarray]:
    """A document's token ids from its chunk ids; whether some chunk boundary is unsafe (an
    edge-character pair of a special-case pattern, with a retokenizing match on either side);
    and the chunks at edge boundaries whose matches are not known yet (then unsafe is not final)."""
    total = 0
    for c in cids:
        total += off[c + 1] - off[c]
    out = np.empty(total, np.int64)
    need = np.empty(2 * len(cids), np.int64)
    n_need = 0
    k = 0
    unsafe = False
    for i in range(len(cids)):
        c = cids[i]
        if i > 0 and not unsafe:
            p = cids[i - 1]
            if edges[last_class[out[k - 1]], first_class[toks[off[c]]]]:
                if has_match[p] == 1 or has_match[c] == 1:
                    unsafe = True
                else:
                    if has_match[p] < 0:
                        need[n_need] = p
                        n_need += 1
                    if has_match[c] < 0:
                        need[n_need] = c
                        n_need += 1
        for j in range(off[c], off[c + 1]):
            out[k] = toks[j]
            k += 1
    return out, unsafe, need[:n_need]


def is_plain_english(tokenizer: object) -> bool:
    """Whether datatrove's tokenizer is ``spacy.blank("en")`` with the sentencizer, which this
    module reproduces."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    return isinstance(tokenizer, SpaCyTokenizer) and tokenizer.language == "en" and tokenizer.config is None


_ENGLISH: dict[str, bool] = {}


def language_supported(language: str) -> bool:
    """Whether datatrove tokenizes ``language`` (a filter's ``language`` argument) as plain English."""
    ok = _ENGLISH.get(language)
    if ok is None:
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        try:
            ok = is_plain_english(load_word_tokenizer(language))
        except ValueError:
            ok = False
        _ENGLISH[language] = ok
    return ok


_SHARED: dict[str, FastTokenizer] = {}


def fast_tokenizer(language: str = "en") -> FastTokenizer:
    """One tokenizer (and cache) per process and language."""
    tok = _SHARED.get(language)
    if tok is None:
        tok = _SHARED[language] = FastTokenizer(language)
    return tok


def words(text: str, language: str = "en") -> list[str]:
    """datatrove's ``split_into_words`` for English, fast (for other statistics, e.g. the scorer)."""
    return fast_tokenizer(language).words(text)


@njit(cache=True, nogil=True)
def run_starts(cids: np.ndarray, off: np.ndarray, toks: np.ndarray, last_class: np.ndarray,
               first_class: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Where the runs of chunks that a special-case match could join begin (a boundary without an
    edge-character pair starts a new run), with ``len(cids)`` appended."""
    out = np.empty(len(cids) + 1, np.int64)
    k = 0
    for i in range(len(cids)):
        if i == 0 or not edges[last_class[toks[off[cids[i - 1] + 1] - 1]], first_class[toks[off[cids[i]]]]]:
            out[k] = i
            k += 1
    out[k] = len(cids)
    return out[:k + 1]
