"""`refinery export dolma`: a release in Dolma's own layout.

    <out>/documents/<source>/part-NNNNN.jsonl.gz          one JSON document per line
    <out>/attributes/<tagger-set>/<source>/part-NNNNN.jsonl.gz
                                                         row-aligned with the documents file:
                                                         {"id": ..., "attributes": {name: [[start, end, score], ...]}}

Attribute columns that are not spans (e.g. a cluster id) are exported as
``[[0, len(text), value]]`` so that every Dolma attribute keeps its span shape. A document's
Dolma ``id`` is its source id (Dolma: "source-specific identifier", unique within a source)
when the input had one, else refinery's stable id.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from typing import Any

import pyarrow as pa

from tasks import layout
from tasks.release_url import open_release
from tasks.storage import Storage, StorageSpec, endpoint_from_env


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _jsonl_gz(rows: list[dict[str, Any]]) -> bytes:
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
    return gzip.compress(data, mtime=0)  # mtime 0: the same release exports to the same bytes


def _attribute_tables(storage: Storage, release: str, source_dir: str, part: str) -> dict[str, pa.Table]:
    out = {}
    base = layout.attributes_dir(release)
    for path in storage.list(base, ".parquet"):
        names = path[len(base) + 1:].split("/")
        if len(names) == 3 and names[1] == source_dir and names[2] == f"{part}.parquet":
            out[names[0]] = storage.read_parquet(path)
    return out


def export_dolma(release_url: str, out_url: str) -> dict[str, int]:
    """Write the release at ``release_url`` in Dolma's layout under ``out_url``."""
    storage, manifest = open_release(release_url)
    out = StorageSpec(out_url, endpoint_from_env()).open()
    release = manifest["release"]
    counts = {"documents": 0, "files": 0, "attribute_files": 0}
    for f in manifest["outputs"]["documents"]:
        # every name that becomes a path under --to goes through layout.component, whatever
        # the manifest says: a source value from the data, a file name from a hostile manifest
        source = layout.component(f["source"])
        part = layout.component(f["path"].rsplit("/", 1)[-1].removesuffix(".parquet"))
        docs = storage.read_parquet(f["path"])
        rows, ours = [], []
        for d in docs.to_pylist():
            # Dolma's `id` is the source's own identifier (unique within its source, which
            # ingest enforces); a document without one keeps the stable id refinery gave it
            rows.append({
                "id": d.get("source_id") or d["id"], "text": d["text"], "source": d["source"],
                "version": d["version"], "added": _iso(d["added"]), "created": _iso(d["created"]),
                "metadata": json.loads(d["metadata"]) if d["metadata"] else {},
            })
            ours.append(d["id"])
        out.write_bytes(f"documents/{source}/{part}.jsonl.gz", _jsonl_gz(rows))
        counts["documents"] += len(rows)
        counts["files"] += 1
        for tagger_set, table in _attribute_tables(storage, release, source, part).items():
            by_id = {r["id"]: r for r in table.to_pylist()}
            attr_rows = []
            for d, our_id in zip(rows, ours, strict=True):
                values = by_id.get(our_id, {})
                attrs = {}
                for name, v in values.items():
                    if name == "id" or v is None:
                        continue
                    if isinstance(v, list):
                        attrs[name] = [[s["start"], s["end"], s["score"]] for s in v]
                    else:
                        attrs[name] = [[0, len(d["text"]), v]]
                attr_rows.append({"id": d["id"], "source": d["source"], "attributes": attrs})
            out.write_bytes(f"attributes/{layout.component(tagger_set)}/{source}/{part}.jsonl.gz",
                            _jsonl_gz(attr_rows))
            counts["attribute_files"] += 1
    return counts
