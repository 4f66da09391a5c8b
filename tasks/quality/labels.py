"""Labelled documents for training and evaluating quality scores: ``URL#text,label``.

The files are read as a release reads its inputs (Parquet or JSONL, compressed or not,
folders and globs, any fsspec URL; texts Unicode-normalized the same way), so a score sees
the same text in evaluation as in a release. A label is binary: 1/0, true/false or the
strings "1"/"0". A bad row (no label, a label that is not binary, an empty text) is an error
naming the file and the row, unless ``skip_bad_rows``: then it is counted and left out.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.ingest import (
    InputError,
    Shard,
    expand_input,
    format_of,
    normalize_texts,
    read_bytes,
    read_jsonl,
    read_parquet,
)
from tasks.ingest_config import ColumnMap, IngestConfig, InputSpec


class LabelError(ValueError):
    """A label file cannot be used; the message names the file and the problem."""


@dataclass
class Labelled:
    texts: list[str]
    labels: np.ndarray  # int64, 0 or 1
    files: list[str]
    skipped: dict[str, int] = field(default_factory=dict)  # problem -> rows left out

    @property
    def counts(self) -> dict[str, int]:
        return {"documents": len(self.texts), "positive": int(self.labels.sum()),
                "negative": int(len(self.labels) - self.labels.sum())}


def parse_spec(spec: str) -> tuple[str, str, str]:
    """``URL#text,label`` (both columns default: ``text`` and ``label``)."""
    url, _, cols = spec.partition("#")
    parts = [c.strip() for c in cols.split(",")] if cols else []
    if len(parts) > 2 or any(not p for p in parts):
        raise LabelError(f"{spec}: expected URL#text_column,label_column")
    text = parts[0] if parts else "text"
    label = parts[1] if len(parts) > 1 else "label"
    return url, text, label


# True == 1 == 1.0 as dict keys, so booleans and integral floats are covered too
_BINARY = {1: 1, 0: 0, "1": 1, "0": 0, "true": 1, "false": 0}


def _binary(value: object) -> int | None:
    if isinstance(value, str):
        value = value.strip().lower()
    try:
        return _BINARY.get(value)  # type: ignore[arg-type]
    except TypeError:  # unhashable (a list or an object)
        return None


def read_labels(specs: list[str], skip_bad_rows: bool = False, endpoint_url: str | None = None,
                unicode_form: str = IngestConfig().unicode_form) -> Labelled:
    """Every labelled row of every file of the given specs."""
    texts: list[str] = []
    labels: list[int] = []
    files: list[str] = []
    skipped: Counter[str] = Counter()
    for spec in specs:
        url, text_col, label_col = parse_spec(spec)
        columns = ColumnMap(text=text_col, metadata=[label_col])
        try:
            _, urls, _ = expand_input(InputSpec(uri=url, columns=columns), endpoint_url)
        except InputError as exc:
            raise LabelError(str(exc)) from None
        for k, file_url in enumerate(urls):
            files.append(file_url)
            f_texts, f_labels = _read_file(Shard(k, file_url, format_of(file_url, "auto"), "labels", columns, None,
                                                 endpoint_url), text_col, label_col, skip_bad_rows, skipped,
                                           unicode_form)
            texts += f_texts
            labels += f_labels
    where = files[0] if len(files) == 1 else f"{specs[0]} ({len(files)} files)"
    if not texts:
        raise LabelError(f"{where}: no usable labelled rows" + (f" (skipped: {dict(skipped)})" if skipped else ""))
    if len(set(labels)) < 2:
        raise LabelError(f"{where}: a single class (every label is {labels[0]}); AUC needs both 0 and 1")
    return Labelled(texts, np.array(labels, dtype=np.int64), files, dict(skipped))


def _read_file(shard: Shard, text_col: str, label_col: str, skip: bool, skipped: Counter[str],
               unicode_form: str) -> tuple[list[str], list[int]]:
    try:
        data, _ = read_bytes(shard)
        raw = read_parquet(shard, data) if shard.format == "parquet" else read_jsonl(shard, data)
    except InputError as exc:
        raise LabelError(str(exc)) from None
    if shard.format == "parquet":
        names = pq.ParquetFile(io.BytesIO(data)).schema_arrow.names
        if label_col not in names:
            raise LabelError(f"{shard.uri}: no label column {label_col!r} (columns: {', '.join(names)})")

    def bad(row: int, kind: str, detail: str | None = None) -> None:
        if not skip:
            where = f"line {row + 1}" if shard.format == "jsonl" else f"row {row + 1}"
            raise LabelError(f"{shard.uri}: {where}: {detail or kind} (--skip-bad-rows counts and skips such rows)")
        skipped[kind] += 1

    for row, reason, _ in raw.bad_rows:  # unreadable rows: bad JSON or UTF-8, no text
        bad(row, reason.split(":")[0], reason)
    valid = raw.text.is_valid().to_numpy(zero_copy_only=False)
    normalized = iter(normalize_texts(raw.text.filter(pa.array(valid)), unicode_form).to_pylist())
    texts: list[str] = []
    labels: list[int] = []
    any_label = False
    for k, row in enumerate(raw.rows):
        if not valid[k]:
            continue  # already reported through bad_rows
        text = next(normalized)
        meta = json.loads(raw.metadata[k]) if raw.metadata[k] else {}
        if label_col not in meta or meta[label_col] is None:
            bad(row, "missing label", f"missing label {label_col!r}")
            continue
        any_label = True
        label = _binary(meta[label_col])
        if label is None:
            bad(row, "label not binary", f"label {meta[label_col]!r} is not binary (expected 0/1 or true/false)")
            continue
        if not text.strip():
            bad(row, "empty text")
            continue
        texts.append(text)
        labels.append(label)
    if raw.rows and not any_label and shard.format != "parquet":
        raise LabelError(f"{shard.uri}: no row has a label {label_col!r} ({len(raw.rows)} rows)")
    return texts, labels
