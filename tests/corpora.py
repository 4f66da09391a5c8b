"""Test inputs built from ../shared/data (never copied into the repo)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import zstandard

from tasks.config import InputSpec
from tasks.ingest import content_key, normalize_text
from tests.conftest import shared

SHARED_INPUTS = [
    # (file, source name, text column, id column)
    ("cc_web_samples/cc_web_samples.parquet", "cc_web", "text", "id"),
    ("simple_wikipedia/simple_wikipedia.parquet", "simple_wiki", "text", "page_id"),
    ("conversations_hh_rlhf/conversations_hh_rlhf.parquet", "hh_rlhf", "chosen", "id"),
]


def shared_specs() -> list[InputSpec]:
    return [
        InputSpec(uri=str(shared(f)), source=src, columns={"text": text, "id": id_col})
        for f, src, text, id_col in SHARED_INPUTS
    ]


def shared_rows() -> list[dict[str, Any]]:
    """Every shared input row in the run's stable order, as (source, id, text)."""
    rows = []
    for f, src, text, id_col in SHARED_INPUTS:
        t = pq.read_table(shared(f), columns=[id_col, text])
        for i, x in zip(t.column(id_col).to_pylist(), t.column(text).to_pylist(), strict=True):
            rows.append({"source": src, "id": str(i), "text": x})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]], compression: str | None = None) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if compression == "gz":
        data = gzip.compress(data, mtime=0)
    elif compression == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def inject_copies(folder: Path, n: int, seed: int = 5) -> tuple[InputSpec, list[dict[str, Any]]]:
    """A JSONL input of exact copies of random shared documents (new ids, another source),
    listed after the shared inputs so that the originals are the survivors."""
    rng = random.Random(seed)
    originals = rng.sample([r for r in shared_rows() if r["text"] and r["text"].strip()], n)
    copies = [{"doc_id": f"copy-{k}", "body": r["text"], "origin_source": r["source"], "origin_id": r["id"]}
              for k, r in enumerate(originals)]
    path = write_jsonl(folder / "injected" / "copies.jsonl", copies)
    spec = InputSpec(uri=str(path), source="injected", columns={"text": "body", "id": "doc_id"})
    return spec, copies


def first_occurrence(rows: list[dict[str, Any]], key_mode: str = "stripped") -> dict[str, tuple[str, str]]:
    """Reference for exact dedup, computed independently: content key → (source, id) of the
    first row with that content, in input order."""
    texts = [normalize_text(r["text"], "NFC") if r["text"] is not None else None for r in rows]
    first: dict[str, tuple[str, str]] = {}
    for r, t in zip(rows, texts, strict=True):
        if t is None or not t.strip():
            continue
        first.setdefault(content_key(t, key_mode), (r["source"], r["id"]))
    return first


def tinyhelen_pairs() -> list[dict[str, str]]:
    """The upstream original / leaner pairs of ../shared/data/tinyhelen_leaner_sample, paired as
    its SOURCE.md describes (sha256 of the original text)."""
    import hashlib
    import re as _re

    base = shared("tinyhelen_leaner_sample")

    def zst(path: Path) -> list[dict[str, Any]]:
        data = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().decode("utf-8")
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def original(genre: str, rec: dict[str, Any]) -> str:
        if genre == "wiki":
            (value,) = rec.values()
            return _re.sub(r"<[^>]*>", "", value).strip()
        if genre == "textbook":
            return rec["textbook"]
        if genre == "code":
            return rec["prompt"] + " " + rec["response"]
        return rec["text"]

    pairs = []
    for genre, ori, lean in (("web", "web0002.jsonl.zst", "web0000.jsonl"), ("wiki", "wiki0002.jsonl.zst", "wiki0000.jsonl"),
                             ("textbook", "textbook0002.jsonl.zst", "textbook0000.jsonl"),
                             ("code", "code0002.jsonl.zst", "code0000.jsonl"), ("book", "book0002.jsonl.zst", "book0000.jsonl")):
        by_hash = {}
        for rec in zst(base / "ori" / "10M" / "test" / ori):
            text = original(genre, rec)
            by_hash[hashlib.sha256(text.encode("utf-8")).hexdigest()] = text
        for line in (base / "leaner" / "10M" / "test" / lean).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            rewrite = rec["prompt"] + " " + rec["response"] if genre == "code" else rec["text"]
            if rec["hash"] in by_hash:
                pairs.append({"genre": genre, "original": by_hash[rec["hash"]], "rewrite": rewrite})
    return pairs


