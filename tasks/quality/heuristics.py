"""Heuristic taggers: datatrove's own filter classes, run as non-destructive taggers.

Each filter's ``filter(doc)`` decides exactly as it does inside a datatrove pipeline; we only
record the decision (pass 1/0 and the reason it gives) as Dolma-style attributes. C4's line
filter is also observed line by line (through the ``stat_update`` calls it makes for every
line, in order) so that the lines it would remove become spans; as a modifier its output
text replaces the document's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tasks.quality.models import load_once
from tasks.schema import SPANS

TAGGERS = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")


def _classes() -> dict[str, type]:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    class ObservedC4(C4QualityFilter):
        """C4QualityFilter recording, per line of ``splitlines()``, whether it kept the line."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self.line_kept: list[bool] = []

        def stat_update(self, *labels: str, value: int = 1, unit: str | None = None) -> None:
            for label in labels:
                if label == "line-kept":
                    self.line_kept.append(True)
                elif label.startswith("line-filter-"):
                    self.line_kept.append(False)
            super().stat_update(*labels, value=value, unit=unit)

    return {
        "gopher_repetition": GopherRepetitionFilter,
        "gopher_quality": GopherQualityFilter,
        "c4_quality": ObservedC4,
        "fineweb_quality": FineWebQualityFilter,
    }


def make_filter(name: str, params: dict[str, Any]) -> Any:
    """A datatrove filter built with ``params`` (datatrove's own argument names)."""
    cls = _classes()[name]
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"quality tagger {name}: bad parameters {params}: {exc}") from None


def _filter_for(name: str, params: dict[str, Any]) -> Any:
    key = ("datatrove", name, tuple(sorted((k, repr(v)) for k, v in params.items())))
    return load_once(key, lambda: make_filter(name, params))


@dataclass
class TaggerOutput:
    columns: dict[str, pa.Array] = field(default_factory=dict)
    new_text: list[str] | None = None  # set when a tagger modified the documents
    engine: str = "datatrove"
    fallbacks: int = 0  # fast engine: documents where some filter's decision came from datatrove


def run_filter(flt: Any, text: str, doc_id: str = "") -> tuple[bool, str | None, str]:
    """One datatrove decision: (keep, reason, text after the filter)."""
    from datatrove.data import Document

    doc = Document(text=text, id=doc_id)
    try:
        res = flt.filter(doc)
    except Exception as exc:  # datatrove raises on some edge cases (e.g. no words at all)
        return False, f"error_{type(exc).__name__}", text
    if isinstance(res, tuple):
        return bool(res[0]), res[1], doc.text
    return bool(res), None, doc.text


