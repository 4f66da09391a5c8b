"""The shard steps of ingest (declared in ``tasks/ingest_stage.py``); the other stages' steps
live in their packages (exact dedup's in ``tasks/dedup/exact_steps.py``), and the machinery they
share in :mod:`tasks.stepkit`.

Each step is idempotent: it writes its outputs under deterministic paths and then a
completion marker; a step whose marker exists returns the marker and does nothing else.
The Prefect tasks of ``flows/`` are thin wrappers around these functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.ingest import IngestResult, Shard, ingest_shard
from tasks.kernels import utf8_buffers
from tasks.schema import to_rejects, whole_document_spans, word_counts
from tasks.shuffle import split_by
from tasks.stepkit import MapResult, RunContext, once, read_work, total_words, write_result, write_work
from tasks.storage import Storage

__all__ = ["RunContext", "id_check_needed", "id_reduce_step", "ingest_read_step", "ingest_step"]


# -- stage 1 (with the map side of the exact-dedup shuffle fused in) ---------------------------

def id_check_needed(shards: list[Shard]) -> bool:
    """Whether one source id can reach two shards: two shards (row groups of one file, files
    of one source, inputs sharing a source or rows naming their own) read an id column, or
    are WARC/WET files or ranges (a record's WARC-Record-ID is its source id, and a crawl
    fetched twice repeats it across files). Within one shard, ingest itself rejects a repeated id."""
    return sum(1 for s in shards if s.columns.id is not None or s.format in ("warc", "wet")) > 1


def _ingest(ctx: RunContext, shard: Shard, final: bool = False):
    dedup = ctx.config.exact_dedup
    # exact dedup keys the text as it reaches it: ingest's hash serves only when exact dedup's
    # key map runs on ingest's own output (the feed the flow sets when exact dedup comes next);
    # after extract or ProX the text is hashed again, and hashing a page's HTML here cost a
    # quarter of extraction's time for nothing
    keyed = dedup.enabled and ctx.feed is not None and ctx.feed.key == "exact_map"
    # the last map step publishes: the release's tokens are counted in ingest's word-count pass
    return ingest_shard(shard, ctx.config.ingest, dedup.key if keyed else None, ctx.release, ctx.created_at,
                        ctx.config.tokenizer if final else None)


_HEX_DIGITS = np.full(256, 255, np.uint8)
for _k, _c in enumerate(b"0123456789abcdef"):
    _HEX_DIGITS[_c] = _HEX_DIGITS[ord(chr(_c).upper())] = _k


def id_prefixes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``int(id[:8], 16)`` of each document id (a hex digest: ``tasks.ingest.stable_id``), read
    from the ids' bytes at once rather than string by string (0.011 CPU-s a shard of 62,500)."""
    data, offsets = utf8_buffers(ids)
    if len(offsets) > 1 and (np.diff(offsets) >= 8).all():
        digits = _HEX_DIGITS[data[offsets[:-1, None] + np.arange(8)]]
        if (digits < 16).all():
            return (digits.astype(np.int64) << (4 * np.arange(7, -1, -1))).sum(axis=1)
    return np.array([int(i[:8], 16) for i in pc.cast(ids, pa.string()).to_pylist()], dtype=np.int64)


def ingest_read_step(ctx: RunContext, shard: Shard) -> dict[str, Any]:
    """Ingest's first phase when source ids are checked across shards: read and validate the
    shard, keep its work and rejects tables as scratch, and send the (id, order) of every row
    that has a source id to the id shuffle (partitioned by id)."""

    def compute(storage: Storage) -> dict[str, Any]:
        res = _ingest(ctx, shard)
        write_work(storage, ctx, "ingest_read", shard.name, res.work)
        write_work(storage, ctx, "ingest_read_rejects", shard.name, res.rejects)
        # the word counts the empty-text check made: the second phase would count them again
        # (0.12 CPU-seconds of its 1.5 on a shard of 62,500 documents, measured)
        write_work(storage, ctx, "ingest_read_words", shard.name, pa.table({"words": res.words}))
        # the two columns first: filtering the whole table copied every text (0.03 CPU-s a shard
        # of 62,500 documents) to keep two columns
        keyed = res.work.select(["id", "order"])
        if res.work.column("source_id").null_count:
            keyed = keyed.filter(pc.is_valid(res.work.column("source_id")))
        if keyed.num_rows:
            for bucket, part in split_by(keyed, id_prefixes(keyed.column("id")) % ctx.exact_buckets).items():
                storage.write_parquet(layout.shuffle_path(ctx.release, "ingest_ids", shard.name, bucket), part)
        return {"stats": res.stats}

    return once(ctx, "ingest_read", shard.name, compute)


def id_reduce_step(ctx: RunContext, bucket: int) -> dict[str, Any]:
    """Every later row of a document id seen before (in the run's stable order), with the
    order of its first row."""

    def compute(storage: Storage) -> dict[str, Any]:
        files = storage.list(layout.shuffle_dir(ctx.release, "ingest_ids", bucket), ".parquet")
        keys = pa.concat_tables([storage.read_parquet(f) for f in files]) if files else pa.schema(
            [("id", pa.string()), ("order", pa.int64())]).empty_table()
        first = keys.group_by("id").aggregate([("order", "min")]).rename_columns(["id", "first_order"])
        later = keys.join(first, "id").filter(pc.not_equal(pc.field("order"), pc.field("first_order")))
        later = later.select(["order", "first_order"]).sort_by("order")
        storage.write_parquet(layout.work_path(ctx.release, "ingest_id_decisions", f"b{bucket:05d}"), later)
        return {"rows": keys.num_rows, "duplicates": later.num_rows}

    return once(ctx, "ingest_ids", f"b{bucket:05d}", compute)


