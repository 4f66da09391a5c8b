"""The cross-release index: versioned with the catalog, compaction keeps its content."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.dedup import index as nindex
from tasks.dedup import near
from tasks.dedup.minhash import MinHashParams, signature_scheme
from tasks.storage import StorageSpec
from tests.conftest import shared

PARAMS = MinHashParams()
SCHEME = signature_scheme(PARAMS)


def _segment(storage, release: str, texts: list[str], ids: list[str], partitions: int, scheme: str = SCHEME) -> None:
    work = pa.table({"id": ids, "text": texts, "order": pa.array(range(len(ids)), pa.int64())})
    sig_table, _ = near.signature_table(work, PARAMS)
    rows = near.index_rows(work, sig_table, PARAMS, release)
    for p, part in near.shuffle(rows, rows.column("key").to_numpy(), partitions).items():
        storage.write_parquet(nindex.segment_part(release, p, "00000"), part)
    nodes = [near.old_node(release, i) for i in ids]
    storage.write_parquet(nindex.segment_sigs(release, "00000"),
                          pa.table({"node": pa.array(nodes, pa.int64()), "signature": sig_table.column("signature")}))
    nindex.write_segment_meta(storage, release, partitions, scheme)


def _all_rows(storage, view, partitions):
    t = pa.concat_tables([nindex.read_partition(storage, view, p, partitions) for p in range(partitions)])
    return sorted(zip(t.column("key").to_pylist(), t.column("node").to_pylist(), t.column("release").to_pylist(),
                      strict=True))


def test_uncommitted_segments_are_ignored_and_compaction_keeps_every_row(tmp_path):
    storage = StorageSpec(str(tmp_path)).open()
    texts = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).column("text").to_pylist()
    for k, release in enumerate(["r1", "r2", "r3", "r-crashed"]):
        chunk = texts[k * 50:(k + 1) * 50]
        _segment(storage, release, chunk, [f"{release}-{i}" for i in range(len(chunk))], partitions=3)

    view = nindex.live_view(storage, ["r1", "r2", "r3"], SCHEME)  # r-crashed never published a manifest
    assert sorted(view.segments) == ["r1", "r2", "r3"]
    before = _all_rows(storage, view, 3)
    assert {r for _, _, r in before} == {"r1", "r2", "r3"}
    # read with another partition count: the same rows, filtered on the fly
    assert _all_rows(storage, view, 5) == before

    compacted = nindex.compact(storage, view, "r3", 3, SCHEME)
    assert compacted.compacted == "r3" and compacted.segments == {}
    again = nindex.live_view(storage, ["r1", "r2", "r3"], SCHEME)
    assert again.compacted == "r3" and again.covers == ["r1", "r2", "r3"]
    assert _all_rows(storage, again, 3) == before
    assert not storage.exists(f"{nindex.segment_dir('r1')}/meta.json")
    # signatures stay available for verification
    node = near.old_node("r2", "r2-7")
    sigs = nindex.read_signatures(storage, again, np.array([node], dtype=np.int64))
    assert node in sigs and sigs[node].shape == (PARAMS.num_perm,)
    # a later segment is read on top of the compacted base
    _segment(storage, "r4", texts[400:420], [f"r4-{i}" for i in range(20)], partitions=3)
    latest = nindex.live_view(storage, ["r1", "r2", "r3", "r4"], SCHEME)
    assert latest.compacted == "r3" and list(latest.segments) == ["r4"]
    assert {r for _, _, r in _all_rows(storage, latest, 3)} == {"r1", "r2", "r3", "r4"}


def test_segments_of_another_signature_scheme_are_skipped_and_named(tmp_path):
    storage = StorageSpec(str(tmp_path)).open()
    texts = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).column("text").to_pylist()
    other = signature_scheme(MinHashParams(num_perm=128, bands=16))
    _segment(storage, "r1", texts[:30], [f"r1-{i}" for i in range(30)], 2, scheme=other)
    _segment(storage, "r2", texts[30:60], [f"r2-{i}" for i in range(30)], 2)
    view = nindex.live_view(storage, ["r1", "r2"], SCHEME)
    assert list(view.segments) == ["r2"] and view.skipped == {"r1": other}
    assert {r for _, _, r in _all_rows(storage, view, 2)} == {"r2"}
    # compaction under the other scheme keeps the two apart
    nindex.compact(storage, nindex.live_view(storage, ["r1", "r2"], other), "r2", 2, other)
    again = nindex.live_view(storage, ["r1", "r2"], SCHEME)
    assert again.compacted is None and list(again.segments) == ["r2"] and again.skipped == {"r1": other}
    assert nindex.IndexView.from_dict(again.to_dict()) == again


def test_node_priorities_follow_the_policy():
    work = pa.table({
        "id": ["a", "b", "c"], "text": ["short", "the longest text", "medium text"],
        "order": pa.array([1, 2, 3], pa.int64()),
        "added": pa.array([datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC), None],
                          pa.timestamp("us", tz="UTC")),
    })

    def winner(policy, scores=None):
        t = near.node_table(work, policy, scores).append_column("cluster", pa.array([7, 7, 7], pa.int64()))
        d = near.choose_survivors(t).to_pylist()
        return next(r["id"] for r in d if r["survivor_id"] is None)

    assert winner("first") == "a"
    assert winner("longest") == "b"
    assert winner("earliest_added") == "b"
    assert winner("attribute", np.array([0.2, np.nan, 0.9])) == "c"
