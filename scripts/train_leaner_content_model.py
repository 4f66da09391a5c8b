"""Train the leaner validator's learned content decision (tasks/leaner/content_model.py) and
measure the whole validator on the held-out half.

Data: the upstream TinyHelen pairs of ../shared/data/tinyhelen_leaner_sample, split in two
fixed halves by the parity of the original's SHA-256 (``tests.corpora.split_of``). Training
uses the calibration half only: positives are the reference rewrites that pass every check
before the content checks (length, coverage, language, placeholders, code), negatives are the
corruptions of them (``tests.corpora.corrupted``: shuffled words, another document's rewrite,
second half replaced, truncated to 30%, the original unchanged) that pass those checks too.
A standardized logistic regression (scikit-learn, C=1, balanced classes, lbfgs: deterministic);
the threshold is the 2nd percentile of the positives' probabilities. Five-fold cross-validation
on the calibration half (folds by pair) is printed as a second estimate; the held-out half is
then measured with the shipped validator; its pairs train nothing, but it was looked at during
development (docs/leaner.md says how), so the cross-validation is the unbiased estimate. The fluency floor stored with
the model is halfway between the least fluent calibration reference and the most fluent
shuffled calibration rewrite.

    python scripts/train_leaner_content_model.py [--out tasks/leaner/models/content_logreg.json] [--json table.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = ("reference", "shuffled", "other_document", "second_half_replaced", "truncated_30", "original_unchanged")
ACCEPT_QUANTILE = 0.02  # the share of calibration references the content decision may reject
DIGITS = 10  # rounding of the stored numbers: byte-identical files across BLAS builds


def scored_half(pairs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Per pair and kind: the verdict of the checks before the content ones, and the features."""
    from tasks.config import LeanerConfig
    from tasks.leaner.content_model import features
    from tasks.leaner.fidelity import align
    from tasks.leaner.fluency import bigram_fluency
    from tasks.leaner.stage import limits_for
    from tasks.leaner.validate import validate
    from tasks.quality import lid
    from tests.corpora import corrupted

    cfg = LeanerConfig(enabled=True)
    rows = []
    for p, bad in zip(pairs, corrupted(pairs), strict=True):
        base = dataclasses.replace(limits_for(cfg, p["genre"]), min_topic=None, min_fidelity=None, min_reach=None,
                                   min_fluency=None, content_model=False)
        row: dict[str, Any] = {"genre": p["genre"]}
        for kind, text in (("reference", p["rewrite"]), *bad.items()):
            v = validate(p["original"], text, p["genre"], base, lid.predict)
            row[kind] = {"base_reason": v.reason, "x": features(align(p["original"], text), bigram_fluency(text))}
        rows.append(row)
    return rows


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from tasks.leaner.content_model import FEATURES

    X, y = [], []
    for r in rows:
        if r["reference"]["base_reason"] is not None:
            continue  # the earlier checks already reject it: nothing to learn from the pair
        for kind in KINDS:
            if r[kind]["base_reason"] is None:
                X.append(r[kind]["x"])
                y.append(kind == "reference")
    X_arr, y_arr = np.array(X), np.array(y)
    # a linear model trades fluency against the other scores, so a page's own words shuffled
    # (high overlap, no order) could pass it: word order also gets a hard floor, halfway
    # between the least fluent reference and the most fluent shuffled rewrite
    at = [name for name, _ in FEATURES].index("fluency")
    assert at == FLUENCY
    lowest_reference = min(r["reference"]["x"][at] for r in rows if r["reference"]["base_reason"] is None)
    most_fluent_salad = max(r["shuffled"]["x"][at] for r in rows
                            if r["reference"]["base_reason"] is None and r["shuffled"]["base_reason"] is None)
    scaler = StandardScaler().fit(X_arr)
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(scaler.transform(X_arr), y_arr)
    p = clf.predict_proba(scaler.transform(X_arr[y_arr]))[:, 1]
    r = lambda v: round(float(v), DIGITS)  # noqa: E731
    return {"features": [name for name, _ in FEATURES], "mean": [r(v) for v in scaler.mean_],
            "scale": [r(v) for v in scaler.scale_], "coef": [r(v) for v in clf.coef_[0]],
            "intercept": r(clf.intercept_[0]), "threshold": r(np.quantile(p, ACCEPT_QUANTILE)),
            "fluency_floor": r((lowest_reference + most_fluent_salad) / 2),
            "trained_on": "tinyhelen_leaner_sample calibration half (scripts/train_leaner_content_model.py)",
            "positives": int(y_arr.sum()), "negatives": int((~y_arr).sum())}


FLUENCY = 11  # index of the fluency feature (checked in fit)


def rates(rows: list[dict[str, Any]], model: dict[str, Any]) -> dict[str, Any]:
    """What the whole validator (earlier checks, then the model) accepts of the references and
    rejects of each corruption, with the reasons."""
    import math

    out = {}
    for kind in KINDS:
        reasons = []
        for r in rows:
            reason = r[kind]["base_reason"]
            if reason is None:
                z = [(x - m) / s for x, m, s in zip(r[kind]["x"], model["mean"], model["scale"], strict=True)]
                logit = model["intercept"] + sum(c * v for c, v in zip(model["coef"], z, strict=True))
                if 1 / (1 + math.exp(-max(-50.0, min(50.0, logit)))) < model["threshold"] \
                        or r[kind]["x"][FLUENCY] < model["fluency_floor"]:
                    reason = "content"
            reasons.append(reason)
        good = sum((x is None) == (kind == "reference") for x in reasons)
        out[kind] = {"rate": round(good / len(rows), 4), "reasons": dict(Counter(x for x in reasons if x).most_common())}
    return out


def main() -> None:
    from tasks.leaner.content_model import MODEL_PATH
    from tests.corpora import split_of, tinyhelen_pairs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    ap.add_argument("--json", type=Path, help="write the measured table here too")
    args = ap.parse_args()
    pairs = tinyhelen_pairs()
    halves = {name: [p for p in pairs if split_of(p["original"]) == name] for name in ("calibration", "heldout")}
    scored = {name: scored_half(ps) for name, ps in halves.items()}
    model = fit(scored["calibration"])
    args.out.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")

    # five folds over the calibration pairs: each fold judged by a model trained without it
    cal = scored["calibration"]
    folds = [[r for i, r in enumerate(cal) if i % 5 == k] for k in range(5)]
    cv_rows: dict[str, list[bool]] = {k: [] for k in KINDS}
    for k in range(5):
        m = fit([r for i, r in enumerate(cal) if i % 5 != k])
        for kind, res in rates(folds[k], m).items():
            cv_rows[kind].append(res["rate"] * len(folds[k]))
    table = {"calibration_cv5": {k: round(sum(v) / len(cal), 4) for k, v in cv_rows.items()},
             "calibration_fit (tuning data, does not count)": rates(cal, model),
             "heldout": rates(scored["heldout"], model)}
    print(json.dumps(table, indent=1))
    print("held-out: accepted references {:.1%}; rejected ".format(table["heldout"]["reference"]["rate"]) +
          ", ".join(f"{k} {table['heldout'][k]['rate']:.1%}" for k in KINDS[1:]))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
