"""Near-duplicate removal as plain functions over Arrow tables and numpy arrays.

The global stage (driven by ``flows/curate.py`` through ``tasks/dedup/near_steps.py``):

1. map, per shard: signatures → band rows ``(band, key, node)`` partitioned by ``key``;
   node info (survivor priority) partitioned by ``node``;
2. reduce, per partition: this run's band rows plus the cross-release index's rows of the same
   partition → candidate edges (every member of a band bucket to the bucket's smallest node),
   optionally verified by the estimated Jaccard of the full signatures;
3. connected components by alternating large-star / small-star rounds (Kiveris et al. 2014)
   over edge files partitioned by node: no process ever holds the whole graph;
4. survivors, per partition of component labels, by the configured policy; documents of an
   earlier release always win over new ones;
5. filter, per shard: drop the non-survivors as rejects naming their survivor.

Nodes are int64: a document of this run is its global ``order`` (below 2^62); a document of
an earlier release (from the index) is ``2^62 | hash(release, id)``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from tasks.dedup.minhash import MinHashParams, band_keys, empty_signature, signatures
from tasks.shuffle import split_by

OLD_BIT = np.int64(1) << np.int64(62)

BAND_SCHEMA = pa.schema([("band", pa.int32()), ("key", pa.uint64()), ("node", pa.int64())])
INDEX_SCHEMA = pa.schema(
    [("band", pa.int32()), ("key", pa.uint64()), ("node", pa.int64()), ("id", pa.string()), ("release", pa.string())]
)
EDGE_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64())])
# priority: lower sorts first. `old` (0 for earlier releases) then `rank` (policy) then `order`.
NODE_SCHEMA = pa.schema(
    [("node", pa.int64()), ("id", pa.string()), ("release", pa.string()), ("old", pa.int8()),
     ("rank", pa.float64()), ("order", pa.int64())]
)
DECISION_SCHEMA = pa.schema(
    [("node", pa.int64()), ("id", pa.string()), ("cluster", pa.int64()), ("size", pa.int64()),
     ("survivor_id", pa.string()), ("survivor_release", pa.string())]
)


def old_node(release: str, doc_id: str) -> int:
    return int(OLD_BIT | np.int64(xxhash.xxh3_64_intdigest(f"{release}\x00{doc_id}".encode()) & ((1 << 62) - 1)))


def partition_of(values: np.ndarray, partitions: int) -> np.ndarray:
    """Partition of uint64 keys or int64 nodes (mixed first, so that structured values spread)."""
    v = values.astype(np.uint64, copy=False)
    with np.errstate(over="ignore"):
        v = (v ^ (v >> np.uint64(31))) * np.uint64(0x9E3779B97F4A7C15)
    return ((v >> np.uint64(33)) % np.uint64(partitions)).astype(np.int64)


def shuffle(table: pa.Table, values: np.ndarray, partitions: int) -> dict[int, pa.Table]:
    """``table``'s rows by the partition of ``values`` (band keys or nodes)."""
    return split_by(table, partition_of(values, partitions))


# -- map --------------------------------------------------------------------------------------

def signature_table(work: pa.Table, params: MinHashParams) -> tuple[pa.Table, np.ndarray]:
    """(order, id, signature) of one shard's documents, and the signature matrix."""
    sigs = signatures(work.column("text"), params)
    blob = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(4 * params.num_perm), len(sigs), [None, pa.py_buffer(np.ascontiguousarray(sigs).tobytes())]
    )
    return pa.table({"order": work.column("order"), "id": work.column("id"), "signature": blob}), sigs


def signatures_of(table: pa.Table, params: MinHashParams) -> np.ndarray:
    col = table.column("signature").combine_chunks()
    buf = np.frombuffer(col.buffers()[1], dtype=np.uint32)
    return buf[col.offset * params.num_perm:(col.offset + len(col)) * params.num_perm].reshape(-1, params.num_perm)


def band_table(nodes: np.ndarray, sigs: np.ndarray, params: MinHashParams) -> pa.Table:
    """One row per (document, band); documents without any shingle take no part."""
    keep = ~empty_signature(sigs)
    nodes, sigs = nodes[keep], sigs[keep]
    keys = band_keys(sigs, params)
    n = len(nodes)
    return pa.table(
        {
            "band": pa.array(np.tile(np.arange(params.bands, dtype=np.int32), n)),
            "key": pa.array(keys.reshape(-1)),
            "node": pa.array(np.repeat(nodes, params.bands)),
        },
        schema=BAND_SCHEMA,
    )


