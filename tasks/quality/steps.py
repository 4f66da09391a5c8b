"""The quality stage's shard steps: tag + rules (map), thresholds (global value, then map)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.quality import stage
from tasks.schema import to_rejects
from tasks.stepkit import (
    Changes,
    MapResult,
    RunContext,
    once,
    read_work,
    total_words,
    write_result,
    write_work,
)
from tasks.storage import Storage

STAGE = "quality"
THRESHOLD_STAGE = "quality_threshold"


def quality_step(ctx: RunContext, shard: str, prev_stage: str, final: bool) -> dict[str, Any]:
    cfg = ctx.config.quality
    thresholds = cfg.thresholds

    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, prev_stage, shard)
        tagged = stage.tag(work, cfg, ctx.config.storage.endpoint_url)
        before = work
        if tagged.text is not None:
            work = work.set_column(work.schema.get_field_index("text"), "text", tagged.text)
        tokens_in = total_words(work.column("text"))  # of the text C4's modify mode left, as before
        decisions = stage.apply_rules(work, tagged.attributes, stage.stage_rules(cfg))
        keep = pa.array(decisions.keep)
        kept = work.filter(keep)
        dropped = ~decisions.keep
        rejects = to_rejects(work.filter(pa.array(dropped)), STAGE,
                             pa.array([r for r, d in zip(decisions.reason, dropped, strict=True) if d], pa.string()),
                             detail=pa.array([x for x, d in zip(decisions.detail, dropped, strict=True) if d],
                                             pa.string()))
        if thresholds:
            table = stage.rule_table(kept, {k: v.filter(keep) for k, v in tagged.attributes.items()}, [
                stage.compile_rule(t.name, t.attribute) for t in thresholds])
            write_work(storage, ctx, "quality_threshold_values", shard, pa.table(
                {t.name: pa.array(stage.rule_values(table.column(t.attribute)), pa.float64()) for t in thresholds}))
        # attributes of every document the stage saw: a dropped one's scores explain its drop
        result = MapResult(
            kept=kept, rejects=rejects, docs_in=work.num_rows, tokens_in=tokens_in,
            attributes=pa.table({"id": work.column("id"), **tagged.attributes}),
            attribute_sources=work.column("source").combine_chunks(),
            changes=None if tagged.text is None else Changes(before, tagged.text.to_pylist(), decisions.keep),
            figures={"histograms": {a: stage.histogram(tagged.attributes[a]) for a in stage.score_attributes(cfg)},
                     "languages": _counts(tagged.attributes.get(stage.LID + "lang")),
                     "engine": tagged.engine,
                     "type_mismatches": decisions.type_mismatches})
        # with thresholds, the kept documents wait for the release-wide values in a work table
        return write_result(storage, ctx, STAGE, shard, result, final and not thresholds)

    return once(ctx, STAGE, shard, compute)


def _counts(column: pa.Array | None) -> dict[str, int]:
    if column is None:
        return {}
    vc = pc.value_counts(column)
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def threshold_value_step(ctx: RunContext, shards: list[str]) -> dict[str, Any]:
    """Pass 1 of the global thresholds: the value of each over the whole release."""

    def compute(storage: Storage) -> dict[str, Any]:
        tables = [read_work(storage, ctx, "quality_threshold_values", s) for s in shards]
        out = []
        for t in ctx.config.quality.thresholds:
            values = np.concatenate([tb.column(t.name).to_numpy(zero_copy_only=False) for tb in tables]) \
                if tables else np.zeros(0)
            value = stage.top_percent_threshold(values, t.keep_top_percent)
            out.append({"name": t.name, "attribute": t.attribute, "keep_top_percent": t.keep_top_percent,
                        "value": value, "docs_in": int(len(values)),
                        "kept": int((values >= value).sum()) if value is not None else 0})
        return {"thresholds": out}

    return once(ctx, "quality_threshold_values", "all", compute)


def threshold_filter_step(ctx: RunContext, shard: str, thresholds: list[dict[str, Any]], final: bool) -> dict[str, Any]:
    """Pass 2: drop what falls below any threshold."""

    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, STAGE, shard)
        values = read_work(storage, ctx, "quality_threshold_values", shard)
        keep = np.ones(work.num_rows, dtype=bool)
        reason: list[str | None] = [None] * work.num_rows
        detail: list[str | None] = [None] * work.num_rows
        for t in thresholds:
            v = values.column(t["name"]).to_numpy(zero_copy_only=False)
            below = np.ones(len(v), dtype=bool) if t["value"] is None else ~(v >= t["value"])
            for i in np.flatnonzero(below & keep):
                reason[i] = t["name"]
                detail[i] = f"{t['attribute']} = {v[i]:.6g} below {t['value']} (top {t['keep_top_percent']}%)"
            keep &= ~below
        kept = work.filter(pa.array(keep))
        gone = ~keep
        rejects = to_rejects(work.filter(pa.array(gone)), THRESHOLD_STAGE,
                             pa.array([r for r, g in zip(reason, gone, strict=True) if g], pa.string()),
                             detail=pa.array([d for d, g in zip(detail, gone, strict=True) if g], pa.string()))
        result = MapResult(kept=kept, rejects=rejects, docs_in=work.num_rows, tokens_in=total_words(work.column("text")))
        return write_result(storage, ctx, THRESHOLD_STAGE, shard, result, final)

    return once(ctx, THRESHOLD_STAGE, shard, compute)


def evaluate_step(ctx: RunContext) -> dict[str, Any]:
    """The release's quality configuration checked against labelled documents (``quality.evaluate``):
    every tagger on every labelled text, the combined score's AUC and every signal's."""
    from tasks.quality.evaluate import evaluate
    from tasks.quality.labels import read_labels

    cfg = ctx.config.quality

    def compute(storage: Storage) -> dict[str, Any]:
        data = read_labels(cfg.evaluate, endpoint_url=ctx.config.storage.endpoint_url)
        attribute = stage.COMBINED if cfg.combined.enabled else None
        if attribute is None:  # no combined score: the first numeric signal the taggers give
            attribute = "quality__lid__score"
        return {"evaluation": evaluate(data, cfg, attribute, ctx.config.storage.endpoint_url)}

    return once(ctx, "quality_evaluation", "all", compute)
