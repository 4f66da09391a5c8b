"""The ProX stage's declaration: one task per shard, with the model actor when its writer needs one."""

from __future__ import annotations

from tasks.errors import ReleaseError
from tasks.prox import stage
from tasks.prox.learned import LearnedModelError
from tasks.prox.steps import prox_step
from tasks.registry import Stage, register


def _check(config) -> None:
    try:
        stage.check_writer(config)  # a missing or foreign model file fails before any work
    except LearnedModelError as exc:
        raise ReleaseError(str(exc)) from None


STAGE = register(Stage(
    name="prox", kind="model", rank=50, config_key="prox", step=prox_step, check=_check,
    uses_model=lambda config: stage.writer_kind(config) not in stage.LOCAL_WRITERS,
    reads="the previous stage's work table", writes="work table; rejects/prox; attributes/prox; changes/prox",
    summary="per-document programs (keep/drop, remove_lines, normalize) by a learned, heuristic or model writer"))
