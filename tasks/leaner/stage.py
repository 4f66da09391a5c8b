"""The leaner stage over documents: genre, windows, genre prompts, the ``EDITED: ... <end>``
contract, validation; the original is kept (or the document dropped) when a rewrite fails."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.leaner.config import LeanerConfig
from tasks.leaner.text import detect_genre, preclean, windows
from tasks.leaner.validate import Limits, Verdict, default_band, parse_answer, validate
from tasks.leaner.vocab import lean_coverage
from tasks.llm.backends import Request
from tasks.schema import whole_document_spans

PROMPTS = Path(__file__).with_name("prompts")
PREFIX = "EDITED:\n"


@cache
def _prompt_file(name: str) -> str:
    return (PROMPTS / f"{name}.txt").read_text(encoding="utf-8")


def prompt(window: str, genre: str, anonymize: bool, prefill: bool) -> str:
    """The genre's prompt; for base models (``prefill``) the answer's first line is written
    for the model, which then continues the rewrite."""
    text = (_prompt_file("base").replace("{genre_rules}", _prompt_file(genre).strip())
            .replace("{entity_rules}", _prompt_file("entities").strip() if anonymize else "")
            .replace("{text}", window))
    return text + PREFIX if prefill else text


def limits_for(cfg: LeanerConfig, genre: str) -> Limits:
    llm = cfg.fluency_model == "llm"
    return Limits(band=tuple(cfg.length_bands.get(genre, default_band(genre, cfg.content_check == "learned"))),
                  min_coverage=cfg.code_min_coverage if genre == "code" else cfg.min_coverage,
                  require_rise=cfg.require_rise, vocab_size=cfg.vocab_size, lid_min_score=cfg.lid_min_score,
                  max_placeholders_per_100_words=cfg.max_placeholders_per_100_words,
                  min_topic=cfg.min_topic, min_fidelity=cfg.min_fidelity, min_reach=cfg.min_reach,
                  min_fluency=-cfg.fluency_llm_margin if llm else cfg.min_fluency,
                  content_model=cfg.content_check == "learned")


def fluency_scorer(cfg: LeanerConfig):
    """None for the default word-order score; with ``fluency_model: llm``, the rewrite's mean
    token log-likelihood minus the original's (the model is loaded once per process)."""
    if cfg.fluency_model != "llm":
        return None
    from tasks.leaner.fluency import lm_model

    model = lm_model(cfg.fluency_llm_model)

    def score(original: str, rewrite: str) -> float:
        return model.mean_log_likelihood(rewrite) - model.mean_log_likelihood(original)

    return score


def genre_of(cfg: LeanerConfig, text: str, source: str, metadata: str | None) -> str:
    if cfg.genre != "auto":
        return cfg.genre
    detected = detect_genre(text, source, metadata)
    if metadata and '"genre"' in metadata:
        return detected  # metadata's own genre, read by detect_genre, wins over the source map
    return cfg.genre_by_source.get(source, detected)


@dataclass
class LeanerResult:
    keep: np.ndarray
    text: list[str]
    status: list[str]  # "accepted" or the rejection reason
    attributes: dict[str, pa.Array]
    figures: dict[str, Any] = field(default_factory=dict)


