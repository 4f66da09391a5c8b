"""The ProX stage's shard step."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.llm.backends import approx_tokens
from tasks.prox import stage
from tasks.schema import to_rejects, word_counts
from tasks.steps import RunContext, _emit, _funnel, _once, _write_attributes, _write_changes, _write_rejects
from tasks.storage import Storage

STAGE = "prox"


def prox_step(ctx: RunContext, shard: str, prev_stage: str, final: bool, actor: str | None = None) -> dict[str, Any]:
    cfg = ctx.config

    def compute(storage: Storage) -> dict[str, Any]:
        work = storage.read_parquet(layout.work_path(ctx.release, prev_stage, shard))
        texts = work.column("text").to_pylist()
        client, count = None, approx_tokens
        if stage.writer_kind(cfg) != "heuristic":
            from tasks.llm.client import LLMClient, token_counter

            client = LLMClient(cfg.llm, storage, actor)
            count = token_counter(cfg.llm)
        writer = stage.make_writer(cfg, texts, client)
        res = stage.refine(texts, cfg.prox, writer, count)
        new_text = pa.array(res.text, pa.string())
        changes, samples = _write_changes(storage, ctx, STAGE, shard, work, res.text, res.keep)
        work = work.set_column(work.schema.get_field_index("text"), "text", new_text)
        keep = pa.array(res.keep)
        kept = work.filter(keep)
        gone = ~res.keep
        rejects = to_rejects(work.filter(pa.array(gone)).set_column(
            work.schema.get_field_index("text"), "text", pa.array(
                [t for t, g in zip(texts, gone, strict=True) if g], pa.string())),
            STAGE, pa.array([r for r, g in zip(res.reason, gone, strict=True) if g], pa.string()),
            detail=pa.array([p for p, g in zip(res.attributes["prox__program__doc"].to_pylist(), gone, strict=True)
                             if g], pa.string()))
        attrs = pa.table({"id": work.column("id"), **res.attributes})
        files = _write_attributes(storage, ctx, STAGE, shard, attrs, work.column("source").combine_chunks())
        files += _write_rejects(storage, ctx, STAGE, shard, rejects) + changes
        out = _emit(storage, ctx, STAGE, shard, kept, final)
        tokens_in = int(pc.sum(word_counts(pa.array(texts, pa.string()))).as_py() or 0)
        funnel = _funnel(work.num_rows, kept, tokens_in, rejects)
        funnel["modified"] = sum(c["rows"] for c in changes)
        return {"funnel": funnel, "files": files, **out, "prox": res.figures, "writer": writer.name,
                "samples": samples}

    return _once(ctx, STAGE, shard, compute)
