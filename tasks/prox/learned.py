"""The learned program writer: a gradient-boosted tree model (LightGBM) decides per line of a
page whether it is content, and the writer turns those decisions into the same
``remove_lines`` / ``drop_doc`` programs the heuristic writer emits, run by the same
interpreter.

Features (``FEATURES``; one row per line, computed for a whole batch of documents at once with
numpy where the work is per character or per window):

- the line itself: length in characters and words, mean word length, how it ends (sentence
  punctuation, colon, other punctuation), shares of punctuation, digits, capitals, non-Latin
  letters, separator characters (``| » › • ·``), stopwords (the most frequent words of eleven
  languages), navigation / share words and title-cased words; hits of the heuristic writer's
  boilerplate, share-button and bare-URL patterns and of a date pattern; commas and sentence
  ends inside the line;
- recurrence: in how many *other* documents of the context (the shard a task sees, or the
  training set) the same line occurs, and how often it repeats within its own page;
- position: relative and absolute place in the page, share of the page's words and of its
  "prose" words (lines of 10+ words, or 4+ words ending a sentence) above the line, whether it
  lies before the first or after the last prose line, distance to the nearest prose line above
  and below, length of the run of short lines it belongs to;
- neighbours: windowed densities (prose lines, words, sentence ends, navigation words) over
  +-2 and +-5 lines, and the main features of the two lines above and below.

Nothing in them names a site: the model has to learn what boilerplate looks like in general.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.prox import heuristic
from tasks.prox.chunks import Chunk, lines_of

FORMAT = "refinery-prox-line-model"
VERSION = 1
DEFAULT_MODEL = Path(__file__).with_name("models") / "model.json.gz"

SENTENCE_END = (".", "!", "?", "…", "。", "！", "？", '."', ".”", "!”", "?”", ".'", ".’", '?"', '!"', ".)", ":”")
WORD = re.compile(r"\w+", re.UNICODE)
# matched on the lower-cased line: without re.I these alternations run about 5x faster
BOILERPLATE = re.compile(heuristic.BOILERPLATE.pattern)
DATE = re.compile(
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2}\b|"
    r"\b\d{1,2}\.?\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\b|"
    r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b|\b\d{1,2}:\d{2}\b|\b\d+\s+(?:min|hours?|days?)\s+ago\b|"
    r"\b(?:updated|published|posted)\b")
NAV_WORDS = frozenset(
    ["home", "news", "about", "contact", "menu", "search", "login", "log", "sign", "register", "subscribe", "subscription", "newsletter", "privacy", "terms", "cookie", "cookies", "policy", "sitemap", "faq", "help", "careers", "jobs", "advertise", "advertising", "blog", "sports", "business", "tech", "opinion", "video", "videos", "photos", "gallery", "more", "tags", "tag", "categories", "category", "archive", "archives", "related", "popular", "trending", "comments", "comment", "share", "shares", "tweet", "email", "print", "facebook", "twitter", "instagram", "linkedin", "youtube", "whatsapp", "pinterest", "reddit", "flipboard", "rss", "next", "previous", "prev", "back", "top", "skip", "read", "continue", "reply", "like", "follow", "copyright", "rights", "reserved", "ad", "ads", "advertisement", "sponsored", "account", "profile", "settings", "download", "app", "apps", "store", "shop", "cart", "newsletters", "podcasts", "podcast", "events", "watch", "listen", "live", "latest", "world", "us", "weather"])
SEPARATORS = "|»›•·>/–—-"
BATCH_DOCS = 1000  # documents featurized at once by the writer
MAIN_BLOCK_PENALTY = 3.0  # words of prose one non-prose line costs inside the main block

# character classes of the code points of the Basic Multilingual Plane
_CLASSES = ("other", "upper", "lower", "digit", "punct", "other_letter", "space")
_OTHER, _UPPER, _LOWER, _DIGIT, _PUNCT, _OTHER_LETTER, _SPACE = range(len(_CLASSES))
_TABLES: tuple[np.ndarray, np.ndarray] | None = None
_TABLE_LOCK = threading.Lock()

BASE = ["log_chars", "log_words", "mean_word_len", "ends_sentence", "ends_colon", "ends_other_punct",
        "punct_share", "digit_share", "upper_share", "other_letter_share", "separators", "stopword_share",
        "nav_share", "title_share", "boilerplate", "share_or_url", "date", "log_commas", "sentence_ends",
        "log_other_docs", "log_repeats_in_page", "prose", "starts_with_bullet", "has_at_or_hash"]
POSITION = ["rel_pos", "log_pos", "log_pos_from_end", "log_lines", "words_above", "prose_words_above",
            "before_first_prose", "after_last_prose", "log_dist_prose_above", "log_dist_prose_below", "log_short_run",
            "log_doc_words", "words_vs_longest", "in_main_block", "log_dist_main_block", "main_block_share",
            "win5_words_vs_densest"]
WINDOW_COLS = ["prose", "log_words", "ends_sentence", "nav_share"]
WINDOWS = (2, 5)
NEIGHBOUR_COLS = ["log_words", "ends_sentence", "nav_share", "title_share", "boilerplate", "prose", "log_other_docs",
                  "punct_share"]
OFFSETS = (-2, -1, 1, 2)
FEATURES = (BASE + POSITION + [f"win{w}_{c}" for w in WINDOWS for c in WINDOW_COLS]
            + [f"nb{o:+d}_{c}" for o in OFFSETS for c in NEIGHBOUR_COLS])
# the second pass sees the first pass's content probability of the line and of its neighbours
STACK_WINDOWS = (1, 2, 5, 10)
STACK_FEATURES = (["p"] + [f"p_win{w}" for w in STACK_WINDOWS] + [f"p_nb{o:+d}" for o in OFFSETS]
                  + ["p_mean_above", "p_mean_below"])


def _char_tables() -> tuple[np.ndarray, np.ndarray]:
    """For the Basic Multilingual Plane: each code point's class (``_CLASSES``) and whether
    it is a separator character."""
    global _TABLES
    with _TABLE_LOCK:
        if _TABLES is None:
            code = np.zeros(0x10000, dtype=np.int64)
            sep = np.zeros(0x10000, dtype=bool)
            for cp in range(0x10000):
                ch = chr(cp)
                cat = unicodedata.category(ch)
                if cat in ("Lu", "Lt"):
                    code[cp] = _UPPER
                elif cat == "Ll":
                    code[cp] = _LOWER
                elif cat in ("Lo", "Lm"):
                    code[cp] = _OTHER_LETTER
                elif cat[0] == "N":
                    code[cp] = _DIGIT
                elif cat[0] in "PS":
                    code[cp] = _PUNCT
                elif ch.isspace():
                    code[cp] = _SPACE
                sep[cp] = ch in SEPARATORS
            _TABLES = (code, sep)
        return _TABLES


def _char_counts(joined: str, n: int) -> dict[str, np.ndarray]:
    """Per line of ``joined`` (``n`` lines, each followed by one newline, the last one
    included): how many characters of each class, separators, words (runs of non-space
    characters) and capitalized words it has."""
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    code_table, sep_table = _char_tables()
    bmp = np.minimum(cps, 0xFFFF)
    code = code_table[bmp]
    code[cps > 0xFFFF] = _OTHER_LETTER  # astral planes: mostly CJK extensions and emoji
    newline = cps == 10
    line = np.cumsum(newline) - newline  # a line's newline belongs to it
    counts = np.bincount(line * len(_CLASSES) + code, minlength=n * len(_CLASSES)).reshape(n, len(_CLASSES))
    space = code == _SPACE
    word_start = ~space
    word_start[1:] &= space[:-1]
    out = {name: counts[:, k].astype(np.float64) for k, name in enumerate(_CLASSES)}
    out["space"] = out["space"] - 1  # the newline
    out["separators"] = np.bincount(line[sep_table[bmp]], minlength=n).astype(np.float64)
    out["words"] = np.bincount(line[word_start], minlength=n).astype(np.float64)
    out["capitalized"] = np.bincount(line[word_start & (code == _UPPER)], minlength=n).astype(np.float64)
    return out


def line_key(line: str) -> str:
    """Identity of a line for recurrence counts: case- and whitespace-normalized."""
    return " ".join(line.lower().split())


def document_frequencies(texts: list[str]) -> Counter[str]:
    """In how many of ``texts`` each line (of at least two characters) occurs."""
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update({k for k in (line_key(ln) for ln in lines_of(t)) if len(k) >= 2})
    return counts


def _ends(s: str) -> tuple[float, float, float]:
    if not s:
        return 0.0, 0.0, 0.0
    if s.endswith(SENTENCE_END):
        return 1.0, 0.0, 0.0
    if s.endswith(":"):
        return 0.0, 1.0, 0.0
    return 0.0, 0.0, float(not s[-1].isalnum())


def _windowed(values: np.ndarray, doc_start: np.ndarray, doc_end: np.ndarray, w: int) -> np.ndarray:
    """Mean of ``values`` over lines i-w .. i+w of the same document."""
    cs = np.concatenate(([0.0], np.cumsum(values)))
    idx = np.arange(len(values))
    lo = np.maximum(idx - w, doc_start)
    hi = np.minimum(idx + w + 1, doc_end)
    return (cs[hi] - cs[lo]) / (hi - lo)


def _shifted(values: np.ndarray, doc_of: np.ndarray, offset: int) -> np.ndarray:
    """values[i + offset] when that line is in the same document, else -1."""
    out = np.full(len(values), -1.0)
    if offset > 0:
        same = doc_of[offset:] == doc_of[:-offset]
        out[:-offset][same] = values[offset:][same]
    else:
        k = -offset
        same = doc_of[:-k] == doc_of[k:]
        out[k:][same] = values[:-k][same]
    return out


def features(texts: list[str], stopwords: frozenset[str], frequencies: Counter[str]) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix of every line of ``texts`` (in order) and the index of each text's
    first row (len(texts) + 1 offsets). ``frequencies``: document frequencies of line keys in
    the context; a line's own document counts once and is not counted here."""
    per_doc = [lines_of(t) for t in texts]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(ls) for ls in per_doc], out=offsets[1:])
    n = int(offsets[-1])
    doc_of = np.repeat(np.arange(len(texts)), np.diff(offsets))
    col = {name: i for i, name in enumerate(BASE)}
    share_words, url_line = heuristic.SHARE_WORDS, heuristic.URL_LINE
    stop_hit, nav_hit = stopwords.__contains__, NAV_WORDS.__contains__
    empty = (0.0,) * 15
    rows: list[tuple[float, ...]] = []
    for lines in per_doc:
        keys = [line_key(ln) for ln in lines]
        in_page = Counter(keys)
        for ln, k in zip(lines, keys, strict=True):
            if not k:
                rows.append(empty)
                continue
            s = ln.strip()
            tokens = k.split()
            nw = len(tokens)
            end_s, end_c, end_o = _ends(s)
            rows.append((
                end_s, end_c, end_o,
                sum(map(stop_hit, tokens)) / nw,
                sum(map(nav_hit, tokens)) / nw,
                # the patterns only on lines short enough to be boilerplate or a dateline: the
                # long lines are most of the characters and these searches cost per character
                nw <= 40 and BOILERPLATE.search(k) is not None,
                nw <= 8 and (share_words.match(s) is not None or url_line.match(s) is not None),
                nw <= 25 and DATE.search(k) is not None,
                s.count(","),
                s.count(". ") + s.count("? ") + s.count("! ") + s.count("。"),
                max(0, frequencies.get(k, 0) - 1),
                in_page[k] - 1,
                nw >= 10 or (nw >= 4 and end_s == 1.0),
                s[0] in "•·*-–—►▶>#0123456789",
                "@" in s or "#" in s or "http" in s,
            ))
    py = np.array(rows, dtype=np.float64).reshape(n, 15)
    lengths = np.fromiter((len(ln) for ls in per_doc for ln in ls), dtype=np.int64, count=n)
    cc = _char_counts("\n".join("\n".join(ls) for ls in per_doc) + "\n", n) if n else \
        dict.fromkeys([*_CLASSES, "separators", "words", "capitalized"], np.zeros(0))
    words_arr = cc["words"]
    visible = lengths - cc["space"]
    chars = np.maximum(visible, 1)
    letters = np.maximum(cc["upper"] + cc["lower"], 1)
    base = np.zeros((n, len(BASE)), dtype=np.float64)
    base[:, col["log_chars"]] = np.log1p(visible)
    base[:, col["log_words"]] = np.log1p(words_arr)
    base[:, col["mean_word_len"]] = visible / np.maximum(words_arr, 1)
    base[:, col["punct_share"]] = cc["punct"] / chars
    base[:, col["digit_share"]] = cc["digit"] / chars
    base[:, col["upper_share"]] = cc["upper"] / letters
    base[:, col["other_letter_share"]] = cc["other_letter"] / chars
    base[:, col["separators"]] = np.log1p(cc["separators"])
    base[:, col["title_share"]] = cc["capitalized"] / np.maximum(words_arr, 1)
    for k, name in enumerate(["ends_sentence", "ends_colon", "ends_other_punct", "stopword_share", "nav_share",
                              "boilerplate", "share_or_url", "date", "log_commas", "sentence_ends",
                              "log_other_docs", "log_repeats_in_page", "prose", "starts_with_bullet",
                              "has_at_or_hash"]):
        base[:, col[name]] = py[:, k]
    for name in ("log_commas", "sentence_ends", "log_other_docs", "log_repeats_in_page"):
        base[:, col[name]] = np.log1p(base[:, col[name]])
    # per-document position features, vectorized over the batch
    doc_start, doc_end = offsets[doc_of], offsets[doc_of + 1]
    idx = np.arange(n)
    nlines = (doc_end - doc_start).astype(np.float64)
    pos = (idx - doc_start).astype(np.float64)
    prose = base[:, col["prose"]] > 0
    prose_words = np.where(prose, words_arr, 0.0)

    def above(values: np.ndarray) -> np.ndarray:
        cs = np.concatenate(([0.0], np.cumsum(values)))
        total = cs[doc_end] - cs[doc_start]
        return np.divide(cs[idx] - cs[doc_start], total, out=np.zeros(n), where=total > 0)

    last_prose = np.maximum.accumulate(np.where(prose, idx, -1)) if n else np.zeros(0, np.int64)
    next_prose = (np.minimum.accumulate(np.where(prose, idx, n)[::-1])[::-1]) if n else np.zeros(0, np.int64)
    # strictly above / below: the previous and next prose line other than this one
    prev_prose = np.concatenate(([-1], last_prose[:-1])) if n else last_prose
    nxt_prose = np.concatenate((next_prose[1:], [n])) if n else next_prose
    has_above = prev_prose >= doc_start
    has_below = nxt_prose < doc_end
    short = (words_arr > 0) & (words_arr <= 6) & (base[:, col["ends_sentence"]] == 0)
    run = _run_lengths(short, doc_of)
    doc_words = np.bincount(doc_of, weights=words_arr, minlength=len(texts)) if n else np.zeros(len(texts))
    win5_words = _windowed(words_arr, doc_start, doc_end, 5)
    pos_f = np.column_stack([
        pos / np.maximum(nlines - 1, 1), np.log1p(pos), np.log1p(nlines - 1 - pos), np.log1p(nlines),
        above(words_arr), above(prose_words),
        (~has_above & ~prose).astype(np.float64) * (next_prose < doc_end),
        (~has_below & ~prose).astype(np.float64) * (last_prose >= doc_start),
        np.where(has_above, np.log1p(idx - prev_prose), -1.0), np.where(has_below, np.log1p(nxt_prose - idx), -1.0),
        np.log1p(run), np.log1p(doc_words[doc_of]), _vs_doc_max(words_arr, offsets, doc_of),
        *_main_block(words_arr, prose, offsets, doc_of, doc_words), _vs_doc_max(win5_words, offsets, doc_of),
    ]) if n else np.zeros((0, len(POSITION)))
    win = [_windowed(base[:, col[c]], doc_start, doc_end, w) for w in WINDOWS for c in WINDOW_COLS]
    nb = [_shifted(base[:, col[c]], doc_of, o) for o in OFFSETS for c in NEIGHBOUR_COLS]
    X = np.column_stack([base, pos_f, *win, *nb]) if n else np.zeros((0, len(FEATURES)))
    return X.astype(np.float32), offsets


