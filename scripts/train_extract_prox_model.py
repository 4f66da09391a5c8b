#!/usr/bin/env python3
"""Regenerate the ProX line model for text after extraction, shipped in the package:
tasks/extract/models/prox_after_extract/model.json.gz and its model_card.json.

Pairs: the two shared labelled sets (../shared/data/web_pages_scrapinghub, gold_text, and
../shared/data/web_pages_readability, main_text), their HTML run through the extract stage's
default (resiliparse, main content), against the people's text. Trained by
tasks.prox.training with the default TrainParams (seed 0; LightGBM on one thread with
deterministic=True; gzip without a timestamp), so a rerun gives the same model bytes.
Cross-set figures (trained on one set, measured on the other): bench/extract_bench.py.

    python scripts/train_extract_prox_model.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.extract.config import ExtractConfig  # noqa: E402
from tasks.prox.after_extract import AFTER_EXTRACT_MODEL, extracted_pairs  # noqa: E402
from tasks.prox.training import CARD_FILE, SHARED, TrainParams, train_to_storage  # noqa: E402

SETS = {"web_pages_scrapinghub": ("url", "gold_text"), "web_pages_readability": ("id", "main_text")}


def main() -> None:
    import pyarrow.parquet as pq

    out = AFTER_EXTRACT_MODEL.parent.resolve()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        # the pairs' names are recorded in the model: relative ones keep its bytes the same
        os.chdir(tmp)
        try:
            urls = []
            for name, (ident, kept) in SETS.items():
                t = pq.read_table(SHARED / name / f"{name}.parquet", columns=[ident, "html", kept]).to_pylist()
                rows = [{"id": r[ident], "html": r["html"], "kept": r[kept]} for r in t]
                urls.append(extracted_pairs(f"extracted_{name}.parquet", rows, ExtractConfig()))
            card = train_to_storage(urls, str(out), TrainParams(), name="prox-learned-after-extract")
        finally:
            os.chdir(here)
    text = (out / CARD_FILE).read_text().replace(str(out), "tasks/extract/models/prox_after_extract")
    (out / CARD_FILE).write_text(json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n")
    print(f"{card['model']}: sha256 {card['model_sha256']}; held-out sites: {card['validation']}")


if __name__ == "__main__":
    main()
