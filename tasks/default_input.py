"""The bundled default input: real text already present wherever Refinery is installed.

The project ships no third-party corpus. The default job instead collects the long
descriptions and the license files of the installed Python distributions: real prose, with
real exact duplicates (the same license text in many packages) and boilerplate. It is
written as raw Parquet (several parts per source, so that the run has shards to spread).
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pyarrow as pa

from tasks.storage import Storage, StorageSpec

LICENSE_NAME = re.compile(r"(^|/)(LICEN[CS]E|COPYING|NOTICE|AUTHORS)[^/]*$", re.IGNORECASE)
PARTS = 4


def _collect() -> tuple[list[dict], list[dict]]:
    descriptions, licenses = [], []
    seen: set[tuple[str, str]] = set()
    for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name, version = dist.metadata["Name"] or "unknown", dist.version or ""
        if (name.lower(), version) in seen:
            continue
        seen.add((name.lower(), version))
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
        if body.strip():
            descriptions.append({"package": name, "version": version, "kind": "description",
                                 "summary": dist.metadata.get("Summary"), "text": body})
        for f in dist.files or []:
            if LICENSE_NAME.search(str(f)):
                try:
                    text = f.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if text and text.strip():
                    licenses.append({"package": name, "version": version, "kind": "license", "path": str(f),
                                     "text": text})
    return descriptions, licenses


def build_default_input(folder: str | Path) -> str:
    """Write the default input under ``folder`` (deterministic for a given environment) and
    return its URL."""
    storage = Storage(StorageSpec(str(folder)))
    descriptions, licenses = _collect()
    for source, rows in (("package_descriptions", descriptions), ("package_licenses", licenses)):
        if not rows:
            continue
        per = max(1, -(-len(rows) // PARTS))
        for i in range(0, len(rows), per):
            storage.write_parquet(f"{source}/part-{i // per:05d}.parquet", pa.Table.from_pylist(rows[i:i + per]))
    return str(folder)
