"""The ProX step called as a plain function (no Prefect, no Ray) on real web pages: the
local writers (learned, heuristic) and the model writer, whose completions come from a
stand-in service passed the way the flow passes the model actor."""

from __future__ import annotations

import re
from collections import Counter

import pyarrow as pa

from tasks import layout
from tasks.llm.backends import Completion, Request, approx_tokens
from tasks.prox import learned
from tasks.prox.chunks import make_chunks
from tasks.prox.steps import prox_step
from tasks.prox.writers import DOC_GRAMMAR
from tests.builders import ingest_one, pipeline_config, run_context, shared_input

READABILITY = "web_pages_readability/web_pages_readability.parquet"
SCRAPINGHUB = "web_pages_scrapinghub/web_pages_scrapinghub.parquet"
ATTRIBUTES = ("prox__program__doc", "prox__program__chunks", "prox__program__errors", "prox__program__ops",
              "prox__program__outcome", "prox__program__retention")
SHORT = 500  # the stand-in drops a page with fewer words than this (about a tenth of the Readability pages)


def _step(tmp_path, rel: str, prox: dict, actor=None, **config):
    cfg = pipeline_config(tmp_path / "root", shared_input(rel, "pages", text="page_text"), prox=prox, **config)
    ctx = run_context(cfg)
    shard, _ = ingest_one(ctx)
    storage = ctx.storage.open()
    work = storage.read_parquet(layout.work_path("r1", "ingest", shard.name))
    out = prox_step(ctx, shard.name, "ingest", final=True, actor=actor)
    return storage, work, out, shard


def _files(storage, marker: dict, kind: str) -> pa.Table:
    parts = [storage.read_parquet(f["path"]) for f in marker["files"] if f"/{kind}/prox/" in f["path"]]
    return pa.concat_tables(parts) if parts else pa.table({"id": pa.array([], pa.string())})


def test_learned_writer_through_the_prox_step(tmp_path):
    """The shard step as a flow runs it: work table in, attributes, rejects and the marker
    out, the writer and its model named in the marker."""
    storage, work, out, shard = _step(tmp_path, READABILITY, {"enabled": True, "writer": "learned"})
    assert out["writer"] == "learned" and str(learned.DEFAULT_MODEL) in out["writer_model"]
    assert out["prox"]["doc_programs"] == work.num_rows
    assert out["prox"]["ops"]["remove_lines"] > 0 and out["prox"]["words_out"] < out["prox"]["words_in"]
    marker = storage.read_json(layout.marker_path("r1", "prox", shard.name))
    assert marker["writer"] == "learned"


def test_heuristic_writer_writes_attributes_rejects_and_earlier_text(tmp_path):
    """On Scrapinghub's pages: one attribute row per page under the ProX names, kept plus
    rejected is every page, each reject has its reason, and every page whose text changed has
    its ingested text under changes/prox (what ``refinery explain`` diffs)."""
    storage, work, out, _ = _step(tmp_path, SCRAPINGHUB, {"enabled": True, "writer": "heuristic"})
    attrs = _files(storage, out, "attributes")
    rejects = _files(storage, out, "rejects")
    changes = _files(storage, out, "changes")
    kept = pa.concat_tables([storage.read_parquet(f["path"]) for f in out["documents"]])
    assert out["writer"] == "heuristic"
    assert attrs.num_rows == work.num_rows and set(ATTRIBUTES) <= set(attrs.column_names)
    assert sorted(kept.column("id").to_pylist() + rejects.column("id").to_pylist()) == \
        sorted(work.column("id").to_pylist())
    assert dict(Counter(rejects.column("reason").to_pylist())) == out["funnel"]["dropped"]
    outcome = dict(zip(attrs.column("id").to_pylist(), attrs.column("prox__program__outcome").to_pylist(),
                       strict=True))
    assert all(outcome[d].startswith("dropped") for d in rejects.column("id").to_pylist())

    ingested = dict(zip(work.column("id").to_pylist(), work.column("text").to_pylist(), strict=True))
    after = dict(zip(kept.column("id").to_pylist(), kept.column("text").to_pylist(), strict=True))
    changed = {d for d, t in after.items() if t != ingested[d]}
    assert len(changed) > work.num_rows // 4, "the heuristic writer was expected to clean many pages"
    assert out["funnel"]["modified"] == len(changed) == changes.num_rows
    assert all(ingested[d] == t for d, t in zip(changes.column("id").to_pylist(), changes.column("text").to_pylist(),
                                                  strict=True))
    assert set(changes.column("id").to_pylist()) == changed


class ProgramsStandingInForAModel:
    """A :class:`~tasks.llm.client.CompletionService` standing in for the model actor: at
    document level it answers ``drop_doc()`` for a page of fewer than ``SHORT`` words, else
    ``keep_doc()``; at chunk level it removes each chunk's first line."""

    def __init__(self):
        self.requests = 0

    def complete(self, requests: list[Request]) -> list[Completion]:
        self.requests += len(requests)
        out = []
        for r in requests:
            block = r.prompt.rsplit("[doc]\n", 1)[1].split("\n[/doc]", 1)[0]  # the page, after the few shots
            if r.grammar == DOC_GRAMMAR:
                text = "drop_doc()" if len(block.split()) < SHORT else "keep_doc()"
            else:
                first = int(re.match(r"\[(\d+)\]", block).group(1))
                text = f"remove_lines(line_start={first}, line_end={first})"
            out.append(Completion(text, len(r.prompt) // 4, 8, meta={"finish_reason": "stop"}))
        return out


def test_model_writer_runs_the_programs_the_service_returns(tmp_path):
    """The model writer's programs, from the stand-in service given as the step's ``actor``:
    exactly the short pages are rejected (reason ``drop_doc``), every kept page loses exactly
    the first line of each of its chunks, and the programs are recorded per page."""
    service = ProgramsStandingInForAModel()
    storage, work, out, _ = _step(tmp_path, READABILITY, {"enabled": True, "writer": "model"}, actor=service,
                                  llm={"backend": "openai", "base_url": "http://127.0.0.1:9/v1"})
    texts = dict(zip(work.column("id").to_pylist(), work.column("text").to_pylist(), strict=True))
    short = {d for d, t in texts.items() if len(t.split()) < SHORT}
    assert 0 < len(short) < len(texts)
    rejects = _files(storage, out, "rejects")
    assert dict(zip(rejects.column("id").to_pylist(), rejects.column("reason").to_pylist(), strict=True)) == \
        dict.fromkeys(short, "drop_doc")

    kept = pa.concat_tables([storage.read_parquet(f["path"]) for f in out["documents"]])
    assert set(kept.column("id").to_pylist()) == set(texts) - short
    chunks = 0
    for doc_id, text in zip(kept.column("id").to_pylist(), kept.column("text").to_pylist(), strict=True):
        lines = texts[doc_id].split("\n")
        firsts = {c.first for c in make_chunks(texts[doc_id], approx_tokens, 1500)}
        chunks += len(firsts)
        assert text.split("\n") == [x for i, x in enumerate(lines) if i not in firsts], doc_id
    assert service.requests == len(texts) + chunks
    assert out["writer"] == "model" and out["prox"]["ops"]["remove_lines"] == chunks
    assert out["prox"]["ops"]["drop_doc"] == len(short)
    attrs = _files(storage, out, "attributes")
    doc_prog = dict(zip(attrs.column("id").to_pylist(), attrs.column("prox__program__doc").to_pylist(), strict=True))
    assert {d for d, p in doc_prog.items() if p == "drop_doc()"} == short
