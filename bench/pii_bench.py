"""PII throughput per core (tag and redact modes) and matches per kind.

Two inputs, single-threaded in this process, pinned to one CPU where the OS allows, best of
``--repeat`` runs, from the Arrow text column to the result (``tasks.pii.scan``):

- ``standard``: the first ``--docs`` texts of the standard corpus (../shared/bench/make_corpus.py);
- ``real_web``: every text of the shared web corpora (cc_web_samples, dclm_human_quality_dev,
  redpajama originals, the two web-page sets' page text, hh-rlhf conversations), which hold real
  contact data, so the exact (second) pass runs on a realistic share of documents.

MB = 10^6 bytes of UTF-8 text. Target: 50 MB/s per core in tag mode.

    python bench/pii_bench.py [--docs 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MB, REPO, standard_corpus, write_results  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
REAL_WEB = [("cc_web_samples/cc_web_samples.parquet", "text"), ("dclm_human_quality_dev/dclm_human_quality_dev.parquet", "text"),
            ("redpajama_cc_simplified/redpajama_cc_simplified.parquet", "original"),
            ("web_pages_readability/web_pages_readability.parquet", "page_text"),
            ("web_pages_scrapinghub/web_pages_scrapinghub.parquet", "page_text"),
            ("conversations_hh_rlhf/conversations_hh_rlhf.parquet", "chosen")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tasks.pii.config import PiiConfig
    from tasks.pii.core import scan

    corpus = standard_corpus(args.docs, args.files)
    standard = pa.concat_tables([pq.read_table(f, columns=["text"]) for f in sorted((corpus / "docs").glob("*.parquet"))])
    standard = standard.slice(0, args.docs).combine_chunks()
    web = []
    for f, col in REAL_WEB:
        t = pq.read_table(SHARED / f, columns=[col]).rename_columns(["text"])
        web.append(t.filter(pc.is_valid(t.column("text"))))
    inputs = {"standard": standard, "real_web": pa.concat_tables(web).combine_chunks()}

    results = {}
    for name, table in inputs.items():
        nbytes = int(pc.sum(pc.binary_length(table.column("text"))).as_py())
        for mode in ("tag", "redact"):
            cfg = PiiConfig(mode=mode)
            times, cpus, res = [], [], None
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                res = scan(table, cfg)
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            secs, cpu = min(times), min(cpus)
            results[f"{name}_{mode}"] = {"docs": table.num_rows, "mb": round(nbytes / MB, 2), "seconds": round(secs, 3),
                                         "cpu_seconds": round(cpu, 3), "mb_per_cpu_second": round(nbytes / MB / cpu, 1),
                                         "mb_per_s_per_core": round(nbytes / MB / secs, 1),
                                         "docs_per_s_per_core": round(table.num_rows / secs),
                                         "docs_scanned_exactly": res.figures["docs_scanned"],
                                         "docs_with_pii": res.figures["docs_with_pii"], "matches": res.figures["matches"]}
    out = {"parameters": {"repeat": args.repeat, "kinds": list(PiiConfig().kinds), "target_mb_per_s_per_core_tag": 50},
           "results": results}
    path = write_results("pii_bench", out)
    print(path.read_text())


if __name__ == "__main__":
    main()
