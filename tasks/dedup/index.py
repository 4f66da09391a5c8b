"""The cross-release near-duplicate index under ``<root>/state/near_index/``.

Every release that ran near dedup leaves a *segment*: the band rows (and signatures) of the
documents it published, partitioned like its shuffle. A segment counts only once its release
is committed (its manifest is in the catalog), so the index is versioned with the catalog and
a crashed run leaves nothing a later run would trust. Compaction merges the live segments
into one file per partition (``compacted/<release>/``, valid once its ``covers.json`` exists).

    segments/<release>/meta.json                 {"partitions": P, "scheme": S}
    segments/<release>/p-NNNNN/part-<shard>.parquet   INDEX_SCHEMA rows
    segments/<release>/sigs/part-<shard>.parquet      (node, signature)
    compacted/<release>/covers.json              {"releases": [...], "partitions": P, "scheme": S}

``scheme`` (:func:`tasks.dedup.minhash.signature_scheme`) names everything that decides band
keys and signatures. Band keys of different schemes never match, so a run reads only the
segments of its own scheme and lists the others as skipped (in its manifest and its log)
rather than silently finding no duplicates in them.
    compacted/<release>/p-NNNNN.parquet, sigs.parquet
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout
from tasks.dedup.near import INDEX_SCHEMA, partition_of
from tasks.layout import component
from tasks.storage import Storage

ROOT = layout.NEAR_INDEX_ROOT


def segment_dir(release: str) -> str:
    return f"{ROOT}/segments/{component(release)}"


def compacted_dir(release: str) -> str:
    return f"{ROOT}/compacted/{component(release)}"


def segment_part(release: str, partition: int, shard: str) -> str:
    return f"{segment_dir(release)}/p-{partition:05d}/{component(f'part-{shard}')}.parquet"


def segment_sigs(release: str, shard: str) -> str:
    return f"{segment_dir(release)}/sigs/{component(f'part-{shard}')}.parquet"


@dataclass
class IndexView:
    """The index as a run sees it: at most one compacted base plus committed segments."""

    compacted: str | None = None
    compacted_partitions: int = 0
    covers: list[str] = field(default_factory=list)
    segments: dict[str, int] = field(default_factory=dict)  # release -> partitions
    skipped: dict[str, str] = field(default_factory=dict)  # release -> its other scheme

    @property
    def releases(self) -> list[str]:
        return self.covers + list(self.segments)

    def to_dict(self) -> dict:
        return {"compacted": self.compacted, "compacted_partitions": self.compacted_partitions,
                "covers": self.covers, "segments": self.segments, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, d: dict) -> IndexView:
        return cls(d["compacted"], d["compacted_partitions"], list(d["covers"]), dict(d["segments"]),
                   dict(d.get("skipped", {})))


def live_view(storage: Storage, committed: list[str], scheme: str) -> IndexView:
    """The index of the committed releases (oldest first) built with ``scheme``, ignoring
    anything uncommitted; committed segments of another scheme are listed in ``skipped``."""
    view = IndexView()
    rank = {r: i for i, r in enumerate(committed)}
    best = None
    by_dir = {component(r): r for r in committed}
    for path in storage.fs.glob(storage.full(f"{ROOT}/compacted/*/covers.json")):
        name = by_dir.get(path.rstrip("/").split("/")[-2])
        if name is None:
            continue
        covers = storage.read_json(f"{compacted_dir(name)}/covers.json")
        if name not in rank or not all(r in rank for r in covers["releases"]):
            continue
        if covers.get("scheme") != scheme:
            view.skipped.update({r: str(covers.get("scheme")) for r in covers["releases"]})
        elif best is None or rank[name] > rank[best[0]]:
            best = (name, covers)
    if best:
        view.compacted, view.compacted_partitions, view.covers = best[0], best[1]["partitions"], best[1]["releases"]
    for release in committed:
        if release in view.covers:
            continue
        meta = storage.read_json_or_none(f"{segment_dir(release)}/meta.json")
        if meta is None:
            continue
        if meta.get("scheme") == scheme:
            view.segments[release] = meta["partitions"]
            view.skipped.pop(release, None)
        else:
            view.skipped[release] = str(meta.get("scheme"))
    for release in view.covers:
        view.skipped.pop(release, None)
    return view


def write_segment_meta(storage: Storage, release: str, partitions: int, scheme: str) -> None:
    """Written last for a segment: with the release's manifest, it makes the segment count."""
    storage.write_json(f"{segment_dir(release)}/meta.json", {"partitions": partitions, "scheme": scheme})


