"""Near-duplicate detection against the exact-Jaccard ground truth of ../shared/data, and the
cross-release behaviour through the real flow."""

from __future__ import annotations

import math
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.dedup import near
from tasks.dedup.minhash import MinHashParams, band_keys, candidate_probability, empty_signature, signatures
from tests.conftest import shared

ID_COLUMN = {"simple_wikipedia": "page_id"}


def _ground_truth_docs() -> tuple[list[str], list[str]]:
    keys = pq.read_table(shared("near_dup_pairs_exact_jaccard/docs_index.parquet")).column("doc_key").to_pylist()
    tables: dict[str, dict[tuple[str, str], str]] = {}
    texts = []
    for key in keys:
        folder, doc_id, column = key.split(":")
        if folder not in tables:
            t = pq.read_table(shared(f"{folder}/{folder}.parquet"))
            idc = ID_COLUMN.get(folder, "id")
            tables[folder] = {}
            for name in t.column_names:
                if name in ("text", "page_text", "main_text", "original", "chosen", "rejected"):
                    for i, x in zip(t.column(idc).to_pylist(), t.column(name).to_pylist(), strict=True):
                        tables[folder][(str(i), name)] = x
        texts.append(tables[folder][(doc_id, column)])
    return keys, texts


def _bounds(probabilities: np.ndarray, sigmas: float = 4.0) -> tuple[float, float, float]:
    """Expected share of pairs that become candidates, from the S-curve alone, and a band of
    ``sigmas`` standard deviations (independent pairs, binomial)."""
    mean = float(probabilities.mean())
    sd = math.sqrt(float((probabilities * (1 - probabilities)).sum())) / len(probabilities)
    return mean, mean - sigmas * sd, mean + sigmas * sd


def _candidates(params: MinHashParams):
    keys, texts = _ground_truth_docs()
    sigs = signatures(pa.array(texts), params)
    bands = band_keys(sigs, params)
    empty = empty_signature(sigs)
    pos = {k: i for i, k in enumerate(keys)}
    pairs = pq.read_table(shared("near_dup_pairs_exact_jaccard/exact_jaccard_pairs.parquet"))
    a = np.array([pos[k] for k in pairs.column("doc_a").to_pylist()])
    b = np.array([pos[k] for k in pairs.column("doc_b").to_pylist()])
    jac = pairs.column("jaccard").to_numpy()
    candidate = (bands[a] == bands[b]).any(axis=1) & ~empty[a] & ~empty[b]
    p = np.array([candidate_probability(j, params.bands, params.rows) for j in jac])
    return jac, candidate, p


def _ingest_ground_truth(tmp_path, release: str, near_dedup: dict):
    """The exact-Jaccard ground truth in three input files (candidate pairs cross shard and
    partition boundaries), ingested with near dedup's map fed from ingest as the flow arranges
    it; the steps are plain functions, run here without Prefect or Ray."""
    from dataclasses import replace

    from flows.curate import start_or_resume, storage_spec
    from tasks.config import InputSpec, PipelineConfig
    from tasks.dedup import near_steps
    from tasks.ingest import plan_shards
    from tasks.stepkit import Feed
    from tasks.steps import ingest_step
    from tests.corpora import write_jsonl

    if not (tmp_path / "in").exists():
        keys, texts = _ground_truth_docs()
        for k in range(3):
            write_jsonl(tmp_path / "in" / f"part-{k}.jsonl",
                        [{"id": key, "text": t} for key, t in zip(keys[k::3], texts[k::3], strict=True)])
    cfg = PipelineConfig(release=release, output=str(tmp_path / release), exact_dedup={"enabled": False},
                         near_dedup={"partitions": 3, "cross_release": False, **near_dedup},
                         inputs=[InputSpec(uri=str(tmp_path / "in"), source="gt")])
    spec = storage_spec(cfg)
    ctx = start_or_resume(spec.open(), cfg, spec)
    shards = plan_shards(ctx.config)
    ctx = replace(ctx, near_partitions=3, feed=Feed("ingest", "near_map", near_steps.map_outputs))
    for s in shards:
        ingest_step(ctx, s, False)
    return ctx, shards, spec


