"""Ingest on real shared data: formats, column maps, normalization, stable ids, rejects."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tasks.config import IngestConfig, InputSpec, PipelineConfig
from tasks.ingest import InputError, Shard, ingest_shard, plan_shards, stable_id
from tests.conftest import shared
from tests.corpora import write_jsonl

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def _shard(uri, fmt, source="src", columns=None, row_groups=None) -> Shard:
    return Shard(0, str(uri), fmt, source, InputSpec(uri=str(uri), columns=columns or {}).columns, row_groups)


def _ingest(shard: Shard, **cfg):
    return ingest_shard(shard, IngestConfig(**cfg), "stripped", "rel-1", NOW)


def test_parquet_with_column_map_keeps_every_row_and_packs_metadata():
    path = shared("cc_web_samples/cc_web_samples.parquet")
    res = _ingest(_shard(path, "parquet", "cc_web", {"text": "text", "id": "id"}))
    source = pq.read_table(path)
    assert res.work.num_rows + res.rejects.num_rows == source.num_rows
    assert res.stats["rows_read"] == source.num_rows
    from tasks.schema import word_counts

    assert res.words.equals(word_counts(res.work.column("text")))  # counted once, before the rejects split
    # unmapped columns survive in the metadata JSON
    import json

    meta = json.loads(res.work.column("metadata")[0].as_py())
    assert {"collection", "url", "html", "meta_json"} <= set(meta)
    assert set(res.work.column("source").to_pylist()) == {"cc_web"}
    assert set(res.work.column("version").to_pylist()) == {"rel-1"}
    # the stable id is the hash of (source, source id)
    first_src_id = source.column("id")[0].as_py()
    assert res.work.column("id")[0].as_py() == stable_id("cc_web", first_src_id, "")


def test_ids_are_stable_across_runs_and_formats(tmp_path):
    table = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).slice(0, 300)
    rows = table.select(["page_id", "text", "title"]).to_pylist()
    pq_path = tmp_path / "wiki.parquet"
    pq.write_table(table, pq_path)
    a = _ingest(_shard(pq_path, "parquet", "wiki", {"text": "text", "id": "page_id"}))
    for comp, name in ((None, "wiki.jsonl"), ("gz", "wiki.jsonl.gz"), ("zst", "wiki.jsonl.zst")):
        path = write_jsonl(tmp_path / name, rows, comp)
        b = _ingest(_shard(path, "jsonl", "wiki", {"text": "text", "id": "page_id"}))
        assert b.work.column("id").to_pylist() == a.work.column("id").to_pylist(), name
        assert b.work.column("text").to_pylist() == a.work.column("text").to_pylist(), name
    again = _ingest(_shard(pq_path, "parquet", "wiki", {"text": "text", "id": "page_id"}))
    assert again.work.equals(a.work)


def test_unicode_and_newlines_are_normalized(tmp_path):
    texts = pq.read_table(shared("cc_web_samples/cc_web_samples.parquet")).column("text").to_pylist()[:50]
    # decompose every text (NFD) and use Windows / old-Mac line endings
    rows = [{"text": unicodedata.normalize("NFD", t).replace("\n", "\r\n" if i % 2 else "\r")}
            for i, t in enumerate(texts)]
    res = _ingest(_shard(write_jsonl(tmp_path / "x.jsonl", rows), "jsonl"))
    out = res.work.column("text").to_pylist()
    assert out == [unicodedata.normalize("NFC", t) for t in texts]
    assert not any("\r" in t for t in out)


def test_bad_rows_become_rejects_with_reasons_and_valid_rows_survive(tmp_path):
    good = [{"text": t} for t in pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"))
            .column("text").to_pylist()[:20]]
    lines = [json_line(r) for r in good[:10]]
    lines += [b'{"text": 42}', b'{"no_text": "x"}', b"{not json", b"[1, 2]", b'{"text": "   "}',
              b'{"text": "caf\xe9 latin-1"}', b'{"text": null}']
    lines += [json_line(r) for r in good[10:]]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    res = _ingest(_shard(path, "jsonl"))
    assert res.work.num_rows == 20
    reasons = res.rejects.column("reason").to_pylist()
    assert len(reasons) == 7
    assert "text is not a string (int)" in reasons
    assert reasons.count("missing text") == 2
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert "not a JSON object (list)" in reasons
    assert "empty text" in reasons
    assert any(r.startswith("invalid UTF-8") for r in reasons)
    assert set(res.rejects.column("input_uri").to_pylist()) == {str(path)}
    assert res.stats["rows_read"] == 27


def test_parquet_strings_that_are_not_utf8_become_rejects(tmp_path):
    """Parquet does not check UTF-8: the bad values are named rejects, every other row stays."""
    texts = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).column("text").to_pylist()[:30]
    blobs = [t.encode() for t in texts]
    blobs[4] = b"\xff" + blobs[4]
    blobs[17] = blobs[17][:10] + b"\xc3(" + blobs[17][10:]
    offsets = [0]
    for b in blobs:
        offsets.append(offsets[-1] + len(b))
    raw = pa.Array.from_buffers(pa.string(), len(blobs), [None, pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1]),
                                                          pa.py_buffer(b"".join(blobs))])
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": raw}), path)
    res = _ingest(_shard(path, "parquet"))
    assert res.work.num_rows == 28
    assert sorted(res.rejects.column("reason").to_pylist()) == ["invalid UTF-8 at byte 0", "invalid UTF-8 at byte 10"]
    assert sorted(res.rejects.column("input_row").to_pylist()) == [4, 17]
    assert res.stats["rows_read"] == 30


def json_line(row) -> bytes:
    import json

    return json.dumps(row).encode()


def test_max_chars_rejects_long_documents(tmp_path):
    texts = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).column("text").to_pylist()[:100]
    res = _ingest(_shard(write_jsonl(tmp_path / "w.jsonl", [{"text": t} for t in texts]), "jsonl"), max_chars=500)
    assert res.work.num_rows == sum(len(t) <= 500 for t in texts)
    assert all(r.startswith("longer than max_chars") for r in res.rejects.column("reason").to_pylist())


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_bytes(shared("cc_web_samples/cc_web_samples.parquet").read_bytes()[:5000]),
         "not a readable Parquet file"),
        (lambda p: pq.write_table(pa.table({"body": ["x"]}), p), "no text column 'text'"),
        (lambda p: pq.write_table(pa.table({"text": [1, 2]}), p), "has type int64"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_unreadable_files_raise_an_error_naming_the_file(tmp_path, make, problem):
    path = tmp_path / "bad.parquet"
    make(path)
    with pytest.raises(InputError) as exc:
        _ingest(_shard(path, "parquet"))
    assert str(path) in str(exc.value) and problem in str(exc.value)


def test_corrupt_zstd_names_the_file(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl.zst", [{"text": "hello world"}] * 100, "zst")
    path.write_bytes(path.read_bytes()[:-20] + b"\x00" * 20)
    with pytest.raises(InputError, match=r"c\.jsonl\.zst: corrupt compressed stream"):
        _ingest(_shard(path, "jsonl"))


def test_plan_splits_large_parquet_by_row_group_and_keeps_row_numbers(tmp_path):
    table = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet"))
    path = tmp_path / "wiki.parquet"
    pq.write_table(table, path, row_group_size=1000)
    cfg = PipelineConfig(inputs=[InputSpec(uri=str(tmp_path), columns={"id": "page_id"})],
                         execution={"shard_rows": 2000})
    shards = plan_shards(cfg)
    assert len(shards) == 3 and [s.row_groups for s in shards] == [(0, 2), (2, 4), (4, 6)]
    assert {s.source for s in shards} == {tmp_path.name}
    results = [_ingest(s) for s in shards]
    rows = [r for res in results for r in res.work.column("input_row").to_pylist()]
    assert rows == list(range(table.num_rows))
    assert sum(r.work.num_rows for r in results) == table.num_rows


def test_plan_orders_files_and_names_sources(tmp_path):
    for name in ("b.jsonl", "a.jsonl.gz", "notes.txt"):
        write_jsonl(tmp_path / "docs" / name, [{"text": "x y z"}], "gz" if name.endswith(".gz") else None)
    cfg = PipelineConfig(inputs=[InputSpec(uri=str(tmp_path / "docs"))])
    shards = plan_shards(cfg)
    assert [s.uri.rsplit("/", 1)[1] for s in shards] == ["a.jsonl.gz", "b.jsonl"]
    assert {s.source for s in shards} == {"docs"}
    with pytest.raises(InputError, match="input not found"):
        plan_shards(PipelineConfig(inputs=[InputSpec(uri=str(tmp_path / "missing"))]))


def test_tokens_counted_in_the_word_pass_equal_the_tokenizer_on_the_published_rows(tmp_path, monkeypatch):
    """As the release's last map step, ingest counts the release's tokens in its word-count
    pass: rows it rejects (empty, blank) are left out, words and tokens equal counting the
    published texts apart; off, or without a tokenizer, nothing is counted."""
    from tasks import tokens
    from tasks.schema import word_counts
    from tasks.tokens_config import TokenizerConfig

    monkeypatch.setattr(tokens, "_LOADED", {})
    monkeypatch.setenv("REFINERY_TOKENIZER_CACHE", str(tmp_path / "cache"))
    texts = [t for t in pq.read_table(shared("cc_web_samples/cc_web_samples.parquet"), columns=["text"])
             .column("text").to_pylist() if t][:120]
    texts[3], texts[7], texts[9] = "", " \u00a0\n", "nbsp\u00a0joined\u2009thin \u3000ideographic"
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": texts}), path)
    shard = _shard(path, "parquet", "cc_web", {"text": "text"})
    res = ingest_shard(shard, IngestConfig(), None, "rel-1", NOW, TokenizerConfig())
    plain = ingest_shard(shard, IngestConfig(), None, "rel-1", NOW)
    assert res.work.equals(plain.work) and res.work.num_rows == len(texts) - 2
    assert res.words.equals(plain.words) and res.words.equals(word_counts(res.work.column("text")))
    assert res.tokenizer == tokens.load_tokenizer().name and plain.tokenizer is None and plain.model_tokens is None
    assert np.array_equal(res.model_tokens, tokens.load_tokenizer().count(res.work.column("text")))
    assert res.model_tokens.sum() > 10_000
    off = ingest_shard(shard, IngestConfig(), None, "rel-1", NOW, TokenizerConfig(enabled=False))
    assert off.model_tokens is None and off.tokenizer.startswith("off") and off.words.equals(plain.words)


def test_the_last_ingest_step_publishes_token_counts_on_both_paths(tmp_path, monkeypatch):
    """Ingest as the release's last map step counts the published documents' tokens in its
    word pass, with or without the cross-shard id check (two shards sharing ids): each file's
    model_tokens equal the tokenizer's count of that file's texts, and the words the funnel
    holds equal word_counts."""
    from tasks import tokens
    from tasks.ingest import plan_shards
    from tasks.schema import word_counts
    from tasks.steps import id_check_needed, id_reduce_step, ingest_read_step, ingest_step
    from tests.builders import pipeline_config, run_context

    monkeypatch.setattr(tokens, "_LOADED", {})
    monkeypatch.setenv("REFINERY_TOKENIZER_CACHE", str(tmp_path / "cache"))

    def second_pass(*args, **kwargs):
        raise AssertionError("the last ingest step counted tokens in a pass of their own, not in its word pass")

    monkeypatch.setattr(tokens, "release_counts", second_pass)
    src = pq.read_table(shared("cc_web_samples/cc_web_samples.parquet"), columns=["text", "id"])
    for checked in (False, True):
        folder = tmp_path / f"in-{checked}"
        folder.mkdir()
        pq.write_table(src.slice(0, 100), folder / "a.parquet")
        pq.write_table(src.slice(80 if checked else 100, 100), folder / "b.parquet")  # 20 ids again
        cfg = pipeline_config(tmp_path / f"out-{checked}", InputSpec(uri=str(folder), source="cc",
                                                                     columns={"text": "text", "id": "id"}))
        ctx = run_context(cfg)
        shards = plan_shards(cfg)
        assert id_check_needed(shards)
        uris = None
        if checked:
            for s in shards:
                ingest_read_step(ctx, s)
            for b in range(ctx.exact_buckets):
                id_reduce_step(ctx, b)
            uris = {s.index: s.uri for s in shards}
        published = 0
        for s in shards:
            marker = ingest_step(ctx, s, True, uris)
            assert marker["tokenizer"] == tokens.load_tokenizer().name
            for info in marker["documents"]:
                texts = pq.read_table(tmp_path / f"out-{checked}" / info["path"]).column("text")
                published += len(texts)
                assert info["model_tokens"] == int(tokens.load_tokenizer().count(texts).sum()) > 1000
                assert info["tokens"] == int(np.sum(word_counts(texts).to_numpy()))
        assert 150 < published <= (180 if checked else 200)  # the 20 repeated ids rejected when checked


def test_the_checked_ingest_hands_on_phase_1s_word_counts_and_its_file(tmp_path):
    """Ingest's second phase (ids checked across shards, another stage after it) takes the word
    counts phase 1 made instead of counting again: its funnel and its words attribute match a
    fresh count row by row, on the shard that lost rows to the check and on the one that kept
    all of them (whose work table is phase 1's file, linked, not written again); and a run whose
    phase 1 left no counts (resumed across the upgrade) counts them itself, to the same figures."""
    import os

    from tasks import layout
    from tasks.ingest import plan_shards
    from tasks.schema import word_counts
    from tasks.steps import id_reduce_step, ingest_read_step, ingest_step
    from tests.builders import pipeline_config, run_context

    src = pq.read_table(shared("cc_web_samples/cc_web_samples.parquet"), columns=["text", "id"])
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(src.slice(0, 100), folder / "a.parquet")
    pq.write_table(src.slice(80, 100), folder / "b.parquet")  # its first 20 ids are a's last 20
    named = src.slice(100, 1).to_pylist()[0]  # b's first row that is not a repeat
    markers = {}
    for counted_before in (True, False):
        root = tmp_path / f"out-{counted_before}"
        cfg = pipeline_config(root, InputSpec(uri=str(folder), source="cc", columns={"text": "text", "id": "id"}))
        ctx = run_context(cfg, created=NOW.isoformat())  # the same rejects' `added` in both runs
        shards = plan_shards(cfg)
        for s in shards:
            ingest_read_step(ctx, s)
            words_file = root / layout.work_path(ctx.release, "ingest_read_words", s.name)
            assert words_file.exists()
            if not counted_before:
                words_file.unlink()
        for b in range(ctx.exact_buckets):
            id_reduce_step(ctx, b)
        uris = {s.index: s.uri for s in shards}
        for s in shards:
            m = ingest_step(ctx, s, False, uris)
            work = pq.read_table(root / layout.work_path(ctx.release, "ingest", s.name))
            counts = word_counts(work.column("text"))
            assert m["funnel"]["tokens_out"] == int(np.sum(counts.to_numpy())) > 10_000
            attrs = pq.read_table(root / layout.attributes_path(ctx.release, "ingest", "cc", s.name))
            assert attrs.column("id").equals(work.column("id"))
            assert [v[0]["score"] for v in attrs.column("ingest__length__words").to_pylist()] == counts.to_pylist()
            markers[counted_before, s.name] = {k: v for k, v in m.items() if k not in ("seconds", "cpu_seconds")}
        a, b = shards
        a_work = root / layout.work_path(ctx.release, "ingest", a.name)
        assert os.stat(a_work).st_ino == os.stat(root / layout.work_path(ctx.release, "ingest_read", a.name)).st_ino
        b_work = pq.read_table(root / layout.work_path(ctx.release, "ingest", b.name))
        assert b_work.num_rows == 80 and markers[counted_before, b.name]["funnel"]["dropped"] == {"duplicate id": 20}
        row = b_work.filter(pa.compute.equal(b_work.column("source_id"), str(named["id"]))).to_pylist()
        assert len(row) == 1 and row[0]["text"] == unicodedata.normalize("NFC", named["text"]).replace("\r\n", "\n")
        attrs = pq.read_table(root / layout.attributes_path(ctx.release, "ingest", "cc", b.name)).to_pylist()
        (mine,) = [r for r in attrs if r["id"] == row[0]["id"]]
        assert mine["ingest__length__words"][0]["score"] == len(row[0]["text"].split()) > 50
    for s in ("00000", "00001"):
        assert markers[True, s] == markers[False, s]


_SHARED_PARQUET = ["cc_web_samples/cc_web_samples.parquet", "code_humaneval/code_humaneval.parquet",
                   "conversations_hh_rlhf/conversations_hh_rlhf.parquet",
                   "dclm_human_quality_dev/dclm_human_quality_dev.parquet",
                   "near_dup_pairs_exact_jaccard/docs_index.parquet",
                   "redpajama_cc_simplified/redpajama_cc_simplified.parquet",
                   "simple_wikipedia/simple_wikipedia.parquet", "web_pages_readability/web_pages_readability.parquet",
                   "web_pages_scrapinghub/web_pages_scrapinghub.parquet"]


def _row_metadata(table: pa.Table, keys: list[str]) -> list[str | None]:
    """The metadata JSON as read_parquet writes it row by row (its path for other types)."""
    from tasks.ingest import dump_metadata

    values = {k: table.column(k).to_pylist() for k in keys}
    return [dump_metadata({k: values[k][r] for k in keys}) for r in range(table.num_rows)]


def _first_difference(table: pa.Table, got: list, want: list) -> str | None:
    ids = table.column(table.column_names[0]).to_pylist()
    for r, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w:
            return f"row {r} ({table.column_names[0]} {ids[r]!r}): {g!r} != {w!r}"
    return None


@pytest.mark.parametrize("name", _SHARED_PARQUET)
def test_metadata_built_by_column_is_the_json_of_the_row_path(name):
    """Parquet metadata is built by column (orjson only for the values JSON escapes): on every
    Parquet file of the shared data, every column but the text as metadata (HTML with quotes
    and newlines, JSON in strings, integers, nulls among strings and integers), each row's JSON
    is the one the row-by-row path writes, byte for byte. These files hold strings and integers
    only: floats are not built by column (the next test checks they take the row path)."""
    from tasks.ingest import metadata_strings

    table = pq.read_table(shared(name))
    keys = [k for k in table.column_names if k != "text"]
    got = metadata_strings(table, keys)
    assert got is not None, name
    assert _first_difference(table, got, _row_metadata(table, keys)) is None
    escaped = sum(any(c in v for c in '"\\\n') for v in got)
    if name.startswith(("cc_web", "conversations")):
        assert escaped > 100  # the escaping rows were there to check


def test_metadata_with_timestamps_and_flags_is_the_json_of_the_row_path():
    """Timestamps of every unit Python's datetime holds (fractions of a second, before 1970,
    four-digit years below 1000, nulls) and booleans, beside simple_wikipedia's real titles and
    ids: the column-built JSON equals the row path's. A timestamp beyond year 9999 hands the
    whole column to the row path (which makes that row bad: tests/test_hostile.py), and so does
    a float (orjson and Arrow write floats differently: the Jaccard pairs)."""
    from tasks.ingest import metadata_strings

    wiki = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).slice(0, 400)
    n = wiki.num_rows
    rng = np.random.default_rng(5)
    seconds = rng.integers(-62_135_596_800, 253_402_300_799, n)
    seconds[:4] = [-62_135_596_800, -30_610_224_001, 0, 253_402_300_799]  # 0001, 0999, 1970, 9999
    cols = {"page_id": wiki.column("page_id"), "title": wiki.column("title"),
            "flag": pa.array(rng.integers(0, 2, n).astype(bool), mask=rng.random(n) < 0.1)}
    for unit, ticks in (("s", 1), ("ms", 1_000), ("us", 1_000_000)):
        frac = rng.integers(0, ticks, n) * (rng.random(n) < 0.5)
        cols[f"at_{unit}"] = pa.array(seconds * ticks + frac, pa.int64(), mask=rng.random(n) < 0.1).cast(
            pa.timestamp(unit))
    table = pa.table(cols)
    keys = list(cols)
    got = metadata_strings(table, keys)
    assert got is not None
    assert _first_difference(table, got, _row_metadata(table, keys)) is None
    assert any(".000" in v for v in got) and any("0999-12-31" in v for v in got)
    beyond = table.set_column(3, "at_s", pa.array([10**15] + [0] * (n - 1), pa.int64()).cast(pa.timestamp("s")))
    assert metadata_strings(beyond, keys) is None
    pairs = pq.read_table(shared("near_dup_pairs_exact_jaccard/exact_jaccard_pairs.parquet"))
    assert metadata_strings(pairs, pairs.column_names) is None


def test_id_buckets_read_from_the_bytes_are_the_ids_hex_prefixes():
    """The id shuffle's bucket key, read from the ids' bytes at once, is ``int(id[:8], 16)``
    of every document id of a real shard (and of ids that are not digests, by the slow path)."""
    from tasks.steps import id_prefixes

    res = _ingest(_shard(shared("simple_wikipedia/simple_wikipedia.parquet"), "parquet", "wiki",
                         {"text": "text", "id": "page_id"}))
    ids = res.work.column("id")
    got = id_prefixes(pa.chunked_array([ids.chunk(0)[:100], ids.chunk(0)[100:]]))
    wrong = [(i, int(i[:8], 16), int(g)) for i, g in zip(ids.to_pylist(), got, strict=True) if int(i[:8], 16) != g]
    assert not wrong and len(got) == res.work.num_rows > 5000, wrong[:3]
    assert id_prefixes(pa.array(["ABCDEF0123", "00000001"])).tolist() == [0xABCDEF01, 1]


def test_metadata_beyond_what_a_string_array_holds_is_built(monkeypatch):
    """A string array holds at most 2 GiB (int32 offsets), and a shard's metadata may be more:
    with Arrow's join given that capacity at 64 KiB for string results (its real one would need
    gigabytes here), simple_wikipedia's titles and texts as metadata (about 17 times the limit)
    still give the row path's JSON, byte for byte: the join is not limited by string offsets."""
    from tasks.ingest import metadata_strings

    limit = 1 << 16
    join = pc.binary_join_element_wise

    def capped_join(*args, **kwargs):
        out = join(*args, **kwargs)
        if out.type == pa.string() and pc.sum(pc.binary_length(out)).as_py() > limit:
            raise pa.ArrowCapacityError(f"array cannot contain more than {limit} bytes")
        return out

    monkeypatch.setattr(pc, "binary_join_element_wise", capped_join)
    wiki = pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).slice(0, 600)
    keys = ["title", "text", "page_id"]
    got = metadata_strings(wiki, keys)
    assert got is not None and sum(map(len, got)) > 16 * limit
    assert _first_difference(wiki, got, _row_metadata(wiki, keys)) is None


