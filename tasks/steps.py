"""The shard-level steps of the pipeline: stage logic plus storage, no orchestration.

Each step is idempotent: it writes its outputs under deterministic paths and then a
completion marker; a step whose marker exists returns the marker and does nothing else.
The Prefect tasks of ``flows/`` are thin wrappers around these functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.config import PipelineConfig
from tasks.dedup import exact
from tasks.ingest import Shard, documents_of, ingest_shard
from tasks.schema import reason_key, to_rejects, whole_document_spans, word_counts
from tasks.shuffle import split_by
from tasks.storage import Storage, StorageSpec


@dataclass(frozen=True)
class RunContext:
    """What every step of one release needs; picklable and free of secrets."""

    release: str
    created: str  # ISO time the release was first started; reused by reruns
    parent: str | None
    storage: StorageSpec
    config: PipelineConfig
    exact_buckets: int = 1  # resolved from the config once the shards are known
    near_partitions: int = 1

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)


def _once(ctx: RunContext, stage: str, shard: str, compute: Callable[[Storage], dict[str, Any]]) -> dict[str, Any]:
    storage = ctx.storage.open()
    marker = layout.marker_path(ctx.release, stage, shard)
    done = storage.read_json_or_none(marker)
    if done is not None:
        done["skipped"] = True
        return done
    t0 = time.perf_counter()
    result = compute(storage)
    result.update(stage=stage, shard=shard, seconds=round(time.perf_counter() - t0, 3), node=_ray_node())
    storage.write_json(marker, result)  # last: its presence means every output above is complete
    result["skipped"] = False
    return result


def _ray_node() -> str | None:
    """The Ray node a step ran on (recorded in its marker; shows how work spread)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _write_by_source(storage: Storage, table: pa.Table, sources: pa.Array, path_of: Callable[[str], str]) -> list[dict]:
    files = []
    for source in sorted(set(sources.to_pylist())):
        part = table.filter(pc.equal(sources, source))
        info = storage.write_parquet(path_of(source), part).to_dict()
        info["source"] = source
        files.append(info)
    return files


def _write_rejects(storage: Storage, ctx: RunContext, stage: str, shard: str, rejects: pa.Table) -> list[dict]:
    if rejects.num_rows == 0:
        return []
    return _write_by_source(
        storage, rejects, rejects.column("source").combine_chunks(),
        lambda src: layout.rejects_path(ctx.release, stage, src, shard),
    )


def _write_attributes(storage: Storage, ctx: RunContext, tagger_set: str, shard: str, attrs: pa.Table,
                      sources: pa.Array) -> list[dict]:
    if attrs.num_rows == 0:
        return []
    return _write_by_source(
        storage, attrs, sources, lambda src: layout.attributes_path(ctx.release, tagger_set, src, shard)
    )


SAMPLE_CHARS = 1500


def _write_changes(storage: Storage, ctx: RunContext, stage: str, shard: str, before: pa.Table,
                   after: list[str], keep: Any) -> tuple[list[dict], list[dict[str, Any]]]:
    """For the documents a stage modified (and kept): their text before it, under
    ``changes/<stage>/``, so that ``refinery explain`` can show the diff; plus up to two samples
    (before, after) for the report."""
    texts = before.column("text").to_pylist()
    changed = [i for i, (a, b) in enumerate(zip(texts, after, strict=True)) if a != b and bool(keep[i])]
    if not changed:
        return [], []
    rows = before.take(pa.array(changed, pa.int64())).select(["id", "source", "text"])
    files = _write_by_source(storage, rows, rows.column("source").combine_chunks(),
                             lambda src: layout.changes_path(ctx.release, stage, src, shard))
    ids = before.column("id").to_pylist()
    samples = [{"stage": stage, "id": ids[i], "before": texts[i][:SAMPLE_CHARS], "after": after[i][:SAMPLE_CHARS]}
               for i in changed[:2]]
    return files, samples


def finish_text_stage(storage: Storage, ctx: RunContext, stage: str, shard: str, work: pa.Table,
                      new_text: list[str], keep: Any, reasons: list[str | None], details: list[str | None],
                      attributes: dict[str, pa.Array], final: bool) -> dict[str, Any]:
    """The common end of a map stage that rewrites and drops documents (ProX, leaner): its
    attributes for every document it saw, rejects (with the text they came in with), the
    earlier text of what it changed, its output, and the funnel."""
    changes, samples = _write_changes(storage, ctx, stage, shard, work, new_text, keep)
    gone = pa.array(~np.asarray(keep, dtype=bool))
    rejects = to_rejects(work.filter(gone), stage, pa.array(reasons, pa.string()).filter(gone),
                         detail=pa.array(details, pa.string()).filter(gone))
    sources = work.column("source").combine_chunks()
    files = _write_attributes(storage, ctx, stage, shard, pa.table({"id": work.column("id"), **attributes}), sources)
    files += _write_rejects(storage, ctx, stage, shard, rejects) + changes
    tokens_in = int(pc.sum(word_counts(work.column("text"))).as_py() or 0)
    rewritten = work.set_column(work.schema.get_field_index("text"), "text", pa.array(new_text, pa.string()))
    kept = rewritten.filter(pa.array(np.asarray(keep, dtype=bool)))
    funnel = _funnel(work.num_rows, kept, tokens_in, rejects)
    funnel["modified"] = sum(c["rows"] for c in changes)
    return {"funnel": funnel, "files": files, **_emit(storage, ctx, stage, shard, kept, final), "samples": samples}