def rewrite(docs: pa.Table, cfg: LeanerConfig, client: Any, count, lid_predict, prefill: bool = True) -> LeanerResult:
    texts = docs.column("text").to_pylist()
    sources = docs.column("source").to_pylist()
    metas = docs.column("metadata").to_pylist() if "metadata" in docs.column_names else [None] * len(texts)
    genres = [genre_of(cfg, t, s, m) for t, s, m in zip(texts, sources, metas, strict=True)]
    doc_windows: list[list[str]] = []
    requests: list[Request] = []
    for text, genre in zip(texts, genres, strict=True):
        cleaned = preclean(text) if cfg.preclean and genre != "code" else text
        ws = windows(cleaned, genre, cfg.window_tokens.get(genre, 300), count)
        doc_windows.append(ws)
        requests += [Request(prompt(w, genre, cfg.anonymize, prefill), max_tokens=cfg.max_output_tokens,
                             temperature=cfg.temperature, top_p=cfg.top_p, stop=("<end>",)) for w in ws]
    answers = client.complete(requests) if requests else []
    out_text, status = list(texts), []
    keep = np.ones(len(texts), dtype=bool)
    before, after, ratio = [], [], []
    content: dict[str, list[float | None]] = {"topic": [], "fidelity": [], "reach": [], "fluency": [],
                                              "content_score": []}
    fluency = fluency_scorer(cfg)
    window_failures: Counter[str] = Counter()
    k = 0
    for i, (text, genre, ws) in enumerate(zip(texts, genres, doc_windows, strict=True)):
        bodies, failure = [], None
        for _ in ws:
            c = answers[k]
            k += 1
            if c.error is not None:
                reason = "budget" if c.error.startswith("budget") else "model_error"
            else:
                # the stop sequence is cut from the answer: a "stop" finish means <end> was written
                raw = (PREFIX if prefill else "") + c.text + (" <end>" if c.meta.get("finish_reason") == "stop" else "")
                body = parse_answer(raw)
                reason = "format" if body is None else None
            if reason is not None:
                window_failures[reason] += 1
                failure = failure or reason
            else:
                bodies.append(body)
        if not ws:
            failure = "empty"
        rewritten = "\n".join(bodies)
        if failure is None:
            verdict = validate(text, rewritten, genre, limits_for(cfg, genre), lid_predict, fluency)
        else:  # no rewrite to judge: only the original's coverage is recorded
            verdict = Verdict(False, failure, round(lean_coverage(text, cfg.vocab_size), 6), 0.0, 0.0)
        for name in content:
            content[name].append(getattr(verdict, name))
        before.append(verdict.coverage_before)
        after.append(verdict.coverage_after if failure is None else verdict.coverage_before)
        ratio.append(verdict.length_ratio if failure is None else 1.0)
        reason = failure or verdict.reason
        status.append("accepted" if reason is None else reason)
        if reason is None:
            out_text[i] = rewritten
        elif cfg.on_failure == "drop":
            keep[i] = False
    lengths = pa.array([len(t) for t in texts], pa.int64())
    model = getattr(client, "identity", None)
    attrs = {
        "leaner__rewrite__genre": pa.array(genres, pa.string()),
        "leaner__rewrite__status": pa.array(status, pa.string()),
        "leaner__rewrite__windows": pa.array([len(w) for w in doc_windows], pa.int64()),
        "leaner__rewrite__coverage_before": whole_document_spans(lengths, pa.array(before, pa.float64())),
        "leaner__rewrite__coverage_after": whole_document_spans(lengths, pa.array(after, pa.float64())),
        "leaner__rewrite__length_ratio": whole_document_spans(lengths, pa.array(ratio, pa.float64())),
        # content checks (null when no rewrite came back to judge)
        **{f"leaner__rewrite__{name}": whole_document_spans(lengths, pa.array(values, pa.float64()))
           for name, values in content.items()},
        "leaner__rewrite__model": pa.array([model] * len(texts), pa.string()),
    }
    accepted = [s == "accepted" for s in status]
    figures = {
        "documents": len(texts),
        "accepted": sum(accepted),
        "rejected": dict(Counter(s for s in status if s != "accepted")),
        "windows": sum(len(w) for w in doc_windows),
        "window_failures": dict(window_failures),
        "genres": dict(Counter(genres)),
        "coverage_before_sum": float(sum(before)),
        "coverage_after_sum": float(sum(after)),
        "accepted_coverage_before_sum": float(sum(b for b, a in zip(before, accepted, strict=True) if a)),
        "accepted_coverage_after_sum": float(sum(x for x, a in zip(after, accepted, strict=True) if a)),
        "usage": client.usage.to_dict() if hasattr(client, "usage") else {},
    }
    return LeanerResult(keep, out_text, status, attrs, figures)
