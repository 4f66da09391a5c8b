"""Worker-sized groups of shards for small inputs: one task run per worker instead of one per
shard (:meth:`tasks.registry.StageRun.map`'s ``groups``; used by ingest's phases and near
dedup's filter).

Every Prefect task run costs the driver, the server and a worker a fixed amount of CPU
(measured on 100k documents in 16 files, bench/results/fixed_cost_100k_s11_18.json: 36 ingest
task runs cost the server about 1.3 CPU seconds more than 6 did); a shard of a few MB does not
pay it back, while large shards balance better one task each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# A local input at most this large runs its grouped steps as one task run per worker; above
# it the shards are large enough to pay their task runs back, and many tasks keep the workers
# evenly busy.
SMALL_INPUT_BYTES = 256 * 10**6


def _local_path(uri: str) -> str | None:
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None if "://" in uri else uri


def shard_bytes(shards: Sequence[Any]) -> list[int] | None:
    """Each shard's share of its input file's bytes, or None when an input is not local
    (asking remote storage for sizes would cost a request per file; those runs keep one task
    per shard). A file that cannot be read counts 0: its shard reports it."""
    per_file: dict[str, int] = {}
    for s in shards:
        per_file[s.uri] = per_file.get(s.uri, 0) + 1
    out = []
    for s in shards:
        path = _local_path(s.uri)
        if path is None:
            return None
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        out.append(size // per_file[s.uri])
    return out


def balanced_groups(sizes: Sequence[int], parts: int) -> list[list[int]]:
    """``range(len(sizes))`` cut into at most ``parts`` runs of consecutive indices with about
    equal byte sums (consecutive: each group then reads its files in the run's stable order)."""
    n = len(sizes)
    parts = max(1, min(parts, n))
    total = sum(sizes)
    groups: list[list[int]] = [[] for _ in range(parts)]
    acc = 0
    for i, size in enumerate(sizes):
        # the group this shard's midpoint falls in (a shard larger than a group's share may
        # leave a group empty: fewer, not unequal, groups)
        g = min(parts - 1, int((acc + size / 2) * parts // total)) if total else i * parts // n
        groups[g].append(i)
        acc += size
    return [g for g in groups if g]


def small_input_groups(shards: Sequence[Any], workers: int) -> list[list[int]] | None:
    """Worker-sized groups of ``shards`` (indices) when the input is small and local and has
    more shards than workers; None (one task per shard) otherwise."""
    if len(shards) <= workers:
        return None
    sizes = shard_bytes(shards)
    if sizes is None or sum(sizes) > SMALL_INPUT_BYTES:
        return None
    return balanced_groups(sizes, workers)
