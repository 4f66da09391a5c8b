"""The machinery every shard step shares: the run context, the completion marker, and the one
writer of a map step's result.

A map step reads its input work table, computes a :class:`MapResult` (kept documents, rejects
with reasons, attributes, changed texts, figures) and hands it to :func:`write_result`, which
stores every part through :mod:`tasks.layout` and returns the step's marker. Steps are wrapped
in :func:`once`: a step whose marker exists returns the marker and does nothing else.
No Prefect and no Ray here (the orchestration layer lives in ``flows/`` and
``tasks/parallel.py``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar, copy_context
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.schema import documents_of, reason_key, to_rejects, word_counts
from tasks.storage import ARROW_POOL, Storage, StorageSpec
from tasks.timeline import mark

if TYPE_CHECKING:  # the pipeline file assembles the stages' configs: stage machinery only names its type
    from tasks.config import PipelineConfig

# The node the running step is on, set by the orchestration's task wrapper
# (``tasks.parallel.shard_task``) and recorded in the step's marker (it shows how work spread);
# None when a step is called directly, as unit tests do.
STEP_NODE: ContextVar[str | None] = ContextVar("refinery_step_node", default=None)

# Set for steps that run beside others in threads of one task (:func:`in_threads`): their
# marker's cpu_seconds is then the thread's own CPU time (``cpu_clock: "thread"``), since the
# process's would count the other threads' too; such steps read Parquet on their own thread
# (tasks.storage.ARROW_POOL), so that the clock sees the decoding
THREAD_CPU: ContextVar[bool] = ContextVar("refinery_thread_cpu", default=False)

T = TypeVar("T")

# A function run inside a map step on the table that step hands to the next stage (near
# dedup's signature map): (storage, ctx, shard, work) -> figures for the step's marker.
PreMap = Callable[[Storage, "RunContext", str, pa.Table], dict[str, Any]]


@dataclass(frozen=True)
class Feed:
    """What the next stage asks of the stage before it: run ``fn`` on the work table named
    ``after`` (the previous stage's output) and keep its figures under ``key`` in the marker."""

    after: str
    key: str
    fn: PreMap


@dataclass(frozen=True)
class RunContext:
    """What every step of one release needs; picklable and free of secrets."""

    release: str
    created: str  # ISO time the release was first started; reused by reruns
    parent: str | None
    storage: StorageSpec
    config: PipelineConfig
    exact_buckets: int = 1  # resolved from the config once the shards are known
    near_partitions: int = 1
    feed: Feed | None = None  # set by the orchestration for the stage before one that needs it

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)


def once(ctx: RunContext, stage: str, shard: str, compute: Callable[[Storage], dict[str, Any]]) -> dict[str, Any]:
    """Run ``compute`` unless the step's marker exists; write the marker last (its presence
    means every output of the step is complete)."""
    storage = ctx.storage.open()
    marker = layout.marker_path(ctx.release, stage, shard)
    done = storage.read_json_or_none(marker)
    if done is not None:
        done["skipped"] = True
        return done
    clock = time.thread_time if THREAD_CPU.get() else time.process_time
    t0, c0 = time.perf_counter(), clock()
    mark("step_start", stage=stage, shard=shard)
    result = compute(storage)
    # cpu_seconds: the worker process's CPU time for the step, or its thread's when it runs
    # beside others (wall seconds on a shared machine mostly measure the other processes;
    # benchmarks compare CPU)
    result.update(stage=stage, shard=shard, seconds=round(time.perf_counter() - t0, 3),
                  cpu_seconds=round(clock() - c0, 3), node=STEP_NODE.get())
    if THREAD_CPU.get():
        result["cpu_clock"] = "thread"
    storage.write_json(marker, result)
    mark("step_end", stage=stage, shard=shard)
    result["skipped"] = False
    return result


