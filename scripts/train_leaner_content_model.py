"""Train the leaner validator's learned content decision (tasks/leaner/content_model.py) and
estimate how the whole validator does on documents it never saw, by nested cross-validation.

Data: the 421 upstream TinyHelen pairs of ../shared/data/tinyhelen_leaner_sample (both fixed
halves). Positives are the reference rewrites that pass every check before the content ones
(too short, length band, coverage, language, placeholders, code); negatives the corruptions
(``tests.corpora.corrupted``: shuffled words, another document's rewrite, second half replaced,
truncated to 30%, the original unchanged) that pass those checks too. Added to these, content
only (``_near_verbatim``, issue 17): each original as a positive and each original with its
second half replaced by another original's as a negative, so that a rewrite that keeps the
original's words (far more coverage than any paraphrasing reference) is inside the training
range instead of extrapolated to. A standardized logistic regression (scikit-learn, balanced
classes, lbfgs: deterministic); the threshold is a low percentile of the references'
probabilities; the word-order floor stored with the model is halfway between the least fluent
reference and the most fluent shuffled rewrite.

Choices made by inner cross-validation, never on the data they are measured on: C, the
threshold percentile and the length band (the fixed 0.4x-1.8x of the genre's median ratio, a
wider one, or none, leaving length to the model's word-count features and reach). The choice
is the one whose worst margin over issue 17's targets (references accepted >= 93%, each
corruption rejected >= 95%) is largest, pooled over the inner folds; ties go to the earlier
entry of the grids below (the previous defaults first).

Nested estimate (``--nested``): outer folds grouped by source document (a document's reference
and all its corruptions are on one side) and stratified by genre; the corruptions of each side
are built within that side only (another document's rewrite is one of the same side), so no
test text is a training text. Every choice is made by inner folds of the outer training side;
the outer test fold is judged once. The pooled outer counts, with Wilson 95% intervals, are
the figure that counts (docs/leaner.md).

The shipped model: the same selection over all 421 pairs (inner folds), fitted on all of them.

    python scripts/train_leaner_content_model.py [--out tasks/leaner/models/content_logreg.json]
        [--nested] [--repeats 1] [--json bench/results/leaner_nested_cv.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ISSUE_KINDS = ("reference", "shuffled", "other_document", "second_half_replaced", "truncated_30", "original_unchanged")
# a replaced start is issue 17's "replaces half of the text" too; the middle third and a random
# run (1/3 to 1/2 of the words anywhere) are measured, not bound
KINDS = ISSUE_KINDS + ("first_half_replaced", "middle_third_replaced", "span_replaced")
TRAIN_KINDS = ISSUE_KINDS + ("first_half_replaced",)  # the training negatives (and the references)
TARGETS = {"reference": 0.93, **{k: 0.95 for k in ISSUE_KINDS[1:]}, "first_half_replaced": 0.95,
           "middle_third_replaced": 0.0, "span_replaced": 0.0}
# the grids of the inner selection, the previous defaults first (ties go to the earlier entry)
BANDS: dict[str, tuple[float, float] | None] = {"fixed": (0.4, 1.8), "high_3": (0.4, 3.0), "wide": (0.2, 3.0),
                                                "none": None}
CS = (1.0, 0.1, 10.0)
QUANTILES = (0.02, 0.01, 0.03, 0.05)  # share of training references the content decision may reject
OUTER, INNER, SEED = 5, 4, 17
DIGITS = 10  # rounding of the stored numbers: byte-identical files across BLAS builds
FLUENCY = 11  # index of the fluency feature (checked in fit)
# content-only training pairs (``_near_verbatim``) and whether each is a positive
NEAR_VERBATIM = {"verbatim": True, "verbatim_second_half_replaced": False}

_cache: dict[tuple[str, str, str], dict[str, Any]] = {}


def _scored(original: str, text: str, genre: str) -> dict[str, Any]:
    """The verdict of the checks before the content ones with the length band off, the length
    ratio (the band is applied per choice) and the content features; cached, since the
    references, originals and truncations are the same texts in every fold."""
    key = (original, text, genre)
    if key not in _cache:
        from tasks.config import LeanerConfig
        from tasks.leaner.content_model import features
        from tasks.leaner.fidelity import align
        from tasks.leaner.fluency import bigram_fluency
        from tasks.leaner.stage import limits_for
        from tasks.leaner.validate import validate
        from tasks.leaner.vectors import features as vector_features
        from tasks.quality import lid

        # "floors": the limits must not come from the stored model, which this script replaces
        # (and whose feature list may be an older one); every limit it would set is overridden
        base = dataclasses.replace(limits_for(LeanerConfig(enabled=True, content_check="floors"), genre),
                                   band=(0.0, math.inf),
                                   min_topic=None, min_fidelity=None, min_reach=None, min_fluency=None,
                                   content_model=False)
        v = validate(original, text, genre, base, lid.predict)
        _cache[key] = {"base_reason": v.reason, "ratio": v.length_ratio,
                       "x": features(align(original, text), bigram_fluency(text), vector_features(original, text))}
    return _cache[key]


def score(pairs: list[dict[str, str]], seed: int = SEED) -> list[dict[str, Any]]:
    """Per pair: genre, its group (the original's SHA-256) and, per kind, what ``_scored``
    gives. The corruptions are built within ``pairs`` only."""
    from tests.corpora import corrupted, positional_corrupted

    rows = []
    rng = random.Random(seed)
    for i, (p, bad, parts) in enumerate(zip(pairs, corrupted(pairs, seed), positional_corrupted(pairs, seed),
                                            strict=True)):
        row: dict[str, Any] = {"genre": p["genre"], "group": hashlib.sha256(p["original"].encode()).hexdigest()}
        for kind, text in (("reference", p["rewrite"]), *bad.items(), *parts.items()):
            row[kind] = _scored(p["original"], text, p["genre"])
        others = [j for j, q in enumerate(pairs) if j != i and q["genre"] == p["genre"]] or \
            [j for j in range(len(pairs)) if j != i]
        for kind, text in _near_verbatim(p["original"], pairs[rng.choice(others)]["original"]).items():
            row[kind] = _scored(p["original"], text, p["genre"])
        rows.append(row)
    return rows


def _near_verbatim(original: str, other: str) -> dict[str, str]:
    """Content-only training pairs where the rewrite keeps the original's words: the original
    itself (faithful: the vocabulary checks, not the content decision, reject it as a rewrite)
    and the original with its second half replaced by another original's middle onwards (same
    word count). Real rewrites paraphrase, so without these no training example has coverage
    near a copy's, and a linear model extrapolates there: a verbatim first half buys more
    credit than any reference ever earned and outweighs an uncovered second half."""
    words, other_words = original.split(), other.split()
    half = len(words) // 2
    tail = (other_words[len(other_words) // 2:] + other_words)[: len(words) - half]
    return {"verbatim": original, "verbatim_second_half_replaced": " ".join(words[:half] + tail)}


def band_limits(genre: str, band: tuple[float, float] | None) -> tuple[float, float]:
    """The band in rewrite/original word ratio for a genre: multiples of its measured median."""
    from tasks.leaner.validate import MEDIAN_RATIO

    if band is None:
        return 0.0, math.inf
    m = MEDIAN_RATIO.get(genre, 1.0)
    return round(band[0] * m, 3), round(band[1] * m, 3)


def early_reason(row: dict[str, Any], kind: str, band: tuple[float, float] | None) -> str | None:
    """The reason the checks before the content ones give (the validator's order: too short,
    then the band, then the rest)."""
    s = row[kind]
    if s["base_reason"] == "too_short":
        return "too_short"
    lo, hi = band_limits(row["genre"], band)
    if not lo <= s["ratio"] <= hi:
        return "length_ratio"
    return s["base_reason"]


def _fit_lr(rows: list[dict[str, Any]], band: tuple[float, float] | None, C: float) -> dict[str, Any]:
    """The regression and the training positives' probabilities; thresholds are taken from them
    per quantile by ``with_threshold``."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from tasks.leaner.content_model import FEATURES

    X, y = [], []
    for r in rows:
        for kind in TRAIN_KINDS:
            if early_reason(r, kind, band) is None:
                X.append(r[kind]["x"])
                y.append(kind == "reference")
    references = np.array([x for x, good in zip(X, y, strict=True) if good])
    # the near-verbatim pairs are content-only examples: the checks before the content
    # decision do not apply to them (a copy never raises lean coverage)
    for r in rows:
        for kind, good in NEAR_VERBATIM.items():
            X.append(r[kind]["x"])
            y.append(good)
    X_arr, y_arr = np.array(X), np.array(y)
    at = [name for name, _ in FEATURES].index("fluency")
    assert at == FLUENCY
    # a linear model trades fluency against the other scores, so a page's own words shuffled
    # (high overlap, no order) could pass it: word order also gets a hard floor, halfway
    # between the least fluent reference and the most fluent shuffled rewrite
    lowest_reference = references[:, at].min()
    most_fluent_salad = max(r["shuffled"]["x"][at] for r in rows if early_reason(r, "shuffled", band) is None)
    scaler = StandardScaler().fit(X_arr)
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(scaler.transform(X_arr), y_arr)
    rd = lambda v: round(float(v), DIGITS)  # noqa: E731
    return {"features": [name for name, _ in FEATURES], "mean": [rd(v) for v in scaler.mean_],
            "scale": [rd(v) for v in scaler.scale_], "coef": [rd(v) for v in clf.coef_[0]],
            "intercept": rd(clf.intercept_[0]), "fluency_floor": rd((lowest_reference + most_fluent_salad) / 2),
            "length_band": None if band is None else list(band), "C": C,
            "positives": int(y_arr.sum()), "negatives": int((~y_arr).sum()),
            "near_verbatim_pairs": 2 * len(rows),
            # the threshold is a percentile of the references' probabilities only
            "_p": clf.predict_proba(scaler.transform(references))[:, 1]}


