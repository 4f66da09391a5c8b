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
    # a rerun of the step (a crash after the copy, before the marker) copies again: the names
    # already share the file, and rename(2) of one name onto the other would do nothing and
    # leave the temporary link behind
    st.copy("state/work/r1/a/part-00000.parquet", "state/work/r1/b/part-00000.parquet")
    assert [p.name for p in b.parent.iterdir()] == ["part-00000.parquet"]
    assert os.stat(a).st_ino == os.stat(b).st_ino
    # where no hard link can be made (another filesystem), the bytes are copied
    real_link = os.link

    def no_link(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    os.link = no_link
    try:
        st.copy("state/work/r1/a/part-00000.parquet", "state/work/r1/c/part-00000.parquet")
    finally:
        os.link = real_link
    c = tmp_path / "state/work/r1/c/part-00000.parquet"
    assert c.read_bytes() == a.read_bytes() and os.stat(c).st_ino != os.stat(a).st_ino
    assert [p.name for p in c.parent.iterdir()] == ["part-00000.parquet"]
    st.write_parquet("state/work/r1/b/part-00000.parquet", table.slice(0, 3))
    assert st.read_parquet("state/work/r1/a/part-00000.parquet").equals(table)
    assert st.read_parquet("state/work/r1/b/part-00000.parquet").num_rows == 3
    mem = StorageSpec("memory://refinery-copy-test").open()
    mem.write_bytes("x/a.bin", b"abc")
    mem.copy("x/a.bin", "y/b.bin")
    mem.write_bytes("x/a.bin", b"new")
    assert mem.read_bytes("y/b.bin") == b"abc"


def test_scratch_is_uncompressed_on_a_local_disk_and_random_bits_everywhere_published_files_never(tmp_path):
    """Scratch Parquet (under ``state/work/``) goes without a codec on a local root (cheaper to
    write and to read than zstd level 1, measured) and keeps zstd across a network (fsspec's
    memory filesystem stands for S3 here), except tables of random bits (near dedup's
    signatures: ``incompressible``); a published file keeps the release's fixed settings
    whatever the caller says. Every copy reads back equal, locally through a memory map."""
    import io

    import pyarrow as pa

    from tasks.dedup import near
    from tasks.dedup.minhash import MinHashParams

    texts = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"), columns=["text"]).column("text")
    work = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts,
                     "order": pa.array(range(len(texts)), pa.int64())})
    sigs, _ = near.signature_table(work, MinHashParams())
    local = StorageSpec(str(tmp_path)).open()
    remote = StorageSpec("memory://refinery-codec-test").open()
    written = {}
    for name, st in (("local", local), ("remote", remote)):
        for kind, table, random in (("work", work, False), ("sigs", sigs, True)):
            for rel in (f"state/work/r1/{kind}/part-00000.parquet", f"releases/r1/{kind}/part-00000.parquet"):
                st.write_parquet(rel, table, incompressible=random)
                meta = pq.ParquetFile(io.BytesIO(st.read_bytes(rel))).metadata
                written[name, kind, rel.split("/")[0]] = {meta.row_group(0).column(i).compression
                                                          for i in range(meta.num_columns)}
                assert st.read_parquet(rel).equals(table)
    assert written == {
        ("local", "work", "state"): {"UNCOMPRESSED"}, ("local", "sigs", "state"): {"UNCOMPRESSED"},
        ("local", "work", "releases"): {"ZSTD"}, ("local", "sigs", "releases"): {"ZSTD"},
        ("remote", "work", "state"): {"ZSTD"}, ("remote", "sigs", "state"): {"UNCOMPRESSED"},
        ("remote", "work", "releases"): {"ZSTD"}, ("remote", "sigs", "releases"): {"ZSTD"},
    }
    assert sigs.num_rows > 100 and work.column("text").nbytes > 1_000_000
    # the config's storage.scratch_compression overrides "auto": zstd on a local disk (where disk
    # matters more than CPU), none on object storage; published files keep theirs either way
    from flows.curate import storage_spec
    from tasks.config import PipelineConfig

    for mode, root, codec in (("zstd", str(tmp_path / "z"), "ZSTD"), ("none", "memory://refinery-codec-none", "UNCOMPRESSED")):
        st = storage_spec(PipelineConfig(output=root, storage={"scratch_compression": mode})).open()
        for rel, want in (("state/work/r1/work/part-00000.parquet", codec), ("releases/r1/work/part-00000.parquet", "ZSTD")):
            st.write_parquet(rel, work)
            meta = pq.ParquetFile(io.BytesIO(st.read_bytes(rel))).metadata
            assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {want}, (mode, rel)
            assert st.read_parquet(rel).equals(work)
