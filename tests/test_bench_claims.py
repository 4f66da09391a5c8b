"""Every benchmark figure README.md quotes is one that bench/results/ holds.

The README's "Benchmarks" section is read bullet by bullet; a bullet that links results files
(``bench/results/<name>.json``) may quote only numbers found in those files: a numeric value
at the precision shown, or a byte count shown in MB / GB (10^6 / 10^9 bytes), or a fraction
shown as a percentage. Numbers in code spans (commands, flags) and link targets are not
figures, nor are the few that name a setting rather than a measurement (``J ≥ 0.8``, "2-core",
"5×" targets written as "targets ..."), which the bullet must then spell as listed below.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RESULTS = REPO / "bench" / "results"

_NUMBER = re.compile(r"(?<![\w.])[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w|\.\d)")
_VERSION = re.compile(r"(?<![\w.])\d+\.\d+\.\d+(?!\w|\.\d)")
# Numbers that name a setting or a unit, not a measured figure.
_NOT_FIGURES = [
    re.compile(r"J ≥ \d+(?:\.\d+)?"),
    re.compile(r"\d+-core"),
    re.compile(r"\d+ ?bands? × \d+ ?rows?"),
    re.compile(r"\d+-grams?"),
    re.compile(r"10\^\d+"),
    re.compile(r"2\^\d+"),
]


def benchmark_bullets() -> list[str]:
    text = README.read_text()
    start = text.index("\n## Benchmarks")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    bullets, current = [], []
    for line in section.splitlines():
        if line.startswith("- "):
            if current:
                bullets.append("\n".join(current))
            current = [line]
        elif current:
            current.append(line)
    if current:
        bullets.append("\n".join(current))
    return bullets


def _leaves(obj) -> list:
    """Every value in a results file: numbers as floats, strings (package versions) as they are."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _leaves(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _leaves(v)]
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        return []
    return [float(obj)]


def _shown(value: float, decimals: int) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def quoted_versions(bullet: str) -> list[str]:
    return _VERSION.findall(re.sub(r"`[^`]*`", " ", bullet))


def quoted_figures(bullet: str) -> list[str]:
    text = re.sub(r"`[^`]*`", " ", bullet)                 # commands and flags
    text = _VERSION.sub(" ", text)                          # package versions: checked apart
    text = re.sub(r"\]\([^)]*\)", "]", text)                # link targets
    text = re.sub(r"\[bench/results/[^\]]*\]", " ", text)   # link texts naming a results file
    for pattern in _NOT_FIGURES:
        text = pattern.sub(" ", text)
    return _NUMBER.findall(text)


def matches(figure: str, leaves: list[float], context: str) -> bool:
    shown = Decimal(figure.replace(",", "").lstrip("+"))
    decimals = max(0, -shown.as_tuple().exponent)
    candidates = [v for v in leaves if isinstance(v, float)]
    after = context[context.index(figure) + len(figure):].lstrip()[:3]
    if after.startswith("GB"):
        candidates += [v / 1e9 for v in candidates]
    if after.startswith("MB"):
        candidates += [v / 1e6 for v in candidates]
    if after.startswith("%"):
        candidates += [v * 100 for v in candidates]
    return any(_shown(abs(v), decimals) == abs(shown) for v in candidates)


def _cases():
    for bullet in benchmark_bullets():
        files = sorted(set(re.findall(r"\(bench/results/([\w.-]+\.json)\)", bullet)))
        if files:
            yield pytest.param(bullet, files, id=",".join(files))


def test_readme_has_benchmark_bullets_with_results():
    cases = list(_cases())
    assert cases, "README.md's Benchmarks section links no bench/results/*.json file"
    assert any("minhash_vs_datatrove" in f for c in cases for f in c.values[1])


@pytest.mark.parametrize(("bullet", "files"), list(_cases()))
def test_readme_figures_are_in_the_linked_results(bullet: str, files: list[str]):
    leaves: list[float] = []
    for name in files:
        path = RESULTS / name
        assert path.exists(), f"README.md links {path}, which does not exist"
        leaves += _leaves(json.loads(path.read_text()))
    missing = [f for f in quoted_figures(bullet) if not matches(f, leaves, bullet)]
    missing += [v for v in quoted_versions(bullet) if v not in leaves]
    assert not missing, f"README.md quotes {missing}, not found in {files}:\n{bullet}"


def test_regenerated_results_name_their_commit_and_units():
    """Results files written by the current scripts record the commit they measured."""
    for name in ("minhash_vs_datatrove_10k.json", "signature_throughput.json", "ingest_throughput.json"):
        data = json.loads((RESULTS / name).read_text())
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", data.get("commit", "")), f"{name} records no commit"
        assert data.get("units", "").startswith("MB = 10^6 bytes"), f"{name} does not say its units"


def test_the_checker_rejects_a_figure_that_is_not_in_the_results():
    leaves = [4459.0, 22.43, 0.9944, 138692277.0]
    bullet = "22.4 s (4,459 docs/s), recall 0.994, 139 MB, and 31.0× somewhere, with pkg 1.2.3 on 10k docs"
    found = {f: matches(f, leaves, bullet) for f in quoted_figures(bullet)}
    assert found == {"22.4": True, "4,459": True, "0.994": True, "139": True, "31.0": False}
    assert quoted_versions(bullet) == ["1.2.3"]


def test_peak_rss_leaves_out_the_excluded_tree():
    """The per-tool memory sampler: a server-like child counts in ``peak`` only."""
    import subprocess
    import sys
    import time

    from bench.common import MB, PeakRSS

    # the child says when its memory is in place and holds it until told to go, so that the
    # sampler surely sees it however slowly a loaded machine starts Python
    child = subprocess.Popen([sys.executable, "-c", "b = bytearray(200_000_000); print('ready', flush=True); input()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with PeakRSS(exclude=lambda: {child.pid}) as mem:
            deadline = time.monotonic() + 120
            while mem.peak - mem.peak_excluding < 150 * MB and time.monotonic() < deadline:
                time.sleep(0.2)  # at least one whole sample, however busy the machine
    finally:
        child.communicate("go\n", timeout=60)
    assert mem.peak - mem.peak_excluding > 150 * MB


def test_commit_names_this_checkout():
    from bench.common import commit

    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit())


def test_step_cpu_keep_replaces_only_its_own_output(tmp_path):
    """``bench/step_cpu.py --keep DIR`` deleted any DIR it was given: a folder with other
    content, or a file, is refused and left as it was; a missing or empty folder, or one an
    earlier --keep wrote, becomes the outputs' folder (the corpus root under it, emptied)."""
    from bench.step_cpu import KEEP_MARK, keep_dir

    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "a.txt").write_text("keep me")
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me too")
    for path in (mine, a_file, mine / "notes" / "a.txt"):
        with pytest.raises(SystemExit, match="refusing"):
            keep_dir(path)
    assert (mine / "notes" / "a.txt").read_text() == "keep me" and a_file.read_text() == "keep me too"

    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "new" / "out", tmp_path / "empty"):
        root = keep_dir(path)
        assert root == path / "corpus" and (path / KEEP_MARK).is_file() and not root.exists()
        root.mkdir()
        (root / "part-00000.parquet").write_bytes(b"an earlier run's output")
        assert keep_dir(path) == root and not root.exists() and (path / KEEP_MARK).is_file()
