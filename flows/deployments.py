"""The deployments users run: `curate` from the Prefect UI (the pipeline models are its
parameter form) and `refresh` on a schedule. Served by `refinery serve` (a process runner;
`prefect.yaml` holds the same deployments for a work pool)."""

from __future__ import annotations

from datetime import timedelta

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType

from flows.backfill import BackfillSpec, backfill
from flows.curate import curate
from flows.refresh import refresh
from tasks.config import PipelineConfig


def serve_all(config: PipelineConfig, cron: str | None = "0 3 * * *", interval: int | None = None) -> None:
    params = {"config": config.model_dump(mode="json")}
    schedule = {"interval": timedelta(seconds=interval)} if interval else {"cron": cron}
    # Module-path entrypoints: flow runs import `flows.curate` as a package module, which Ray
    # workers can import too (a file-path entrypoint would load it as a bare `curate` module).
    module = {"entrypoint_type": EntrypointType.MODULE_PATH}
    serve(
        curate.to_deployment(name="curate", parameters=params, **module,
                             description="Curate one release; edit any parameter in the form.", tags=["refinery"]),
        # one refresh at a time: a tick that finds one running is cancelled, the next picks up
        refresh.to_deployment(name="refresh", parameters=params, tags=["refinery"], **module,
                              concurrency_limit=ConcurrencyLimitConfig(
                                  limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
                              description="Scheduled incremental release from new input partitions.", **schedule),
        backfill.to_deployment(name="backfill", parameters={**params, "spec": BackfillSpec().model_dump()},
                               tags=["refinery"], **module,
                               description="Curate a list or range of partitions, bounded concurrency."),
    )