def node_table(work: pa.Table, policy: str, scores: np.ndarray | None = None) -> pa.Table:
    """Survivor priority of this run's documents: lower ``rank`` wins, then lower ``order``."""
    n = work.num_rows
    if policy == "longest":
        rank = -pc.utf8_length(work.column("text")).to_numpy(zero_copy_only=False).astype(np.float64)
    elif policy == "earliest_added":
        added = pc.cast(work.column("added"), pa.int64()).to_numpy(zero_copy_only=False)
        rank = np.where(pc.is_null(work.column("added")).to_numpy(zero_copy_only=False), np.inf, added).astype(float)
    elif policy == "attribute":
        rank = -np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    else:  # "first": stable input order
        rank = np.zeros(n)
    return pa.table(
        {
            "node": work.column("order"), "id": work.column("id"), "release": pa.nulls(n, pa.string()),
            "old": pa.array(np.ones(n, dtype=np.int8)), "rank": pa.array(rank), "order": work.column("order"),
        },
        schema=NODE_SCHEMA,
    )


# -- reduce: candidate edges --------------------------------------------------------------------

# one 64-bit sort key per (band, key) bucket (an odd multiplier: distinct bands give distinct
# masks for one key)
_BAND_MIX = np.uint64(0x9E3779B97F4A7C15)


