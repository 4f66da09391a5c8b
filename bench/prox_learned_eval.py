"""The learned ProX writer measured on pages it did not train on, against the heuristic writer,
C4's line rule and keeping everything.

Splits (the pages of ../shared/data; pairs whose kept text is not in the page are left out of
every split, for every writer alike):

- ``readability->scrapinghub``: trained on web_pages_readability, scored on web_pages_scrapinghub;
- ``scrapinghub->readability``: the other way round;
- ``scrapinghub sites held out``: within web_pages_scrapinghub, folds of whole sites (domain of
  the URL); each page is scored by the model trained on the other folds' sites. ``--site-folds
  0`` gives one fold per site (leave-one-site-out proper).

Every writer runs through the real stage (``tasks.prox.stage.refine``: document- and
chunk-level programs, our semantics); a page line counts as kept when it is still a line of the
output (``tasks.prox.lines.kept_by_output``, as bench/prox_bench.py counts). Content-line
precision / recall / F1 are micro-averaged over page lines, with the aligned labels of
``tasks.prox.lines`` (``exact``: the bench's older line-equality labels, for comparison).
C4's line rule is datatrove's C4QualityFilter with its document-level rules off
(lorem ipsum, curly bracket, minimum sentences) and citations left in, so only its line
removals count. Speed: documents per second of writer + interpreter (one process, one
thread), wall-clock and per CPU-second of the process, on the standard benchmark corpus
(../shared/bench/make_corpus.py; about one line per document) and on the 273 pages (about 190
lines per page).

    python bench/prox_learned_eval.py [--site-folds 10] [--docs 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import standard_corpus, write_results  # noqa: E402


def _sets():
    from tasks.prox import training

    urls = training.default_pairs()
    out = {}
    p = training.TrainParams()
    for name, url in zip(("readability", "scrapinghub"), urls, strict=True):
        pairs = training.read_pairs([url])
        good, labels, bad = training.check_pairs(pairs, p)
        out[name] = {
            "pages": [pairs.pages[i] for i in good], "kept": [pairs.kept[i] for i in good],
            "sites": [pairs.sites[i] for i in good], "labels": labels,
            "bad": [{k: v for k, v in b.items() if k != "pairs"} for b in bad],
        }
    return out


def refine_kept(pages: list[str], writer) -> tuple[list[list[bool]], float]:
    """Per page, per line: kept by the writer's programs as the stage runs them; and docs/s."""
    from tasks.config import ProxConfig
    from tasks.llm.backends import approx_tokens
    from tasks.prox import lines as L
    from tasks.prox import stage

    t0 = time.perf_counter()
    res = stage.refine(pages, ProxConfig(enabled=True), writer, approx_tokens)
    secs = time.perf_counter() - t0
    return [L.kept_by_output(p, t if k else None) for p, t, k in zip(pages, res.text, res.keep, strict=True)], \
        len(pages) / secs


def c4_kept(pages: list[str]) -> list[list[bool]]:
    from tasks.prox import lines as L
    from tasks.quality.heuristics import make_filter, run_filter

    flt = make_filter("c4_quality", {"filter_lorem_ipsum": False, "filter_curly_bracket": False,
                                     "min_num_sentences": -1, "remove_citations": False})
    out = []
    for p in pages:
        keep, _, text = run_filter(flt, p)
        out.append(L.kept_by_output(p, text if keep else None))
    return out


def _score(labels, exact, kept) -> dict:
    from tasks.prox import lines as L

    s, e = L.scores(labels, kept), L.scores(exact, kept)
    return {**s["content"], "lines": s["lines"], "exact_labels": e["content"], "boilerplate": s["boilerplate"]}


def baselines(d: dict) -> dict:
    from tasks.prox.heuristic import HeuristicParams
    from tasks.prox.lines import content_labels
    from tasks.prox.writers import HeuristicWriter

    exact = [content_labels(p, k, exact=True) for p, k in zip(d["pages"], d["kept"], strict=True)]
    heur, _ = refine_kept(d["pages"], HeuristicWriter(HeuristicParams(), d["pages"]))
    return {
        "exact": exact,
        "heuristic": _score(d["labels"], exact, heur),
        "c4_line_rule": _score(d["labels"], exact, c4_kept(d["pages"])),
        "keep_everything": _score(d["labels"], exact, [[True] * len(lab) for lab in d["labels"]]),
    }


def learned_kept(train: dict, test_pages: list[str], p) -> list[list[bool]]:
    from tasks.prox.learned import LearnedWriter
    from tasks.prox.training import train_model

    model = train_model(train["pages"], train["labels"], train["sites"], p)
    kept, _ = refine_kept(test_pages, LearnedWriter(model, test_pages))
    return kept


def site_folds(sites: list[str], k: int) -> list[list[int]]:
    from tasks.prox.training import group_folds

    names = sorted(set(sites))
    k = len(names) if k <= 0 else k
    fold = group_folds(np.asarray(sites, dtype=object), k, seed=0)
    return [np.flatnonzero(fold == f).tolist() for f in np.unique(fold)]


