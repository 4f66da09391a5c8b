"""Web input and the extract stage on real pages: WARC files built here from the shared pages'
HTML (one gzip member per record, as crawls store them), with the damage crawls have (records
cut short, payloads that are not HTML, wrong and missing charsets, undecodable bytes, broken
gzip members, repeated record ids). Extracted text is scored against the people's main text
with the content-line measure of tasks/prox/lines.py."""

from __future__ import annotations

import gzip
import json
import re
import uuid
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.config import ColumnMap, IngestConfig, InputSpec, PipelineConfig
from tasks.extract.config import ExtractConfig
from tasks.extract.stage import extract
from tasks.extract.warc import fetch_record
from tasks.ingest import Shard, ingest_shard, plan_shards
from tasks.originals import fetch_original
from tasks.prox import lines as L
from tests.conftest import shared

NOW = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def pages() -> list[dict]:
    return pq.read_table(shared("web_pages_readability/web_pages_readability.parquet"),
                         columns=["id", "html", "main_text", "page_text", "lang"]).to_pylist()


@pytest.fixture(scope="module")
def sh_pages() -> list[dict]:
    return pq.read_table(shared("web_pages_scrapinghub/web_pages_scrapinghub.parquet"),
                         columns=["id", "url", "html", "gold_text", "page_text"]).to_pylist()


def rid(k: int | str) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, str(k))}>"


def warc_record(record_id: str, url: str, payload: bytes, content_type: str | None = "text/html; charset=utf-8",
                status: str = "200 OK", wtype: str = "response") -> bytes:
    if wtype == "response":
        head = f"HTTP/1.1 {status}\r\n" + (f"Content-Type: {content_type}\r\n" if content_type else "")
        block = head.encode() + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        ctype = "application/http; msgtype=response"
    else:
        block, ctype = payload, content_type or "application/octet-stream"
    header = (f"WARC/1.0\r\nWARC-Type: {wtype}\r\nWARC-Record-ID: {record_id}\r\nWARC-Date: 2024-05-01T10:00:00Z\r\n"
              f"WARC-Target-URI: {url}\r\nContent-Type: {ctype}\r\nContent-Length: {len(block)}\r\n\r\n").encode()
    return header + block + b"\r\n\r\n"


def warcinfo() -> bytes:
    body = b"software: refinery-tests\r\nformat: WARC File Format 1.0\r\n"
    return warc_record(rid("info"), "", body, "application/warc-fields", wtype="warcinfo")


def write_warc(path, records: list[bytes], gz: bool = True) -> None:
    path.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in records) if gz else b"".join(records))


def ingest(path, fmt: str = "auto", columns: dict | None = None, shard: Shard | None = None):
    if shard is None:
        spec = InputSpec(uri=str(path), format=fmt, columns=ColumnMap(**(columns or {})))
        shards = plan_shards(PipelineConfig(inputs=[spec]))
        assert len(shards) == 1
        shard = shards[0]
    return ingest_shard(shard, IngestConfig(), "stripped", "rel-1", NOW)


def content_f1(pages_text: list[str], mains: list[str], outs: list[str]) -> float:
    labels = [L.content_labels(p, m) for p, m in zip(pages_text, mains, strict=True)]
    kept = [L.content_labels(p, o) for p, o in zip(pages_text, outs, strict=True)]
    return L.scores(labels, kept)["content"]["f1"]


