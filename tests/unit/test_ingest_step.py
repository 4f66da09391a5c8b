"""The ingest step called as a plain function (no Prefect, no Ray) on real web text."""

from __future__ import annotations

import unicodedata

import pyarrow.parquet as pq

from tasks import layout
from tests.builders import ingest_one, pipeline_config, run_context, shared_input
from tests.conftest import shared

CC = "cc_web_samples/cc_web_samples.parquet"


def test_ingest_step_writes_a_normalized_work_table_that_accounts_for_every_input_row(tmp_path):
    rows = pq.read_table(shared(CC), columns=["id", "text"])
    ctx = run_context(pipeline_config(tmp_path / "corpus", shared_input(CC, "cc", id="id", metadata="none")))
    shard, marker = ingest_one(ctx)

    work = ctx.storage.open().read_parquet(layout.work_path(ctx.release, "ingest", shard.name))
    funnel = marker["funnel"]
    assert funnel["docs_in"] == rows.num_rows
    assert funnel["docs_out"] == work.num_rows and funnel["docs_out"] + sum(funnel["dropped"].values()) == rows.num_rows
    # stable ids, one per document, and every document traced back to its input row
    assert len(set(work.column("id").to_pylist())) == work.num_rows
    assert set(work.column("source_id").to_pylist()) <= set(rows.column("id").to_pylist())
    # Unicode NFC and LF line endings, the project's text normal form
    texts = work.column("text").to_pylist()
    assert all(unicodedata.is_normalized("NFC", t) and "\r" not in t for t in texts)
    assert marker["skipped"] is False and ingest_one(ctx)[1]["skipped"] is True  # a rerun skips the done step


def test_ingest_hashes_for_exact_dedup_only_when_its_key_map_comes_next(tmp_path):
    """Exact dedup keys the text as it reaches it: when its key map runs on ingest's output
    (the feed the flow sets) ingest fills ``content_hash``; when another stage comes between
    (extract turns HTML into text), hashing here would be wasted work, so it stays null."""
    import xxhash

    from tasks.dedup.exact_steps import exact_map_outputs
    from tasks.stepkit import Feed
    from tasks.text_norm import content_key

    ctx = run_context(pipeline_config(tmp_path / "a", shared_input(CC, "cc", id="id", metadata="none")))
    shard, _ = ingest_one(ctx, feed=Feed("ingest", "exact_map", exact_map_outputs))
    work = ctx.storage.open().read_parquet(layout.work_path(ctx.release, "ingest", shard.name))
    key = ctx.config.exact_dedup.key
    assert work.column("content_hash").to_pylist() == [
        xxhash.xxh3_128_digest(content_key(t, key).encode("utf-8")) for t in work.column("text").to_pylist()]

    other = run_context(pipeline_config(tmp_path / "b", shared_input(CC, "cc", id="id", metadata="none")))
    shard, _ = ingest_one(other)  # the stage after ingest is not exact dedup
    skipped = other.storage.open().read_parquet(layout.work_path(other.release, "ingest", shard.name))
    assert skipped.num_rows == work.num_rows and skipped.column("content_hash").null_count == skipped.num_rows
