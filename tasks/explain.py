"""`refinery explain`: what happened to one document, across the releases of a corpus root."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from tasks import layout
from tasks.manifest import ManifestError
from tasks.publish import read_catalog, read_manifest_file
from tasks.release_url import open_release
from tasks.storage import Storage


def _find_all(storage: Storage, files: list[str], doc_id: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in files:
        t = storage.read_parquet(path)
        hit = t.filter(pc.equal(t.column("id"), doc_id))
        out += [(path, row) for row in hit.to_pylist()]
    return out


def _find(storage: Storage, files: list[str], doc_id: str) -> tuple[str, dict[str, Any]] | None:
    found = _find_all(storage, files, doc_id)
    return found[0] if found else None


def _attributes(storage: Storage, release: str, doc_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in storage.list(layout.attributes_dir(release), ".parquet"):
        found = _find(storage, [path], doc_id)
        if found:
            out.update({k: v for k, v in found[1].items() if k != "id"})
    return out


def _changes(storage: Storage, manifest: dict[str, Any], doc_id: str, final: str) -> list[dict[str, Any]]:
    """Each stage that changed the document: its text before and after that stage, and the diff."""
    import difflib

    stages = [st["stage"] for st in manifest["funnel"]]
    befores = []
    for stage in stages:
        files = [f["path"] for f in manifest["outputs"].get("changes", [])
                 if f["path"].split("/")[3:4] == [stage]]
        found = _find(storage, files, doc_id)
        if found:
            befores.append((stage, found[1]["text"]))
    out = []
    for k, (stage, before) in enumerate(befores):
        after = befores[k + 1][1] if k + 1 < len(befores) else final
        diff = list(difflib.unified_diff(before.split("\n"), after.split("\n"), f"before {stage}", f"after {stage}",
                                         lineterm="", n=1))
        out.append({"stage": stage, "before": before, "after": after, "diff": diff})
    return out


def original_page(storage: Storage, metadata: str | None) -> dict[str, Any]:
    """For a document extracted from a web page: the page's HTML, read from its input by the
    pointer ingest kept (a WARC record's byte range, or a file's row), not from a copy."""
    import json

    try:
        web = (json.loads(metadata) if metadata else {}).get("web")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(web, dict) or web.get("kind") != "html":
        return {}
    from tasks.originals import fetch_original

    try:
        return {"original": {"pointer": web, "html": fetch_original(web, storage.spec.endpoint_url)}}
    except Exception as exc:  # noqa: BLE001 - the input may be gone; say so, explain the rest
        return {"original": {"pointer": web, "error": f"{web.get('uri')}: {type(exc).__name__}: {exc}"}}


def explain_in_release(storage: Storage, manifest: dict[str, Any], doc_id: str) -> dict[str, Any] | None:
    """The document's fate in one release, or None when the release never saw it."""
    release = manifest["release"]
    stages = [st["stage"] for st in manifest["funnel"]]
    # Inputs without ids take the id of their content, so exact copies share an id: the copy
    # that went furthest is the document; the others are reported as identical copies.
    rejects = _find_all(storage, [f["path"] for f in manifest["outputs"]["rejects"]], doc_id)
    rejects.sort(key=lambda fr: stages.index(fr[1]["stage"]) if fr[1]["stage"] in stages else -1, reverse=True)
    doc = _find(storage, [f["path"] for f in manifest["outputs"]["documents"]], doc_id)
    if doc:
        changes = _changes(storage, manifest, doc_id, doc[1]["text"])
        return {"release": release, "status": "published", "file": doc[0], "stages": stages,
                "text": doc[1]["text"], "source": doc[1]["source"],
                "source_id": doc[1].get("source_id"), "changed_by": [c["stage"] for c in changes],
                "changes": changes, "attributes": _attributes(storage, release, doc_id),
                "identical_copies_dropped": len(rejects), **original_page(storage, doc[1].get("metadata"))}
    if rejects:
        rej = rejects[0]
        r = rej[1]
        stage = r["stage"]
        out = {"release": release, "status": "dropped", "stage": stage, "reason": r["reason"],
               "detail": r["detail"], "file": rej[0], "source": r["source"], "text": r["text"],
               "source_id": r.get("source_id"),
               "stages": stages[: stages.index(stage) + 1] if stage in stages else [stage],
               "input": {"uri": r["input_uri"], "row": r["input_row"]},
               "attributes": _attributes(storage, release, doc_id), "identical_copies_dropped": len(rejects) - 1}
        if r["survivor_id"]:
            survivor_release = release
            if r["detail"] and " in release " in r["detail"]:
                survivor_release = r["detail"].rsplit(" in release ", 1)[1]
            out["duplicate_of"] = {"id": r["survivor_id"], "release": survivor_release}
        return out
    return None