def test_recall_and_false_candidates_follow_the_s_curve():
    """With the ground truth's own shingling (lower-cased \\w+ 5-grams), the share of pairs that
    become candidates must match what the S-curve of the chosen bands predicts."""
    jac, candidate, p = _candidates(MinHashParams(normalization="words"))
    high, low = jac >= 0.8, jac < 0.5
    recall, false = candidate[high].mean(), candidate[low].mean()
    exp_r, lo_r, hi_r = _bounds(p[high])
    exp_f, lo_f, hi_f = _bounds(p[low])
    print(f"\nJ>=0.8: {high.sum()} pairs, recall {recall:.4f} (S-curve {exp_r:.4f}, band {lo_r:.4f}..{hi_r:.4f})")
    print(f"J<0.5: {low.sum()} pairs, candidates {false:.4f} (S-curve {exp_f:.4f}, band {lo_f:.4f}..{hi_f:.4f})")
    assert lo_r <= recall <= hi_r
    assert false <= hi_f


def test_datatrove_normalization_only_raises_similarity():
    """The default (datatrove's) normalization maps digits to 0 and drops diacritics, which
    merges shingles: recall stays at or above the curve; pairs below J 0.5 that differ only in
    numbers (the templated Wikipedia stubs) become candidates, as in datatrove."""
    jac, candidate, p = _candidates(MinHashParams())
    high, low = jac >= 0.8, jac < 0.5
    _, lo_r, _ = _bounds(p[high])
    print(f"\ndatatrove normalization: recall {candidate[high].mean():.4f}, "
          f"J<0.5 candidates {candidate[low].mean():.4f}")
    assert candidate[high].mean() >= lo_r


def test_clusters_of_the_whole_shared_corpus_remove_the_known_duplicates():
    """Through the full map → reduce → components → survivors path (in process): every pair with
    J = 1 ends in one cluster; the stub templates are recognised."""
    params = MinHashParams()
    keys, texts = _ground_truth_docs()
    sigs = signatures(pa.array(texts), params)
    nodes = np.arange(len(texts), dtype=np.int64)
    rows = near.band_table(nodes, sigs, params)
    u, v = near.candidate_edges(rows)
    from tests.graphs import distributed_cc

    labels = distributed_cc(u, v, 3)
    pairs = pq.read_table(shared("near_dup_pairs_exact_jaccard/exact_jaccard_pairs.parquet"))
    pos = {k: i for i, k in enumerate(keys)}
    same = [labels.get(pos[x], pos[x]) == labels.get(pos[y], pos[y]) for x, y in zip(
        pairs.column("doc_a").to_pylist(), pairs.column("doc_b").to_pylist(), strict=True)]
    jac = pairs.column("jaccard").to_numpy()
    same = np.array(same)
    assert same[jac >= 0.999].all()
    print(f"\nclusters: {len(set(labels.values()))}, documents in clusters: {len(labels)}; "
          f"pairs J>=0.8 in one cluster: {same[jac >= 0.8].mean():.4f}")


@pytest.mark.slow
def test_incremental_release_removes_copies_of_the_earlier_release(stack, ray_local, tmp_path):
    """Release 1 from simple_wikipedia; release 2 holds edited copies of release-1 documents
    and new documents: the copies go, naming the release-1 ids; the new ones survive."""
    import random

    from flows.curate import run_curate
    from tasks.config import InputSpec, PipelineConfig
    from tasks.ingest import stable_id
    from tasks.storage import StorageSpec
    from tests.corpora import write_jsonl
    from tests.releases import verify_release

    wiki = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).select(["page_id", "text"])
    rows = [r for r in wiki.to_pylist() if len(r["text"].split()) >= 120]
    rng = random.Random(3)
    rng.shuffle(rows)
    first, new = rows[:400], rows[400:500]
    write_jsonl(tmp_path / "r1" / "wiki.jsonl", first)

    def edit(text: str) -> str:  # about 2% of the words replaced: Jaccard stays near 0.8-0.9
        words = text.split()
        for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
            words[i] = "edited"
        return " ".join(words)

    copies = [{"page_id": f"copy-{r['page_id']}", "text": edit(r["text"]), "of": r["page_id"]} for r in first[:60]]
    write_jsonl(tmp_path / "r2" / "wiki.jsonl", copies + new)
    root = str(tmp_path / "corpus")

    def cfg(release, folder):
        # no single-task shortcut: reduce per partition and the distributed large-star /
        # small-star rounds run
        return PipelineConfig(release=release, output=root,
                              near_dedup={"partitions": 2, "single_task_max_rows": 0},
                              inputs=[InputSpec(uri=str(tmp_path / folder), source="wiki",
                                                columns={"id": "page_id"})])

    m1 = run_curate(cfg("rel-1", "r1"))
    m2 = run_curate(cfg("rel-2", "r2"))
    storage = StorageSpec(root).open()
    verify_release(storage, m1)
    verify_release(storage, m2)
    assert m2["parent"] == "rel-1"
    near_m = m2["dedup"]["near"]
    assert near_m["index"]["earlier_releases"] == ["rel-1"]
    rejects = pa.concat_tables([storage.read_parquet(f["path"]) for f in m2["outputs"]["rejects"]
                                if "/near_dedup/" in f["path"]])
    dropped = dict(zip(rejects.column("id").to_pylist(), rejects.column("survivor_id").to_pylist(), strict=True))
    details = rejects.column("detail").to_pylist()
    published = set()
    for f in m2["outputs"]["documents"]:
        published |= set(storage.read_parquet(f["path"], columns=["id"]).column("id").to_pylist())
    caught = [c for c in copies if stable_id("wiki", c["page_id"], "") in dropped]
    # each copy shares ~0.8-0.9 of its 5-grams with its original: the S-curve expects > 0.9 found
    assert len(caught) >= 0.85 * len(copies)
    for c in caught:
        assert dropped[stable_id("wiki", c["page_id"], "")] == stable_id("wiki", c["of"], "")
    assert all(d.endswith("in release rel-1") for d in details)
    new_ids = {stable_id("wiki", r["page_id"], "") for r in new}
    assert len(new_ids & published) >= 0.97 * len(new_ids)
    assert near_m["matched_earlier_releases"] == len(dropped)
    assert near_m["index"]["after"]["releases"] == 2
    assert near_m["components"] == "distributed" and near_m["cc_rounds"] >= 1
    _check_prefect_runs(m2)


