"""The ingest stage's declaration and planner (its steps: :mod:`tasks.steps`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tasks.errors import ReleaseError
from tasks.registry import Stage, StageRun, register
from tasks.steps import id_check_needed, id_reduce_step, ingest_read_step, ingest_step
from tasks.storage import public_url

# A local input at most this large runs ingest as one task run per worker per phase, not one
# per shard. Every Prefect task run costs the driver, the server and a worker a fixed amount
# of CPU (measured on 100k documents in 16 files: 36 task runs, about a third of the run's CPU
# outside the steps); a shard of a few MB pays it back, while above this size the shards are
# large enough and many tasks keep the workers evenly busy.
SMALL_INPUT_BYTES = 256 * 10**6


def _local_path(uri: str) -> str | None:
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None if "://" in uri else uri


def shard_bytes(shards: Sequence[Any]) -> list[int] | None:
    """Each shard's share of its input file's bytes, or None when an input is not local
    (asking remote storage for sizes would cost a request per file; those runs keep one task
    per shard). A file that cannot be read counts 0: its shard reports it."""
    per_file: dict[str, int] = {}
    for s in shards:
        per_file[s.uri] = per_file.get(s.uri, 0) + 1
    out = []
    for s in shards:
        path = _local_path(s.uri)
        if path is None:
            return None
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        out.append(size // per_file[s.uri])
    return out


def balanced_groups(sizes: Sequence[int], parts: int) -> list[list[int]]:
    """``range(len(sizes))`` cut into at most ``parts`` runs of consecutive indices with about
    equal byte sums (consecutive: each group then reads its files in the run's stable order)."""
    n = len(sizes)
    parts = max(1, min(parts, n))
    total = sum(sizes)
    groups: list[list[int]] = [[] for _ in range(parts)]
    acc = 0
    for i, size in enumerate(sizes):
        # the group this shard's midpoint falls in (a shard larger than a group's share may
        # leave a group empty: fewer, not unequal, groups)
        g = min(parts - 1, int((acc + size / 2) * parts // total)) if total else i * parts // n
        groups[g].append(i)
        acc += size
    return [g for g in groups if g]


def small_input_groups(shards: Sequence[Any], workers: int) -> list[list[int]] | None:
    """Worker-sized groups of ``shards`` (indices) when the input is small and local and has
    more shards than workers; None (one task per shard) otherwise."""
    if len(shards) <= workers:
        return None
    sizes = shard_bytes(shards)
    if sizes is None or sum(sizes) > SMALL_INPUT_BYTES:
        return None
    return balanced_groups(sizes, workers)


def plan(run: StageRun) -> None:
    """One task per input shard; when a source id may reach two shards, read first, check the
    ids globally, then finish. A small local input runs each phase as one task per worker,
    each reading its group of shards in turn (:func:`small_input_groups`). A shard whose input
    cannot be read is a failure of the release, not its end (unless fail_fast)."""
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
    grouped = manifest.get("task_groups", {})  # steps that ran as groups of shards (plan above)
    # with source ids: read every shard, check the ids, finish the readable ones
    out = {"ingest_read": shards, "ingest_ids": ids["buckets"], "ingest": ok} if ids else {"ingest": shards}
    return {k: grouped.get(k, v) for k, v in out.items()}


STAGE = register(Stage(
    name="ingest", kind="map", rank=0, config_key="ingest", plan=plan, enabled=lambda config: True, task_runs=task_runs,
    reads="the inputs (Parquet, JSONL)", writes="work table; rejects/ingest; attributes/ingest",
    summary="validate, Unicode normalization, LF line endings, stable ids (+ the next stage's map side: exact dedup's keys, near dedup's signatures)"))
