"""The ``curate`` flow: one release, from inputs to a committed manifest."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import ray
from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run

from flows.artifacts import Progress, publish_artifacts
from flows.orphans import watch_this_run
from tasks import layout
from tasks.config import PipelineConfig
from tasks.dedup import index as near_index
from tasks.dedup import near_steps
from tasks.ingest import plan_shards
from tasks.leaner import steps as leaner_steps
from tasks.llm.runtime import require_llm_runtime
from tasks.manifest import ManifestError, config_sha256
from tasks.parallel import PROGRESS, make_task_runner, shard_map, shard_task
from tasks.prox import steps as prox_steps
from tasks.prox.learned import LearnedModelError
from tasks.publish import build_manifest, publish_release, read_catalog, read_manifest_file, rebuild_catalog
from tasks.quality import steps as quality_steps
from tasks.steps import (
    RunContext,
    exact_filter_step,
    exact_reduce_step,
    id_check_needed,
    id_reduce_step,
    ingest_read_step,
    ingest_step,
)
from tasks.storage import Storage, StorageSpec

ingest_task = shard_task(ingest_step, "ingest")
ingest_read_task = shard_task(ingest_read_step, "ingest_read")
id_reduce_task = shard_task(id_reduce_step, "ingest_ids")
exact_reduce_task = shard_task(exact_reduce_step, "exact_dedup_reduce")
exact_filter_task = shard_task(exact_filter_step, "exact_dedup")
near_reduce_task = shard_task(near_steps.reduce_step, "near_dedup_reduce")
near_cc_task = shard_task(near_steps.cc_step, "near_dedup_cc")
near_cc_local_task = shard_task(near_steps.cc_local_step, "near_dedup_cc_local")
near_single_task = shard_task(near_steps.single_task_step, "near_dedup_global")
near_finalize_task = shard_task(near_steps.finalize_step, "near_dedup_finalize")
near_survivor_task = shard_task(near_steps.survivor_step, "near_dedup_survivors")
near_filter_task = shard_task(near_steps.filter_step, "near_dedup")
quality_task = shard_task(quality_steps.quality_step, "quality")
quality_values_task = shard_task(quality_steps.threshold_value_step, "quality_threshold_values")
quality_threshold_task = shard_task(quality_steps.threshold_filter_step, "quality_threshold")
prox_task = shard_task(prox_steps.prox_step, "prox")
leaner_task = shard_task(leaner_steps.leaner_step, "leaner")
MAX_CC_ROUNDS = 100


class ReleaseError(RuntimeError):
    pass


def new_release_id() -> str:
    return datetime.now(UTC).strftime("r%Y%m%dT%H%M%SZ")


def storage_spec(config: PipelineConfig) -> StorageSpec:
    if not config.output:
        raise ReleaseError("no output corpus root given (config `output` or --output)")
    return StorageSpec(config.output, config.storage.endpoint_url, config.storage.region)


def start_or_resume(storage: Storage, config: PipelineConfig, spec: StorageSpec) -> RunContext:
    """The run record pins what a rerun must reuse (creation time, parent) so that outputs
    are byte-identical; a rerun with a different config is refused."""
    release = config.release or new_release_id()
    config = config.model_copy(update={"release": release})
    sha = config_sha256(config.public_dict())
    record = storage.read_json_or_none(layout.run_record_path(release))
    if record is None:
        latest = read_catalog(storage).get("latest")
        record = {"release": release, "created": datetime.now(UTC).isoformat(), "parent": latest, "config_sha256": sha}
        storage.write_json(layout.run_record_path(release), record)
    elif record["config_sha256"] != sha:
        raise ReleaseError(
            f"release {release} was started with a different pipeline config (sha256 {record['config_sha256'][:12]}, "
            f"now {sha[:12]}); give the new run a new release id"
        )
    return RunContext(release, record["created"], record["parent"], spec, config)


def cluster_info() -> dict[str, Any]:
    if not ray.is_initialized():
        return {"ray_nodes": 0, "ray_cpus": 0, "ray_address": None}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "ray_nodes": len(nodes),
        "ray_cpus": float(ray.cluster_resources().get("CPU", 0)),
        "ray_address": ray.get_runtime_context().gcs_address,
    }


def run_release(config: PipelineConfig) -> dict[str, Any]:
    """The body of the flow: plan, map stages on Ray, global dedup, publish."""
    try:
        prox_steps.stage.check_writer(config)  # a missing or foreign model file fails before any work
    except LearnedModelError as exc:
        raise ReleaseError(str(exc)) from None
    logger = get_run_logger()
    require_llm_runtime(config)  # before any work: a missing extra is not worth a half run
    watch_this_run(_flow_run_id(), logger)  # and crash the runs a killed process left RUNNING
    spec = storage_spec(config)
    storage = spec.open()
    ctx = start_or_resume(storage, config, spec)
    try:
        existing = read_manifest_file(storage, layout.manifest_path(ctx.release))
    except FileNotFoundError:
        existing = None
    except ManifestError as exc:  # every shard's outputs are still there: publishing again heals it
        logger.warning("%s; publishing release %s again", exc, ctx.release)
        existing = None
    if existing is not None:
        rebuild_catalog(storage)  # heals a catalog a crash or another tool left behind
        logger.info("release %s is already published at %s; nothing to do", ctx.release, storage.url())
        return existing

    execution = ctx.config.execution
    quality = ctx.config.quality.enabled
    thresholds = quality and bool(ctx.config.quality.thresholds)
    prox = ctx.config.prox.enabled
    leaner = ctx.config.leaner.enabled
    waves = (1 + 2 * ctx.config.exact_dedup.enabled + 5 * ctx.config.near_dedup.enabled + quality + 2 * thresholds
             + prox + leaner)
    progress = Progress(ctx.release, waves)
    PROGRESS.set(progress)
    timing: dict[str, float] = {}
    markers: dict[str, list[dict[str, Any]]] = {}
    failures: list[dict[str, Any]] = []

    t0 = time.perf_counter()
    shards = plan_shards(ctx.config)
    if not shards:
        raise ReleaseError("no input shards: configure at least one input")
    logger.info("release %s: %d shards from %d inputs -> %s", ctx.release, len(shards), len(ctx.config.inputs),
                storage.url())
    dedup = ctx.config.exact_dedup.enabled
    near = ctx.config.near_dedup.enabled
    ctx = replace(ctx, exact_buckets=ctx.config.exact_dedup.bucket_count(len(shards)),
                  near_partitions=ctx.config.near_dedup.partition_count(len(shards)))
    # the last map stage writes the release's documents itself
    if quality:
        quality_steps.stage.stage_rules(ctx.config.quality)  # unknown names fail before any work starts
    final = not (dedup or near or quality or prox or leaner)
    if id_check_needed(shards):  # a source id may reach two shards: read, check ids globally, finish
        read, failed = shard_map(ingest_read_task, [(s.name, (ctx, s)) for s in shards], execution, "ingest_read")
        for f in failed:
            f["stage"] = "ingest"  # a file that cannot be read is ingest's failure, whichever phase found it
        markers["ingest_ids"] = _checked(shard_map(
            id_reduce_task, [(f"b{b:05d}", (ctx, b)) for b in range(ctx.exact_buckets)], execution, "ingest_ids"))
        uris = {s.index: s.uri for s in shards}
        results, more = shard_map(ingest_task, [(s.name, (ctx, s, final, uris)) for s in shards if s.name in read],
                                  execution, "ingest")
        failed = sorted(failed + more, key=lambda f: f["shard"])
    else:
        results, failed = shard_map(ingest_task, [(s.name, (ctx, s, final)) for s in shards], execution, "ingest")
    by_name = {s.name: s for s in shards}
    for f in failed:
        f["uri"] = by_name[f["shard"]].uri
    failures += failed
    if failed and execution.fail_fast:
        raise ReleaseError(f"{len(failed)} input shard(s) failed and fail_fast is set: {failed[0]['error']}")
    markers["ingest"] = list(results.values())
    names = sorted(results)
    if not names:
        raise ReleaseError(f"every input shard failed; first: {failed[0]['error']}")
    timing["ingest"] = time.perf_counter() - t0
    prev = "ingest"

    if dedup:
        t0 = time.perf_counter()
        buckets = range(ctx.exact_buckets)
        markers["exact_dedup_reduce"] = _checked(shard_map(
            exact_reduce_task, [(f"b{b:05d}", (ctx, b)) for b in buckets], execution, "exact_dedup_reduce"))
        markers["exact_dedup"] = _checked(shard_map(exact_filter_task, [(n, (ctx, n, not (near or quality or prox or leaner)))
                                                                        for n in names], execution, "exact_dedup"))
        timing["exact_dedup"] = time.perf_counter() - t0
        prev = "exact_dedup"

    if near:
        t0 = time.perf_counter()
        view = _near_view(storage, ctx)
        band_rows = ctx.config.near_dedup.bands * sum(
            m["near_map"]["docs"] - m["near_map"]["no_shingles"] for m in markers[prev] if "near_map" in m)
        markers.update(_near_dedup(ctx, names, prev, view, band_rows + near_index.index_rows(storage, view), execution,
                                   final=not (quality or prox or leaner)))
        if ctx.config.near_dedup.cross_release:  # counts only once the release is committed
            near_index.write_segment_meta(storage, ctx.release, ctx.near_partitions, _scheme(ctx))
        timing["near_dedup"] = time.perf_counter() - t0
        prev = "near_dedup"

    if quality:
        t0 = time.perf_counter()
        markers["quality"] = _checked(shard_map(quality_task, [(n, (ctx, n, prev, not (prox or leaner))) for n in names],
                                                execution, "quality"))
        if thresholds:
            values = _checked(shard_map(quality_values_task, [("all", (ctx, names))], execution,
                                        "quality_threshold_values"))
            markers["quality_threshold_values"] = values
            markers["quality_threshold"] = _checked(shard_map(
                quality_threshold_task, [(n, (ctx, n, values[0]["thresholds"], not (prox or leaner))) for n in names], execution,
                "quality_threshold"))
        timing["quality"] = time.perf_counter() - t0
        prev = "quality_threshold" if thresholds else "quality"

    if prox:
        t0 = time.perf_counter()
        markers["prox"] = _with_model(ctx, lambda actor: _checked(shard_map(
            prox_task, [(n, (ctx, n, prev, not leaner, actor)) for n in names], execution, "prox")), uses_model=(
            prox_steps.stage.writer_kind(ctx.config) not in prox_steps.stage.LOCAL_WRITERS))
        timing["prox"] = time.perf_counter() - t0
        prev = "prox"

    if leaner:
        t0 = time.perf_counter()
        markers["leaner"] = _with_model(ctx, lambda actor: _checked(shard_map(
            leaner_task, [(n, (ctx, n, prev, True, actor)) for n in names], execution, "leaner")), uses_model=True)
        timing["leaner"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    manifest = build_manifest(ctx, markers, failures, timing, cluster_info(), _flow_run_id(), storage)
    timing["publish"] = time.perf_counter() - t0
    manifest["timing"]["publish"] = round(timing["publish"], 3)
    publish_release(storage, manifest)
    report = storage.url(layout.report_path(ctx.release))
    publish_artifacts(manifest, report if "://" in report else f"file://{report}")
    progress.finish(f"published {manifest['totals']['documents']:,} documents")
    if near and ctx.config.near_dedup.cross_release:
        _maybe_compact(storage, ctx)
    logger.info("published release %s: %d documents (%d rejected, %d failed shards)", ctx.release,
                manifest["totals"]["documents"], manifest["totals"]["rejected"], len(failures))
    return manifest


def _near_view(storage: Storage, ctx: RunContext) -> near_index.IndexView:
    """The earlier releases this release deduplicates against, pinned in the run's state so
    that a resumed run sees the same index."""
    path = f"{layout.work_dir(ctx.release)}/near_view.json"
    pinned = storage.read_json_or_none(path)
    if pinned is not None:
        return near_index.IndexView.from_dict(pinned)
    view = near_index.IndexView()
    if ctx.config.near_dedup.cross_release:
        committed = [r["id"] for r in read_catalog(storage)["releases"] if r["id"] != ctx.release]
        view = near_index.live_view(storage, committed, _scheme(ctx))
        if view.skipped:
            get_run_logger().warning(
                "near dedup: %d earlier release(s) were indexed with other MinHash parameters and cannot be matched: "
                "%s", len(view.skipped), ", ".join(f"{r} ({s})" for r, s in sorted(view.skipped.items())))
    storage.write_json(path, view.to_dict())
    return view


def _scheme(ctx: RunContext) -> str:
    from tasks.dedup.minhash import signature_scheme

    return signature_scheme(ctx.config.near_dedup.params())


def _near_dedup(ctx: RunContext, names: list[str], prev: str, view: near_index.IndexView, rows: int, execution,
                final: bool) -> dict:
    """Map (done by the previous stage) → reduce → connected components → survivors → filter;
    the global part in one task when its ``rows`` band rows fit one, else distributed."""
    parts = [(f"p{p:05d}", p) for p in range(ctx.near_partitions)]
    limit = ctx.config.near_dedup.single_task_max_rows
    out: dict[str, Any] = {}
    if rows <= limit:
        single = _checked(shard_map(near_single_task, [("all", (ctx, view.to_dict()))], execution, "near_dedup_global"))
        out["near_dedup_reduce"], out["near_dedup_survivors"] = single[0]["reduce"], single[0]["survivors"]
        out.update(_near_filter(ctx, names, prev, execution, final))
        out["near_dedup_info"] = [_near_info(ctx, view, "single_task", 0)]
        return out
    out["near_dedup_reduce"] = _checked(shard_map(near_reduce_task, [(n, (ctx, p, view.to_dict())) for n, p in parts],
                                                  execution, "near_dedup_reduce"))
    edges = sum(m["edges"] for m in out["near_dedup_reduce"])
    distributed = edges > limit
    if not distributed:
        _checked(shard_map(near_cc_local_task, [("all", (ctx,))], execution, "near_dedup_cc_local"))
        rounds = 1  # the local task writes its converged stars as round 1
    else:
        rounds = 0
        while True:
            stage = f"near_dedup_cc_r{rounds:03d}"
            large = _checked(shard_map(near_cc_task, [(n, (ctx, rounds, p, "large")) for n, p in parts], execution,
                                       stage))
            if sum(m["violations"] for m in large) == 0:
                break  # the input of this round is already a set of stars: components found
            stage = f"near_dedup_cc_r{rounds + 1:03d}"
            _checked(shard_map(near_cc_task, [(n, (ctx, rounds + 1, p, "small")) for n, p in parts], execution,
                               stage))
            rounds += 2
            if rounds > MAX_CC_ROUNDS:
                raise ReleaseError(f"connected components did not converge in {MAX_CC_ROUNDS} rounds")
    _checked(shard_map(near_finalize_task, [(n, (ctx, rounds, p)) for n, p in parts], execution,
                       "near_dedup_finalize"))
    out["near_dedup_survivors"] = _checked(shard_map(near_survivor_task, [(n, (ctx, p)) for n, p in parts], execution,
                                                     "near_dedup_survivors"))
    out.update(_near_filter(ctx, names, prev, execution, final))
    out["near_dedup_info"] = [_near_info(ctx, view, "distributed" if distributed else "local",
                                         rounds + 1 if distributed else 0)]
    return out


def _near_filter(ctx: RunContext, names: list[str], prev: str, execution, final: bool) -> dict:
    return {"near_dedup": _checked(shard_map(near_filter_task, [(n, (ctx, n, prev, final)) for n in names],
                                             execution, "near_dedup"))}


def _near_info(ctx: RunContext, view: near_index.IndexView, cc: str, rounds: int) -> dict[str, Any]:
    return {"cc_rounds": rounds, "cc": cc, "index_before": near_index.index_size(ctx.storage.open(), view),
            "index_releases": view.releases, "skipped": view.skipped}


def _with_model(ctx: RunContext, run, uses_model: bool):
    """Run a model-backed stage with the run's model actor (loaded once, shared by every shard
    task), stopping the actor afterwards."""
    if not uses_model or not ray.is_initialized():
        return run(None)
    from tasks.llm.client import start_actor, stop_actor

    name, handle = start_actor(ctx.release, ctx.config.llm)
    try:
        return run(name)
    finally:
        stop_actor(name)
        del handle


def _maybe_compact(storage: Storage, ctx: RunContext) -> None:
    committed = [r["id"] for r in read_catalog(storage)["releases"]]
    view = near_index.live_view(storage, committed, _scheme(ctx))
    if len(view.segments) >= ctx.config.near_dedup.compact_after:
        near_index.compact(storage, view, ctx.release, ctx.near_partitions, _scheme(ctx))


def _checked(result: tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Past ingest there is no bad input left to tolerate: any failure stops the release."""
    results, failures = result
    if failures:
        raise ReleaseError(f"{failures[0]['stage']} shard {failures[0]['shard']} failed: {failures[0]['error']}")
    return list(results.values())


def _flow_run_id() -> str | None:
    rid = flow_run.get_id()
    return str(rid) if rid else None


@flow(name="curate", task_runner=make_task_runner(PipelineConfig().execution), persist_result=False, log_prints=True)
def curate(config: PipelineConfig) -> dict[str, Any]:
    """Curate one release: ingest, exact dedup and publish, one Prefect task run per shard on Ray."""
    return run_release(config)


def run_curate(config: PipelineConfig) -> dict[str, Any]:
    """Run the flow with the Ray address the config asks for."""
    runner = make_task_runner(config.execution, needs_storage=uses_remote_storage(config))
    # a named pipeline's ad-hoc runs carry its tag, as its deployments' runs do
    with tags(*(["refinery", f"pipeline:{config.name}"] if config.name else ["refinery"])):
        return curate.with_options(task_runner=runner)(config=config)


def uses_remote_storage(config: PipelineConfig) -> bool:
    """Whether the root or any input lives in object storage (not a local path or file://)."""
    urls = [config.output or "", *(i.uri for i in config.inputs)]
    return any("://" in u and not u.startswith("file://") for u in urls)