def _line_spans(text: str, kept: list[bool]) -> list[dict[str, Any]]:
    spans, pos = [], 0
    for line, keep in zip(text.splitlines(keepends=True), kept, strict=False):
        if not keep:
            body = line.rstrip("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
            spans.append({"start": pos, "end": pos + len(body), "score": 1.0})
        pos += len(line)
    return spans


@dataclass(frozen=True)
class TaggerSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    modify: bool = False  # C4 only: its output text replaces the document's
    drop: bool = False  # with short_circuit, a fail hides the document from later taggers


# documents whose new chunks the fast engine learns at once. Learning a block peaks at about 20
# times its text (the joined bytes, the lookup's arrays, the unique/inverse arrays: 2.2 GB measured
# for 2,048 pages of 58 KB), so a block is also cut at LEARN_CHARS: a shard of long pages or books
# learns in blocks of a few MB (one document longer than that is a block of its own)
LEARN_DOCS = 2048
LEARN_CHARS = 4_000_000


def _block_end(texts: list[str], start: int) -> int:
    end, size = start, 0
    while end < len(texts) and end - start < LEARN_DOCS and (end == start or size + len(texts[end]) <= LEARN_CHARS):
        size += len(texts[end])
        end += 1
    return end


def tag_all(specs: list[TaggerSpec], texts: list[str], ids: list[str], short_circuit: bool = False,
            engine: str = "datatrove") -> TaggerOutput:
    """Run the taggers document by document, each document through every tagger in turn, as a
    datatrove pipeline streams it: datatrove caches the word tokenization of the last few
    texts (``split_into_parts`` is an ``lru_cache(5)``), so the taggers after the first reuse
    it. Per tagger: ``quality__<name>__pass`` (whole-document span scored 1.0 or 0.0) and
    ``quality__<name>__reason`` (datatrove's reason, null when it passes); for C4 also
    ``removed_lines`` (spans of the lines it would remove, in the text it saw) and
    ``removed_fraction``. A document a tagger never saw (short_circuit) has nulls.

    ``engine="fast"`` computes each decision with :mod:`tasks.quality.fast` (the same decisions,
    reasons and C4 lines as datatrove's classes), falling back to the class itself for a
    document it cannot prove; ``fallbacks`` counts those documents."""
    if engine not in ("fast", "datatrove"):
        raise ValueError(f"quality engine {engine!r}: expected 'fast' or 'datatrove'")
    filters = [_filter_for(s.name, s.params) for s in specs]
    fast = None
    if engine == "fast":
        from tasks.quality.fast.engine import engine as fast_engine

        fast = fast_engine()
    fallbacks = 0
    n = len(texts)
    passed: list[list[float | None]] = [[None] * n for _ in specs]
    reasons: list[list[str | None]] = [[None] * n for _ in specs]
    seen_len: list[list[int]] = [[0] * n for _ in specs]
    c4_spans: list[Any] = [None] * n
    c4_removed: list[float | None] = [None] * n
    out_text = list(texts)
    block_end = 0
    for d, (text, doc_id) in enumerate(zip(texts, ids, strict=True)):
        if fast is not None and d == block_end:
            # the next documents' new chunks tokenized together (FastTokenizer.learn)
            block_end = _block_end(texts, d)
            fast.learn(filters, texts[d:block_end])
        fell_back = False
        for k, (spec, flt) in enumerate(zip(specs, filters, strict=True)):
            decided = fast.decide(spec.name, flt, text) if fast is not None else None
            if decided is not None:
                keep, reason, after, line_kept = decided
                if spec.name == "c4_quality":
                    flt.line_kept = line_kept or []
            else:
                fell_back = fell_back or fast is not None
                if spec.name == "c4_quality":
                    flt.line_kept = []
                keep, reason, after = run_filter(flt, text, doc_id)
            passed[k][d] = 1.0 if keep else 0.0
            reasons[k][d] = None if keep else (reason or "failed")
            seen_len[k][d] = len(text)
            if spec.name == "c4_quality":
                spans = _line_spans(text, flt.line_kept) if flt.split_paragraph else []
                c4_spans[d] = spans
                c4_removed[d] = sum(s["end"] - s["start"] for s in spans) / len(text) if text else 0.0
                if spec.modify and keep:
                    text = out_text[d] = after
            if short_circuit and spec.drop and not keep:
                break
        fallbacks += fell_back
    if fast is not None:
        fast.learn(filters, [])  # lets go of the last block
    out = TaggerOutput(engine=engine, fallbacks=fallbacks)
    for k, spec in enumerate(specs):
        prefix = f"quality__{spec.name}__"
        out.columns[prefix + "pass"] = _whole(seen_len[k], passed[k])
        out.columns[prefix + "reason"] = pa.array(reasons[k], pa.string())
        if spec.name == "c4_quality":
            out.columns[prefix + "removed_lines"] = pa.array(c4_spans, SPANS)
            out.columns[prefix + "removed_fraction"] = _whole(seen_len[k], c4_removed)
            if spec.modify:
                out.new_text = out_text
    return out


def tag(name: str, params: dict[str, Any], texts: list[str], ids: list[str], modify: bool = False) -> TaggerOutput:
    """One tagger over every document (see :func:`tag_all`)."""
    return tag_all([TaggerSpec(name, params, modify)], texts, ids)


def _whole(lengths: list[int], scores: list[float | None]) -> pa.Array:
    return pa.array([None if s is None else [{"start": 0, "end": n, "score": float(s)}]
                     for n, s in zip(lengths, scores, strict=True)], SPANS)


def attribute_names(name: str) -> list[str]:
    prefix = f"quality__{name}__"
    extra = ["removed_lines", "removed_fraction"] if name == "c4_quality" else []
    return [prefix + a for a in ["pass", "reason", *extra]]
