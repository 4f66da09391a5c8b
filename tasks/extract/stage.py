"""The extract stage over an Arrow table: HTML to main text.

Input: a work table (``tasks.schema.WORK_SCHEMA``; only ``text`` and ``metadata`` are read).
A row is a page when its metadata's ``web.kind`` is ``"html"`` (set by ingest for WARC response
records and for Parquet / JSONL inputs with an HTML column); its ``text`` is the page's HTML,
already decoded (tasks.extract.charset). Every other row (plain text inputs, WET records)
passes through unchanged.

Output: :class:`ExtractResult`, row for row with the input: ``keep``, the new ``text``, the
reject ``reason`` of dropped rows, the new ``metadata`` (title and language added; the ``web``
pointer kept so that ``refinery explain`` can read the original HTML from its WARC instead of a
copy), per-document ``attributes`` and the stage's ``figures`` for the manifest.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from tasks.extract.config import ExtractConfig
from tasks.schema import whole_document_spans

STAGE = "extract"
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
LANGUAGE_PREFIX_CHARS = 4000  # of the extracted text, read by the language detector


@dataclass
class Extracted:
    text: str
    title: str | None
    language: str | None
    language_score: float | None


@dataclass
class ExtractResult:
    keep: np.ndarray  # bool per input row
    text: list[str]  # the new text (the input text for rows that are not pages)
    reason: list[str | None]  # why a dropped row was dropped
    metadata: list[str | None]  # JSON, as the work table's column
    changed: np.ndarray  # bool per row: the text is new (its content hash must be recomputed)
    attributes: dict[str, pa.Array]
    figures: dict[str, Any] = field(default_factory=dict)


def _resiliparse(html: str, main_content: bool) -> tuple[str, str | None]:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    title = (tree.title or "").strip() or None
    if main_content:
        # comments=False: people's main text leaves out readers' comment sections (content-line
        # F1 +0.02 on both shared sets, recall unchanged) and it spares resiliparse their subtrees
        text = extract_plain_text(tree, main_content=True, alt_texts=False, links=False, list_bullets=False,
                                  noscript=False, comments=False)
        return text.strip(), title
    # all visible text, one block per line, title first: the form of a WET record, and of the
    # page text the ProX line model was trained on
    body = extract_plain_text(tree, main_content=False, alt_texts=False, links=False, list_bullets=False,
                              noscript=False)
    lines = [" ".join(ln.split()) for ln in body.split("\n")]
    text = "\n".join(ln for ln in ([title or ""] + lines) if ln)
    return text, title


def _trafilatura(html: str) -> tuple[str, str | None]:
    import trafilatura
    from resiliparse.parse.html import HTMLTree

    text = trafilatura.extract(html, include_comments=False, include_tables=True, deduplicate=False) or ""
    return text.strip(), (HTMLTree.parse(html).title or "").strip() or None


def extract_html(html: str, cfg: ExtractConfig) -> Extracted:
    """Main text, title and language of one page."""
    text, title = _trafilatura(html) if cfg.extractor == "trafilatura" else _resiliparse(html, cfg.main_content)
    lang, score = None, None
    if cfg.language and text:
        from resiliparse.parse.lang import detect_fast

        # the detector is linear in the text and its profile settles long before the end of a
        # page: a bounded prefix keeps its cost flat on long pages (same language on every page of
        # both shared sets)
        lang, raw = detect_fast(text[:LANGUAGE_PREFIX_CHARS])
        # detect_fast's score is a distance (lower is surer); kept as it is
        score = float(raw)
        if lang == "unknown":
            lang = None
    return Extracted(text, title, lang, score)


def page_pointer(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``web`` entry of a row's metadata when the row is an HTML page."""
    web = meta.get("web") if isinstance(meta, dict) else None
    return web if isinstance(web, dict) and web.get("kind") == "html" else None


