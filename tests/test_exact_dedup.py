"""Exact dedup as plain functions: map (partition) → reduce → filter, against an independent
reference computed in the test from the same shared rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from tasks.config import IngestConfig
from tasks.dedup import exact
from tasks.ingest import Shard, ingest_shard
from tests.corpora import first_occurrence, inject_copies, shared_rows, shared_specs


def _work_tables(specs):
    tables = []
    for i, spec in enumerate(specs):
        shard = Shard(i, spec.uri, "parquet" if spec.uri.endswith(".parquet") else "jsonl", spec.source, spec.columns)
        tables.append(ingest_shard(shard, IngestConfig(), "stripped", "r", datetime(2026, 1, 1, tzinfo=UTC)).work)
    return tables


@pytest.mark.parametrize("buckets", [1, 7, 16])
def test_exact_dedup_matches_reference_and_points_at_first_copy(tmp_path, buckets):
    inj_spec, copies = inject_copies(tmp_path, 40)
    specs = shared_specs() + [inj_spec]
    works = _work_tables(specs)

    # map
    shuffled: dict[int, list[pa.Table]] = {}
    for w in works:
        for b, part in exact.partition_keys(w, buckets).items():
            assert 0 <= b < buckets
            shuffled.setdefault(b, []).append(part)
    # reduce
    decisions = pa.concat_tables([exact.reduce_bucket(pa.concat_tables(parts)) for parts in shuffled.values()])
    # filter
    kept_ids, rejected = [], {}
    for w in works:
        kept, rejects, attrs = exact.apply_decisions(w, decisions)
        kept_ids += kept.column("id").to_pylist()
        assert attrs.column("id").to_pylist() == kept.column("id").to_pylist()
        for rid, sid in zip(rejects.column("id").to_pylist(), rejects.column("survivor_id").to_pylist(), strict=True):
            rejected[rid] = sid

    # reference: first occurrence of each content key in input order
    rows = shared_rows() + [{"source": "injected", "id": c["doc_id"], "text": c["body"]} for c in copies]
    first = first_occurrence(rows)
    from tasks.ingest import stable_id

    expected_survivors = {stable_id(s, i, "") for s, i in first.values()}
    assert set(kept_ids) == expected_survivors
    assert len(kept_ids) == len(set(kept_ids))
    # every injected copy is removed and names the id of the original it copies (or of an
    # earlier copy of that same text, which the reference also finds)
    from tasks.ingest import content_key, normalize_text

    for c in copies:
        cid = stable_id("injected", c["doc_id"], "")
        text = normalize_text(c["body"], "NFC")
        src, oid = first[content_key(text, "stripped")]
        assert rejected[cid] == stable_id(src, oid, "")
    assert len(rejected) + len(kept_ids) == sum(w.num_rows for w in works)


def test_copies_attribute_counts_group_size(tmp_path):
    inj_spec, copies = inject_copies(tmp_path, 10)
    # inject the same copies twice more: every original then has 3 copies besides itself
    works = _work_tables(shared_specs() + [inj_spec, inj_spec, inj_spec])
    parts = [exact.partition_keys(w, 4) for w in works]
    decisions = pa.concat_tables(
        [exact.reduce_bucket(pa.concat_tables([p[b] for p in parts if b in p])) for b in range(4)
         if any(b in p for p in parts)]
    )
    attrs = pa.concat_tables([exact.apply_decisions(w, decisions)[2] for w in works])
    copies_col = [spans[0]["score"] for spans in attrs.column("exact_dedup__content__copies").to_pylist()]
    assert sum(1 for c in copies_col if c >= 4) >= 10
    assert all(c >= 1 for c in copies_col)


def test_reduce_of_nothing_is_empty():
    assert exact.reduce_bucket(pa.schema([("content_hash", pa.binary(16)), ("id", pa.string()),
                                          ("order", pa.int64())]).empty_table()).num_rows == 0


def test_rows_without_a_content_hash_stop_the_map_rather_than_merge():
    """Ingest gives pages' HTML no hash (extract's text is keyed instead); rows without one that
    reached exact dedup would all be one "duplicate" group, so the map refuses them."""
    import pytest

    work = pa.table({"id": ["a", "b", "c"], "content_hash": pa.array([None, None, b"x" * 16], pa.binary()),
                     "order": pa.array([0, 1, 2], pa.int64())})
    with pytest.raises(RuntimeError, match="without a content hash"):
        exact.partition_keys(work.select(exact.KEY_COLUMNS), 2)