def _funnel(docs_in: int, work_out: pa.Table, tokens_in: int, rejects: pa.Table,
            tokens_out: int | None = None) -> dict[str, Any]:
    dropped: dict[str, int] = {}
    for reason in rejects.column("reason").to_pylist():
        key = reason_key(reason)
        dropped[key] = dropped.get(key, 0) + 1
    return {
        "docs_in": docs_in,
        "docs_out": work_out.num_rows,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out if tokens_out is not None else int(
            pc.sum(word_counts(work_out.column("text"))).as_py() or 0),
        "modified": 0,
        "dropped": dict(sorted(dropped.items())),
    }


def _emit(storage: Storage, ctx: RunContext, stage: str, shard: str, work: pa.Table, final: bool,
          words: pa.Array | None = None) -> dict[str, Any]:
    """The output of a map stage: the next stage's work table or, for the last map stage,
    the release's document files (publishing is fused into it, saving a read and a write).
    ``words``: the word counts of ``work``, when the caller has them."""
    if not final:
        storage.write_parquet(layout.work_path(ctx.release, stage, shard), work)
        return {}
    docs = documents_of(work)
    sources = docs.column("source").combine_chunks()
    files = _write_by_source(storage, docs, sources, lambda src: layout.documents_path(ctx.release, src, shard))
    words = words if words is not None else word_counts(docs.column("text"))
    for info in files:
        mine = words.filter(pc.equal(sources, info["source"]))
        info["tokens"] = int(pc.sum(mine).as_py() or 0)
        info["length_histogram"] = length_histogram(mine)
    return {"documents": files}


# Bin edges (words per document) of the length histograms in the manifest and the report.
LENGTH_BINS = [0, 10, 30, 100, 300, 1000, 3000, 10000]


def length_histogram(words: pa.Array) -> list[int]:
    counts = np.bincount(np.searchsorted(LENGTH_BINS, words.to_numpy(zero_copy_only=False), side="right") - 1,
                         minlength=len(LENGTH_BINS))
    return [int(c) for c in counts[: len(LENGTH_BINS)]]


# -- stage 1 (with the map side of the exact-dedup shuffle fused in) ---------------------------

def id_check_needed(shards: list[Shard]) -> bool:
    """Whether one source id can reach two shards: two shards (row groups of one file, files
    of one source, inputs sharing a source or rows naming their own) read an id column.
    Within one shard, ingest itself rejects a repeated id."""
    return sum(1 for s in shards if s.columns.id is not None) > 1


def _ingest(ctx: RunContext, shard: Shard):
    dedup = ctx.config.exact_dedup
    return ingest_shard(shard, ctx.config.ingest, dedup.key if dedup.enabled else None, ctx.release, ctx.created_at)


def ingest_read_step(ctx: RunContext, shard: Shard) -> dict[str, Any]:
    """Ingest's first phase when source ids are checked across shards: read and validate the
    shard, keep its work and rejects tables as scratch, and send the (id, order) of every row
    that has a source id to the id shuffle (partitioned by id)."""

    def compute(storage: Storage) -> dict[str, Any]:
        res = _ingest(ctx, shard)
        storage.write_parquet(layout.work_path(ctx.release, "ingest_read", shard.name), res.work)
        storage.write_parquet(layout.work_path(ctx.release, "ingest_read_rejects", shard.name), res.rejects)
        keyed = res.work.filter(pc.is_valid(res.work.column("source_id"))).select(["id", "order"])
        if keyed.num_rows:
            ids = np.array([int(i[:8], 16) for i in keyed.column("id").to_pylist()], dtype=np.int64)
            for bucket, part in split_by(keyed, ids % ctx.exact_buckets).items():
                storage.write_parquet(layout.shuffle_path(ctx.release, "ingest_ids", shard.name, bucket), part)
        return {"stats": res.stats}

    return _once(ctx, "ingest_read", shard.name, compute)


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

    return _once(ctx, "ingest_ids", f"b{bucket:05d}", compute)


