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


def test_a_copy_is_a_link_locally_a_copy_elsewhere_and_writing_either_name_leaves_the_other(tmp_path):
    """``copy`` hands a scratch file on without writing its bytes again (ingest's unchanged work
    table): a hard link on a local root, whose names stay apart when one is rewritten (writes
    rename a new file over the name); a plain copy on a root without links (fsspec's memory)."""
    import os

    table = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"))
    st = StorageSpec(str(tmp_path)).open()
    st.write_parquet("state/work/r1/a/part-00000.parquet", table)
    st.copy("state/work/r1/a/part-00000.parquet", "state/work/r1/b/part-00000.parquet")
    a, b = tmp_path / "state/work/r1/a/part-00000.parquet", tmp_path / "state/work/r1/b/part-00000.parquet"
    assert os.stat(a).st_ino == os.stat(b).st_ino and a.read_bytes() == b.read_bytes()
    assert [p.name for p in b.parent.iterdir()] == ["part-00000.parquet"]  # no temporary name left
    st.write_parquet("state/work/r1/b/part-00000.parquet", table.slice(0, 3))
    assert st.read_parquet("state/work/r1/a/part-00000.parquet").equals(table)
    assert st.read_parquet("state/work/r1/b/part-00000.parquet").num_rows == 3
    mem = StorageSpec("memory://refinery-copy-test").open()
    mem.write_bytes("x/a.bin", b"abc")
    mem.copy("x/a.bin", "y/b.bin")
    mem.write_bytes("x/a.bin", b"new")
    assert mem.read_bytes("y/b.bin") == b"abc"


def test_scratch_tables_of_random_bits_are_written_uncompressed_and_read_back_equal(tmp_path):
    """Near dedup's signatures (``incompressible``): no codec on a scratch file; a published
    file keeps the release's fixed settings whatever the caller says."""
    import pyarrow as pa

    from tasks.dedup import near
    from tasks.dedup.minhash import MinHashParams

    texts = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"), columns=["text"]).column("text")
    work = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts,
                     "order": pa.array(range(len(texts)), pa.int64())})
    sigs, _ = near.signature_table(work, MinHashParams())
    st = StorageSpec(str(tmp_path)).open()
    st.write_parquet("state/work/r1/near_dedup_sigs/part-00000.parquet", sigs, incompressible=True)
    st.write_parquet("releases/r1/x/part-00000.parquet", sigs, incompressible=True)
    scratch = pq.ParquetFile(tmp_path / "state/work/r1/near_dedup_sigs/part-00000.parquet")
    published = pq.ParquetFile(tmp_path / "releases/r1/x/part-00000.parquet")
    assert {scratch.metadata.row_group(0).column(i).compression for i in range(3)} == {"UNCOMPRESSED"}
    assert {published.metadata.row_group(0).column(i).compression for i in range(3)} == {"ZSTD"}
    assert scratch.read().equals(sigs) and published.read().equals(sigs) and sigs.num_rows > 100
