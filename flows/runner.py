"""The orchestration side of a stage: one Prefect task run per shard on Ray, the model actor,
and the run's markers. Stage planners (``tasks/**/declare.py``) see only :class:`StageRun`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from prefect import Task

from flows.model_actor import ActorService, start_actor, stop_actor
from tasks.config import ExecutionConfig
from tasks.errors import ReleaseError
from tasks.llm.client import CompletionService
from tasks.parallel import run_group, shard_map, shard_task
from tasks.stepkit import RunContext

_TASKS: dict[tuple[Callable[..., Any], str], Task] = {}


def task_for(step: Callable[..., dict[str, Any]], name: str) -> Task:
    """One Prefect task per (step function, name), made once per process."""
    key = (step, name)
    if key not in _TASKS:
        _TASKS[key] = shard_task(step, name)
    return _TASKS[key]


def checked(result: tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Past ingest there is no bad input left to tolerate: any failure stops the release."""
    results, failures = result
    if failures:
        raise ReleaseError(f"{failures[0]['stage']} shard {failures[0]['shard']} failed: {failures[0]['error']}")
    return list(results.values())


@dataclass
class StageRunner:
    """The :class:`tasks.registry.StageRun` of one stage of one release."""

    ctx: RunContext
    prev: str
    final: bool
    shards: list[Any]
    names: list[str]
    markers: dict[str, list[dict[str, Any]]]
    failures: list[dict[str, Any]]
    execution: ExecutionConfig
    logger: Any
    labels: list[str] = field(default_factory=list)  # every label this stage mapped, in order

    def map_tolerant(self, step: Callable[..., dict[str, Any]], calls: Sequence[tuple[str, tuple[Any, ...]]],
                     label: str, task_name: str | None = None, groups: Sequence[Sequence[int]] | None = None,
                     ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        self.labels.append(label)
        name = task_name or label
        if groups is not None:
            # the manifest says how many task runs a grouped step made (tasks.registry.expected_task_runs)
            self.markers.setdefault("task_groups", []).append(
                {"label": label, "task_runs": sum(1 for g in groups if g), "shards": len(calls)})
        return shard_map(task_for(step, name), calls, self.execution, label, groups=groups,
                         group_task=task_for(run_group, name) if groups is not None else None,
                         step_fn=step if groups is not None else None)

    def map(self, step: Callable[..., dict[str, Any]], calls: Sequence[tuple[str, tuple[Any, ...]]],
            label: str, task_name: str | None = None, groups: Sequence[Sequence[int]] | None = None,
            ) -> list[dict[str, Any]]:
        out = checked(self.map_tolerant(step, calls, label, task_name, groups))
        self.markers[label] = out
        return out

    def workers(self) -> int:
        """The CPUs of the run's Ray cluster (1 without Ray): how many tasks run at once."""
        return max(1, int(ray.cluster_resources().get("CPU", 1))) if ray.is_initialized() else 1

    def with_model(self, run: Callable[[CompletionService | None], Any]) -> Any:
        """Run a model-backed stage with the run's model actor (loaded once, shared by every
        shard task), stopping the actor afterwards."""
        if not ray.is_initialized():
            return run(None)
        name, handle = start_actor(self.ctx.release, self.ctx.config.llm)
        try:
            return run(ActorService(name))
        finally:
            stop_actor(name)
            del handle


def run_map_stage(run: StageRunner, step: Callable[..., dict[str, Any]], label: str, uses_model: bool) -> None:
    """The default planner of a map stage: ``step(ctx, shard, prev, final[, actor])`` per shard."""
    def calls(actor: CompletionService | None) -> list[tuple[str, tuple[Any, ...]]]:
        return [(n, (run.ctx, n, run.prev, run.final, actor) if uses_model else (run.ctx, n, run.prev, run.final))
                for n in run.names]

    if uses_model:
        run.with_model(lambda actor: run.map(step, calls(actor), label))
    else:
        run.map(step, calls(None), label)