def _probability(x: list[float], model: dict[str, Any]) -> float:
    z = [(v - m) / s for v, m, s in zip(x, model["mean"], model["scale"], strict=True)]
    logit = model["intercept"] + sum(c * v for c, v in zip(model["coef"], z, strict=True))
    return 1 / (1 + math.exp(-max(-50.0, min(50.0, logit))))


def with_threshold(lr: dict[str, Any], quantile: float) -> dict[str, Any]:
    import numpy as np

    model = {k: v for k, v in lr.items() if k != "_p"}
    model["threshold"] = round(float(np.quantile(lr["_p"], quantile)), DIGITS)
    model["quantile"] = quantile
    return model


def fit(rows: list[dict[str, Any]], choice: tuple[str, float, float]) -> dict[str, Any]:
    band, C, q = choice
    model = with_threshold(_fit_lr(rows, BANDS[band], C), q)
    model["length_band_name"] = band
    return model


def judged(rows: list[dict[str, Any]], model: dict[str, Any]) -> dict[str, list[str | None]]:
    """Per kind, the whole validator's reason for each row (None: accepted)."""
    band = None if model["length_band"] is None else tuple(model["length_band"])
    out: dict[str, list[str | None]] = {}
    for kind in KINDS:
        reasons = []
        for r in rows:
            reason = early_reason(r, kind, band)
            if reason is None and (_probability(r[kind]["x"], model) < model["threshold"]
                                   or r[kind]["x"][FLUENCY] < model["fluency_floor"]):
                reason = "content"
            reasons.append(reason)
        out[kind] = reasons
    return out


