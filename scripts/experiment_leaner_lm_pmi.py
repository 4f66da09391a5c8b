"""EXPERIMENT, NOT SHIPPED (issue 17, the positional blind spot): does the bundled Gemma 3 270M
see that a stretch of a rewrite says something its original does not?

Pointwise mutual information of each rewrite token with the original, by llama.cpp's prompt
evaluation (no generation): ``log p(t | original, separator, rewrite so far) - log p(t |
separator, rewrite so far)``. A sentence that restates the original is more predictable with
the original in front of it (names, numbers and content words are copied, even by small
models); a sentence of another document is not. Both contexts hold the preceding rewrite
tokens, so one pass over original + rewrite and one over the rewrite score every token, and
the difference is what the original adds.

Long texts: the rewrite is scored in segments of at most ``SEG`` tokens, each after the
``PREV`` rewrite tokens before it (in both contexts), with a window of at most ``ORIG`` tokens
of the original centred on the segment's relative position (rewrites keep the original's
order); a text that fits is scored in one segment against the whole original.

Features per rewrite: mean token PMI; the lowest mean over runs of a third of the tokens; the
share of tokens in sentences whose mean PMI is under a cut. Measured on a fixed subset of the
TinyHelen sample: references against the first half / middle third / second half replaced by a
same-genre document's rewrite (``tests.corpora.replaced_parts``), ROC AUC
of single features, no learning, plus the CPU seconds per document.

    python scripts/experiment_leaner_lm_pmi.py --docs 30 --json bench/results/leaner_lm_pmi_not_shipped.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEP = "\n\nThe same text, rewritten in simple words:\n\n"
SEG, PREV, ORIG = 768, 128, 1024
N_CTX = 2048
KINDS = ("reference", "first_half_replaced", "middle_third_replaced")
CUTS = (0.0, 0.25, 0.5, 1.0)
SEED = 17


class PMIScorer:
    def __init__(self, n_threads: int = 2):
        from llama_cpp import Llama

        from tasks.llm.backends import default_gguf

        # logits_all stays off: llama-cpp-python would keep an n_ctx x 262,144 float table;
        # the batch asks llama.cpp for the rows it needs and they are reduced at once
        self.llm = Llama(model_path=default_gguf(), n_ctx=N_CTX, n_batch=256, n_threads=n_threads,
                         logits_all=False, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.bos = self.llm.token_bos()
        self.sep = self.llm.tokenize(SEP.encode(), add_bos=False)

    def _logprobs(self, tokens: list[int], first: int) -> np.ndarray:
        """log p(tokens[i] | tokens[:i]) for i >= first, one fresh sequence."""
        import llama_cpp

        ctx = self.llm._ctx
        ctx.kv_cache_seq_rm(-1, 0, -1)
        out = np.empty(len(tokens) - first, dtype=np.float64)
        for lo in range(0, len(tokens), 256):
            chunk = tokens[lo:lo + 256]
            # rows needed: positions first-1 .. end-1 predict tokens first .. end
            want = [first - 1 <= lo + i < len(tokens) - 1 for i in range(len(chunk))]
            b = self.llm._batch
            b.set_batch(batch=chunk, n_past=lo, logits_all=False)
            for i, w in enumerate(want):
                b.batch.logits[i] = w
            ctx.decode(b)
            rows = [lo + i for i, w in enumerate(want) if w]
            if not rows:
                continue
            ptr = llama_cpp.llama_get_logits(ctx.ctx)
            logits = np.ctypeslib.as_array(ptr, shape=(len(rows), self.n_vocab))
            top = logits.max(axis=1)
            lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
            tgt = np.array([tokens[r + 1] for r in rows])
            out[np.array(rows) + 1 - first] = logits[np.arange(len(rows)), tgt] - lse
        return out

    def score(self, original: str, rewrite: str) -> dict[str, Any]:
        o = self.llm.tokenize(original.encode("utf-8"), add_bos=False)
        r = self.llm.tokenize(rewrite.encode("utf-8"), add_bos=False)
        cond, uncond = np.empty(len(r)), np.empty(len(r))
        n_seg = max(1, -(-len(r) // SEG))
        for k in range(n_seg):
            a, b = k * len(r) // n_seg, (k + 1) * len(r) // n_seg
            prev = r[max(0, a - PREV):a]
            if len(o) <= ORIG:
                win = o
            else:
                centre = (a + b) / 2 / max(1, len(r)) * len(o)
                lo = int(min(max(0, centre - ORIG / 2), len(o) - ORIG))
                win = o[lo:lo + ORIG]
            c = [self.bos] + win + self.sep + prev + r[a:b]
            u = [self.bos] + self.sep + prev + r[a:b]
            cond[a:b] = self._logprobs(c, len(c) - (b - a))
            uncond[a:b] = self._logprobs(u, len(u) - (b - a))
        pieces = [self.llm.detokenize([t]).decode("utf-8", "replace") for t in r]
        return {"cond": cond.tolist(), "uncond": uncond.tolist(), "pieces": pieces,
                "n_original": len(o)}


def sentences(pieces: list[str]) -> list[tuple[int, int]]:
    """Token spans of sentences: a token ending in . ! ? or holding a line break ends one."""
    spans, start = [], 0
    for i, p in enumerate(pieces):
        s = p.rstrip(" ")
        if "\n" in p or s.endswith((".", "!", "?")):
            spans.append((start, i + 1))
            start = i + 1
    if start < len(pieces):
        spans.append((start, len(pieces)))
    return [(a, b) for a, b in spans if b > a]


def features(s: dict[str, Any]) -> dict[str, float]:
    pmi = np.asarray(s["cond"]) - np.asarray(s["uncond"])
    n = len(pmi)
    if n == 0:
        return {}
    out = {"mean_pmi": float(pmi.mean()), "mean_cond": float(np.mean(s["cond"]))}
    w = max(1, n // 3)
    cs = np.concatenate([[0.0], np.cumsum(pmi)])
    win = (cs[w:] - cs[:-w]) / w
    out["min_third_pmi"] = float(win.min())
    out["min_third_minus_mean"] = float(win.min() - pmi.mean())
    cc = np.concatenate([[0.0], np.cumsum(s["cond"])])
    out["min_third_cond"] = float(((cc[w:] - cc[:-w]) / w).min())
    sent = [(a, b, float(pmi[a:b].mean())) for a, b in sentences(s["pieces"])]
    for cut in CUTS:
        out[f"share_low_{cut}"] = -sum(b - a for a, b, v in sent if v < cut) / n  # negated: high = good
    # sentence-level PMI smoothed over neighbours, then the worst third by tokens
    sv = np.concatenate([np.full(b - a, v) for a, b, v in sent]) if sent else pmi
    cs2 = np.concatenate([[0.0], np.cumsum(sv)])
    out["min_third_sentence_pmi"] = float(((cs2[w:] - cs2[:-w]) / w).min())
    return out


def cases(n_docs: int) -> list[dict[str, Any]]:
    from tests.corpora import replaced_parts as replaced
    from tests.corpora import tinyhelen_pairs

    pairs = tinyhelen_pairs()
    rng = random.Random(SEED)
    idx = rng.sample(range(len(pairs)), n_docs)
    other_of = {}
    for i in sorted(idx):
        others = [j for j, q in enumerate(pairs) if j != i and q["genre"] == pairs[i]["genre"]] or \
            [j for j in range(len(pairs)) if j != i]
        other_of[i] = rng.choice(others)
    out = []
    for i in idx:  # in sampled order: genres mix if a run is cut short
        p = pairs[i]
        other = pairs[other_of[i]]["rewrite"]
        rep = replaced(p["rewrite"], other)
        words, ow = p["rewrite"].split(), other.split()
        half = len(words) // 2
        out.append({"doc": i, "genre": p["genre"], "original": p["original"], "texts": {
            "reference": p["rewrite"], "first_half_replaced": rep["first_half_replaced"],
            "middle_third_replaced": rep["middle_third_replaced"],
            "second_half_replaced": " ".join(words[:half] + (ow[len(ow) // 2:] + ow)[:len(words) - half])}})
    return out


def chain_comparison(all_cases: list[dict[str, Any]], docs: list[int], done: dict, kinds: list[str]
                     ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """The positional experiment's lemma-chain measures on the same texts (their AUCs), and a
    logistic regression over chain + PMI features, leave one document out, threshold the 5th
    percentile of the training references' probabilities (a small-sample look, not an
    estimate of the validator)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tasks.leaner.content_model import FEATURES, features
    from tasks.leaner.fidelity import align
    from tasks.leaner.vectors import FEATURES as VECTOR

    # the chain's position-free measures (shipped in the content model since session 14)
    EXTRA = ("original_worst", "rewrite_worst", "log_original_worst", "log_rewrite_worst_over_topic",
             "original_run", "rewrite_run")
    names = [name for name, _ in FEATURES]

    def extra_features(original: str, text: str) -> list[float]:
        values = dict(zip(names, features(align(original, text), 0.0, [0.0] * len(VECTOR)), strict=True))
        return [values[name] for name in EXTRA]

    by_doc = {c["doc"]: c for c in all_cases}
    # the runs grow with a replaced stretch: negated, so that every AUC reads "high = reference"
    chain = {(d, k): {f: -v if f.endswith("_run") else v for f, v in
                      zip(EXTRA, extra_features(by_doc[d]["original"], by_doc[d]["texts"][k]), strict=True)}
             for d in docs for k in kinds}
    aucs = {}
    for kind in kinds[1:]:
        y = [1] * len(docs) + [0] * len(docs)
        aucs[kind] = {f: round(float(roc_auc_score(y, [chain[(d, "reference")][f] for d in docs]
                                                   + [chain[(d, kind)][f] for d in docs])), 3) for f in EXTRA}
    pmi_names = ("mean_pmi", "min_third_pmi", "min_third_minus_mean", "min_third_sentence_pmi", "share_low_0.25")
    chain_names = ("log_rewrite_worst_over_topic", "rewrite_worst", "rewrite_run")
    out: dict[str, Any] = {}
    for label, use_pmi, use_chain in (("chain", False, True), ("pmi", True, False), ("chain+pmi", True, True)):
        def x(d: int, k: str, use_pmi: bool = use_pmi, use_chain: bool = use_chain) -> list[float]:
            return ([done[(d, k)]["features"][f] for f in pmi_names] if use_pmi else []) + \
                ([chain[(d, k)][f] for f in chain_names] if use_chain else [])
        kept = {k: 0 for k in kinds}
        for held in docs:
            train = [d for d in docs if d != held]
            X = [x(d, k) for d in train for k in kinds]
            y = [int(k == "reference") for d in train for k in kinds]
            m = make_pipeline(StandardScaler(), LogisticRegression(C=1.0)).fit(X, y)
            cut = float(np.quantile(m.predict_proba([x(d, "reference") for d in train])[:, 1], 0.05))
            for k in kinds:
                kept[k] += int(m.predict_proba([x(held, k)])[0, 1] >= cut)
        out[label] = {"references_accepted": round(kept["reference"] / len(docs), 3),
                      **{f"{k}_rejected": round(1 - kept[k] / len(docs), 3) for k in kinds[1:]}}
    return aucs, out


