"""The storage layer on local folders: atomic writes, deterministic Parquet, listing."""

from __future__ import annotations

import pyarrow.parquet as pq

from tasks.storage import StorageSpec, sha256_bytes
from tests.conftest import shared


def test_parquet_writes_are_deterministic_and_checksummed(tmp_path):
    table = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"))
    st = StorageSpec(str(tmp_path)).open()
    a = st.write_parquet("a/part-00000.parquet", table)
    b = st.write_parquet("b/part-00000.parquet", table)
    assert a.sha256 == b.sha256 and a.rows == table.num_rows
    assert sha256_bytes((tmp_path / "a/part-00000.parquet").read_bytes()) == a.sha256
    assert st.read_parquet("a/part-00000.parquet").equals(table)


def test_atomic_write_leaves_no_temporary_files_and_replaces_whole(tmp_path):
    st = StorageSpec(f"file://{tmp_path}").open()
    st.write_json("x/y.json", {"v": 1})
    st.write_json("x/y.json", {"v": 2})
    assert st.read_json("x/y.json") == {"v": 2}
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["y.json"]
    assert st.list("x") == ["x/y.json"]
    assert st.read_json_or_none("x/missing.json") is None