def good_counts(rows: list[dict[str, Any]], model: dict[str, Any]) -> dict[str, int]:
    """Per kind, how many the validator gets right (references accepted, corruptions rejected)."""
    return {kind: sum((x is None) == (kind == "reference") for x in reasons)
            for kind, reasons in judged(rows, model).items()}


def folds(rows_or_pairs: list[dict[str, Any]], k: int, seed: int) -> list[list[int]]:
    """Test indices of k folds grouped by original and stratified by genre."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = [hashlib.sha256(p["original"].encode()).hexdigest() if "original" in p else p["group"]
              for p in rows_or_pairs]
    genres = [p["genre"] for p in rows_or_pairs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the single book pair: fewer members than folds
        return [list(test) for _, test in StratifiedGroupKFold(k, shuffle=True, random_state=seed)
                .split(genres, genres, groups)]


def margin(good: dict[str, int], n: int) -> float:
    """The worst distance to issue 17's targets (negative: a target missed)."""
    return min(good[k] / n - TARGETS[k] for k in KINDS)


def select(rows: list[dict[str, Any]], k: int = INNER, seed: int = SEED) -> tuple[tuple[str, float, float], dict]:
    """The (band, C, quantile) with the best pooled inner-fold margin, and every candidate's score."""
    tests = folds(rows, k, seed)
    pooled: dict[tuple[str, float, float], Counter] = {}
    for test in tests:
        held = set(test)
        train = [r for i, r in enumerate(rows) if i not in held]
        val = [rows[i] for i in test]
        for band in BANDS:
            for C in CS:
                lr = _fit_lr(train, BANDS[band], C)
                for q in QUANTILES:
                    pooled.setdefault((band, C, q), Counter()).update(good_counts(val, with_threshold(lr, q)))
    order = [(b, c, q) for b in BANDS for c in CS for q in QUANTILES]
    scores = {cand: margin(pooled[cand], len(rows)) for cand in order}
    best = max(order, key=lambda cand: (round(scores[cand], 9), -order.index(cand)))
    return best, {f"{b} C={c} q={q}": round(s, 4) for (b, c, q), s in scores.items()}