def test_warc_gz_pages_extracted_close_to_the_human_main_text(tmp_path, pages):
    sample = pages[:30]
    recs = [warcinfo()]
    for k, p in enumerate(sample):
        recs.append(warc_record(rid(f"req{k}"), f"https://example.org/{p['id']}", b"GET / HTTP/1.1\r\n\r\n",
                                "application/http; msgtype=request", wtype="request"))
        recs.append(warc_record(rid(k), f"https://example.org/{p['id']}", p["html"].encode("utf-8")))
    path = tmp_path / "crawl-00000.warc.gz"
    write_warc(path, recs)
    res = ingest(path)
    assert res.work.num_rows == len(sample) and res.rejects.num_rows == 0
    assert res.stats["records_skipped"] == {"request": len(sample), "warcinfo": 1}
    assert res.work.column("source_id").to_pylist() == [rid(k) for k in range(len(sample))]
    out = extract(res.work, ExtractConfig())
    assert out.keep.all() and out.changed.all()
    metas = [json.loads(m) for m in out.metadata]
    assert [m["url"] for m in metas] == [f"https://example.org/{p['id']}" for p in sample]
    # the people's main text and what came out overlap, line for line, above a bar (the bench
    # measures 0.82 on all 94 pages)
    f1 = content_f1([p["page_text"] for p in sample], [p["main_text"] for p in sample], out.text)
    assert f1 >= 0.7, f1
    # languages where the people's labels name one
    langs = out.attributes["extract__html__language"].to_pylist()
    named = [(p["lang"][:2], g) for p, g in zip(sample, langs, strict=True) if p["lang"]]
    assert sum(a == b for a, b in named) >= 0.8 * len(named), named
    assert all(t for t in out.attributes["extract__html__title"].to_pylist()[:5])
    # the pointer gives the original HTML back from the WARC, byte for byte once decoded
    for k in (0, 7, len(sample) - 1):
        assert fetch_record(metas[k]["web"]) == sample[k]["html"]
        assert metas[k]["web"]["gzip"] is True
    # refinery explain shows it, read through the pointer (no copy in the release)
    from tasks.explain import original_page, render
    from tasks.storage import StorageSpec

    shown = original_page(StorageSpec(str(tmp_path)).open(), out.metadata[7])
    assert shown["original"]["html"] == sample[7]["html"]
    text = render({"id": "x", "release": "r", "other_releases": [], "here": {
        "status": "published", "source": "s", "stages": ["ingest", "extract"], "changed_by": [],
        "text": out.text[7], **shown}})
    assert f"crawl-00000.warc.gz @ {metas[7]['web']['offset']}: {len(sample[7]['html']):,} chars of HTML" in text
    path.unlink()  # the input is gone: explain says so instead of failing
    assert "FileNotFoundError" in original_page(StorageSpec(str(tmp_path)).open(), out.metadata[7])["original"]["error"]


