"""The quality stage's steps called as plain functions (no Prefect, no Ray) on real web text:
tag + rules per shard, the combined score it writes, and the two passes of top-X% thresholds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import layout
from tasks.ingest import stable_id
from tasks.quality import stage
from tasks.quality.classifier import auc
from tasks.quality.steps import quality_step, threshold_filter_step, threshold_value_step
from tests.builders import ingest_one, pipeline_config, run_context, shared_input
from tests.conftest import shared

CC = "cc_web_samples/cc_web_samples.parquet"


def _ingest_and_quality(tmp_path: Path, quality: dict, final: bool = False):
    """The ingest and quality shard steps on cc_web_samples: the context, the marker, the
    attribute table and the shared file's ids and collections."""
    cfg = pipeline_config(tmp_path / "corpus", shared_input(CC, "cc", id="id", metadata=["collection"]),
                          exact_dedup={"enabled": False}, near_dedup={"enabled": False}, quality=quality)
    ctx = run_context(cfg)
    shard, _ = ingest_one(ctx)
    result = quality_step(ctx, shard.name, "ingest", final)
    storage = ctx.storage.open()
    attrs = pa.concat_tables([storage.read_parquet(f["path"]) for f in result["files"]
                              if "/attributes/quality/" in f["path"]])
    docs = pq.read_table(shared(CC), columns=["id", "collection"])
    return ctx, shard, result, attrs, docs


def _rejects(ctx, marker: dict, stage_name: str) -> pa.Table:
    storage = ctx.storage.open()
    parts = [storage.read_parquet(f["path"]) for f in marker["files"] if f"/rejects/{stage_name}/" in f["path"]]
    return pa.concat_tables(parts) if parts else pa.table({"id": pa.array([], pa.string())})


def test_the_stage_writes_the_score_for_every_document_and_it_ranks_unseen_web_text(tmp_path):
    """On cc_web_samples (never used to train or fit the score): every document gets a score
    in [0, 1]; clean web prose (C4, CCNet head, RealNews) ranks above menu-heavy raw pages, and
    non-English pages sit at the bottom."""
    _, _, result, attrs, docs = _ingest_and_quality(tmp_path, {"enabled": True})
    assert stage.COMBINED in attrs.column_names
    scores = dict(zip(attrs.column("id").to_pylist(), stage.rule_values(attrs.column(stage.COMBINED)), strict=True))
    assert len(scores) == docs.num_rows and all(0 <= s <= 1 for s in scores.values())
    assert sum(result["histograms"][stage.COMBINED]) == docs.num_rows
    by_collection: dict[str, list[float]] = {}
    for doc_id, coll in zip(docs.column("id").to_pylist(), docs.column("collection").to_pylist(), strict=True):
        by_collection.setdefault(coll.split(" ")[0], []).append(scores[stable_id("cc", doc_id, "")])
    clean = by_collection["c4_en"] + by_collection["ccnet_head"] + by_collection["realnews"]
    menus = by_collection["cc_raw_text"] + [s for c, v in by_collection.items() if c == "warc_html_to_text" for s in v
                                            if s > 0.05]  # the English 2024 crawl pages (others are ja/zh)
    foreign = by_collection["stackexchange"]  # Spanish
    ranking = auc(np.array(clean + menus), np.array([1] * len(clean) + [0] * len(menus)))
    print(f"medians: clean {np.median(clean):.3f}, menu-heavy {np.median(menus):.3f}, Spanish "
          f"{np.median(foreign):.3f}; AUC clean vs menu-heavy {ranking:.3f}")
    assert np.median(clean) > np.median(menus) > np.median(foreign)
    assert ranking >= 0.8
    # the score has no language input (language is the language-ID tagger's rule): Spanish Q&A
    # pages sit at the bottom for their symbols and their unarticle-like words
    assert np.median(foreign) < 0.1


def test_min_score_makes_the_score_a_filter(tmp_path):
    """Off by default; with ``min_score`` a rule named ``combined`` drops what scores below it
    (here the only rule: the language and heuristic taggers only tag)."""
    tag_only = {"drop": False}
    _, _, result, attrs, docs = _ingest_and_quality(tmp_path, {
        "enabled": True, "combined": {"min_score": 0.5}, "language_id": {"keep": []}, "gopher_repetition": tag_only,
        "gopher_quality": tag_only, "c4_quality": tag_only, "fineweb_quality": tag_only})
    values = stage.rule_values(attrs.column(stage.COMBINED))
    below = int((values < 0.5).sum())
    assert 0 < below < docs.num_rows
    assert result["funnel"]["dropped"] == {"combined": below}
    assert result["funnel"]["docs_out"] == docs.num_rows - below


