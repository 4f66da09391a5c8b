"""One way for tests to build what a step needs: a typed pipeline config from keyword
overrides, an input over a shared data set, a run context, and the ingest step's shard.
Not a test module (tests import it; test modules never import each other)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.config import InputSpec, PipelineConfig
from tasks.ingest import Shard, plan_shards
from tasks.stepkit import Feed, RunContext
from tasks.steps import ingest_step
from tasks.storage import StorageSpec
from tests.conftest import shared


def shared_input(name: str, source: str, **columns: Any) -> InputSpec:
    """An input over ``../shared/data/<name>`` (a missing file fails the test), with its column map."""
    return InputSpec(uri=str(shared(name)), source=source, columns=columns)


def pipeline_config(output: str | Path, *inputs: InputSpec, release: str = "r1", **overrides: Any) -> PipelineConfig:
    """A validated PipelineConfig: ``overrides`` are its fields (``stages=[...]``,
    ``quality={"enabled": True}``, ...), checked as the pipeline file's are (an unknown field fails)."""
    return PipelineConfig.model_validate({"release": release, "output": str(output), "inputs": list(inputs),
                                          **overrides})


def run_context(cfg: PipelineConfig, **changes: Any) -> RunContext:
    """The run context of a first release of ``cfg`` (no parent), created now."""
    assert cfg.release and cfg.output, "a step's run context needs the config's release and output"
    ctx = RunContext(cfg.release, datetime.now(UTC).isoformat(), None, StorageSpec(cfg.output), cfg)
    return replace(ctx, **changes) if changes else ctx


def ingest_one(ctx: RunContext, final: bool = False, feed: Feed | None = None) -> tuple[Shard, dict[str, Any]]:
    """The ingest step on the config's one shard, as the flow runs it: the shard and the step's marker."""
    (shard,) = plan_shards(ctx.config)
    return shard, ingest_step(replace(ctx, feed=feed) if feed is not None else ctx, shard, final)
