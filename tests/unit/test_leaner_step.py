"""The leaner step called as a plain function (no Prefect, no Ray, no Gemma).

What stands in for the model: a :class:`~tasks.llm.client.CompletionService` passed as the
step's ``actor``, as the flow passes its model actor. It answers each window with TinyHelen's
own reference rewrite (GPT-4 family) of the document the prompt holds, with those words
shuffled into salad for one document, and with a server error for another. Validation,
the response cache, attributes, rejects and changes are the stage's real ones."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from tasks import layout
from tasks.config import LeanerConfig
from tasks.leaner.stage import limits_for
from tasks.leaner.steps import leaner_step
from tasks.leaner.validate import validate
from tasks.leaner.vocab import words_of
from tasks.llm.backends import Completion, Request
from tasks.quality import lid
from tests.builders import ingest_one, pipeline_config, run_context
from tests.corpora import split_of, tinyhelen_pairs, write_jsonl

LEANER = {"enabled": True, "genre": "web", "window_tokens": {"web": 8000}}  # one window per document
LLM = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}  # never contacted: the actor answers


class ReferenceRewritesStandingInForAModel:
    """Answers a window with the prepared answer of the document whose words it holds most of."""

    def __init__(self, answers: list[tuple[str, Completion]]):
        self.known = [(set(words_of(original)), answer) for original, answer in answers]
        self.prompts: list[str] = []

    def complete(self, requests: list[Request]) -> list[Completion]:
        self.prompts += [r.prompt for r in requests]
        out = []
        for r in requests:
            words = set(words_of(r.prompt))
            out.append(max(self.known, key=lambda k: len(k[0] & words) / len(k[0]))[1])
        return out


@pytest.fixture(scope="module")
def documents():
    """Held-out web pairs whose reference rewrite the validator accepts (3), one whose rewrite
    is shuffled into salad, one the model fails on."""
    cfg = LeanerConfig(**LEANER)
    web = [p for p in tinyhelen_pairs() if p["genre"] == "web" and split_of(p["original"]) == "heldout"
           and len(p["original"].split()) <= 1200]
    good = [p for p in web if validate(p["original"], p["rewrite"], "web", limits_for(cfg, "web"),
                                       lid.predict).accepted][:3]
    salad_pair, failing = [p for p in web if p not in good][:2]
    words = salad_pair["rewrite"].split()
    random.Random(3).shuffle(words)
    stop = {"finish_reason": "stop"}
    answers = [(p["original"], Completion(p["rewrite"], 100, 100, meta=stop)) for p in good]
    answers += [(salad_pair["original"], Completion(" ".join(words), 100, 100, meta=stop)),
                (failing["original"], Completion("", 0, 0, error="HTTP 500: down"))]
    assert len(good) == 3
    return good, salad_pair, failing, answers


def _run(root, tmp_path, release: str, service, on_failure: str):
    cfg = pipeline_config(root, {"uri": str(tmp_path / "in"), "source": "web"}, release=release,
                          stages=["ingest", "leaner"], leaner={**LEANER, "on_failure": on_failure}, llm=LLM)
    ctx = run_context(cfg)
    shard, _ = ingest_one(ctx)
    marker = leaner_step(ctx, shard.name, "ingest", True, service)
    storage = ctx.storage.open()
    work = storage.read_parquet(layout.work_path(release, "ingest", shard.name))

    def read(kind: str) -> pa.Table:
        parts = [storage.read_parquet(f["path"]) for f in marker["files"] if f"/{kind}/leaner/" in f["path"]]
        return pa.concat_tables(parts) if parts else pa.table({"id": pa.array([], pa.string())})

    kept = pa.concat_tables([storage.read_parquet(f["path"]) for f in marker["documents"]])
    return marker, work, kept, read


def test_accepted_rewrites_replace_the_text_failures_keep_the_original_then_drop_by_policy(tmp_path, documents):
    """Accepted rewrites replace the text (earlier text under changes/leaner), the salad fails
    validation and the failed window is a model error: both keep their original by default,
    and are rejected with their status as reason under ``on_failure: drop``."""
    good, salad_pair, failing, answers = documents
    write_jsonl(tmp_path / "in" / "docs.jsonl", [{"text": p["original"]} for p in [*good, salad_pair, failing]])
    root = tmp_path / "corpus"
    service = ReferenceRewritesStandingInForAModel(answers)
    marker, work, kept, read = _run(root, tmp_path, "r1", service, "keep_original")
    assert len(service.prompts) == 5  # one window per document

    original = dict(zip(work.column("id").to_pylist(), work.column("text").to_pylist(), strict=True))
    id_of = {t: d for d, t in original.items()}
    good_ids = {id_of[p["original"]]: p["rewrite"].strip() for p in good}
    salad_id, failing_id = id_of[salad_pair["original"]], id_of[failing["original"]]
    text = dict(zip(kept.column("id").to_pylist(), kept.column("text").to_pylist(), strict=True))
    assert len(text) == 5 and read("rejects").num_rows == 0
    assert all(text[d] == rewrite for d, rewrite in good_ids.items())
    assert text[salad_id] == original[salad_id] and text[failing_id] == original[failing_id]

    attrs = read("attributes")
    assert attrs.num_rows == 5
    status = dict(zip(attrs.column("id").to_pylist(), attrs.column("leaner__rewrite__status").to_pylist(), strict=True))
    assert all(status[d] == "accepted" for d in good_ids)
    assert status[salad_id] in ("fluency", "topic", "fidelity") and status[failing_id] == "model_error"
    content = dict(zip(attrs.column("id").to_pylist(), attrs.column("leaner__rewrite__content_score").to_pylist(),
                       strict=True))
    assert content[failing_id][0]["score"] is None and all(content[d][0]["score"] is not None for d in good_ids)
    changes = read("changes")
    assert dict(zip(changes.column("id").to_pylist(), changes.column("text").to_pylist(), strict=True)) == \
        {d: original[d] for d in good_ids}
    lean = marker["leaner"]
    assert lean["accepted"] == 3 and marker["funnel"]["modified"] == 3
    assert lean["rejected"] == {status[salad_id]: 1, "model_error": 1}
    assert lean["usage"]["requests"] == 4 and lean["usage"]["failures"] == 1  # answered, failed
    assert lean["usage"]["errors"] == {"HTTP 500": 1}

    # the next release over the same root, dropping failures: answers come from the response
    # cache (a failed completion is not cached, so only that window is asked again)
    again = ReferenceRewritesStandingInForAModel(answers)
    marker2, _, kept2, read2 = _run(root, tmp_path, "r2", again, "drop")
    assert len(again.prompts) == 1 and set(words_of(failing["original"])) <= set(words_of(again.prompts[0]))
    assert marker2["leaner"]["usage"]["cache_hits"] == 4
    rejects = read2("rejects")
    assert dict(zip(rejects.column("id").to_pylist(), rejects.column("reason").to_pylist(), strict=True)) == \
        {salad_id: status[salad_id], failing_id: "model_error"}
    assert set(rejects.column("detail").to_pylist()) == {"rewrite failed validation; dropped by policy"}
    assert dict(zip(kept2.column("id").to_pylist(), kept2.column("text").to_pylist(), strict=True)) == good_ids
    assert marker2["funnel"]["docs_out"] == 3
