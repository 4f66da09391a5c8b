"""The extract stage's declaration: HTML to main text, one task per shard, first after ingest."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.extract.stage import extract, with_extract_columns
from tasks.registry import Stage, register
from tasks.stepkit import RunContext, once, read_work, rewrite_result, sum_figures, write_result
from tasks.storage import Storage

NAME = "extract"
HTML_SUFFIXES = (".warc", ".warc.gz")


def may_hold_html(config: Any) -> bool:
    """Whether an input of the config is declared to hold web pages: ``format: warc``, an HTML
    column, or a WARC file by name. (A folder of WARC files with ``format: auto`` is found only
    when its shards are planned: the flow then refuses to run without this stage.)"""
    return any(i.format == "warc" or i.columns.html or i.uri.lower().endswith(HTML_SUFFIXES)
               for i in config.inputs)


def extract_step(ctx: RunContext, shard: str, prev_stage: str, final: bool) -> dict[str, Any]:
    cfg = ctx.config

    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, prev_stage, shard)
        res = extract(work, cfg.extract, cfg.ingest.unicode_form)
        limit = cfg.ingest.max_chars  # ingest left pages alone: it saw HTML, not text
        if limit is not None:
            for i in np.flatnonzero(res.keep & res.changed).tolist():
                if len(res.text[i]) > limit:
                    res.keep[i] = False
                    res.reason[i] = f"longer than max_chars ({len(res.text[i])} > {limit})"
        # exact dedup hashes the extracted text itself when it comes later (tasks.dedup.exact_steps.exact_map_outputs)
        work = with_extract_columns(work, res, None)
        result = rewrite_result(NAME, work, res.text, res.keep, res.reason, [None] * work.num_rows,
                                res.attributes)
        # the HTML is not copied under changes/: `refinery explain` reads it from its input file
        result.changes = None
        # (so its funnel line counts no modified documents: the manifest's `extract.extracted` does)
        return {**write_result(storage, ctx, NAME, shard, result, final), "extract": res.figures}

    return once(ctx, NAME, shard, compute)


def figures(ctx: RunContext, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's `extract` section: pages, extracted, drops by reason, languages."""
    parts = [{k: v for k, v in m["extract"].items() if k != "pages_per_cpu_s"} for m in markers]
    out = sum_figures(parts)
    out["extractor"], out["main_content"] = ctx.config.extract.extractor, ctx.config.extract.main_content
    return out


STAGE = register(Stage(
    name=NAME, kind="map", rank=10, config_key="extract", step=extract_step, right_after="ingest",
    why=" (it turns the HTML ingest read into the text every later stage reads)",
    enabled=lambda config: config.extract.enabled and may_hold_html(config), figures=figures,
    reads="ingest's work table (HTML of WARC records or of an HTML column)",
    writes="work table; rejects/extract; attributes/extract",
    summary="HTML → main text (resiliparse or trafilatura), title and language kept; empty pages rejected"))
