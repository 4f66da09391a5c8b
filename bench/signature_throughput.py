"""MinHash signature throughput per core, on the same texts: our compiled kernel against rensa
(Rust) and datasketch (NumPy).

Everything runs single-threaded in this process, pinned to one CPU where the OS allows, on the
first ``--docs`` texts of the standard corpus (../shared/bench/make_corpus.py), 112
permutations, seed 1:

- ``refinery``: ``tasks.dedup.minhash.signatures`` as the near-dedup stage calls it
  (datatrove's text normalization, word 5-grams, FNV-1a shingle hashes), timed from the Arrow
  text column to the signature matrix;
- ``rensa_unigram``: ``rensa.RMinHash`` fed ``text.split()`` (bare words: no shingles, no
  normalization; the least work any MinHash can do here);
- ``rensa_5gram``: ``rensa.RMinHash`` fed word 5-grams built in Python from ``text.split()``;
- ``datasketch_5gram``: ``datasketch.MinHash.update_batch`` on the same 5-grams (on the first
  ``--datasketch-docs`` texts only: it is much slower).

docs/s and MB/s (MB = 10^6 bytes of UTF-8 text) per core; best of ``--repeat`` runs, since the
machine may be shared. When bench/results/minhash_vs_datatrove_<N>k.json exists for the same
size, the results also say what share of refinery's end-to-end time the kernel is.

    python bench/signature_throughput.py [--docs 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MB, RESULTS, package_version, standard_corpus, write_results  # noqa: E402

NUM_PERM, SEED, NGRAM = 112, 1, 5


def shingles(text: str) -> list[str]:
    words = text.split()
    if len(words) < NGRAM:
        return [" ".join(words)] if words else []
    return [" ".join(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)]


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--datasketch-docs", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # per core: one CPU only

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasketch import MinHash
    from rensa import RMinHash

    from tasks.dedup.minhash import MinHashParams, signatures

    corpus = standard_corpus(args.docs, args.files)
    table = pa.concat_tables([pq.read_table(f, columns=["text"]) for f in sorted((corpus / "docs").glob("*.parquet"))])
    texts_arrow = table.column("text").combine_chunks()
    texts = texts_arrow.to_pylist()
    n = len(texts)
    nbytes = sum(len(t.encode()) for t in texts)
    params = MinHashParams(num_perm=NUM_PERM, seed=SEED, ngram=NGRAM)
    signatures(texts_arrow.slice(0, 100), params)  # compile (or load the cached) kernel outside the clock

    def rensa_words() -> None:
        for t in texts:
            m = RMinHash(num_perm=NUM_PERM, seed=SEED)
            m.update(t.split())
            m.digest()

    def rensa_5grams() -> None:
        for t in texts:
            m = RMinHash(num_perm=NUM_PERM, seed=SEED)
            m.update(shingles(t))
            m.digest()

    ds_texts = texts[: args.datasketch_docs]
    ds_bytes = sum(len(t.encode()) for t in ds_texts)

    def datasketch_5grams() -> None:
        for t in ds_texts:
            m = MinHash(num_perm=NUM_PERM, seed=SEED)
            m.update_batch([s.encode() for s in shingles(t)])
            m.digest()

    runs = {
        "refinery": (best_of(args.repeat, lambda: signatures(texts_arrow, params)), n, nbytes),
        "rensa_unigram": (best_of(args.repeat, rensa_words), n, nbytes),
        "rensa_5gram": (best_of(args.repeat, rensa_5grams), n, nbytes),
        "datasketch_5gram": (best_of(1, datasketch_5grams), len(ds_texts), ds_bytes),
    }
    results = {k: {"docs": d, "seconds": round(s, 3), "docs_per_s_per_core": round(d / s),
                   "mb_per_s_per_core": round(b / MB / s, 1)} for k, (s, d, b) in runs.items()}
    ours = results["refinery"]["docs_per_s_per_core"]
    ratios = {f"refinery_over_{k}": round(ours / v["docs_per_s_per_core"], 2)
              for k, v in results.items() if k != "refinery"}
    out = {
        "corpus": {"docs": n, "bytes": nbytes, "files": args.files},
        "parameters": {"num_perm": NUM_PERM, "seed": SEED, "ngram": NGRAM, "repeat": args.repeat,
                       "refinery": {"normalization": params.normalization, "hash_function": params.hash_function,
                                    "shingle": params.shingle}},
        "peers": {"rensa": package_version("rensa"), "datasketch": package_version("datasketch")},
        "results": results, **ratios,
    }
    e2e = RESULTS / f"minhash_vs_datatrove_{n // 1000}k.json"
    if e2e.exists():
        run = json.loads(e2e.read_text())["results"]
        # the kernel's single-core seconds over the flow's core-seconds (wall clock × cores)
        kernel_s = runs["refinery"][0] / max(1, os.cpu_count() or 1)
        out["kernel_share_of_end_to_end"] = {
            k: round(kernel_s / run[k]["seconds"], 3) for k in ("refinery_cold", "refinery_warm") if k in run}
    path = write_results("signature_throughput", out)
    print(f"{n:,} docs, {nbytes / MB:.1f} MB, one core")
    for k, v in results.items():
        print(f"{k:<18}{v['docs_per_s_per_core']:>10,} docs/s{v['mb_per_s_per_core']:>8.1f} MB/s  ({v['docs']:,} docs)")
    for k, v in ratios.items():
        print(f"{k}: {v}x")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
