"""The leaner stage's shard step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.leaner import stage
from tasks.stepkit import RunContext, once, read_work, rewrite_result, write_result
from tasks.storage import Storage

if TYPE_CHECKING:  # the client (and its model backends) loads only when a step needs it
    from tasks.llm.client import CompletionService

STAGE = "leaner"


def leaner_step(ctx: RunContext, shard: str, prev_stage: str, final: bool, actor: CompletionService | None = None) -> dict[str, Any]:
    cfg = ctx.config

    def compute(storage: Storage) -> dict[str, Any]:
        from tasks.llm.client import LLMClient, token_counter
        from tasks.quality import lid

        work = read_work(storage, ctx, prev_stage, shard)
        client = LLMClient(cfg.llm, storage, actor)
        res = stage.rewrite(work, cfg.leaner, client, token_counter(cfg.llm), lid.predict, prefill=not cfg.llm.chat)
        dropped = "rewrite failed validation; dropped by policy"
        result = rewrite_result(STAGE, work, res.text, res.keep, res.status,
                                [None if k else dropped for k in res.keep], res.attributes)
        out = write_result(storage, ctx, STAGE, shard, result, final)
        return {**out, "leaner": res.figures}

    return once(ctx, STAGE, shard, compute)