def wilson(good: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = good / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 4), round(centre + half, 4)


def nested(pairs: list[dict[str, str]], repeats: int = 1, seed: int = SEED) -> dict[str, Any]:
    """Outer folds grouped by document: selection and fit on the outer training side only."""
    total: Counter = Counter()
    reasons: dict[str, Counter] = {k: Counter() for k in KINDS}
    per_fold, n = [], 0
    by_genre: dict[str, dict[str, Counter]] = {}
    for rep in range(repeats):
        for f, test in enumerate(folds(pairs, OUTER, seed + rep)):
            held = set(test)
            train_rows = score([p for i, p in enumerate(pairs) if i not in held])
            test_rows = score([pairs[i] for i in test])
            choice, _ = select(train_rows, INNER, seed + rep)
            model = fit(train_rows, choice)
            verdicts = judged(test_rows, model)
            good = {kind: sum((x is None) == (kind == "reference") for x in rs) for kind, rs in verdicts.items()}
            for kind, rs in verdicts.items():
                reasons[kind].update(x for x in rs if x)
                for r, x in zip(test_rows, rs, strict=True):
                    by_genre.setdefault(r["genre"], {}).setdefault(kind, Counter()).update(
                        [(x is None) == (kind == "reference")])
            total.update(good)
            n += len(test)
            per_fold.append({"repeat": rep, "fold": f, "documents": len(test), "choice": list(choice),
                             "rates": {k: round(good[k] / len(test), 4) for k in KINDS}})
            print(f"repeat {rep} fold {f}: {choice} " + ", ".join(f"{k} {good[k] / len(test):.3f}" for k in KINDS),
                  file=sys.stderr)
    docs = n // repeats
    by_repeat = []
    for rep in range(repeats):
        fs = [f for f in per_fold if f["repeat"] == rep]
        by_repeat.append({k: round(sum(f["rates"][k] * f["documents"] for f in fs) / docs, 4) for k in KINDS})
    # the interval counts documents, not judgements: repeats judge the same documents again
    return {"documents": docs, "repeats": repeats, "outer_folds": OUTER, "inner_folds": INNER,
            "rates": {k: round(total[k] / n, 4) for k in KINDS},
            "wilson95": {k: wilson(round(total[k] / repeats), docs) for k in KINDS},
            "rates_by_repeat": by_repeat,
            "rates_by_genre": {g: {k: round(c[True] / (c[True] + c[False]), 4) for k, c in kinds.items()}
                               | {"documents": (sum(kinds["reference"].values())) // repeats}
                               for g, kinds in sorted(by_genre.items())},
            "targets": TARGETS, "targets_met": all(total[k] / n >= TARGETS[k] for k in KINDS),
            "reasons": {k: dict(c.most_common()) for k, c in reasons.items()}, "folds": per_fold}


def shipped(pairs: list[dict[str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model to ship: chosen by inner folds over all pairs, fitted on all of them."""
    rows = score(pairs)
    choice, scores = select(rows, OUTER)
    model = fit(rows, choice)
    model["trained_on"] = "tinyhelen_leaner_sample, all 421 pairs (scripts/train_leaner_content_model.py)"
    return model, {"choice": list(choice), "inner_cv_margins": scores,
                   "fit_rates (training data, does not count)": {k: round(v / len(rows), 4)
                                                                   for k, v in good_counts(rows, model).items()}}


def main() -> None:
    from tasks.leaner.content_model import MODEL_PATH
    from tests.corpora import tinyhelen_pairs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    ap.add_argument("--nested", action="store_true", help="also run the nested cross-validation")
    ap.add_argument("--repeats", type=int, default=1, help="outer cross-validations with different fold seeds")
    ap.add_argument("--json", type=Path, help="write the measured figures here too")
    args = ap.parse_args()
    pairs = tinyhelen_pairs()
    model, selection = shipped(pairs)
    args.out.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
    table: dict[str, Any] = {"shipped": selection}
    if args.nested:
        table["nested_cv"] = nested(pairs, args.repeats)
    print(json.dumps(table, indent=1))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
