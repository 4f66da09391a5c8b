"""Exact dedup's shard steps: the map (run inside the previous stage's step, as its feed),
the reduce per hash bucket, and the filter per shard."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from tasks import layout
from tasks.dedup import exact
from tasks.ingest import content_key
from tasks.stepkit import MapResult, RunContext, once, read_work, total_words, write_result
from tasks.storage import Storage


def exact_map_outputs(storage: Storage, ctx: RunContext, shard: str, work: pa.Table) -> dict[str, Any]:
    """The map side of exact dedup, run inside the step of the stage before it on the table it
    passes on: the content keys of one shard, shuffled by hash bucket. Ingest hashed the text
    it read; after a stage that changes texts (extract, prox) the keys are of the text as it is."""
    if ctx.feed is not None and ctx.feed.after != "ingest":
        hashes = [xxhash.xxh3_128_digest(content_key(t, ctx.config.exact_dedup.key).encode("utf-8"))
                  for t in work.column("text").to_pylist()]
        work = work.set_column(work.schema.get_field_index("content_hash"), "content_hash",
                               pa.array(hashes, pa.binary(16)))
    for bucket, part in exact.partition_keys(work, ctx.exact_buckets).items():
        storage.write_parquet(layout.shuffle_path(ctx.release, "exact_dedup", shard, bucket), part)
    return {"rows": work.num_rows}


def exact_reduce_step(ctx: RunContext, bucket: int) -> dict[str, Any]:
    def compute(storage: Storage) -> dict[str, Any]:
        files = storage.list(layout.shuffle_dir(ctx.release, "exact_dedup", bucket), ".parquet")
        tables = [storage.read_parquet(f) for f in files]
        keys = pa.concat_tables(tables) if tables else pa.schema(
            [("content_hash", pa.binary(16)), ("id", pa.string()), ("order", pa.int64())]).empty_table()
        decisions = exact.reduce_bucket(keys)
        storage.write_parquet(layout.work_path(ctx.release, "exact_dedup_decisions", f"b{bucket:05d}"), decisions)
        dups = int(pc.sum(pc.is_valid(decisions.column("survivor_id"))).as_py() or 0)
        return {"rows": keys.num_rows, "duplicates": dups, "groups": decisions.num_rows - dups}

    return once(ctx, "exact_dedup_reduce", f"b{bucket:05d}", compute)


def exact_filter_step(ctx: RunContext, shard: str, final: bool, prev_stage: str = "ingest") -> dict[str, Any]:
    buckets = ctx.exact_buckets

    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, prev_stage, shard)
        decisions = pa.concat_tables(
            [storage.read_parquet(layout.work_path(ctx.release, "exact_dedup_decisions", f"b{b:05d}"))
             for b in range(buckets)]
        )
        shard_index = int(shard)
        mine = decisions.filter(pc.equal(pc.shift_right(decisions.column("order"), 32), shard_index))
        kept, rejects, attrs = exact.apply_decisions(work, mine)
        result = MapResult(kept=kept, rejects=rejects, docs_in=work.num_rows, tokens_in=total_words(work.column("text")),
                           attributes=attrs, attribute_sources=kept.column("source").combine_chunks())
        return write_result(storage, ctx, "exact_dedup", shard, result, final)

    return once(ctx, "exact_dedup", shard, compute)