def ids_by_source_id(storage: Storage, manifest: dict[str, Any], source_id: str) -> list[str]:
    """Refinery ids of the documents (published or dropped) whose source id is ``source_id``:
    a takedown request names the source's id, not ours."""
    out: list[str] = []
    for f in manifest["outputs"]["documents"] + manifest["outputs"]["rejects"]:
        t = storage.read_parquet(f["path"])
        if "source_id" in t.column_names:  # releases before source ids were kept have none
            out += t.filter(pc.equal(t.column("source_id"), source_id)).column("id").to_pylist()
    return sorted(set(i for i in out if i is not None))


def explain(release_url: str, doc_id: str) -> dict[str, Any]:
    """The document in the named release, what it duplicated (with that document's text),
    and its fate in every other release of the corpus root. ``doc_id`` is refinery's id or,
    when no document has that id, the source's own id."""
    storage, manifest = open_release(release_url)
    here = explain_in_release(storage, manifest, doc_id)
    by_source_id: list[str] = []
    if here is None:
        by_source_id = ids_by_source_id(storage, manifest, doc_id)
        if by_source_id:
            doc_id = by_source_id[0]
            here = explain_in_release(storage, manifest, doc_id)
    history = []
    skipped = []
    for entry in read_catalog(storage)["releases"]:
        if entry["id"] == manifest["release"]:
            continue
        try:
            other = read_manifest_file(storage, entry["manifest"])
        except (FileNotFoundError, ManifestError) as exc:
            skipped.append(str(exc))
            continue
        found = explain_in_release(storage, other, doc_id)
        if found:
            history.append({k: found[k] for k in ("release", "status") if k in found}
                           | ({"stage": found["stage"], "reason": found["reason"]} if found["status"] == "dropped"
                              else {}))
    if here and "duplicate_of" in here:
        dup = here["duplicate_of"]
        try:
            other = manifest if dup["release"] == manifest["release"] else read_manifest_file(
                storage, layout.manifest_path(dup["release"]))
        except (FileNotFoundError, ManifestError) as exc:
            other = None
            skipped.append(str(exc))
        found = explain_in_release(storage, other, dup["id"]) if other is not None else None
        if found:
            dup["status"] = found["status"]
            dup["text"] = found["text"]
    return {"id": doc_id, "release": manifest["release"], "found": here is not None, "here": here,
            "other_releases": history, "unreadable_releases": skipped,
            **({"matched_source_id": by_source_id} if by_source_id else {})}


def render(result: dict[str, Any], width: int = 300) -> str:
    """Readable text for the terminal."""
    lines = [f"document {result['id']} in release {result['release']}"]
    if result.get("matched_source_id"):
        ids = result["matched_source_id"]
        lines.append(f"  found by source id ({len(ids)} document(s): {', '.join(ids)})")
    here = result["here"]
    if not here:
        lines.append("  not seen by this release")
    else:
        lines.append(f"  status:  {here['status']}" + (f" at stage {here['stage']}: {here['reason']}"
                                                      if here["status"] == "dropped" else ""))
        if here.get("detail"):
            lines.append(f"  detail:  {here['detail']}")
        sid = f" (source id {here['source_id']!r})" if here.get("source_id") is not None else ""
        lines.append(f"  source:  {here['source']}{sid}   stages: {' → '.join(here['stages'])}")
        if here["status"] == "published":
            lines.append("  changed: " + (", ".join(here["changed_by"]) or "no stage modified its text"))
            for change in here.get("changes", []):
                diff = change["diff"]
                lines.append(f"  diff of {change['stage']} ({len(diff)} lines):")
                lines += [f"    {d[:width]}" for d in diff[:60]]
                if len(diff) > 60:
                    lines.append(f"    … {len(diff) - 60} more lines (--json for all)")
        if here.get("identical_copies_dropped"):
            lines.append(f"  copies:  {here['identical_copies_dropped']} identical copies with this id were dropped")
        orig = here.get("original")
        if orig:
            where = orig["pointer"].get("offset", orig["pointer"].get("row"))
            got = f"{len(orig['html']):,} chars of HTML (--json for it)" if "html" in orig else orig["error"]
            lines.append(f"  page:    {orig['pointer'].get('uri')} @ {where}: {got}")
        for name, value in sorted(here.get("attributes", {}).items()):
            lines.append(f"  attr     {name} = {value}")
        text = (here.get("text") or "").replace("\n", " ")
        lines.append(f"  text:    {text[:width]}{'…' if len(text) > width else ''}")
        dup = here.get("duplicate_of")
        if dup:
            lines.append(f"  duplicate of {dup['id']} (release {dup['release']}, {dup.get('status', 'unknown')})")
            if dup.get("text"):
                t = dup["text"].replace("\n", " ")
                lines.append(f"    its text: {t[:width]}{'…' if len(t) > width else ''}")
    for h in result["other_releases"]:
        extra = f" at {h['stage']}: {h['reason']}" if h["status"] == "dropped" else ""
        lines.append(f"  release {h['release']}: {h['status']}{extra}")
    for problem in result.get("unreadable_releases", []):
        lines.append(f"  not searched: {problem}")
    return "\n".join(lines)
