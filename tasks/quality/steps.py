"""The quality stage's shard steps: tag + rules (map), thresholds (global value, then map)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.quality import stage
from tasks.schema import to_rejects, word_counts
from tasks.steps import RunContext, _emit, _funnel, _once, _write_attributes, _write_changes, _write_rejects
from tasks.storage import Storage

STAGE = "quality"
THRESHOLD_STAGE = "quality_threshold"


def _values_path(ctx: RunContext, shard: str) -> str:
    return layout.work_path(ctx.release, "quality_threshold_values", shard)


def quality_step(ctx: RunContext, shard: str, prev_stage: str, final: bool) -> dict[str, Any]:
    cfg = ctx.config.quality
    thresholds = cfg.thresholds

    def compute(storage: Storage) -> dict[str, Any]:
        work = storage.read_parquet(layout.work_path(ctx.release, prev_stage, shard))
        tagged = stage.tag(work, cfg, ctx.config.storage.endpoint_url)
        before = work
        if tagged.text is not None:
            work = work.set_column(work.schema.get_field_index("text"), "text", tagged.text)
        decisions = stage.apply_rules(work, tagged.attributes, stage.stage_rules(cfg))
        changes, samples = ([], []) if tagged.text is None else _write_changes(
            storage, ctx, STAGE, shard, before, tagged.text.to_pylist(), decisions.keep)
        keep = pa.array(decisions.keep)
        kept = work.filter(keep)
        dropped = ~decisions.keep
        rejects = to_rejects(work.filter(pa.array(dropped)), STAGE,
                             pa.array([r for r, d in zip(decisions.reason, dropped, strict=True) if d], pa.string()),
                             detail=pa.array([x for x, d in zip(decisions.detail, dropped, strict=True) if d],
                                             pa.string()))
        # attributes of every document the stage saw: a dropped one's scores explain its drop
        attrs = pa.table({"id": work.column("id"), **tagged.attributes})
        files = _write_attributes(storage, ctx, STAGE, shard, attrs, work.column("source").combine_chunks())
        files += _write_rejects(storage, ctx, STAGE, shard, rejects) + changes
        if thresholds:
            table = stage.rule_table(kept, {k: v.filter(keep) for k, v in tagged.attributes.items()}, [
                stage.compile_rule(t.name, t.attribute) for t in thresholds])
            storage.write_parquet(_values_path(ctx, shard), pa.table(
                {t.name: pa.array(stage.rule_values(table.column(t.attribute)), pa.float64()) for t in thresholds}))
            out = _emit(storage, ctx, STAGE, shard, kept, False)
        else:
            out = _emit(storage, ctx, STAGE, shard, kept, final)
        tokens_in = int(pc.sum(word_counts(work.column("text"))).as_py() or 0)
        funnel = _funnel(work.num_rows, kept, tokens_in, rejects)
        funnel["modified"] = sum(c["rows"] for c in changes)
        return {"funnel": funnel, "files": files, **out, "samples": samples,
                "histograms": {a: stage.histogram(tagged.attributes[a]) for a in stage.score_attributes(cfg)},
                "languages": _counts(tagged.attributes.get(stage.LID + "lang")),
                "engine": tagged.engine,
                "type_mismatches": decisions.type_mismatches}

    return _once(ctx, STAGE, shard, compute)


def _counts(column: pa.Array | None) -> dict[str, int]:
    if column is None:
        return {}
    vc = pc.value_counts(column)
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def threshold_value_step(ctx: RunContext, shards: list[str]) -> dict[str, Any]:
    """Pass 1 of the global thresholds: the value of each over the whole release."""

    def compute(storage: Storage) -> dict[str, Any]:
        tables = [storage.read_parquet(_values_path(ctx, s)) for s in shards]
        out = []
        for t in ctx.config.quality.thresholds:
            values = np.concatenate([tb.column(t.name).to_numpy(zero_copy_only=False) for tb in tables]) \
                if tables else np.zeros(0)
            value = stage.top_percent_threshold(values, t.keep_top_percent)
            out.append({"name": t.name, "attribute": t.attribute, "keep_top_percent": t.keep_top_percent,
                        "value": value, "docs_in": int(len(values)),
                        "kept": int((values >= value).sum()) if value is not None else 0})
        return {"thresholds": out}

    return _once(ctx, "quality_threshold_values", "all", compute)


def threshold_filter_step(ctx: RunContext, shard: str, thresholds: list[dict[str, Any]], final: bool) -> dict[str, Any]:
    """Pass 2: drop what falls below any threshold."""

    def compute(storage: Storage) -> dict[str, Any]:
        work = storage.read_parquet(layout.work_path(ctx.release, STAGE, shard))
        values = storage.read_parquet(_values_path(ctx, shard))
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
        out = _emit(storage, ctx, THRESHOLD_STAGE, shard, kept, final)
        files = _write_rejects(storage, ctx, THRESHOLD_STAGE, shard, rejects)
        tokens_in = int(pc.sum(word_counts(work.column("text"))).as_py() or 0)
        return {"funnel": _funnel(work.num_rows, kept, tokens_in, rejects), "files": files, **out}

    return _once(ctx, THRESHOLD_STAGE, shard, compute)
