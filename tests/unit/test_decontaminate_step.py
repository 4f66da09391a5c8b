"""The decontaminate step called as a plain function (no Prefect, no Ray): HumanEval tasks
injected into real Simple Wikipedia articles are caught by the step, and only they."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import layout
from tasks.decontam.core import attribute_names
from tasks.decontam.declare import check, decontaminate_step
from tasks.ingest import stable_id
from tests.builders import ingest_one, pipeline_config, run_context
from tests.conftest import shared

HUMANEVAL = "code_humaneval/code_humaneval.parquet"
WIKI = "simple_wikipedia/simple_wikipedia.parquet"
HOSTS = 600  # articles in the shard (a slice keeps the test fast)
INJECTED = 20


def _contaminated_input(tmp_path) -> tuple[str, dict[str, str], dict[str, str]]:
    """A temporary Parquet file of real articles, ``INJECTED`` of them with one HumanEval task
    (prompt and solution) pasted between two of their lines: the file, each host's original
    text and the task id each host carries (by the id ingest gives it)."""
    rng = random.Random(14)
    wiki = pq.read_table(shared(WIKI), columns=["page_id", "text"]).slice(0, HOSTS)
    texts = wiki.column("text").to_pylist()
    ids = [str(i) for i in wiki.column("page_id").to_pylist()]
    tasks = pq.read_table(shared(HUMANEVAL)).to_pylist()
    originals, truth = {}, {}
    for host, task in zip(rng.sample(range(HOSTS), INJECTED), rng.sample(tasks, INJECTED), strict=True):
        lines = texts[host].split("\n")
        at = rng.randrange(len(lines) + 1)
        originals[stable_id("wiki", ids[host], "")] = texts[host]
        truth[stable_id("wiki", ids[host], "")] = task["task_id"]
        texts[host] = "\n".join(lines[:at] + [task["prompt"] + task["canonical_solution"]] + lines[at:])
    path = tmp_path / "contaminated.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), path)
    return str(path), originals, truth


def _run(tmp_path, mode: str):
    path, originals, truth = _contaminated_input(tmp_path)
    cfg = pipeline_config(tmp_path / "corpus", {"uri": path, "source": "wiki", "columns": {"id": "id", "metadata": "none"}},
                          stages=["ingest", "decontaminate"], decontaminate={"mode": mode, "eval_sets": [{
                              "name": "humaneval", "url": str(shared(HUMANEVAL)),
                              "columns": ["prompt", "canonical_solution"], "id_column": "task_id"}]})
    check(cfg)  # builds the index into the corpus root before any shard, as the flow does
    ctx = run_context(cfg)
    shard, _ = ingest_one(ctx)
    marker = decontaminate_step(ctx, shard.name, "ingest", True)
    storage = ctx.storage.open()
    ingested = storage.read_parquet(layout.work_path(ctx.release, "ingest", shard.name))

    def read(kind: str) -> pa.Table:
        return pa.concat_tables([storage.read_parquet(f["path"]) for f in marker["files"]
                                 if f"/{kind}/decontaminate/" in f["path"]])

    kept = pa.concat_tables([storage.read_parquet(f["path"]) for f in marker["documents"]])
    return marker, ingested, kept, read, originals, truth


def _named(task_ids: str | None) -> list[str]:
    # tasks whose normalized text is the same (HumanEval/56 and /61) are all named
    return (task_ids or "").split(",")


def test_drop_mode_rejects_exactly_the_injected_articles_naming_their_tasks(tmp_path):
    """Mode drop: the rejects are exactly the injected articles, each reason names the task
    pasted into it; the other articles pass untouched; attributes name benchmark and task of
    the caught ones only; the marker describes the evaluation set."""
    marker, ingested, kept, read, _, truth = _run(tmp_path, "drop")
    rejects, attrs = read("rejects"), read("attributes")
    assert set(rejects.column("id").to_pylist()) == set(truth)
    for doc_id, reason in zip(rejects.column("id").to_pylist(), rejects.column("reason").to_pylist(), strict=True):
        named = reason.removeprefix("contaminated humaneval (").split(", ")[0]
        assert reason.startswith("contaminated humaneval (") and truth[doc_id] in _named(named), reason
    assert marker["funnel"]["dropped"] == {"contaminated humaneval": len(truth)}  # the funnel counts by benchmark
    assert kept.num_rows == HOSTS - len(truth) == marker["funnel"]["docs_out"]
    original = dict(zip(ingested.column("id").to_pylist(), ingested.column("text").to_pylist(), strict=True))
    assert all(original[d] == t for d, t in zip(kept.column("id").to_pylist(), kept.column("text").to_pylist(),
                                                strict=True))  # the rest pass untouched

    names = attribute_names()
    assert attrs.num_rows == HOSTS and set(names.values()) <= set(attrs.column_names)
    rows = attrs.to_pylist()
    for row in rows:
        if row["id"] in truth:
            assert row[names["benchmark"]] == "humaneval" and truth[row["id"]] in _named(row[names["task"]])
        else:
            assert row[names["benchmark"]] is None and row[names["task"]] is None
    assert marker["decontaminate"]["docs_dropped"] == len(truth)
    (eval_set,) = marker["decontaminate"]["eval_sets"]
    assert eval_set["name"] == "humaneval" and eval_set["rows"] == 164 and len(eval_set["sha256"]) == 64


def test_cut_mode_keeps_the_articles_with_the_task_cut_out(tmp_path):
    """Mode cut: nothing is rejected; each injected article is kept with every word of its
    own text in order, and its earlier (contaminated) text goes to changes/decontaminate."""
    marker, ingested, kept, read, originals, truth = _run(tmp_path, "cut")
    assert kept.num_rows == HOSTS and marker["funnel"]["dropped"] == {}
    text = dict(zip(kept.column("id").to_pylist(), kept.column("text").to_pylist(), strict=True))
    before = dict(zip(ingested.column("id").to_pylist(), ingested.column("text").to_pylist(), strict=True))
    left_over, pasted = 0, 0
    for doc_id in truth:
        words = iter(text[doc_id].split())
        assert all(w in words for w in originals[doc_id].split()), doc_id
        left_over += len(text[doc_id].split()) - len(originals[doc_id].split())
        pasted += len(before[doc_id].split()) - len(originals[doc_id].split())
    # of the pasted code only words in no indexed 13-gram (runs of doctest numbers) may stay
    print(f"cut mode: {left_over} of {pasted} pasted words left")
    assert left_over <= 0.05 * pasted
    assert {d for d in text if text[d] != before[d]} == set(truth)
    changes = read("changes")
    assert dict(zip(changes.column("id").to_pylist(), changes.column("text").to_pylist(), strict=True)) == \
        {d: before[d] for d in truth}
    assert marker["funnel"]["modified"] == len(truth) == marker["decontaminate"]["docs_cut"]
    spans = attribute_names()["spans"]
    for row in read("attributes").to_pylist():
        assert bool(row[spans]) == (row["id"] in truth)
    assert marker["decontaminate"]["docs_contaminated"] == len(truth) and marker["decontaminate"]["docs_dropped"] == 0
