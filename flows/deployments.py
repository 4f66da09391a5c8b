"""The deployments users run: `curate` from the Prefect UI (the pipeline models are its
parameter form) and `refresh` on a schedule. Served by `refinery serve` (a process runner;
`prefect.yaml` holds the same deployments for a work pool).

One Prefect server is shared by every pipeline of a team, so each pipeline's deployments are
named after the pipeline (`curate/<name>`, `refresh/<name>`, `backfill/<name>`: Prefect names a
deployment within its flow) and tagged `pipeline:<name>`. A served runner polls only the ids of
the deployments it registered, so with distinct names two pipelines never replace each other's
parameter defaults or pick up each other's runs."""

from __future__ import annotations

from datetime import timedelta

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.backfill import BackfillSpec, backfill
from flows.curate import curate
from flows.param_secrets import sweep_in_background
from flows.refresh import refresh
from tasks.config import STORAGE_KEY_FIELDS, PipelineConfig


def pipeline_tags(name: str) -> list[str]:
    return ["refinery", f"pipeline:{name}"]


def build_deployments(config: PipelineConfig, cron: str | None = "0 3 * * *",
                      interval: int | None = None) -> list[RunnerDeployment]:
    """The three deployments of one named pipeline, ready to serve."""
    if not config.name:
        raise ValueError("the pipeline needs a `name` to be served (it names its deployments on the Prefect server)")
    name, tags = config.name, pipeline_tags(config.name)
    # without the storage keys (serve moved them into its environment): the run form has no
    # field for them, and the server checks parameters against the form's schema
    params = {"config": config.model_dump(mode="json", exclude={"storage": set(STORAGE_KEY_FIELDS)})}
    schedule = {"interval": timedelta(seconds=interval)} if interval else {"cron": cron}
    # Module-path entrypoints: flow runs import `flows.curate` as a package module, which Ray
    # workers can import too (a file-path entrypoint would load it as a bare `curate` module).
    module = {"entrypoint_type": EntrypointType.MODULE_PATH}
    return [
        curate.to_deployment(name=name, parameters=params, **module, tags=tags,
                             description=f"Curate one release of pipeline {name}; edit any parameter in the form."),
        # one refresh at a time: a tick that finds one running is cancelled, the next picks up
        refresh.to_deployment(name=name, parameters=params, tags=tags, **module,
                              concurrency_limit=ConcurrencyLimitConfig(
                                  limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
                              description=f"Scheduled incremental release of pipeline {name} from new input partitions.",
                              **schedule),
        backfill.to_deployment(name=name, parameters={**params, "spec": BackfillSpec().model_dump()},
                               tags=tags, **module,
                               description=f"Curate a list or range of partitions of pipeline {name}, bounded concurrency."),
    ]


def serve_all(config: PipelineConfig, cron: str | None = "0 3 * * *", interval: int | None = None,
              query_seconds: float | None = None) -> None:
    """Serve the pipeline's deployments until stopped; ``query_seconds``: how often the runner
    looks for runs to start (None: Prefect's setting)."""
    deployments = build_deployments(config, cron, interval)
    sweep_in_background(config.name)
    serve(*deployments, query_seconds=query_seconds)
