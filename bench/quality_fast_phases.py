"""Where the fast quality engine's time goes: inclusive per-phase timers over a corpus.

One process, caches cold at the start (as a ``--fast-only`` worker starts), the four filters
with datatrove's defaults through ``heuristics.tag_all``; then, with ``--warm``, the same
documents again (every chunk known). Each phase's time is inclusive (a phase called from
another is counted in both) and includes the timers' own overhead, so the figures rank the
phases rather than add up exactly. Prints a table; no results file.

    python bench/quality_fast_phases.py [--docs 20000] [--files 8] [--warm]
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import standard_corpus  # noqa: E402

SECONDS: collections.defaultdict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter[str] = collections.Counter()


def _timed(owner: Any, name: str) -> None:
    fn = getattr(owner, name)
    label = f"{getattr(owner, '__name__', owner)}.{name}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - t0
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--warm", action="store_true", help="Time a second pass over the same documents instead.")
    args = ap.parse_args()

    import pyarrow.parquet as pq

    from tasks.quality import heuristics
    from tasks.quality.fast import chunks, engine, kernels, tokenizer
    from tasks.quality.verify_fast import default_specs

    t0 = time.process_time()
    engine.engine()
    heuristics.tag_all(default_specs(), ["Warm up, the kernels (once)."], ["x"], engine="fast")
    start_cpu = time.process_time() - t0
    for name in ("learn", "_fill", "_shape", "_add_many", "_know_matches", "_slow_word_ids", "word_ids"):
        _timed(tokenizer.FastTokenizer, name)
    _timed(chunks.ChunkIndex, "lookup")
    _timed(tokenizer, "expand_chunks")
    _timed(engine.TokenTables, "sync")
    for name in ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"):
        _timed(engine.FastFilters, name)
    for name in ("repetition_stats", "word_stats"):
        _timed(kernels, name)
    for name in ("_whole", "_line_spans"):
        _timed(heuristics, name)

    corpus = standard_corpus(args.docs, args.files)
    shards = []
    for f in sorted((corpus / "docs").glob("*.parquet")):
        t = pq.read_table(f, columns=["id", "text"])
        shards.append((t.column("text").to_pylist(), [str(x) for x in t.column("id").to_pylist()]))
    passes = 2 if args.warm else 1
    for p in range(passes):
        if p == passes - 1:
            SECONDS.clear()
            CALLS.clear()
            total, docs = 0.0, 0
        for texts, ids in shards:
            t0 = time.perf_counter()
            out = heuristics.tag_all(default_specs(), texts, ids, engine="fast")
            total += time.perf_counter() - t0
            docs += len(texts)
    tok = tokenizer.fast_tokenizer("en")
    print(f"engine start (CPU, after imports): {start_cpu:.2f} s; {docs:,} documents "
          f"({'warm' if args.warm else 'cold'}): {total:.2f} s, {docs / total:,.0f} docs/s; "
          f"chunks {len(tok._chunk_text):,}, spaCy run-wise {tok.slow_docs}, last shard fallbacks {out.fallbacks}")
    for label, sec in sorted(SECONDS.items(), key=lambda kv: -kv[1]):
        print(f"{label:42s} {sec:8.3f} s {100 * sec / total:5.1f}%  {CALLS[label]:,} calls")


if __name__ == "__main__":
    main()
