"""Compare two runs' published release byte for byte: every file under ``releases/<id>/``
(documents, rejects, attributes, URL list) and the manifest's figures, less what differs
from run to run by nature (timings, the Ray cluster, the flow run, the publishing time, the
code's commit). For changes meant to leave the release alone (speed work): run the same config
twice, before and after the change, and compare.

    python scripts/compare_releases.py ROOT_A ROOT_B RELEASE

Both runs must share the release id and its creation time (the documents' ``added`` default
and the manifest's ``created`` come from it): run the second with the first's
``state/work/<id>/run.json`` copied into its output before it starts, or run the first, move
its output away, copy that file back and run again into the same output path (the config
names the output, and the manifest records the config). Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# manifest keys that differ between two runs of the same config by nature
VOLATILE = ("timing", "cluster", "flow_run_id", "published", "code")


def manifest_figures(path: Path) -> dict[str, Any]:
    manifest = json.loads(path.read_text())
    return {k: v for k, v in manifest.items() if k not in VOLATILE}


def differences(a: Path, b: Path, release: str) -> list[str]:
    ra, rb = a / "releases" / release, b / "releases" / release
    files_a = {p.relative_to(ra) for p in ra.rglob("*") if p.is_file()}
    files_b = {p.relative_to(rb) for p in rb.rglob("*") if p.is_file()}
    out = [f"only in {a}: {p}" for p in sorted(files_a - files_b)]
    out += [f"only in {b}: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        if rel.name in ("manifest.json", "report.html"):
            continue  # the manifest is compared below; the report shows its timings
        if (ra / rel).read_bytes() != (rb / rel).read_bytes():
            out.append(f"differs: {rel}")
    ma, mb = manifest_figures(ra / "manifest.json"), manifest_figures(rb / "manifest.json")
    for key in sorted(set(ma) | set(mb)):
        if ma.get(key) != mb.get(key):
            out.append(f"manifest differs: {key}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root_a", type=Path)
    ap.add_argument("root_b", type=Path)
    ap.add_argument("release")
    args = ap.parse_args(argv)
    diff = differences(args.root_a, args.root_b, args.release)
    files = sum(1 for p in (args.root_a / "releases" / args.release).rglob("*") if p.is_file())
    for line in diff:
        print(line)
    print(f"{files} files compared, {len(diff)} differences")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
