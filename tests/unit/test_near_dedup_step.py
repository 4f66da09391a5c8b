"""Near dedup's steps called as plain functions (no Prefect, no Ray), the way the flow chains
them: each reads the work table the one before it left, and near dedup's signature map runs
inside whichever step precedes it (the run context's feed)."""

from __future__ import annotations

from dataclasses import replace

import pyarrow.parquet as pq

from tasks import layout
from tasks.dedup import near_steps
from tasks.prox.steps import prox_step
from tasks.stepkit import Feed
from tests.builders import ingest_one, pipeline_config, run_context, shared_input
from tests.conftest import shared

PAGES = "web_pages_scrapinghub/web_pages_scrapinghub.parquet"
EMPTY_VIEW = {"compacted": None, "compacted_partitions": 0, "covers": [], "segments": {}}


def _near_release(tmp_path, order: list[str]) -> tuple[dict, list[tuple[str, str]], dict]:
    """Run `order` (ingest, [prox,] near_dedup) step by step; the near dedup filter's marker,
    the (dropped, survivor) source-id pairs, and the markers of the step before near dedup."""
    cfg = pipeline_config(tmp_path / "-".join(order),
                          shared_input(PAGES, "pages", text="page_text", id="id", metadata="none"),
                          release="r", stages=order, near_dedup={"cross_release": False},
                          **({"prox": {"writer": "learned"}} if "prox" in order else {}))
    ctx = run_context(cfg)
    before_near = order[order.index("near_dedup") - 1]
    feed = Feed(before_near, "near_map", near_steps.map_outputs)
    shard, before = ingest_one(ctx, feed=feed if before_near == "ingest" else None)
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
