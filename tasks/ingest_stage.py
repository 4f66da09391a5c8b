"""The ingest stage's declaration and planner (its steps: :mod:`tasks.steps`)."""

from __future__ import annotations

from tasks.errors import ReleaseError
from tasks.grouping import balanced_groups, small_input_groups
from tasks.registry import Stage, StageRun, register
from tasks.steps import id_check_needed, id_reduce_step, ingest_read_step, ingest_step
from tasks.storage import public_url


def plan(run: StageRun) -> None:
    """One task per input shard; when a source id may reach two shards, read first, check the
    ids globally, then finish. A small local input runs each phase as one task per worker,
    each running its group of shards in turn (:func:`tasks.grouping.small_input_groups`). A
    shard whose input cannot be read is a failure of the release, not its end (unless
    fail_fast)."""
    ctx, shards = run.ctx, run.shards
    workers = run.workers()
    groups = small_input_groups(shards, workers)
    if id_check_needed(shards):
        read, failed = run.map_tolerant(ingest_read_step, [(s.name, (ctx, s)) for s in shards], "ingest_read",
                                        groups=groups)
        for f in failed:
            f["stage"] = "ingest"  # a file that cannot be read is ingest's failure, whichever phase found it
        buckets = ctx.exact_buckets
        run.map(id_reduce_step, [(f"b{b:05d}", (ctx, b)) for b in range(buckets)], "ingest_ids",
                groups=balanced_groups([1] * buckets, workers) if groups is not None else None)
        uris = {s.index: s.uri for s in shards}
        readable = [s for s in shards if s.name in read]
        results, more = run.map_tolerant(ingest_step, [(s.name, (ctx, s, run.final, uris)) for s in readable],
                                         "ingest", groups=small_input_groups(readable, workers)
                                         if groups is not None else None)
        failed = sorted(failed + more, key=lambda f: f["shard"])
    else:
        results, failed = run.map_tolerant(ingest_step, [(s.name, (ctx, s, run.final)) for s in shards], "ingest",
                                           groups=groups)
    by_name = {s.name: s for s in shards}
    for f in failed:
        f["uri"] = public_url(by_name[f["shard"]].uri)
    run.failures.extend(failed)
    if failed and ctx.config.execution.fail_fast:
        raise ReleaseError(f"{len(failed)} input shard(s) failed and fail_fast is set: {failed[0]['error']}")
    run.markers["ingest"] = list(results.values())
    run.names[:] = sorted(results)
    if not run.names:
        raise ReleaseError(f"every input shard failed; first: {failed[0]['error']}")


def task_runs(manifest: dict, shards: int, ok: int) -> dict[str, int]:
    ids = manifest["dedup"].get("source_ids")
    if ids:  # two phases: read every shard, check source ids, finish the readable ones
        return {"ingest_read": shards, "ingest_ids": ids["buckets"], "ingest": ok}
    return {"ingest": shards}


STAGE = register(Stage(
    name="ingest", kind="map", rank=0, config_key="ingest", plan=plan, enabled=lambda config: True, task_runs=task_runs,
    reads="the inputs (Parquet, JSONL)", writes="work table; rejects/ingest; attributes/ingest",
    summary="validate, Unicode normalization, LF line endings, stable ids (+ the next stage's map side: exact dedup's keys, near dedup's signatures)"))
