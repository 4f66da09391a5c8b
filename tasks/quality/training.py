"""``refinery quality train``: read the corpora, train, store the model and its card."""

from __future__ import annotations

import hashlib
from typing import Any

from tasks.config import ColumnMap, InputSpec
from tasks.ingest import read_texts
from tasks.quality.classifier import TrainParams, model_card, train
from tasks.storage import Storage, StorageSpec, canonical_json

MODEL_FILE = "model.bin"
CARD_FILE = "model_card.json"


def corpus_spec(url: str) -> InputSpec:
    """``URL`` or ``URL#column``: the column (or JSON key) holding the text; default ``text``."""
    uri, _, column = url.partition("#")
    return InputSpec(uri=uri, columns=ColumnMap(text=column or "text", metadata="none"))


def train_to_storage(positive: list[str], negative: list[str], output: str, params: TrainParams,
                     name: str | None = None, endpoint_url: str | None = None) -> dict[str, Any]:
    """Train on the texts of the given corpora and write ``model.bin`` then ``model_card.json``
    under ``output`` (any fsspec URL); returns the card."""
    limit = params.max_docs_per_class
    pos = [t for u in positive for t in read_texts(corpus_spec(u), endpoint_url, limit)]
    neg = [t for u in negative for t in read_texts(corpus_spec(u), endpoint_url, limit)]
    if not pos or not neg:
        raise ValueError(f"need documents on both sides: {len(pos)} positive, {len(neg)} negative")
    data, figures = train(pos, neg, params)
    storage = Storage(StorageSpec(output, endpoint_url))
    storage.write_bytes(MODEL_FILE, data)
    card = model_card(name or output.rstrip("/").rsplit("/", 1)[-1], positive, negative, params, figures,
                      hashlib.sha256(data).hexdigest())
    card["model"] = storage.url(MODEL_FILE)
    storage.write_bytes(CARD_FILE, canonical_json(card))  # last: the card vouches for a complete model
    return card
