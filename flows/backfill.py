"""The ``backfill`` flow: curate a list or a range of input partitions, one release per
partition (at most ``max_concurrent`` at once, held by a Prefect global concurrency limit)
or one release for all of them."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.curate import ReleaseError, curate, refuse_parameter_secrets, run_release
from flows.orphans import watch_this_run
from flows.refresh import partition_inputs
from tasks.config import PipelineConfig, safe_name
from tasks.layout import component, name_problem
from tasks.parallel import make_task_runner

LIMIT_NAME = "refinery-backfill"
# Partition threads of one backfill: more than the limit on purpose, so that the Prefect global
# concurrency limit (shared by every backfill of the pipeline, in any process) is what holds the
# number of partitions at once, not this pool.
MAX_THREADS = 32


def limit_name(config: PipelineConfig) -> str:
    """The global concurrency limit of a pipeline's backfills (one per pipeline on a shared server)."""
    return f"{LIMIT_NAME}-{config.name}" if config.name else LIMIT_NAME


class BackfillSpec(BaseModel):
    """Which partitions of the config's inputs to curate, and how."""

    model_config = ConfigDict(extra="forbid")
    partitions: list[str] = Field(default_factory=list, title="Partitions",
                                  description="Partition names (folder or file names); empty: use the range.")
    start: str | None = Field(None, title="From partition", description="First partition name (inclusive).")
    end: str | None = Field(None, title="To partition", description="Last partition name (inclusive).")
    mode: Literal["per_partition", "single"] = Field("per_partition", title="Releases",
                                                     description="One release per partition, or one for all.")
    max_concurrent: int = Field(2, ge=1, le=64, title="Partitions at once")
    release_prefix: str = Field("backfill", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", title="Release id prefix")

    @field_validator("partitions")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            safe_name(name, "partition")  # a partition is one folder or file name, never a path
        return v

    _check_bounds = field_validator("start", "end")(lambda v: safe_name(v, "partition"))


def select_partitions(config: PipelineConfig, spec: BackfillSpec) -> list[tuple[Any, str]]:
    """(input spec for one partition, partition name) in name order."""
    chosen = [(inp, name) for inp, name in partition_inputs(config)
              if (name in spec.partitions if spec.partitions else
                  (spec.start is None or name >= spec.start) and (spec.end is None or name <= spec.end))]
    if spec.partitions:
        missing = set(spec.partitions) - {n for _, n in chosen}
        if missing:
            raise ReleaseError(f"backfill: no such partitions: {', '.join(sorted(missing))}")
    return sorted(chosen, key=lambda x: x[1])


def _ensure_limit(name: str, slots: int) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots))
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


@flow(name="backfill", task_runner=make_task_runner(PipelineConfig().execution), persist_result=False)
def backfill(config: PipelineConfig, spec: BackfillSpec) -> list[str]:
    """Curate the chosen partitions; returns the release ids."""
    refuse_parameter_secrets(config)
    logger = get_run_logger()
    watch_this_run(str(flow_run.get_id()) if flow_run.get_id() else None, logger)
    chosen = select_partitions(config, spec)
    if not chosen:
        raise ReleaseError("backfill: no partition matches the list or range")
    logger.info("backfill of %d partitions: %s", len(chosen), [n for _, n in chosen])
    if spec.mode == "single":
        name = f"{spec.release_prefix}-{chosen[0][1]}-{chosen[-1][1]}"
        cfg = config.model_copy(update={"inputs": [i for i, _ in chosen], "release": _release_id(name)})
        return [run_release(cfg)["release"]]

    limit = limit_name(config)
    _ensure_limit(limit, spec.max_concurrent)

    def one(item) -> str:
        inp, name = item
        cfg = config.model_copy(update={"inputs": [inp], "release": _release_id(f"{spec.release_prefix}-{name}")})
        with concurrency(limit, occupy=1, lease_duration=3600):
            return curate.with_options(flow_run_name=f"backfill-{name}")(config=cfg)["release"]

    with ThreadPoolExecutor(max_workers=min(len(chosen), MAX_THREADS)) as pool:
        return list(pool.map(one, chosen))


def _release_id(name: str) -> str:
    """A release id from partition names, which come from folder listings (data, not config)."""
    rid = re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:128]
    return rid if name_problem(rid) is None else f"r{component(name)}"