def _check_prefect_runs(manifest):
    import collections

    from tests.releases import expected_task_runs, prefect_runs

    _, task_runs = prefect_runs(manifest["flow_run_id"])
    by_stage = collections.Counter(t["name"].rsplit("-", 1)[0] for t in task_runs)
    assert by_stage == expected_task_runs(manifest, shards=1)


def test_single_task_and_distributed_global_phases_agree(tmp_path, monkeypatch):
    """The two ways the flow runs the global phase (one task for small runs, its partitions
    one after another or in two threads; reduce per partition and large-star / small-star
    rounds for large ones) choose the same survivors, clusters and drops. The steps are plain functions: they run here without Prefect or Ray."""
    from tasks.dedup import near_steps

    decisions = {}
    threads_seen = set()
    reduce_step = near_steps.reduce_step

    def watched_reduce(*args):
        threads_seen.add(threading.current_thread().name)
        return reduce_step(*args)

    for release, limit, threads in (("single", 20_000_000, 1), ("threads", 20_000_000, 2), ("spread", 0, 1)):
        ctx, shards, spec = _ingest_ground_truth(tmp_path, release, {"single_task_max_rows": limit})
        view = {"compacted": None, "compacted_partitions": 0, "covers": [], "segments": {}}
        if limit:
            if threads > 1:
                monkeypatch.setattr(near_steps, "reduce_step", watched_reduce)
            near_steps.single_task_step(ctx, view, threads)
            monkeypatch.setattr(near_steps, "reduce_step", reduce_step)
        else:
            for p in range(3):
                near_steps.reduce_step(ctx, p, view)
            rounds = 0
            while sum(near_steps.cc_step(ctx, rounds, p, "large")["violations"] for p in range(3)):
                for p in range(3):
                    near_steps.cc_step(ctx, rounds + 1, p, "small")
                rounds += 2
            for p in range(3):  # every partition's members are routed before any survivor step reads them
                near_steps.finalize_step(ctx, rounds, p)
            for p in range(3):
                near_steps.survivor_step(ctx, p)
        storage = spec.open()
        files = storage.list(f"state/work/{release}/near_dedup_decisions", ".parquet")
        t = pa.concat_tables([storage.read_parquet(f) for f in files])
        clusters = {}
        for node, cluster in zip(t.column("node").to_pylist(), t.column("cluster").to_pylist(), strict=True):
            clusters.setdefault(cluster, set()).add(node)
        decisions[release] = (
            sorted(zip(t.column("id").to_pylist(), [s or "" for s in t.column("survivor_id").to_pylist()],
                       strict=True)),
            sorted(sorted(c) for c in clusters.values()))
    assert decisions["single"] == decisions["spread"] == decisions["threads"]
    assert sum(s != "" for _, s in decisions["single"][0]) > 100  # the ground truth has many duplicates
    # the threaded run's three partitions were reduced in two threads of the pool, not here
    if len(os.sched_getaffinity(0)) > 1:
        assert len(threads_seen) == 2 and all(n.startswith("refinery-step") for n in threads_seen), threads_seen


