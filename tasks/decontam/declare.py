"""The decontaminate stage's declaration: one task per shard against the evaluation sets'
n-gram indexes (built once per set version, stored under the corpus root)."""

from __future__ import annotations

from typing import Any

from tasks.decontam.core import DecontamError, DecontamIndex, decontaminate, load_indexes
from tasks.errors import ReleaseError
from tasks.registry import Stage, register
from tasks.stepkit import RunContext, once, read_work, rewrite_result, sum_figures, write_result
from tasks.storage import Storage, StorageSpec

NAME = "decontaminate"
_LOADED: dict[str, DecontamIndex] = {}  # per process and release: a worker loads each index once per run


def _index(config: Any, storage: Storage) -> DecontamIndex:
    # the release in the key: a long-lived worker re-reads the sets (and their sha256) next run
    key = "\x00".join([str(config.release), config.decontaminate.model_dump_json(), storage.url()])
    if key not in _LOADED:
        _LOADED[key] = load_indexes(config.decontaminate, storage)
    return _LOADED[key]


def check(config: Any) -> None:
    """Before any work: every evaluation set readable, with its columns and rows; its index
    built (or found) in the corpus root."""
    if not config.decontaminate.eval_sets:
        raise ReleaseError("stages lists decontaminate but decontaminate.eval_sets names no evaluation set")
    if not config.output:
        return  # the flow names the missing root itself
    try:
        _index(config, StorageSpec(config.output, config.storage.endpoint_url, config.storage.region).open())
    except DecontamError as exc:
        raise ReleaseError(str(exc)) from None


def decontaminate_step(ctx: RunContext, shard: str, prev_stage: str, final: bool) -> dict[str, Any]:
    cfg = ctx.config.decontaminate

    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, prev_stage, shard)
        index = _index(ctx.config, storage)
        res = decontaminate(work, index, cfg)
        result = rewrite_result(NAME, work, res.new_text.to_pylist(), res.keep, res.reasons, res.details,
                                res.attributes)
        out = write_result(storage, ctx, NAME, shard, result, final)
        return {**out, "decontaminate": {**res.figures, "eval_sets": index.manifest()}}

    return once(ctx, NAME, shard, compute)


def figures(ctx: RunContext, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's `decontaminate` section: every evaluation set (URL, sha256, n-grams, index)
    and the documents each caught."""
    cfg = ctx.config.decontaminate
    out = sum_figures([{k: v for k, v in m["decontaminate"].items() if k != "eval_sets"} for m in markers])
    return {"n": cfg.n, "mode": cfg.mode, "eval_sets": markers[0]["decontaminate"]["eval_sets"] if markers else [],
            **out}


STAGE = register(Stage(
    name=NAME, kind="map", rank=35, config_key="decontaminate", step=decontaminate_step, check=check,
    enabled=lambda config: bool(config.decontaminate.eval_sets), figures=figures,
    reads="the previous stage's work table; the evaluation sets' n-gram indexes",
    writes="work table; rejects/decontaminate; attributes/decontaminate; state/decontam_index",
    summary="13-gram overlap with named evaluation sets: drop the document or cut the spans"))
