"""The release manifest (DESIGN §5): built from the steps' markers, validated against the
JSON Schema in ``tasks/manifest.schema.json`` before it is written."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema

from tasks.storage import canonical_json

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


class ManifestError(ValueError):
    """A manifest does not match the schema."""


@cache
def manifest_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate_manifest(manifest: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(manifest_schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        lines = [f"  {'/'.join(str(p) for p in e.path) or '(root)'}: {e.message}" for e in errors[:20]]
        raise ManifestError("manifest does not match manifest.schema.json:\n" + "\n".join(lines))


@cache
def code_version() -> dict[str, Any]:
    try:
        version = metadata.version("corpus-refinery")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"package": "corpus-refinery", "version": version, "git_commit": commit}


def config_sha256(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config)).hexdigest()


def add_funnel(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Sum two per-stage funnel records."""
    out = dict(total) if total else {"docs_in": 0, "docs_out": 0, "tokens_in": 0, "tokens_out": 0, "modified": 0,
                                     "dropped": {}}
    for key in ("docs_in", "docs_out", "tokens_in", "tokens_out", "modified"):
        out[key] = out.get(key, 0) + part.get(key, 0)
    dropped = dict(out.get("dropped", {}))
    for reason, count in part.get("dropped", {}).items():
        dropped[reason] = dropped.get(reason, 0) + count
    out["dropped"] = dict(sorted(dropped.items()))
    return out


def summarize(manifest: dict[str, Any]) -> str:
    """A readable summary for ``refinery manifest``."""
    lines = [
        f"release   {manifest['release']}  (parent: {manifest.get('parent') or '-'})",
        f"created   {manifest['created']}   published {manifest['published']}",
        f"code      {manifest['code']['version']} @ {(manifest['code'].get('git_commit') or 'unknown')[:12]}",
        f"flow run  {manifest.get('flow_run_id') or '-'}",
        f"config    sha256 {manifest['config_sha256'][:16]}",
        *([f"stages    {' → '.join(manifest['stages'])}"] if manifest.get("stages") else []),
        f"totals    {manifest['totals']['documents']:,} documents, {manifest['totals']['tokens']:,} words, "
        + (f"{manifest['totals']['model_tokens']:,} model tokens ({manifest.get('tokenizer')}), "
           if "model_tokens" in manifest["totals"] else "")
        + f"{manifest['totals']['bytes']:,} bytes in {len(manifest['outputs']['documents'])} files",
        "",
        f"{'stage':<14}{'docs in':>12}{'docs out':>12}{'dropped':>10}{'tokens out':>14}{'seconds':>10}",
    ]
    for st in manifest["funnel"]:
        dropped = sum(st["dropped"].values())
        secs = manifest["timing"].get(st["stage"], 0.0)
        lines.append(
            f"{st['stage']:<14}{st['docs_in']:>12,}{st['docs_out']:>12,}{dropped:>10,}{st['tokens_out']:>14,}{secs:>10.1f}"
        )
        for reason, count in st["dropped"].items():
            lines.append(f"    {reason}: {count:,}")
    lines.append("")
    lines.append("sources")
    for name, s in manifest["sources"].items():
        lines.append(f"  {name:<30}{s['documents']:>10,} docs {s['tokens']:>14,} tokens")
    if manifest["failures"]:
        lines.append("")
        lines.append("failures")
        for f in manifest["failures"]:
            lines.append(f"  [{f['stage']}] {f['error']}")
    ex = manifest.get("dedup", {}).get("exact")
    if ex:
        lines.append("")
        lines.append(
            f"exact dedup: {ex['duplicates']:,} duplicates in {ex['groups']:,} groups "
            f"(rate {ex['duplicate_rate']:.4f}, key {ex['key']})"
        )
    return "\n".join(lines)
