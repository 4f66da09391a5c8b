"""The declarations of the exact and near dedup stages (global: map, shuffle, reduce, filter)."""

from __future__ import annotations

from tasks.catalog import read_catalog
from tasks.dedup import index as near_index
from tasks.dedup import near_steps
from tasks.dedup.exact_steps import exact_filter_step, exact_map_outputs, exact_reduce_step
from tasks.dedup.minhash import signature_scheme
from tasks.errors import ReleaseError
from tasks.grouping import small_input_groups
from tasks.registry import FeedSpec, Stage, StageRun, register
from tasks.stepkit import RunContext

MAX_CC_ROUNDS = 100


def exact_plan(run: StageRun) -> None:
    """Reduce per hash bucket (the keys were shuffled inside the previous stage's step, see
    ``feed``), then filter per shard."""
    ctx = run.ctx
    run.map(exact_reduce_step, [(f"b{b:05d}", (ctx, b)) for b in range(ctx.exact_buckets)], "exact_dedup_reduce")
    run.map(exact_filter_step, [(n, (ctx, n, run.final, run.prev)) for n in run.names], "exact_dedup")


def _scheme(ctx: RunContext) -> str:
    return signature_scheme(ctx.config.near_dedup.params())


def _near_view(run: StageRun) -> near_index.IndexView:
    """The earlier releases this release deduplicates against, pinned in the run's state so
    that a resumed run sees the same index."""
    from tasks import layout

    ctx = run.ctx
    storage = ctx.storage.open()
    path = layout.work_file(ctx.release, "near_view.json")
    pinned = storage.read_json_or_none(path)
    if pinned is not None:
        return near_index.IndexView.from_dict(pinned)
    view = near_index.IndexView()
    if ctx.config.near_dedup.cross_release:
        committed = [r["id"] for r in read_catalog(storage)["releases"] if r["id"] != ctx.release]
        view = near_index.live_view(storage, committed, _scheme(ctx))
        if view.skipped:
            run.logger.warning(
                "near dedup: %d earlier release(s) were indexed with other MinHash parameters and cannot be matched: "
                "%s", len(view.skipped), ", ".join(f"{r} ({s})" for r, s in sorted(view.skipped.items())))
    storage.write_json(path, view.to_dict())
    return view


def near_plan(run: StageRun) -> None:
    """Map (done inside the previous stage's step, see ``feed``) → reduce → connected
    components → survivors → filter; the global part in one task when its band rows fit one,
    else distributed."""
    ctx = run.ctx
    storage = ctx.storage.open()
    view = _near_view(run)
    band_rows = ctx.config.near_dedup.bands * sum(
        m["near_map"]["docs"] - m["near_map"]["no_shingles"] for m in run.markers[run.prev] if "near_map" in m)
    rows = band_rows + near_index.index_rows(storage, view)
    parts = [(f"p{p:05d}", p) for p in range(ctx.near_partitions)]
    limit = ctx.config.near_dedup.single_task_max_rows
    if rows <= limit:
        # the other workers wait for this one task: it uses their share of the cores in threads
        threads = min(ctx.near_partitions, run.workers())
        single = run.map(near_steps.single_task_step, [("all", (ctx, view.to_dict(), threads))], "near_dedup_global")
        run.markers["near_dedup_reduce"], run.markers["near_dedup_survivors"] = (single[0]["reduce"],
                                                                                 single[0]["survivors"])
        cc, rounds = "single_task", 0
    else:
        reduced = run.map(near_steps.reduce_step, [(n, (ctx, p, view.to_dict())) for n, p in parts],
                          "near_dedup_reduce")
        distributed = sum(m["edges"] for m in reduced) > limit
        if not distributed:
            run.map(near_steps.cc_local_step, [("all", (ctx,))], "near_dedup_cc_local")
            rounds = 1  # the local task writes its converged stars as round 1
        else:
            rounds = 0
            while True:
                large = run.map(near_steps.cc_step, [(n, (ctx, rounds, p, "large")) for n, p in parts],
                                f"near_dedup_cc_r{rounds:03d}", task_name="near_dedup_cc")
                if sum(m["violations"] for m in large) == 0:
                    break  # the input of this round is already a set of stars: components found
                run.map(near_steps.cc_step, [(n, (ctx, rounds + 1, p, "small")) for n, p in parts],
                        f"near_dedup_cc_r{rounds + 1:03d}", task_name="near_dedup_cc")
                rounds += 2
                if rounds > MAX_CC_ROUNDS:
                    raise ReleaseError(f"connected components did not converge in {MAX_CC_ROUNDS} rounds")
        run.map(near_steps.finalize_step, [(n, (ctx, rounds, p)) for n, p in parts], "near_dedup_finalize")
        run.map(near_steps.survivor_step, [(n, (ctx, p)) for n, p in parts], "near_dedup_survivors")
        cc, rounds = ("distributed", rounds + 1) if distributed else ("local", 0)
    by_name = {s.name: s for s in run.shards}
    # a small local input filters in one task run per worker (tasks/grouping.py)
    run.map(near_steps.filter_step, [(n, (ctx, n, run.prev, run.final)) for n in run.names], "near_dedup",
            groups=small_input_groups([by_name[n] for n in run.names], run.workers()))
    run.markers["near_dedup_info"] = [{"cc_rounds": rounds, "cc": cc, "index_before": near_index.index_size(
        storage, view), "index_releases": view.releases, "skipped": view.skipped}]
    if ctx.config.near_dedup.cross_release:  # counts only once the release is committed
        near_index.write_segment_meta(storage, ctx.release, ctx.near_partitions, _scheme(ctx))


