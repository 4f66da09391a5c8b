"""One learned decision over the content scores of a rewrite (topic, fidelity, reach, fluency,
the per-half shares and position-free measures of ``tasks/leaner/fidelity.py`` and the sentence
vectors of ``tasks/leaner/vectors.py``).

Separate floors on each score must each leave room for the hardest real rewrites, so a
corruption that is only a little low on several scores passes all of them; a logistic
regression weighs them together. It is trained by ``scripts/train_leaner_content_model.py``
on the 421 pairs of ``../shared/data/tinyhelen_leaner_sample``: the reference rewrites that
pass the other checks are the positives, their corruptions (``tests.corpora.corrupted``) the
negatives; C, the threshold (a low percentile of the positives' probabilities) and the length
band the validator applies before it are chosen together by inner cross-validation, and the
whole procedure is measured by nested cross-validation (docs/leaner.md). The model is a few
dozen numbers in ``tasks/leaner/models/content_logreg.json``, the band included. A linear model trades scores against each other,
so a page's own words shuffled (high overlap, no order) could pass on overlap alone; a hard
word-order floor stored with the model (halfway between the least fluent calibration reference
and the most fluent shuffled calibration rewrite) rejects those as ``fluency``.

A rejection is named after the group of features that pulled the probability down most
(``topic``, ``fidelity`` or ``fluency``), so the reason still says what is wrong.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

from tasks.leaner.fidelity import Alignment
from tasks.leaner.vectors import FEATURES as VECTOR_FEATURES

MODEL_PATH = Path(__file__).with_name("models") / "content_logreg.json"
_EPS = 1e-3

# (feature name, the reason it speaks for); the two length features speak for none
FEATURES: tuple[tuple[str, str | None], ...] = (
    ("topic", "topic"), ("log_topic", "topic"),
    ("fidelity", "fidelity"), ("reach", "fidelity"), ("first", "fidelity"), ("second", "fidelity"),
    ("original_first", "fidelity"), ("original_second", "fidelity"),
    ("log_original_second_over_first", "fidelity"), ("log_second_over_first", "fidelity"),
    ("log_original_weaker", "fidelity"),
    ("fluency", "fluency"),
    ("log_original_words", None), ("log_rewrite_words", None),
    # position-free chain measures: a replaced start or middle, not only a replaced end
    ("original_worst", "fidelity"), ("rewrite_worst", "fidelity"), ("log_original_worst", "fidelity"),
    ("log_rewrite_worst_over_topic", "fidelity"), ("original_run", "fidelity"), ("rewrite_run", "fidelity"),
    # sentence vectors (tasks/leaner/vectors.py): meaning beyond shared lemmas
    ("vec_whole", "topic"), ("vec_rewrite_worst", "fidelity"), ("vec_rewrite_rest", "fidelity"),
    ("vec_rewrite_sum", "fidelity"), ("vec_original_worst", "fidelity"),
)


def features(a: Alignment, fluency: float, vectors: list[float]) -> list[float]:
    """The model's inputs, in the order of ``FEATURES``; ``fluency`` is the bigram score,
    ``vectors`` is ``tasks.leaner.vectors.features`` of the pair."""
    values = {
        "topic": a.topic, "log_topic": math.log(a.topic + _EPS),
        "fidelity": a.fidelity, "reach": a.reach, "first": a.first, "second": a.second,
        "original_first": a.original_first, "original_second": a.original_second,
        "log_original_second_over_first": math.log((a.original_second + _EPS) / (a.original_first + _EPS)),
        "log_second_over_first": math.log((a.second + _EPS) / (a.first + _EPS)),
        "log_original_weaker": math.log(min(a.original_first, a.original_second) + _EPS),
        "fluency": fluency,
        "log_original_words": math.log(a.n_original + 1), "log_rewrite_words": math.log(a.n_rewrite + 1),
        "original_worst": a.original_worst, "rewrite_worst": a.rewrite_worst,
        "log_original_worst": math.log(a.original_worst + _EPS),
        "log_rewrite_worst_over_topic": math.log((a.rewrite_worst + _EPS) / (a.topic + _EPS)),
        "original_run": a.original_run, "rewrite_run": a.rewrite_run,
        **dict(zip(VECTOR_FEATURES, vectors, strict=True)),
    }
    return [values[name] for name, _ in FEATURES]


@cache
def load(path: Path = MODEL_PATH) -> dict[str, Any]:
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the leaner content model ({e})") from e
    if model.get("features") != [name for name, _ in FEATURES]:
        raise ValueError(f"{path}: its features do not match tasks/leaner/content_model.py; "
                         "rerun scripts/train_leaner_content_model.py")
    return model


def judge(a: Alignment, fluency: float, vectors: list[float],
          model: dict[str, Any] | None = None) -> tuple[float, str | None]:
    """The probability that the rewrite is a real one, and the reason when it is below the
    model's threshold (None when accepted)."""
    m = model or load()
    z = [(x - mu) / sd for x, mu, sd in zip(features(a, fluency, vectors), m["mean"], m["scale"], strict=True)]
    terms = [c * v for c, v in zip(m["coef"], z, strict=True)]
    logit = m["intercept"] + sum(terms)
    p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))
    if fluency < m["fluency_floor"]:
        return p, "fluency"
    if p >= m["threshold"]:
        return p, None
    by_reason: dict[str, float] = {}
    for (_, reason), t in zip(FEATURES, terms, strict=True):
        if reason is not None:
            by_reason[reason] = by_reason.get(reason, 0.0) + t
    return p, min(by_reason, key=lambda r: (by_reason[r], r))
