"""A ProX line model for text that an extractor already made: the learned writer's shipped
model (tasks/prox/models) learnt its lines from whole-page text, menus and all, and after
main-content extraction it removes real content (the lede, short paragraphs: see
docs/extract.md). This one is trained the same way (tasks.prox.training) on pairs of
(extracted text, people's main text) instead, so that ProX after extraction cleans what the
extractor left rather than undoing it.

``AFTER_EXTRACT_MODEL`` is the shipped one (both shared sets, resiliparse main content):
a pipeline with the extract stage and the learned ProX writer should set
``prox.model`` to it. Regenerate: ``python scripts/train_extract_prox_model.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks.extract.config import ExtractConfig
from tasks.prox.stage import AFTER_EXTRACT_MODEL  # noqa: F401  (named here with its trainer)


def extracted_pairs(path: str | Path, rows: list[dict], cfg: ExtractConfig) -> str:
    """Write (id, extracted text, kept text) rows as a Parquet pairs file the ProX trainer
    reads; ``rows``: dicts with ``id`` (a URL or a site-named id), ``html`` and ``kept``.
    Returns its pairs URL (``file#page_column,kept_column``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.extract.stage import extract

    html = [r["html"] for r in rows]
    meta = [f'{{"web":{{"kind":"html","row":{k}}}}}' for k in range(len(rows))]
    res = extract(pa.table({"text": pa.array(html, pa.string()), "metadata": pa.array(meta, pa.string())}), cfg)
    texts = [t if k else "" for t, k in zip(res.text, res.keep, strict=True)]
    pq.write_table(pa.table({"url": [r["id"] for r in rows], "extracted": texts, "kept": [r["kept"] for r in rows]}),
                   path)
    return f"{path}#extracted,kept"


def train_after_extract(rows: list[dict], cfg: ExtractConfig | None = None, params=None):
    """A line model trained on these pages' extracted text (held in memory, not written)."""
    from tasks.prox.training import TrainParams, check_pairs, read_pairs, train_model

    params = params or TrainParams()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = read_pairs([extracted_pairs(Path(tmp) / "pairs.parquet", rows, cfg or ExtractConfig())])
    good, labels, _ = check_pairs(pairs, params)
    return train_model([pairs.pages[i] for i in good], labels, [pairs.sites[i] for i in good], params)