def _checked_ingest(storage: Storage, ctx: RunContext, shard: Shard, first_uris: dict[int, str], final: bool = False):
    """The shard's phase-1 tables, less the rows whose id an earlier shard already had; those
    become rejects naming the first row and its file. ``final``: the release's tokens are
    counted in the pass that counts the remaining rows' words."""
    read = storage.read_json(layout.marker_path(ctx.release, "ingest_read", shard.name))
    work_file = layout.work_path(ctx.release, "ingest_read", shard.name)
    work = storage.read_parquet(work_file)  # locally a memory map of the file, not a copy of its bytes
    rejects = read_work(storage, ctx, "ingest_read_rejects", shard.name)
    decisions = pa.concat_tables([storage.read_parquet(layout.work_path(
        ctx.release, "ingest_id_decisions", f"b{b:05d}")) for b in range(ctx.exact_buckets)])
    mine = decisions.filter(pc.equal(pc.shift_right(decisions.column("order"), 32), shard.index))
    stats = dict(read["stats"])
    words = _read_words(storage, ctx, shard.name, work) if not final else None
    if mine.num_rows:
        first_of = dict(zip(mine.column("order").to_pylist(), mine.column("first_order").to_pylist(), strict=True))
        dup = pc.is_in(work.column("order"), value_set=mine.column("order"))
        gone = work.filter(dup)
        reasons = []
        for order, sid in zip(gone.column("order").to_pylist(), gone.column("source_id").to_pylist(), strict=True):
            f = first_of[order]
            reasons.append(f"duplicate id {sid!r} (first at row {f & 0xFFFFFFFF} of {first_uris.get(f >> 32, '?')})")
        rejects = pa.concat_tables([rejects, to_rejects(gone, "ingest", pa.array(reasons, pa.string()))])
        work = work.filter(pc.invert(dup))
        if words is not None:
            words = words.filter(pc.invert(dup))
        work_file = None
        counts = dict(stats["rejected"])
        counts["duplicate id"] = counts.get("duplicate id", 0) + gone.num_rows  # reason_key of the reasons above
        stats.update(docs_out=work.num_rows, rejected=dict(sorted(counts.items())))
    if final:
        from tasks.tokens import release_counts_and_words

        words, tokens, tokenizer = release_counts_and_words(ctx.config.tokenizer, work.column("text"))
        return IngestResult(work, rejects, words, stats, tokens, tokenizer)
    # most shards lose no row here: their work table is phase 1's file, byte for byte (the
    # same table through the same writer), so it is copied (locally, linked) rather than
    # compressed again
    return IngestResult(work, rejects, words, stats, work_file=work_file)


def _read_words(storage: Storage, ctx: RunContext, shard: str, work: pa.Table) -> pa.Array:
    """Phase 1's word counts of the shard's work table, row by row; counted again when phase 1
    ran before they were kept (a run resumed across an upgrade)."""
    try:
        words = read_work(storage, ctx, "ingest_read_words", shard).column("words").combine_chunks()
    except FileNotFoundError:
        return word_counts(work.column("text"))
    if len(words) != work.num_rows:
        raise ValueError(f"ingest_read_words of shard {shard}: {len(words)} counts for {work.num_rows} rows")
    return words


def ingest_step(ctx: RunContext, shard: Shard, final: bool,
                first_uris: dict[int, str] | None = None) -> dict[str, Any]:
    """Ingest one shard; with ``first_uris`` (shard index -> URL), the second phase of a run
    that checks source ids across shards (after :func:`ingest_read_step` and
    :func:`id_reduce_step`)."""

    def compute(storage: Storage) -> dict[str, Any]:
        res = (_ingest(ctx, shard, final) if first_uris is None
               else _checked_ingest(storage, ctx, shard, first_uris, final))
        words = res.words  # counted once, by the empty-text check
        chars = pc.utf8_length(res.work.column("text"))
        attrs = pa.table(
            {
                "id": res.work.column("id"),
                "ingest__length__chars": whole_document_spans(chars, chars),
                "ingest__length__words": whole_document_spans(chars, words),
            }
        )
        tokens_in = int(pc.sum(words).as_py() or 0) + total_words(pc.fill_null(res.rejects.column("text"), ""))
        result = MapResult(kept=res.work, rejects=res.rejects, docs_in=res.stats["rows_read"], tokens_in=tokens_in,
                           attributes=attrs, attribute_sources=res.work.column("source").combine_chunks(),
                           kept_words=words, kept_file=res.work_file,
                           kept_model_tokens=None if res.tokenizer is None else (res.model_tokens, res.tokenizer),
                           figures={"input": {**res.stats["file"], "rows": res.stats["rows_read"]},
                                    "source": shard.source})
        return write_result(storage, ctx, "ingest", shard.name, result, final)

    return once(ctx, "ingest", shard.name, compute)
