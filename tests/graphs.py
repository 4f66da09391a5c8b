"""The distributed connected-components path of near dedup, driven table by table without
Prefect or Ray (shared by the MinHash and near-dedup tests)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tasks.dedup import near


def distributed_cc(u: np.ndarray, v: np.ndarray, partitions: int) -> dict[int, int]:
    """The stage's path: each reduce partition contracts its share of the edges into local
    stars, then large-star / small-star rounds run with edges split by node partition."""
    share = np.arange(len(u)) % partitions
    contracted = [near.contract(u[share == k], v[share == k]) for k in range(partitions)]
    u = np.concatenate([c[0] for c in contracted])
    v = np.concatenate([c[1] for c in contracted])
    edges = near.both_directions(u, v)

    def split(t):
        parts = near.shuffle(t, t.column("u").to_numpy(), partitions)
        return [parts.get(p, near.EDGE_SCHEMA.empty_table()) for p in range(partitions)]

    current = split(edges)
    for round_no in range(200):
        kind = "large" if round_no % 2 == 0 else "small"
        bad = sum(near.violations(t.column("u").to_numpy(), t.column("v").to_numpy()) for t in current)
        if kind == "large" and bad == 0:
            break
        outs = []
        for t in current:
            op = near.large_star if kind == "large" else near.small_star
            a, b = op(t.column("u").to_numpy(), t.column("v").to_numpy())
            outs.append(near.both_directions(a, b))
        current = split(pa.concat_tables(outs))
    labels = {}
    for t in current:
        nodes, lab = near.labels(t.column("u").to_numpy(), t.column("v").to_numpy())
        labels.update(zip(nodes.tolist(), lab.tolist(), strict=True))
    return labels