def test_metadata_by_column_equals_the_row_path_on_hostile_values():
    """Controls (NUL, U+001F, DEL), quotes, backslashes, non-BMP, U+2028/2029, BOM, keys that
    need escaping or sort differently by case and code point, int64/uint64 extremes, nulls in
    every type, many chunks with empty ones, offset slices: the same bytes as dump_metadata."""
    from tasks.ingest import metadata_strings

    rng = np.random.default_rng(0)
    alphabet = list('ab "\\\x00\x01\x1f\x7f\u2028\u2029\ufeff\U0001F600é\n\t')
    n = 3000
    strings = ["".join(rng.choice(alphabet, rng.integers(0, 6))) if rng.random() > 0.1 else None for _ in range(n)]
    cols = {
        "s": pa.chunked_array([pa.array(strings[i:i + 7], pa.string()) for i in range(0, n, 7)]
                              + [pa.array([], pa.string())]),
        'k"\\\n\u2028': pa.array(rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64), mask=rng.random(n) < 0.1),
        "Z": pa.array(rng.integers(0, 2**64 - 1, n, dtype=np.uint64), mask=rng.random(n) < 0.1),
        "z": pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1),
        "é": pa.array(rng.integers(-2**40, 2**40, n), pa.int64()).cast(pa.timestamp("us")),
        "\U0001F600": pa.array(strings[::-1], pa.string()),
    }
    table = pa.table(cols)
    for t in (table, table.slice(123, 1500), table.slice(0, 0)):
        keys = t.column_names
        got = metadata_strings(t, keys)
        assert got is not None and got == _row_metadata(t, keys)


def test_word_counts_equal_str_split_around_every_unicode_space():
    """count_words without a branch per byte: len(text.split()) for every whitespace character
    Python knows and the characters whose UTF-8 shares their lead bytes (U+0084, U+00A1, U+1681,
    U+200B, U+2027, U+202A, U+205E, U+3001, U+180E, U+FEFF ...), and on the shared data."""
    from tasks.kernels import word_counts

    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    near = list("\u0084\u0086\u00a1\u009f\u1681\u167f\u200b\u200c\u2027\u202a\u2030\u205e\u2060\u3001\u180e\ufeffé"
                "a\U0001F600\u00c2")
    rng = np.random.default_rng(3)
    texts = ["".join(rng.choice(spaces + near, rng.integers(0, 12))) for _ in range(50_000)]
    texts += spaces + ["a" + s for s in spaces] + [s + "a" for s in spaces]
    texts += pq.read_table(shared("simple_wikipedia/simple_wikipedia.parquet")).column("text").to_pylist()
    assert word_counts(pa.array(texts)).to_pylist() == [len(t.split()) for t in texts]
