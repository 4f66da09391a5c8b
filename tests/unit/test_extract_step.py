"""The extract step called as a plain function (no Prefect, no Ray) on real crawled HTML."""

from __future__ import annotations

import re

import pyarrow.parquet as pq

from tasks import layout
from tasks.extract.declare import extract_step
from tests.builders import ingest_one, pipeline_config, run_context, shared_input
from tests.conftest import shared

CC = "cc_web_samples/cc_web_samples.parquet"
TAG = re.compile(r"<(?:html|head|body|div|script|style|p|a)[\s>]", re.IGNORECASE)


def test_extract_step_turns_each_page_into_text_and_passes_it_on(tmp_path):
    pages = pq.read_table(shared(CC), columns=["id", "html"])
    cfg = pipeline_config(tmp_path / "corpus", shared_input(CC, "cc", id="id", html="html", metadata="none"),
                          stages=["ingest", "extract"])
    ctx = run_context(cfg)
    shard, ingested = ingest_one(ctx)
    marker = extract_step(ctx, shard.name, "ingest", False)

    work = ctx.storage.open().read_parquet(layout.work_path(ctx.release, "extract", shard.name))
    assert marker["funnel"]["docs_in"] == ingested["funnel"]["docs_out"]
    assert marker["funnel"]["docs_out"] == work.num_rows > 0
    assert marker["funnel"]["docs_out"] + sum(marker["funnel"]["dropped"].values()) == marker["funnel"]["docs_in"]
    html_of = dict(zip(pages.column("id").to_pylist(), pages.column("html").to_pylist(), strict=True))
    for source_id, text in zip(work.column("source_id").to_pylist(), work.column("text").to_pylist(), strict=True):
        assert text.strip() and not TAG.search(text), (source_id, text[:200])
        assert len(text) < len(html_of[source_id])  # the page's markup is gone, its text kept
