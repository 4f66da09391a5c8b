"""Stage steps called as plain functions (no Prefect, no Ray), the way the flow chains them:
each reads the work table the one before it left, and near dedup's signature map runs inside
whichever step precedes it (the run context's feed)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pyarrow.parquet as pq

from tasks import layout
from tasks.config import InputSpec, PipelineConfig
from tasks.dedup import near_steps
from tasks.ingest import plan_shards
from tasks.prox.steps import prox_step
from tasks.stepkit import Feed, RunContext
from tasks.steps import ingest_step
from tasks.storage import StorageSpec
from tests.conftest import shared

PAGES = "web_pages_scrapinghub/web_pages_scrapinghub.parquet"
EMPTY_VIEW = {"compacted": None, "compacted_partitions": 0, "covers": [], "segments": {}}


def _near_release(tmp_path, order: list[str]) -> tuple[dict, list[tuple[str, str]], dict]:
    """Run `order` (ingest, [prox,] near_dedup) step by step; the near dedup filter's marker,
    the (dropped, survivor) source-id pairs, and the markers of the step before near dedup."""
    root = str(tmp_path / "-".join(order))
    cfg = PipelineConfig(release="r", output=root, stages=order, near_dedup={"cross_release": False},
                         inputs=[InputSpec(uri=str(shared(PAGES)), source="pages",
                                           columns={"text": "page_text", "id": "id", "metadata": "none"})],
                         **({"prox": {"writer": "learned"}} if "prox" in order else {}))
    ctx = RunContext("r", datetime.now(UTC).isoformat(), None, StorageSpec(root), cfg)
    (shard,) = plan_shards(cfg)
    before_near = order[order.index("near_dedup") - 1]
    feed = Feed(before_near, "near_map", near_steps.map_outputs)
    before = ingest_step(replace(ctx, feed=feed if before_near == "ingest" else None), shard, False)
    if before_near == "prox":
        before = prox_step(replace(ctx, feed=feed), shard.name, "ingest", False)
    near_steps.single_task_step(ctx, EMPTY_VIEW)
    marker = near_steps.filter_step(ctx, shard.name, before_near, True)
    storage = ctx.storage.open()
    ingested = storage.read_parquet(layout.work_path("r", "ingest", shard.name))
    source_id = dict(zip(ingested.column("id").to_pylist(), ingested.column("source_id").to_pylist(), strict=True))
    pairs = []
    for f in marker["files"]:
        if "/rejects/near_dedup/" in f["path"]:
            t = storage.read_parquet(f["path"])
            pairs += [(source_id[d], source_id[s]) for d, s in zip(t.column("id").to_pylist(),
                                                                   t.column("survivor_id").to_pylist(), strict=True)]
    return marker, pairs, before


def test_near_dedup_maps_inside_the_step_before_it_and_refined_pages_keep_distinct_articles(tmp_path):
    """On real news and blog pages (hand-marked article text), near dedup of the raw page
    text merges pages of different articles that share a site's menus and footers; after ProX
    refined them, it merges no two different articles."""
    gold = dict(zip(*pq.read_table(shared(PAGES), columns=["id", "gold_text"]).to_pydict().values(), strict=True))

    raw, raw_pairs, ingest_marker = _near_release(tmp_path, ["ingest", "near_dedup"])
    assert ingest_marker["near_map"]["docs"] == raw["funnel"]["docs_in"] == 181
    false_merges = [(d, s) for d, s in raw_pairs if gold[d].strip() != gold[s].strip()]
    assert false_merges, "the raw pages of two different articles were expected to collide"

    refined, refined_pairs, prox_marker = _near_release(tmp_path, ["ingest", "prox", "near_dedup"])
    # the signatures are those of the refined text, made inside the ProX step for what it kept
    assert prox_marker["near_map"]["docs"] == prox_marker["funnel"]["docs_out"] == refined["funnel"]["docs_in"]
    assert prox_marker["funnel"]["modified"] > 0
    assert [(d, s) for d, s in refined_pairs if gold[d].strip() != gold[s].strip()] == []