def near_after_publish(ctx: RunContext) -> None:
    """Compact the cross-release index once it has enough segments."""
    if not ctx.config.near_dedup.cross_release:
        return
    storage = ctx.storage.open()
    committed = [r["id"] for r in read_catalog(storage)["releases"]]
    view = near_index.live_view(storage, committed, _scheme(ctx))
    if len(view.segments) >= ctx.config.near_dedup.compact_after:
        near_index.compact(storage, view, ctx.release, ctx.near_partitions, _scheme(ctx))


def exact_task_runs(manifest: dict, shards: int, ok: int) -> dict[str, int]:
    return {"exact_dedup_reduce": manifest["dedup"]["exact"]["buckets"], "exact_dedup": ok}


def near_task_runs(manifest: dict, shards: int, ok: int) -> dict[str, int]:
    near = manifest["dedup"]["near"]
    parts = near["partitions"]
    out = {"near_dedup": ok}
    if near["components"] == "single_task":
        out["near_dedup_global"] = 1
    else:
        out.update(near_dedup_reduce=parts, near_dedup_finalize=parts, near_dedup_survivors=parts)
    if near["components"] == "local":
        out["near_dedup_cc_local"] = 1
    out.update({f"near_dedup_cc_r{r:03d}": parts for r in range(near["cc_rounds"])})
    return out


EXACT = register(Stage(
    name="exact_dedup", kind="global", rank=20, config_key="exact_dedup", plan=exact_plan,
    feed=FeedSpec("exact_map", exact_map_outputs), task_runs=exact_task_runs,
    waves=lambda config: 2, reads="the previous stage's work table (content keys shuffled inside its step)",
    writes="work table; rejects/exact_dedup; attributes/exact_dedup",
    summary="content hash; map (inside the previous map stage) → shuffle by hash → reduce → filter"))

NEAR = register(Stage(
    name="near_dedup", kind="global", rank=30, config_key="near_dedup", plan=near_plan,
    feed=FeedSpec("near_map", near_steps.map_outputs), waves=lambda config: 5, after_publish=near_after_publish,
    task_runs=near_task_runs,
    reads="the previous stage's work table (signatures made inside its step); the cross-release index",
    writes="work table; rejects/near_dedup; attributes/near_dedup; an index segment",
    summary="MinHash LSH; map (inside the previous map stage) → shuffle by band → reduce → components → filter"))