def test_bad_records_counted_by_reason_and_the_rest_read(tmp_path, pages):
    good = [p for p in pages if p["id"] not in ("aktualne", "lemonde-1")][:12]
    recs: list[bytes] = [warcinfo()]
    expect_good = []
    for k, p in enumerate(good):
        recs.append(warc_record(rid(k), f"https://ok.example/{k}", p["html"].encode()))
        expect_good.append(rid(k))
    cz = next(p for p in pages if p["id"] == "aktualne")
    fr = next(p for p in pages if p["id"] == "lemonde-1")
    # wrong charset: bytes in windows-1250 while the header and the page say UTF-8
    recs.append(warc_record(rid("cz"), "https://cz.example/", cz["html"].encode("cp1250", "xmlcharrefreplace")))
    # undeclared charset: no charset anywhere, bytes in windows-1252
    undeclared = re.sub(r"charset=utf-8", "", fr["html"], flags=re.I)
    recs.append(warc_record(rid("fr"), "https://fr.example/", undeclared.encode("cp1252", "xmlcharrefreplace"),
                            "text/html"))
    # not HTML
    recs.append(warc_record(rid("png"), "https://x.example/a.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image/png"))
    recs.append(warc_record(rid("json"), "https://x.example/a.json", b'{"a": 1}', "application/json"))
    # undecodable: bytes no charset makes text of
    recs.append(warc_record(rid("junk"), "https://x.example/junk", bytes(range(128, 256)) * 40 + b"\x00" * 10,
                            "text/html"))
    # a record id seen before
    recs.append(warc_record(rid(0), "https://dup.example/", good[1]["html"].encode()))
    # an error page
    recs.append(warc_record(rid("404"), "https://x.example/gone", b"<html><body>Not found</body></html>",
                            status="404 Not Found"))
    members = [gzip.compress(r, mtime=0) for r in recs]
    # a record cut short (crawler crash) in the middle of the file
    cut = warc_record(rid("cut"), "https://cut.example/", good[2]["html"].encode())
    members.insert(5, gzip.compress(cut[: len(cut) // 2], mtime=0))
    # a gzip member with flipped bytes in its deflate data
    bad = bytearray(gzip.compress(warc_record(rid("flip"), "https://flip.example/", good[3]["html"].encode()), mtime=0))
    bad[len(bad) // 2: len(bad) // 2 + 8] = b"\xff" * 8
    members.insert(9, bytes(bad))
    path = tmp_path / "damaged.warc.gz"
    path.write_bytes(b"".join(members))

    res = ingest(path)
    rejected = res.stats["rejected"]
    assert rejected == {"truncated WARC record": 1, "corrupt gzip member": 1, "not HTML": 2, "undecodable bytes": 1,
                        "duplicate WARC record id": 1, "HTTP status": 1}, rejected
    ids = res.work.column("source_id").to_pylist()
    assert ids == [*expect_good, rid("cz"), rid("fr")]  # every good record after the damage still read
    reasons = res.rejects.column("reason").to_pylist()
    assert any(r.startswith("duplicate WARC record id") and "first at byte" in r for r in reasons)
    metas = [json.loads(m) for m in res.work.column("metadata").to_pylist()]
    assert metas[-2]["charset"] == "cp1250" and metas[-2]["charset_declared_wrong"].lower() == "utf-8"
    assert metas[-1]["charset"] in ("cp1252", "iso8859-1", "iso8859-15")
    out = extract(res.work, ExtractConfig())
    texts = dict(zip(ids, out.text, strict=True))
    # the re-encoded pages read as the people's text, accents and all
    for key, page in ((rid("cz"), cz), (rid("fr"), fr)):
        words = {w for w in page["main_text"].split() if not w.isascii() and w.isalpha()}
        got = set(texts[key].split())
        assert len(words & got) >= 0.8 * len(words), (key, sorted(words - got)[:10])


def test_plain_warc_with_a_record_cut_short_mid_file(tmp_path, sh_pages):
    sample = sh_pages[:8]
    recs = [warc_record(rid(p["id"]), p["url"], p["html"].encode()) for p in sample]
    recs[3] = recs[3][: len(recs[3]) - 5000]  # cut inside its HTML: the next record follows at once
    path = tmp_path / "plain.warc"
    write_warc(path, recs, gz=False)
    res = ingest(path)
    assert res.stats["rejected"] == {"truncated WARC record": 1}
    assert res.work.column("source_id").to_pylist() == [rid(p["id"]) for k, p in enumerate(sample) if k != 3]
    out = extract(res.work, ExtractConfig())
    kept = [p for k, p in enumerate(sample) if k != 3]
    f1 = content_f1([p["page_text"] for p in kept], [p["gold_text"] for p in kept], out.text)
    assert f1 >= 0.7, f1
    meta = json.loads(out.metadata[4])
    assert meta["web"]["gzip"] is False and fetch_record(meta["web"]) == kept[4]["html"]


def test_record_ranges_of_a_large_warc_read_every_record_once(tmp_path, sh_pages, monkeypatch):
    import tasks.ingest as ingest_mod

    sample = sh_pages[:40]
    for gz in (True, False):
        path = tmp_path / ("big.warc.gz" if gz else "big.warc")
        write_warc(path, [warc_record(rid(p["id"]), p["url"], p["html"].encode()) for p in sample], gz=gz)
        whole = ingest(path)
        monkeypatch.setattr(ingest_mod, "WEB_SHARD_BYTES", path.stat().st_size // 7)
        # a first read that ends inside the range's last record: read further until it ends
        monkeypatch.setattr(ingest_mod, "WEB_RANGE_SLACK", 1000)
        shards = plan_shards(PipelineConfig(inputs=[InputSpec(uri=str(path))]))
        assert len(shards) >= 7 and all(s.byte_range for s in shards)
        parts = [ingest(path, shard=s) for s in shards]
        got = [i for r in parts for i in r.work.column("source_id").to_pylist()]
        assert got == whole.work.column("source_id").to_pylist() == [rid(p["id"]) for p in sample], gz
        assert all(r.rejects.num_rows == 0 for r in parts)
        monkeypatch.undo()


def test_wet_records_pass_through_extract_unchanged(tmp_path, pages):
    sample = pages[:5]
    recs = [warc_record(rid(k), f"https://w.example/{k}", p["page_text"].encode(), "text/plain", wtype="conversion")
            for k, p in enumerate(sample)]
    path = tmp_path / "crawl.warc.wet.gz"
    write_warc(path, recs)
    res = ingest(path)
    assert res.work.column("text").to_pylist() == [p["page_text"] for p in sample]
    out = extract(res.work, ExtractConfig())
    assert out.text == [p["page_text"] for p in sample] and not out.changed.any() and out.keep.all()


@pytest.mark.parametrize("kind", ["parquet-string", "parquet-binary", "jsonl", "json-array"])
def test_html_column_of_parquet_and_jsonl(tmp_path, sh_pages, kind):
    sample = sh_pages[:15]
    if kind == "jsonl":
        path = tmp_path / "pages.jsonl"
        path.write_text("".join(json.dumps({"u": p["url"], "page": p["html"]}) + "\n" for p in sample))
    elif kind == "json-array":
        path = tmp_path / "pages.json"
        path.write_text(json.dumps([{"u": p["url"], "page": p["html"]} for p in sample], indent=1))
    else:
        path = tmp_path / "pages.parquet"
        html = [p["html"].encode() if kind == "parquet-binary" else p["html"] for p in sample]
        pq.write_table(pa.table({"u": [p["url"] for p in sample], "page": html}), path)
    res = ingest(path, columns={"html": "page", "id": "u"})
    assert res.work.num_rows == len(sample)
    out = extract(res.work, ExtractConfig())
    assert out.changed.all()
    f1 = content_f1([p["page_text"] for p in sample], [p["gold_text"] for p in sample], out.text)
    assert f1 >= 0.7, f1
    meta = json.loads(out.metadata[2])
    assert meta["web"] == {"kind": "html", "uri": str(path), "row": 2, "column": "page"}
    assert fetch_original(meta["web"]) == sample[2]["html"]
    # the next stage's table: metadata from the stage, and exact dedup's hash of the new text
    import xxhash

    from tasks.extract.stage import with_extract_columns
    from tasks.ingest import content_key

    nxt = with_extract_columns(res.work, out, "stripped")
    assert nxt.column("metadata").to_pylist() == out.metadata
    assert nxt.column("content_hash")[2].as_py() == xxhash.xxh3_128_digest(
        content_key(out.text[2], "stripped").encode())


def test_trafilatura_extractor_and_pages_without_text(tmp_path, sh_pages):
    sample = sh_pages[:10]
    recs = [warc_record(rid(p["id"]), p["url"], p["html"].encode()) for p in sample]
    recs.append(warc_record(rid("empty"), "https://e.example/", b"<html><head><title>t</title></head><body>"
                            b"<script>var x = 1;</script></body></html>"))
    path = tmp_path / "t.warc.gz"
    write_warc(path, recs)
    res = ingest(path)
    for cfg in (ExtractConfig(extractor="trafilatura"), ExtractConfig()):
        out = extract(res.work, cfg)
        assert out.reason[-1] == "no text extracted" and not out.keep[-1]
        assert out.figures["dropped"] == {"no text extracted": 1}
        f1 = content_f1([p["page_text"] for p in sample], [p["gold_text"] for p in sample], out.text[:-1])
        assert f1 >= 0.75, (cfg.extractor, f1)
    small = extract(res.work, ExtractConfig(max_html_bytes=1000, min_words=5))
    assert not small.keep[:-1].any()
    assert all(r.startswith("HTML too large") for r in small.reason[:-1])


def test_prox_after_extraction_on_the_set_its_model_never_saw(pages):
    """Extract, then the learned ProX writer with a line model trained on the *other* set's
    extracted text (Scrapinghub): content-line F1 on the Readability pages, against the people's
    text, above the issue's bar, and above extraction alone."""
    from tasks.config import ProxConfig
    from tasks.llm.backends import approx_tokens
    from tasks.prox import stage
    from tasks.prox.after_extract import AFTER_EXTRACT_MODEL, train_after_extract
    from tasks.prox.learned import LearnedWriter, load_model

    train = pq.read_table(shared("web_pages_scrapinghub/web_pages_scrapinghub.parquet"),
                          columns=["url", "html", "gold_text"]).to_pylist()
    model = train_after_extract([{"id": r["url"], "html": r["html"], "kept": r["gold_text"]} for r in train])
    table = pa.table({"text": [p["html"] for p in pages],
                      "metadata": [json.dumps({"web": {"kind": "html"}})] * len(pages)})
    ext = extract(table, ExtractConfig())
    texts = [t if k else "" for t, k in zip(ext.text, ext.keep, strict=True)]
    res = stage.refine(texts, ProxConfig(enabled=True), LearnedWriter(model, texts), approx_tokens)
    refined = [t if k else "" for t, k in zip(res.text, res.keep, strict=True)]
    page, main = [p["page_text"] for p in pages], [p["main_text"] for p in pages]
    alone, after = content_f1(page, main, texts), content_f1(page, main, refined)
    assert after >= 0.75 and after > alone, (alone, after)
    # the shipped one (trained on both sets) is a loadable model with its card
    shipped = load_model(str(AFTER_EXTRACT_MODEL))
    card = json.loads((AFTER_EXTRACT_MODEL.parent / "model_card.json").read_text())
    assert card["model_sha256"] == shipped.sha256
    assert [d.split("#")[0] for d in card["data"]] == ["extracted_web_pages_scrapinghub.parquet",
                                                       "extracted_web_pages_readability.parquet"]


def test_any_damage_to_one_record_costs_only_that_record(tmp_path, sh_pages):
    """Random damage (bytes flipped, cut short, junk inserted, header digits changed) to one
    record of a WARC, gzipped per record or plain: ingest never fails, and every other record
    is read."""
    import random

    sample = sh_pages[:8]
    recs = [warc_record(rid(p["id"]), p["url"], p["html"].encode()) for p in sample]
    rng = random.Random(19)
    for trial in range(40):
        gz = trial % 2 == 0
        parts = [gzip.compress(r, mtime=0) for r in recs] if gz else list(recs)
        k = rng.randrange(len(parts))
        victim = bytearray(parts[k])
        how = rng.choice(["flip", "cut", "junk", "length"])
        if how == "flip":
            at = rng.randrange(10, len(victim))
            victim[at:at + 4] = bytes(rng.randrange(256) for _ in range(4))
        elif how == "cut":
            victim = victim[: rng.randrange(1, len(victim) - 1)]
        elif how == "junk":
            victim[0:0] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        elif gz:  # a gzip member's header fields
            victim[rng.randrange(3, 10)] ^= 0xFF
        else:  # a Content-Length that lies
            victim = bytearray(re.sub(rb"Content-Length: (\d+)\r\n\r\nHTTP",
                                      lambda m: b"Content-Length: %d\r\n\r\nHTTP" % (int(m.group(1)) + rng.choice(
                                          [-500, -1, 7, 100000])), bytes(victim), count=1))
        parts[k] = bytes(victim)
        path = tmp_path / f"t{trial}.warc{'.gz' if gz else ''}"
        path.write_bytes(b"".join(parts))
        res = ingest(path)
        got = res.work.column("source_id").to_pylist()
        others = [rid(p["id"]) for j, p in enumerate(sample) if j != k]
        assert [i for i in got if i in others] == others, (trial, how, gz, res.stats["rejected"])
        assert set(got) <= {rid(p["id"]) for p in sample}


def test_max_chars_applies_to_the_text_not_to_the_html(tmp_path, sh_pages):
    """Ingest's `max_chars` is a limit on documents: a page's HTML (tens of kilobytes) is not
    rejected by it at ingest; the extract stage applies it to the text it extracts."""
    path = tmp_path / "a.warc.gz"
    write_warc(path, [warcinfo()] + [warc_record(rid(k), p["url"], p["html"].encode())
                                     for k, p in enumerate(sh_pages[:5])])
    (shard,) = plan_shards(PipelineConfig(inputs=[InputSpec(uri=str(path))]))
    res = ingest_shard(shard, IngestConfig(max_chars=2000), "stripped", "rel-1", NOW)
    assert res.work.num_rows == 5 and max(len(t) for t in res.work.column("text").to_pylist()) > 2000
    assert not [r for r in res.rejects.column("reason").to_pylist() if "max_chars" in r]


def test_speed_shortcuts_keep_the_stage_answers(pages, sh_pages):
    """The stage reads language from a bounded prefix of the text and counts words only as far
    as ``min_words`` asks: on the real pages, the same language as the whole text, and the same
    keep / reject answers (with the exact word count in the reason) as a full count."""
    from resiliparse.parse.lang import detect_fast

    from tasks.extract.stage import LANGUAGE_PREFIX_CHARS

    html = [p["html"] for p in pages] + [p["html"] for p in sh_pages[:60]]
    table = pa.table({"text": html, "metadata": [json.dumps({"web": {"kind": "html"}})] * len(html)})
    out = extract(table, ExtractConfig())
    texts = [t for t, k in zip(out.text, out.keep, strict=True) if k]
    assert sum(len(t) > LANGUAGE_PREFIX_CHARS for t in texts) >= 20  # the prefix is really a prefix here
    whole = [(lang if lang != "unknown" else None) for lang, _ in map(detect_fast, texts)]
    got = [lang for lang, k in zip(out.attributes["extract__html__language"].to_pylist(), out.keep, strict=True) if k]
    assert got == whole
    words = [len(t.split()) for t in texts]
    bar = sorted(words)[len(words) // 2]  # the median page: half kept, half rejected
    strict = extract(table, ExtractConfig(min_words=bar))
    kept_texts = iter(words)
    for k, keep, reason in zip(out.keep, strict.keep, strict.reason, strict=True):
        if not k:
            assert not keep
            continue
        n = next(kept_texts)
        assert keep == (n >= bar)
        if not keep:
            assert reason == f"too little text ({n} words < min_words {bar})"


def test_pages_are_normalized_after_extraction_not_as_html_at_ingest(tmp_path, pages):
    """Ingest leaves a page's HTML as decoded (normalizing 272 KB of it cost 1.6 ms a page) and
    gives it no exact-dedup key; the extract stage normalizes what it extracts. On real pages
    written in decomposed form (NFD), the extracted text is the one the normalized HTML gives,
    a WET record's text is still normalized at ingest, and an id made from a page's text is
    that of its normalized form."""
    import unicodedata

    wide = [p for p in pages if unicodedata.normalize("NFD", p["html"]) != p["html"]][:6]
    assert len(wide) == 6
    nfd = [unicodedata.normalize("NFD", p["html"]) for p in wide]
    wet = unicodedata.normalize("NFD", wide[0]["page_text"])
    path = tmp_path / "nfd.warc.gz"
    write_warc(path, [warc_record(rid(k), f"https://n.example/{k}", h.encode()) for k, h in enumerate(nfd)]
               + [warc_record(rid("wet"), "https://n.example/wet", wet.encode(), "text/plain", wtype="conversion")])
    res = ingest(path)
    assert res.work.column("text").to_pylist() == nfd + [unicodedata.normalize("NFC", wet)]
    assert res.work.column("content_hash").to_pylist()[:6] == [None] * 6
    assert res.work.column("content_hash")[6].as_py() is not None
    out = extract(res.work, ExtractConfig())
    meta = [json.dumps({"web": {"kind": "html"}})] * len(wide)
    want = extract(pa.table({"text": [unicodedata.normalize("NFC", p["html"]) for p in wide], "metadata": meta}),
                   ExtractConfig())
    assert out.changed[:6].all() and out.text[:6] == want.text
    assert all(unicodedata.is_normalized("NFC", t) for t in out.text)
    assert any(not unicodedata.is_normalized("NFC", t) for t in extract(
        pa.table({"text": nfd, "metadata": meta}), ExtractConfig(), "none").text)  # the stage did normalize

    def ids_of(html: list[str], folder: str) -> list[str]:
        (tmp_path / folder).mkdir()
        col = tmp_path / folder / "pages.parquet"  # one name: the source, part of the id
        pq.write_table(pa.table({"page": html}), col)
        return ingest(col, columns={"html": "page"}).work.column("id").to_pylist()

    assert ids_of(nfd, "nfd") == ids_of([p["html"] for p in wide], "nfc")


def test_max_chars_applies_at_ingest_to_a_warcs_text_records_not_to_its_pages(tmp_path, pages):
    """In one WARC, a page's HTML longer than ``max_chars`` waits for extract (which applies the
    limit to what it extracts), while a WET conversion record, which is text, is rejected at
    ingest with the reason, as it would be in any text input."""
    page = next(p for p in pages if len(p["page_text"]) > 3000)
    path = tmp_path / "mixed.warc.gz"
    write_warc(path, [warc_record(rid("page"), "https://m.example/page", page["html"].encode()),
                      warc_record(rid("wet"), "https://m.example/wet", page["page_text"].encode(), "text/plain",
                                  wtype="conversion"),
                      warc_record(rid("short"), "https://m.example/short", b"A short text record.", "text/plain",
                                  wtype="conversion")])
    shard = plan_shards(PipelineConfig(inputs=[InputSpec(uri=str(path))]))[0]
    res = ingest_shard(shard, IngestConfig(max_chars=2000), "stripped", "rel-1", NOW)
    assert res.work.num_rows == 2  # the page (HTML far above the limit) and the short record
    assert res.rejects.num_rows == 1
    assert res.rejects.column("reason")[0].as_py().startswith("longer than max_chars (")

