"""``refinery quality train``: read the corpora, train, store the model and its card."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tasks.ingest import read_texts
from tasks.ingest_config import ColumnMap, InputSpec
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


# -- the combined scorer ------------------------------------------------------------------------

def _norm_line(line: str) -> str:
    return " ".join(line.split())


def article_and_boilerplate(pages: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """From (whole page text, its main text) pairs: the main texts, and per page the lines of
    the page that are not part of its main text (menus, share buttons, footers, related
    links). A contrast between good and bad text on the same pages, the same sites and the
    same topics: about quality, not genre."""
    articles, boilerplate = [], []
    for page, main in pages:
        if not main or not main.strip():
            continue
        main_lines = {_norm_line(x) for x in main.splitlines() if x.strip()}
        main_flat = _norm_line(main)
        rest = [x for x in page.splitlines() if x.strip() and _norm_line(x) not in main_lines
                and _norm_line(x) not in main_flat]
        articles.append(main)
        if rest:
            boilerplate.append("\n".join(rest))
    return articles, boilerplate


def scorer_features(texts: list[str], classifier_path: str | Path, lid_model: str | None = None) -> np.ndarray:
    """The feature matrix the stage computes for these texts (language ID with lid.176, the
    article classifier at ``classifier_path``)."""
    from tasks.quality import features, lid
    from tasks.quality.classifier import POSITIVE, hq_probability
    from tasks.quality.fast.linear import linear_form
    from tasks.quality.models import load_fasttext
    from tasks.quality.scorer import english_probability

    langs, scores = lid.predict(texts, lid_model)
    model = load_fasttext(classifier_path)
    # the same pass as the stage's (the linear form when the model has one), so the features a
    # scorer is fitted on are the ones it is applied to
    return features.compute(texts, lambda t: hq_probability(model, t), english_probability(langs, scores),
                            linear_form(model, POSITIVE))


def fit_scorer(x: np.ndarray, y: np.ndarray, c: float, repeats: int, seed: int,
               method: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The scorer fitted on every labelled document, and its cross-validated figures (the
    model refitted per fold, scored on the fold it did not see; length alone on the same
    folds as the baseline)."""
    from tasks.quality import features, scorer

    method = method or scorer.DEFAULT_METHOD
    params = scorer.fit(x, y, c, method)
    cv = scorer.cross_validate(x, y, x[:, list(features.FEATURES).index("log_words")], c=c, repeats=repeats,
                               seed=seed, method=method)
    fitted = scorer.Scorer(list(features.FEATURES), *params, classifier_path=Path(scorer.CLASSIFIER_FILE),
                           meta={"method": method})
    return fitted, {"cross_validation": cv, "signal_auc": scorer.signal_aucs(x, y),
                    "in_sample_auc": round(float(scorer.auc(fitted.predict(x), y)), 4)}


def write_scorer(folder: Storage, fitted: Any, classifier_bytes: bytes, card: dict[str, Any]) -> dict[str, Any]:
    """``article_classifier.bin``, ``scorer.json``, then ``model_card.json`` (last: the card
    vouches for a complete model)."""
    from tasks.quality import features, scorer

    sha = hashlib.sha256(classifier_bytes).hexdigest()
    folder.write_bytes(scorer.CLASSIFIER_FILE, classifier_bytes)
    spec = fitted.to_json(scorer.CLASSIFIER_FILE, sha)
    folder.write_bytes(scorer.SCORER_FILE, canonical_json(spec))
    card = {**card, "attribute": scorer.ATTRIBUTE,
            "features": {f: {"direction": d, "meaning": m, "weight": spec["coef"][i]}
                         for i, (f, (d, m)) in enumerate(features.FEATURES.items())},
            "intercept": spec["intercept"], "classifier_sha256": sha,
            "scorer_sha256": hashlib.sha256(canonical_json(spec)).hexdigest()}
    folder.write_bytes(scorer.CARD_FILE, canonical_json(card))
    return card


def train_scorer_to_storage(labels: list[str], output: str, positive: list[str] | None = None,
                            negative: list[str] | None = None, params: TrainParams | None = None,
                            c: float | None = None, repeats: int = 20, skip_bad_rows: bool = False,
                            endpoint_url: str | None = None, method: str | None = None) -> dict[str, Any]:
    """``refinery quality train --labels``: fit the combined scorer on labelled documents and
    store it under ``output``. Its article classifier is the shipped one, or a fastText model
    trained here from ``positive``/``negative`` corpora when given."""
    from tasks.quality import scorer
    from tasks.quality.labels import read_labels

    data = read_labels(labels, skip_bad_rows, endpoint_url)
    params = params or TrainParams()
    clf_card: dict[str, Any]
    if positive or negative:
        if not positive or not negative:
            raise ValueError("the article classifier needs both --positive and --negative corpora")
        limit = params.max_docs_per_class
        pos = [t for u in positive for t in read_texts(corpus_spec(u), endpoint_url, limit)]
        neg = [t for u in negative for t in read_texts(corpus_spec(u), endpoint_url, limit)]
        clf_bytes, figures = train(pos, neg, params)
        clf_card = {"data": {"positive": positive, "negative": negative}, "params": params.__dict__,
                    "counts": figures}
    else:
        clf_bytes = (scorer.DEFAULT_DIR / scorer.CLASSIFIER_FILE).read_bytes()
        shipped = json.loads((scorer.DEFAULT_DIR / scorer.CARD_FILE).read_text())
        clf_card = {"shipped": True, **shipped.get("article_classifier", {})}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / scorer.CLASSIFIER_FILE
        path.write_bytes(clf_bytes)
        x = scorer_features(data.texts, path)
    fitted, figures = fit_scorer(x, data.labels, c if c is not None else scorer.DEFAULT_C, repeats, params.seed,
                                 method)
    card = {"name": output.rstrip("/").rsplit("/", 1)[-1],
            "kind": "combined quality score: " + scorer.KINDS[fitted.meta["method"]],
            "labels": {"files": data.files, **data.counts, "skipped_rows": data.skipped},
            "article_classifier": clf_card, **figures}
    storage = Storage(StorageSpec(output, endpoint_url))
    card = write_scorer(storage, fitted, clf_bytes, card)
    card["model"] = storage.url(scorer.SCORER_FILE)
    return card
