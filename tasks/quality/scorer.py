"""The combined quality score ``quality__combined__score``: a weighted sum of the standardized
per-document statistics of :mod:`tasks.quality.features`, mapped to a probability by a
logistic function calibrated on human quality labels.

Two ways to set the weights (``method``): ``equal`` (the default, and the shipped model): equal
weights, with the declared directions, on four inputs; only the calibration (the sum's slope and
offset) is fitted, so a few hundred noisy labels cannot bend the ranking. ``logistic``: every
weight fitted by L2-regularized logistic regression, for a team with many labels of its own.
Measured in docs/quality.md: on 218 noisy labels the equal weights rank held-out documents better
than the fitted ones, and better on unseen web text.

A model is a folder: ``scorer.json`` (the feature names, their standardization, the weights,
the fastText article classifier's file and sha256) beside that ``.bin`` file and a
``model_card.json``. Scoring needs only numpy and fastText; scikit-learn is used to fit. The
shipped model lives in ``tasks/quality/scorer/`` (``scripts/train_quality_scorer.py``
rebuilds it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.quality import features
from tasks.quality.classifier import auc
from tasks.quality.models import ModelError, load_fasttext, load_once, local_copy

DEFAULT_DIR = Path(__file__).resolve().parent / "scorer"
SCORER_FILE = "scorer.json"
CLASSIFIER_FILE = "article_classifier.bin"
CARD_FILE = "model_card.json"
ATTRIBUTE = "quality__combined__score"
DEFAULT_C = 0.1  # L2 strength for ~200 labels: the coefficients stay small and keep their signs
METHODS = ("equal", "logistic")
KINDS = {"equal": "equal-weight sum of standardized document statistics, calibrated by logistic regression",
         "logistic": "logistic regression over standardized document statistics"}
DEFAULT_METHOD = "equal"
# The `equal` method's inputs: each weighs the same once standardized ("improper linear model").
# Chosen among seven candidate weightings by cross-validation on the labelled dev set and by the
# ranking of clean vs menu-heavy pages of cc_web_samples (see docs/quality.md: both figures are
# therefore selection figures); the language score and stop words add nothing on either.
EQUAL_INPUTS = ("article_classifier", "log_words", "terminal_punctuation_lines", "symbol_share")


def english_probability(langs: list[str | None], scores: np.ndarray) -> np.ndarray:
    """The language-ID probability of English from the top label and its probability (the
    attributes the stage writes): the probability when English is on top, else 0."""
    return np.array([float(s) if lang == "en" and s == s else 0.0 for lang, s in zip(langs, scores, strict=True)])


@dataclass
class Scorer:
    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    classifier_path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def classifier_probability(self, texts: list[str]) -> np.ndarray:
        from tasks.quality.classifier import hq_probability

        return hq_probability(load_fasttext(self.classifier_path), texts)

    def feature_matrix(self, texts: list[str], english: np.ndarray) -> np.ndarray:
        if self.features != list(features.FEATURES):
            raise ModelError(f"scorer model has features {self.features}; this version computes "
                             f"{list(features.FEATURES)}: retrain it with `refinery quality train --labels`")
        from tasks.quality.classifier import POSITIVE
        from tasks.quality.fast.linear import linear_form

        linear = linear_form(load_fasttext(self.classifier_path), POSITIVE)
        return features.compute(texts, self.classifier_probability, english, linear)

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, texts: list[str], english: np.ndarray) -> np.ndarray:
        return self.predict(self.feature_matrix(texts, english)) if texts else np.zeros(0)

    def to_json(self, classifier_file: str, classifier_sha256: str) -> dict[str, Any]:
        return {
            "kind": KINDS[self.meta.get("method", "logistic")],
            "attribute": ATTRIBUTE,
            "features": self.features,
            "directions": {f: features.FEATURES[f][0] for f in self.features},
            "mean": [round(float(v), 10) for v in self.mean],
            "scale": [round(float(v), 10) for v in self.scale],
            "coef": [round(float(v), 10) for v in self.coef],
            "intercept": round(float(self.intercept), 10),
            "classifier": classifier_file,
            "classifier_sha256": classifier_sha256,
            **self.meta,
        }


def _from_json(spec: dict[str, Any], folder: Path) -> Scorer:
    try:
        path = folder / spec["classifier"]
        return Scorer(list(spec["features"]), np.array(spec["mean"]), np.array(spec["scale"]), np.array(spec["coef"]),
                      float(spec["intercept"]), path)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"scorer model {folder / SCORER_FILE}: malformed ({exc})") from None


def load_scorer(url: str | None = None, endpoint_url: str | None = None) -> Scorer:
    """The scorer in the folder (or at the ``scorer.json``) at ``url``; the shipped one when
    None. Loaded once per process."""

    def load() -> Scorer:
        if url is None:
            folder = DEFAULT_DIR
        else:
            base = url[: -len(SCORER_FILE)].rstrip("/") if url.endswith(SCORER_FILE) else url.rstrip("/")
            spec_path = local_copy(f"{base}/{SCORER_FILE}", endpoint_url)
            spec = json.loads(spec_path.read_text())
            # the classifier file sits beside scorer.json; fetch it next to the cached copy
            clf = local_copy(f"{base}/{spec.get('classifier', CLASSIFIER_FILE)}", endpoint_url)
            scorer = _from_json(spec, spec_path.parent)
            scorer.classifier_path = clf
            return scorer
        path = folder / SCORER_FILE
        if not path.is_file():
            raise ModelError(f"scorer model {path}: file not found")
        return _from_json(json.loads(path.read_text()), folder)

    return load_once(("scorer", url, endpoint_url), load)


# -- fitting and cross-validation ---------------------------------------------------------------

def fit(x: np.ndarray, y: np.ndarray, c: float = DEFAULT_C,
        method: str = DEFAULT_METHOD) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Standardize, then the weights: ``equal`` (declared directions, equal size, one slope and
    offset fitted to the labels) or ``logistic`` (L2-regularized logistic regression). lbfgs,
    deterministic."""
    from sklearn.linear_model import LogisticRegression

    if method not in METHODS:
        raise ValueError(f"unknown scorer method {method!r}; one of {', '.join(METHODS)}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    if method == "logistic":
        model = LogisticRegression(C=c, max_iter=1000).fit(z, y)
        return mean, scale, model.coef_[0].copy(), float(model.intercept_[0])
    weights = np.array([features.FEATURES[f][0] * (f in EQUAL_INPUTS) for f in features.FEATURES], np.float64)
    # Platt scaling of the sum: it changes what a score of 0.5 means, never the ranking (a slope
    # the labels would make negative is held at 0: the card's AUC then shows the disagreement)
    cal = LogisticRegression(C=1e6, max_iter=1000).fit((z @ weights)[:, None], y)
    slope = max(float(cal.coef_[0][0]), 0.0)
    return mean, scale, slope * weights, float(cal.intercept_[0])


def _predict(params: tuple[np.ndarray, np.ndarray, np.ndarray, float], x: np.ndarray) -> np.ndarray:
    mean, scale, coef, intercept = params
    return ((x - mean) / scale) @ coef + intercept


def cross_validate(x: np.ndarray, y: np.ndarray, baseline: np.ndarray, c: float = DEFAULT_C, folds: int = 5,
                   repeats: int = 20, seed: int = 0, bootstrap: int = 2000,
                   method: str = DEFAULT_METHOD) -> dict[str, Any]:
    """Repeated stratified k-fold AUC of the fitted model on the fold it did not see, beside
    ``baseline`` (a single signal, e.g. length) on the same folds. The interval is the 2.5-97.5
    percentile of the fold AUCs; ``oof_auc_ci`` bootstraps the documents of the first
    repetition's out-of-fold scores (each document scored by the model that did not see it)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    model_aucs, base_aucs = [], []
    oof = np.zeros(len(y))
    for k, (train, test) in enumerate(splitter.split(x, y)):
        pred = _predict(fit(x[train], y[train], c, method), x[test])
        model_aucs.append(auc(pred, y[test]))
        base_aucs.append(auc(baseline[test], y[test]))
        if k < folds:
            oof[test] = pred
    m, b = np.array(model_aucs), np.array(base_aucs)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            boots.append(auc(oof[idx], y[idx]))
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {
        "folds": folds, "repeats": repeats, "seed": seed, "method": method,
        **({"C": c} if method == "logistic" else {"inputs": list(EQUAL_INPUTS)}),
        "auc_mean": r(m.mean()), "auc_fold_interval_95": [r(np.percentile(m, 2.5)), r(np.percentile(m, 97.5))],
        "oof_auc": r(auc(oof, y)), "oof_auc_ci_95": [r(np.percentile(boots, 2.5)), r(np.percentile(boots, 97.5))],
        "baseline_auc_mean": r(b.mean()),
        "beats_baseline_share": r((m > b).mean()),
        "first_repeat": [{"fold": i, "auc": r(m[i]), "baseline_auc": r(b[i])} for i in range(folds)],
        "fold_aucs": [r(v) for v in m], "baseline_fold_aucs": [r(v) for v in b],
    }


def signal_aucs(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Each feature's own AUC against the labels (above 0.5: higher means better)."""
    return {name: round(auc(x[:, i], y), 4) for i, name in enumerate(features.FEATURES)}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
