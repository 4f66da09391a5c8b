"""What counting tokens with a real tokenizer adds to ingest, per core.

On the standard corpus (../shared/bench/make_corpus.py), single-threaded in this process
(pinned to one CPU where the OS allows; ``RAYON_NUM_THREADS=1`` so HF tokenizers uses one
thread too):

- ``ingest``: ``tasks.ingest.ingest_shard`` over every shard of the corpus, as the ingest
  stage runs it (read, validate, normalize, ids, exact-dedup hash), without Prefect or Ray;
- ``words``: ``tasks.kernels.word_counts`` (what manifests count today);
- ``tokens_default``: the default tokenizer (the bundled Gemma 3 GGUF's vocabulary, converted
  once to HF tokenizers and to the compiled counter's arrays; the conversion is cached and
  done before the clock, its first-time cost is reported as ``conversion_seconds``; loading
  the tokenizer from the cache is timed alone as ``load_seconds_cached``), shard after shard in one process starting with no saved piece
  counts, as a machine's first worker meets them; ``tokens_default_warm``: the same shards
  again (every piece known); ``tokens_default_later_worker``: a new tokenizer object (as a
  later worker process) starting from the piece counts the first one saved, load included;
  ``tokens_whole_texts``: the converted HF tokenizer on whole texts without the pieces table;
- ``tokens_llama_cpp``: the same vocabulary through llama.cpp's own tokenizer, on the first
  ``--llama-docs`` documents (it is much slower), and whether its counts equal the default's.

``share_of_ingest`` = counting seconds / ingest seconds (target: at most 0.15). Every figure is
CPU time of this process (``time.process_time``; the machine is shared, wall clock measures the
neighbours); ingest's compiled kernels are loaded before its clock.

    python bench/token_count_bench.py [--docs 10000] [--llama-docs 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MB, standard_corpus, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--llama-docs", type=int, default=1_000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from datetime import UTC, datetime

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from tasks import tokens
    from tasks.config import PipelineConfig
    from tasks.ingest import ingest_shard, plan_shards
    from tasks.kernels import word_counts

    corpus = standard_corpus(args.docs, args.files)
    cfg = PipelineConfig(release="bench", output=tempfile.mkdtemp(prefix="refinery-tok-"),
                         inputs=[{"uri": str(corpus / "docs"), "source": "bench",
                                  "columns": {"text": "text", "id": "id", "added": "added"}}])
    shards = plan_shards(cfg)
    ingest_shard(shards[0], cfg.ingest, cfg.exact_dedup.key, "bench", datetime.now(UTC))  # compiled kernels loaded
    t0 = time.process_time()
    works = [ingest_shard(s, cfg.ingest, cfg.exact_dedup.key, "bench", datetime.now(UTC)).work for s in shards]
    ingest_s = time.process_time() - t0
    texts = pa.concat_arrays([w.column("text").combine_chunks() for w in works])
    n, nbytes = len(texts), int(pc.sum(pc.binary_length(texts)).as_py())

    t0 = time.process_time()
    words = int(pc.sum(word_counts(texts)).as_py())
    words_s = time.process_time() - t0

    tokens.load_tokenizer().count(pa.array(["convert once"]))  # the conversion, if this machine never did it
    with tempfile.TemporaryDirectory() as tmp:  # the first-time conversion, timed alone
        os.environ["REFINERY_TOKENIZER_CACHE"] = tmp
        t0 = time.process_time()
        tokens._gguf(None, False, "hf").count(pa.array(["convert"]))
        conversion_s = time.process_time() - t0
        del os.environ["REFINERY_TOKENIZER_CACHE"]
    # a cache holding the conversion but no saved piece counts: a machine's first worker
    real = tokens._cache_dir()
    cache = tempfile.mkdtemp(prefix="refinery-tokcache-")
    for f in os.listdir(real):
        if f.endswith((".json", f".{tokens.BPE_SCHEME}.npz")) and ".tmp-" not in f:
            os.symlink(os.path.join(real, f), os.path.join(cache, f))
    os.environ["REFINERY_TOKENIZER_CACHE"] = cache
    tokens._LOADED.clear()
    t0 = time.process_time()
    tok = tokens.load_tokenizer()  # the compiled counter's arrays and tables; no HF tokenizer
    load_s = time.process_time() - t0
    # shard by shard, as one worker process meets them: the first shards tokenize most of
    # their pieces, later ones find more of them in the process's table
    shard_texts = [w.column("text").combine_chunks() for w in works]
    t0 = time.process_time()
    counts = np.concatenate([tok.count(t) for t in shard_texts])
    tokens_s = time.process_time() - t0
    first_loaded_hf = tok._inner is not None
    t0 = time.process_time()
    again = np.concatenate([tok.count(t) for t in shard_texts])
    warm_s = time.process_time() - t0
    # a later worker: a new tokenizer object starting from the piece counts the first one saved
    tokens._LOADED.clear()
    t0 = time.process_time()
    later = tokens.load_tokenizer()
    later_counts = np.concatenate([later.count(t) for t in shard_texts])
    later_s = time.process_time() - t0
    later_loaded_hf = later._inner is not None
    t0 = time.process_time()
    whole = tokens.Tokenizer.count(tok, texts)  # the converted tokenizer on whole texts, no pieces table
    whole_s = time.process_time() - t0

    ref = tokens.load_tokenizer(tokens.TokenizerConfig(engine="llama_cpp"))
    sub = texts.slice(0, args.llama_docs)
    sub_bytes = int(pc.sum(pc.binary_length(sub)).as_py())
    t0 = time.process_time()
    ref_counts = ref.count(sub)
    llama_s = time.process_time() - t0

    def rate(secs: float, docs: int, b: int) -> dict:  # CPU seconds of this process
        return {"cpu_seconds": round(secs, 3), "docs_per_cpu_second": round(docs / secs),
                "mb_per_cpu_second": round(b / MB / secs, 2)}

    out = {
        "corpus": {"docs": n, "bytes": nbytes, "files": args.files, "shards": len(shards)},
        "ingest": rate(ingest_s, n, nbytes),
        "words": {**rate(words_s, n, nbytes), "total": words, "share_of_ingest": round(words_s / ingest_s, 3)},
        "tokens_default": {**rate(tokens_s, n, nbytes), "total": int(counts.sum()), "tokenizer": tok.name,
                           "engine": tok.kind, "share_of_ingest": round(tokens_s / ingest_s, 3),
                           "load_seconds_cached": round(load_s, 2),
                           "share_of_ingest_with_load": round((tokens_s + load_s) / ingest_s, 3),
                           "conversion_seconds": round(conversion_s, 2), "loaded_hf_tokenizer": first_loaded_hf},
        "tokens_default_later_worker": {**rate(later_s, n, nbytes), "share_of_ingest": round(later_s / ingest_s, 3),
                                        "equal": bool(np.array_equal(later_counts, counts)),
                                        "loaded_hf_tokenizer": later_loaded_hf},
        "tokens_default_warm": {**rate(warm_s, n, nbytes), "share_of_ingest": round(warm_s / ingest_s, 3),
                                "equal": bool(np.array_equal(again, counts))},
        "tokens_whole_texts": {**rate(whole_s, n, nbytes), "share_of_ingest": round(whole_s / ingest_s, 3),
                               "equal_default": int((whole == counts).sum())},
        "tokens_llama_cpp": {**rate(llama_s, len(sub), sub_bytes), "docs_compared": len(sub),
                             "counts_equal_default": int((ref_counts == counts[:len(sub)]).sum()),
                             "share_of_ingest_extrapolated": round(llama_s * nbytes / sub_bytes / ingest_s, 3)},
        "tokens_per_word": round(int(counts.sum()) / max(1, words), 3),
        "target_share_of_ingest": 0.15,
        "threads": {"RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS")},
    }
    assert np.all(counts >= 0)
    del os.environ["REFINERY_TOKENIZER_CACHE"]
    shutil.rmtree(cache, ignore_errors=True)
    path = write_results("token_count_bench", out)
    print(path.read_text())


if __name__ == "__main__":
    main()
