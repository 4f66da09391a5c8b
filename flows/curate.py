"""The ``curate`` flow: one release, from inputs to a committed manifest."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import ray
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks import layout
from tasks.config import PipelineConfig
from tasks.ingest import plan_shards
from tasks.manifest import config_sha256
from tasks.parallel import make_task_runner, shard_map, shard_task
from tasks.publish import build_manifest, publish_release, read_catalog
from tasks.steps import (
    RunContext,
    exact_filter_step,
    exact_reduce_step,
    ingest_step,
)
from tasks.storage import Storage, StorageSpec

ingest_task = shard_task(ingest_step, "ingest")
exact_reduce_task = shard_task(exact_reduce_step, "exact_dedup_reduce")
exact_filter_task = shard_task(exact_filter_step, "exact_dedup")


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
    logger = get_run_logger()
    spec = storage_spec(config)
    storage = spec.open()
    ctx = start_or_resume(storage, config, spec)
    existing = storage.read_json_or_none(layout.manifest_path(ctx.release))
    if existing is not None:
        logger.info("release %s is already published at %s; nothing to do", ctx.release, storage.url())
        return existing

    execution = ctx.config.execution
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
    ctx = replace(ctx, exact_buckets=ctx.config.exact_dedup.bucket_count(len(shards)))
    # the last map stage writes the release's documents itself
    results, failed = shard_map(ingest_task, [(s.name, (ctx, s, not dedup)) for s in shards], execution, "ingest")
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

    if dedup:
        t0 = time.perf_counter()
        buckets = range(ctx.exact_buckets)
        markers["exact_dedup_reduce"] = _checked(shard_map(
            exact_reduce_task, [(f"b{b:05d}", (ctx, b)) for b in buckets], execution, "exact_dedup_reduce"))
        markers["exact_dedup"] = _checked(shard_map(exact_filter_task, [(n, (ctx, n, True)) for n in names],
                                                    execution, "exact_dedup"))
        timing["exact_dedup"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    manifest = build_manifest(ctx, markers, failures, timing, cluster_info(), _flow_run_id(), storage)
    timing["publish"] = time.perf_counter() - t0
    manifest["timing"]["publish"] = round(timing["publish"], 3)
    publish_release(storage, manifest)
    logger.info("published release %s: %d documents (%d rejected, %d failed shards)", ctx.release,
                manifest["totals"]["documents"], manifest["totals"]["rejected"], len(failures))
    return manifest


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
    runner = make_task_runner(config.execution)
    return curate.with_options(task_runner=runner)(config=config)