def test_default_rules_drop_foreign_pages_with_reasons_and_keep_the_rest(tmp_path):
    """Default taggers and rules: the 29 Japanese ClueWeb pages are rejected for their
    language (detail ``ja``), every rejected row carries a reason the funnel counts, the
    attribute table has one row per document seen, and the published documents plus the
    rejects are exactly the ingested ones."""
    ctx, shard, result, attrs, docs = _ingest_and_quality(tmp_path, {"enabled": True}, final=True)
    storage = ctx.storage.open()
    ingested = storage.read_parquet(layout.work_path(ctx.release, "ingest", shard.name))
    rejects = _rejects(ctx, result, "quality")
    kept = pa.concat_tables([storage.read_parquet(f["path"]) for f in result["documents"]])

    assert attrs.num_rows == ingested.num_rows == docs.num_rows
    assert sorted(attrs.column("id").to_pylist()) == sorted(ingested.column("id").to_pylist())
    for name in ("quality__lid__lang", "quality__lid__score", stage.COMBINED):
        assert name in attrs.column_names and attrs.column(name).null_count < attrs.num_rows
    assert sorted(kept.column("id").to_pylist() + rejects.column("id").to_pylist()) == \
        sorted(ingested.column("id").to_pylist())
    assert result["funnel"]["docs_in"] == ingested.num_rows
    assert result["funnel"]["docs_out"] == kept.num_rows
    assert dict(Counter(rejects.column("reason").to_pylist())) == result["funnel"]["dropped"]
    assert rejects.column("reason").null_count == 0

    collection = {stable_id("cc", i, ""): c for i, c in zip(docs.column("id").to_pylist(),
                                                          docs.column("collection").to_pylist(), strict=True)}
    japanese = {d for d, c in collection.items() if c.startswith("warc_html_to_text (ClueWeb")}
    assert len(japanese) == 29
    why = dict(zip(rejects.column("id").to_pylist(),
                   zip(rejects.column("reason").to_pylist(), rejects.column("detail").to_pylist(), strict=True),
                   strict=True))
    assert all(why[d] == ("language", "ja") for d in japanese)
    assert result["languages"]["ja"] >= 29
    assert not japanese & set(kept.column("id").to_pylist())
    assert storage.read_json(layout.marker_path(ctx.release, "quality", shard.name))["funnel"] == result["funnel"]


def test_top_percent_threshold_keeps_that_share_of_the_kept_documents(tmp_path):
    """Thresholds in two passes: the shard step stores each kept document's value, the global
    step picks the value that keeps the top 40%, the filter step drops what falls below it
    with the threshold's name and the value in its detail."""
    ctx, shard, result, _, _ = _ingest_and_quality(tmp_path, {
        "enabled": True, "thresholds": [{"name": "top40", "attribute": stage.COMBINED, "keep_top_percent": 40}]})
    assert "documents" not in result or not result["documents"]  # kept documents wait for the threshold
    passed = result["funnel"]["docs_out"]
    values = threshold_value_step(ctx, [shard.name])
    (t,) = values["thresholds"]
    assert t["name"] == "top40" and t["docs_in"] == passed
    assert 0.4 * passed <= t["kept"] < 0.4 * passed + 5  # ties at the cut may add a few

    marker = threshold_filter_step(ctx, shard.name, values["thresholds"], True)
    storage = ctx.storage.open()
    kept = pa.concat_tables([storage.read_parquet(f["path"]) for f in marker["documents"]])
    rejects = _rejects(ctx, marker, "quality_threshold")
    assert kept.num_rows == t["kept"] and rejects.num_rows == passed - t["kept"]
    assert marker["funnel"]["dropped"] == {"top40": passed - t["kept"]}
    assert all(d.startswith(f"{stage.COMBINED} = ") and f"below {t['value']}" in d
               for d in rejects.column("detail").to_pylist())
