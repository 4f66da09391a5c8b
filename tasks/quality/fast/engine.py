"""The fast engine: datatrove's four quality filters, decision and reason equal to the classes'.

Each filter's ``filter`` is followed line by line, in its order of checks, with the same
parameters (read from an instance of datatrove's class built with the user's arguments) and
datatrove's own constants and helpers (``find_duplicates``, ``PUNCTUATION_SET``,
``CITATION_REGEX``, ...). What changes is how the tokenization-dependent statistics are
computed: words and sentences come from :mod:`tasks.quality.fast.tokenizer` (spaCy's rules, cached
per whitespace chunk), per-word properties from per-token tables, and the Gopher n-gram
statistics from :mod:`tasks.quality.fast.kernels`.

Where identity is not proven the engine returns ``None`` and the caller runs datatrove's class
for that document and filter (counted as a fallback): a language other than English, C4 with
``split_paragraph=False``, a document whose statistics would make datatrove divide by zero or
raise, spaCy's "IS_ALPHA" workaround, an ambiguous duplicate n-gram, unusual n-gram sizes.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from tasks.quality.fast import kernels
from tasks.quality.fast.tokenizer import FastTokenizer, fast_tokenizer, language_supported

# a lone surrogate (possible from Python callers, never from Arrow's UTF-8) makes datatrove's Gopher
# filters fail with an encoding error that becomes their reason: such a text goes to datatrove
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None

Decision = tuple[bool, str | None, str, list[bool] | None]  # keep, reason, text after, C4 lines kept


class TokenTables:
    """Per-token properties, in step with the tokenizer's vocabulary."""

    def __init__(self, tok: FastTokenizer):
        from datatrove.utils.text import PUNCTUATION_SET

        self.tok = tok
        self.punct_set = PUNCTUATION_SET
        self.n = 0
        cap = 1024
        # per token, kernels.pack_props's row: hash, powers, length with the non-symbol and alpha
        # flags (GopherQualityFilter: a word with any character outside PUNCTUATION_SET; one
        # with a letter)
        self.props = np.zeros((cap, 4), np.uint64)
        self.in_punct_chars = np.zeros(cap, bool)
        self.is_punct = np.zeros(cap, bool)

    def sync(self) -> None:
        texts = self.tok.tok_text
        if len(texts) == self.n:
            return
        if len(texts) > len(self.props):
            cap = max(len(texts), 2 * len(self.props))
            for name in ("props", "in_punct_chars", "is_punct"):
                old = getattr(self, name)
                new = np.zeros((cap, *old.shape[1:]), old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        lo, hi = self.n, len(texts)
        new = texts[lo:]
        lens = np.fromiter(map(len, new), np.int64, len(new))
        points = np.frombuffer("".join(new).encode("utf-32-le", "surrogatepass"), np.uint32)
        rows = self.props[lo:hi]
        # the per-character hash folds and powers compiled, over the new tokens' code points at
        # once, written straight into the rows (one pack_props call per document cost more)
        kernels.token_hashes(points, lens, rows[:, 0], rows[:, 1], rows[:, 2])
        if len(lens) and lens.max() > kernels.LEN_MASK:
            raise ValueError("fast quality engine: a token longer than 2**32 - 1 characters")
        punct_set, punct_chars = self.punct_set, self.tok.punct_chars
        non_symbol = np.fromiter((not punct_set.issuperset(w) for w in new), bool, len(new))
        alpha = np.fromiter((w.isalpha() or any(c.isalpha() for c in w) for w in new), bool, len(new))
        rows[:, 3] = (lens.astype(np.uint64) | (non_symbol.astype(np.uint64) << np.uint64(32))
                      | (alpha.astype(np.uint64) << np.uint64(33)))
        self.in_punct_chars[lo:hi] = [w in punct_chars for w in new]
        self.is_punct[lo:hi] = self.tok.tok_is_punct[lo:hi]
        self.n = hi

    def stop_ids(self, stop_words: set[str]) -> np.ndarray:
        """Token ids of the stop words seen so far (one never seen cannot be among the words)."""
        index = self.tok.tok_index
        return np.array([index[w] for w in stop_words if w in index], np.int64)


class FastFilters:
    """Decisions of datatrove's filter instances, computed fast; ``None`` means "ask datatrove"."""

    def __init__(self) -> None:
        self.tok = fast_tokenizer("en")
        self.tables = TokenTables(self.tok)
        self._last_text: str | None = None
        self._last_ids: np.ndarray | None = None
        self._sizes: dict[int, tuple[Any, tuple, tuple[np.ndarray, np.ndarray] | None]] = {}
        self._stops: dict[int, tuple[Any, frozenset[str], int, np.ndarray]] = {}

    def learn(self, filters: list[Any], texts: list[str]) -> None:
        """Learn the tokens of these documents' new chunks in a few batches before they are
        decided one by one (``FastTokenizer.learn``), when some filter tokenizes with this
        engine; a text ``decide`` leaves to datatrove (``IS_ALPHA``) is not read."""
        if texts and not any(hasattr(f, "language") and language_supported(f.language) for f in filters):
            texts = []  # nothing to learn; the last block is still let go
        self.tok.learn([t for t in texts if "IS_ALPHA" not in t])
        self.tables.sync()

    def word_ids(self, text: str) -> np.ndarray:
        if text is not self._last_text and text != self._last_text:
            self._last_ids = self.tok.word_ids(text)
            self._last_text = text
            self.tables.sync()
        assert self._last_ids is not None
        return self._last_ids

    def decide(self, kind: str, flt: Any, text: str) -> Decision | None:
        if not language_supported(flt.language) or "IS_ALPHA" in text or _has_surrogate(text):
            return None
        if kind == "gopher_repetition":
            return self.gopher_repetition(flt, text)
        if kind == "gopher_quality":
            return self.gopher_quality(flt, text)
        if kind == "c4_quality":
            return self.c4_quality(flt, text)
        if kind == "fineweb_quality":
            return self.fineweb_quality(flt, text)
        return None

    # GopherRepetitionFilter.filter
    def gopher_repetition(self, f: Any, text: str) -> Decision | None:
        from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates

        if not text:
            return False, "empty", text, None
        paragraphs = split_runs(f.paragraph_exp, text.strip(), "\n\n")
        paragraphs_duplicates, char_duplicates = find_duplicates(paragraphs) if len(paragraphs) > 1 else (0, 0)
        if f.dup_para_frac and paragraphs_duplicates / len(paragraphs) > f.dup_para_frac:
            return False, "dup_para_frac", text, None
        if f.dup_para_char_frac and char_duplicates / len(text) > f.dup_para_char_frac:
            return False, "dup_para_char_frac", text, None
        lines = split_runs(f._line_splitter, text, "\n")
        line_duplicates, char_duplicates = find_duplicates(lines) if len(lines) > 1 else (0, 0)
        if f.dup_line_frac and line_duplicates / len(lines) > f.dup_line_frac:
            return False, "dup_line_frac", text, None
        if f.dup_line_char_frac and char_duplicates / len(text) > f.dup_line_char_frac:
            return False, "dup_line_char_frac", text, None
        ns = self._n_gram_sizes(f)
        if ns is None:
            return None
        ids = self.word_ids(text)
        t = self.tables
        top, dup = kernels.repetition_stats(ids, t.props, ns[0], ns[1])
        for (n, n_frac), chars in zip(f.top_n_grams, top.tolist(), strict=True):
            if chars < 0:  # no n-gram at all
                continue
            if chars / len(text) > n_frac:
                return False, f"top_{n}_gram", text, None
        for (n, n_frac), chars in zip(f.dup_n_grams, dup.tolist(), strict=True):
            if chars < 0:
                return None
            if chars / len(text) > n_frac:
                return False, f"duplicated_{n}_n_grams", text, None
        return True, None, text, None

    def _n_gram_sizes(self, f: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """The filter's top and duplicate n-gram sizes as the kernel takes them, built once per
        filter (and again if its lists change); ``None`` for a size the kernel does not handle."""
        key = (tuple(f.top_n_grams), tuple(f.dup_n_grams))
        hit = self._sizes.get(id(f))
        if hit is not None and hit[0] is f and hit[1] == key:
            return hit[2]
        ns = [n for n, _ in key[0]] + [n for n, _ in key[1]]
        arrays = None
        if all(isinstance(n, int) and n >= 1 for n in ns):
            arrays = (np.array([n for n, _ in key[0]], np.int64), np.array([n for n, _ in key[1]], np.int64))
        self._sizes[id(f)] = (f, key, arrays)  # the filter itself held, so that its id is not reused
        return arrays

    # GopherQualityFilter.filter
    def gopher_quality(self, f: Any, text: str) -> Decision | None:
        ids = self.word_ids(text)
        t = self.tables
        n_words = len(ids)
        stop = self._stop_ids(f) if f.min_stop_words else np.zeros(0, np.int64)
        n_non_symbol, non_symbol_chars, n_alpha, stop_present = kernels.word_stats(ids, t.props, stop)
        if f.min_doc_words and n_non_symbol < f.min_doc_words:
            return False, "gopher_short_doc", text, None
        if f.max_doc_words and n_non_symbol > f.max_doc_words:
            return False, "gopher_long_doc", text, None
        if n_non_symbol == 0 or n_words == 0:
            return None  # datatrove: mean of nothing, then a division by zero words
        # np.mean of integer lengths: exact float64 sum (< 2**53) divided once, as here
        avg_n_words = non_symbol_chars / n_non_symbol
        if f.min_avg_word_length and avg_n_words < f.min_avg_word_length:
            return False, "gopher_below_avg_threshold", text, None
        if f.max_avg_word_length and avg_n_words > f.max_avg_word_length:
            return False, "gopher_above_avg_threshold", text, None
        if f.max_symbol_word_ratio and text.count("#") / n_words > f.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes", text, None
        if f.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > f.max_symbol_word_ratio:
            return False, "gopher_too_many_ellipsis", text, None
        lines = text.splitlines()
        if (f.max_bullet_lines_ratio or f.max_ellipsis_lines_ratio) and not lines:
            return None  # datatrove divides by len(lines)
        if (
            f.max_bullet_lines_ratio
            and sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines) / len(lines)
            > f.max_bullet_lines_ratio
        ):
            return False, "gopher_too_many_bullets", text, None
        if (
            f.max_ellipsis_lines_ratio
            and sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines) / len(lines)
            > f.max_ellipsis_lines_ratio
        ):
            return False, "gopher_too_many_end_ellipsis", text, None
        if f.max_non_alpha_words_ratio and n_alpha / n_words < f.max_non_alpha_words_ratio:
            return False, "gopher_below_alpha_threshold", text, None
        if f.min_stop_words and stop_present < f.min_stop_words:
            return False, "gopher_enough_stop_words", text, None
        return True, None, text, None

    def _stop_ids(self, f: Any) -> np.ndarray:
        """``TokenTables.stop_ids`` of the filter's stop words, again only when the vocabulary
        has grown (a stop word's id exists from its first sighting on) or the words changed."""
        n = len(self.tok.tok_text)
        hit = self._stops.get(id(f))
        if hit is not None and hit[0] is f and hit[2] == n and hit[1] == f.stop_words:
            return hit[3]
        ids = self.tables.stop_ids(f.stop_words)
        self._stops[id(f)] = (f, frozenset(f.stop_words), n, ids)
        return ids

    # C4QualityFilter.filter (line mode), with the per-line decisions ObservedC4 records
    def c4_quality(self, f: Any, text: str) -> Decision | None:
        from datatrove.pipeline.filters.c4_filters import (
            CITATION_REGEX,
            ELLIPSIS,
            END_PUNCTUATION,
            POLICY_SUBSTRINGS,
        )

        if not f.split_paragraph:
            return None
        num_sentences = 0
        kept_lines: list[str] = []
        line_kept: list[bool] = []
        for line in text.splitlines():
            line = line.strip()
            split = line  # the line before citation removal, whose words datatrove counts
            if f.remove_citations and ("[" in line or CITATION_REGEX.pattern != _CITATION_PATTERN):
                line = CITATION_REGEX.sub("", line)
            # datatrove checks a long word, then the terminal punctuation, then the word count;
            # each failure only drops the line (no other effect, the citation removal between
            # them cannot fail), so the cheap endswith goes first and most lines of web text,
            # which end without punctuation, are never split into words
            if f.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                line_kept.append(False)
                continue
            words = split.split()
            # no word is longer than its line: the per-word lengths only matter for a long line
            if (f.max_word_length != -1 and len(split) > f.max_word_length and words
                    and max(map(len, words)) > f.max_word_length):
                line_kept.append(False)
                continue
            if len(words) < f.min_words_per_line:
                line_kept.append(False)
                continue
            line_l = line.lower()
            if f.filter_lorem_ipsum and "lorem ipsum" in line_l:
                return False, "lorem_ipsum", text, line_kept
            if f.filter_javascript and "javascript" in line_l:
                line_kept.append(False)
                continue
            if f.filter_curly_bracket and "{" in line:
                return False, "curly_bracket", text, line_kept
            if f.filter_policy and any(p in line_l for p in POLICY_SUBSTRINGS):
                line_kept.append(False)
                continue
            if f.min_num_sentences != -1:
                num_sentences += self.sentence_count(line, words if line is split else None)
            kept_lines.append(line)
            line_kept.append(True)
        if num_sentences < f.min_num_sentences:
            return False, "too_few_sentences", text, line_kept
        return True, None, "\n".join(kept_lines).strip(), line_kept

    def sentence_count(self, line: str, words: list[str] | None = None) -> int:
        """``len(split_into_sentences(line))``; a stripped line whose chunks are separated by single
        spaces has no whitespace tokens, so its words are all its tokens. ``words``: ``line.split()``
        when the caller has it."""
        if words is None:
            words = line.split()
        if words and line.count(" ") == len(words) - 1 and len(line) == sum(map(len, words)) + len(words) - 1:
            ids = self.word_ids(line)
            t = self.tables
            return 1 + kernels.sentence_events(ids, t.in_punct_chars, t.is_punct)
        return self.tok.sentence_count(line)

    # FineWebQualityFilter.filter
    def fineweb_quality(self, f: Any, text: str) -> Decision | None:
        from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates

        lines = text.split("\n")
        lines = [line for line in lines if line.strip() != ""]
        if len(lines) == 0:
            return False, "empty", text, None
        ratio = sum(1 for line in lines if line.endswith(f.stop_chars)) / len(lines)
        if ratio < f.line_punct_thr and not (ratio == 0 and f.line_punct_exclude_zero):
            return False, "line_punct_ratio", text, None
        ratio = sum(1 for line in lines if len(line) <= f.short_line_length) / len(lines)
        if ratio > f.short_line_threshold:
            return False, "short_line_ratio", text, None
        denominator = len(text.replace("\n", ""))
        if denominator == 0:
            return None
        ratio = find_duplicates(lines)[1] / denominator
        if ratio > f.char_duplicates_ratio:
            return False, "char_dup_ratio", text, None
        n_words = len(self.word_ids(text))
        if n_words == 0:
            return None
        if text.count("\n") / n_words > f.new_line_ratio:
            return False, "list_ratio", text, None
        return True, None, text, None


# datatrove's paragraph and line patterns, and the shortest text each can match: a text without
# it splits into itself, found by a substring search instead of the regex engine's scan (most
# web documents have no paragraph break, many no newline at all)
# datatrove's citation pattern, every alternative of which starts with "[": a line without one
# is left as it is (another pattern, after an upgrade, is always applied)
_CITATION_PATTERN = r"\[\d*]|\[edit]|\[citation needed]"
_RUN_PATTERNS = {r"\n{2,}": "\n\n", "\n+": "\n"}


def split_runs(pattern: re.Pattern, text: str, least: str) -> list[str]:
    """``pattern.split(text)``; one list element, without the regex, when ``text`` cannot match."""
    if _RUN_PATTERNS.get(pattern.pattern) == least and not pattern.flags & ~re.UNICODE and least not in text:
        return [text]
    return pattern.split(text)


_ENGINE: FastFilters | None = None


def engine() -> FastFilters:
    """One engine per process (its token caches grow with the documents it sees)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = FastFilters()
    return _ENGINE