def test_publishing_filter_counts_words_and_tokens_as_the_documents_have_them(tmp_path):
    """When near dedup is the release's last map step, its filter counts the kept documents'
    words and the release's tokens in one walk (and the dropped ones' words apart): the
    funnel and each published file's tokens must be what counting the files afresh gives.
    On the exact-Jaccard ground truth (../shared/data/near_dup_pairs_exact_jaccard), which
    drops documents from every shard."""

    from tasks.dedup import near_steps
    from tasks.schema import word_counts
    from tasks.stepkit import read_work
    from tasks.tokens import release_counts

    ctx, shards, spec = _ingest_ground_truth(tmp_path, "r", {})
    near_steps.single_task_step(ctx, {"compacted": None, "compacted_partitions": 0, "covers": [], "segments": {}})
    storage = spec.open()
    dropped = 0
    for s in shards:
        work = read_work(storage, ctx, "ingest", s.name)
        marker = near_steps.filter_step(ctx, s.name, "ingest", True)
        line = marker["funnel"]
        dropped += line["docs_in"] - line["docs_out"]
        assert line["tokens_in"] == pc_sum(word_counts(work.column("text")))
        published = [storage.read_parquet(f["path"]) for f in marker["documents"]]
        assert line["tokens_out"] == sum(pc_sum(word_counts(t.column("text"))) for t in published)
        tokens, name = release_counts(ctx.config.tokenizer, pa.concat_tables(published).column("text"))
        assert marker["tokenizer"] == name
        # the suite installs the llm extra: the default tokenizer must load, so tokens are counted
        assert tokens is not None, name
        assert sum(f["model_tokens"] for f in marker["documents"]) == int(tokens.sum())
        assert sum(f["tokens"] for f in marker["documents"]) == line["tokens_out"]
    assert dropped > 100  # the ground truth has many duplicates: the rejects' words were counted


def pc_sum(values: pa.Array) -> int:
    """The sum of an integer column, as a Python int."""
    return int(pa.compute.sum(values).as_py() or 0)


def _candidate_edges_by_lexsort(rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The definition, written the slow way: rows sorted by (band, key, node), each bucket's
    members tied to its first (smallest) node, distinct pairs by ``np.unique``."""
    band, key, node = (rows.column(c).to_numpy() for c in ("band", "key", "node"))
    order = np.lexsort((node, key, band))
    band, key, node = band[order], key[order], node[order]
    new_group = np.ones(len(node), dtype=bool)
    new_group[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    gid = np.cumsum(new_group) - 1
    sizes = np.bincount(gid)
    has_new = np.bincount(gid, weights=(node < near.OLD_BIT)) > 0
    head = node[np.flatnonzero(new_group)][gid]
    sel = (sizes[gid] > 1) & has_new[gid] & (node != head)
    if not sel.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.stack([node[sel], head[sel]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


@pytest.mark.parametrize("collide", [False, True])
def test_candidate_edges_are_the_buckets_edges_whichever_way_they_are_sorted(monkeypatch, collide):
    """candidate_edges sorts one mixed 64-bit key per bucket and one hash per pair; on the
    band rows of the exact-Jaccard ground truth (with some documents marked as an earlier
    release's, whose buckets count only with a document of this run) and on random rows with
    few keys, its edges are the definition's, also when every mixed key and pair hash is made
    to collide (``collide``: both multipliers 0, so buckets of one key in two bands share a
    sort key and pairs with one ``v`` share a hash) and the exact sort must take over."""
    if collide:
        monkeypatch.setattr(near, "_BAND_MIX", np.uint64(0))
        monkeypatch.setattr(near, "_PAIR_MIX", np.uint64(0))
    params = MinHashParams()
    _, texts = _ground_truth_docs()
    nodes = np.arange(len(texts), dtype=np.int64)
    nodes[::5] |= near.OLD_BIT
    real = near.band_table(nodes, signatures(pa.array(texts), params), params)
    rng = np.random.default_rng(3)
    n = 30_000
    few = pa.table({"band": rng.integers(0, 14, n).astype(np.int32),
                    "key": rng.integers(0, 40, n).astype(np.uint64),
                    "node": rng.permutation(n).astype(np.int64) | np.where(rng.random(n) < 0.3, near.OLD_BIT, 0)},
                   schema=near.BAND_SCHEMA)
    for rows in (real, few):
        u, v = near.candidate_edges(rows)
        ref_u, ref_v = _candidate_edges_by_lexsort(rows)
        assert len(ref_u) > 100
        assert np.array_equal(u, ref_u) and np.array_equal(v, ref_v)
