"""ProX: the heuristic, learned and model writers, side by side.

- heuristic and learned writers + interpreter: docs/s on the standard benchmark corpus
  (../shared/bench/make_corpus.py), wall-clock and per CPU-second of this process (the
  machine may be shared), and on the Readability pages of ../shared/data;
- the learned writer on the Readability pages is a model trained here on the Scrapinghub
  pages only (the shipped model saw the Readability pages: its score there would not count);
- model writer (in-process llama.cpp, the Gemma 3 270M GGUF by default): prompt and
  completion tokens/s on the first ``--model-pages`` pages (0: skip it);
- line-level precision / recall / F1 of the lines each removes on those pages, against
  Readability's ``main_text`` (a page line is boilerplate when it is not a main-text line),
  under our semantics and upstream's (compat); and, under ``content``, content-line
  precision / recall / F1 with the aligned labels of tasks/prox/lines.py (the figure
  bench/prox_learned_eval.py reports per split).

No peer runs ProX programs, so the comparison is between writers, ours vs upstream semantics.

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
OTHER_PAGES = REPO.parent / "shared" / "data" / "web_pages_scrapinghub" / "web_pages_scrapinghub.parquet"


def line_scores(pages: list[str], mains: list[str], refined: list[str | None]) -> dict:
    """A line of a page counts as removed when no line of the refined text equals it."""
    from tasks.prox import lines as L

    kept = [L.kept_by_output(p, out) for p, out in zip(pages, refined, strict=True)]
    exact = L.scores([L.content_labels(p, m, exact=True) for p, m in zip(pages, mains, strict=True)], kept)
    aligned = L.scores([L.content_labels(p, m) for p, m in zip(pages, mains, strict=True)], kept)
    return {**exact["boilerplate"], "content": aligned["content"]}


def _timed(texts: list[str], cfg, writer, count) -> tuple[object, float, float]:
    from tasks.prox import stage

    c0, t0 = time.process_time(), time.perf_counter()
    res = stage.refine(texts, cfg, writer, count)
    return res, time.perf_counter() - t0, time.process_time() - c0


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
    from tasks.prox.learned import LearnedWriter, load_model
    from tasks.prox.training import TrainParams, check_pairs, read_pairs, train_model
    from tasks.prox.writers import HeuristicWriter, ModelWriter
    from tasks.storage import StorageSpec

    t = pq.read_table(PAGES, columns=["page_text", "main_text"])
    pages, mains = t.column("page_text").to_pylist(), t.column("main_text").to_pylist()
    result: dict = {}

    corpus = standard_corpus(args.docs, args.files)
    texts = []
    for f in sorted((corpus / "docs").glob("*.parquet")):
        texts += pq.read_table(f, columns=["text"]).column("text").to_pylist()
    default_model = load_model()
    writers = {"heuristic": lambda t: HeuristicWriter(HeuristicParams(), t),
               "learned": lambda t: LearnedWriter(default_model, t)}
    for name, make in writers.items():
        stage.refine(texts[:100], ProxConfig(enabled=True), make(texts[:100]), approx_tokens)  # warm-up
        _, secs, cpu = _timed(texts, ProxConfig(enabled=True), make(texts), approx_tokens)
        result[f"{name}_standard_corpus"] = {"docs": len(texts), "seconds": round(secs, 2),
                                             "docs_per_s": round(len(texts) / secs),
                                             "docs_per_cpu_s": round(len(texts) / cpu)}
        print(f"{name}, standard corpus:", result[f"{name}_standard_corpus"], flush=True)

    other = read_pairs([f"{OTHER_PAGES}#page_text,gold_text"])
    good, labels, _ = check_pairs(other, TrainParams())
    unseen = train_model([other.pages[i] for i in good], labels, [other.sites[i] for i in good], TrainParams())
    writers["learned"] = lambda t: LearnedWriter(unseen, t)
    for name, make in writers.items():
        for compat in (False, True):
            res, secs, _ = _timed(pages, ProxConfig(enabled=True, compat=compat), make(pages), approx_tokens)
            refined = [x if k else None for x, k in zip(res.text, res.keep, strict=True)]
            key = f"{name}_pages" + ("_compat" if compat else "")
            result[key] = {"docs": len(pages), "docs_per_s": round(len(pages) / secs, 1),
                           "token_retention": round(res.figures["words_out"] / res.figures["words_in"], 4),
                           **line_scores(pages, mains, refined)}
            print(key, result[key], flush=True)
    result["learned_pages"]["model"] = "trained on web_pages_scrapinghub only (these pages unseen)"

    k = args.model_pages
    if k <= 0:
        path = write_results("prox_bench", result)
        print(f"-> {path}")
        return
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
    print(f"\nheuristic {result['heuristic_standard_corpus']['docs_per_s']:,} docs/s, learned "
          f"{result['learned_standard_corpus']['docs_per_s']:,} docs/s; line F1 on the pages: "
          f"heuristic {result['heuristic_pages']['f1']} (upstream semantics {result['heuristic_pages_compat']['f1']}); "
          f"on the first {k} pages heuristic {result['heuristic_model_pages']['f1']} vs model "
          f"{result['model_pages']['f1']} at {result['model_pages']['tokens_per_s']} tokens/s -> {path}")


if __name__ == "__main__":
    main()
