"""Stage 3, near dedup: the shard- and partition-level steps (see ``tasks/dedup/near.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.dedup import index as nindex
from tasks.dedup import near
from tasks.schema import whole_document_spans, word_counts
from tasks.stepkit import MapResult, RunContext, in_threads, once, read_work, total_words, write_result
from tasks.storage import Storage

STAGE = "near_dedup"


def _sigs_path(ctx: RunContext, shard: str) -> str:
    return layout.work_path(ctx.release, "near_dedup_sigs", shard)


def _concat(storage: Storage, files: list[str], schema: pa.Schema) -> pa.Table:
    tables = [storage.read_parquet(f).cast(schema) for f in files]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _bucket_files(storage: Storage, ctx: RunContext, stage: str, p: int) -> list[str]:
    return storage.list(layout.shuffle_dir(ctx.release, stage, p), ".parquet")


def _attribute_scores(storage: Storage, ctx: RunContext, shard: str, name: str, ids: pa.Array) -> np.ndarray:
    tagger_set = name.split("__", 1)[0]
    files = [f for f in storage.list(layout.attributes_set_dir(ctx.release, tagger_set), ".parquet")
             if f.endswith(f"/part-{shard}.parquet")]
    tables = [storage.read_parquet(f) for f in files]
    if not tables or name not in tables[0].column_names:
        raise ValueError(f"near_dedup.survivor_attribute {name!r}: no such attribute written before near dedup")
    t = pa.concat_tables([x.select(["id", name]) for x in tables])
    score = {i: (spans[0]["score"] if spans else None) for i, spans in zip(
        t.column("id").to_pylist(), t.column(name).to_pylist(), strict=True)}
    return np.array([score.get(i, np.nan) if score.get(i) is not None else np.nan for i in ids.to_pylist()])


def map_outputs(storage: Storage, ctx: RunContext, shard: str, work: pa.Table) -> dict[str, Any]:
    """The map side of near dedup for one shard's documents: signatures, band rows by key
    partition, node priorities by node partition. Runs inside the previous stage's task (it
    already holds the documents), saving a read and a round of task runs."""
    cfg = ctx.config.near_dedup
    params, parts = cfg.params(), ctx.near_partitions
    sig_table, sigs = near.signature_table(work, params)
    storage.write_parquet(_sigs_path(ctx, shard), sig_table, incompressible=True)
    bands = near.band_table(work.column("order").to_numpy(), sigs, params)
    for p, part in near.shuffle(bands, bands.column("key").to_numpy(), parts).items():
        storage.write_parquet(layout.shuffle_path(ctx.release, "near_bands", shard, p), part)
    scores = (_attribute_scores(storage, ctx, shard, cfg.survivor_attribute, work.column("id"))
              if cfg.survivor == "attribute" else None)
    nodes = near.node_table(work, cfg.survivor, scores)
    for p, part in near.shuffle(nodes, nodes.column("node").to_numpy(), parts).items():
        storage.write_parquet(layout.shuffle_path(ctx.release, "near_nodes", shard, p), part)
    return {"docs": work.num_rows, "no_shingles": int(near.empty_signature(sigs).sum())}


def reduce_step(ctx: RunContext, p: int, view: dict[str, Any]) -> dict[str, Any]:
    cfg = ctx.config.near_dedup
    parts = ctx.near_partitions
    name = f"p{p:05d}"

    def compute(storage: Storage) -> dict[str, Any]:
        rows = _concat(storage, _bucket_files(storage, ctx, "near_bands", p), near.BAND_SCHEMA)
        iv = nindex.IndexView.from_dict(view)
        old = nindex.read_partition(storage, iv, p, parts) if iv.releases else near.INDEX_SCHEMA.empty_table()
        allrows = pa.concat_tables([rows, old.select(["band", "key", "node"]).cast(near.BAND_SCHEMA)])
        u, v = near.candidate_edges(allrows)
        candidates = len(u)
        if cfg.verify_threshold is not None and len(u):
            sig_of = _signatures_for(storage, ctx, iv, np.unique(np.concatenate([u, v])))
            keep = near.verify_edges(u, v, sig_of, cfg.verify_threshold)
            u, v = u[keep], v[keep]
        u, v = near.contract(u, v)
        # node info of the earlier-release documents that take part, for the survivor choice
        touched = np.unique(np.concatenate([u, v])) if len(u) else np.zeros(0, np.int64)
        old_nodes = touched[touched >= near.OLD_BIT]
        if len(old_nodes):
            o = old.filter(pc.is_in(old.column("node"), value_set=pa.array(old_nodes)))
            nodes_np, first = np.unique(o.column("node").to_numpy(), return_index=True)
            o = o.take(pa.array(first))
            info = pa.table({"node": o.column("node"), "id": o.column("id"), "release": o.column("release"),
                             "old": pa.array(np.zeros(o.num_rows, np.int8)), "rank": pa.array(np.zeros(o.num_rows)),
                             "order": pa.array(np.zeros(o.num_rows, np.int64))}, schema=near.NODE_SCHEMA)
            for q, part in near.shuffle(info, nodes_np, parts).items():
                storage.write_parquet(layout.shuffle_path(ctx.release, "near_nodes", name, q), part)
        edges = near.both_directions(u, v)
        for q, part in near.shuffle(edges, edges.column("u").to_numpy(), parts).items():
            storage.write_parquet(layout.shuffle_path(ctx.release, "near_cc_r000", name, q), part)
        return {"band_rows": rows.num_rows, "index_rows": old.num_rows, "candidates": candidates, "edges": len(u)}

    return once(ctx, "near_dedup_reduce", name, compute)


def _signatures_for(storage: Storage, ctx: RunContext, iv: nindex.IndexView, nodes: np.ndarray) -> dict[int, np.ndarray]:
    params = ctx.config.near_dedup.params()
    out: dict[int, np.ndarray] = {}
    new = nodes[nodes < near.OLD_BIT]
    for shard in np.unique(new >> 32):
        t = storage.read_parquet(_sigs_path(ctx, f"{int(shard):05d}"))
        t = t.filter(pc.is_in(t.column("order"), value_set=pa.array(new)))
        for n, s in zip(t.column("order").to_pylist(), near.signatures_of(t, params), strict=True):
            out[n] = s
    old = nodes[nodes >= near.OLD_BIT]
    if len(old):
        out.update(nindex.read_signatures(storage, iv, old))
    return out


def cc_step(ctx: RunContext, round_no: int, p: int, kind: str) -> dict[str, Any]:
    """One large-star or small-star round for the nodes of partition ``p``."""
    parts = ctx.near_partitions
    name = f"p{p:05d}"

    def compute(storage: Storage) -> dict[str, Any]:
        e = _concat(storage, _bucket_files(storage, ctx, f"near_cc_r{round_no:03d}", p), near.EDGE_SCHEMA)
        u, v = e.column("u").to_numpy(), e.column("v").to_numpy()
        bad = near.violations(u, v)
        a, b = near.large_star(u, v) if kind == "large" else near.small_star(u, v)
        out = near.both_directions(a, b)
        for q, part in near.shuffle(out, out.column("u").to_numpy(), parts).items():
            storage.write_parquet(layout.shuffle_path(ctx.release, f"near_cc_r{round_no + 1:03d}", name, q), part)
        return {"violations": bad, "edges_in": e.num_rows}

    return once(ctx, f"near_dedup_cc_r{round_no:03d}", name, compute)


def single_task_step(ctx: RunContext, view: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """The whole global phase of a small run in one task: the same steps, one after another
    (each still leaves its own marker, so a rerun resumes where this stopped). Saves the
    per-task cost of a dozen task runs (measured at 0.15-0.4 s each with Prefect on Ray).
    ``threads``: the partitions' steps run in that many threads (the run's other workers wait
    for this task, so their cores are free; at 1M documents the reduce alone was 6 CPU-s on
    one core)."""
    parts = list(range(ctx.near_partitions))
    reduce = in_threads(lambda p: reduce_step(ctx, p, view), parts, threads)
    cc_local_step(ctx)
    in_threads(lambda p: finalize_step(ctx, 1, p), parts, threads)
    return {"reduce": reduce, "survivors": in_threads(lambda p: survivor_step(ctx, p), parts, threads)}


def cc_local_step(ctx: RunContext) -> dict[str, Any]:
    """Connected components of a small candidate graph in one task (scipy), written as the
    converged stars of round 1, which ``finalize_step`` reads like any converged round."""
    parts = ctx.near_partitions

    def compute(storage: Storage) -> dict[str, Any]:
        files = [f for p in range(parts) for f in _bucket_files(storage, ctx, "near_cc_r000", p)]
        e = _concat(storage, files, near.EDGE_SCHEMA)
        a, b = near.contract(e.column("u").to_numpy(), e.column("v").to_numpy())
        out = near.both_directions(a, b)
        for q, part in near.shuffle(out, out.column("u").to_numpy(), parts).items():
            storage.write_parquet(layout.shuffle_path(ctx.release, "near_cc_r001", "local", q), part)
        return {"edges_in": e.num_rows, "nodes": len(a) + int(len(np.unique(b)))}

    return once(ctx, "near_dedup_cc_local", "all", compute)


def finalize_step(ctx: RunContext, round_no: int, p: int) -> dict[str, Any]:
    """Component labels of partition ``p``'s nodes, joined with their node info and routed by
    label to the survivor step."""
    parts = ctx.near_partitions
    name = f"p{p:05d}"

    def compute(storage: Storage) -> dict[str, Any]:
        e = _concat(storage, _bucket_files(storage, ctx, f"near_cc_r{round_no:03d}", p), near.EDGE_SCHEMA)
        nodes, labels = near.labels(e.column("u").to_numpy(), e.column("v").to_numpy())
        info = _concat(storage, _bucket_files(storage, ctx, "near_nodes", p), near.NODE_SCHEMA)
        info = info.filter(pc.is_in(info.column("node"), value_set=pa.array(nodes)))
        uniq, first = np.unique(info.column("node").to_numpy(), return_index=True)
        info = info.take(pa.array(first))
        label_of = labels[np.searchsorted(nodes, uniq)]
        members = info.append_column("cluster", pa.array(label_of, pa.int64()))
        for q, part in near.shuffle(members, label_of, parts).items():
            storage.write_parquet(layout.shuffle_path(ctx.release, "near_members", name, q), part)
        return {"nodes": len(nodes)}

    return once(ctx, "near_dedup_finalize", name, compute)


def survivor_step(ctx: RunContext, p: int) -> dict[str, Any]:
    name = f"p{p:05d}"

    def compute(storage: Storage) -> dict[str, Any]:
        schema = near.NODE_SCHEMA.append(pa.field("cluster", pa.int64()))
        members = _concat(storage, _bucket_files(storage, ctx, "near_members", p), schema)
        decisions = near.choose_survivors(members)
        storage.write_parquet(layout.work_path(ctx.release, "near_dedup_decisions", name), decisions)
        new = decisions.filter(pc.less(decisions.column("node"), int(near.OLD_BIT)))
        dropped = new.filter(pc.is_valid(new.column("survivor_id")))
        sizes = np.bincount(np.minimum(decisions.filter(pc.is_null(decisions.column("survivor_id")))
                                       .column("size").to_numpy(), 64)) if decisions.num_rows else np.zeros(0)
        return {"clusters": int(pc.count_distinct(decisions.column("cluster")).as_py() or 0),
                "dropped": dropped.num_rows,
                "matched_earlier": int(pc.sum(pc.is_valid(dropped.column("survivor_release"))).as_py() or 0),
                "cluster_sizes": {str(k): int(c) for k, c in enumerate(sizes) if c}}

    return once(ctx, "near_dedup_survivors", name, compute)


def filter_step(ctx: RunContext, shard: str, prev_stage: str, final: bool) -> dict[str, Any]:
    cfg = ctx.config.near_dedup
    params, parts = cfg.params(), ctx.near_partitions

    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, prev_stage, shard)
        files = storage.list(layout.work_stage_dir(ctx.release, "near_dedup_decisions"), ".parquet")
        decisions = _concat(storage, [f for f in files if not f.endswith(".done.json")], near.DECISION_SCHEMA)
        mine = decisions.filter(pc.equal(pc.shift_right(decisions.column("node"), 32), int(shard)))
        orders = work.column("order").to_numpy()
        d_nodes = mine.column("node").to_numpy()
        pos = np.searchsorted(np.sort(d_nodes), orders)
        sort_idx = np.argsort(d_nodes)
        hit = np.zeros(len(orders), dtype=bool)
        row = np.full(len(orders), -1)
        if len(d_nodes):
            pos = np.clip(pos, 0, len(d_nodes) - 1)
            hit = d_nodes[sort_idx][pos] == orders
            row[hit] = sort_idx[pos[hit]]
        surv = np.full(len(orders), None, dtype=object)
        surv_rel = np.full(len(orders), None, dtype=object)
        size = np.ones(len(orders), dtype=np.int64)
        cluster = np.full(len(orders), None, dtype=object)
        if hit.any():
            surv[hit] = mine.column("survivor_id").to_numpy(zero_copy_only=False)[row[hit]]
            surv_rel[hit] = mine.column("survivor_release").to_numpy(zero_copy_only=False)[row[hit]]
            size[hit] = mine.column("size").to_numpy()[row[hit]]
            cluster[hit] = mine.column("cluster").to_numpy()[row[hit]].astype(str)
        dropped = np.array([s is not None for s in surv], dtype=bool)
        kept = work.filter(pa.array(~dropped))
        detail = [f"near duplicate of {s}" + (f" in release {r}" if r else "")
                  for s, r in zip(surv[dropped], surv_rel[dropped], strict=True)]
        rejects = _rejects(work.filter(pa.array(dropped)), surv[dropped], detail)
        attrs = pa.table({
            "id": kept.column("id"),
            "near_dedup__minhash__cluster_size": whole_document_spans(
                pc.utf8_length(kept.column("text")), pa.array(size[~dropped], pa.int64())),
            "near_dedup__minhash__cluster": pa.array(
                [c if c is not None else None for c in cluster[~dropped]], pa.string()),
        })
        model_tokens = None
        if final:
            # the last map step publishes: the release's tokens are counted in the walk that
            # counts the kept documents' words (emit would walk them a second time)
            from tasks.tokens import release_counts_and_words

            kept_words, tokens, tokenizer = release_counts_and_words(ctx.config.tokenizer, kept.column("text"))
            model_tokens = (tokens, tokenizer)
            words_in = int(pc.sum(kept_words).as_py() or 0) + total_words(rejects.column("text"))
        else:
            words = word_counts(work.column("text"))
            kept_words = words.filter(pa.array(~dropped))
            words_in = int(pc.sum(words).as_py() or 0)
        if cfg.cross_release:
            sig_table = storage.read_parquet(_sigs_path(ctx, shard))
            rows = near.index_rows(kept, sig_table, params, ctx.release)
            for p, part in near.shuffle(rows, rows.column("key").to_numpy(), parts).items():
                storage.write_parquet(nindex.segment_part(ctx.release, p, shard), part)
            kept_sigs = sig_table.filter(pc.is_in(sig_table.column("order"), value_set=kept.column("order")))
            nodes = [near.old_node(ctx.release, i) for i in kept_sigs.column("id").to_pylist()]
            storage.write_parquet(nindex.segment_sigs(ctx.release, shard),
                                  pa.table({"node": pa.array(nodes, pa.int64()),
                                            "signature": kept_sigs.column("signature")}))
        result = MapResult(kept=kept, rejects=rejects, docs_in=work.num_rows, tokens_in=words_in,
                           attributes=attrs, attribute_sources=kept.column("source").combine_chunks(),
                           kept_words=kept_words, kept_model_tokens=model_tokens)
        return write_result(storage, ctx, STAGE, shard, result, final)

    return once(ctx, STAGE, shard, compute)


def _rejects(rows: pa.Table, survivors: np.ndarray, detail: list[str]) -> pa.Table:
    from tasks.schema import to_rejects

    return to_rejects(rows, STAGE, "near duplicate", detail=pa.array(detail, pa.string()),
                      survivor_ids=pa.array(list(survivors), pa.string()))
