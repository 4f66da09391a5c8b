"""The leaner stage's shard step."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.leaner import stage
from tasks.schema import to_rejects, word_counts
from tasks.steps import RunContext, _emit, _funnel, _once, _write_attributes, _write_changes, _write_rejects
from tasks.storage import Storage

STAGE = "leaner"


def leaner_step(ctx: RunContext, shard: str, prev_stage: str, final: bool, actor: str | None = None) -> dict[str, Any]:
    cfg = ctx.config

    def compute(storage: Storage) -> dict[str, Any]:
        from tasks.llm.client import LLMClient, token_counter
        from tasks.quality import lid

        work = storage.read_parquet(layout.work_path(ctx.release, prev_stage, shard))
        texts = work.column("text").to_pylist()
        client = LLMClient(cfg.llm, storage, actor)
        res = stage.rewrite(work, cfg.leaner, client, token_counter(cfg.llm), lid.predict, prefill=not cfg.llm.chat)
        changes, samples = _write_changes(storage, ctx, STAGE, shard, work, res.text, res.keep)
        work = work.set_column(work.schema.get_field_index("text"), "text", pa.array(res.text, pa.string()))
        kept = work.filter(pa.array(res.keep))
        gone = ~res.keep
        rejects = to_rejects(work.filter(pa.array(gone)), STAGE,
                             pa.array([s for s, g in zip(res.status, gone, strict=True) if g], pa.string()),
                             detail=pa.array(["rewrite failed validation; dropped by policy"] * int(gone.sum()),
                                             pa.string()))
        attrs = pa.table({"id": work.column("id"), **res.attributes})
        files = _write_attributes(storage, ctx, STAGE, shard, attrs, work.column("source").combine_chunks())
        files += _write_rejects(storage, ctx, STAGE, shard, rejects) + changes
        out = _emit(storage, ctx, STAGE, shard, kept, final)
        funnel = _funnel(work.num_rows, kept, int(pc.sum(word_counts(pa.array(texts, pa.string()))).as_py() or 0),
                         rejects)
        funnel["modified"] = sum(c["rows"] for c in changes)
        return {"funnel": funnel, "files": files, **out, "leaner": res.figures, "samples": samples}

    return _once(ctx, STAGE, shard, compute)
