"""The ``curate`` flow: one release, from inputs to a committed manifest."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import ray
from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run

from flows.artifacts import Progress, publish_artifacts
from flows.orphans import watch_this_run
from flows.param_secrets import hush_parameter_dumps, scrub_run
from flows.runner import StageRunner, run_map_stage
from flows.warm import uses_remote_storage, warm_workers
from tasks import layout, registry
from tasks.config import PipelineConfig
from tasks.errors import ReleaseError
from tasks.ingest import plan_shards
from tasks.llm_runtime import require_llm_runtime
from tasks.manifest import ManifestError, config_sha256
from tasks.parallel import PROGRESS, make_task_runner
from tasks.publish import build_manifest, publish_release, read_catalog, read_manifest_file, rebuild_catalog
from tasks.stepkit import Feed, RunContext
from tasks.storage import Storage, StorageSpec
from tasks.timeline import mark
from tasks.tokens import TokenizerError, check_release_tokenizer

__all__ = ["ReleaseError", "curate", "run_curate", "run_release", "start_or_resume", "storage_spec"]


def new_release_id() -> str:
    return datetime.now(UTC).strftime("r%Y%m%dT%H%M%SZ")


def storage_spec(config: PipelineConfig) -> StorageSpec:
    if not config.output:
        raise ReleaseError("no output corpus root given (config `output` or --output)")
    return StorageSpec(config.output, config.storage.endpoint_url, config.storage.region,
                       config.storage.scratch_compression)


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
    """The body of the flow: plan, then the configured stages in order (each plans its own
    tasks, see tasks/registry.py), then publish."""
    mark("flow_body")
    warm_workers(config)
    stages = registry.order(config)
    for st in stages:  # a missing model file or an unknown rule name fails before any work
        if st.check is not None:
            st.check(config)
    try:  # so does a tokenizer file that cannot be loaded
        check_release_tokenizer(config.tokenizer)
    except TokenizerError as exc:
        raise ReleaseError(str(exc)) from None
    logger = get_run_logger()
    require_llm_runtime(config)  # before any work: a missing extra is not worth a half run
    # and crash the runs a killed process left RUNNING: a cleanup that scans every process and
    # asks the server (about a second on a loaded machine), so it runs beside the stages
    watcher = threading.Thread(target=watch_this_run, args=(_flow_run_id(), logger), name="refinery-orphans",
                               daemon=True)
    watcher.start()
    try:
        return _release(config, stages, logger)
    finally:
        watcher.join()


def _release(config: PipelineConfig, stages: list[registry.Stage], logger: Any) -> dict[str, Any]:
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
    progress = Progress(ctx.release, registry.total_waves(ctx.config))
    PROGRESS.set(progress)
    timing: dict[str, float] = {}
    markers: dict[str, list[dict[str, Any]]] = {}
    failures: list[dict[str, Any]] = []

    shards = plan_shards(ctx.config)
    if not shards:
        raise ReleaseError("no input shards: configure at least one input")
    web = next((s for s in shards if s.format == "warc" or getattr(s.columns, "html", None)), None)
    if web is not None and "extract" not in {st.name for st in stages}:
        raise ReleaseError(f"{web.uri}: holds HTML pages, but the extract stage does not run: give its input "
                           "`format: warc` (or `columns: {html: ...}`), or list extract in `stages`")
    logger.info("release %s: %d shards from %d inputs -> %s (stages: %s)", ctx.release, len(shards),
                len(ctx.config.inputs), storage.url(), ", ".join(st.name for st in stages))
    ctx = replace(ctx, exact_buckets=ctx.config.exact_dedup.bucket_count(len(shards)),
                  near_partitions=ctx.config.near_dedup.partition_count(len(shards)))
    names: list[str] = []
    prev = ""
    for i, st in enumerate(stages):
        t0 = time.perf_counter()
        mark("stage_start", stage=st.name)
        nxt = stages[i + 1] if i + 1 < len(stages) else None
        # the next stage's map (near dedup's signatures) runs inside this stage's last map step
        feed = Feed(st.output(ctx.config), nxt.feed.key, nxt.feed.fn) if nxt is not None and nxt.feed else None
        run = StageRunner(replace(ctx, feed=feed), prev, nxt is None, shards, names, markers, failures, execution,
                          logger)
        if st.step is not None:
            run_map_stage(run, st.step, st.name, st.needs_model(ctx.config))
        else:
            st.plan(run)
        timing[st.name] = time.perf_counter() - t0
        mark("stage_end", stage=st.name)
        prev = st.output(ctx.config)

    t0 = time.perf_counter()
    manifest = build_manifest(ctx, markers, failures, timing, cluster_info(), _flow_run_id(), storage,
                              [st.name for st in stages], registry.expected_steps(ctx.config))
    timing["publish"] = time.perf_counter() - t0
    manifest["timing"]["publish"] = round(timing["publish"], 3)
    publish_release(storage, manifest)
    report = storage.url(layout.report_path(ctx.release))
    publish_artifacts(manifest, report if "://" in report else f"file://{report}")
    mark("published")
    progress.finish(f"published {manifest['totals']['documents']:,} documents")
    for st in stages:
        if st.after_publish is not None:
            st.after_publish(ctx)
    logger.info("published release %s: %d documents (%d rejected, %d failed shards)", ctx.release,
                manifest["totals"]["documents"], manifest["totals"]["rejected"], len(failures))
    return manifest


def _flow_run_id() -> str | None:
    rid = flow_run.get_id()
    return str(rid) if rid else None


KEYS_IN_PARAMETERS = (
    "storage keys came in this flow's config parameter: Prefect keeps a flow run's parameters in clear text in "
    "its database and shows them on the run's page, so the run is refused and the keys are not used ({where}). "
    "Give them to the process that runs the flow instead: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
    "environment of `refinery serve` (or the pipeline file it serves), or call "
    "`config.export_secrets_to_env()` before calling a flow")
hush_parameter_dumps()  # a served run imports this module before Prefect validates its parameters


def refuse_parameter_secrets(config: PipelineConfig) -> None:
    """Fail a flow run whose parameters carry storage keys, after removing them from the Prefect
    server's record of the run (see flows/param_secrets.py for the other places they are
    removed). The CLI moves a file's keys into the environment before it calls a flow, so its
    runs never get here."""
    if not config.has_secrets():
        return
    rid = flow_run.get_id()
    if not rid:
        raise ReleaseError(KEYS_IN_PARAMETERS.format(where="no flow run records them"))
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            scrub_run(client, rid, dict(client.read_flow_run(rid).parameters))
    except Exception as exc:
        where = f"they could NOT be removed from flow run {rid}'s record ({type(exc).__name__}): rotate them"
        raise ReleaseError(KEYS_IN_PARAMETERS.format(where=where)) from None
    raise ReleaseError(KEYS_IN_PARAMETERS.format(where=f"they were removed from flow run {rid}'s record"))


@flow(name="curate", task_runner=make_task_runner(PipelineConfig().execution), persist_result=False, log_prints=True)
def curate(config: PipelineConfig) -> dict[str, Any]:
    """Curate one release: ingest, exact dedup and publish, one Prefect task run per shard on Ray."""
    refuse_parameter_secrets(config)
    return run_release(config)


def run_curate(config: PipelineConfig) -> dict[str, Any]:
    """Run the flow with the Ray address the config asks for."""
    runner = make_task_runner(config.execution, needs_storage=uses_remote_storage(config))
    # a named pipeline's ad-hoc runs carry its tag, as its deployments' runs do
    mark("flow_call")
    with tags(*(["refinery", f"pipeline:{config.name}"] if config.name else ["refinery"])):
        return curate.with_options(task_runner=runner)(config=config)
