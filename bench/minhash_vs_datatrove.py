"""Near-duplicate removal: Refinery's MinHash LSH stage against datatrove's MinHash pipeline.

One run, same machine, same cores, same corpus (../shared/bench/make_corpus.py: real word
statistics, near-duplicates injected at known edit rates with exact Jaccard), same shingle and
band parameters (word 5-grams, 14 bands × 8 rows, seed 1):

- datatrove: its four MinHash stages (signatures, buckets, clusters, filter) under
  LocalPipelineExecutor, reading and writing Parquet, once with its default English word
  tokenizer (spaCy) and once with a plain whitespace tokenizer (``str.split``);
- refinery: the ``curate`` flow end to end (ingest, near dedup, publish: Prefect task runs on
  local Ray), with exact dedup off so that both remove the same kind of duplicates.

Prints docs/s of each, the ratios, peak memory (the whole process tree, sampled), and recall
and precision against the injected ground truth. Needs the `bench` extra
(`pip install -e .[bench]`).

    python bench/minhash_vs_datatrove.py [--docs 100000] [--files 16] [--skip-default-tokenizer]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from bench.common import ensure_prefect, standard_corpus, write_results  # noqa: E402

WORKERS = os.cpu_count() or 1


class PeakRSS:
    """Peak resident memory of this process and all its descendants, sampled every 0.2 s."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self._proc, *self._proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def datatrove_run(corpus: Path, work: Path, tokenizer: str) -> tuple[float, set[str], int]:
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):
        """The cheapest possible word tokenizer: str.split."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return text.split("\n")

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1,
                           hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    files = len(list((corpus / "docs").glob("*.parquet")))
    docs = str(corpus / "docs")
    sig_step = MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)
    if tokenizer == "whitespace":
        sig_step.word_tokenizer = SplitTokenizer()
    logs = str(work / "logs")
    t0 = time.perf_counter()
    LocalPipelineExecutor([ParquetReader(docs, text_key="text", id_key="id"), sig_step],
                          tasks=files, workers=WORKERS, logging_dir=f"{logs}/1").run()
    LocalPipelineExecutor([MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                               config=config)],
                          tasks=config.num_buckets, workers=WORKERS, logging_dir=f"{logs}/2").run()
    LocalPipelineExecutor([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                               config=config)],
                          tasks=1, workers=1, logging_dir=f"{logs}/3").run()
    LocalPipelineExecutor([ParquetReader(docs, text_key="text", id_key="id"),
                           MinhashDedupFilter(input_folder=str(work / "remove")),
                           ParquetWriter(str(work / "out"))],
                          tasks=files, workers=WORKERS, logging_dir=f"{logs}/4").run()
    seconds = time.perf_counter() - t0
    import pyarrow.parquet as pq

    kept = set()
    for f in (work / "out").rglob("*.parquet"):
        kept |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    return seconds, kept, files


def refinery_run(corpus: Path, work: Path) -> tuple[float, set[str], dict]:
    import pyarrow.parquet as pq

    from flows.curate import run_curate
    from tasks.config import PipelineConfig

    cfg = PipelineConfig(
        release="bench-near", output=str(work / "corpus"),
        inputs=[{"uri": str(corpus / "docs"), "source": "bench", "columns": {"text": "text", "id": "id"}}],
        exact_dedup={"enabled": False},
        near_dedup={"num_perm": 112, "bands": 14, "rows": 8, "seed": 1, "ngram": 5, "cross_release": False},
    )
    t0 = time.perf_counter()
    manifest = run_curate(cfg)
    seconds = time.perf_counter() - t0
    from tasks.ingest import stable_id

    kept_ids = set()
    for f in manifest["outputs"]["documents"]:
        kept_ids |= set(pq.read_table(work / "corpus" / f["path"], columns=["id"]).column("id").to_pylist())
    source_ids = set()
    for f in sorted((corpus / "docs").glob("*.parquet")):
        source_ids |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    kept = {sid for sid in source_ids if stable_id("bench", sid, "") in kept_ids}
    return seconds, kept, manifest


def quality(all_ids: set[str], kept: set[str], truth) -> dict:
    """Recall: injected duplicate pairs (by Jaccard band) of which at least one side was
    removed. Precision: removed documents that belong to an injected pair."""
    removed = all_ids - kept
    in_pair = set(truth["dup_id"]) | set(truth["parent_id"])
    out = {"removed": len(removed),
           "precision": round(len(removed & in_pair) / len(removed), 4) if removed else 1.0}
    for name, lo in (("recall_all", 0.0), ("recall_j_ge_0_8", 0.8), ("recall_j_ge_0_9", 0.9)):
        pairs = [(d, p) for d, p, j in zip(truth["dup_id"], truth["parent_id"], truth["jaccard"], strict=True)
                 if j >= lo]
        hit = sum(1 for d, p in pairs if d in removed or p in removed)
        out[name] = round(hit / len(pairs), 4) if pairs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--skip-default-tokenizer", action="store_true", help="only datatrove's whitespace variant")
    args = ap.parse_args()
    corpus = standard_corpus(args.docs, args.files)
    import pyarrow.parquet as pq

    info = json.loads((corpus / "corpus.json").read_text())
    truth = pq.read_table(corpus / "truth.parquet").to_pydict()
    all_ids = set()
    for f in sorted((corpus / "docs").glob("*.parquet")):
        all_ids |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    work = Path(tempfile.mkdtemp(prefix="refinery-minhash-bench-"))
    ensure_prefect(work / "home")
    docs = info["docs"]
    results: dict[str, dict] = {}

    with PeakRSS() as mem:
        secs, kept, manifest = refinery_run(corpus, work / "refinery")
    results["refinery"] = {"seconds": round(secs, 2), "docs_per_s": round(docs / secs), "peak_rss_mb": mem.peak >> 20,
                           "stage_seconds": manifest["timing"], **quality(all_ids, kept, truth)}
    print("refinery", json.dumps(results["refinery"]), flush=True)

    variants = ["whitespace"] if args.skip_default_tokenizer else ["whitespace", "default"]
    for tok in variants:
        with PeakRSS() as mem:
            secs, kept, _ = datatrove_run(corpus, work / f"datatrove-{tok}", tok)
        results[f"datatrove_{tok}"] = {"seconds": round(secs, 2), "docs_per_s": round(docs / secs),
                                       "peak_rss_mb": mem.peak >> 20, **quality(all_ids, kept, truth)}
        print(f"datatrove_{tok}", json.dumps(results[f"datatrove_{tok}"]), flush=True)

    ours = results["refinery"]["seconds"]
    ratios = {f"speedup_vs_{k}": round(v["seconds"] / ours, 2) for k, v in results.items() if k != "refinery"}
    out = {"corpus": {k: info[k] for k in ("docs", "duplicates", "files", "seed", "bytes", "words")},
           "parameters": {"ngram": 5, "bands": 14, "rows": 8, "num_perm": 112, "seed": 1, "workers": WORKERS},
           "results": results, **ratios}
    # one results file per corpus size, so that the 100k and the 1M figures stand side by side
    path = write_results("minhash_vs_datatrove" if docs == 100_000 else f"minhash_vs_datatrove_{docs // 1000}k", out)
    print(f"\ncorpus: {docs:,} docs ({info['duplicates']:,} injected near-duplicates), {WORKERS} workers")
    print(f"{'':<24}{'seconds':>9}{'docs/s':>10}{'peak MB':>9}{'recall':>8}{'R@J>=.8':>9}{'precision':>10}")
    for k, v in results.items():
        print(f"{k:<24}{v['seconds']:>9.1f}{v['docs_per_s']:>10,}{v['peak_rss_mb']:>9,}{v['recall_all']:>8.3f}"
              f"{v['recall_j_ge_0_8']:>9.3f}{v['precision']:>10.3f}")
    for k, v in ratios.items():
        print(f"{k}: {v}x")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
