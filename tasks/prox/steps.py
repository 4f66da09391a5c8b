"""The ProX stage's shard step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.llm.backends import approx_tokens
from tasks.prox import stage
from tasks.stepkit import RunContext, once, read_work, rewrite_result, write_result
from tasks.storage import Storage

if TYPE_CHECKING:  # the client (and its model backends) loads only when a step needs it
    from tasks.llm.client import CompletionService

STAGE = "prox"


def prox_step(ctx: RunContext, shard: str, prev_stage: str, final: bool, actor: CompletionService | None = None) -> dict[str, Any]:
    cfg = ctx.config

    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, prev_stage, shard)
        texts = work.column("text").to_pylist()
        client, count = None, approx_tokens
        if stage.writer_kind(cfg) not in stage.LOCAL_WRITERS:
            from tasks.llm.client import LLMClient, token_counter

            client = LLMClient(cfg.llm, storage, actor)
            count = token_counter(cfg.llm)
        writer = stage.make_writer(cfg, texts, client)
        res = stage.refine(texts, cfg.prox, writer, count)
        result = rewrite_result(STAGE, work, res.text, res.keep, res.reason,
                                res.attributes["prox__program__doc"].to_pylist(), res.attributes)
        out = write_result(storage, ctx, STAGE, shard, result, final)
        extra = {"writer_model": writer.identity} if hasattr(writer, "identity") else {}
        return {**out, "prox": res.figures, "writer": writer.name, **extra}

    return once(ctx, STAGE, shard, compute)
