"""Exact dedup's steps called as plain functions (no Prefect, no Ray): its map inside the
ingest step (the feed), the reduce per bucket, the filter per shard."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.dedup.exact_steps import exact_filter_step, exact_map_outputs, exact_reduce_step
from tasks.stepkit import Feed
from tests.builders import ingest_one, pipeline_config, run_context
from tests.conftest import shared

CC = "cc_web_samples/cc_web_samples.parquet"


def test_exact_dedup_steps_keep_one_copy_of_each_text_and_name_its_survivor(tmp_path):
    """Real web documents, each present twice (the shared file's rows written twice into one
    temporary input): one copy of every distinct text is kept, every dropped document names a
    kept survivor with the same text."""
    rows = pq.read_table(shared(CC), columns=["id", "text"])
    doubled = tmp_path / "doubled.parquet"
    pq.write_table(pa.concat_tables([rows, rows.set_column(0, "id", pa.array(
        [f"{i}-copy" for i in rows.column("id").to_pylist()]))]), doubled)
    cfg = pipeline_config(tmp_path / "corpus", {"uri": str(doubled), "source": "cc",
                                                "columns": {"id": "id", "metadata": "none"}},
                          stages=["ingest", "exact_dedup"])
    ctx = run_context(cfg)
    shard, ingested = ingest_one(ctx, feed=Feed("ingest", "exact_map", exact_map_outputs))
    assert ingested["exact_map"]["rows"] == ingested["funnel"]["docs_out"] == 2 * rows.num_rows

    reduced = [exact_reduce_step(ctx, b) for b in range(ctx.exact_buckets)]
    marker = exact_filter_step(ctx, shard.name, True, "ingest")
    storage = ctx.storage.open()
    kept = pa.concat_tables([storage.read_parquet(f["path"]) for f in marker["documents"]])
    dropped = pa.concat_tables([storage.read_parquet(f["path"]) for f in marker["files"]
                                if "/rejects/exact_dedup/" in f["path"]])

    kept_texts = kept.column("text").to_pylist()
    assert len(set(kept_texts)) == len(kept_texts)  # no two kept documents share a text
    assert kept.num_rows + dropped.num_rows == 2 * rows.num_rows
    assert dropped.num_rows >= rows.num_rows  # at least every second copy
    text_of = dict(zip(kept.column("id").to_pylist(), kept_texts, strict=True))
    for text, survivor in zip(dropped.column("text").to_pylist(), dropped.column("survivor_id").to_pylist(),
                              strict=True):
        assert text_of[survivor] == text
    assert sum(r["duplicates"] for r in reduced) == dropped.num_rows
    assert marker["funnel"]["docs_in"] == 2 * rows.num_rows and marker["funnel"]["docs_out"] == kept.num_rows
