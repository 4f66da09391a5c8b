"""The pii stage's declaration: one task per shard, last in the default order (it sees the text
that is published)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

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
        redacted = res.new_text.to_pylist()
        # Everything this stage writes holds the redacted text only: no earlier text under
        # changes/ (explain would show the removed values as a diff) and rejects (drop mode)
        # with their values redacted too. In tag mode the text is unchanged.
        work = work.set_column(work.schema.get_field_index("text"), "text", pa.array(redacted, pa.string()))
        result = rewrite_result(NAME, work, redacted, res.keep, res.reasons, res.details, res.attributes)
        result.changes = None
        return {**write_result(storage, ctx, NAME, shard, result, final), "pii": res.figures}

    return once(ctx, NAME, shard, compute)


def figures(ctx: RunContext, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's `pii` section: matches per kind and documents tagged, redacted, dropped."""
    return {"mode": ctx.config.pii.mode, **sum_figures([m["pii"] for m in markers])}


STAGE = register(Stage(
    name=NAME, kind="map", rank=70, config_key="pii", step=pii_step, figures=figures,
    reads="the previous stage's work table",
    writes="work table; rejects/pii (redacted text); attributes/pii",
    summary="e-mail, phone, IP, card (Luhn), IBAN, SSN: tag spans, redact (Dolma's KIND tokens) or drop dense documents"))
