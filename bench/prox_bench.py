"""ProX: the heuristic writer against the model writer, side by side.

- heuristic writer + interpreter: docs/s on the standard benchmark corpus
  (../shared/bench/make_corpus.py) and on the Readability pages of ../shared/data;
- model writer (in-process llama.cpp, the Gemma 3 270M GGUF by default): prompt and
  completion tokens/s on the first ``--model-pages`` pages;
- line-level precision / recall / F1 of the lines each removes on those pages, against
  Readability's ``main_text`` (a page line is boilerplate when it is not a main-text line),
  under our semantics and upstream's (compat).

No peer runs ProX programs, so the comparison is heuristic vs model, ours vs upstream semantics.

    python bench/prox_bench.py [--docs 20000] [--model-pages 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, standard_corpus, write_results  # noqa: E402

PAGES = REPO.parent / "shared" / "data" / "web_pages_readability" / "web_pages_readability.parquet"


def line_scores(pages: list[str], mains: list[str], refined: list[str | None]) -> dict[str, float]:
    """A line of a page counts as removed when no line of the refined text equals it."""
    tp = fp = fn = 0
    for page, main, out in zip(pages, mains, refined, strict=True):
        content = {" ".join(ln.split()) for ln in main.split("\n")}
        kept = {" ".join(ln.split()) for ln in (out or "").split("\n")}
        for line in page.split("\n"):
            key = " ".join(line.split())
            removed, boiler = key not in kept, key not in content
            tp += removed and boiler
            fp += removed and not boiler
            fn += not removed and boiler
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--model-pages", type=int, default=4)
    args = ap.parse_args()
    import pyarrow.parquet as pq

    from tasks.config import LLMConfig, ProxConfig
    from tasks.llm.backends import approx_tokens
    from tasks.llm.client import LLMClient, token_counter
    from tasks.prox import stage
    from tasks.prox.heuristic import HeuristicParams
    from tasks.prox.writers import HeuristicWriter, ModelWriter
    from tasks.storage import StorageSpec

    t = pq.read_table(PAGES, columns=["page_text", "main_text"])
    pages, mains = t.column("page_text").to_pylist(), t.column("main_text").to_pylist()
    result: dict = {}

    corpus = standard_corpus(args.docs, args.files)
    texts = []
    for f in sorted((corpus / "docs").glob("*.parquet")):
        texts += pq.read_table(f, columns=["text"]).column("text").to_pylist()
    t0 = time.perf_counter()
    stage.refine(texts, ProxConfig(enabled=True), HeuristicWriter(HeuristicParams(), texts), approx_tokens)
    secs = time.perf_counter() - t0
    result["heuristic_standard_corpus"] = {"docs": len(texts), "seconds": round(secs, 2),
                                           "docs_per_s": round(len(texts) / secs)}
    print("heuristic, standard corpus:", result["heuristic_standard_corpus"], flush=True)

    for compat in (False, True):
        t0 = time.perf_counter()
        res = stage.refine(pages, ProxConfig(enabled=True, compat=compat), HeuristicWriter(HeuristicParams(), pages),
                           approx_tokens)
        secs = time.perf_counter() - t0
        refined = [x if k else None for x, k in zip(res.text, res.keep, strict=True)]
        key = "heuristic_pages" + ("_compat" if compat else "")
        result[key] = {"docs": len(pages), "docs_per_s": round(len(pages) / secs, 1),
                       "token_retention": round(res.figures["words_out"] / res.figures["words_in"], 4),
                       **line_scores(pages, mains, refined)}
        print(key, result[key], flush=True)

    k = args.model_pages
    sub_pages, sub_mains = pages[:k], mains[:k]
    heur = stage.refine(sub_pages, ProxConfig(enabled=True, doc_level=False),
                        HeuristicWriter(HeuristicParams(), pages), approx_tokens)
    result["heuristic_model_pages"] = line_scores(
        sub_pages, sub_mains, [x if k2 else None for x, k2 in zip(heur.text, heur.keep, strict=True)])
    cfg = LLMConfig(n_ctx=4096, cache=False)
    with tempfile.TemporaryDirectory() as tmp:
        client = LLMClient(cfg, StorageSpec(tmp).open())
        writer = ModelWriter(client, False, 16, 256)
        t0 = time.perf_counter()
        res = stage.refine(sub_pages, ProxConfig(enabled=True, doc_level=False), writer, token_counter(cfg))
        secs = time.perf_counter() - t0
    usage = client.usage.to_dict()
    result["model_pages"] = {
        "model": client.identity, "pages": k, "seconds": round(secs, 1), "requests": usage["requests"],
        "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
        "tokens_per_s": round((usage["prompt_tokens"] + usage["completion_tokens"]) / secs, 1),
        "completion_tokens_per_s": round(usage["completion_tokens"] / secs, 2),
        "chunk_failure_rate": round(res.figures.get("chunk_program_failures", 0)
                                    / max(1, res.figures.get("chunk_programs", 0)), 4),
        **line_scores(sub_pages, sub_mains, [x if k2 else None for x, k2 in zip(res.text, res.keep, strict=True)]),
    }
    print("model writer:", result["model_pages"], flush=True)
    path = write_results("prox_bench", result)
    print(f"\nheuristic {result['heuristic_standard_corpus']['docs_per_s']:,} docs/s; line F1 on the pages: "
          f"heuristic {result['heuristic_pages']['f1']} (upstream semantics {result['heuristic_pages_compat']['f1']}); "
          f"on the first {k} pages heuristic {result['heuristic_model_pages']['f1']} vs model "
          f"{result['model_pages']['f1']} at {result['model_pages']['tokens_per_s']} tokens/s -> {path}")


if __name__ == "__main__":
    main()