def extract(table: pa.Table, cfg: ExtractConfig, unicode_form: str = "NFC") -> ExtractResult:
    """Run the extractor over the pages of a work table (see the module docstring). New text is
    normalized as ingest normalizes documents (``unicode_form``: the pipeline's
    ``ingest.unicode_form``; LF line ends)."""
    texts = table.column("text").to_pylist()
    metas_in = table.column("metadata").to_pylist() if "metadata" in table.column_names else [None] * len(texts)
    n = len(texts)
    keep = np.ones(n, dtype=bool)
    changed = np.zeros(n, dtype=bool)
    out = list(texts)
    reason: list[str | None] = [None] * n
    metas = list(metas_in)
    extractor: list[str | None] = [None] * n
    titles: list[str | None] = [None] * n
    langs: list[str | None] = [None] * n
    scores: list[float | None] = [None] * n
    ratio = np.zeros(n)
    fig: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    t0 = time.process_time()
    for i, (html, raw_meta) in enumerate(zip(texts, metas_in, strict=True)):
        if not cfg.enabled or raw_meta is None or '"html"' not in raw_meta:
            continue
        try:
            meta = orjson.loads(raw_meta)
        except orjson.JSONDecodeError:
            continue
        if page_pointer(meta) is None:
            continue
        fig["pages"] += 1
        fig["html_chars"] += len(html)
        # a character is at most 4 UTF-8 bytes: most pages need no encoding to be measured
        size = len(html) if 4 * len(html) <= cfg.max_html_bytes else len(html.encode("utf-8", "surrogatepass"))
        if size > cfg.max_html_bytes:
            keep[i], reason[i] = False, f"HTML too large ({size} bytes > max_html_bytes {cfg.max_html_bytes})"
        else:
            try:
                got = extract_html(html, cfg)
            except Exception as exc:  # noqa: BLE001 - a page the parser cannot take is that page's problem
                keep[i], reason[i] = False, f"extractor failed: {type(exc).__name__}: {str(exc)[:200]}"
                got = None
            if got is not None:
                extractor[i], titles[i], langs[i], scores[i] = cfg.extractor, got.title, got.language, got.language_score
                # text is stripped, so non-empty text has a word: words are counted only when a
                # larger minimum asks, and only as far as it (split's cost is the page's length)
                words = len(got.text.split(maxsplit=cfg.min_words)) if cfg.min_words > 1 else 1
                if not got.text:
                    keep[i], reason[i] = False, "no text extracted"
                elif words < cfg.min_words:
                    keep[i], reason[i] = False, f"too little text ({words} words < min_words {cfg.min_words})"
                else:
                    out[i] = got.text
                    changed[i] = True
                    ratio[i] = len(got.text) / max(1, len(html))
                    fig["text_chars"] += len(got.text)
                    languages[got.language or "unknown"] += 1
                    meta["title"] = got.title
                    meta["language"] = got.language
                    meta["extractor"] = cfg.extractor
                    metas[i] = orjson.dumps(meta, option=_ORJSON).decode()
        if not keep[i]:
            dropped[_key(reason[i])] += 1
    if changed.any():
        from tasks.text_norm import normalize_texts

        idx = np.flatnonzero(changed)
        normal = normalize_texts(pa.array([out[i] for i in idx], pa.string()), unicode_form).to_pylist()
        for i, t in zip(idx.tolist(), normal, strict=True):
            out[i] = t
    fig["extracted"] = int(changed.sum())
    cpu = time.process_time() - t0
    lengths = pa.array([len(t) for t in texts], pa.int64())
    attributes = {
        "extract__html__extractor": pa.array(extractor, pa.string()),
        "extract__html__title": pa.array(titles, pa.string()),
        "extract__html__language": pa.array(langs, pa.string()),
        "extract__html__language_distance": pa.array(scores, pa.float64()),
        "extract__html__text_ratio": whole_document_spans(lengths, pa.array(ratio, pa.float64())),
    }
    figures = {**fig, "dropped": dict(sorted(dropped.items())), "languages": dict(languages.most_common(20)),
               "extractor": cfg.extractor, "main_content": cfg.main_content,
               "pages_per_cpu_s": round(fig["pages"] / cpu, 1) if cpu > 0 and fig["pages"] else None}
    return ExtractResult(keep, out, reason, metas, changed, attributes, figures)


def _key(reason: str | None) -> str:
    from tasks.schema import reason_key

    return reason_key(reason or "")


def with_extract_columns(work: pa.Table, res: ExtractResult, dedup_key: str | None) -> pa.Table:
    """The work table with the stage's ``metadata`` and, for the rows it gave new text, the
    ``content_hash`` of that text (ingest hashed the HTML; exact dedup must compare the text);
    the ``text`` column is left as it came, for ``finish_text_stage`` to replace.
    ``dedup_key``: the exact-dedup key mode, None when exact dedup is off."""
    import xxhash

    from tasks.text_norm import content_key

    work = work.set_column(work.schema.get_field_index("metadata"), "metadata", pa.array(res.metadata, pa.string()))
    if dedup_key is None or not res.changed.any():
        return work
    hashes = work.column("content_hash").to_pylist()
    for i in np.flatnonzero(res.changed).tolist():
        hashes[i] = xxhash.xxh3_128_digest(content_key(res.text[i], dedup_key).encode("utf-8"))
    field = work.schema.field("content_hash")
    return work.set_column(work.schema.get_field_index("content_hash"), field, pa.array(hashes, field.type))
