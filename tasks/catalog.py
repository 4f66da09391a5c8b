"""The committed releases: reading a manifest (checked against its schema) and the catalog
that the committed manifests make. Below the stages (near dedup reads the previous releases)
and below publish (which rebuilds the catalog after writing a manifest)."""

from __future__ import annotations

from typing import Any

from tasks import layout
from tasks.manifest import ManifestError, validate_manifest
from tasks.storage import Storage, canonical_json


def read_manifest_file(storage: Storage, rel: str) -> dict[str, Any]:
    """A committed manifest, checked against the schema; :class:`ManifestError` naming the
    file when it is damaged (truncated, not an object, a field missing), FileNotFoundError
    when there is none."""
    try:
        m = storage.read_json(rel)
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestError(f"{storage.url(rel)}: damaged manifest: not valid JSON ({_short(exc)})") from None
    try:
        validate_manifest(m)
    except ManifestError as exc:
        first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
        raise ManifestError(f"{storage.url(rel)}: damaged manifest: {_short(first)}") from None
    return m


def _short(value: Any, limit: int = 200) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


def list_published(storage: Storage) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every committed release (one whose manifest exists and is whole), oldest first, and
    the manifests that are damaged (each with its path and the problem)."""
    pattern = storage.full(layout.MANIFEST_GLOB)
    entries, damaged = [], []
    for path in storage.fs.glob(pattern):
        rel = path[len(storage.root_path) + 1:]
        try:
            m = read_manifest_file(storage, rel)
        except FileNotFoundError:
            continue  # deleted between the listing and the read
        except ManifestError as exc:
            damaged.append({"manifest": rel, "error": str(exc)})
            continue
        entries.append(
            {
                "id": m["release"],
                "parent": m.get("parent"),
                "created": m["created"],
                "published": m["published"],
                "manifest": rel,
                "documents": m["totals"]["documents"],
                "tokens": m["totals"]["tokens"],
                "config_sha256": m["config_sha256"],
            }
        )
    return sorted(entries, key=lambda e: (e["published"], e["id"])), sorted(damaged, key=lambda d: d["manifest"])


def catalog_of(storage: Storage) -> dict[str, Any]:
    """The catalog the committed manifests make (nothing written)."""
    releases, damaged = list_published(storage)
    catalog: dict[str, Any] = {"releases": releases, "latest": releases[-1]["id"] if releases else None}
    if damaged:
        catalog["damaged"] = damaged
    return catalog


def rebuild_catalog(storage: Storage) -> dict[str, Any]:
    """The catalog is derived from the committed manifests, so a lost race between two
    publishers heals at the next publish instead of losing a release. A damaged manifest is
    skipped and named under ``damaged``; it never stops the rebuild."""
    catalog = catalog_of(storage)
    try:
        unchanged = storage.read_bytes(layout.CATALOG) == canonical_json(catalog)
    except FileNotFoundError:
        unchanged = False
    if not unchanged:  # a rerun of a published release touches no file when nothing is amiss
        storage.write_json(layout.CATALOG, catalog)
    return catalog


def read_catalog(storage: Storage) -> dict[str, Any]:
    """The catalog; one that is missing its fields or is not JSON (a truncated write by
    another tool) is derived again from the manifests, in memory."""
    try:
        catalog = storage.read_json_or_none(layout.CATALOG)
    except (ValueError, UnicodeDecodeError, RecursionError):
        catalog = False
    if catalog is None:
        return {"releases": [], "latest": None}
    if not _catalog_ok(catalog):
        return catalog_of(storage)
    return catalog


def _catalog_ok(catalog: Any) -> bool:
    return (isinstance(catalog, dict) and isinstance(catalog.get("releases"), list)
            and all(isinstance(e, dict) and isinstance(e.get("id"), str) and isinstance(e.get("manifest"), str)
                    for e in catalog["releases"])
            and (catalog.get("latest") is None or isinstance(catalog.get("latest"), str)))
