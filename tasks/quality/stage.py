"""The quality stage as plain functions over Arrow tables: tag, apply rules, thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.quality import heuristics
from tasks.quality.rules import (
    BUILTIN_NAMES,
    Rule,
    RuleError,
    check_names,
    check_types,
    compile_rule,
    matches,
    rule_table,  # noqa: F401  (quality steps use stage.rule_table)
    rule_table_checked,
    type_mismatches,
)
from tasks.schema import whole_document_spans

if TYPE_CHECKING:  # the config validates its rules with this module's stage_rules: types only here
    from tasks.quality.config import QualityConfig

HISTOGRAM_BINS = 20  # equal bins over [0, 1]
LID = "quality__lid__"
CLASSIFIER = "quality__classifier__score"
COMBINED = "quality__combined__score"  # tasks.quality.scorer.ATTRIBUTE


def enabled_taggers(cfg: QualityConfig) -> list[str]:
    """In FineWeb's order: language, repetition, Gopher quality, C4, FineWeb, then the classifier
    and the combined score."""
    out = ["lid"] if cfg.language_id.enabled else []
    out += [n for n in heuristics.TAGGERS if getattr(cfg, n).enabled]
    if cfg.classifier.model:
        out.append("classifier")
    if cfg.combined.enabled:
        out.append("combined")
    return out


def attribute_names(cfg: QualityConfig) -> list[str]:
    names: list[str] = []
    for tagger in enabled_taggers(cfg):
        if tagger == "lid":
            names += [LID + "lang", LID + "score"] + ([LID + "paragraphs"] if cfg.language_id.paragraphs else [])
        elif tagger == "classifier":
            names.append(CLASSIFIER)
        elif tagger == "combined":
            names.append(COMBINED)
        else:
            names += heuristics.attribute_names(tagger)
    return names


def score_attributes(cfg: QualityConfig) -> list[str]:
    """The whole-document scores in [0, 1] that get histograms in the manifest."""
    scores = {LID + "score", CLASSIFIER, COMBINED, "quality__c4_quality__removed_fraction"}
    return [n for n in attribute_names(cfg) if n in scores]


@dataclass
class Tagged:
    attributes: dict[str, pa.Array] = field(default_factory=dict)
    text: pa.Array | None = None  # the documents' text after modifiers, when one ran
    # the heuristic filters' engine: documents seen, and those whose decision needed datatrove
    engine: dict[str, Any] = field(default_factory=dict)


def english_of(texts: list[str], lid_lang: pa.Array | None, lid_score: pa.Array | None,
               model_path: str | None = None) -> np.ndarray:
    """Each text's language-ID probability of English, from the stage's language attributes when
    it has them (no second prediction), else predicted now."""
    from tasks.quality import lid
    from tasks.quality.scorer import english_probability

    if lid_lang is not None and lid_score is not None:
        return english_probability(lid_lang.to_pylist(), rule_values(lid_score))
    langs, scores = lid.predict(texts, model_path)
    return english_probability(langs, scores)


def _run_model_tagger(tagger: str, cfg: QualityConfig, texts: list[str],
                      endpoint_url: str | None, prior: dict[str, pa.Array] | None = None) -> dict[str, pa.Array]:
    lengths = pa.array([len(t) for t in texts], pa.int64())
    cols: dict[str, pa.Array] = {}
    if tagger == "combined":
        from tasks.quality.scorer import load_scorer

        prior = prior or {}
        english = english_of(texts, prior.get(LID + "lang"), prior.get(LID + "score"), cfg.language_id.model_path)
        scores = load_scorer(cfg.combined.model, endpoint_url).score(texts, english)
        return {COMBINED: whole_document_spans(lengths, pa.array(scores, pa.float64()))}
    if tagger == "lid":
        from tasks.quality import lid

        langs, scores = lid.predict(texts, cfg.language_id.model_path)
        cols[LID + "lang"] = pa.array(langs, pa.string())
        cols[LID + "score"] = whole_document_spans(lengths, pa.array(scores, pa.float64()))
        if cfg.language_id.paragraphs:
            target = cfg.language_id.keep[0] if cfg.language_id.keep else "en"
            cols[LID + "paragraphs"] = lid.paragraph_spans(texts, target, cfg.language_id.model_path)
        return cols
    from tasks.quality import classifier

    scores = classifier.score(texts, cfg.classifier.model, endpoint_url)
    return {CLASSIFIER: whole_document_spans(lengths, pa.array(scores, pa.float64()))}


def tag(docs: pa.Table, cfg: QualityConfig, endpoint_url: str | None = None) -> Tagged:
    """Every enabled tagger over the documents, in order: language ID (batched), datatrove's
    filters (document by document, see heuristics.tag_all), the classifier (batched). With
    ``short_circuit`` a document that a tagger's own drop rule removes is not shown to the
    later taggers (their attributes are null for it), which is what a datatrove pipeline of
    filters does."""
    texts = docs.column("text").to_pylist()
    ids = docs.column("id").to_pylist()
    out = Tagged()
    alive = np.ones(len(texts), dtype=bool)
    taggers = enabled_taggers(cfg)
    groups: list[list[str]] = []
    for t in taggers:  # consecutive heuristic taggers run as one document-by-document group
        if t in heuristics.TAGGERS and groups and groups[-1][0] in heuristics.TAGGERS:
            groups[-1].append(t)
        else:
            groups.append([t])
    modified = False
    for group in groups:
        idx = np.flatnonzero(alive)
        whole = len(idx) == len(texts)
        sub_texts = texts if whole else [texts[i] for i in idx]
        if group[0] in heuristics.TAGGERS:
            specs = [heuristics.TaggerSpec(t, getattr(cfg, t).params, getattr(getattr(cfg, t), "mode", "tag")
                                           == "modify", getattr(cfg, t).drop) for t in group]
            res = heuristics.tag_all(specs, sub_texts, ids if whole else [ids[i] for i in idx], cfg.short_circuit,
                                     engine=cfg.engine)
            cols, new_text = res.columns, res.new_text
            out.engine = {"name": cfg.engine, "documents": out.engine.get("documents", 0) + len(sub_texts),
                          "fallbacks": out.engine.get("fallbacks", 0) + res.fallbacks}
        else:
            prior = {k: (v if whole else v.take(pa.array(idx))) for k, v in out.attributes.items()
                     if k in (LID + "lang", LID + "score")}
            cols, new_text = _run_model_tagger(group[0], cfg, sub_texts, endpoint_url, prior), None
        if not whole:
            where = np.full(len(texts), -1)
            where[idx] = np.arange(len(idx))
            take = pa.array(where, mask=where < 0)
            cols = {k: v.take(take) for k, v in cols.items()}
        out.attributes.update(cols)
        if new_text is not None:
            # later taggers see the modified text, as in a datatrove pipeline
            for k, i in enumerate(idx):
                texts[i] = new_text[k]
            modified = True
        if cfg.short_circuit and len(idx):
            rules = [r for t in group if (r := own_rule(cfg, t)) is not None]
            if rules:
                sub = docs.take(pa.array(idx))
                dropped = ~apply_rules(sub, {k: v.take(pa.array(idx)) for k, v in cols.items()}, rules).keep
                alive[idx[dropped]] = False
    if modified:
        out.text = pa.array(texts, pa.string())
    return out


def engine_figures(markers: list[dict[str, Any]]) -> dict[str, Any]:
    """The heuristic filters' engine over a run's quality markers: documents, fallbacks to
    datatrove's classes and their share (for the manifest's quality figures)."""
    docs = sum(m.get("engine", {}).get("documents", 0) for m in markers)
    falls = sum(m.get("engine", {}).get("fallbacks", 0) for m in markers)
    names = sorted({m["engine"]["name"] for m in markers if m.get("engine")})
    return {"name": names[0] if len(names) == 1 else names, "documents": docs, "fallbacks": falls,
            "fallback_share": falls / docs if docs else 0.0}


def own_rule(cfg: QualityConfig, tagger: str) -> tuple[Rule, str] | None:
    """The drop rule a tagger brings, with the attribute that explains a drop; None if it drops nothing."""
    if tagger == "lid" and cfg.language_id.keep:
        langs = ", ".join(repr(lang) for lang in cfg.language_id.keep)
        expr = f"{LID}lang not in [{langs}] or {LID}score < {cfg.language_id.min_score}"
        return compile_rule("language", expr), LID + "lang"
    if tagger == "classifier" and cfg.classifier.min_score is not None:
        return compile_rule("classifier", f"{CLASSIFIER} < {cfg.classifier.min_score}"), CLASSIFIER
    if tagger == "combined" and cfg.combined.min_score is not None:
        return compile_rule("combined", f"{COMBINED} < {cfg.combined.min_score}"), COMBINED
    if tagger in heuristics.TAGGERS and getattr(cfg, tagger).drop:
        return compile_rule(tagger, f"quality__{tagger}__pass == 0"), f"quality__{tagger}__reason"
    return None


def stage_rules(cfg: QualityConfig) -> list[tuple[Rule, str | None]]:
    """The taggers' own drop rules (in tagger order), then the configured ones; each with the
    attribute that explains a drop (its value becomes the reject's detail)."""
    rules: list[tuple[Rule, str | None]] = [r for t in enabled_taggers(cfg) if (r := own_rule(cfg, t)) is not None]
    for r in cfg.rules:
        mode = "exclude" if r.exclude is not None else "include"
        rules.append((compile_rule(r.name, r.exclude if r.exclude is not None else r.include, mode), None))
    available = set(attribute_names(cfg)) | set(BUILTIN_NAMES)
    kinds = attribute_kinds(cfg)
    for rule, _ in rules:
        check_names(rule, available)
        check_types(rule, kinds)
    for t in cfg.thresholds:
        check_names(compile_rule(t.name, t.attribute), available)
        if kinds.get(t.attribute) == "string":
            raise RuleError(f"threshold {t.name!r}: attribute {t.attribute} is a string, not a score")
    return rules


def attribute_kinds(cfg: QualityConfig) -> dict[str, str]:
    """What each name a rule may use holds: a string (language, a filter's reason), else a
    number (scores, pass flags, counts; a span list stands for its first span's score)."""
    out = {name: "number" for name in attribute_names(cfg)}
    for name in out:
        if name.endswith(("__lang", "__reason")):
            out[name] = "string"
    return out


@dataclass
class Decisions:
    keep: np.ndarray
    reason: list[str | None]
    detail: list[str | None]
    type_mismatches: dict[str, int] = field(default_factory=dict)  # rule -> rows with a wrong-typed value


def _describe(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):  # a span list: its score
        value = value[0]["score"] if value else None
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def apply_rules(docs: pa.Table, attributes: dict[str, pa.Array], rules: list[tuple[Rule, str | None]]) -> Decisions:
    """The first rule (in order) that drops a document is its reason."""
    n = docs.num_rows
    keep = np.ones(n, dtype=bool)
    reason: list[str | None] = [None] * n
    detail: list[str | None] = [None] * n
    table, wrong = rule_table_checked(docs, attributes, [r for r, _ in rules])
    mismatches: dict[str, int] = {}
    for rule, explain in rules:
        bad_type = type_mismatches(rule, wrong, n)
        try:
            hit = matches(rule, table).to_numpy(zero_copy_only=False)
        except RuleError:
            if not any(name.startswith("metadata.") for name in rule.names):
                raise
            # metadata values whose types the rule does not pin (metadata.a < metadata.b) and
            # that differ in this shard: no match, as for a missing value, and counted
            hit = np.zeros(n, dtype=bool)
            bad_type = _has_metadata(table, rule)
        mismatches[rule.name] = int(bad_type.sum())
        drop = hit if rule.mode == "exclude" else ~hit
        newly = np.flatnonzero(drop & keep)
        keep[newly] = False
        values = attributes[explain].to_pylist() if explain and len(newly) else None
        for i in newly:
            reason[i] = rule.name
            detail[i] = _describe(values[i]) if values is not None else f"{rule.mode}: {rule.source}"
    return Decisions(keep, reason, detail, mismatches)


def _has_metadata(table: pa.Table, rule: Rule) -> np.ndarray:
    out = np.zeros(table.num_rows, dtype=bool)
    for name in rule.names:
        if name.startswith("metadata.") and name in table.column_names:
            out |= table.column(name).is_valid().to_numpy(zero_copy_only=False)
    return out


def histogram(column: pa.Array) -> list[int]:
    values = rule_values(column)
    values = values[~np.isnan(values)]
    idx = np.minimum((np.clip(values, 0.0, 1.0) * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
    return [int(c) for c in np.bincount(idx, minlength=HISTOGRAM_BINS)]


def rule_values(column: pa.Array) -> np.ndarray:
    """A numeric attribute as the floats a rule compares (NaN where missing)."""
    from tasks.quality.rules import rule_value

    values = rule_value(column)
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type)
            or pa.types.is_null(values.type)):
        # a threshold over a metadata key some documents hold as a string: those rank as missing
        values = pa.array([v if isinstance(v, int | float) else None for v in values.to_pylist()], pa.float64())
    return pc.fill_null(pc.cast(values, pa.float64()), math.nan).to_numpy(zero_copy_only=False)


def top_percent_threshold(values: np.ndarray, percent: float) -> float | None:
    """The value v such that keeping ``score >= v`` keeps ceil(percent% of n) documents, up to
    ties at v. Missing values rank last."""
    present = np.sort(values[~np.isnan(values)])[::-1]
    k = math.ceil(len(values) * percent / 100)
    if k == 0 or len(present) == 0:
        return None
    return float(present[min(k, len(present)) - 1])