def _main_block(words: np.ndarray, prose: np.ndarray, offsets: np.ndarray, doc_of: np.ndarray,
                doc_words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The page's main block: the run of lines with the largest sum of prose words minus a
    penalty for every other non-empty line (Kadane's maximum subarray, per document). Per
    line: inside it or not, the distance to it in lines, and the block's share of the words."""
    score = np.where(prose, words, np.where(words > 0, -MAIN_BLOCK_PENALTY, 0.0)).tolist()
    n = len(score)
    inside, dist, share = np.zeros(n), np.zeros(n), np.zeros(n)
    for d in range(len(offsets) - 1):
        a, b = int(offsets[d]), int(offsets[d + 1])
        best, best_a, best_b, run, run_a = 0.0, a, a, 0.0, a
        for i in range(a, b):
            if run <= 0:
                run, run_a = 0.0, i
            run += score[i]
            if run > best:
                best, best_a, best_b = run, run_a, i + 1
        if best_b > best_a:
            inside[best_a:best_b] = 1.0
            idx = np.arange(a, b)
            dist[a:b] = np.where(idx < best_a, best_a - idx, np.where(idx >= best_b, idx - best_b + 1, 0))
            share[a:b] = words[best_a:best_b].sum() / max(doc_words[d], 1.0)
        else:
            dist[a:b] = b - a
    return inside, np.log1p(dist), share


def _vs_doc_max(values: np.ndarray, offsets: np.ndarray, doc_of: np.ndarray) -> np.ndarray:
    nonempty = np.diff(offsets) > 0
    top = np.zeros(len(offsets) - 1)
    if nonempty.any():
        top[nonempty] = np.maximum.reduceat(values, offsets[:-1][nonempty])
    return values / np.maximum(top[doc_of], 1e-9)


def stack_features(p: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The second pass's extra columns (``STACK_FEATURES``) from first-pass probabilities."""
    n = len(p)
    if not n:
        return np.zeros((0, len(STACK_FEATURES)))
    doc_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    start, end = offsets[doc_of], offsets[doc_of + 1]
    idx = np.arange(n)
    cs = np.concatenate(([0.0], np.cumsum(p)))
    cols = [p] + [_windowed(p, start, end, w) for w in STACK_WINDOWS] + [_shifted(p, doc_of, o) for o in OFFSETS]
    cols.append(np.where(idx > start, (cs[idx] - cs[start]) / np.maximum(idx - start, 1), -1.0))
    cols.append(np.where(idx + 1 < end, (cs[end] - cs[idx + 1]) / np.maximum(end - idx - 1, 1), -1.0))
    return np.column_stack(cols)


def _run_lengths(flags: np.ndarray, doc_of: np.ndarray) -> np.ndarray:
    """For each line, the length of the run of consecutive flagged lines (within its
    document) it belongs to; 0 for unflagged lines."""
    n = len(flags)
    out = np.zeros(n)
    if not n:
        return out
    change = np.ones(n, dtype=bool)
    change[1:] = (flags[1:] != flags[:-1]) | (doc_of[1:] != doc_of[:-1])
    run_id = np.cumsum(change) - 1
    sizes = np.bincount(run_id)
    out[flags] = sizes[run_id[flags]]
    return out


class LearnedModelError(ValueError):
    """The learned writer's model file is missing or unusable; the message names the file."""


@dataclass
class LineModel:
    """A trained line classifier: two LightGBM passes (the second also sees the first pass's
    probabilities of the neighbouring lines) and what the features need."""

    boosters: list[Any]  # lightgbm.Booster: first pass, second pass
    threshold: float
    stopwords: frozenset[str]
    min_doc_words: int = 20
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where it was read from
    sha256: str = ""  # of the model file

    def content_probability(self, texts: list[str], frequencies: Counter[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per line of ``texts`` (in order): the probability that it is content; and each
        text's first row (``len(texts) + 1`` offsets)."""
        X, offsets = features(texts, self.stopwords, frequencies)
        return self.predict(X, offsets), offsets

    def predict(self, X: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        if not len(X):
            return np.zeros(0)
        p = self.boosters[0].predict(X, num_threads=1)
        for booster in self.boosters[1:]:
            p = booster.predict(np.column_stack([X, stack_features(p, offsets)]), num_threads=1)
        return p

    def to_bytes(self) -> bytes:
        """Deterministic bytes: sorted JSON, gzip without a timestamp."""
        doc = {"format": FORMAT, "version": VERSION, "features": FEATURES, "stack_features": STACK_FEATURES,
               "threshold": self.threshold, "min_doc_words": self.min_doc_words,
               "stopwords": sorted(self.stopwords), "meta": self.meta,
               "lightgbm": [b.model_to_string(num_iteration=-1) for b in self.boosters]}
        raw = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf-8")
        return gzip.compress(raw, compresslevel=9, mtime=0)


def model_from_bytes(data: bytes, name: str) -> LineModel:
    """Parse a model file; anything but a model of this format and version fails naming ``name``."""
    import lightgbm

    try:
        doc = json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    except (OSError, ValueError, EOFError) as exc:
        raise LearnedModelError(f"learned writer model {name}: not a model file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LearnedModelError(f"learned writer model {name}: not a {FORMAT} file")
    if (doc.get("version") != VERSION or doc.get("features") != FEATURES
            or doc.get("stack_features") != STACK_FEATURES):
        raise LearnedModelError(f"learned writer model {name}: version {doc.get('version')} with "
                                f"{len(doc.get('features') or [])} features; this Refinery reads version {VERSION} "
                                f"with {len(FEATURES)} features (retrain it with `refinery prox train`)")
    try:
        boosters = [lightgbm.Booster(model_str=m) for m in doc["lightgbm"]]
    except Exception as exc:  # lightgbm raises its own LightGBMError on a corrupt model
        raise LearnedModelError(f"learned writer model {name}: LightGBM cannot read it ({exc})") from None
    return LineModel(boosters, float(doc["threshold"]), frozenset(doc["stopwords"]), int(doc["min_doc_words"]),
                     doc.get("meta", {}), name)


def load_model(url: str | None = None, endpoint_url: str | None = None) -> LineModel:
    """The model at ``url`` (any fsspec URL), or the one shipped in the package; loaded once
    per process (and per content, so a retrained model at the same URL is read again)."""
    from tasks.quality.models import ModelError, load_once, local_copy

    if url is None:
        path = DEFAULT_MODEL
        if not path.is_file():
            raise LearnedModelError(f"learned writer model {path}: file not found (the package's default model)")
    else:
        try:
            path = local_copy(url, endpoint_url)
        except ModelError as exc:
            raise LearnedModelError(f"learned writer {exc}") from None
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    model = load_once(("prox-learned", digest), lambda: model_from_bytes(data, url or str(path)))
    model.sha256 = digest
    return model


class LearnedWriter:
    """Programs from the line model: the removed lines as ``remove_lines`` ranges (and inline
    URLs normalized away, as the heuristic writer does); ``drop_doc()`` when fewer than the
    model's ``min_doc_words`` words would be left. Both passes use one prediction per
    document (kept between the document-level and the chunk-level pass)."""

    name = "learned"
    whole_documents = True  # no context limit: the document-level program sees the whole document

    def __init__(self, model: LineModel, context: list[str]):
        self.model = model
        self.identity = f"{model.source or 'in memory'} (sha256 {model.sha256[:16] or 'n/a'})"
        self.frequencies = document_frequencies(context)
        self._masks: dict[str, list[bool]] = {}

    def removed(self, texts: list[str]) -> list[list[bool]]:
        """Per text, per line: True when the model says the line is not content."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._masks]
        for a in range(0, len(todo), BATCH_DOCS):  # bounded memory: per-character arrays of a batch
            batch = todo[a: a + BATCH_DOCS]
            prob, offsets = self.model.content_probability(batch, self.frequencies)
            remove = (prob < self.model.threshold).tolist()
            for k, t in enumerate(batch):
                self._masks[t] = remove[offsets[k]: offsets[k + 1]]
        return [self._masks[t] for t in texts]

    def doc_programs(self, texts: list[str]) -> list[str]:
        out = []
        for text, remove in zip(texts, self.removed(texts), strict=True):
            kept = sum(len(ln.split()) for ln, r in zip(lines_of(text), remove, strict=True) if not r)
            out.append("drop_doc()" if kept < self.model.min_doc_words else "keep_doc()")
        return out

    def chunk_programs(self, texts: list[str], chunks: list[list[Chunk]]) -> list[list[str]]:
        out = [heuristic.programs_from_mask(t, ch, remove)
               for t, ch, remove in zip(texts, chunks, self.removed(texts), strict=True)]
        self._masks.clear()  # the chunk pass is the last to need them
        return out

    def usage(self) -> dict[str, Any]:
        return {}
