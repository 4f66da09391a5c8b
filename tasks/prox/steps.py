"""The ProX stage's shard step."""

from __future__ import annotations

from typing import Any

from tasks import layout
from tasks.llm.backends import approx_tokens
from tasks.prox import stage
from tasks.steps import RunContext, _once, finish_text_stage
from tasks.storage import Storage

STAGE = "prox"


def prox_step(ctx: RunContext, shard: str, prev_stage: str, final: bool, actor: str | None = None) -> dict[str, Any]:
    cfg = ctx.config

    def compute(storage: Storage) -> dict[str, Any]:
        work = storage.read_parquet(layout.work_path(ctx.release, prev_stage, shard))
        texts = work.column("text").to_pylist()
        client, count = None, approx_tokens
        if stage.writer_kind(cfg) not in stage.LOCAL_WRITERS:
            from tasks.llm.client import LLMClient, token_counter

            client = LLMClient(cfg.llm, storage, actor)
            count = token_counter(cfg.llm)
        writer = stage.make_writer(cfg, texts, client)
        res = stage.refine(texts, cfg.prox, writer, count)
        out = finish_text_stage(storage, ctx, STAGE, shard, work, res.text, res.keep, res.reason,
                                res.attributes["prox__program__doc"].to_pylist(), res.attributes, final)
        extra = {"writer_model": writer.identity} if hasattr(writer, "identity") else {}
        return {**out, "prox": res.figures, "writer": writer.name, **extra}

    return _once(ctx, STAGE, shard, compute)
