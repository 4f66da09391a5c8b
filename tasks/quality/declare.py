"""The quality stage's declaration: tag + rules per shard; top-X% thresholds as a global pass."""

from __future__ import annotations

from typing import Any

from tasks.quality import stage, steps
from tasks.registry import Stage, StageRun, register


def _thresholds(config: Any) -> bool:
    return bool(config.quality.thresholds)


def plan(run: StageRun) -> None:
    ctx, names = run.ctx, run.names
    run.map(steps.quality_step, [(n, (ctx, n, run.prev, run.final)) for n in names], "quality")
    if _thresholds(ctx.config):
        values = run.map(steps.threshold_value_step, [("all", (ctx, names))], "quality_threshold_values")
        run.map(steps.threshold_filter_step, [(n, (ctx, n, values[0]["thresholds"], run.final)) for n in names],
                "quality_threshold")


def task_runs(manifest: dict, shards: int, ok: int) -> dict[str, int]:
    out = {"quality": ok}
    if manifest["quality"]["thresholds"]:
        out.update(quality_threshold_values=1, quality_threshold=ok)
    return out


STAGE = register(Stage(
    name="quality", kind="map", rank=40, config_key="quality", plan=plan, task_runs=task_runs,
    outputs=lambda config: ["quality", "quality_threshold"] if _thresholds(config) else ["quality"],
    waves=lambda config: 1 + 2 * _thresholds(config),
    check=lambda config: stage.stage_rules(config.quality),  # unknown names fail before any work starts
    reads="the previous stage's work table", writes="work table; rejects/quality(_threshold); attributes/quality",
    summary="datatrove taggers, fastText language ID and classifier, combined score, rules; top-X% thresholds"))