def _read_partitioned(storage: Storage, files_for: list[tuple[list[str], bool]], p: int, partitions: int) -> pa.Table:
    tables = []
    for files, exact_partition in files_for:
        for f in files:
            t = storage.read_parquet(f)
            if not exact_partition and t.num_rows:
                t = t.filter(pa.array(partition_of(t.column("key").to_numpy(), partitions) == p))
            tables.append(t.cast(INDEX_SCHEMA))
    return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()


def read_partition(storage: Storage, view: IndexView, p: int, partitions: int) -> pa.Table:
    """Index rows whose key falls into shuffle partition ``p`` of ``partitions``."""
    sources: list[tuple[list[str], bool]] = []
    if view.compacted:
        same = view.compacted_partitions == partitions
        base = f"{compacted_dir(view.compacted)}"
        files = [f"{base}/p-{p:05d}.parquet"] if same else [
            f"{base}/p-{q:05d}.parquet" for q in range(view.compacted_partitions)]
        sources.append(([f for f in files if storage.exists(f)], same))
    for release, parts in view.segments.items():
        same = parts == partitions
        dirs = [f"{segment_dir(release)}/p-{p:05d}"] if same else [
            f"{segment_dir(release)}/p-{q:05d}" for q in range(parts)]
        sources.append(([f for d in dirs for f in storage.list(d, ".parquet")], same))
    return _read_partitioned(storage, sources, p, partitions)


def read_signatures(storage: Storage, view: IndexView, nodes: np.ndarray) -> dict[int, np.ndarray]:
    """Signatures of the given index nodes (for candidate verification)."""
    files = [f"{compacted_dir(view.compacted)}/sigs.parquet"] if view.compacted else []
    for release in view.segments:
        files += storage.list(f"{segment_dir(release)}/sigs", ".parquet")
    want = pa.array(nodes, pa.int64())
    out: dict[int, np.ndarray] = {}
    for f in files:
        t = storage.read_parquet(f)
        t = t.filter(pc.is_in(t.column("node"), value_set=want))
        if t.num_rows:
            col = t.column("signature").combine_chunks()
            width = col.type.byte_width // 4
            sig = np.frombuffer(col.buffers()[1], dtype=np.uint32)[col.offset * width:(col.offset + len(col)) * width]
            for n, s in zip(t.column("node").to_pylist(), sig.reshape(-1, width), strict=True):
                out[n] = s
    return out


def _band_files(storage: Storage, view: IndexView) -> list[str]:
    files = [f for f in storage.list(f"{compacted_dir(view.compacted)}", ".parquet")
             if f.rsplit("/", 1)[-1].startswith("p-")] if view.compacted else []
    for release in view.segments:
        files += [f for f in storage.list(segment_dir(release), ".parquet") if "/sigs/" not in f]
    return files


def index_rows(storage: Storage, view: IndexView) -> int:
    """Band rows in the index (from the Parquet footers, no data read)."""
    total = 0
    for f in _band_files(storage, view):
        with storage.fs.open(storage.full(f), "rb") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def index_size(storage: Storage, view: IndexView) -> dict[str, int]:
    files = storage.list(f"{compacted_dir(view.compacted)}", ".parquet") if view.compacted else []
    for release in view.segments:
        files += storage.list(segment_dir(release), ".parquet")
    total = sum(storage.fs.info(storage.full(f))["size"] for f in files)
    return {"releases": len(view.releases), "files": len(files), "bytes": int(total)}


def compact(storage: Storage, view: IndexView, name: str, partitions: int, scheme: str) -> IndexView:
    """Merge the compacted base and every segment into ``compacted/<name>/``; the old files
    are deleted only after the new ``covers.json`` is written."""
    base = compacted_dir(name)
    for p in range(partitions):
        storage.write_parquet(f"{base}/p-{p:05d}.parquet", read_partition(storage, view, p, partitions))
    sig_files = [f"{compacted_dir(view.compacted)}/sigs.parquet"] if view.compacted else []
    for release in view.segments:
        sig_files += storage.list(f"{segment_dir(release)}/sigs", ".parquet")
    sig_tables = [storage.read_parquet(f) for f in sig_files]
    if sig_tables:
        storage.write_parquet(f"{base}/sigs.parquet", pa.concat_tables(sig_tables))
    covers = view.covers + list(view.segments)
    storage.write_json(f"{base}/covers.json", {"releases": covers, "partitions": partitions, "scheme": scheme})
    if view.compacted and view.compacted != name:
        storage.delete(f"{compacted_dir(view.compacted)}", recursive=True)
    for release in view.segments:
        storage.delete(segment_dir(release), recursive=True)
    return IndexView(name, partitions, covers, {})
