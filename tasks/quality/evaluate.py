"""``refinery quality eval``: every quality signal against a team's own labels.

The labelled texts go through the quality stage's taggers exactly as in a release (every
tagger sees every document), then each numeric attribute, and each input of the combined
score, is scored by its AUC against the labels. For the chosen attribute it also gives the
precision and recall of keeping the documents at or above each cut-off the configuration uses
on it (a ``min_score``, a ``keep_top_percent`` threshold computed over the labelled set), or,
when it uses none, at 0.5 (for a score in [0, 1]) and at the median (keep the top half).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from tasks.quality import features, stage
from tasks.quality.classifier import auc
from tasks.quality.config import QualityConfig
from tasks.quality.labels import Labelled


class EvalError(ValueError):
    pass


# spans over parts of a document (one per line or paragraph): no single score to rank by
PER_PART = ("quality__c4_quality__removed_lines", stage.LID + "paragraphs")


def _numeric(name: str, column: pa.Array) -> np.ndarray | None:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or name in PER_PART:
        return None  # a label (the language), a reason, per-line spans: not a document score
    return stage.rule_values(column)


def _auc(values: np.ndarray, y: np.ndarray) -> tuple[float | None, int]:
    present = ~np.isnan(values)
    n = int(present.sum())
    if n == 0 or len(set(y[present].tolist())) < 2:
        return None, n
    return round(auc(values[present], y[present]), 4), n


def cutoffs(cfg: QualityConfig, attribute: str, values: np.ndarray) -> list[dict[str, Any]]:
    """The cut-offs the configuration applies to ``attribute``; defaults when it applies none."""
    out: list[dict[str, Any]] = []
    for t in cfg.thresholds:
        if t.attribute == attribute:
            v = stage.top_percent_threshold(values, t.keep_top_percent)
            if v is not None:
                out.append({"name": t.name, "rule": f"keep top {t.keep_top_percent}% (over the labelled set)",
                            "value": v})
    for tagger in stage.enabled_taggers(cfg):
        rule = stage.own_rule(cfg, tagger)
        if rule is None:
            continue
        floor = {"lid": cfg.language_id.min_score, "classifier": cfg.classifier.min_score,
                 "combined": cfg.combined.min_score}.get(tagger)
        if floor is not None and attribute == {"lid": stage.LID + "score", "classifier": stage.CLASSIFIER,
                                               "combined": stage.COMBINED}[tagger]:
            out.append({"name": rule[0].name, "rule": f"min_score {floor}", "value": float(floor)})
    if not out:
        present = values[~np.isnan(values)]
        if len(present) and present.min() >= 0 and present.max() <= 1:
            out.append({"name": "0.5", "rule": "default: score >= 0.5", "value": 0.5})
        median = stage.top_percent_threshold(values, 50)
        if median is not None:
            out.append({"name": "top-50%", "rule": "default: keep the top half", "value": median})
    return out


def precision_recall(values: np.ndarray, y: np.ndarray, value: float) -> dict[str, Any]:
    kept = ~np.isnan(values) & (values >= value)
    positives = int(y.sum())
    tp = int((kept & (y == 1)).sum())
    return {"kept": int(kept.sum()), "precision": round(tp / kept.sum(), 4) if kept.sum() else None,
            "recall": round(tp / positives, 4) if positives else None}


def evaluate(data: Labelled, cfg: QualityConfig, attribute: str = stage.COMBINED,
             endpoint_url: str | None = None) -> dict[str, Any]:
    """AUC of ``attribute`` and of every other signal, precision and recall at the cut-offs."""
    cfg = cfg.model_copy(update={"enabled": True, "short_circuit": False})
    n = len(data.texts)
    docs = pa.table({"id": pa.array([str(i) for i in range(n)]), "text": pa.array(data.texts, pa.string()),
                     "source": pa.array(["labels"] * n), "metadata": pa.nulls(n, pa.string())})
    tagged = stage.tag(docs, cfg, endpoint_url)
    y = data.labels
    values: dict[str, np.ndarray] = {}
    for name, column in tagged.attributes.items():
        v = _numeric(name, column)
        if v is not None:
            values[name] = v
    if cfg.combined.enabled:
        from tasks.quality.scorer import load_scorer

        scorer = load_scorer(cfg.combined.model, endpoint_url)
        attrs = tagged.attributes
        english = stage.english_of(data.texts, attrs.get(stage.LID + "lang"), attrs.get(stage.LID + "score"),
                                   cfg.language_id.model_path)
        x = scorer.feature_matrix(data.texts, english)
        for i, name in enumerate(features.FEATURES):
            values[f"combined input: {name}"] = x[:, i]
    if attribute not in values:
        raise EvalError(f"attribute {attribute!r} is not a numeric quality attribute of this configuration "
                        f"(known: {', '.join(sorted(values))})")
    signals = {}
    for name, v in values.items():
        a, present = _auc(v, y)
        signals[name] = {"auc": a, "documents": present}
    main = values[attribute]
    return {
        "labels": {"files": data.files, **data.counts, "skipped_rows": data.skipped},
        "attribute": attribute,
        "auc": signals[attribute]["auc"],
        "documents": signals[attribute]["documents"],
        "cutoffs": [{**c, **precision_recall(main, y, c["value"])} for c in cutoffs(cfg, attribute, main)],
        "signals": dict(sorted(signals.items(), key=lambda kv: -(kv[1]["auc"] or 0))),
        "taggers": stage.enabled_taggers(cfg),
    }


def summary(result: dict[str, Any]) -> str:
    c = result["labels"]
    lines = [f"{c['documents']} labelled documents ({c['positive']} positive, {c['negative']} negative)"
             + (f"; skipped rows: {c['skipped_rows']}" if c["skipped_rows"] else ""),
             f"{result['attribute']}: AUC {result['auc']} over {result['documents']} documents", "",
             f"{'cut-off':<24} {'value':>10} {'kept':>6} {'precision':>10} {'recall':>8}"]
    for cut in result["cutoffs"]:
        p = "-" if cut["precision"] is None else f"{cut['precision']:.3f}"
        r = "-" if cut["recall"] is None else f"{cut['recall']:.3f}"
        lines.append(f"{cut['name']:<24} {cut['value']:>10.4g} {cut['kept']:>6} {p:>10} {r:>8}")
    lines += ["", f"{'signal':<55} {'AUC':>6} {'docs':>6}"]
    for name, s in result["signals"].items():
        a = "-" if s["auc"] is None else f"{s['auc']:.3f}"
        lines.append(f"{name:<55} {a:>6} {s['documents']:>6}")
    return "\n".join(lines)