def split_of(original: str) -> str:
    """``calibration`` or ``heldout``: a fixed half of the TinyHelen pairs, by the parity of
    the original's SHA-256 (the leaner thresholds are chosen on the first, reported on the second)."""
    import hashlib

    return "heldout" if int(hashlib.sha256(original.encode("utf-8")).hexdigest(), 16) % 2 else "calibration"


CORRUPTIONS = ("shuffled", "other_document", "second_half_replaced", "truncated_30", "original_unchanged")


def corrupted(pairs: list[dict[str, str]], seed: int = 17) -> list[dict[str, str]]:
    """For each pair, the corruptions a rewrite validator must reject: the rewrite's words
    shuffled; the rewrite of another document (same genre when there is one); the second half
    of the rewrite's words replaced by the middle onwards of another document's rewrite (same
    word count); the first 30% of the rewrite (cut at a word); the original handed back."""
    import re as _re

    rng = random.Random(seed)
    out = []
    for i, p in enumerate(pairs):
        others = [j for j, q in enumerate(pairs) if j != i and q["genre"] == p["genre"]] or \
            [j for j in range(len(pairs)) if j != i]
        other = pairs[rng.choice(others)]["rewrite"]
        words = p["rewrite"].split()
        shuffled = words[:]
        rng.shuffle(shuffled)
        starts = [m.start() for m in _re.finditer(r"\S+", p["rewrite"])]
        half = len(words) // 2
        other_words = other.split()
        tail = (other_words[len(other_words) // 2:] + other_words)[: len(words) - half]
        cut = int(len(words) * 0.3)
        out.append({
            "shuffled": " ".join(shuffled),
            "other_document": other,
            "second_half_replaced": p["rewrite"][: starts[half]] + " ".join(tail) if half else p["rewrite"],
            "truncated_30": p["rewrite"][: starts[cut]].rstrip() if cut else "",
            "original_unchanged": p["original"],
        })
    return out


POSITIONAL = ("first_half_replaced", "middle_third_replaced", "span_replaced")
SPAN = (1 / 3, 1 / 2)  # share of words the random-position replacement takes


def replaced_parts(text: str, other: str, rng: random.Random | None = None) -> dict[str, str]:
    """``text`` with its first half of words replaced by ``other``'s first words, its middle
    third by ``other``'s middle onwards (word counts kept) and, with ``rng``, a run of 1/3 to
    1/2 of its words starting anywhere by as many of ``other``'s from a random place."""
    words, o = text.split(), other.split()
    n, half, third = len(words), len(words) // 2, len(words) // 3
    out = {"first_half_replaced": " ".join((o + o)[:half] + words[half:]),
           "middle_third_replaced": " ".join(words[:third] + (o[len(o) // 2:] + o)[:n - 2 * third]
                                             + words[n - third:])}
    if rng is not None:
        k = max(1, round(n * rng.uniform(*SPAN)))
        start, at = rng.randrange(0, max(1, n - k + 1)), rng.randrange(0, max(1, len(o)))
        filler = ((o[at:] + o) * (k // max(1, len(o)) + 1))[:k]
        out["span_replaced"] = " ".join(words[:start] + filler + words[start + k:])
    return out


def positional_corrupted(pairs: list[dict[str, str]], seed: int = 17) -> list[dict[str, str]]:
    """For each pair, its rewrite with the start, the middle or a random run replaced by
    another document's rewrite (same genre when there is one): ``POSITIONAL``. A generator of
    its own, so ``corrupted`` gives the texts it always gave."""
    rng = random.Random(seed + 1)
    out = []
    for i, p in enumerate(pairs):
        others = [j for j, q in enumerate(pairs) if j != i and q["genre"] == p["genre"]] or \
            [j for j in range(len(pairs)) if j != i]
        out.append(replaced_parts(p["rewrite"], pairs[rng.choice(others)]["rewrite"], rng))
    return out


# real page corpora for the "same corruptions on unseen pages" check of the leaner content
# decision: (file, text column); the first two are what the decision's tests were written
# against, the last two were left untouched until the figures were recorded (docs/leaner.md)
PAGE_CORPORA = {
    "simple_wikipedia": ("simple_wikipedia/simple_wikipedia.parquet", "text"),
    "dclm": ("dclm_human_quality_dev/dclm_human_quality_dev.parquet", "text"),
    "scrapinghub_gold": ("web_pages_scrapinghub/web_pages_scrapinghub.parquet", "gold_text"),
    "readability_main": ("web_pages_readability/web_pages_readability.parquet", "main_text"),
}


def page_docs(name: str, limit: int = 120, english_only: bool = False) -> list[str]:
    """Pages of 150 to 1,500 words of a corpus of ``PAGE_CORPORA``, in file order;
    ``english_only`` keeps those fastText calls English (the two article sets mix languages)."""
    path, column = PAGE_CORPORA[name]
    texts = [t for t in pq.read_table(shared(path), columns=[column]).column(column).to_pylist()
             if t and 150 <= len(t.split()) <= 1500]
    if english_only:
        from tasks.quality import lid

        langs, _ = lid.predict(texts)
        texts = [t for t, lang in zip(texts, langs, strict=True) if lang == "en"]
    return texts[:limit]


def page_cases(docs: list[str], seed: int = 11) -> list[dict[str, str]]:
    """Per page, the page itself (standing in for its own rewrite: to accept) and the
    corruptions to reject: the next page, the page's words shuffled, its second half replaced
    by the next page's middle onwards (same word count), its first 30% of words, and (added
    after a review found them passing) its first half replaced by the next page's first words
    and its middle third replaced by the next page's middle."""
    rng = random.Random(seed)
    n, out = len(docs), []
    for i, d in enumerate(docs):
        words, other = d.split(), docs[(i + 1) % n].split()
        half = len(words) // 2
        shuffled = words[:]
        rng.shuffle(shuffled)
        parts = replaced_parts(d, docs[(i + 1) % n])
        out.append({"page": d, "other_page": docs[(i + 1) % n], "shuffled": " ".join(shuffled),
                    "second_half_replaced": " ".join(words[:half] + (other[len(other) // 2:] + other)[:len(words) - half]),
                    "truncated_30": " ".join(words[: int(len(words) * 0.3)]),
                    "first_half_replaced": parts["first_half_replaced"],
                    "middle_replaced": parts["middle_third_replaced"]})
    return out


# every text column of ../shared/data, HTML included (markup is dense in symbols and odd lines)
TEXT_COLUMNS = [
    ("cc_web_samples/cc_web_samples.parquet", ["text"]),
    ("code_humaneval/code_humaneval.parquet", ["text", "prompt"]),
    ("conversations_hh_rlhf/conversations_hh_rlhf.parquet", ["chosen", "rejected"]),
    ("dclm_human_quality_dev/dclm_human_quality_dev.parquet", ["text"]),
    ("redpajama_cc_simplified/redpajama_cc_simplified.parquet", ["original", "simplified"]),
    ("simple_wikipedia/simple_wikipedia.parquet", ["text"]),
    ("web_pages_readability/web_pages_readability.parquet", ["page_text", "main_text", "html"]),
    ("web_pages_scrapinghub/web_pages_scrapinghub.parquet", ["page_text", "gold_text", "html"]),
]


def shared_texts() -> tuple[list[str], list[str]]:
    """Every non-null value of :data:`TEXT_COLUMNS`, and where each comes from (file:column:row)."""
    texts, where = [], []
    for file, columns in TEXT_COLUMNS:
        t = pq.read_table(shared(file), columns=columns)
        for c in columns:
            for i, x in enumerate(t.column(c).to_pylist()):
                if x is not None:
                    texts.append(x)
                    where.append(f"{file}:{c}:{i}")
    return texts, where


# characters that decide the figures: joiners, terminal marks, every line break, spaces that
# are not line breaks, the underscore, letters whose lower case is ASCII (KELVIN SIGN) or two
# characters (İ), final sigma, astral letters and symbols, a lone surrogate
SPECIAL_CHARACTERS = list("'’‘-_.?!\"”“\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029 \t\xa0\u3000\u212aİΣσ") + [
    "\U0001d400", "\U0001f600", "\U00020000", "\ud800", "n't", "N’T", "THE", "The", "ThE", "don't", "re-do",
    "a", "I", "KEEP", "\u212aeep", "ca", "n’t", "‘ll", "’s"]
