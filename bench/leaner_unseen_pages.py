"""The leaner content decision on the same corruptions of real pages it never saw.

Each page stands in for its own rewrite (to accept); the next page, the page's words shuffled,
its second half replaced by the next page's and its first 30% are to be rejected
(``tests.corpora.page_cases``). The validator runs as in tests/test_leaner.py: the web length
band and the learned content decision, vocabulary checks off (a page is not leaner than
itself). simple_wikipedia and DCLM are the pages the decision's tests were written against;
scrapinghub's gold article bodies and Readability's main texts were left untouched until the
figures of the model before issue 17's fix were recorded here, and were not used to choose it.

    python bench/leaner_unseen_pages.py [--model tasks/leaner/models/content_logreg.json] [--label NAME]

Writes the rates under ``--label`` in bench/results/leaner_unseen_pages.json (other labels kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO  # noqa: E402

RESULTS = REPO / "bench" / "results" / "leaner_unseen_pages.json"
# (corpus, English only): the article sets mix languages; fastText keeps the English pages
CORPORA = (("simple_wikipedia", False), ("dclm", False), ("scrapinghub_gold", True), ("readability_main", True))


def measure(model_path: Path | None = None) -> dict[str, dict[str, float]]:
    from tasks.leaner.content_model import MODEL_PATH, load
    from tasks.leaner.validate import MEDIAN_RATIO, Limits, validate
    from tests.corpora import page_cases, page_docs

    model = load(model_path or MODEL_PATH)
    scale = model.get("length_band") or (0.0, float("inf"))  # the web band the model was chosen with
    band = (round(scale[0] * MEDIAN_RATIO["web"], 3), round(scale[1] * MEDIAN_RATIO["web"], 3))
    limits = Limits(band=band, min_coverage=0.0, require_rise=False, content_model=True)
    out = {}
    for name, english in CORPORA:
        docs = page_docs(name, english_only=english)
        good = Counter()
        for case in page_cases(docs):
            page = case["page"]
            for kind, text in case.items():
                good[kind] += validate(page, text, "web", limits, content_model=model).accepted == (kind == "page")
        out[name] = {"pages": len(docs), **{k: round(v / len(docs), 4) for k, v in good.items()}}
        print(name, out[name], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a content model file (default: the shipped one)")
    ap.add_argument("--label", default="shipped")
    args = ap.parse_args()
    table = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    table[args.label] = measure(args.model)
    RESULTS.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
