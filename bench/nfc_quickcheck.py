"""CPU seconds of ingest's read step (``ingest_shard``) and of ``normalize_texts`` alone on one
shard of the standard benchmark corpus, today's normalization (every non-ASCII text through
``unicodedata``) against the vectorized quick check (issue 18), back to back in one process.

    python -m bench.nfc_quickcheck [--shard PATH] [--repeat 5] [--out bench/results/ingest_nfc_s13.json]

Each variant is called once to warm up (the first call of ``ingest_shard`` pays imports and
compilation), then ``--repeat`` times, alternating the variants so that both see the same load;
the figure is the median process CPU time. The load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SHARD = Path.home() / ".cache/refinery-bench/corpus-1000000-16-7/docs/part-00000.parquet"


def normalize_texts_before(texts: pa.Array, form: str) -> pa.Array:
    """``tasks.text_norm.normalize_texts`` as it was before the quick check (commit 13aa01d)."""
    if form != "none" and len(texts):
        wide = np.flatnonzero(~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False))
        changed = [(k, n) for k, t in zip(wide.tolist(), texts.take(pa.array(wide)).to_pylist(), strict=True)
                   if (n := unicodedata.normalize(form, t)) is not t]
        if changed:
            mask = np.zeros(len(texts), dtype=bool)
            mask[[k for k, _ in changed]] = True
            texts = pc.replace_with_mask(texts, pa.array(mask), pa.array([n for _, n in changed], texts.type))
    if len(texts) and pc.any(pc.match_substring(texts, "\r")).as_py():
        texts = pc.replace_substring(pc.replace_substring(texts, "\r\n", "\n"), "\r", "\n")
    return texts


def _cpu(fn) -> float:
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shard", type=Path, default=SHARD)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--form", default="NFC")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import pyarrow.parquet as pq

    import tasks.ingest as ingest
    from tasks import text_norm
    from tasks.config import IngestConfig, InputSpec
    from tasks.ingest import Shard, ingest_shard

    load_before = os.getloadavg()
    texts = pq.read_table(args.shard, columns=["text"]).column("text").combine_chunks()
    shard = Shard(0, str(args.shard), "parquet", "bench",
                  InputSpec(uri=str(args.shard), columns={"text": "text", "id": "id"}).columns, None)
    cfg = IngestConfig(unicode_form=args.form)
    variants = {"before": normalize_texts_before, "after": text_norm.normalize_texts}

    def run_ingest(fn):
        ingest.normalize_texts = fn  # the name ingest's _normalize_documents calls
        try:
            return ingest_shard(shard, cfg, "stripped", "bench", datetime(2026, 1, 1, tzinfo=UTC))
        finally:
            ingest.normalize_texts = text_norm.normalize_texts

    outs = {name: run_ingest(fn) for name, fn in variants.items()}  # warm-up, and the outputs compared
    assert outs["before"].work.equals(outs["after"].work), "the two variants' work tables differ"
    norm = {name: fn(texts, args.form) for name, fn in variants.items()}
    assert norm["before"].equals(norm["after"])

    ingest_cpu: dict[str, list[float]] = {n: [] for n in variants}
    norm_cpu: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(args.repeat):
        for name, fn in variants.items():
            ingest_cpu[name].append(_cpu(lambda fn=fn: run_ingest(fn)))
        for name, fn in variants.items():
            norm_cpu[name].append(_cpu(lambda fn=fn: fn(texts, args.form)))
    load_after = os.getloadavg()

    wide = np.flatnonzero(~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False))
    candidates = text_norm.scan_texts(texts.take(pa.array(wide)), args.form)[0]
    wide_list = texts.take(pa.array(wide)).to_pylist()
    changed = sum(unicodedata.normalize(args.form, t) != t for t in wide_list)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    result = {
        "what": "process CPU seconds, median of the repeats after one warm-up call per variant, alternating variants",
        "shard": str(args.shard), "form": args.form, "texts": len(texts), "non_ascii": len(wide),
        "quick_check_candidates": int(np.count_nonzero(candidates)), "changed_by_normalization": changed,
        "commit": commit, "python": sys.version.split()[0], "unidata_version": unicodedata.unidata_version,
        "pyarrow": pa.__version__, "repeat": args.repeat,
        "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in load_after],
        "ingest_shard_cpu_s": {n: round(statistics.median(v), 3) for n, v in ingest_cpu.items()},
        "ingest_shard_cpu_s_all": {n: [round(x, 3) for x in v] for n, v in ingest_cpu.items()},
        "normalize_texts_cpu_s": {n: round(statistics.median(v), 3) for n, v in norm_cpu.items()},
        "normalize_texts_cpu_s_all": {n: [round(x, 3) for x in v] for n, v in norm_cpu.items()},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