def in_threads(step: Callable[[T], dict[str, Any]], items: Sequence[T], threads: int) -> list[dict[str, Any]]:
    """``step`` over ``items`` in up to ``threads`` threads of this process (no more than its
    CPUs), results in the order of ``items``. For the partitions of a global phase that runs as
    one task while the run's other workers wait for it: numpy's sorts and Arrow's reads and
    writes release the GIL, so two threads use two cores. Each thread runs in a copy of the
    caller's context (the step's node, the timeline)."""
    threads = min(threads, len(items), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1)
    if threads <= 1:
        return [step(item) for item in items]

    def one(item: T) -> dict[str, Any]:
        THREAD_CPU.set(True)
        ARROW_POOL.set(False)
        return step(item)

    with ThreadPoolExecutor(threads, thread_name_prefix="refinery-step") as pool:
        futures = [pool.submit(copy_context().run, one, item) for item in items]
        return [f.result() for f in futures]


def read_work(storage: Storage, ctx: RunContext, stage: str, shard: str) -> pa.Table:
    """The work table ``stage`` left for ``shard``."""
    return storage.read_parquet(layout.work_path(ctx.release, stage, shard))


def write_work(storage: Storage, ctx: RunContext, stage: str, shard: str, table: pa.Table) -> None:
    storage.write_parquet(layout.work_path(ctx.release, stage, shard), table)


def write_by_source(storage: Storage, table: pa.Table, sources: pa.Array, path_of: Callable[[str], str]) -> list[dict]:
    """One file per source (``path_of(source)``). Sources whose folders one filesystem would
    merge (case or Unicode form only differ) get encoded folder names, all of them, so that no
    file overwrites another on macOS or Windows; the file's ``source`` stays the name itself."""
    if sources.null_count:
        # a row without a source has no folder: filtering dropped it silently, and the one-source
        # shortcut below would write it under a folder named None
        raise ValueError(f"write_by_source: {sources.null_count} of {len(sources)} rows have no source")
    files = []
    names = sorted(pc.unique(sources).to_pylist())
    folded = Counter(layout.fold_key(n) for n in names)
    # one source (the usual case): the table as it is, since filtering copied every text to
    # keep every row (0.012 CPU-s for a shard's documents). Only a table of one chunk per
    # column: the writer's pages follow the chunks, and a filter drops the empty ones
    whole = len(names) == 1 and all(c.num_chunks == 1 for c in table.columns)
    for source in names:
        part = table if whole else table.filter(pc.equal(sources, source))
        where = layout.Encoded(source) if folded[layout.fold_key(source)] > 1 else source
        info = storage.write_parquet(path_of(where), part).to_dict()
        info["source"] = source
        files.append(info)
    return files


def write_rejects(storage: Storage, ctx: RunContext, stage: str, shard: str, rejects: pa.Table) -> list[dict]:
    if rejects.num_rows == 0:
        return []
    return write_by_source(storage, rejects, rejects.column("source").combine_chunks(),
                           lambda src: layout.rejects_path(ctx.release, stage, src, shard))


def write_attributes(storage: Storage, ctx: RunContext, tagger_set: str, shard: str, attrs: pa.Table,
                     sources: pa.Array) -> list[dict]:
    if attrs.num_rows == 0:
        return []
    return write_by_source(storage, attrs, sources,
                           lambda src: layout.attributes_path(ctx.release, tagger_set, src, shard))


SAMPLE_CHARS = 1500


def write_changes(storage: Storage, ctx: RunContext, stage: str, shard: str, before: pa.Table,
                  after: list[str], keep: Any) -> tuple[list[dict], list[dict[str, Any]]]:
    """For the documents a stage modified (and kept): their text before it, under
    ``changes/<stage>/``, so that ``refinery explain`` can show the diff; plus up to two samples
    (before, after) for the report."""
    texts = before.column("text").to_pylist()
    changed = [i for i, (a, b) in enumerate(zip(texts, after, strict=True)) if a != b and bool(keep[i])]
    if not changed:
        return [], []
    rows = before.take(pa.array(changed, pa.int64())).select(["id", "source", "text"])
    files = write_by_source(storage, rows, rows.column("source").combine_chunks(),
                            lambda src: layout.changes_path(ctx.release, stage, src, shard))
    ids = before.column("id").to_pylist()
    samples = [{"stage": stage, "id": ids[i], "before": texts[i][:SAMPLE_CHARS], "after": after[i][:SAMPLE_CHARS]}
               for i in changed[:2]]
    return files, samples


