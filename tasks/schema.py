"""Arrow schemas of documents, attributes and rejects (DESIGN §2), and helpers over them."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from tasks.kernels import word_counts  # noqa: F401  (the project's token count, documented in docs/)

TIMESTAMP = pa.timestamp("us", tz="UTC")

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("added", TIMESTAMP),
        pa.field("created", TIMESTAMP),
        pa.field("metadata", pa.string()),  # JSON object, or null
        pa.field("version", pa.string()),
        # the input's own id of the document (its mapped id column, as a string), or null;
        # unique within a source, what takedown requests name, and Dolma's `id` on export
        pa.field("source_id", pa.string()),
    ]
)

SPAN = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])
SPANS = pa.list_(SPAN)

REJECT_EXTRA = [
    pa.field("stage", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("survivor_id", pa.string()),
    pa.field("input_uri", pa.string()),
    pa.field("input_row", pa.int64()),
]
# A reject keeps what could be read of the document; text and id may be null for rows that
# could not be parsed at all.
REJECT_SCHEMA = pa.schema(
    [f.with_nullable(True) for f in DOCUMENT_SCHEMA] + REJECT_EXTRA
)

# Columns carried through the pipeline next to the documents but never published.
WORK_COLUMNS = [
    pa.field("content_hash", pa.binary(16)),
    pa.field("order", pa.int64()),  # global stable order: (shard index << 32) | row
    pa.field("input_row", pa.int64()),
    # the file a row came from, so that a reject of any later stage names file and row
    pa.field("input_uri", pa.string()),
]
WORK_SCHEMA = pa.schema(list(DOCUMENT_SCHEMA) + WORK_COLUMNS)


_REASON_DETAIL = re.compile(r" \(|:| '| at byte ")


def reason_key(reason: str) -> str:
    """The kind of a reject reason, as the funnel counts it: without the value, row or byte it
    names ("duplicate id 'x' (first at row 3)" -> "duplicate id")."""
    return _REASON_DETAIL.split(reason, maxsplit=1)[0]


def attribute_name(tagger_set: str, tagger: str, attribute: str) -> str:
    return f"{tagger_set}__{tagger}__{attribute}"


def whole_document_spans(lengths: pa.Array, scores: pa.Array) -> pa.Array:
    """One ``(0, len(text), score)`` span per document, built without a Python loop."""
    if isinstance(lengths, pa.ChunkedArray):
        lengths = lengths.combine_chunks()
    if isinstance(scores, pa.ChunkedArray):
        scores = scores.combine_chunks()
    n = len(lengths)
    starts = pa.array([0] * n, pa.int64()) if n else pa.array([], pa.int64())
    structs = pa.StructArray.from_arrays(
        [starts, pc.cast(lengths, pa.int64()), pc.cast(scores, pa.float64())],
        fields=list(SPAN),
    )
    offsets = pa.array(range(n + 1), pa.int32())
    return pa.ListArray.from_arrays(offsets, structs, type=SPANS)


def empty_rejects() -> pa.Table:
    return REJECT_SCHEMA.empty_table()


def to_rejects(
    docs: pa.Table, stage: str, reasons: pa.Array | str, detail: pa.Array | None = None,
    survivor_ids: pa.Array | None = None,
) -> pa.Table:
    """Rejects from rows of a work or document table, keeping every published column."""
    n = docs.num_rows
    cols = {}
    for field in DOCUMENT_SCHEMA:
        cols[field.name] = docs.column(field.name) if field.name in docs.column_names else pa.nulls(n, field.type)
    cols["stage"] = pa.array([stage] * n, pa.string())
    cols["reason"] = pa.array([reasons] * n, pa.string()) if isinstance(reasons, str) else reasons
    cols["detail"] = detail if detail is not None else pa.nulls(n, pa.string())
    cols["survivor_id"] = survivor_ids if survivor_ids is not None else pa.nulls(n, pa.string())
    cols["input_uri"] = docs.column("input_uri") if "input_uri" in docs.column_names else pa.nulls(n, pa.string())
    cols["input_row"] = docs.column("input_row") if "input_row" in docs.column_names else pa.nulls(n, pa.int64())
    return pa.table(cols, schema=REJECT_SCHEMA)


def documents_of(work: pa.Table) -> pa.Table:
    """The published columns of a work table."""
    return work.select(DOCUMENT_SCHEMA.names).cast(DOCUMENT_SCHEMA)
