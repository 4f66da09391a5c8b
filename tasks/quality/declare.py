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
    if ctx.config.quality.evaluate:
        run.map(steps.evaluate_step, [("all", (ctx,))], "quality_evaluation")


def task_runs(manifest: dict, shards: int, ok: int) -> dict[str, int]:
    out = {"quality": ok}
    if manifest["quality"]["thresholds"]:
        out.update(quality_threshold_values=1, quality_threshold=ok)
    if manifest["quality"].get("evaluation"):
        out["quality_evaluation"] = 1
    return out


def _check(config: Any) -> None:
    """Before any work: rule names known; label files readable with binary labels."""
    stage.stage_rules(config.quality)
    if config.quality.evaluate:
        from tasks.errors import ReleaseError
        from tasks.quality.labels import LabelError, read_labels

        try:
            read_labels(config.quality.evaluate, endpoint_url=config.storage.endpoint_url)
        except (LabelError, FileNotFoundError, ValueError) as exc:
            raise ReleaseError(f"quality.evaluate: {exc}") from None


STAGE = register(Stage(
    name="quality", kind="map", rank=40, config_key="quality", plan=plan, task_runs=task_runs,
    outputs=lambda config: ["quality", "quality_threshold"] if _thresholds(config) else ["quality"],
    waves=lambda config: 1 + 2 * _thresholds(config) + bool(config.quality.evaluate),
    check=_check,
    reads="the previous stage's work table", writes="work table; rejects/quality(_threshold); attributes/quality",
    summary="datatrove taggers, fastText language ID and classifier, combined score, rules; top-X% thresholds"))