def funnel(docs_in: int, work_out: pa.Table, tokens_in: int, rejects: pa.Table,
           tokens_out: int | None = None) -> dict[str, Any]:
    """One step's line of the release funnel."""
    dropped: dict[str, int] = {}
    for reason in rejects.column("reason").to_pylist():
        key = reason_key(reason)
        dropped[key] = dropped.get(key, 0) + 1
    return {
        "docs_in": docs_in,
        "docs_out": work_out.num_rows,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out if tokens_out is not None else total_words(work_out.column("text")),
        "modified": 0,
        "dropped": dict(sorted(dropped.items())),
    }


def total_words(texts: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(word_counts(texts)).as_py() or 0)


def emit(storage: Storage, ctx: RunContext, stage: str, shard: str, work: pa.Table, final: bool,
         words: pa.Array | None = None, model_tokens: tuple[Any, str] | None = None,
         work_file: str | None = None) -> dict[str, Any]:
    """The output of a map step: the next step's work table or, for the last map step of the
    release, its document files (publishing is fused into it, saving a read and a write).
    When the next stage asked for it (:class:`Feed`), its map runs here on the same table.
    ``words``: the word counts of ``work``, when the caller has them; ``model_tokens``: its
    ``tasks.tokens.release_counts`` (tokens per row or None, and the tokenizer's name), when
    the caller counted them in its own pass; ``work_file``: a scratch Parquet file that holds
    ``work`` already (see :attr:`MapResult.kept_file`)."""
    if not final:
        if work_file is not None:
            storage.copy(work_file, layout.work_path(ctx.release, stage, shard))
        else:
            write_work(storage, ctx, stage, shard, work)
        if ctx.feed is not None and ctx.feed.after == stage:
            return {ctx.feed.key: ctx.feed.fn(storage, ctx, shard, work)}
        return {}
    docs = documents_of(work)
    sources = docs.column("source").combine_chunks()
    files = write_by_source(storage, docs, sources, lambda src: layout.documents_path(ctx.release, src, shard))
    words = words if words is not None else word_counts(docs.column("text"))
    if model_tokens is None:
        from tasks.tokens import release_counts

        model_tokens = release_counts(ctx.config.tokenizer, docs.column("text"))
    model_tokens, tokenizer = model_tokens
    for info in files:
        where = pc.equal(sources, info["source"])
        mine = words.filter(where)
        info["tokens"] = int(pc.sum(mine).as_py() or 0)  # whitespace words, as everywhere in the funnel
        info["length_histogram"] = length_histogram(mine)
        if model_tokens is not None:
            info["model_tokens"] = int(model_tokens[where.to_numpy(zero_copy_only=False)].sum())
    return {"documents": files, "tokenizer": tokenizer}


# Bin edges (words per document) of the length histograms in the manifest and the report.
LENGTH_BINS = [0, 10, 30, 100, 300, 1000, 3000, 10000]


def length_histogram(words: pa.Array) -> list[int]:
    counts = np.bincount(np.searchsorted(LENGTH_BINS, words.to_numpy(zero_copy_only=False), side="right") - 1,
                         minlength=len(LENGTH_BINS))
    return [int(c) for c in counts[: len(LENGTH_BINS)]]


@dataclass
class Changes:
    """The texts a step produced for every document it saw (``before``'s rows), and which it
    kept: the changed and kept ones are stored under ``changes/<stage>/``."""

    before: pa.Table
    after: list[str]
    keep: Any