def _checked_ingest(storage: Storage, ctx: RunContext, shard: Shard, first_uris: dict[int, str]):
    """The shard's phase-1 tables, less the rows whose id an earlier shard already had; those
    become rejects naming the first row and its file."""
    from tasks.ingest import IngestResult

    read = storage.read_json(layout.marker_path(ctx.release, "ingest_read", shard.name))
    work = storage.read_parquet(layout.work_path(ctx.release, "ingest_read", shard.name))
    rejects = storage.read_parquet(layout.work_path(ctx.release, "ingest_read_rejects", shard.name))
    decisions = pa.concat_tables([storage.read_parquet(layout.work_path(
        ctx.release, "ingest_id_decisions", f"b{b:05d}")) for b in range(ctx.exact_buckets)])
    mine = decisions.filter(pc.equal(pc.shift_right(decisions.column("order"), 32), shard.index))
    stats = dict(read["stats"])
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
        counts = dict(stats["rejected"])
        counts["duplicate id"] = counts.get("duplicate id", 0) + gone.num_rows  # reason_key of the reasons above
        stats.update(docs_out=work.num_rows, rejected=dict(sorted(counts.items())))
    return IngestResult(work, rejects, word_counts(work.column("text")), stats)


def ingest_step(ctx: RunContext, shard: Shard, final: bool,
                first_uris: dict[int, str] | None = None) -> dict[str, Any]:
    """Ingest one shard; with ``first_uris`` (shard index -> URL), the second phase of a run
    that checks source ids across shards (after :func:`ingest_read_step` and
    :func:`id_reduce_step`)."""
    dedup = ctx.config.exact_dedup

    def compute(storage: Storage) -> dict[str, Any]:
        res = _ingest(ctx, shard) if first_uris is None else _checked_ingest(storage, ctx, shard, first_uris)
        words = res.words  # counted once, by the empty-text check
        out = _emit(storage, ctx, "ingest", shard.name, res.work, final, words)
        near_out = {}
        if ctx.config.near_dedup.enabled and not dedup.enabled:
            from tasks.dedup.near_steps import map_outputs

            near_out = {"near_map": map_outputs(storage, ctx, shard.name, res.work)}
        if dedup.enabled:
            for bucket, part in exact.partition_keys(res.work, ctx.exact_buckets).items():
                storage.write_parquet(layout.shuffle_path(ctx.release, "exact_dedup", shard.name, bucket), part)
        chars = pc.utf8_length(res.work.column("text"))
        attrs = pa.table(
            {
                "id": res.work.column("id"),
                "ingest__length__chars": whole_document_spans(chars, chars),
                "ingest__length__words": whole_document_spans(chars, words),
            }
        )
        files = _write_rejects(storage, ctx, "ingest", shard.name, res.rejects)
        files += _write_attributes(storage, ctx, "ingest", shard.name, attrs, res.work.column("source").combine_chunks())
        funnel = _funnel(res.stats["rows_read"], res.work, 0, res.rejects, int(pc.sum(words).as_py() or 0))
        funnel["tokens_in"] = funnel["tokens_out"] + int(
            pc.sum(word_counts(pc.fill_null(res.rejects.column("text"), ""))).as_py() or 0
        )
        return {"funnel": funnel, "input": {**res.stats["file"], "rows": res.stats["rows_read"]},
                "source": shard.source, "files": files, **out, **near_out}

    return _once(ctx, "ingest", shard.name, compute)


# -- stage 2: exact dedup (reduce → filter; the map side runs inside ingest) --------------------

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

    return _once(ctx, "exact_dedup_reduce", f"b{bucket:05d}", compute)


def exact_filter_step(ctx: RunContext, shard: str, final: bool) -> dict[str, Any]:
    buckets = ctx.exact_buckets

    def compute(storage: Storage) -> dict[str, Any]:
        work = storage.read_parquet(layout.work_path(ctx.release, "ingest", shard))
        decisions = pa.concat_tables(
            [storage.read_parquet(layout.work_path(ctx.release, "exact_dedup_decisions", f"b{b:05d}"))
             for b in range(buckets)]
        )
        shard_index = int(shard)
        mine = decisions.filter(pc.equal(pc.shift_right(decisions.column("order"), 32), shard_index))
        kept, rejects, attrs = exact.apply_decisions(work, mine)
        out = _emit(storage, ctx, "exact_dedup", shard, kept, final)
        if ctx.config.near_dedup.enabled:
            from tasks.dedup.near_steps import map_outputs

            out["near_map"] = map_outputs(storage, ctx, shard, kept)
        files = _write_rejects(storage, ctx, "exact_dedup", shard, rejects)
        files += _write_attributes(storage, ctx, "exact_dedup", shard, attrs, kept.column("source").combine_chunks())
        tokens_in = int(pc.sum(word_counts(work.column("text"))).as_py() or 0)
        return {"funnel": _funnel(work.num_rows, kept, tokens_in, rejects), "files": files, **out}

    return _once(ctx, "exact_dedup", shard, compute)
