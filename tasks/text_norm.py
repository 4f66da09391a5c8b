"""The project's text normal form (Unicode normalization, LF line endings) and exact dedup's
comparison key: core, shared by ingest, extract and exact dedup."""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def content_key(text: str, mode: str) -> str:
    """The text that exact dedup compares (documented in docs/stages.md)."""
    if mode == "text":
        return text
    if mode == "stripped":
        return "\n".join(line.strip() for line in text.strip().split("\n"))
    return " ".join(text.lower().split())


def normalize_texts(texts: pa.Array, form: str) -> pa.Array:
    """Unicode normalization and LF line endings over a column without nulls. ASCII text is
    already in every normal form; the rest goes through CPython's ``unicodedata``, whose quick
    check makes already-normalized text cheap (measured 1.7x faster than pyarrow's
    ``utf8_normalize`` on the benchmark corpus)."""
    if form != "none" and len(texts):
        wide = np.flatnonzero(~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False))
        # unicodedata returns the very same object for a text that is already normalized
        changed = [(k, n) for k, t in zip(wide.tolist(), texts.take(pa.array(wide)).to_pylist(), strict=True)
                   if (n := unicodedata.normalize(form, t)) is not t]
        if changed:
            mask = np.zeros(len(texts), dtype=bool)
            mask[[k for k, _ in changed]] = True
            texts = pc.replace_with_mask(texts, pa.array(mask), pa.array([n for _, n in changed], texts.type))
    if len(texts) and pc.any(pc.match_substring(texts, "\r")).as_py():
        texts = pc.replace_substring(pc.replace_substring(texts, "\r\n", "\n"), "\r", "\n")
    return texts


def normalize_text(text: str, form: str) -> str:
    """:func:`normalize_texts` for one text."""
    return normalize_texts(pa.array([text], pa.string()), form)[0].as_py()