@dataclass
class MapResult:
    """What one map step made of one shard.

    ``kept``: the documents it passes on (with any new text); ``rejects``: a
    :func:`tasks.schema.to_rejects` table of what it dropped, with reasons; ``attributes``: an
    ``id`` column plus one column per attribute, with the ``attribute_sources`` of its rows;
    ``changes``: its rewritten texts; ``figures``: anything else for its marker.
    ``docs_in``/``tokens_in``: the funnel's input side; ``kept_words``: the word counts of
    ``kept`` when the step has them.
    """

    kept: pa.Table
    rejects: pa.Table
    docs_in: int
    tokens_in: int
    attributes: pa.Table | None = None
    attribute_sources: pa.Array | None = None
    attribute_set: str | None = None  # default: the stage's name
    changes: Changes | None = None
    kept_words: pa.Array | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    kept_model_tokens: tuple[Any, str] | None = None  # emit's model_tokens, when the step counted them
    # the scratch work table that holds ``kept`` already (the file the step read it from, when
    # it kept every row): copied when ``kept`` goes to the next stage's work table
    kept_file: str | None = None


def write_result(storage: Storage, ctx: RunContext, stage: str, shard: str, result: MapResult,
                 final: bool) -> dict[str, Any]:
    """Store a map step's result (attributes, rejects, earlier texts, its output) and return
    its marker: funnel, files, documents when ``final``, samples and the step's figures."""
    files: list[dict] = []
    if result.attributes is not None:
        sources = result.attribute_sources
        if sources is None:
            raise ValueError(f"{stage}: attributes without their sources")
        files += write_attributes(storage, ctx, result.attribute_set or stage, shard, result.attributes, sources)
    files += write_rejects(storage, ctx, stage, shard, result.rejects)
    changes, samples = [], []
    if result.changes is not None:
        changes, samples = write_changes(storage, ctx, stage, shard, result.changes.before, result.changes.after,
                                         result.changes.keep)
    files += changes
    tokens_out = None if result.kept_words is None else int(pc.sum(result.kept_words).as_py() or 0)
    line = funnel(result.docs_in, result.kept, result.tokens_in, result.rejects, tokens_out)
    line["modified"] = sum(c["rows"] for c in changes)
    out = emit(storage, ctx, stage, shard, result.kept, final, result.kept_words, result.kept_model_tokens,
               result.kept_file)
    return {"funnel": line, "files": files, **out, "samples": samples, **result.figures}


def sum_figures(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards' figures of one stage added up: numbers summed, nested counts merged; other
    values (names, settings) kept from the first shard."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, bool) or not isinstance(value, int | float | dict):
                out.setdefault(key, value)
            elif isinstance(value, dict):
                out[key] = sum_figures([out.get(key, {}), value])
            else:
                out[key] = out.get(key, 0) + value
    return out


def rewrite_result(stage: str, work: pa.Table, new_text: list[str], keep: Any, reasons: list[str | None],
                   details: list[str | None], attributes: dict[str, pa.Array]) -> MapResult:
    """The result of a stage that rewrites and drops documents (ProX, leaner): its attributes
    for every document it saw, rejects with the text they came in with, the earlier text of
    what it changed, and the rewritten documents it kept."""
    mask = np.asarray(keep, dtype=bool)
    gone = pa.array(~mask)
    rejects = to_rejects(work.filter(gone), stage, pa.array(reasons, pa.string()).filter(gone),
                         detail=pa.array(details, pa.string()).filter(gone))
    rewritten = work.set_column(work.schema.get_field_index("text"), "text", pa.array(new_text, pa.string()))
    return MapResult(kept=rewritten.filter(pa.array(mask)), rejects=rejects, docs_in=work.num_rows,
                     tokens_in=total_words(work.column("text")),
                     attributes=pa.table({"id": work.column("id"), **attributes}),
                     attribute_sources=work.column("source").combine_chunks(),
                     changes=Changes(work, new_text, keep))
