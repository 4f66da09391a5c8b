"""Checks every end-to-end test applies to a published release."""

from __future__ import annotations

import io
from typing import Any

import pyarrow.parquet as pq

from tasks import registry
from tasks.manifest import validate_manifest
from tasks.storage import Storage, sha256_bytes
from tests import prefect_api


def verify_release(storage: Storage, manifest: dict[str, Any]) -> None:
    """Row counts and checksums of every file, the funnel arithmetic, urls.txt, catalog."""
    validate_manifest(manifest)
    outputs = manifest["outputs"]
    for kind in ("documents", "attributes", "rejects", "changes"):
        for f in outputs.get(kind, []):
            data = storage.read_bytes(f["path"])
            assert sha256_bytes(data) == f["sha256"], f["path"]
            assert len(data) == f["bytes"], f["path"]
            assert pq.read_metadata(io.BytesIO(data)).num_rows == f["rows"], f["path"]
    funnel = manifest["funnel"]
    for st in funnel:  # every modified document's earlier text is kept under changes/<stage>/
        changed = sum(f["rows"] for f in outputs.get("changes", []) if f"/changes/{st['stage']}/" in f["path"])
        assert st["modified"] == changed, st
    for st in funnel:
        assert st["docs_in"] == st["docs_out"] + sum(st["dropped"].values()), st
    for prev, nxt in zip(funnel, funnel[1:], strict=False):
        assert nxt["docs_in"] == prev["docs_out"], (prev["stage"], nxt["stage"])
    assert manifest["totals"]["documents"] == funnel[-1]["docs_out"] == sum(f["rows"] for f in outputs["documents"])
    assert manifest["totals"]["rejected"] == sum(f["rows"] for f in outputs["rejects"])
    assert sum(s["documents"] for s in manifest["sources"].values()) == manifest["totals"]["documents"]
    # every dropped document is in a rejects file (ingest's also counts unparsable rows)
    assert sum(sum(st["dropped"].values()) for st in funnel) == manifest["totals"]["rejected"]
    urls = storage.read_bytes(f"releases/{manifest['release']}/urls.txt").decode().split()
    assert urls == [storage.url(f["path"]) for f in outputs["documents"]]
    catalog = storage.read_json("catalog.json")
    assert manifest["release"] in [r["id"] for r in catalog["releases"]]
    assert storage.exists(f"releases/{manifest['release']}/report.html")


def prefect_runs(flow_run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The flow run and its task runs, as the local Prefect server recorded them."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value().rstrip("/")
    flow_run = prefect_api.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).raise_for_status().json()
    task_runs: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = prefect_api.post(
            f"{api}/task_runs/filter",
            json={"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200, "offset": offset},
            timeout=10,
        ).raise_for_status().json()
        task_runs += page
        if len(page) < 200:
            break
        offset += 200
    return flow_run, task_runs


def expected_task_runs(manifest: dict[str, Any], shards: int, failed: int = 0) -> dict[str, int]:
    """Task runs per stage name that a release's flow run must have recorded (each stage of the
    manifest's order says how many it makes: tasks/registry.py)."""
    return registry.expected_task_runs(manifest, shards, failed)


def file_states(storage: Storage) -> dict[str, tuple[str, float]]:
    """sha256 and modification time of every file under the root."""
    out = {}
    for rel in storage.list(""):
        info = storage.fs.info(storage.full(rel))
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
        out[rel] = (storage.sha256(rel), str(mtime))
    return out


def prefect_artifacts(flow_run_id: str) -> dict[str, dict[str, Any]]:
    """The artifacts a flow run created, by key (latest version of each)."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value().rstrip("/")
    arts = prefect_api.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
                      timeout=10).raise_for_status().json()
    return {a["key"]: a for a in sorted(arts, key=lambda a: a["updated"])}