def speed(docs: int, files: int) -> dict:
    import pyarrow.parquet as pq

    from tasks.prox.heuristic import HeuristicParams
    from tasks.prox.learned import LearnedWriter, load_model
    from tasks.prox.writers import HeuristicWriter

    corpus = standard_corpus(docs, files)
    texts: list[str] = []
    for f in sorted((corpus / "docs").glob("*.parquet")):
        texts += pq.read_table(f, columns=["text"]).column("text").to_pylist()
    from tasks.config import ProxConfig
    from tasks.llm.backends import approx_tokens
    from tasks.prox import stage

    model = load_model()
    sets = _sets()
    pages = sets["readability"]["pages"] + sets["scrapinghub"]["pages"]
    out = {"docs": len(texts), "pages": len(pages)}
    for name, make in (("heuristic", lambda t: HeuristicWriter(HeuristicParams(), t)),
                       ("learned", lambda t: LearnedWriter(model, t))):
        refine_kept(texts[:200], make(texts[:200]))  # warm-up: imports, model load
        for what, docs in (("standard_corpus", texts), ("pages", pages)):
            wall = cpu = 0.0
            for _ in range(2):  # best of two: the machine is shared
                c0, t0 = time.process_time(), time.perf_counter()
                stage.refine(docs, ProxConfig(enabled=True), make(docs), approx_tokens)
                wall = max(wall, len(docs) / (time.perf_counter() - t0))
                cpu = max(cpu, len(docs) / (time.process_time() - c0))
            # per CPU-second of this (single-threaded) process: docs/s per core, whatever else runs
            out[f"{name}_{what}"] = {"docs_per_s": round(wall), "docs_per_cpu_s": round(cpu)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site-folds", type=int, default=10, help="folds of whole sites within scrapinghub; 0: one per site")
    ap.add_argument("--docs", type=int, default=20_000, help="standard-corpus documents for the speed figures")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=None, help="override TrainParams.rounds")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--only-speed", action="store_true", help="measure speed only, into the existing results")
    args = ap.parse_args()
    if args.only_speed:
        import json

        from bench.common import RESULTS

        old = json.loads((RESULTS / "prox_learned.json").read_text())
        old["speed"] = speed(args.docs, args.files)
        print("speed:", old["speed"], flush=True)
        print(f"-> {write_results('prox_learned', {k: v for k, v in old.items() if k not in ('benchmark', 'when', 'machine')})}")
        return
    from dataclasses import replace

    from tasks.prox.training import TrainParams

    p = TrainParams() if args.rounds is None else replace(TrainParams(), rounds=args.rounds)
    sets = _sets()
    base = {name: baselines(d) for name, d in sets.items()}
    result: dict = {"params": {**p.__dict__, "languages": list(p.languages)},
                    "sets": {name: {"pages": len(d["pages"]), "lines": sum(map(len, d["labels"])),
                                    "content_lines": int(sum(map(sum, d["labels"]))), "left_out": d["bad"]}
                             for name, d in sets.items()},
                    "splits": {}}
    for tr, te in (("readability", "scrapinghub"), ("scrapinghub", "readability")):
        t0 = time.perf_counter()
        kept = learned_kept(sets[tr], sets[te]["pages"], p)
        split = f"{tr}->{te}"
        result["splits"][split] = {"learned": _score(sets[te]["labels"], base[te]["exact"], kept),
                                   **{k: v for k, v in base[te].items() if k != "exact"}}
        print(split, f"({time.perf_counter() - t0:.0f} s)", {k: v["f1"] for k, v in result["splits"][split].items()},
              flush=True)
    s = sets["scrapinghub"]
    folds = site_folds(s["sites"], args.site_folds)
    kept_all: list = [None] * len(s["pages"])
    t0 = time.perf_counter()
    for k, test in enumerate(folds):
        held = set(test)
        train = {key: [s[key][i] for i in range(len(s["pages"])) if i not in held] for key in ("pages", "labels", "sites")}
        kept = learned_kept(train, [s["pages"][i] for i in test], p)
        for i, kp in zip(test, kept, strict=True):
            kept_all[i] = kp
        print(f"  site fold {k + 1}/{len(folds)} ({len(test)} pages, {time.perf_counter() - t0:.0f} s)", flush=True)
    split = "scrapinghub sites held out"
    result["splits"][split] = {"folds": len(folds), "sites": len(set(s["sites"])),
                               "learned": _score(s["labels"], base["scrapinghub"]["exact"], kept_all),
                               **{k: v for k, v in base["scrapinghub"].items() if k != "exact"}}
    print(split, {k: v["f1"] for k, v in result["splits"][split].items() if isinstance(v, dict)}, flush=True)
    if not args.no_speed:
        result["speed"] = speed(args.docs, args.files)
        print("speed:", result["speed"], flush=True)
    path = write_results("prox_learned", result)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
