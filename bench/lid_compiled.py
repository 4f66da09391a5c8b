"""Language ID: the compiled lid.176 path (tasks.quality.fast.lid) against fastText's own predict.

Same documents (the first ``--docs`` of the standard corpus, as ``quality_vs_datatrove.py
--score-only`` takes them), one process, models loaded and compiled code warm before timing
(the steady state of a long run). Reports CPU seconds (process time: the machine is shared, so
CPU time, not wall time, is the figure; the load average is recorded) of

- ``lid.predict`` with ``engine="fasttext"`` and ``engine="compiled"`` (median of ``--repeats``
  alternating runs), the compiled one with its per-process word table emptied before each run
  (every word's rows found in the timed call) and, as ``compiled_warm_table``, run again with
  the table holding these documents' words (the bound a long run approaches for common words);
  and whether labels and probabilities are identical on every document;
- the quality stage's default taggers (language ID and the four filters, no combined score:
  what ``quality_score_cost.json`` calls ``taggers_cpu_seconds``) with each engine, as docs per
  CPU second, after a warm-up pass over the same documents (so the four filters' token table
  already holds their words: a warm worker's figure, not a fresh one's);
- each engine's start-up in a fresh process: CPU seconds from before the import of
  ``tasks.quality.lid`` to the end of a first one-text prediction (the compiled path reads and
  dequantizes the model and loads its compiled code from numba's cache; fastText loads the
  model), which a Ray worker pays once; and the same in a process that has already run one
  compiled kernel, as every quality worker has (numba's one-time set-up then paid).

    python bench/lid_compiled.py [--docs 5000] [--corpus-docs 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import standard_corpus, write_results  # noqa: E402


def _cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


_STARTUP_CHILD = """
import sys, time
if sys.argv[2] == "after_numba":
    # what a quality worker has done anyway: one compiled kernel run (numba's one-time set-up)
    import pyarrow as pa
    from tasks import kernels
    kernels.word_counts(pa.array(["a b c"]))
t0 = time.process_time()
from tasks.quality import lid
lid.predict(["this is a short English sentence"], engine=sys.argv[1])
print(time.process_time() - t0)
"""


def _startup(engine: str, when: str) -> float:
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", _STARTUP_CHILD, engine, when], capture_output=True, text=True,
                         check=True, cwd=root, env={**os.environ, "PYTHONPATH": root})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--corpus-docs", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.config import QualityConfig
    from tasks.quality import lid, stage
    from tasks.quality.fast.lid import compiled_lid
    from tasks.quality.models import lid_model_path

    corpus = standard_corpus(args.corpus_docs, args.files)
    tables = [pq.read_table(f, columns=["id", "text"]) for f in sorted((corpus / "docs").glob("*.parquet"))]
    docs = pa.concat_tables(tables).slice(0, args.docs)
    docs = docs.append_column("source", pa.array(["bench"] * docs.num_rows))
    texts = docs.column("text").to_pylist()
    words = sum(len(t.split()) for t in texts)

    compiled = compiled_lid(lid_model_path(None))

    def cold() -> None:
        # the word table starts empty, as in a fresh worker: the rows of every word of these
        # documents are found in the timed call (a long run's table also holds earlier words)
        compiled.words_seen.clear()

    results: dict[str, list[float]] = {"fasttext": [], "compiled": [], "compiled_warm_table": []}
    out = {e: lid.predict(texts, engine=e) for e in ("fasttext", "compiled")}  # models loaded, code compiled
    for _ in range(args.repeats):
        results["fasttext"].append(_cpu(lambda: lid.predict(texts, engine="fasttext")))
        cold()
        results["compiled"].append(_cpu(lambda: lid.predict(texts, engine="compiled")))
        results["compiled_warm_table"].append(_cpu(lambda: lid.predict(texts, engine="compiled")))
    same_labels = out["fasttext"][0] == out["compiled"][0]
    max_diff = float(np.abs(out["fasttext"][1] - out["compiled"][1]).max())

    original = lid.predict
    taggers = QualityConfig(enabled=True, combined={"enabled": False})
    stage_cpu: dict[str, list[float]] = {"fasttext": [], "compiled": []}
    try:
        for engine in stage_cpu:
            lid.predict = functools.partial(original, engine=engine)
            stage.tag(docs, taggers)  # warm: the heuristic engine's token cache holds these documents
        # (the language ID's word table is emptied before each timed run below)
        for _ in range(args.repeats):
            for engine in stage_cpu:
                lid.predict = functools.partial(original, engine=engine)
                cold()
                stage_cpu[engine].append(_cpu(lambda: stage.tag(docs, taggers)))
    finally:
        lid.predict = original

    startup = {e: [_startup(e, "fresh") for _ in range(args.repeats)] for e in ("fasttext", "compiled")}
    startup_after = {e: [_startup(e, "after_numba") for _ in range(args.repeats)] for e in ("fasttext", "compiled")}
    med = {e: statistics.median(v) for e, v in results.items()}
    smed = {e: statistics.median(v) for e, v in stage_cpu.items()}
    res = {
        "corpus": corpus.name, "docs": len(texts), "words": words,
        "lid_predict_cpu_seconds": {e: [round(x, 3) for x in v] for e, v in results.items()},
        "lid_predict_median_cpu_seconds": {e: round(v, 3) for e, v in med.items()},
        "lid_speedup": round(med["fasttext"] / med["compiled"], 2),
        "lid_speedup_warm_table": round(med["fasttext"] / med["compiled_warm_table"], 2),
        "lid_ns_per_word": {e: round(v / words * 1e9, 1) for e, v in med.items()},
        "same_labels": same_labels, "largest_probability_difference": max_diff,
        "stage_taggers": stage.enabled_taggers(taggers),
        "stage_taggers_cpu_seconds": {e: [round(x, 3) for x in v] for e, v in stage_cpu.items()},
        "stage_taggers_docs_per_cpu_s": {e: round(len(texts) / v) for e, v in smed.items()},
        "stage_taggers_meaning": "after a warm-up pass over the same documents: the four filters' token table "
                                 "holds their words, the language ID's word table is emptied before each run",
        "startup_cpu_seconds": {e: [round(x, 3) for x in v] for e, v in startup.items()},
        "startup_median_cpu_seconds": {e: round(statistics.median(v), 3) for e, v in startup.items()},
        "startup_after_numba_cpu_seconds": {e: [round(x, 3) for x in v] for e, v in startup_after.items()},
        "startup_after_numba_median_cpu_seconds": {e: round(statistics.median(v), 3)
                                                   for e, v in startup_after.items()},
        "startup_meaning": "fresh process: import of tasks.quality.lid, model load, first one-text prediction; "
                           "after_numba: the same in a process that has already run one compiled kernel (numba's "
                           "one-time set-up, about 0.45 CPU-s, which a quality worker pays for its other kernels "
                           "anyway)",
    }
    path = write_results("lid_compiled", res)
    print(f"lid.predict on {len(texts):,} documents ({words:,} words): fastText {med['fasttext']:.3f} CPU-s, "
          f"compiled {med['compiled']:.3f} CPU-s (x{res['lid_speedup']}; x{res['lid_speedup_warm_table']} with a warm word table); same labels {same_labels}, largest "
          f"probability difference {max_diff}; stage taggers {res['stage_taggers_docs_per_cpu_s']} docs/CPU-s "
          f"-> {path}")


if __name__ == "__main__":
    main()
