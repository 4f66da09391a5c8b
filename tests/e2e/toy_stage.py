"""A stage declared outside the project's code, as a plugin would declare one: a map step over
Arrow tables and a registry entry. It drops documents shorter than ``MIN_WORDS`` words and tags
every document with its word count."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.registry import Stage
from tasks.schema import to_rejects, whole_document_spans, word_counts
from tasks.stepkit import MapResult, RunContext, once, read_work, total_words, write_result
from tasks.storage import Storage

NAME = "toy_short"
MIN_WORDS = 500


def toy_step(ctx: RunContext, shard: str, prev_stage: str, final: bool) -> dict[str, Any]:
    def compute(storage: Storage) -> dict[str, Any]:
        work = read_work(storage, ctx, prev_stage, shard)
        words = word_counts(work.column("text"))
        keep = pc.greater_equal(words, MIN_WORDS)
        kept = work.filter(keep)
        rejects = to_rejects(work.filter(pc.invert(keep)), NAME, f"fewer than {MIN_WORDS} words")
        chars = pc.utf8_length(work.column("text"))
        attrs = pa.table({"id": work.column("id"), f"{NAME}__length__words": whole_document_spans(chars, words)})
        result = MapResult(kept=kept, rejects=rejects, docs_in=work.num_rows, tokens_in=total_words(work.column("text")),
                           attributes=attrs, attribute_sources=work.column("source").combine_chunks(),
                           figures={"toy": {"short": rejects.num_rows}})
        return write_result(storage, ctx, NAME, shard, result, final)

    return once(ctx, NAME, shard, compute)


STAGE = Stage(name=NAME, kind="map", rank=45, step=toy_step, reads="the previous stage's work table",
              writes=f"work table; rejects/{NAME}; attributes/{NAME}",
              summary=f"drops documents of fewer than {MIN_WORDS} words (a test's stage)")
