"""Rebuild the shipped combined quality scorer (``tasks/quality/scorer/``) from the shared data.

1. The article classifier: fastText (DCLM's recipe at a small size) trained on the main text
   of the shared web pages (``web_pages_scrapinghub`` gold text, ``web_pages_readability``
   main text) against the other lines of the same pages (menus, share buttons, footers). No
   human quality label is used here.
2. The combined score: equal weights on four standardized inputs of ``tasks.quality.features``
   (``tasks.quality.scorer.EQUAL_INPUTS``), its calibration fitted on the 218 human-labelled
   documents of ``dclm_human_quality_dev``, with repeated stratified 5-fold cross-validation
   (AUC, its spread, length alone on the same folds).

Deterministic: fixed seeds, one fastText thread, sorted inputs; rerunning writes the same
bytes (the test suite checks the classifier's sha256 against the card).

    python scripts/train_quality_scorer.py [--shared ../shared/data] [--output tasks/quality/scorer]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402

from tasks.quality.classifier import TrainParams, train  # noqa: E402
from tasks.quality.labels import read_labels  # noqa: E402
from tasks.quality.scorer import KINDS  # noqa: E402
from tasks.quality.training import article_and_boilerplate, fit_scorer, scorer_features, write_scorer  # noqa: E402
from tasks.storage import Storage, StorageSpec  # noqa: E402

# small on purpose: ~550 training documents; unigrams only, so no hash buckets are needed
CLASSIFIER_PARAMS = TrainParams(dim=16, word_ngrams=1, bucket=0, min_count=3, epoch=10, lr=0.1,
                                validation_fraction=0.1, seed=0)
PAGES = {
    "web_pages_scrapinghub": ("gold_text", "MIT (scrapinghub/article-extraction-benchmark)"),
    "web_pages_readability": ("main_text", "Apache-2.0 (mozilla/readability test pages)"),
}
LABELS = "dclm_human_quality_dev"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--output", type=Path, default=ROOT / "tasks" / "quality" / "scorer")
    args = ap.parse_args()

    pages = []
    for name, (column, _) in PAGES.items():
        table = pq.read_table(args.shared / name / f"{name}.parquet", columns=["id", "page_text", column])
        rows = sorted(table.to_pylist(), key=lambda r: r["id"])
        pages += [(r["page_text"], r[column]) for r in rows]
    articles, boilerplate = article_and_boilerplate(pages)
    clf_bytes, clf_figures = train(articles, boilerplate, CLASSIFIER_PARAMS)
    print(f"article classifier: {len(articles)} articles, {len(boilerplate)} boilerplate documents; "
          f"validation {clf_figures['validation']}", flush=True)

    args.output.mkdir(parents=True, exist_ok=True)
    clf_path = args.output / "article_classifier.bin"
    clf_path.write_bytes(clf_bytes)
    data = read_labels([str(args.shared / LABELS / f"{LABELS}.parquet") + "#text,label"])
    x = scorer_features(data.texts, clf_path)
    fitted, figures = fit_scorer(x, data.labels, c=0.1, repeats=20, seed=0, method="equal")
    card = {
        "name": "refinery-quality-scorer-v2",
        "kind": "combined quality score: " + KINDS["equal"],
        "labels": {"data": f"../shared/data/{LABELS} (218 Common Crawl documents, majority-vote human labels from "
                           "mlfoundations/dclm data/majority_data.jsonl)", "license": "MIT (mlfoundations/dclm)",
                   **data.counts},
        "article_classifier": {
            "data": {"positive": [f"{n}#{c}" for n, (c, _) in PAGES.items()],
                     "negative": [f"{n}#page_text lines not in {c}" for n, (c, _) in PAGES.items()]},
            "licenses": {n: lic for n, (_, lic) in PAGES.items()},
            "params": CLASSIFIER_PARAMS.__dict__, "counts": clf_figures,
            "note": "trained without any human quality label: its AUC on the labelled set is an out-of-sample figure",
        },
        **figures,
        "caveats": [
            "The labelled set is small and noisy (documents annotators disagreed on); the fold interval is wide.",
            "The inputs and their equal weights were chosen among seven candidate weightings while looking at "
            "this set (cross-validation) and at cc_web_samples (clean vs menu-heavy pages); only the classifier "
            "never saw either. Both figures are selection figures, not held-out ones.",
            "Fitted weights (`refinery quality train --labels ... --method logistic`) ranked this set's held-out "
            "folds worse (AUC 0.741, beating length on 93 of 100 folds) and cc_web_samples worse (0.675).",
        ],
    }
    card = write_scorer(Storage(StorageSpec(str(args.output))), fitted, clf_bytes, card)
    cv = card["cross_validation"]
    print(json.dumps({"cv_auc": cv["auc_mean"], "fold_interval": cv["auc_fold_interval_95"],
                      "oof_auc_ci": cv["oof_auc_ci_95"], "length_auc": cv["baseline_auc_mean"],
                      "beats_length_share": cv["beats_baseline_share"], "first_repeat": cv["first_repeat"],
                      "signal_auc": card["signal_auc"],
                      "weights": {k: v["weight"] for k, v in card["features"].items()}}, indent=1))


if __name__ == "__main__":
    main()
