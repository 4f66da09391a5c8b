"""scripts/compare_releases.py, the before/after check of speed work: it passes two copies of
one release and names what differs between two that are not the same."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import shared

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_releases.py"


def _script():
    spec = importlib.util.spec_from_file_location("compare_releases", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _release(root: Path) -> None:
    docs = root / "releases" / "r1" / "documents" / "wiki"
    docs.mkdir(parents=True)
    table = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"))
    pq.write_table(table, docs / "part-00000.parquet", compression="zstd")
    manifest = {"release": "r1", "totals": {"documents": table.num_rows}, "timing": {"ingest": 1.0},
                "published": "2026-11-30T00:00:00+00:00", "code": {"git_commit": "a"}}
    (root / "releases" / "r1" / "manifest.json").write_text(json.dumps(manifest))


def test_two_copies_agree_and_a_changed_file_or_figure_is_named(tmp_path, capsys):
    compare = _script()
    a, b = tmp_path / "a", tmp_path / "b"
    _release(a)
    shutil.copytree(a, b)
    # what differs between two runs by nature is left out
    m = json.loads((b / "releases/r1/manifest.json").read_text())
    m.update(timing={"ingest": 2.0}, published="2026-11-30T01:00:00+00:00", code={"git_commit": "b"})
    (b / "releases/r1/manifest.json").write_text(json.dumps(m))
    assert compare.main([str(a), str(b), "r1"]) == 0
    assert "2 files compared, 0 differences" in capsys.readouterr().out
    doc = b / "releases/r1/documents/wiki/part-00000.parquet"
    data = bytearray(doc.read_bytes())
    data[len(data) // 2] ^= 1
    doc.write_bytes(bytes(data))
    m["totals"]["documents"] -= 1
    (b / "releases/r1/manifest.json").write_text(json.dumps(m))
    (b / "releases/r1/urls.txt").write_text("x\n")
    assert compare.main([str(a), str(b), "r1"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [f"only in {b}: urls.txt", "differs: documents/wiki/part-00000.parquet",
                       "manifest differs: totals"]
