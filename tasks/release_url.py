"""Resolve what users type for a release: a release URL, its manifest, or a corpus root."""

from __future__ import annotations

from typing import Any

from tasks import layout
from tasks.publish import read_catalog, read_manifest_file
from tasks.storage import Storage, StorageSpec, endpoint_from_env


def split_release_url(url: str) -> tuple[str, str | None]:
    """(corpus root, release id or None) of ``url``."""
    url = url.rstrip("/")
    if url.endswith("/manifest.json"):
        url = url[: -len("/manifest.json")]
    head, sep, tail = url.rpartition("/releases/")
    if sep and tail and "/" not in tail:
        return head, tail
    return url, None


def open_release(url: str) -> tuple[Storage, dict[str, Any]]:
    """The corpus root's storage and the manifest of the release ``url`` names (a corpus root
    means its latest release)."""
    root, release = split_release_url(url)
    storage = StorageSpec(root, endpoint_from_env()).open()
    if release is None:
        release = read_catalog(storage).get("latest")
        if release is None:
            raise FileNotFoundError(f"{url}: no published release (no catalog.json with a latest release)")
    try:
        return storage, read_manifest_file(storage, layout.manifest_path(release))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{storage.url(layout.manifest_path(release))}: no manifest: release {release} is not published"
        ) from None


def read_manifest(url: str) -> dict[str, Any]:
    return open_release(url)[1]