def candidate_edges(rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Edges from every member of a (band, key) bucket to the bucket's smallest node, for
    buckets of two or more nodes holding at least one document of this run; distinct edges,
    sorted by (u, v)."""
    if rows.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    band = rows.column("band").to_numpy()
    key = rows.column("key").to_numpy()
    node = rows.column("node").to_numpy()
    # one argsort of a mixed 64-bit key brings each bucket's rows together at a fraction of the
    # cost of a lexsort over (band, key, node), most of a reduce's CPU before (docs/design.md);
    # two buckets that share a mixed key would interleave, which the check below sees, and
    # only then are the rows sorted the exact way
    mixed = key ^ (band.astype(np.uint64) * _BAND_MIX)
    order = np.argsort(mixed)
    mixed, band, key, node = mixed[order], band[order], key[order], node[order]
    same = mixed[1:] == mixed[:-1]
    if np.any(same & ((band[1:] != band[:-1]) | (key[1:] != key[:-1]))):
        order = np.lexsort((key, band))
        band, key, node = band[order], key[order], node[order]
        same = (band[1:] == band[:-1]) & (key[1:] == key[:-1])
    new_group = np.concatenate([[True], ~same])
    gid = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    sizes = np.bincount(gid)
    has_new = np.bincount(gid, weights=(node < OLD_BIT)) > 0
    head = np.minimum.reduceat(node, starts)[gid]
    sel = (sizes[gid] > 1) & has_new[gid] & (node != head)
    return _unique_pairs(node[sel], head[sel])


_PAIR_MIX = np.uint64(0xC2B2AE3D27D4EB4F)


def _unique_pairs(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (u, v) pairs sorted by (u, v). A pair repeats once per band its documents
    share, so the pairs are first told apart by a 64-bit hash (a one-key sort); a hash two
    distinct pairs share sends them the exact way (``np.unique`` over the pairs)."""
    if len(u) == 0:
        return u, v
    h = (u.astype(np.uint64) * _PAIR_MIX) ^ v.astype(np.uint64)
    order = np.argsort(h)
    h, us, vs = h[order], u[order], v[order]
    same = h[1:] == h[:-1]
    if np.any(same & ((us[1:] != us[:-1]) | (vs[1:] != vs[:-1]))):
        pairs = np.unique(np.stack([u, v], axis=1), axis=0)
        return pairs[:, 0], pairs[:, 1]
    first = np.concatenate([[True], ~same])
    us, vs = us[first], vs[first]
    order = np.lexsort((vs, us))
    return us[order], vs[order]


def verify_edges(u: np.ndarray, v: np.ndarray, sig_of: dict[int, np.ndarray], threshold: float) -> np.ndarray:
    """Mask of the edges whose estimated Jaccard (share of equal signature values) reaches
    ``threshold``."""
    if len(u) == 0:
        return np.zeros(0, dtype=bool)
    a = np.stack([sig_of[int(x)] for x in u])
    b = np.stack([sig_of[int(x)] for x in v])
    return (a == b).mean(axis=1) >= threshold


def contract(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace a partition's edges by stars around the smallest node of each local component
    (scipy's connected components on the partition's own edges). The global components are
    unchanged, and the large-star / small-star rounds start from a graph of small diameter."""
    if len(u) == 0:
        return u, v
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(u), dtype=np.int8), (inv[: len(u)], inv[len(u):])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, comp, nodes)
    centre = smallest[comp]
    keep = nodes != centre
    return nodes[keep], centre[keep]


def both_directions(u: np.ndarray, v: np.ndarray) -> pa.Table:
    return pa.table({"u": np.concatenate([u, v]), "v": np.concatenate([v, u])}, schema=EDGE_SCHEMA)


# -- connected components: large-star / small-star ---------------------------------------------

def _grouped(u: np.ndarray, v: np.ndarray):
    """Distinct directed edges sorted by (u, v), with per-u group starts."""
    if len(u) == 0:
        return u, v, np.zeros(0, np.int64)
    pairs = np.unique(np.stack([u, v], axis=1), axis=0)
    u, v = pairs[:, 0], pairs[:, 1]
    starts = np.flatnonzero(np.concatenate([[True], u[1:] != u[:-1]]))
    return u, v, starts


def violations(u: np.ndarray, v: np.ndarray) -> int:
    """Nodes that have a smaller neighbour and more than one neighbour. Zero means every
    component is a star around its smallest node (a node with a smaller neighbour then has only
    that one, which can have no smaller neighbour itself): the components are found. ``u``
    must hold all edges of its nodes."""
    u, v, starts = _grouped(u, v)
    if len(u) == 0:
        return 0
    smaller = np.maximum.reduceat((v < u).astype(np.int8), starts) > 0
    degree = np.diff(np.concatenate([starts, [len(u)]]))
    return int(np.sum(smaller & (degree > 1)))


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every node: connect each larger neighbour to the smallest of its neighbourhood."""
    u, v, starts = _grouped(u, v)
    if len(u) == 0:
        return u, v
    m = np.minimum(np.minimum.reduceat(v, starts), u[starts])
    m_row = np.repeat(m, np.diff(np.concatenate([starts, [len(u)]])))
    sel = v > u
    out_u, out_v = v[sel], m_row[sel]
    keep = out_u != out_v
    return out_u[keep], out_v[keep]


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every node: connect it and its smaller neighbours to the smallest of them."""
    sel = v < u
    u_s, v_s = u[sel], v[sel]
    if len(u_s) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u_s, v_s, starts = _grouped(u_s, v_s)
    m = np.minimum.reduceat(v_s, starts)
    lens = np.diff(np.concatenate([starts, [len(u_s)]]))
    m_row = np.repeat(m, lens)
    # every smaller neighbour, and the node itself, joins the smallest
    out_u = np.concatenate([v_s, u_s[starts]])
    out_v = np.concatenate([m_row, m])
    keep = out_u != out_v
    return out_u[keep], out_v[keep]


def labels(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(node, component label) on a converged graph: the label is the smallest node."""
    u, v, starts = _grouped(u, v)
    if len(u) == 0:
        return u, v
    nodes = u[starts]
    return nodes, np.minimum(np.minimum.reduceat(v, starts), nodes)


# -- survivors -----------------------------------------------------------------------------------

def choose_survivors(members: pa.Table) -> pa.Table:
    """``members``: NODE_SCHEMA plus ``cluster`` (the component label). One decision row per
    member: its cluster, the cluster's size, and the survivor (null for the survivor itself)."""
    if members.num_rows == 0:
        return DECISION_SCHEMA.empty_table()
    idx = pc.sort_indices(members, sort_keys=[("cluster", "ascending"), ("old", "ascending"),
                                              ("rank", "ascending"), ("order", "ascending"), ("node", "ascending")])
    m = members.take(idx)
    cluster = m.column("cluster").to_numpy()
    first = np.concatenate([[True], cluster[1:] != cluster[:-1]])
    gid = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    sizes = np.bincount(gid)[gid]
    ids = m.column("id").to_numpy(zero_copy_only=False)
    rel = m.column("release").to_numpy(zero_copy_only=False)
    surv_id = np.where(first, None, ids[starts][gid])
    surv_rel = np.where(first, None, rel[starts][gid])
    return pa.table(
        {"node": m.column("node"), "id": m.column("id"), "cluster": pa.array(cluster),
         "size": pa.array(sizes.astype(np.int64)), "survivor_id": pa.array(surv_id, pa.string()),
         "survivor_release": pa.array(surv_rel, pa.string())},
        schema=DECISION_SCHEMA,
    )


def index_rows(kept: pa.Table, sigs_table: pa.Table, params: MinHashParams, release: str) -> pa.Table:
    """Band rows of the documents a release publishes, for later releases to match against."""
    kept_orders = kept.column("order")
    st = sigs_table.filter(pc.is_in(sigs_table.column("order"), value_set=kept_orders))
    ids = st.column("id").to_pylist()
    nodes = np.array([old_node(release, i) for i in ids], dtype=np.int64)
    bt = band_table(nodes, signatures_of(st, params), params)
    id_of = dict(zip(nodes.tolist(), ids, strict=True))
    node_col = bt.column("node").to_numpy()
    return pa.table(
        {"band": bt.column("band"), "key": bt.column("key"), "node": bt.column("node"),
         "id": pa.array([id_of[int(x)] for x in node_col], pa.string()),
         "release": pa.array([release] * bt.num_rows, pa.string())},
        schema=INDEX_SCHEMA,
    )