def _cache_key(original: str, text: str) -> str:
    import hashlib
    import inspect

    from tasks.llm.backends import default_gguf

    h = hashlib.sha256()
    for part in (original, text, SEP, repr((SEG, PREV, ORIG, N_CTX)), inspect.getsource(features),
                 os.path.basename(default_gguf())):
        h.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=30)
    ap.add_argument("--cache", default="/tmp/s11_17/pmi_cache.jsonl")
    ap.add_argument("--json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--summary-only", action="store_true", help="figures from the cache, nothing scored")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS))
    args = ap.parse_args()
    from sklearn.metrics import roc_auc_score

    os.makedirs(os.path.dirname(args.cache), exist_ok=True)
    done: dict[tuple[int, str], dict[str, Any]] = {}
    all_cases = cases(args.docs)
    # a record counts only for the very texts, settings and feature code it was made with: which
    # document replaces part of a text depends on --docs (the sampler's state)
    keys = {(c["doc"], kind): _cache_key(c["original"], text) for c in all_cases for kind, text in c["texts"].items()}
    if os.path.exists(args.cache):
        with open(args.cache) as fh:
            for n, line in enumerate(fh, 1):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    print(f"{args.cache}: line {n} is not JSON (an interrupted write?); skipped", file=sys.stderr)
                    continue
                if keys.get((rec.get("doc"), rec.get("kind"))) == rec.get("key"):
                    done[(rec["doc"], rec["kind"])] = rec
    scorer = None if args.summary_only else PMIScorer(args.threads)
    with open(args.cache, "a") as fh:
        for c in all_cases if scorer else []:
            for kind, text in c["texts"].items():
                if (c["doc"], kind) in done or kind not in args.kinds:
                    continue
                t0 = time.process_time()
                s = scorer.score(c["original"], text)
                dt = time.process_time() - t0
                rec = {"doc": c["doc"], "kind": kind, "key": keys[(c["doc"], kind)], "genre": c["genre"], "cpu_s": dt,
                       "n_rewrite": len(s["pieces"]), "n_original": s["n_original"], "features": features(s)}
                done[(c["doc"], kind)] = rec
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                print(c["doc"], c["genre"], kind, f"{dt:.1f}s", len(s["pieces"]),
                      {k: round(v, 2) for k, v in rec["features"].items() if k in ("mean_pmi", "min_third_pmi")},
                      flush=True)
    docs = sorted({d for d, _ in done})
    docs = [d for d in docs if all((d, k) in done for k in args.kinds)]
    names = list(done[(docs[0], "reference")]["features"])
    aucs: dict[str, dict[str, float]] = {}
    for kind in args.kinds[1:]:
        aucs[kind] = {}
        for f in names:
            y = [1] * len(docs) + [0] * len(docs)
            x = [done[(d, "reference")]["features"][f] for d in docs] + [done[(d, kind)]["features"][f] for d in docs]
            aucs[kind][f] = round(float(roc_auc_score(y, x)), 3)
    # the same document's reference above its own corruption: what a per-document threshold
    # could at best achieve (a validator never has the reference, so not usable as such)
    paired = {kind: round(float(np.mean([done[(d, "reference")]["features"]["min_third_pmi"]
                                         > done[(d, kind)]["features"]["min_third_pmi"] for d in docs])), 3)
              for kind in args.kinds[1:]}
    chain_aucs, combined = chain_comparison(all_cases, docs, done, args.kinds)
    per_doc = [sum(done[(d, k)]["cpu_s"] for k in ("reference",)) for d in docs]
    summary = {"note": "EXPERIMENT, NOT SHIPPED (issue 17): LM pointwise mutual information of rewrite tokens with "
                       "the original, bundled Gemma 3 270M Q4_K_M via llama.cpp; ROC AUC of single features, "
                       "references (positive) vs each corruption, no learning",
               "subset": f"{len(docs)} of 421 TinyHelen pairs: those of random.Random({SEED}).sample(range(421), "
                         f"{args.docs}) with every kind scored when the run was stopped (by time)",
               "cpu_note": "process CPU seconds while scoring, under the load of other jobs (load average "
                           "4 to 10 during the run); load_average below is at the summary's time",
               "settings": {"sep": SEP, "segment": SEG, "prev": PREV, "original_window": ORIG, "n_ctx": N_CTX,
                            "threads": args.threads},
               "auc": aucs,
               "auc_lemma_chain_same_docs": chain_aucs,
               "paired_min_third_pmi_reference_above_corruption": paired,
               "genres": dict(Counter(done[(d, "reference")]["genre"] for d in docs)),
               "combined_leave_one_doc_out": combined,
               "cpu_s_per_reference": {"mean": round(float(np.mean(per_doc)), 2),
                                       "median": round(float(np.median(per_doc)), 2)},
               "tokens_per_reference": {"mean": round(float(np.mean([done[(d, 'reference')]['n_rewrite'] for d in docs])), 1)},
               "load_average": os.getloadavg()}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
