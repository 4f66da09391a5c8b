"""The pii stage's declaration: one task per shard, last in the default order (it sees the text
that is published)."""

from __future__ import annotations

from typing import Any

from tasks.pii.core import scan
from tasks.registry import Stage, register
from tasks.stepkit import RunContext, once, read_work, rewrite_result, sum_figures, write_result
from tasks.storage import Storage

NAME = "pii"


def pii_step(ctx: RunContext, shard: str, prev_stage: str, final: bool) -> dict[str, Any]:
    cfg = ctx.config.pii

    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, prev_stage, shard)
        res = scan(work, cfg)
        result = rewrite_result(NAME, work, res.new_text.to_pylist(), res.keep, res.reasons, res.details,
                                res.attributes)
        return {**write_result(storage, ctx, NAME, shard, result, final), "pii": res.figures}

    return once(ctx, NAME, shard, compute)


def figures(ctx: RunContext, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's `pii` section: matches per kind and documents tagged, redacted, dropped."""
    return {"mode": ctx.config.pii.mode, **sum_figures([m["pii"] for m in markers])}


STAGE = register(Stage(
    name=NAME, kind="map", rank=70, config_key="pii", step=pii_step, figures=figures,
    reads="the previous stage's work table",
    writes="work table; rejects/pii; attributes/pii; changes/pii (redact)",
    summary="e-mail, phone, IP, card (Luhn), IBAN, SSN: tag spans, redact (Dolma's KIND tokens) or drop dense documents"))
