"""Stage 2, exact dedup: a global map → shuffle/reduce → map over content hashes.

map:    each shard's (content_hash, id, order) rows, partitioned by hash into buckets;
reduce: per bucket, sort by (hash, order); the first row of each hash is the survivor;
filter: each shard drops the rows the reducers marked, as rejects naming the survivor.

The survivor is the first copy in the run's stable order: inputs in config order, files
sorted by URL, Parquet row groups in file order, rows in file order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.schema import to_rejects, whole_document_spans
from tasks.shuffle import split_by

KEY_COLUMNS = ["content_hash", "id", "order"]
DECISION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("order", pa.int64()),
        pa.field("survivor_id", pa.string()),  # null for the survivor itself
        pa.field("copies", pa.int64()),  # size of the hash group
    ]
)


def _hash_matrix(hashes: pa.Array) -> np.ndarray:
    arr = hashes.combine_chunks() if isinstance(hashes, pa.ChunkedArray) else hashes
    buf = arr.buffers()[1]
    flat = np.frombuffer(buf, dtype=np.uint8)[arr.offset * 16 : (arr.offset + len(arr)) * 16]
    return flat.reshape(-1, 16)


def bucket_of(hashes: pa.Array, buckets: int) -> np.ndarray:
    m = _hash_matrix(hashes)
    return m[:, :4].copy().view("<u4").ravel() % buckets


def partition_keys(work: pa.Table, buckets: int) -> dict[int, pa.Table]:
    """Map side: the key rows of one shard, split by bucket (empty buckets omitted)."""
    keys = work.select(KEY_COLUMNS)
    if keys.num_rows == 0:
        return {}
    if keys.column("content_hash").null_count:
        # ingest leaves pages' HTML unhashed for extract to key; unkeyed rows reaching here
        # would all fall into one "duplicate" group, so this is a bug to stop on, not data
        raise RuntimeError("exact dedup: rows without a content hash (pages whose text was not extracted)")
    return split_by(keys, bucket_of(keys.column("content_hash"), buckets).astype(np.int64))


def reduce_bucket(keys: pa.Table) -> pa.Table:
    """Reduce side: one decision row for every member of a hash group of two or more."""
    if keys.num_rows == 0:
        return DECISION_SCHEMA.empty_table()
    idx = pc.sort_indices(keys, sort_keys=[("content_hash", "ascending"), ("order", "ascending")])
    keys = keys.take(idx)
    m = _hash_matrix(keys.column("content_hash"))
    n = len(m)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (m[1:] != m[:-1]).any(axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.concatenate([starts, [n]]))
    group_size = np.repeat(sizes, sizes)
    in_dup_group = group_size > 1
    ids = keys.column("id").to_numpy(zero_copy_only=False)
    survivor = np.where(new_group, None, ids[group_start])
    sel = np.flatnonzero(in_dup_group)
    return pa.table(
        {
            "id": pa.array(ids[sel], pa.string()),
            "order": keys.column("order").take(pa.array(sel)),
            "survivor_id": pa.array(survivor[sel], pa.string()),
            "copies": pa.array(group_size[sel], pa.int64()),
        },
        schema=DECISION_SCHEMA,
    )


def apply_decisions(work: pa.Table, decisions: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Filter side: (kept work rows, rejects, attributes) for one shard.

    ``decisions`` may hold other shards' rows; rows are matched on the global ``order``.
    """
    n = work.num_rows
    copies = np.ones(n, dtype=np.int64)
    survivor = np.full(n, None, dtype=object)
    if decisions.num_rows and n:
        orders = work.column("order").to_numpy()
        d_orders = decisions.column("order").to_numpy()
        order_idx = np.argsort(d_orders, kind="stable")
        d_sorted = d_orders[order_idx]
        pos = np.clip(np.searchsorted(d_sorted, orders), 0, len(d_sorted) - 1)
        hit = d_sorted[pos] == orders
        rows = order_idx[pos[hit]]
        copies[hit] = decisions.column("copies").to_numpy()[rows]
        survivor[hit] = decisions.column("survivor_id").to_numpy(zero_copy_only=False)[rows]
    dropped = np.array([s is not None for s in survivor], dtype=bool)
    dropped_rows = work.filter(pa.array(dropped))
    rejects = to_rejects(
        dropped_rows,
        "exact_dedup",
        "exact duplicate",
        survivor_ids=pa.array(survivor[dropped], pa.string()),
        detail=pa.array([f"same content as {s}" for s in survivor[dropped]], pa.string()),
    )
    kept = work.filter(pa.array(~dropped))
    kept_copies = pa.array(copies[~dropped], pa.int64())
    attrs = pa.table(
        {
            "id": kept.column("id"),
            "exact_dedup__content__copies": whole_document_spans(
                pc.utf8_length(kept.column("text")), kept_copies
            ),
        }
    )
    return kept, rejects, attrs
